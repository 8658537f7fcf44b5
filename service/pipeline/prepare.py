"""The one path from image bytes to aligned crops: decode -> detect -> choose -> gate -> align.

Every caller (the API, the CLI, training's data preparation, the benchmarks) goes through
:func:`prepare`, so the face-choice policy, the enrollment quality gate and the
"aligned crop or detect + align" decision exist once.

Face choice (``choose``):

* ``all`` — every face, largest first;
* ``largest`` — the largest face (by bbox area);
* ``strict`` — exactly one face, else ``multiple_faces``.

``need_face`` makes an image without a face ``no_face``. ``aligned=True`` declares the
image already is a crop aligned to the recognizer's template (e.g. a 112x112 ArcFace
crop): no detection, the whole image is the face, resized to the input size.
``aligned="auto"`` takes an image of exactly the recognizer's input size as such a crop
(data sets of aligned crops, like LFW's) and detects faces in any other.
Typed errors name the image they are about (``details.field`` / ``filename``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from service.errors import FacegateError, FaceTooSmall, InvalidRequest, LowQuality, MultipleFaces, NoFace
from service.pipeline.faces import DetectedFace
from service.pipeline.quality import assess

if TYPE_CHECKING:
    from service.pipeline.pipeline import FacePipeline

FaceChoice = Literal["all", "largest", "strict"]


@dataclass
class ImageInput:
    """The raw bytes of one image and where they came from (for error details)."""

    data: bytes
    field: str = "image"
    filename: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """The photo as uploaded: its size after EXIF orientation and its format."""

    width: int
    height: int
    format: str


@dataclass(frozen=True)
class QualityGate:
    """Enrollment's minimums: a smaller face is ``face_too_small``, a weaker detection or a
    blurrier face ``low_quality`` (with ``reason`` det_score / blur)."""

    min_face_size: float = 0.0
    min_det_score: float = 0.0
    min_blur: float = 0.0

    @classmethod
    def for_enrollment(cls, settings: Any) -> QualityGate:
        return cls(settings.enroll_min_face_size, settings.enroll_min_det_score, settings.enroll_min_blur)

    def check(self, f: DetectedFace) -> None:
        if f.size < self.min_face_size:
            raise FaceTooSmall(f"the face is {f.size:.0f} px; enrollment needs at least {self.min_face_size} px",
                               size=round(f.size, 1), min_size=self.min_face_size)
        if f.score < self.min_det_score:
            raise LowQuality(f"detector score {f.score:.2f} is below the enrollment minimum {self.min_det_score}",
                             score=round(float(f.score), 4), min_score=self.min_det_score, reason="det_score")
        blur = f.quality.get("blur", float("inf"))
        if blur < self.min_blur:
            raise LowQuality(f"the face is too blurred (sharpness {blur:.1f} < {self.min_blur})",
                             blur=round(float(blur), 2), min_blur=self.min_blur, reason="blur")


@dataclass
class Prepared:
    """One image after decode -> detect (-> align): everything but the embeddings. The
    decoded pixels are not kept, so a request holds crops, not photos."""

    info: ImageInfo
    faces: list[DetectedFace]  # every face found, largest first
    chosen: list[DetectedFace]  # the faces selected by the choice policy (aligned when asked)
    crops: dict[str, list[np.ndarray]] = field(default_factory=dict)  # recognizer -> aligned crops of `chosen`
    sha256: str = ""


def choose_faces(faces: list[DetectedFace], choose: FaceChoice) -> list[DetectedFace]:
    """Apply the face-choice policy to faces sorted largest first."""
    if choose == "strict" and len(faces) > 1:
        raise MultipleFaces(f"{len(faces)} faces were found; strict mode needs exactly one", count=len(faces),
                            bboxes=[[round(float(v), 1) for v in f.bbox] for f in faces])
    return faces[:1] if choose in ("largest", "strict") else faces


def tag_field(err: FacegateError, img: ImageInput) -> FacegateError:
    """Say which image an image/face error is about (``details.field``)."""
    err.details.setdefault("field", img.field)
    if img.filename:
        err.details.setdefault("filename", img.filename)
    return err


def prepare(
    pipeline: FacePipeline,
    img: ImageInput,
    *,
    recognizers: tuple[str, ...] = (),
    choose: FaceChoice = "all",
    need_face: bool = True,
    detector: str | None = None,
    aligned: bool | Literal["auto"] = False,
    gate: QualityGate | None = None,
) -> Prepared:
    """Blocking. Crops are aligned for each of ``recognizers`` (none: detection only)."""
    try:
        image = pipeline.decode(img.data)
        w, h = image.original_size
        info = ImageInfo(int(w), int(h), image.format)
        sha = hashlib.sha256(img.data).hexdigest()
        if aligned == "auto":
            tw, th = pipeline.card(recognizers[0] if recognizers else pipeline.settings.recognizer).input.size
            aligned = image.pixels.shape[:2] == (th, tw)
        if aligned:
            face, crops = _aligned_crop(pipeline, image, recognizers)
            return Prepared(info, [face], [face], crops, sha)
        faces = pipeline.detect(image, detector)
        if need_face and not faces:
            raise NoFace("no face was found in the image")
        chosen = choose_faces(faces, choose)
        if gate is not None:
            for f in chosen:
                gate.check(f)
        crops = {m: [pipeline.align(image, f, m) for f in chosen] for m in recognizers}
    except FacegateError as e:
        raise tag_field(e, img) from None
    return Prepared(info, faces, chosen, crops, sha)


def _aligned_crop(pipeline: FacePipeline, image: Any, recognizers: tuple[str, ...]) -> tuple[DetectedFace, dict]:
    h, w = image.pixels.shape[:2]
    if not 0.9 <= w / h <= 1.1:
        raise InvalidRequest(f"an aligned crop must be square (got {w}x{h}); send aligned=false to detect faces")
    crops = {}
    for m in recognizers or (pipeline.settings.recognizer,):
        tw, th = pipeline.card(m).input.size
        interp = cv2.INTER_AREA if w > tw else cv2.INTER_LINEAR
        crop = cv2.resize(image.pixels, (tw, th), interpolation=interp) if (w, h) != (tw, th) else image.pixels
        crops[m] = [np.ascontiguousarray(crop)]
    ow, oh = image.original_size
    face = DetectedFace(bbox=np.array([0.0, 0.0, ow, oh], np.float32), score=1.0)
    face.quality = assess(image.pixels, DetectedFace(bbox=np.array([0.0, 0.0, w, h], np.float32), score=1.0))
    face.quality["size"] = float(min(ow, oh))
    return face, crops
