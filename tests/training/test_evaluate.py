"""Evaluation: pair formats, identification, and the shared SFace model through the service's embedder.

The full View 2 run (6,000 pairs, with and without flip) lives in
``python -m training.experiments.lfw_view2``; here 2 of the 10 folds keep the suite fast.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.evaluate import (
    evaluate_pair_file,
    identification_rank1,
    load_pair_set,
    onnx_file_embedder,
    stratified_folds,
)

SFACE = "face_recognition_sface_2021dec_int8bq_clean.onnx"


class PixelEmbedder:
    """A stand-in 'model': the downscaled crop itself, for tests of the plumbing."""

    def embed(self, crops: list[np.ndarray], flip: bool | None = None) -> np.ndarray:
        e = np.stack([cv2.resize(c, (8, 8)).astype(np.float32).ravel() for c in crops])
        if flip:
            e = e + np.stack([cv2.resize(c[:, ::-1], (8, 8)).astype(np.float32).ravel() for c in crops])
        e -= e.mean(1, keepdims=True)
        return e / np.linalg.norm(e, axis=1, keepdims=True)


def _write_bin(lfw_dir: Path, path: Path, n: int = 20) -> None:
    ps = load_pair_set(lfw_dir / "pairs.txt")
    bins, issame = [], []
    for i in list(range(n // 2)) + list(range(300, 300 + n // 2)):
        for k in (ps.a[i], ps.b[i]):
            bins.append((lfw_dir / ps.keys[k]).read_bytes())
        issame.append(bool(ps.issame[i]))
    path.write_bytes(pickle.dumps((bins, issame), protocol=4))


def test_pair_formats_agree(lfw_dir: Path, tmp_path: Path) -> None:
    """pairs.txt, a CSV and an InsightFace .bin of the same pairs give the same scores."""
    _write_bin(lfw_dir, tmp_path / "lfw.bin")
    ps = load_pair_set(lfw_dir / "pairs.txt")
    rows = [
        (ps.keys[ps.a[i]], ps.keys[ps.b[i]], int(ps.issame[i]))
        for i in list(range(10)) + list(range(300, 310))
    ]
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path1", "path2", "issame"])
        w.writerows(rows)
    emb = PixelEmbedder()
    r_bin = evaluate_pair_file(tmp_path / "lfw.bin", emb, progress=False)
    r_csv = evaluate_pair_file(tmp_path / "pairs.csv", emb, root=lfw_dir, progress=False)
    np.testing.assert_allclose(r_bin["_scores"], r_csv["_scores"], atol=1e-6)  # JPEG bytes decode the same
    assert r_bin["n_pairs"] == 20 and r_bin["n_same"] == 10
    r_flip = evaluate_pair_file(tmp_path / "lfw.bin", emb, flip=True, progress=False)
    assert r_flip["flip"] and not np.allclose(r_flip["_scores"], r_bin["_scores"])


def test_view1_gets_stratified_folds(lfw_dir: Path) -> None:
    ps = load_pair_set(lfw_dir / "pairsDevTest.txt")
    assert ps.folds is not None and np.unique(ps.folds).size == 10
    for f in range(10):
        assert ps.issame[ps.folds == f].sum() == 50  # every fold holds both kinds
    assert (stratified_folds(np.array([True] * 4 + [False] * 4), 2) == [0, 1, 0, 1, 0, 1, 0, 1]).all()


def test_identification_rank1() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    labels = np.repeat(np.arange(20), 3)
    emb = centres[labels] + 0.05 * rng.normal(size=(60, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    r = identification_rank1(emb, labels)
    assert r == {"rank1": 1.0, "gallery": 20, "probes": 40}


@pytest.fixture(scope="module")
def sface(shared_models: Path) -> Path:
    path = shared_models / SFACE
    if not path.is_file():
        pytest.skip(f"{SFACE} missing from the shared models")
    return path


def test_sface_lfw_view2_two_folds_through_the_service_embedder(sface: Path, lfw_dir: Path) -> None:
    """docs/facts.md: 99.32 % on all 10 folds (no flip). Half of folds 0 and 1, threshold from the other fold."""
    emb = onnx_file_embedder(sface, color="RGB", mean=0.0, std=1.0)  # SFace: RGB 0..255, no scaling
    rep = evaluate_pair_file(lfw_dir / "pairs.txt", emb, folds=[0, 1], max_pairs=600, progress=False)
    assert rep["n_pairs"] == 600 and rep["protocol"].startswith("k-fold")
    assert rep["accuracy"] >= 0.985, rep["fold_accuracy"]
    assert rep["auc"] > 0.995
    assert rep["tar_at_far"]["1e-2"]["resolvable"] and not rep["tar_at_far"]["1e-3"]["resolvable"]


def test_sface_flip_test(sface: Path, lfw_dir: Path) -> None:
    emb = onnx_file_embedder(sface, color="RGB", mean=0.0, std=1.0, flip=True)
    rep = evaluate_pair_file(
        lfw_dir / "pairs.txt", emb, folds=[0, 1], max_pairs=200, flip=True, progress=False
    )
    assert rep["flip"] and rep["accuracy"] >= 0.98
