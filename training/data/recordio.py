"""InsightFace RecordIO (``train.rec`` + ``train.idx``) read and written without mxnet.

Format (dmlc-core recordio as used by mxnet.recordio and InsightFace):

* each record: uint32 magic ``0xced7230a``, uint32 ``(cflag << 29) | length``, then
  ``length`` bytes of payload, zero-padded to a multiple of 4. ``cflag`` 0 = whole
  record; if the payload contains the magic at a 4-byte-aligned offset the writer
  splits it there (cflag 1 = first part, 2 = middle, 3 = last) and drops the magic,
  which the reader puts back.
* payload (``mxnet.recordio.pack``): struct ``IfQQ`` (flag, label float32, id, id2);
  when ``flag > 0`` the label is the ``flag`` float32 values that follow (header
  label ignored); then the encoded image (JPEG).
* record 0 (InsightFace): header with ``flag > 0`` whose labels hold ``(first
  identity-record key, end key)``; images are keys ``1 .. label[0] - 1``.
* ``.idx``: text lines ``key\\toffset`` (byte offset of each record).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from training.data.base import CropDataset
from training.data.transforms import Augment

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LREC_MASK = (1 << 29) - 1


@dataclass
class IRHeader:
    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    """``mxnet.recordio.pack``: header (+ label array) + payload."""
    label = header.label
    if isinstance(label, (int, float, np.integer, np.floating)):
        return _HEADER.pack(0, float(label), header.id, header.id2) + payload
    arr = np.asarray(label, dtype=np.float32).ravel()
    return _HEADER.pack(arr.size, 0.0, header.id, header.id2) + arr.tobytes() + payload


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """``mxnet.recordio.unpack``: inverse of :func:`pack`."""
    flag, label, id1, id2 = _HEADER.unpack_from(record, 0)
    rest = record[_HEADER.size :]
    if flag > 0:
        arr = np.frombuffer(rest[: 4 * flag], dtype=np.float32).copy()
        return IRHeader(flag, arr, id1, id2), rest[4 * flag :]
    return IRHeader(flag, label, id1, id2), rest


def _write_record(f: BinaryIO, data: bytes) -> None:
    """dmlc RecordIOWriter::WriteRecord, splitting at aligned magic words."""
    n = len(data)
    lower = (n >> 2) << 2
    dptr = 0
    for i in range(0, lower, 4):
        if data[i : i + 4] == _MAGIC_BYTES:
            f.write(_MAGIC_BYTES)
            f.write(struct.pack("<I", ((1 if dptr == 0 else 2) << 29) | (i - dptr)))
            f.write(data[dptr:i])
            dptr = i + 4
    f.write(_MAGIC_BYTES)
    f.write(struct.pack("<I", ((3 if dptr else 0) << 29) | (n - dptr)))
    f.write(data[dptr:])
    f.write(b"\0" * (((n + 3) >> 2 << 2) - n))


def _read_record(f: BinaryIO) -> bytes | None:
    """dmlc RecordIOReader::NextRecord; None at end of file."""
    parts: list[bytes] = []
    while True:
        head = f.read(8)
        if len(head) < 8:
            if parts:
                raise OSError("truncated multi-part record")
            return None
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise OSError(f"bad RecordIO magic {magic:#x} at offset {f.tell() - 8}")
        cflag, length = lrec >> 29, lrec & _LREC_MASK
        chunk = f.read(length)
        if len(chunk) < length:
            raise OSError("truncated record")
        f.read(((length + 3) >> 2 << 2) - length)
        if cflag in (2, 3):
            parts.append(_MAGIC_BYTES)
        parts.append(chunk)
        if cflag in (0, 3):
            return b"".join(parts)


class RecordIOWriter:
    """Writes ``.rec`` + ``.idx`` like ``mxnet.recordio.MXIndexedRecordIO(..., 'w')``."""

    def __init__(self, rec_path: Path, idx_path: Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        # Long-lived handles closed by close()/__exit__, like mxnet's writer.
        self._rec = open(self.rec_path, "wb")  # noqa: SIM115
        self._idx = open(self.idx_path, "w")  # noqa: SIM115

    def write_idx(self, key: int, record: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        _write_record(self._rec, record)

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordIOWriter:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_insightface_rec(
    rec_path: Path, images: Sequence[np.ndarray | bytes], labels: Sequence[int], quality: int = 95
) -> None:
    """An InsightFace-style training set: header record 0, images 1..N, then one record per identity.

    ``images`` are BGR uint8 crops (JPEG-encoded here) or already encoded bytes.
    Identity records (keys N+1 ..) carry ``(first, end)`` image keys of each class,
    as InsightFace's ``face2rec`` writes them, for tools that sample by identity.
    """
    labels = [int(x) for x in labels]
    n = len(images)
    classes = sorted(set(labels))
    with RecordIOWriter(rec_path) as w:
        w.write_idx(0, pack(IRHeader(2, np.array([n + 1, n + 1 + len(classes)], np.float32), 0, 0), b""))
        for k, (img, lab) in enumerate(zip(images, labels), start=1):
            if isinstance(img, np.ndarray):
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
                if not ok:
                    raise ValueError("JPEG encoding failed")
                img = buf.tobytes()
            w.write_idx(k, pack(IRHeader(0, float(lab), k, 0), img))
        keys = np.arange(1, n + 1)
        labs = np.asarray(labels)
        for j, c in enumerate(classes):
            ks = keys[labs == c]
            rng = np.array([ks.min(), ks.max() + 1], np.float32)
            w.write_idx(n + 1 + j, pack(IRHeader(2, rng, n + 1 + j, 0), b""))


class IndexedRecordIO:
    """Random access reader over ``.rec`` via ``.idx``; safe across DataLoader worker forks."""

    def __init__(self, rec_path: Path, idx_path: Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self.offsets: dict[int, int] = {}
        for ln in self.idx_path.read_text().splitlines():
            if ln.strip():
                k, off = ln.split("\t")
                self.offsets[int(k)] = int(off)
        self._f: BinaryIO | None = None
        self._pid = -1

    @property
    def keys(self) -> list[int]:
        return sorted(self.offsets)

    def _file(self) -> BinaryIO:
        # A forked worker must not share the parent's file position: reopen per process.
        if self._f is None or self._pid != os.getpid():
            self._f = open(self.rec_path, "rb")  # noqa: SIM115 - kept open for random access
            self._pid = os.getpid()
        return self._f

    def read_idx(self, key: int) -> bytes:
        f = self._file()
        f.seek(self.offsets[key])
        rec = _read_record(f)
        if rec is None:
            raise KeyError(key)
        return rec

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_f"] = None
        return state


class RecordIODataset(CropDataset):
    """InsightFace ``train.rec``: images are keys 1 .. header0.label[0]-1, label = class id."""

    def __init__(self, rec_path: Path, augment: Augment | None = None, preload_labels: bool = True) -> None:
        self.rec = IndexedRecordIO(rec_path)
        self.augment = augment
        h0, _ = unpack(self.rec.read_idx(0))
        if h0.flag > 0:
            self.keys = np.arange(1, int(np.asarray(h0.label)[0]), dtype=np.int64)
        else:  # a plain indexed rec without the InsightFace header record
            self.keys = np.asarray(self.rec.keys, dtype=np.int64)
        labels = []
        if preload_labels:
            for k in self.keys:
                h, _ = unpack(self.rec.read_idx(int(k)))
                labels.append(self._label(h))
        self.labels = np.asarray(labels, dtype=np.int64)

    @staticmethod
    def _label(h: IRHeader) -> int:
        lab = h.label
        return int(np.asarray(lab).ravel()[0]) if not isinstance(lab, (int, float)) else int(lab)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        h, payload = unpack(self.rec.read_idx(int(self.keys[index])))
        img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"record {self.keys[index]}: cannot decode image")
        return img, self._label(h)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["rec"] = str(self.rec.rec_path)
        return out
