"""service.calibration: checked against brute force on random scores."""

from __future__ import annotations

import numpy as np
import pytest

from service.calibration import (
    auc,
    best_threshold,
    calibrate_thresholds,
    far_key,
    kfold_accuracy,
    roc_curve,
    threshold_at_far,
    verification_report,
)
from service.cards import Thresholds


def _scores(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    s = np.where(y, rng.normal(0.6, 0.15, n), rng.normal(0.1, 0.15, n))
    return np.round(s, 3), y  # rounding makes ties, the edge case of every ROC code


def test_roc_matches_brute_force_and_auc_matches_rank_statistic() -> None:
    s, y = _scores()
    fpr, tpr, thr = roc_curve(s, y)
    for t, f, p in zip(thr[1:], fpr[1:], tpr[1:]):
        assert f == pytest.approx(((s >= t) & ~y).sum() / (~y).sum())
        assert p == pytest.approx(((s >= t) & y).sum() / y.sum())
    pos, neg = s[y], s[~y]
    mann_whitney = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (
        pos.size * neg.size
    )
    assert auc(fpr, tpr) == pytest.approx(mann_whitney, abs=1e-9)


def test_best_threshold_is_optimal() -> None:
    s, y = _scores(500, 1)
    thr, acc = best_threshold(s, y)
    assert acc == pytest.approx(((s >= thr) == y).mean())
    brute = max(((s >= t) == y).mean() for t in np.r_[s, s.max() + 1])
    assert acc == pytest.approx(brute)


def test_threshold_at_far_respects_the_target() -> None:
    s, y = _scores(20000, 2)
    for far in (1e-2, 1e-3):
        r = threshold_at_far(s, y, far)
        assert r["far_measured"] <= far
        assert r["resolvable"]
        assert ((s[~y] >= r["threshold"]).mean()) == pytest.approx(r["far_measured"])
        assert r["tar"] == pytest.approx((s[y] >= r["threshold"]).mean())
    assert not threshold_at_far(s, y, 1e-5)["resolvable"]


def test_kfold_uses_other_folds_and_perfect_separation_scores_one() -> None:
    y = np.tile([True, False], 300)
    s = np.where(y, 0.9, 0.1)
    rep = kfold_accuracy(s, y, folds=np.repeat(np.arange(10), 60))
    assert rep["accuracy"] == 1.0 and len(rep["fold_accuracy"]) == 10
    assert 0.1 < rep["threshold"] < 0.9
    # a fold whose threshold can only come from the others: shifted scores fail there
    s2 = s.copy()
    s2[:60] -= 0.5  # fold 0's same pairs now look different to a threshold learnt elsewhere
    assert kfold_accuracy(s2, y, folds=np.repeat(np.arange(10), 60))["fold_accuracy"][0] == 0.5


def test_calibrated_thresholds_fit_the_card_model() -> None:
    s, y = _scores(5000, 3)
    d = calibrate_thresholds(s, y, source="unit test")
    t = Thresholds(**d)
    assert set(t.far) == {"1e-2", "1e-3", "1e-4"}
    assert t.default == t.far["1e-3"]
    assert t.far["1e-2"] <= t.far["1e-3"] <= t.far["1e-4"]
    assert "below the pair set's resolution" in t.source  # 2.5k different pairs cannot resolve 1e-4
    assert far_key(1e-3) == "1e-3" and far_key(0.01) == "1e-2"


def test_report_has_everything_a_card_needs() -> None:
    s, y = _scores(1000, 4)
    rep = verification_report(s, y)
    for key in ("accuracy", "std", "auc", "tar_at_far", "best_threshold", "fold_accuracy"):
        assert key in rep
    with pytest.raises(ValueError):
        verification_report([0.1, float("nan")], [True, False])
