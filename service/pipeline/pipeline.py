"""The face pipeline: decode -> detect -> align -> embed, with models loaded once.

One object per process owns the loaded detectors, recognizers, their micro-batchers and
the bounded pool that decodes and detects, so the API, the CLI, benchmarks and training's
evaluation all run exactly the same code path. Decisions (which threshold, which face,
how candidates merge) are not made here: they live in :mod:`service.usecases`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

from service.cards import ModelCard, Registry
from service.config import Settings
from service.engine.batcher import MicroBatcher
from service.engine.embedder import OnnxEmbedder, load_embedder
from service.errors import AlignmentUnavailable
from service.pipeline.align import align_face
from service.pipeline.decode import DecodedImage, decode_image
from service.pipeline.detect import Detector, detect_faces, load_detector
from service.pipeline.faces import DetectedFace
from service.pipeline.fair_pool import FairPool
from service.pipeline.prepare import ImageInput, Prepared, prepare
from service.pipeline.quality import assess

log = logging.getLogger("facegate.pipeline")


class FacePipeline:
    def __init__(self, settings: Settings | None = None, registry: Registry | None = None) -> None:
        self.settings = settings or Settings()
        self.registry = registry or Registry(self.settings.models_dir)
        self._lock = threading.Lock()
        self._detectors: dict[str, Detector] = {}
        self._embedders: dict[str, OnnxEmbedder] = {}
        self._batchers: dict[str, MicroBatcher] = {}
        self._pool: FairPool | None = None
        #: Called with each micro-batch size (the API hangs its Prometheus histogram here).
        self.on_batch: Callable[[str, int], None] | None = None

    # --- models ------------------------------------------------------------------------
    def load(self) -> None:
        """Load the configured detector and recognizer now, so a bad model fails at start-up."""
        self.detector()
        self.embedder()

    def card(self, name: str) -> ModelCard:
        return self.registry.get(name)

    def recognizer(self, name: str | None = None) -> str:
        """A registered recognizer's name (default: the configured one); typed errors otherwise."""
        name = name or self.settings.recognizer
        self.registry.get(name, "recognizer")
        return name

    def detector_name(self, name: str | None = None) -> str:
        name = name or self.settings.detector
        self.registry.get(name, "detector")
        return name

    def detector(self, name: str | None = None) -> Detector:
        name = self.detector_name(name)
        with self._lock:
            if name not in self._detectors:
                self._detectors[name] = load_detector(self.registry.get(name), self.registry, self.settings)
            return self._detectors[name]

    def embedder(self, name: str | None = None) -> OnnxEmbedder:
        name = self.recognizer(name)
        with self._lock:
            if name not in self._embedders:
                self._embedders[name] = load_embedder(self.registry.get(name), self.registry, self.settings)
            return self._embedders[name]

    def batcher(self, name: str | None = None) -> MicroBatcher:
        name = name or self.settings.recognizer
        emb = self.embedder(name)
        with self._lock:
            if name not in self._batchers:
                self._batchers[name] = MicroBatcher(
                    emb.embed,
                    max_batch=emb.max_batch if emb.batch_mode != "single" else 1,
                    max_wait_ms=self.settings.batch_max_wait_ms,
                    name=name,
                    on_batch=(lambda n, _name=name: self.on_batch(_name, n)) if self.on_batch else None,
                )
            return self._batchers[name]

    def loaded_models(self) -> dict[str, dict]:
        with self._lock:
            out = {n: {"kind": "detector", "landmarks": d.has_landmarks} for n, d in self._detectors.items()}
            for n, e in self._embedders.items():
                out[n] = {"kind": "recognizer", "provider": e.provider, "batch": e.batch_mode, "dim": e.dim}
            return out

    def dim(self, recognizer: str | None = None) -> int:
        return self.embedder(recognizer).dim

    def queue_depth(self) -> int:
        with self._lock:
            return sum(b.queue_depth for b in self._batchers.values())

    def close(self) -> None:
        with self._lock:
            for b in self._batchers.values():
                b.close()
            self._batchers.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()

    # --- steps --------------------------------------------------------------------------
    def decode(self, data: bytes) -> DecodedImage:
        s = self.settings
        return decode_image(
            data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels,
            min_side_after_reduce=s.decode_reduce_min_side, max_side=s.decode_max_side,
            jpeg_max_scans=s.jpeg_max_scans, jpeg_max_passes=s.jpeg_max_scan_passes,
        )

    def detect(
        self, image: DecodedImage, detector: str | None = None, *, max_faces: int | None = None, quality: bool = True
    ) -> list[DetectedFace]:
        """Faces sorted by area (largest first), in original-image coordinates, with quality signals."""
        s = self.settings
        det = self.detector(detector)
        # The minimum face size is in original pixels; detection runs on the decoded pixels.
        faces = detect_faces(
            det,
            image.pixels,
            max_side=s.det_max_side,
            min_size=s.min_face_size / image.scale,
            max_faces=s.max_faces if max_faces is None else max_faces,
        )
        for f in faces:
            if quality:
                f.quality = assess(image.pixels, f)
        return [f.scaled(image.scale) if image.scale != 1.0 else f for f in faces]

    def align(self, image: DecodedImage, face: DetectedFace, recognizer: str | None = None) -> np.ndarray:
        if face.landmarks is None:
            raise AlignmentUnavailable("this detector gives no landmarks, so faces cannot be aligned for embedding")
        card = self.card(recognizer or self.settings.recognizer)
        template = None if card.template is None else np.asarray(card.template, dtype=np.float32)
        return align_face(image.pixels, face.landmarks / image.scale, card.input.size, template, self.settings.align_method)

    def embed(self, crops: list[np.ndarray], recognizer: str | None = None) -> np.ndarray:
        """(N, D) L2-normalised embeddings through the recognizer's micro-batcher, which
        gathers the crops of concurrent callers into shared runs."""
        if not crops:
            return np.zeros((0, self.embedder(recognizer).dim), dtype=np.float32)
        return self.batcher(recognizer)(crops)

    # --- whole images -------------------------------------------------------------------
    def prepare(self, img: ImageInput | bytes, **kw) -> Prepared:
        """Decode, detect, choose, gate and align one image (see :mod:`service.pipeline.prepare`)."""
        return prepare(self, img if isinstance(img, ImageInput) else ImageInput(img), **kw)

    def prepare_many(self, images: Sequence[ImageInput], *, tenant: str = "local", **kw) -> list[Prepared]:
        """:meth:`prepare` for several images side by side on the pipeline's bounded, fair pool:
        at most ``decode_threads`` images decode at once in this process whatever the number of
        requests, and one ``tenant`` (an API key) holds at most half of them, so a flood from
        one client cannot starve the others. The first error, in image order, is raised."""
        futures: list[Future] = [self._executor().submit(tenant, self.prepare, img, **kw) for img in images]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def _executor(self) -> FairPool:
        with self._lock:
            if self._pool is None:
                n = self.settings.decode_threads or 2 * (os.cpu_count() or 1)
                self._pool = FairPool(n, per_tenant=max(1, n // 2), name="facegate-decode")
            return self._pool
