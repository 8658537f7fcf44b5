"""Verification metrics and threshold calibration (numpy only, no torch).

One implementation serves both sides of the contract: the service uses it to
derive a model card's thresholds, and training's evaluation uses it to report
accuracy, so the numbers in a card and in a training report are computed the
same way.

Conventions
-----------
* ``scores`` are similarities (higher = more alike, e.g. cosine); ``issame`` is a
  boolean array of the same length.
* A pair is accepted ("same") when ``score >= threshold``.
* FAR = accepted different pairs / different pairs; TAR = accepted same pairs /
  same pairs.
* 10-fold accuracy follows the InsightFace/LFW protocol: for each fold, the best
  threshold is chosen on the other nine folds and accuracy is measured on the
  held-out fold. Folds come from the protocol file (LFW ``pairs.txt``) when the
  caller passes them, else they are contiguous equal chunks (what InsightFace's
  ``KFold(shuffle=False)`` does on its ``.bin`` files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_FARS: tuple[float, ...] = (1e-2, 1e-3, 1e-4)


def far_key(far: float) -> str:
    """Canonical card key of a FAR target: ``1e-3`` (not ``0.001`` or ``1e-03``)."""
    mantissa, exp = f"{far:.0e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _as_arrays(scores: Sequence[float], issame: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(issame).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.shape}) and issame ({y.shape}) differ in length")
    if s.size == 0:
        raise ValueError("no pairs")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    return s, y


def roc_curve(scores: Sequence[float], issame: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC as (fpr, tpr, thresholds), thresholds decreasing.

    Point ``i`` is the operating point of ``score >= thresholds[i]``; the first point
    is (0, 0) at +inf, the last is (1, 1) at the lowest score. Tied scores produce a
    single point (the same convention as scikit-learn, without the dependency).
    """
    s, y = _as_arrays(scores, issame)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.where(np.diff(s))[0]
    last = np.r_[distinct, s.size - 1]
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thr = np.r_[np.inf, s[last]]
    return fpr, tpr, thr


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a ROC curve by the trapezoid rule."""
    return float(np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr))


def threshold_at_far(scores: Sequence[float], issame: Sequence[bool], far: float) -> dict[str, Any]:
    """Lowest threshold whose FAR on these pairs is <= ``far``, with the TAR it gives.

    ``resolvable`` is False when there are too few different pairs to measure the
    target (fewer than 1 / far): the threshold is then the one that rejects every
    different pair seen, which says nothing reliable about the FAR at that level.
    """
    s, y = _as_arrays(scores, issame)
    neg = np.sort(s[~y])[::-1]
    pos = s[y]
    if neg.size == 0:
        raise ValueError("no different pairs: cannot calibrate a FAR")
    k = math.floor(far * neg.size + 1e-9)  # number of false accepts allowed
    if k >= neg.size:
        thr = float(neg[-1])
    else:
        # accept strictly above the (k+1)-th highest impostor score
        thr = float(np.nextafter(neg[k], np.inf))
    achieved = float((neg >= thr).sum() / neg.size)
    tar = float((pos >= thr).sum() / pos.size) if pos.size else float("nan")
    return {
        "far": far,
        "threshold": thr,
        "tar": tar,
        "far_measured": achieved,
        "resolvable": bool(neg.size * far >= 1.0),
        "n_different": int(neg.size),
    }


def tar_at_far(
    scores: Sequence[float], issame: Sequence[bool], fars: Sequence[float] = DEFAULT_FARS
) -> dict[str, dict[str, Any]]:
    """``{"1e-3": {threshold, tar, far_measured, resolvable, ...}, ...}`` for each target."""
    return {far_key(f): threshold_at_far(scores, issame, f) for f in fars}


def accuracy_at(scores: np.ndarray, issame: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided correctly at ``threshold``."""
    return float(((scores >= threshold) == issame).mean())


