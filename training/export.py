"""Export a trained backbone to ONNX + a model card the service loads with no manual step.

The ONNX graph
--------------
* input ``data``: float32 (N, 3, 112, 112), **RGB, (x - 127.5) / 127.5**, NCHW, N dynamic
  -- exactly :func:`training.data.transforms.to_tensor`; the card's ``input`` block
  says so (``color=RGB, mean=127.5, std=127.5, layout=NCHW, batch=dynamic``), and the
  service's embedder does that preprocessing from BGR crops itself.
* output ``embedding``: float32 (N, D), *not* normalised (the service L2-normalises;
  keeping the raw norm lets flip-test sum the two views before normalising).
* opset >= 17.

Checks before a card is written
-------------------------------
1. parity: the same real aligned faces through PyTorch and onnxruntime, raw outputs
   (max abs difference, relative to the output scale) and the service's full path
   (BGR crop -> card preprocessing -> ORT -> normalise) against the training path
   (BGR crop -> to_tensor -> torch -> normalise) by cosine; export fails above tolerance.
2. calibration: thresholds at FAR targets from a labelled pair set, evaluated
   through the service's embedder (so they are the service's numbers), plus accuracy.
   Without a pair set the card has no thresholds and says so: the service then refuses
   to make the model a collection's model (``model_uncalibrated``) until
   ``facegate models calibrate NAME --identities DIR --write`` has run, and parity is
   checked on seeded random crops instead of real faces.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import DEFAULT_FARS, calibrate_thresholds

INPUT_NAME = "data"
OUTPUT_NAME = "embedding"


def export_onnx(backbone: Any, path: Path, opset: int = 17, size: int = 112) -> Path:
    """Write ``backbone`` (eval mode) as ONNX with a dynamic batch dimension."""
    import torch

    if opset < 17:
        raise ValueError("opset must be >= 17")
    backbone = backbone.eval().cpu()
    x = torch.zeros(2, 3, size, size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # TorchScript exporter: mature for plain CNNs, and needs no onnxscript
            torch.onnx.export(
                backbone,
                (x,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        except Exception:  # noqa: BLE001 - fall back to the dynamo exporter (needs onnxscript)
            batch = torch.export.Dim("batch", min=1, max=4096)
            prog = torch.onnx.export(
                backbone,
                (x,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch}},
            )
            prog.save(str(path))
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    # Say in the graph how to feed it, for anyone who opens the file without the card.
    model.doc_string = (
        "facegate recognizer: input 'data' RGB (x-127.5)/127.5 NCHW 112x112, output raw embedding"
    )
    onnx.save(model, str(path))
    return path


def simplify(path: Path) -> bool:
    """onnxsim in place when installed (optional dependency); returns whether it ran."""
    try:
        import onnx
        import onnxsim  # type: ignore[import-not-found]
    except ImportError:
        return False
    model, ok = onnxsim.simplify(onnx.load(str(path)))
    if ok:
        onnx.save(model, str(path))
    return bool(ok)


def to_fp16(path: Path) -> None:
    """Weights and activations in fp16, fp32 input/output kept (needs onnxconverter-common)."""
    import onnx

    try:
        from onnxconverter_common import float16  # type: ignore[import-not-found]
    except ImportError as e:
        raise RuntimeError("fp16 export needs `pip install onnxconverter-common`") from e
    model = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))


def parity_check(
    backbone: Any,
    onnx_path: Path,
    crops: Sequence[np.ndarray],
    service_embedder: Any | None = None,
    rel_tol: float = 1e-3,
    cos_tol: float = 1e-4,
) -> dict[str, Any]:
    """Torch vs ONNX on real aligned BGR crops; raises ``AssertionError`` beyond tolerance."""
    import onnxruntime as ort
    import torch

    from training.data.transforms import to_batch

    x = to_batch(list(crops))
    backbone = backbone.eval().cpu()
    with torch.inference_mode():
        ref = backbone(x).float().numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0].astype(np.float32)
    max_abs = float(np.abs(out - ref).max())
    scale = float(np.abs(ref).max()) or 1.0

    def nrm(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    cos_raw = float((nrm(out) * nrm(ref)).sum(1).min())
    rep: dict[str, Any] = {
        "n_faces": len(crops),
        "max_abs_diff": max_abs,
        "rel_max_abs_diff": max_abs / scale,
        "min_cosine_raw": cos_raw,
        "rel_tol": rel_tol,
        "cos_tol": cos_tol,
    }
    if service_embedder is not None:
        svc = service_embedder.embed(list(crops), flip=False)
        rep["min_cosine_service"] = float((svc * nrm(ref)).sum(1).min())
    ok = rep["rel_max_abs_diff"] <= rel_tol and 1 - cos_raw <= cos_tol
    if "min_cosine_service" in rep:
        ok = ok and 1 - rep["min_cosine_service"] <= cos_tol
    rep["passed"] = bool(ok)
    if not ok:
        raise AssertionError(f"ONNX parity failed: {rep}")
    return rep


def _crops_from_pairs(pair_file: Path, root: Path | None, n: int) -> list[np.ndarray]:
    from training.evaluate import load_pair_set

    ps = load_pair_set(pair_file, root)
    return [ps.load(k) for k in ps.keys[:n]]


def _random_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """Seeded noise crops: parity of the graph itself when no real faces are at hand."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(n)]


