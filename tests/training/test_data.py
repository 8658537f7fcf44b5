"""Datasets, samplers, transforms and the LFW protocol files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from training.data.base import ConcatCrops, Subset
from training.data.imagefolder import ImageFolderDataset
from training.data.lfw import read_pairs, read_people, read_people_counts
from training.data.samplers import ClassAwareSampler, ShuffleSampler, build_sampler, zipf_subset
from training.data.synthetic import SyntheticFaces
from training.data.transforms import Augment, to_tensor


def test_to_tensor_is_rgb_and_insightface_normalised() -> None:
    crop = np.zeros((112, 112, 3), np.uint8)
    crop[..., 0] = 255  # pure blue in BGR
    x = to_tensor(crop)
    assert x.shape == (3, 112, 112) and x.dtype == torch.float32
    assert x[2].min() == 1.0 and x[0].max() == -1.0  # blue lands in channel 2 (RGB), red is -1


def test_augmentation_is_a_function_of_the_seed() -> None:
    ds = SyntheticFaces(4, 4, augment=Augment(flip=True, brightness=0.1, contrast=0.1, saturation=0.1))
    a, _, _ = ds[(3, 42)]
    b, _, _ = ds[(3, 42)]
    assert torch.equal(a, b)
    flips = {bool(torch.equal(ds[(3, s)][0], ds[3][0].flip(2))) for s in range(40)}
    assert flips  # some seeds flip, deterministically


def test_samplers_resume_and_shard() -> None:
    labels = np.repeat(np.arange(10), [1, 1, 2, 3, 5, 8, 13, 21, 34, 55])
    s = ShuffleSampler(len(labels), seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=17)
    assert list(s) == full[17:]  # resuming mid-epoch replays the same (index, aug seed) pairs
    assert sorted(i for i, _ in full) == list(range(len(labels)))
    ranks = [ShuffleSampler(len(labels), seed=1, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(2)
    shards = [list(r) for r in ranks]
    assert len(shards[0]) == len(shards[1])
    assert {i for sh in shards for i, _ in sh} == set(range(len(labels)))  # padded by wrapping, nothing lost


def test_class_balanced_sampler_flattens_the_long_tail() -> None:
    labels = np.repeat(np.arange(10), [1, 1, 2, 3, 5, 8, 13, 21, 34, 55])
    bal = ClassAwareSampler(labels, power=1.0, seed=0, num_samples=20000)
    drawn = np.bincount(labels[[i for i, _ in bal]], minlength=10) / 20000
    assert np.allclose(drawn, 0.1, atol=0.02)
    sqrt = build_sampler(labels, "sqrt")
    assert isinstance(sqrt, ClassAwareSampler) and sqrt.power == 0.5


def test_zipf_subset_profile() -> None:
    labels = np.repeat(np.arange(50), 40)
    idx = zipf_subset(labels, max_per_class=40, exponent=1.0, seed=0)
    counts = np.sort(np.bincount(labels[idx]))[::-1]
    assert counts[0] == 40 and counts[1] == 20 and counts[3] == 10 and counts[-1] == 1
    sub = Subset(SyntheticFaces(50, 40), idx)
    assert sub.num_classes == 50 and len(sub) == idx.size


def test_concat_keeps_label_ranges_disjoint() -> None:
    a, b = SyntheticFaces(3, 2, seed=0), SyntheticFaces(4, 2, seed=1)
    c = ConcatCrops([a, b])
    assert c.num_classes == 7 and len(c) == 14
    assert c.load(6)[1] == 3 and np.array_equal(c.load(6)[0], b.load(0)[0])


def test_lfw_protocol_files(lfw_dir: Path) -> None:
    v2 = read_pairs(lfw_dir / "pairs.txt")
    assert len(v2) == 6000 and sorted({p.fold for p in v2}) == list(range(10))
    assert (
        sum(p.same for p in v2) == 3000
        and all(p.same for p in v2[:300])
        and not any(p.same for p in v2[300:600])
    )
    dev_train, dev_test = read_pairs(lfw_dir / "pairsDevTrain.txt"), read_pairs(lfw_dir / "pairsDevTest.txt")
    assert len(dev_train) == 2200 and len(dev_test) == 1000
    train_people, test_people = (
        read_people(lfw_dir / "peopleDevTrain.txt"),
        read_people(lfw_dir / "peopleDevTest.txt"),
    )
    assert len(train_people) == 4038 and len(test_people) == 1711
    assert not set(train_people) & set(test_people)  # View 1 is people-disjoint
    assert not {p.a.split("/")[0] for p in dev_test} & set(train_people)
    assert (lfw_dir / v2[0].a).is_file()
    assert sum(read_people_counts(lfw_dir / "peopleDevTrain.txt").values()) == 9525


def test_imagefolder_on_aligned_crops(lfw_dir: Path) -> None:
    people = read_people(lfw_dir / "peopleDevTrain.txt")
    ds = ImageFolderDataset(lfw_dir, people=people, min_images=10, max_people=5)
    assert ds.num_classes == 5 and len(ds) >= 50
    img, label = ds.load(0)
    assert img.shape == (112, 112, 3) and label == 0
    x, _, _ = ds[(0, 7)]
    assert x.shape == (3, 112, 112)
    assert ds.summary()["identities"] == 5


def test_imagefolder_aligns_raw_photos_once(tmp_path: Path, lfw_dir: Path) -> None:
    """Raw photos go through an aligner once (here a stub; the real one is the service's)."""
    root = tmp_path / "people"
    for person, n in (("a", 2), ("b", 2)):
        (root / person).mkdir(parents=True)
        for k in range(n):
            cv2.imwrite(str(root / person / f"{k}.png"), np.full((200, 160, 3), 40 * k + 10, np.uint8))
    crop = cv2.imread(str(next((lfw_dir / "Aaron_Peirsol").iterdir())))
    cv2.imwrite(str(root / "b" / "aligned.jpg"), crop)  # an aligned crop is used as it is
    calls = []

    def stub(data: bytes) -> np.ndarray:
        calls.append(len(data))
        return np.zeros((112, 112, 3), np.uint8)

    from training.data.imagefolder import prepare_aligned

    manifest = prepare_aligned(root, tmp_path / "cache", aligner=stub, progress=False)
    assert len(calls) == 4 and manifest["b/aligned.jpg"] == str(root / "b" / "aligned.jpg")
    prepare_aligned(root, tmp_path / "cache", aligner=stub, progress=False)
    assert len(calls) == 4  # cached: the second pass detects nothing
