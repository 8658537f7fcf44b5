"""Hostile images, generated in milliseconds: what the decoding tests and ``bench/hostile.py``
send (tiny PNGs that decode to 40 megapixels, JPEGs whose scans repeat, a face in a huge
transparent canvas)."""

from __future__ import annotations

import io
import re
import struct
import time
import zlib

import cv2
import numpy as np

END_OF_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def zeros_zlib(n: int) -> bytes:
    """zlib stream of ``n`` zero bytes in milliseconds: after a full flush deflate keeps no history, so
    every further MB of zeros compresses to the same bytes; the Adler-32 of n zeros is n mod 65521 << 16 | 1."""
    mb = 1 << 20
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = z.compress(bytes(mb)) + z.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = tail.compress(bytes(n % mb)) + tail.flush()
    return b"\x78\xda" + block * (n // mb) + last + struct.pack(">I", ((n % 65521) << 16) | 1)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def zero_png(w: int, h: int, color_type: int, bit_depth: int) -> bytes:
    """A valid PNG of all-zero samples (for RGBA / grey+alpha: transparent black)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    idat = zeros_zlib(h * (1 + w * channels * bit_depth // 8))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# --- memory ------------------------------------------------------------------------------------------


def jpeg_scans(data: bytes) -> list[tuple[int, int, int]]:
    """(start of the DHTs before it, start of SOS, end of its entropy data) for each scan; test-side walker."""
    out, pos, tables = [], 2, None
    while data[pos + 1] != 0xD9:
        code = data[pos + 1]
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if code == 0xDA:
            end = END_OF_SCAN.search(data, end).start()
            out.append((pos if tables is None else tables, pos, end))
            tables = None
        elif code == 0xC4:
            tables = pos if tables is None else tables
        else:
            tables = None
        pos = end
    return out


def repeat_scan(data: bytes, index: int, times: int) -> bytes:
    """Append ``times`` copies of scan ``index`` (with its Huffman tables) before EOI.

    Repeating a refinement scan re-reads every block of its component; libjpeg warns about the
    progression but decodes the file."""
    start, _, end = jpeg_scans(data)[index]
    return data[:-2] + data[start:end] * times + data[-2:]


def face_on_transparent_canvas(face_bgr: np.ndarray, n: int = 6300, face_side: int = 400) -> bytes:
    """An RGBA PNG of n x n transparent pixels with one opaque face in the middle: small on
    the wire, 40 MP to decode, and a face to detect, so every stage of the pipeline runs."""
    canvas = np.zeros((n, n, 4), np.uint8)
    face = cv2.resize(face_bgr, (face_side, face_side), interpolation=cv2.INTER_AREA)
    y = x = (n - face_side) // 2
    canvas[y:y + face_side, x:x + face_side, :3] = face
    canvas[y:y + face_side, x:x + face_side, 3] = 255
    ok, png = cv2.imencode(".png", canvas, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return png.tobytes()


def flat_progressive_jpeg(n: int = 6300, extra_scans: int = 22) -> bytes:
    """A solid n x n progressive JPEG whose last luma refinement scan is repeated: cheap to
    make, within the decoder's scan limits, and about twice the decode work of a plain one."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (n, n), (90, 120, 150)).save(buf, format="JPEG", progressive=True, quality=90, subsampling=0)
    data = buf.getvalue()
    return repeat_scan(data, len(jpeg_scans(data)) - 1, extra_scans) if extra_scans else data


def noise_progressive_jpeg(n: int = 6300, scan: int = 5, extra_scans: int = 15, seed: int = 0) -> bytes:
    """The costliest JPEG found within the decoder's limits: 40 MP of noise at quality 12,
    4:4:4, with a luma refinement scan repeated (about 2x a plain progressive decode)."""
    from PIL import Image

    noise = np.random.default_rng(seed).integers(0, 256, (n, n, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=12, progressive=True, subsampling=0)
    return repeat_scan(buf.getvalue(), scan, extra_scans)


def peak_rss_above(pid: int, baseline: int) -> int:
    """Bytes the process's peak resident set (VmHWM) rose above ``baseline``."""
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    return hwm - baseline


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def upload_memory(url: str, key: str, pid: int, images: list[bytes], rss) -> dict:
    """Peak RSS rise of the server during one /v1/embed call carrying ``images``."""
    import httpx

    reset_peak_rss(pid)
    idle = rss()
    files = [("image", (f"h{i}.png", b, "image/png")) for i, b in enumerate(images)]
    t0 = time.perf_counter()
    r = httpx.post(url + "/v1/embed", files=files, headers={"X-API-Key": key}, timeout=600)
    took = time.perf_counter() - t0
    return {"status": r.status_code, "faces": len(r.json().get("faces", [])) if r.status_code == 200 else None,
            "images": len(images), "request_mib": round(sum(map(len, images)) / 2**20, 2),
            "idle_rss_mib": round(idle / 2**20, 1), "peak_above_idle_mib": round(peak_rss_above(pid, idle) / 2**20, 1),
            "seconds": round(took, 2)}


def flood(url: str, admin_key: str, hostile: bytes, normal: tuple[bytes, bytes], *, attackers: int = 4,
          probes: int = 15) -> dict:
    """A victim's /v1/verify latency idle and while ``attackers`` clients of another key send
    ``hostile`` to /v1/detect in a loop (keys are made here: one tenant each)."""
    import threading

    import httpx

    def make_key(name: str, scopes: list[str]) -> str:
        r = httpx.post(url + "/v1/keys", json={"name": name, "scopes": scopes}, headers={"X-API-Key": admin_key})
        r.raise_for_status()
        return r.json()["secret"]

    victim, attacker = make_key("victim", ["verify"]), make_key("attacker", ["verify"])
    a, b = normal

    def probe(client: httpx.Client) -> list[float]:
        out = []
        for _ in range(probes):
            t0 = time.perf_counter()
            r = client.post("/v1/verify", files=[("image", ("a.jpg", a, "image/jpeg")),
                                                 ("image2", ("b.jpg", b, "image/jpeg"))])
            r.raise_for_status()
            out.append((time.perf_counter() - t0) * 1000)
        return out

    stop = threading.Event()
    attacked = {"requests": 0, "statuses": {}}

    def attack() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": attacker}, timeout=120) as c:
            while not stop.is_set():
                r = c.post("/v1/detect", files=[("image", ("x.jpg", hostile, "image/jpeg"))])
                attacked["requests"] += 1
                attacked["statuses"][r.status_code] = attacked["statuses"].get(r.status_code, 0) + 1

    with httpx.Client(base_url=url, headers={"X-API-Key": victim}, timeout=120) as c:
        probe(c)  # warm-up
        idle = probe(c)
        threads = [threading.Thread(target=attack, daemon=True) for _ in range(attackers)]
        for t in threads:
            t.start()
        time.sleep(2.0)  # the flood is in full swing
        during = probe(c)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        idle += probe(c)  # idle again, after: the machine's drift is averaged out

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(np.asarray(xs), q))

    res = {"idle_ms": {"p50": pct(idle, 50), "p99": pct(idle, 99)},
           "flood_ms": {"p50": pct(during, 50), "p99": pct(during, 99)}, "attack": attacked,
           "attackers": attackers, "probes": probes}
    res["ratio_p50"] = res["flood_ms"]["p50"] / res["idle_ms"]["p50"]
    res["ratio_p99"] = res["flood_ms"]["p99"] / res["idle_ms"]["p99"]
    return res