def best_threshold(scores: Sequence[float], issame: Sequence[bool]) -> tuple[float, float]:
    """Threshold maximising accuracy on these pairs, and that accuracy.

    Exact search over every split between distinct sorted scores (O(n log n)), rather
    than InsightFace's fixed 0.001 grid, so it is independent of the score range
    (cosine, raw dot product or distance-derived scores alike). The chosen threshold
    is the midpoint between the two scores of the best split.
    """
    s, y = _as_arrays(scores, issame)
    order = np.argsort(s, kind="mergesort")
    s, y = s[order], y[order]
    n = s.size
    # split i: pairs [0, i) rejected, [i, n) accepted; valid only where s[i-1] < s[i]
    neg_below = np.r_[0, np.cumsum(~y)]  # different pairs rejected
    pos_above = int(y.sum()) - np.r_[0, np.cumsum(y)]  # same pairs accepted
    correct = neg_below + pos_above
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] > s[:-1]
    correct = np.where(valid, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        thr = s[0] - 1e-6
    elif i == n:
        thr = s[-1] + 1e-6
    else:
        thr = 0.5 * (s[i - 1] + s[i])
    return float(thr), float(correct[i] / n)


def kfold_folds(n: int, n_folds: int = 10) -> np.ndarray:
    """Contiguous fold ids, as sklearn's KFold(shuffle=False) assigns them."""
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes)


def kfold_accuracy(
    scores: Sequence[float],
    issame: Sequence[bool],
    folds: Sequence[int] | None = None,
    n_folds: int = 10,
) -> dict[str, Any]:
    """K-fold verification accuracy, threshold chosen on the other folds.

    With a single fold present (a subset of a protocol), the threshold is chosen on
    that fold itself and ``protocol`` says so: that number is optimistic.
    """
    s, y = _as_arrays(scores, issame)
    f = kfold_folds(s.size, n_folds) if folds is None else np.asarray(folds).ravel()
    if f.shape != s.shape:
        raise ValueError("folds must have one entry per pair")
    ids = np.unique(f)
    accs, thrs = [], []
    for k in ids:
        test = f == k
        train = ~test if ids.size > 1 else test
        thr, _ = best_threshold(s[train], y[train])
        accs.append(accuracy_at(s[test], y[test], thr))
        thrs.append(thr)
    accs_a = np.asarray(accs)
    return {
        "accuracy": float(accs_a.mean()),
        "std": float(accs_a.std()),
        "fold_accuracy": [float(a) for a in accs],
        "fold_threshold": [float(t) for t in thrs],
        "folds": [int(k) for k in ids],
        "threshold": float(np.mean(thrs)),
        "protocol": "k-fold, threshold from the other folds"
        if ids.size > 1
        else "single fold, threshold fit on itself",
    }


def verification_report(
    scores: Sequence[float],
    issame: Sequence[bool],
    folds: Sequence[int] | None = None,
    fars: Sequence[float] = DEFAULT_FARS,
    n_folds: int = 10,
) -> dict[str, Any]:
    """Everything a card or a training log reports about one labelled pair set."""
    s, y = _as_arrays(scores, issame)
    fpr, tpr, _ = roc_curve(s, y)
    best_thr, best_acc = best_threshold(s, y)
    rep = kfold_accuracy(s, y, folds=folds, n_folds=n_folds)
    rep.update(
        {
            "auc": auc(fpr, tpr),
            "best_threshold": best_thr,
            "best_accuracy_in_sample": best_acc,
            "tar_at_far": tar_at_far(s, y, fars),
            "n_pairs": int(s.size),
            "n_same": int(y.sum()),
            "n_different": int((~y).sum()),
            "same_mean": float(s[y].mean()) if y.any() else float("nan"),
            "different_mean": float(s[~y].mean()) if (~y).any() else float("nan"),
        }
    )
    return rep


