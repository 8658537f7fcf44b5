"""The one seam from training to the service: the preprocessing contract and the model card.

Training imports the service only through this module, so what the two products share
is visible in one place and the direction stays training -> service (the service never
imports training or torch). What crosses the seam:

* the face pipeline (decode, detect, align exactly as the service does) and the model
  registry, so a training set is aligned the way the service will align probes;
* model cards (weights, input convention, thresholds) that export writes and the service trusts;
* verification metrics and threshold calibration, so a card's numbers and a training
  report's numbers are computed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.calibration import DEFAULT_FARS, calibrate_thresholds, verification_report
from service.cards import InputSpec, ModelCard, Registry, Source, Thresholds, check_name, sha256_file
from service.config import Settings

__all__ = [
    "DEFAULT_FARS", "InputSpec", "ModelCard", "Registry", "Settings", "Source", "Thresholds", "aligner",
    "calibrate_thresholds", "check_name", "default_models_dir", "embedder", "embedder_for_card", "pipeline",
    "sha256_file", "verification_report",
]


def default_models_dir() -> Path:
    return Settings().models_dir


def pipeline(models_dir: Path | None = None, **overrides: Any):
    """The service's face pipeline over ``models_dir`` (default: the configured one)."""
    from service.pipeline.pipeline import FacePipeline

    settings = Settings(**({"models_dir": models_dir} if models_dir else {}), **overrides)
    return FacePipeline(settings, Registry(settings.models_dir))


def aligner(models_dir: Path | None = None):
    """``bytes -> aligned crop | None``: an aligned crop of the model's input size as it is,
    else the largest face of a photo, detected and aligned; None when no face is found."""
    from service.errors import FacegateError

    pipe = pipeline(models_dir)
    name = pipe.settings.recognizer

    def align(data: bytes):
        try:
            return pipe.prepare(data, recognizers=(name,), choose="largest", aligned="auto").crops[name][0]
        except FacegateError:
            return None

    return align


def embedder(model: str, models_dir: Path | None = None, *, flip: bool | None = None):
    """A registered recognizer, loaded as the service loads it (providers, threads, batching)."""
    from service.engine.embedder import load_embedder

    settings = Settings(**({"models_dir": models_dir} if models_dir else {}))
    registry = Registry(settings.models_dir)
    return load_embedder(registry.get(model, "recognizer"), registry, settings, flip=flip)


def embedder_for_card(card: ModelCard, models_dir: Path, *, flip: bool | None = None):
    """Load the recognizer a card describes (its weights resolved against ``models_dir``)."""
    from service.engine.embedder import load_embedder

    settings = Settings(models_dir=models_dir)
    return load_embedder(card, Registry(models_dir), settings, flip=flip)
