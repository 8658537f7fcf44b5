"""Verification and identification evaluation, for a PyTorch backbone or an exported ONNX model.

Pair sources: LFW ``pairs.txt`` (View 2, folds from the file) and ``pairsDev*.txt``
(View 1), CSV files (``a,b,same`` or ``path1,path2,issame[,fold]``, paths relative to
the CSV's folder unless ``root`` is given), and InsightFace ``.bin`` files (pickle of
(list of encoded images, list of issame); folds = 10 contiguous chunks, as
InsightFace's KFold does). Images that are not 112x112 aligned crops are detected
and aligned with the service's pipeline first.

Every embedder takes **BGR uint8 aligned crops** -- the service's contract -- so the
ONNX path is just the service's own :func:`service.contract.embedder`:
the numbers written into a model card are the numbers the service will produce.
Metrics come from :mod:`service.calibration` (numpy, shared with the service).
"""

from __future__ import annotations

import csv
import pickle
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from service.contract import DEFAULT_FARS, verification_report

CROP = 112


class CropEmbedder(Protocol):
    """Anything that maps BGR uint8 aligned crops to L2-normalised embeddings."""

    def embed(self, crops: list[np.ndarray], flip: bool | None = None) -> np.ndarray: ...


# --------------------------------------------------------------------------- embedders
class TorchEmbedder:
    """A PyTorch backbone behind the service's embedder interface (training-time evaluation).

    ``flip``: embedding = normalise(f(x) + f(mirror x)), the InsightFace protocol and
    what the service's ``flip_test`` does.
    """

    def __init__(self, backbone: Any, device: Any = "cpu", batch_size: int = 64) -> None:
        self.backbone, self.device, self.batch_size = backbone, device, batch_size

    def embed(self, crops: list[np.ndarray], flip: bool | None = None) -> np.ndarray:
        import torch

        from training.data.transforms import to_batch

        was_training = self.backbone.training
        self.backbone.eval()
        outs = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = to_batch(crops[i : i + self.batch_size]).to(self.device)
                e = self.backbone(x).float()
                if flip:
                    e = e + self.backbone(torch.flip(x, dims=[3])).float()
                outs.append(torch.nn.functional.normalize(e, dim=1).cpu().numpy())
        self.backbone.train(was_training)
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def service_embedder(model: str, models_dir: Path | None = None, flip: bool = False) -> Any:
    """The service's embedder for a registered model (``models/<name>/model.json``)."""
    from service.contract import embedder

    return embedder(model, models_dir, flip=flip)


def onnx_file_embedder(
    path: Path,
    color: str = "RGB",
    mean: float = 127.5,
    std: float = 127.5,
    batch: str = "symbolic",
    flip: bool = False,
    input_name: str | None = None,
) -> Any:
    """The service's embedder for a bare ONNX file, through a throw-away card + registry.

    For models with no card yet (e.g. the shared SFace copy); the preprocessing is
    then whatever these arguments say, so pass the model's real convention.
    """
    from service.contract import InputSpec, ModelCard, Registry, Source, embedder_for_card, sha256_file

    path = Path(path).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="facegate-eval-"))
    card = ModelCard(
        name="eval-model",
        kind="recognizer",
        family="onnx",
        source=Source(file=str(path), sha256=sha256_file(path)),
        input=InputSpec(name=input_name, color=color, mean=mean, std=std, batch=batch),  # type: ignore[arg-type]
    )
    registry = Registry(tmp)
    registry.save(card)
    return embedder_for_card(card, tmp, flip=flip)


# --------------------------------------------------------------------------- pair sets
@dataclass
class PairSet:
    name: str
    keys: list[str]
    load: Callable[[str], np.ndarray]
    a: np.ndarray
    b: np.ndarray
    issame: np.ndarray
    folds: np.ndarray | None

    def subset(self, idx: np.ndarray) -> PairSet:
        return PairSet(
            self.name,
            self.keys,
            self.load,
            self.a[idx],
            self.b[idx],
            self.issame[idx],
            None if self.folds is None else self.folds[idx],
        )


