"""Training configuration: one validated file per run (TOML, JSON, or YAML if PyYAML is installed).

The resolved config (defaults filled in, paths absolute) is written next to the
run's checkpoints as ``config.json``, so a checkpoint always says what produced it.
Unknown keys are errors: a typo in a config must not silently train the default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataSource(_Strict):
    """One training source; several are concatenated with disjoint label ranges."""

    kind: Literal["imagefolder", "lfw", "recordio", "synthetic"]
    root: Path | None = Field(None, description="Identity folders / lfw112 folder / .rec file.")
    people_file: Path | None = Field(
        None, description="Restrict to the people listed (LFW people*.txt format)."
    )
    view1_train: bool = Field(
        False, description="lfw: train on peopleDevTrain.txt (never on evaluation people)."
    )
    min_images: int = Field(1, ge=1, description="Skip identities with fewer images.")
    max_people: int | None = Field(
        None, ge=1, description="Keep the first N identities (sorted) after filtering."
    )
    aligned: bool = Field(
        True, description="Images are aligned 112x112 crops; False = detect + align once, cached."
    )
    cache_dir: Path | None = None
    long_tail_max: int | None = Field(
        None, ge=1, description="Cut class sizes to a Zipf profile with this head size."
    )
    long_tail_exponent: float = 1.0
    # synthetic
    num_classes: int = Field(32, ge=2)
    per_class: int = Field(8, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _root(self) -> DataSource:
        if self.kind != "synthetic" and self.root is None:
            raise ValueError(f"data source {self.kind} needs a root")
        return self


class DataConfig(_Strict):
    sources: list[DataSource] = Field(default_factory=lambda: [DataSource(kind="synthetic")])
    sampler: Literal["shuffle", "balanced", "sqrt", "power"] = "shuffle"
    sampler_power: float = 0.5
    flip: bool = True
    color_jitter: float = Field(
        0.0, ge=0, le=0.5, description="Brightness/contrast/saturation jitter amplitude."
    )
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes (2 keeps 2 CPU cores busy).")
    prefetch_factor: int = Field(4, ge=1)


class ModelConfig(_Strict):
    backbone: str = "mbf"
    embedding_size: int = Field(512, ge=8)
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)


class HeadConfig(_Strict):
    name: Literal["softmax", "normface", "cosface", "arcface", "combined", "kappaface"] = "arcface"
    hyper: dict[str, Any] = Field(
        default_factory=dict, description="Passed to build_head, e.g. {s=64, m=0.5}."
    )
    partial_fc: float = Field(
        1.0, gt=0, le=1, description="Fraction of class centres sampled per step (1 = all)."
    )


class OptimConfig(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(
        0.1, gt=0, description="Learning rate for `lr_batch` samples; scaled linearly to the global batch."
    )
    lr_batch: int = Field(1024, ge=1)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "step", "poly", "constant"] = "poly"
    warmup_epochs: float = Field(0.0, ge=0)
    milestones: list[float] = Field(
        default_factory=lambda: [0.5, 0.75], description="step: fractions of training."
    )
    gamma: float = 0.1
    poly_power: float = 1.0
    grad_clip: float | None = Field(5.0, description="Max global grad norm (None = off).")
    head_lr_mult: float = 1.0


class EvalConfig(_Strict):
    pairs: list[Path] = Field(
        default_factory=list, description="pairs.txt / pairsDev*.txt / .csv / .bin files."
    )
    root: Path | None = Field(None, description="Image root the pair paths are relative to.")
    max_pairs: int | None = Field(None, description="Evaluate at most this many pairs per file (smoke runs).")
    flip: bool = True
    every_epochs: int = Field(1, ge=0, description="0 = only at the end.")


class TrainConfig(_Strict):
    name: str = "run"
    out_dir: Path = Path("runs/run")
    seed: int = 0
    epochs: int = Field(20, ge=1)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps (smoke tests).")
    batch_size: int = Field(128, ge=2, description="Per-process batch.")
    amp: bool = Field(True, description="Mixed precision (autocast); the dtype is `amp_dtype`.")
    amp_dtype: Literal["auto", "float16", "bfloat16"] = Field(
        "auto",
        description="auto: float16 + GradScaler on CUDA, fp32 on CPU; bfloat16: autocast on CPU or CUDA, "
        "no GradScaler; float16: CUDA only.",
    )
    device: str = Field("auto", description="auto | cpu | cuda")
    checkpoint_every: int = Field(0, ge=0, description="Steps between checkpoints (0 = only at epoch end).")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    precise_bn_batches: int = Field(
        0,
        ge=0,
        description="At the end, re-estimate BatchNorm statistics over this many training batches "
        "(short runs: running averages still remember their initial values and eval embeddings collapse).",
    )
    threads: int | None = Field(
        None, description="torch intra-op threads for the main process (None = default)."
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def resolved(self, base: Path | None = None) -> TrainConfig:
        """A copy with relative paths made absolute against ``base`` (the config file's folder)."""
        base = Path(base or Path.cwd()).resolve()

        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        c = self.model_copy(deep=True)
        c.out_dir = fix(c.out_dir)  # type: ignore[assignment]
        for s in c.data.sources:
            s.root, s.people_file, s.cache_dir = fix(s.root), fix(s.people_file), fix(s.cache_dir)
        c.eval.pairs = [fix(p) for p in c.eval.pairs]  # type: ignore[misc]
        c.eval.root = fix(c.eval.root)
        return c

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a TOML/JSON/YAML config; relative paths are relative to the repository root (cwd).

    ``overrides`` are dotted keys (``{"optim.lr": 0.05}``) applied before validation; a number
    indexes a list (``{"data.sources.0.root": "/data/lfw112"}``).
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".toml":
        raw = tomllib.loads(text)
    elif path.suffix == ".json":
        raw = json.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as e:  # pragma: no cover - optional dependency
            raise RuntimeError("YAML configs need PyYAML; use the .toml form instead") from e
        raw = yaml.safe_load(text)
    else:
        raise ValueError(f"unknown config format {path.suffix}: use .toml, .json or .yaml")
    for key, value in (overrides or {}).items():
        node: Any = raw
        *parents, leaf = key.split(".")
        try:
            for p in parents:
                node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
            node[int(leaf) if isinstance(node, list) else leaf] = value
        except (IndexError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"cannot set {key!r} in {path}: {e}") from e
    return TrainConfig.model_validate(raw).resolved()
