"""InsightFace RecordIO without mxnet: our writer -> our reader round trip, byte-level format."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from training.data.recordio import (
    MAGIC,
    IndexedRecordIO,
    IRHeader,
    RecordIODataset,
    RecordIOWriter,
    pack,
    unpack,
    write_insightface_rec,
)
from training.data.synthetic import SyntheticFaces


def test_rec_idx_round_trip_images_and_labels(tmp_path: Path) -> None:
    ds = SyntheticFaces(num_classes=6, per_class=4, seed=3)
    imgs = [ds.load(i)[0] for i in range(len(ds))]
    # PNG keeps pixels exact, so "identical images" is a byte-exact check
    blobs = [cv2.imencode(".png", im)[1].tobytes() for im in imgs]
    write_insightface_rec(tmp_path / "train.rec", blobs, ds.labels)
    rec = RecordIODataset(tmp_path / "train.rec")
    assert len(rec) == len(ds)
    assert np.array_equal(rec.labels, ds.labels)
    for i in range(len(ds)):
        img, label = rec.load(i)
        assert label == ds.labels[i]
        assert np.array_equal(img, imgs[i])
    # header record 0: labels hold (first identity key, end key), as InsightFace writes it
    h0, _ = unpack(IndexedRecordIO(tmp_path / "train.rec").read_idx(0))
    assert h0.flag == 2 and list(h0.label) == [len(ds) + 1, len(ds) + 1 + 6]
    # and the dataset trains like any other: tensor, int label, index
    x, y, idx = rec[(5, 123)]
    assert tuple(x.shape) == (3, 112, 112) and y == ds.labels[5] and idx == 5


def test_jpeg_records_and_byte_layout(tmp_path: Path) -> None:
    ds = SyntheticFaces(num_classes=2, per_class=2)
    imgs = [ds.load(i)[0] for i in range(len(ds))]
    write_insightface_rec(tmp_path / "t.rec", imgs, ds.labels)
    raw = (tmp_path / "t.rec").read_bytes()
    magic, lrec = struct.unpack_from("<II", raw, 0)
    assert magic == MAGIC and lrec >> 29 == 0
    offsets = [int(ln.split("\t")[1]) for ln in (tmp_path / "t.idx").read_text().splitlines()]
    assert all(o % 4 == 0 for o in offsets)  # payloads are zero-padded to 4 bytes
    flag, label, id1, _ = struct.unpack_from("<IfQQ", raw, offsets[1] + 8)
    assert (flag, label, id1) == (0, 0.0, 1)
    assert raw[offsets[1] + 8 + 24 : offsets[1] + 8 + 26] == b"\xff\xd8"  # the JPEG follows the header
    rec = RecordIODataset(tmp_path / "t.rec")
    expected = cv2.imdecode(
        cv2.imencode(".jpg", imgs[0], [cv2.IMWRITE_JPEG_QUALITY, 95])[1], cv2.IMREAD_COLOR
    )
    assert np.array_equal(rec.load(0)[0], expected)  # the stored bytes are the q95 JPEG of the crop


def test_payload_containing_the_magic_is_split_and_restored(tmp_path: Path) -> None:
    m = struct.pack("<I", MAGIC)
    payloads = [b"abcd" + m + b"xyz" + b"\0" + m + b"12345", m + b"tail", b"q" * 5, b""]
    with RecordIOWriter(tmp_path / "m.rec") as w:
        for k, p in enumerate(payloads):
            w.write_idx(k, p)
    r = IndexedRecordIO(tmp_path / "m.rec")
    assert [r.read_idx(k) for k in range(len(payloads))] == payloads
    # the first record was written in three parts (cflag 1, 2, 3)
    raw = (tmp_path / "m.rec").read_bytes()
    assert struct.unpack_from("<I", raw, 4)[0] >> 29 == 1


def test_label_arrays_in_headers() -> None:
    rec = pack(IRHeader(0, np.array([3.0, 7.0], np.float32), 9, 0), b"img")
    h, payload = unpack(rec)
    assert h.flag == 2 and list(h.label) == [3.0, 7.0] and payload == b"img"
