"""Recognizers fed through our detect + align: pair separation and parity with the reference."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from service import usecases as uc
from service.calibration import auc, best_threshold, roc_curve
from service.pipeline.prepare import ImageInput
from tests.cards import default_card_threshold

DETECTORS = ["yunet-2023mar-int8bq", "scrfd-2.5g"]
# The default pack (same SFace weights, int8 YuNet) has its own tests below.
RECOGNIZERS = ["sface-clean", "mbf-paddle"]


def _pairs(faces_dir):
    with open(faces_dir / "pairs.csv") as f:
        return [(r["a"], r["b"], int(r["same"])) for r in csv.DictReader(f)]


def _largest(p, path):
    """The embedding of the largest face of a photo, through the embed use case."""
    (ef,) = uc.embed(p, [ImageInput(path.read_bytes())], largest_only=True).faces
    return ef.embedding


def _embed_all(p, faces_dir, names):
    return {rel: _largest(p, faces_dir / rel) for rel in names}


@pytest.fixture(scope="module")
def lfw_threshold(make_pipeline, lfw_dir):
    """Per recognizer, computed once: the shared models come without a calibrated threshold."""
    cache: dict[str, float] = {}

    def get(recognizer: str) -> float:
        if recognizer not in cache:
            cache[recognizer] = _lfw_threshold(make_pipeline(recognizer=recognizer), lfw_dir)
        return cache[recognizer]

    return get


def _lfw_threshold(p, lfw_dir, n_pairs=300):
    """Accuracy-maximising threshold on LFW View 2 fold 0 (people disjoint from the shared photos)."""
    with open(lfw_dir / "pairs_paths.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["fold"] == "0"][: n_pairs * 2]
    import cv2

    crops = {}
    for r in rows:
        for k in ("path1", "path2"):
            if r[k] not in crops:
                crops[r[k]] = cv2.imread(str(lfw_dir / r[k]))
    names = list(crops)
    embs = dict(zip(names, p.embed([crops[n] for n in names])))
    scores = [float(embs[r["path1"]] @ embs[r["path2"]]) for r in rows]
    same = [r["issame"] in ("1", "True", "true") for r in rows]
    return best_threshold(scores, same)[0]


@pytest.mark.parametrize("recognizer", RECOGNIZERS)
@pytest.mark.parametrize("detector", DETECTORS)
def test_pairs_separate(detector, recognizer, make_pipeline, faces_dir, lfw_threshold, record_property) -> None:
    p = make_pipeline(detector=detector, recognizer=recognizer)
    pairs = _pairs(faces_dir)
    embs = _embed_all(p, faces_dir, sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs}))
    scores = np.array([embs[a] @ embs[b] for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs], dtype=bool)
    area = auc(*roc_curve(scores, same)[:2])
    card = p.card(recognizer)
    thr = card.thresholds.default if card.thresholds else lfw_threshold(recognizer)
    acc = float(((scores >= thr) == same).mean())
    record_property("auc", area)
    record_property("accuracy", acc)
    print(f"\n{detector} x {recognizer}: AUC {area:.4f}, accuracy {acc:.4f} at {thr:.3f}, "
          f"same min {scores[same].min():.3f}, different max {scores[~same].max():.3f}")
    assert area >= 0.99, area
    assert acc >= 0.97, acc


def test_default_pack_matches_reference_separation(make_pipeline, faces_dir) -> None:
    """The embedded pack must do what the reference does: every same pair above every different pair."""
    p = make_pipeline()
    pairs = _pairs(faces_dir)
    embs = _embed_all(p, faces_dir, sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs}))
    scores = np.array([embs[a] @ embs[b] for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs], dtype=bool)
    thr = default_card_threshold()
    assert scores[same].min() > scores[~same].max()
    assert ((scores >= thr) == same).all(), "100 % accuracy at the card threshold, as the reference"


def test_parity_with_reference_embeddings(make_pipeline, faces_dir) -> None:
    """YuNet (fp32) + our alignment + SFace reproduces reference_sface.json: cosine >= 0.99 on every photo."""
    ref = json.loads((faces_dir / "reference_sface.json").read_text())
    p = make_pipeline(detector="yunet-fp32", recognizer="sface-clean")
    cos = {}
    for rel, r in ref.items():
        cos[rel] = float(_largest(p, faces_dir / rel) @ np.asarray(r["sface_embedding"]))
    worst = min(cos, key=cos.get)
    assert cos[worst] >= 0.99, (worst, cos[worst])


def test_default_pack_close_to_reference(make_pipeline, faces_dir) -> None:
    """The int8 detector moves landmarks by ~1 px: embeddings stay close to the reference's."""
    ref = json.loads((faces_dir / "reference_sface.json").read_text())
    p = make_pipeline()
    cos = [float(_largest(p, faces_dir / rel) @ np.asarray(r["sface_embedding"])) for rel, r in ref.items()]
    assert min(cos) >= 0.97 and float(np.median(cos)) >= 0.99, (min(cos), np.median(cos))
