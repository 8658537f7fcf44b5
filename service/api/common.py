"""Helpers shared by the routers: app-state access, threadpool wrappers around the
blocking pipeline steps, response shaping and threshold resolution.

Every CPU step (decode, detect, align) runs in the threadpool, never on the event loop;
embedding goes through the pipeline's micro-batcher with ``aembed`` so concurrent
requests share recognizer runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from service.api.images import ImageInput, tag_field
from service.errors import FacegateError, InvalidRequest, MultipleFaces, NoFace
from service.pipeline.decode import DecodedImage
from service.pipeline.faces import Face
from service.pipeline.pipeline import FacePipeline
from service.pipeline.quality import assess


def pipeline_of(request: Request) -> FacePipeline:
    return request.app.state.pipeline


def gallery_of(request: Request):
    return request.app.state.gallery


def face_dict(face: Face, **extra) -> dict:
    d = face.to_dict()
    d.update(extra)
    return d


def recognizer_name(pipeline: FacePipeline, name: str | None) -> str:
    """A registered recognizer's name (default: the configured one); typed errors otherwise."""
    name = name or pipeline.settings.recognizer
    card = pipeline.card(name)  # ModelNotFound (404) / InvalidRequest for a bad name
    if card.kind != "recognizer":
        raise InvalidRequest(f"model {name!r} is a {card.kind}, not a recognizer", model=name)
    return name


def detector_name(pipeline: FacePipeline, name: str | None) -> str:
    name = name or pipeline.settings.detector
    card = pipeline.card(name)
    if card.kind != "detector":
        raise InvalidRequest(f"model {name!r} is a {card.kind}, not a detector", model=name)
    return name


@dataclass
class Prepared:
    """One image after decode -> detect (-> align): everything but the embedding."""

    image: DecodedImage
    faces: list[Face]  # largest first
    crops: list[np.ndarray]  # aligned crops of the faces selected for embedding
    sha256: str


def _prepare(
    pipeline: FacePipeline,
    img: ImageInput,
    *,
    detector: str | None,
    recognizer: str | None,
    need_face: bool,
    strict: bool,
    largest_only: bool,
    aligned: bool = False,
) -> Prepared:
    """Blocking: decode, detect and (when ``recognizer``) align. Runs in the threadpool.

    ``need_face``: no face is ``no_face``; ``strict``: several faces are
    ``multiple_faces``; ``largest_only``: only the largest face is aligned.
    ``aligned``: the image already is a crop aligned to the recognizer's template (e.g. a
    112x112 ArcFace crop): no detection, the whole image is the face, resized to the input.
    """
    try:
        image = pipeline.decode(img.data)
        if aligned:
            return _prepare_aligned(pipeline, image, img, recognizer)
        faces = pipeline.detect(image, detector)
        if need_face and not faces:
            raise NoFace("no face was found in the image")
        if strict and len(faces) > 1:
            raise MultipleFaces(
                f"{len(faces)} faces were found; strict mode needs exactly one", count=len(faces),
                bboxes=[[round(float(v), 1) for v in f.bbox] for f in faces],
            )
        chosen = faces[:1] if largest_only else faces
        crops = [pipeline.align(image, f, recognizer) for f in chosen] if recognizer else []
    except FacegateError as e:
        raise tag_field(e, img) from None
    return Prepared(image, faces, crops, hashlib.sha256(img.data).hexdigest())


def _prepare_aligned(pipeline: FacePipeline, image: DecodedImage, img: ImageInput, recognizer: str | None) -> Prepared:
    h, w = image.pixels.shape[:2]
    if not 0.9 <= w / h <= 1.1:
        raise InvalidRequest(f"an aligned crop must be square (got {w}x{h}); send aligned=false to detect faces")
    tw, th = pipeline.card(recognizer or pipeline.settings.recognizer).input.size
    interp = cv2.INTER_AREA if w > tw else cv2.INTER_LINEAR
    crop = cv2.resize(image.pixels, (tw, th), interpolation=interp) if (w, h) != (tw, th) else image.pixels
    ow, oh = image.original_size
    face = Face(bbox=np.array([0.0, 0.0, ow, oh], np.float32), score=1.0)
    face.quality = assess(image.pixels, Face(bbox=np.array([0.0, 0.0, w, h], np.float32), score=1.0))
    face.quality["size"] = float(min(ow, oh))
    return Prepared(image, [face], [np.ascontiguousarray(crop)], hashlib.sha256(img.data).hexdigest())


async def prepare(pipeline: FacePipeline, img: ImageInput, **kw) -> Prepared:
    return await run_in_threadpool(_prepare, pipeline, img, **kw)


async def embed(pipeline: FacePipeline, crops: list[np.ndarray], recognizer: str) -> np.ndarray:
    """(N, D) L2-normalised embeddings through the micro-batcher (loads the model if needed)."""
    if not crops:
        return np.zeros((0, 0), np.float32)
    if recognizer not in pipeline.loaded_models():
        await run_in_threadpool(pipeline.embedder, recognizer)
    return await pipeline.aembed(crops, recognizer)


async def threshold_for(
    pipeline: FacePipeline, model: str, requested: float | None
) -> tuple[float, str]:
    """The request's own threshold, else the model card's (config override first)."""
    if requested is not None:
        return float(requested), "request"
    thr, source = await run_in_threadpool(pipeline.threshold, model)
    return float(thr), source


def image_info(p: Prepared) -> dict:
    w, h = p.image.original_size
    return {"width": int(w), "height": int(h), "format": p.image.format}