def export_model(
    checkpoint: Path,
    name: str,
    models_dir: Path,
    calib_pairs: Path | None,
    calib_root: Path | None = None,
    eval_pairs: Sequence[Path] = (),
    eval_root: Path | None = None,
    calib_max_pairs: int | None = None,
    opset: int = 17,
    do_simplify: bool = False,
    fp16: bool = False,
    fars: Sequence[float] = DEFAULT_FARS,
    licence: str = "",
    provenance: str = "",
    parity_faces: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Checkpoint -> ``models/<name>/{model.onnx, model.json}``; returns the card as a dict.

    ``calib_pairs`` must be labelled pairs of people the model was **not** trained on
    (e.g. LFW View 2 for a model trained on View 1 training people): the thresholds
    are only as honest as that separation.
    """
    from service.contract import (
        InputSpec,
        ModelCard,
        Registry,
        Source,
        Thresholds,
        check_name,
        embedder_for_card,
        sha256_file,
    )
    from training.evaluate import evaluate_pair_file, public
    from training.train import load_backbone_from_checkpoint

    check_name(name)
    t0 = time.time()
    backbone, meta = load_backbone_from_checkpoint(checkpoint)
    cfg = meta["config"]
    registry = Registry(models_dir)
    folder = Path(models_dir) / name
    onnx_path = export_onnx(backbone, folder / "model.onnx", opset=opset)
    simplified = simplify(onnx_path) if do_simplify else False
    if fp16:
        to_fp16(onnx_path)
    head = dict(meta.get("head_hparams") or {"name": cfg["head"]["name"]})
    head_name = str(cfg["head"]["name"])
    emb_size = int(cfg["model"]["embedding_size"])
    card = ModelCard(
        name=name,
        kind="recognizer",
        family=head_name,
        source=Source(file="model.onnx", sha256=sha256_file(onnx_path)),
        input=InputSpec(
            name=INPUT_NAME,
            size=(112, 112),
            color="RGB",
            mean=127.5,
            std=127.5,
            layout="NCHW",
            batch="dynamic",
        ),
        output=OUTPUT_NAME,
        embedding_size=emb_size,
        training={
            "backbone": cfg["model"]["backbone"],
            "embedding_size": emb_size,
            "head": head,
            "optimizer": cfg["optim"],
            "epochs": cfg["epochs"],
            "steps": meta.get("global_step"),
            "batch_size": cfg["batch_size"],
            "data": meta.get("data_summary"),
            "augmentation": {"flip": cfg["data"]["flip"], "color_jitter": cfg["data"]["color_jitter"]},
            "sampler": cfg["data"]["sampler"],
            "seed": cfg["seed"],
            "run": cfg["name"],
            "export": {"opset": opset, "simplified": simplified, "fp16": fp16},
        },
        provenance=provenance
        or f"trained by facegate training ({cfg['name']}), exported from {Path(checkpoint).name}",
        licence=licence or "as the training data's licence allows (LFW: research use)",
        description=f"{cfg['model']['backbone']} + {head_name}, {emb_size}-d; input RGB (x-127.5)/127.5, "
        "ArcFace 5-point template at 112x112.",
    )
    registry.save(card)  # first without thresholds: the service embedder needs a card to load
    svc = embedder_for_card(card, Path(models_dir), flip=False)
    if calib_pairs is not None:
        crops = _crops_from_pairs(calib_pairs, calib_root, parity_faces)
    else:
        crops = _random_crops(parity_faces)
    parity = parity_check(
        backbone, onnx_path, crops, svc, rel_tol=2e-2 if fp16 else 1e-3, cos_tol=1e-3 if fp16 else 1e-4
    )
    parity["crops"] = "real aligned faces of the calibration pairs" if calib_pairs is not None else "seeded noise"

    accuracy: dict[str, Any] = {}
    if calib_pairs is not None:
        rep = evaluate_pair_file(
            calib_pairs, svc, root=calib_root, flip=False, max_pairs=calib_max_pairs, progress=progress
        )
        src = f"{Path(calib_pairs).name}, service embedder, no flip, {time.strftime('%Y-%m-%d')}"
        card.thresholds = Thresholds(**calibrate_thresholds(rep["_scores"], rep["_issame"], fars, source=src))
        accuracy[Path(calib_pairs).stem] = _acc_summary(public(rep))
    for p in eval_pairs:
        for flip in (False, True):
            e = embedder_for_card(card, Path(models_dir), flip=flip)
            r = public(evaluate_pair_file(p, e, root=eval_root, flip=flip, progress=progress))
            accuracy[f"{Path(p).stem}{'_flip' if flip else ''}"] = _acc_summary(r)
    accuracy["torch_training_evals"] = meta.get("evals", [])
    accuracy["note"] = (
        "verification accuracy: k-fold, threshold chosen on the other folds; service embedder path"
    )
    card.accuracy = accuracy
    card.training["parity"] = parity  # type: ignore[index]
    registry.save(card)
    (folder / "export.json").write_text(json.dumps({"seconds": time.time() - t0, "parity": parity}, indent=2))
    return card.model_dump(mode="json", exclude_none=True)


def _acc_summary(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": r["accuracy"],
        "std": r["std"],
        "auc": r["auc"],
        "n_pairs": r["n_pairs"],
        "flip": r["flip"],
        "protocol": r["protocol"],
        "tar_at_far": {
            k: {"tar": v["tar"], "threshold": v["threshold"], "resolvable": v["resolvable"]}
            for k, v in r["tar_at_far"].items()
        },
    }
