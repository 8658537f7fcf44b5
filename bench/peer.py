"""Peer comparison: facegate's pipeline vs the ``face_recognition`` library (dlib) on the
same real photos, in the same run.

Per photo, each side does the whole job a user would ask for: load the photo, find every
face, and compute an encoding for each face.

* peer: ``face_recognition.load_image_file`` -> ``face_locations(model="hog")`` ->
  ``face_encodings`` (dlib HOG detector + the 128-d dlib ResNet);
* facegate: ``FacePipeline`` decode -> detect (YuNet) -> align -> embed (SFace via
  onnxruntime, one micro-batch per photo).

Rounds alternate peer / facegate so drifting machine load hits both alike. Reported:
encodings/s and photos/s of each, their ratio (target: facegate >= 5x the peer's
encodings/s), faces found per side, and facegate again with one onnxruntime thread
(dlib runs on one core; onnxruntime uses both by default), so the ratio can be read
per core too.

    python bench/peer.py                    # shared faces/*/*.jpg, 2 rounds
    python bench/peer.py --rounds 3 --limit 10

Needs the peer installed: ``pip install dlib-bin face-recognition-models 'setuptools<81'``
and ``pip install --no-deps face-recognition``. Writes bench/results/peer.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import write_result

TARGET_RATIO = 5.0


def load_peer():
    """The face_recognition module, or (None, why) when it cannot be imported here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import face_recognition
        return face_recognition, None
    except SystemExit as e:  # face_recognition calls quit() when face_recognition_models is missing
        return None, f"face_recognition exited at import ({e}); usually setuptools>=81 (no pkg_resources)"
    except Exception as e:  # noqa: BLE001 - report, do not crash the benchmark run
        return None, f"{type(e).__name__}: {e}"


def run_peer(fr, photos: list[Path]) -> tuple[float, int, list[int]]:
    t0 = time.perf_counter()
    faces = []
    for p in photos:
        img = fr.load_image_file(str(p))
        locs = fr.face_locations(img, number_of_times_to_upsample=1, model="hog")
        encs = fr.face_encodings(img, known_face_locations=locs)
        faces.append(len(encs))
    return time.perf_counter() - t0, sum(faces), faces


def run_ours(pipeline, photos: list[Path]) -> tuple[float, int, list[int]]:
    t0 = time.perf_counter()
    faces = []
    model = pipeline.settings.recognizer
    for p in photos:  # the service's own path: prepare (decode, detect, align every face), then embed
        crops = pipeline.prepare(p.read_bytes(), recognizers=(model,), need_face=False).crops[model]
        if crops:
            pipeline.embed(crops, model)
        faces.append(len(crops))
    return time.perf_counter() - t0, sum(faces), faces


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FACEGATE_TEST_DATA", "../shared/data")))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N photos (0 = all)")
    ap.add_argument("--no-single-thread", action="store_true", help="skip the 1-thread facegate run")
    ap.add_argument("--name", default="peer")
    args = ap.parse_args(argv)
    photos = sorted((args.data / "faces").glob("*/*.jpg"))
    if args.limit:
        photos = photos[: args.limit]
    if not photos:
        print(f"no photos under {args.data / 'faces'}")
        return 2

    from service.config import Settings
    from service.pipeline.pipeline import FacePipeline

    variants = {"facegate": FacePipeline(Settings())}
    if not args.no_single_thread:
        variants["facegate_1thread"] = FacePipeline(Settings(intra_op_threads=1))
    for p in variants.values():
        p.load()
        run_ours(p, photos[:2])  # warm-up

    fr, why = load_peer()
    result: dict = {"photos": len(photos), "rounds": args.rounds, "target_ratio": TARGET_RATIO}
    if fr is None:
        result.update(peer_available=False, peer_error=why)
        print("peer not available:", why)
    else:
        import dlib

        result.update(peer_available=True, peer_versions={"dlib": dlib.__version__})
        run_peer(fr, photos[:1])  # warm-up (loads the dlib models)

    times: dict[str, list[float]] = {k: [] for k in ([*variants, "peer"] if fr else variants)}
    counts: dict[str, int] = {}
    per_photo: dict[str, list[int]] = {}
    for rnd in range(args.rounds):
        order = (["peer", *variants] if rnd % 2 == 0 else [*variants, "peer"]) if fr else list(variants)
        for who in order:
            dt, n, faces = run_peer(fr, photos) if who == "peer" else run_ours(variants[who], photos)
            times[who].append(dt)
            counts[who], per_photo[who] = n, faces
            print(f"round {rnd + 1} {who:>17}: {dt:6.2f} s, {n} faces, {n / dt:6.2f} encodings/s, "
                  f"{len(photos) / dt:6.2f} photos/s")

    sides = {}
    for who, ts in times.items():
        t = statistics.median(ts)
        sides[who] = {"seconds_median": round(t, 3), "seconds_all": [round(x, 3) for x in ts], "faces": counts[who],
                      "encodings_per_s": round(counts[who] / t, 3), "photos_per_s": round(len(photos) / t, 3),
                      "ms_per_photo": round(t / len(photos) * 1000, 1)}
    result["sides"] = sides
    if fr:
        peer = sides["peer"]
        for who in variants:
            s = sides[who]
            result[f"ratio_encodings_{who}"] = round(s["encodings_per_s"] / peer["encodings_per_s"], 2)
            result[f"ratio_photos_{who}"] = round(s["photos_per_s"] / peer["photos_per_s"], 2)
        result["faces_per_photo"] = {k: v for k, v in per_photo.items()}
        result["disagreements"] = [
            {"photo": str(p.relative_to(args.data / "faces")), "peer": per_photo["peer"][i],
             "facegate": per_photo["facegate"][i]}
            for i, p in enumerate(photos) if per_photo["peer"][i] != per_photo["facegate"][i]
        ]
        result["meets_target"] = result["ratio_encodings_facegate"] >= TARGET_RATIO
        print(f"facegate / peer: {result['ratio_encodings_facegate']}x encodings/s, "
              f"{result['ratio_photos_facegate']}x photos/s (target {TARGET_RATIO}x)"
              + (f"; with 1 ORT thread {result['ratio_encodings_facegate_1thread']}x" if len(variants) > 1 else ""))
    for p in variants.values():
        p.close()
    print("wrote", write_result(args.name, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
