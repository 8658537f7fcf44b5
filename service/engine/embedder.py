"""Aligned crops in, L2-normalised float32 embeddings out.

The model card says how the network wants its input (size, colour order, mean/std,
layout); this module is the one place that turns OpenCV's BGR uint8 crops into that.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from service.cards import ModelCard, Registry
from service.config import Settings
from service.engine.session import LoadedSession, load_session
from service.errors import InferenceError, ModelLoadError


class Embedder(Protocol):
    card: ModelCard

    @property
    def dim(self) -> int: ...

    def embed(self, crops: list[np.ndarray], flip: bool | None = None) -> np.ndarray: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class OnnxEmbedder:
    """A recognizer running on onnxruntime.

    ``flip``: the InsightFace verification trick — embed the crop and its mirror and
    sum them before normalising; costs a second forward pass per crop.
    """

    def __init__(self, card: ModelCard, loaded: LoadedSession, *, flip: bool = False, max_batch: int = 32) -> None:
        self.card = card
        self.loaded = loaded
        self.flip = flip
        self.max_batch = 1 if loaded.batch_mode == "single" else max_batch
        self.size = card.input.size  # (w, h)
        self._out = card.output or loaded.output_names[0]
        if self._out not in loaded.output_names:
            raise ModelLoadError(f"model {card.name} has no output {self._out!r}")
        out_dim = loaded.session.get_outputs()[loaded.output_names.index(self._out)].shape[-1]
        self._dim = card.embedding_size or (out_dim if isinstance(out_dim, int) else 0)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def batch_mode(self) -> str:
        return self.loaded.batch_mode

    @property
    def provider(self) -> str:
        return self.loaded.providers[0]

    def preprocess(self, crops: list[np.ndarray]) -> np.ndarray:
        spec = self.card.input
        w, h = self.size
        batch = np.empty((len(crops), h, w, 3), dtype=np.float32)
        for i, crop in enumerate(crops):
            if crop.shape[:2] != (h, w):
                crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
            if crop.ndim == 2:
                crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
            batch[i] = crop[..., ::-1] if spec.color == "RGB" else crop
        if spec.mean or spec.std != 1.0:
            batch -= spec.mean
            batch /= spec.std
        if spec.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch, dtype=self.loaded.input_dtype)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw network output for a preprocessed batch, chunked to the model's batch limit."""
        sess, name = self.loaded.session, self.loaded.input_name
        outs = []
        try:
            for i in range(0, len(batch), self.max_batch):
                outs.append(sess.run([self._out], {name: batch[i : i + self.max_batch]})[0])
        except Exception as e:
            raise InferenceError(f"{self.card.name}: inference failed: {e}") from e
        out = np.concatenate(outs).astype(np.float32)
        return out.reshape(len(batch), -1)

    def embed(self, crops: list[np.ndarray], flip: bool | None = None) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        flip = self.flip if flip is None else flip
        x = self.preprocess(crops)
        if flip:
            mirrored = x[..., ::-1] if self.card.input.layout == "NCHW" else x[:, :, ::-1]
            raw = self.run(np.concatenate([x, np.ascontiguousarray(mirrored)]))
            raw = raw[: len(crops)] + raw[len(crops) :]
        else:
            raw = self.run(x)
        return l2_normalize(raw)


def load_embedder(
    card: ModelCard, registry: Registry, settings: Settings | None = None, *, flip: bool | None = None
) -> OnnxEmbedder:
    """Load a recognizer from its card with the settings' providers and threads."""
    settings = settings or Settings()
    loaded = load_session(
        registry.weights_path(card),
        settings.providers,
        intra_op_threads=settings.intra_op_threads,
        input_name=card.input.name,
        want_batch=card.input.batch != "single",
    )
    return OnnxEmbedder(
        card, loaded, flip=settings.flip_test if flip is None else flip, max_batch=settings.batch_max_size
    )