def calibrate_thresholds(
    scores: Sequence[float],
    issame: Sequence[bool],
    fars: Sequence[float] = DEFAULT_FARS,
    source: str = "",
    default_far: float = 1e-3,
) -> dict[str, Any]:
    """Thresholds at FAR targets, shaped for ``service.cards.Thresholds(**result)``.

    ``default`` is the threshold at the target closest to ``default_far`` (the
    service's default operating point), so a card's default and its FAR table
    never disagree. Targets that the pair set cannot resolve (fewer than 1/FAR
    different pairs) are still listed, and ``source`` says how many pairs backed
    them so a reader can judge.
    """
    s, y = _as_arrays(scores, issame)
    table = {far_key(f): threshold_at_far(s, y, f) for f in fars}
    clip = lambda t: float(min(1.0, max(-1.0, t)))
    far = {k: clip(v["threshold"]) for k, v in table.items()}
    key = min(far, key=lambda k: abs(math.log10(float(k)) - math.log10(default_far)))
    unresolved = [k for k, v in table.items() if not v["resolvable"]]
    note = f"{int(y.sum())} same / {int((~y).sum())} different pairs"
    if unresolved:
        note += f"; FAR {', '.join(unresolved)} below the pair set's resolution"
    return {"default": far[key], "far": far, "source": f"{source} ({note})" if source else note}


def identity_pair_scores(
    embeddings: np.ndarray, labels: Sequence[int], max_far: float = 1e-2, block: int = 2048
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of every pair of a labelled embedding set, without materialising all of them.

    Returns (all same-identity scores, the highest ``max_far`` share of the
    different-identity scores sorted descending, the number of different pairs).
    A pair set like LFW View 2 has 3,000 different pairs, too few to resolve FAR
    1e-4; all pairs of LFW's 13,233 images give about 87 million, which resolve
    1e-6 — and keeping only the top 1 % of them bounds memory.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    y = np.asarray(labels)
    n = len(x)
    same: list[np.ndarray] = []
    n_diff = 0
    for i in range(0, n, block):
        sims = x[i : i + block] @ x.T
        rows = np.arange(i, min(n, i + block))
        upper = np.arange(n)[None, :] > rows[:, None]  # each unordered pair once
        is_same = y[rows][:, None] == y[None, :]
        same.append(sims[upper & is_same])
        n_diff += int((upper & ~is_same).sum())
    keep = max(1, math.ceil(max_far * max(n_diff, 1)) + 1)
    top = np.empty(0, dtype=np.float32)
    for i in range(0, n, block):
        sims = x[i : i + block] @ x.T
        rows = np.arange(i, min(n, i + block))
        mask = (np.arange(n)[None, :] > rows[:, None]) & (y[rows][:, None] != y[None, :])
        cand = np.concatenate([top, sims[mask]])
        if cand.size > keep:
            cand = np.partition(cand, cand.size - keep)[-keep:]
        top = cand
    return np.concatenate(same) if same else np.empty(0, np.float32), np.sort(top)[::-1], n_diff


def thresholds_from_identities(
    embeddings: np.ndarray,
    labels: Sequence[int],
    fars: Sequence[float] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6),
    source: str = "",
    default_far: float = 1e-3,
) -> dict[str, Any]:
    """Card thresholds from all pairs of identity-labelled embeddings, plus the TAR at each.

    Same rule as :func:`threshold_at_far` (accept strictly above the (k+1)-th highest
    different-pair score, k = floor(FAR x pairs)), applied to every pair.
    """
    pos, neg_top, n_diff = identity_pair_scores(embeddings, labels, max(fars))
    if n_diff == 0:
        raise ValueError("one identity only: no different pairs to calibrate a FAR")
    far, report = {}, {}
    for f in fars:
        k = math.floor(f * n_diff + 1e-9)
        thr = float(np.nextafter(neg_top[k], np.inf)) if k < neg_top.size else float(neg_top[-1])
        key = far_key(f)
        far[key] = float(min(1.0, max(-1.0, thr)))
        report[key] = {
            "threshold": far[key],
            "tar": float((pos >= thr).mean()) if pos.size else float("nan"),
            "resolvable": bool(n_diff * f >= 1.0),
        }
    key = min(far, key=lambda k: abs(math.log10(float(k)) - math.log10(default_far)))
    note = f"{pos.size} same / {n_diff} different pairs"
    return {
        "thresholds": {"default": far[key], "far": far, "source": f"{source} ({note})" if source else note},
        "tar_at_far": report,
        "n_same": int(pos.size),
        "n_different": int(n_diff),
    }