def _image_loader(root: Path) -> Callable[[str], np.ndarray]:
    """Read ``root/key``; aligned 112x112 crops as they are, anything else through the service's aligner."""
    aligner: list[Any] = []

    def load(key: str) -> np.ndarray:
        path = root / key
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None and img.shape[:2] == (CROP, CROP):
            return img
        if not aligner:
            from training.data.imagefolder import service_aligner

            aligner.append(service_aligner())
        crop = aligner[0](path.read_bytes())
        if crop is None:
            raise ValueError(f"no face found in {path}")
        return crop

    return load


def _from_pairs(
    name: str, pairs: Sequence[tuple[str, str, bool, int | None]], load: Callable[[str], np.ndarray]
) -> PairSet:
    keys: dict[str, int] = {}
    for pa, pb, _, _ in pairs:
        keys.setdefault(pa, len(keys))
        keys.setdefault(pb, len(keys))
    folds = [f for *_, f in pairs]
    return PairSet(
        name,
        list(keys),
        load,
        np.asarray([keys[p[0]] for p in pairs]),
        np.asarray([keys[p[1]] for p in pairs]),
        np.asarray([bool(p[2]) for p in pairs]),
        None if any(f is None for f in folds) else np.asarray(folds),
    )


def stratified_folds(issame: np.ndarray, n_folds: int = 10) -> np.ndarray:
    """Fold ids for a pair list without protocol folds: same and different pairs dealt
    round-robin, so every fold holds both kinds (View 1 files list all same pairs first,
    where contiguous folds would hold one kind only)."""
    folds = np.zeros(issame.size, dtype=int)
    for v in (True, False):
        idx = np.flatnonzero(issame == v)
        folds[idx] = np.arange(idx.size) % n_folds
    return folds


def _with_folds(ps: PairSet) -> PairSet:
    if ps.folds is None or np.unique(ps.folds).size < 2:
        ps.folds = stratified_folds(ps.issame)
    return ps


