"""Write a model card from what an ONNX file declares about itself.

Kind and family are read from the graph's inputs and outputs, so InsightFace
model-zoo recognizers, OpenCV Zoo models and this project's exports register with
one command; what a graph cannot tell (colour order, normalisation) comes from a
preset of the model's family.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from service.cards import InputSpec, ModelCard, Source, Thresholds, sha256_file
from service.errors import ModelLoadError

#: Recognizer input conventions by family, for ``facegate models add --preset``.
PRESETS = {
    # colour, mean, std — the conventions of each model family (docs/facts.md).
    "arcface": ("RGB", 127.5, 127.5),
    "sface": ("RGB", 0.0, 1.0),
    "adaface": ("BGR", 127.5, 127.5),
    "paddle": ("BGR", 127.5, 128.0),
}


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def card_from_onnx(
    path: Path,
    name: str,
    *,
    color: str = "RGB",
    mean: float = 127.5,
    std: float = 127.5,
    threshold: float | None = None,
    licence: str = "",
    family_hint: str = "arcface",
) -> ModelCard:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"{path} is not a readable ONNX file: {e}") from e
    inits = {i.name for i in model.graph.initializer}
    consumed = {n for node in model.graph.node for n in node.input}
    inputs = [i for i in model.graph.input if i.name not in inits and i.name in consumed]
    outputs = list(model.graph.output)
    if not inputs:
        raise ModelLoadError(f"{path} has no real graph input")
    inp = inputs[0]
    shape = _dims(inp)
    out_names = [o.name for o in outputs]
    src = Source(file=str(path), sha256=sha256_file(path))

    def batch_of(dim0) -> str:
        return "dynamic" if not isinstance(dim0, int) or dim0 == 0 else ("symbolic" if dim0 == 1 else "single")

    # Detectors by their output signature.
    if any(n.startswith("cls_") for n in out_names) and any(n.startswith("kps_") for n in out_names):
        return ModelCard(name=name, kind="detector", family="yunet", source=src, landmarks=True, licence=licence,
                         input=InputSpec(size=(0, 0), color="BGR", mean=0.0, std=1.0, batch="single"),
                         description=f"YuNet detector registered from {path.name}")
    if len(outputs) in (6, 9, 15) and len(shape) == 4:
        w = shape[3] if isinstance(shape[3], int) and shape[3] > 0 else 640
        h = shape[2] if isinstance(shape[2], int) and shape[2] > 0 else 640
        return ModelCard(name=name, kind="detector", family="scrfd", source=src, landmarks=len(outputs) != 6,
                         licence=licence, input=InputSpec(name=inp.name, size=(w, h), color="RGB", mean=127.5,
                                                          std=128.0, batch="single"),
                         description=f"SCRFD detector registered from {path.name}")
    if set(out_names) >= {"scores", "boxes"}:
        return ModelCard(name=name, kind="detector", family="ultralight", source=src, landmarks=False,
                         licence=licence, input=InputSpec(name=inp.name, size=(shape[3], shape[2]), color="RGB",
                                                          mean=127.0, std=128.0, batch="single"),
                         description=f"Ultra-Light detector (boxes only) registered from {path.name}")
    # Recognizers: one image input, a (N, D) output.
    if len(shape) == 4 and len(outputs) >= 1:
        nhwc = shape[3] == 3 and shape[1] != 3
        h, w = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            h = w = 112
        out_shape = _dims(outputs[0])
        dim = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
        thr = Thresholds(default=threshold, source="given at registration") if threshold is not None else None
        return ModelCard(
            name=name, kind="recognizer", family=family_hint, source=src,
            input=InputSpec(name=inp.name, size=(w, h), color=color, mean=mean, std=std,
                            layout="NHWC" if nhwc else "NCHW", batch=batch_of(shape[0])),
            output=outputs[0].name, embedding_size=dim, thresholds=thr, licence=licence,
            description=f"recognizer registered from {path.name}",
        )
    raise ModelLoadError(f"{path}: cannot tell whether this is a detector or a recognizer (input {shape})")
