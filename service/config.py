"""Every knob of the service, in one place.

Values come from ``FACEGATE_*`` environment variables or an optional ``.env`` file
(pydantic-settings). Code never reads ``os.environ`` for configuration directly, so
this class is the complete list of what an operator can set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.cards import BUILTIN_MODELS_DIR

#: The default pack's cards (they ship inside the package); kept under its old name for
#: callers that copy them into a models folder of their own.
REPO_MODELS_DIR = BUILTIN_MODELS_DIR


@dataclass(frozen=True)
class DirChoice:
    path: Path
    why: str


def default_dirs(cwd: Path | None = None) -> dict[str, DirChoice]:
    """Where models and data go when ``FACEGATE_MODELS_DIR`` / ``FACEGATE_DATA_DIR`` are unset.

    A working directory with ``./models`` or ``./data`` (a checkout, a project folder) keeps
    everything beside it, as a clone always did; anywhere else (an installed wheel run from
    ``~``) the per-user data directory is used, so ``facegate serve`` never scatters a
    database into whatever folder it happens to start in.
    """
    cwd = Path(cwd or Path.cwd())
    local = {name: (cwd / name).is_dir() for name in ("models", "data")}
    if any(local.values()):
        here = "./models" if local["models"] else "./data"
        return {name: DirChoice(Path(name), f"{here} exists in the working directory {cwd}") for name in local}
    import platformdirs

    user = Path(platformdirs.user_data_dir("facegate", appauthor=False))
    why = f"no ./models or ./data in {cwd}: the per-user data directory"
    return {name: DirChoice(user / name, why) for name in local}


def dir_choice(settings: Settings, name: Literal["models", "data"]) -> DirChoice:
    """The folder in use and why: the environment variable, else :func:`default_dirs`."""
    path = getattr(settings, f"{name}_dir")
    env = f"FACEGATE_{name.upper()}_DIR"
    if env in os.environ or name + "_dir" in settings.model_fields_set:
        return DirChoice(path, f"{env} is set" if env in os.environ else "set explicitly")
    return DirChoice(path, default_dirs()[name].why)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FACEGATE_", env_file=".env", extra="ignore", env_nested_delimiter="__"
    )

    # --- storage --------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=lambda: default_dirs()["data"].path,
        description="Database, index caches and job state.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/facegate.db (WAL mode)."
    )
    sqlite_busy_timeout_ms: int = Field(10_000, ge=0, description="How long a SQLite writer waits for the lock.")
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "FULL",
        description="FULL: an acknowledged enroll survives power loss (one fsync per commit, ~1-10 ms); "
        "NORMAL (WAL): survives a process crash only.",
    )

    # --- models -----------------------------------------------------------------------
    models_dir: Path = Field(
        default_factory=lambda: default_dirs()["models"].path,
        description="Folder of <name>/model.json cards (yours; the default pack's are built in).",
    )
    detector: str = Field("yunet-2023mar-int8bq", description="Active detector model name.")
    recognizer: str = Field("sface-2021dec-int8bq", description="Default recognizer model name.")
    providers: list[str] = Field(
        ["auto"],
        description='onnxruntime execution providers in order of preference, as a JSON list; ["auto"] = TensorRT, '
        "CUDA, CPU, whichever the build has. Explicitly named providers that are missing are skipped with a warning.",
    )
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0 = runtime default).")
    batch_max_size: int = Field(32, ge=1, description="Largest micro-batch sent to the recognizer.")
    batch_max_wait_ms: float = Field(2.0, ge=0, description="Longest a crop waits for batch-mates.")
    flip_test: bool = Field(False, description="Embed image + mirror and sum (slower, slightly more accurate).")

    # --- image limits -------------------------------------------------------------------
    max_image_bytes: int = Field(15 * 1024 * 1024, ge=1, description="Largest accepted image file (413 above).")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Checked from the header before decoding.")
    decode_reduce_min_side: int = Field(
        1536, ge=0, description="Large JPEGs decode at 1/2..1/8 while the longest side stays >= this (0 = off)."
    )
    decode_max_side: int = Field(
        2048,
        ge=0,
        description="Images are reduced while decoding to at most this longest side, bounding memory per image "
        "(faces keep original coordinates; 0 = full size).",
    )
    jpeg_max_scans: int = Field(
        64, ge=0, description="JPEGs with more scans are refused before decoding (CPU bound; progressive ~10; 0 = off)."
    )
    jpeg_max_scan_passes: float = Field(
        12.0,
        ge=0,
        description="JPEGs whose scans read each 8x8 block more than this many times on average are refused "
        "(CPU bound; baseline 1, progressive ~5-6; 0 = off).",
    )

    decode_threads: int = Field(
        0, ge=0, description="Images decoded and detected at once per process, whatever the number of requests "
        "(0 = two per CPU core); one API key gets at most half of them, so one client cannot starve the others. "
        "Bounds the memory and CPU that concurrent uploads can take.",
    )

    # --- detection ------------------------------------------------------------------------
    det_max_side: int = Field(1024, ge=64, description="Photos are downscaled to this longest side for detection.")
    det_score_threshold: float = Field(0.6, ge=0, le=1, description="Detector confidence below which a box is dropped.")
    det_nms_threshold: float = Field(0.4, ge=0, le=1, description="IoU above which overlapping boxes are merged.")
    min_face_size: int = Field(16, ge=0, description="Faces smaller than this (shorter bbox side, px) are dropped.")
    max_faces: int = Field(
        20, ge=0, description="Keep at most this many faces per image, the largest (0 = all). Bounds the work "
        "one small image can buy: a tiled photo of 100 faces would otherwise cost 100 embeddings.",
    )

    align_method: Literal["lmeds", "umeyama"] = Field(
        "lmeds", description="Landmark fit for alignment: robust LMEDS (default) or least-squares Umeyama."
    )

    # --- quality gate for enrollment ------------------------------------------------------
    enroll_min_face_size: int = Field(48, ge=0, description="Enrollment refuses faces smaller than this (face_too_small).")
    enroll_min_det_score: float = Field(0.75, ge=0, le=1, description="Enrollment refuses weaker detections (low_quality).")
    enroll_min_blur: float = Field(15.0, ge=0, description="Variance of Laplacian of the aligned crop.")

    # --- decisions --------------------------------------------------------------------------
    far_target: float = Field(1e-3, gt=0, lt=1, description="FAR whose card threshold is used by default.")
    threshold_override: float | None = Field(None, ge=-1, le=1, description="Fixed threshold for every model.")

    # --- gallery index ------------------------------------------------------------------------
    index_exact_max: int = Field(
        200_000, ge=0, description="Exact search up to this many faces per collection x model, IVF above."
    )
    index_use_gpu: bool = Field(True, description="Use faiss GPU indexes when faiss-gpu and a GPU are present.")
    index_ivf_nprobe: int = Field(
        0, ge=0, description="IVF lists searched per query above index_exact_max (0 = auto: 10% of the lists, at least 12)."
    )
    index_ivf_nlist: int = Field(0, ge=0, description="IVF lists (0 = auto, about 2*sqrt(faces)).")
    index_oversample: int = Field(
        4, ge=1, description="Identify searches top_k * this many faces before grouping them by identity."
    )
    index_flat_fp16: bool = Field(
        False,
        description="Store exact-search vectors as fp16: half the memory, several times faster "
        "single-query search, recall@10 ~0.999 instead of 1.",
    )
    index_search_threads: int = Field(
        1,
        ge=0,
        description="OpenMP threads per FAISS search call (0 = all cores). 1 avoids oversubscription "
        "between concurrent requests and onnxruntime on small machines.",
    )

    # --- API, auth ----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Bind address of `facegate serve`.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `facegate serve`.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes (each loads the models).")
    auth_enabled: bool = Field(True, description="The only switch that turns auth off (local development only).")
    api_key_header: str = Field("X-API-Key", description="Header that carries the API key.")
    bootstrap_admin_key: SecretStr | None = Field(None, description="Admin key accepted on first start.")
    rate_limit_per_minute: int = Field(600, ge=0, description="Requests per key per minute (0 = unlimited).")
    auth_failures_per_minute: int = Field(
        30, ge=0, description="Failed authentications per client address per minute before it gets 429 "
        "(0 = unlimited).",
    )
    max_request_bytes: int = Field(40 * 1024 * 1024, ge=1, description="Whole request body limit.")
    cors_origins: list[str] = Field([], description="Allowed CORS origins; empty = CORS off.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Server log level.")

    @field_validator("data_dir", "models_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'facegate.db').resolve()}"


def settings_table(settings: Settings | None = None, markdown: bool = True) -> list[tuple[str, str, str]]:
    """(env var, value, description) for every knob; secrets masked. Feeds ``facegate config`` and the README."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name) if settings else field.default
        if name in ("models_dir", "data_dir") and settings is not None:
            choice = dir_choice(settings, name[:-4])  # type: ignore[arg-type]
            value = f"{choice.path.resolve()} ({choice.why})"
        if isinstance(value, SecretStr):
            value = "***" if value.get_secret_value() else ""
        elif name in ("models_dir", "data_dir") and settings is None:
            value = f"./{name[:-4]} if ./models or ./data exists, else per-user"
        elif isinstance(value, list):
            value = ",".join(value) if value else "(empty)"
        elif value is None:
            value = "(unset)"
        rows.append((f"FACEGATE_{name.upper()}", str(value), field.description or ""))
    return rows


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests build their own ``Settings(...)`` instead."""
    return Settings()
