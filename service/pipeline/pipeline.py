"""The face pipeline: decode -> detect -> align -> embed, with models loaded once.

One object per process owns the loaded detectors, recognizers and their
micro-batchers, so the API, the CLI, benchmarks and training's evaluation all run
exactly the same code path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.cards import ModelCard, Registry
from service.config import Settings
from service.engine.batcher import MicroBatcher
from service.engine.embedder import OnnxEmbedder, load_embedder
from service.errors import AlignmentUnavailable, ModelLoadError, MultipleFaces, NoFace
from service.pipeline.align import align_face
from service.pipeline.decode import DecodedImage, decode_image
from service.pipeline.detect import Detector, detect_faces, load_detector
from service.pipeline.faces import Face
from service.pipeline.quality import assess

log = logging.getLogger("facegate.pipeline")


@dataclass
class EmbeddedFace:
    face: Face  # original-image coordinates
    crop: np.ndarray  # aligned BGR crop, the recognizer's input size
    embedding: np.ndarray  # (D,) float32, L2-normalised
    model: str


class FacePipeline:
    def __init__(self, settings: Settings | None = None, registry: Registry | None = None) -> None:
        self.settings = settings or Settings()
        self.registry = registry or Registry(self.settings.models_dir)
        self._lock = threading.Lock()
        self._detectors: dict[str, Detector] = {}
        self._embedders: dict[str, OnnxEmbedder] = {}
        self._batchers: dict[str, MicroBatcher] = {}
        #: Called with each micro-batch size (the API hangs its Prometheus histogram here).
        self.on_batch: Callable[[str, int], None] | None = None

    # --- models ------------------------------------------------------------------------
    def load(self) -> None:
        """Load the configured detector and recognizer now, so a bad model fails at start-up."""
        self.detector()
        self.embedder()

    def card(self, name: str) -> ModelCard:
        return self.registry.get(name)

    def detector(self, name: str | None = None) -> Detector:
        name = name or self.settings.detector
        with self._lock:
            if name not in self._detectors:
                card = self.registry.get(name)
                if card.kind != "detector":
                    raise ModelLoadError(f"model {name} is a {card.kind}, not a detector")
                self._detectors[name] = load_detector(card, self.registry, self.settings)
            return self._detectors[name]

    def embedder(self, name: str | None = None) -> OnnxEmbedder:
        name = name or self.settings.recognizer
        with self._lock:
            if name not in self._embedders:
                card = self.registry.get(name)
                self._embedders[name] = load_embedder(card, self.registry, self.settings)
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

    def queue_depth(self) -> int:
        with self._lock:
            return sum(b.queue_depth for b in self._batchers.values())

    def close(self) -> None:
        with self._lock:
            for b in self._batchers.values():
                b.close()
            self._batchers.clear()

    # --- steps --------------------------------------------------------------------------
    def decode(self, data: bytes) -> DecodedImage:
        s = self.settings
        return decode_image(
            data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels, min_side_after_reduce=s.decode_reduce_min_side
        )

    def detect(
        self, image: DecodedImage, detector: str | None = None, *, max_faces: int | None = None, quality: bool = True
    ) -> list[Face]:
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

    def align(self, image: DecodedImage, face: Face, recognizer: str | None = None) -> np.ndarray:
        if face.landmarks is None:
            raise AlignmentUnavailable("this detector gives no landmarks, so faces cannot be aligned for embedding")
        card = self.card(recognizer or self.settings.recognizer)
        template = None if card.template is None else np.asarray(card.template, dtype=np.float32)
        return align_face(image.pixels, face.landmarks / image.scale, card.input.size, template, self.settings.align_method)

    def embed(self, crops: list[np.ndarray], recognizer: str | None = None) -> np.ndarray:
        """(N, D) embeddings through the recognizer's micro-batcher."""
        if not crops:
            return np.zeros((0, self.embedder(recognizer).dim), dtype=np.float32)
        return self.batcher(recognizer)(crops)

    async def aembed(self, crops: list[np.ndarray], recognizer: str | None = None) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.embedder(recognizer).dim), dtype=np.float32)
        return await self.batcher(recognizer).acall(crops)

    def threshold(self, recognizer: str | None = None, far: float | None = None) -> tuple[float, str]:
        """Decision threshold and where it came from: config override, card FAR target, card default."""
        if self.settings.threshold_override is not None:
            return self.settings.threshold_override, "config FACEGATE_THRESHOLD_OVERRIDE"
        card = self.card(recognizer or self.settings.recognizer)
        if card.thresholds is None:
            raise ModelLoadError(f"model {card.name} has no thresholds in its card; pass one in the request")
        return card.thresholds.for_far(far or self.settings.far_target)

    # --- whole-image conveniences ------------------------------------------------------------
    def faces_for_embedding(self, image: DecodedImage, detector: str | None = None, *, strict: bool = False) -> list[Face]:
        """Detected faces, refusing none (and several when ``strict``)."""
        faces = self.detect(image, detector)
        if not faces:
            raise NoFace("no face was found in the image")
        if strict and len(faces) > 1:
            raise MultipleFaces(f"{len(faces)} faces were found; strict mode needs exactly one", count=len(faces))
        return faces

    def analyze(
        self,
        data: bytes | DecodedImage,
        *,
        detector: str | None = None,
        recognizer: str | None = None,
        largest_only: bool = False,
        strict: bool = False,
    ) -> list[EmbeddedFace]:
        """Decode, detect, align and embed; faces sorted largest first."""
        image = data if isinstance(data, DecodedImage) else self.decode(data)
        faces = self.faces_for_embedding(image, detector, strict=strict)
        if largest_only:
            faces = faces[:1]
        name = recognizer or self.settings.recognizer
        crops = [self.align(image, f, name) for f in faces]
        embs = self.embed(crops, name)
        return [EmbeddedFace(f, c, e, name) for f, c, e in zip(faces, crops, embs)]
