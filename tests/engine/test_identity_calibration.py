"""All-pairs calibration from identity folders equals brute force over every pair."""

import itertools

import numpy as np
import pytest

from service.calibration import identity_pair_scores, threshold_at_far, thresholds_from_identities


@pytest.fixture(scope="module")
def labelled():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(60), 5)
    x = rng.normal(size=(300, 16)) + np.repeat(rng.normal(size=(60, 16)) * 2, 5, axis=0)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_blockwise_scores_match_brute_force(labelled) -> None:
    x, labels = labelled
    pos, neg_top, n_diff = identity_pair_scores(x, labels, max_far=1e-2, block=37)
    pairs = list(itertools.combinations(range(len(x)), 2))
    same = np.array([labels[i] == labels[j] for i, j in pairs])
    scores = np.array([x[i] @ x[j] for i, j in pairs])
    assert n_diff == (~same).sum() and pos.size == same.sum()
    np.testing.assert_allclose(np.sort(pos), np.sort(scores[same]), atol=1e-6)
    np.testing.assert_allclose(neg_top, np.sort(scores[~same])[::-1][: neg_top.size], atol=1e-6)
    out = thresholds_from_identities(x, labels, fars=(1e-2, 1e-3))
    for far, key in ((1e-2, "1e-2"), (1e-3, "1e-3")):
        ref = threshold_at_far(scores, same, far)
        assert abs(out["thresholds"]["far"][key] - ref["threshold"]) < 1e-5
        assert abs(out["tar_at_far"][key]["tar"] - ref["tar"]) < 1e-9
    assert out["thresholds"]["default"] == out["thresholds"]["far"]["1e-3"]


def test_single_identity_cannot_calibrate() -> None:
    with pytest.raises(ValueError):
        thresholds_from_identities(np.eye(4, dtype=np.float32), [0, 0, 0, 0])
