"""Walk an image's container before any decoder touches it, to bound what parsing and decoding cost.

JPEG. libjpeg decodes each scan of a progressive JPEG over every 8x8 block of the components
in that scan, whatever the scan holds. A refinement scan of a 40 MP image is ~80 bytes of
end-of-band runs and costs 10-40 ms of CPU, so a valid file that repeats such scans costs
minutes within the byte limit. libjpeg-turbo's answer is a scan limit (djpeg -maxscans,
TurboJPEG's TJPARAM_SCANLIMIT); OpenCV and Pillow do not expose it, so the scans are counted
here, by walking the segments the way libjpeg reads them: length-prefixed segments, and after
each start-of-scan the entropy-coded data up to the next marker that is not byte stuffing
(FF00) or a restart (RSTn). Two bounds, both cheap to check before decoding:

* ``max_scans``: libjpeg's default progression has 10 scans for colour and 6 for greyscale, and
  encoders that search for a better progression (mozjpeg) stay around 10-20; per-scan overheads
  make thousands of scans of a tiny image expensive too.
* ``max_passes``: the scans' blocks, summed, divided by the image's blocks: how many times the
  decoder reads each block on average. A baseline JPEG reads each block once, libjpeg's default
  progression about 5-6 times. It is the CPU cost of the scans in units of the image's size, so
  it bounds large images, where 64 refinement scans of a 40 MP image would still cost seconds.

PNG, GIF (and JPEG again). Pillow reads headers in Python, one loop step per chunk, block or
marker segment, before it knows the image size: 15 MB of empty PNG chunks, GIF comment
extensions or JPEG COM segments cost it 1.5-3 s per image. Real files have tens of them (a PNG
split into 8 KB IDAT chunks: about 2,000 at the byte limit), so their number is capped here,
by a walk that stops at the cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import CorruptImage

#: Far above any real JPEG (APPn, DQT, DHT per scan, SOF, SOS...: tens; an ICC profile split
#: into 64 KB APP2 chunks: a few hundred at the byte limit), far below a file of tiny segments.
MAX_SEGMENTS = 2048
#: PNG chunks in the whole file: libpng writes 8 KB IDAT chunks, about 1,900 at 15 MB.
MAX_PNG_CHUNKS = 8192
#: GIF extension blocks before the first image, and data sub-blocks within them.
MAX_GIF_EXTENSIONS = 1024
MAX_GIF_SUBBLOCKS = 100_000

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE_SOF = {0xC2, 0xC6, 0xCA, 0xCE}
_SOS, _EOI, _SOI = 0xDA, 0xD9, 0xD8
_FIRST_CHUNK, _MAX_CHUNK = 1 << 16, 1 << 22


@dataclass(frozen=True)
class JpegScans:
    """What the decoder will do: ``passes`` = blocks read over all scans / blocks in the image."""

    scans: int
    passes: float
    segments: int
    progressive: bool


def _next_marker(a: np.ndarray, start: int, in_scan: bool) -> int:
    """Index of the 0xFF that begins the next marker at or after ``start``, or -1.

    Vectorised over growing chunks so that hostile data (all 0xFF00 stuffing, fill bytes)
    costs linear time in C rather than a Python step per byte. Inside entropy-coded data
    (``in_scan``), FF00 is a stuffed data byte and FFD0-FFD7 are restart markers that do
    not end the scan; a run of 0xFF is fill before the marker that follows it.
    """
    n = len(a)
    i, chunk = start, _FIRST_CHUNK
    while i < n - 1:
        j = min(n - 1, i + chunk)
        nxt = a[i + 1 : j + 1]
        hit = (a[i:j] == 0xFF) & (nxt != 0x00) & (nxt != 0xFF)
        if in_scan:
            hit &= (nxt < 0xD0) | (nxt > 0xD7)
        k = int(hit.argmax())
        if hit[k]:
            return i + k
        i, chunk = j, min(chunk * 2, _MAX_CHUNK)
    return -1


def _frame_blocks(seg: memoryview) -> dict[int, int]:
    """Blocks per component id, from a SOFn segment body (MCU-padded, as interleaved scans decode them)."""
    if len(seg) < 6:
        raise CorruptImage("the JPEG frame header is too short")
    h = int.from_bytes(seg[1:3], "big")
    w = int.from_bytes(seg[3:5], "big")
    nf = seg[5]
    if len(seg) < 6 + 3 * nf or nf == 0:
        raise CorruptImage("the JPEG frame header is too short")
    comps = [(seg[6 + 3 * i], seg[7 + 3 * i] >> 4, seg[7 + 3 * i] & 15) for i in range(nf)]
    hmax = max(c[1] for c in comps) or 1
    vmax = max(c[2] for c in comps) or 1
    mcux = -(-w // (8 * hmax))
    mcuy = -(-h // (8 * vmax))
    return {cid: max(1, mcux * hs * mcuy * vs) for cid, hs, vs in comps}


def check_jpeg(data: bytes, *, max_scans: int, max_passes: float) -> JpegScans:
    """Walk ``data`` from SOI to EOI; refuse truncated files and those over either bound.

    Raises :class:`CorruptImage` (with ``details``) for a missing end-of-image marker (OpenCV
    would decode the missing part as grey), a malformed segment, too many segments, or a scan
    count or pass count over its limit (0 = no limit). An EXIF thumbnail lives inside an APP1
    segment and is skipped with it, so its own scans and EOI do not count.
    """
    a = np.frombuffer(data, dtype=np.uint8)
    n = len(a)
    if n < 4 or a[0] != 0xFF or a[1] != _SOI:
        raise CorruptImage("the JPEG does not start with a start-of-image marker")
    blocks: dict[int, int] | None = None
    progressive = False
    scans = segments = 0
    visits = 0
    pos = 2
    while True:
        if pos + 1 < n and a[pos] == 0xFF and a[pos + 1] not in (0x00, 0xFF):
            code_at = pos + 1
        else:  # fill bytes or garbage before the marker; libjpeg skips them too
            ff = _next_marker(a, pos, in_scan=False)
            if ff < 0:
                raise CorruptImage("the JPEG is truncated (no end-of-image marker after its last scan)")
            code_at = ff + 1
        code = int(a[code_at])
        segments += 1
        if segments > MAX_SEGMENTS:
            raise CorruptImage(
                f"the JPEG has more than {MAX_SEGMENTS} marker segments", segments=segments, limit=MAX_SEGMENTS
            )
        if code == _EOI:
            break
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # stray RSTn / TEM: no length, libjpeg ignores them
            pos = code_at + 1
            continue
        if code == _SOI:
            raise CorruptImage("the JPEG has a second start-of-image marker before its end")
        if code_at + 3 > n:
            raise CorruptImage("the JPEG is truncated (no end-of-image marker after its last scan)")
        length = int(a[code_at + 1]) << 8 | int(a[code_at + 2])
        end = code_at + 1 + length
        if length < 2 or end > n:
            if end > n:
                raise CorruptImage("the JPEG is truncated (no end-of-image marker after its last scan)")
            raise CorruptImage(f"the JPEG has a marker segment of invalid length {length}")
        body = memoryview(data)[code_at + 3 : end]
        if code in _SOF:
            if blocks is not None:
                raise CorruptImage("the JPEG has more than one frame header")
            blocks = _frame_blocks(body)
            progressive = code in _PROGRESSIVE_SOF
        if code != _SOS:
            pos = end
            continue
        if blocks is None:
            raise CorruptImage("the JPEG has a scan before its frame header")
        scans += 1
        if max_scans and scans > max_scans:
            raise CorruptImage(
                f"the JPEG has more than {max_scans} scans (progressive JPEGs have about 10); refused to bound "
                "the decoding time",
                scans=scans,
                limit=max_scans,
            )
        ns = body[0] if len(body) else 0
        if ns == 0 or len(body) < 1 + 2 * ns + 3:
            raise CorruptImage("the JPEG has a malformed scan header")
        for i in range(ns):
            cid = body[1 + 2 * i]
            if cid not in blocks:
                raise CorruptImage(f"a JPEG scan refers to component {cid}, which the frame does not have")
            visits += blocks[cid]
        ff = _next_marker(a, end, in_scan=True)
        if ff < 0:
            raise CorruptImage("the JPEG is truncated (no end-of-image marker after its last scan)")
        pos = ff
    total = sum(blocks.values()) if blocks else 1
    passes = visits / total
    if scans == 0:
        raise CorruptImage("the JPEG has no scan")
    if max_passes and passes > max_passes:
        raise CorruptImage(
            f"the JPEG's {scans} scans read each block {passes:.1f} times on average; the limit is {max_passes:g} "
            "(a progressive JPEG reads it about 6 times); refused to bound the decoding time",
            scans=scans,
            passes=round(passes, 2),
            limit=max_passes,
        )
    return JpegScans(scans=scans, passes=passes, segments=segments, progressive=progressive)


def check_png(data: bytes) -> None:
    """Refuse a PNG with more than MAX_PNG_CHUNKS chunks (stops counting there); damage is left to the decoder."""
    pos, n, size = 8, 0, len(data)
    while pos + 8 <= size:
        n += 1
        if n > MAX_PNG_CHUNKS:
            raise CorruptImage(f"the PNG has more than {MAX_PNG_CHUNKS} chunks", limit=MAX_PNG_CHUNKS)
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")


def check_gif(data: bytes) -> None:
    """Refuse a GIF with more extension blocks (or their sub-blocks) before its first image than the caps."""
    size = len(data)
    if size < 13:
        return
    pos = 13 + ((3 << ((data[10] & 7) + 1)) if data[10] & 0x80 else 0)  # after the global colour table
    extensions = subblocks = 0
    while pos < size and data[pos] == 0x21:  # extension introducer; 0x2C image, 0x3B trailer end the walk
        extensions += 1
        if extensions > MAX_GIF_EXTENSIONS:
            raise CorruptImage(f"the GIF has more than {MAX_GIF_EXTENSIONS} extension blocks before its image",
                               limit=MAX_GIF_EXTENSIONS)
        pos += 2
        while pos < size and data[pos]:
            subblocks += 1
            if subblocks > MAX_GIF_SUBBLOCKS:
                raise CorruptImage(f"the GIF has more than {MAX_GIF_SUBBLOCKS} extension data blocks",
                                   limit=MAX_GIF_SUBBLOCKS)
            pos += 1 + data[pos]
        pos += 1