def load_pair_set(path: Path, root: Path | None = None) -> PairSet:
    """Any supported pair file -> :class:`PairSet` (unique images + pair indices + folds).

    Folds: from the file (LFW ``pairs.txt``, a CSV ``fold`` column); ``.bin`` files get
    InsightFace's 10 contiguous folds (``folds=None``); other fold-less files get 10
    stratified folds (:func:`stratified_folds`).
    """
    path = Path(path)
    if path.suffix == ".bin":
        with open(path, "rb") as f:
            bins, issame = pickle.load(f, encoding="bytes")
        blobs = [bytes(b) if not isinstance(b, bytes) else b for b in bins]

        def load_bin(key: str) -> np.ndarray:
            img = cv2.imdecode(np.frombuffer(blobs[int(key)], np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"{path}: image {key} does not decode")
            return img  # OpenCV decodes to BGR: the crop contract

        n = len(issame)
        pairs = [(str(2 * i), str(2 * i + 1), bool(issame[i]), None) for i in range(n)]
        return _from_pairs(path.stem, pairs, load_bin)
    base = Path(root) if root else path.parent
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        pairs = []
        for r in rows:
            a = r.get("a") or r.get("path1")
            b = r.get("b") or r.get("path2")
            same = r.get("same", r.get("issame"))
            if a is None or b is None or same is None:
                raise ValueError(f"{path}: need columns a,b,same or path1,path2,issame")
            fold = r.get("fold")
            pairs.append(
                (a, b, str(same).strip().lower() in ("1", "true", "yes"), int(fold) if fold else None)
            )
        return _with_folds(_from_pairs(path.stem, pairs, _image_loader(base)))
    from training.data.lfw import read_pairs

    pairs_txt = [(p.a, p.b, p.same, p.fold) for p in read_pairs(path)]
    return _with_folds(_from_pairs(path.stem, pairs_txt, _image_loader(base)))


def embed_keys(
    ps: PairSet,
    embedder: CropEmbedder,
    flip: bool = False,
    batch: int = 256,
    progress: bool = True,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """Embeddings of the pair set's unique images (rows follow ``ps.keys``; unneeded rows are zero)."""
    from tqdm import tqdm

    idx = np.unique(np.r_[ps.a, ps.b]) if needed is None else needed
    out: np.ndarray | None = None
    for i in tqdm(range(0, len(idx), batch), desc=f"embedding {ps.name}", disable=not progress, unit="batch"):
        chunk = idx[i : i + batch]
        e = embedder.embed([ps.load(ps.keys[k]) for k in chunk], flip=flip)
        if out is None:
            out = np.zeros((len(ps.keys), e.shape[1]), np.float32)
        out[chunk] = e
    assert out is not None
    return out


def evaluate_pair_set(
    ps: PairSet,
    embedder: CropEmbedder,
    flip: bool = False,
    fars: Sequence[float] = DEFAULT_FARS,
    progress: bool = True,
) -> dict[str, Any]:
    """Cosine scores over the pairs -> :func:`service.calibration.verification_report` (+ raw scores)."""
    emb = embed_keys(ps, embedder, flip=flip, progress=progress)
    scores = np.sum(emb[ps.a] * emb[ps.b], axis=1)
    rep = verification_report(scores, ps.issame, folds=ps.folds, fars=fars)
    rep.update({"pairs": ps.name, "flip": bool(flip), "n_images": int(np.unique(np.r_[ps.a, ps.b]).size)})
    rep["_scores"] = scores
    rep["_issame"] = ps.issame
    return rep


def evaluate_pair_file(
    path: Path,
    embedder: CropEmbedder,
    root: Path | None = None,
    flip: bool = False,
    folds: Sequence[int] | None = None,
    max_pairs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load, optionally restrict (``folds``; ``max_pairs`` evenly spaced pairs), evaluate."""
    ps = load_pair_set(path, root)
    if folds is not None and ps.folds is not None:
        ps = ps.subset(np.flatnonzero(np.isin(ps.folds, list(folds))))
    if max_pairs is not None and max_pairs < len(ps.a):
        ps = ps.subset(np.unique(np.linspace(0, len(ps.a) - 1, max_pairs).round().astype(int)))
    return evaluate_pair_set(ps, embedder, flip=flip, progress=progress)


# --------------------------------------------------------------------------- identification
def identification_rank1(emb: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Rank-1 on a gallery/probe split: each identity's first image is its gallery entry,
    its other images are probes; single-image identities stay in the gallery as distractors."""
    labels = np.asarray(labels)
    gallery, probes = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        gallery.append(idx[0])
        probes.extend(idx[1:].tolist())
    g, p = np.asarray(gallery), np.asarray(probes, dtype=int)
    if p.size == 0:
        raise ValueError("no identity has two images: nothing to probe")
    sims = emb[p] @ emb[g].T
    hit = labels[g][sims.argmax(1)] == labels[p]
    return {"rank1": float(hit.mean()), "gallery": int(g.size), "probes": int(p.size)}


def evaluate_identification(
    root: Path,
    embedder: CropEmbedder,
    people: Sequence[str] | None = None,
    flip: bool = False,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Rank-1 identification over identity folders (e.g. the View 1 test people of lfw112)."""
    from tqdm import tqdm

    from training.data.imagefolder import ImageFolderDataset

    ds = ImageFolderDataset(root, people=people)
    idx = np.arange(len(ds)) if max_images is None else np.arange(min(max_images, len(ds)))
    embs = []
    for i in tqdm(
        range(0, idx.size, 256), desc="embedding gallery/probes", disable=not progress, unit="batch"
    ):
        embs.append(embedder.embed([ds.load(int(k))[0] for k in idx[i : i + 256]], flip=flip))
    return identification_rank1(np.concatenate(embs), ds.labels[idx])


def public(rep: dict[str, Any]) -> dict[str, Any]:
    """A report without its raw score arrays (for JSON)."""
    return {k: v for k, v in rep.items() if not k.startswith("_")}
