"""Fault injection: what the service does when the machine, the disk or the models fail.

1. **SIGKILL during concurrent enrolls**, repeated for several rounds on the same data
   directory: after each kill the SQLite file must pass ``PRAGMA integrity_check`` and
   ``PRAGMA foreign_key_check``, and after the restart every acknowledged (HTTP 201)
   face must be there, no face row may lack its embedding (or the reverse), and the
   rebuilt index must hold exactly the database's faces (no orphan entry).
2. **Storage read-only / disk full** while serving: writes answer a typed 503
   ``storage_unavailable``, reads keep working, nothing changes, and writes succeed
   again once the fault clears.
3. **Model file missing or corrupt at start**: the start fails with one clear line
   naming the file (``facegate cannot start: ... <path> ...``); also through the real CLI.
4. **A provider (CUDA) requested but absent**: the model runs on CPU, with a warning.

    python bench/faults.py                 # 5 kill rounds, everything else once
    python bench/faults.py --rounds 10 --clients 6

The photos come from $FACEGATE_TEST_DATA/faces. Writes bench/results/faults.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import write_result
from devkit.faults import model_faults, provider_fallback, sigkill_rounds, storage_faults


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FACEGATE_TEST_DATA", "../shared/data")))
    ap.add_argument("--name", default="faults")
    args = ap.parse_args(argv)
    faces = args.data / "faces"
    shared_model = args.data / "models" / "face_recognition_sface_2021dec_int8bq_clean.onnx"
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="facegate-faults-"))
    try:
        res = {"sigkill": sigkill_rounds(tmp / "kill", faces, rounds=args.rounds, clients=args.clients,
                                         seed=args.seed)}
        res["storage"] = storage_faults(tmp / "storage", faces)
        res["models"] = model_faults(tmp / "models", shared_model if shared_model.is_file() else None)
        res["provider"] = provider_fallback(tmp / "provider")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = json.loads(json.dumps(res).replace(str(tmp), "<tmp>"))  # no machine paths in the result file
    k = res["sigkill"]
    ok = {
        "sigkill": k["lost"] == 0 and k["orphans"] == 0 and k["integrity_failures"] == 0 and k["acknowledged"] > 0,
        "storage": all(v["reads_ok"] and v["unchanged"] and v["recovered"]
                       and all(s == [503, "storage_unavailable"] for s in v["statuses"].values())
                       for v in res["storage"].values()),
        "models": all(v.get("start_failed", True) and v["names_file"] for v in res["models"].values())
        and res["models"].get("cli_missing", {}).get("exit_code", 1) != 0,
        "provider": res["provider"]["ready"] == 200 and (res["provider"]["cuda_available"] or (
            set(res["provider"]["providers"].values()) == {"CPUExecutionProvider"} and bool(res["provider"]["warnings"]))),
    }
    res["pass"] = ok
    print(f"SIGKILL: {k['rounds']} rounds, {k['attempts']} enroll attempts, {k['acknowledged']} acknowledged, "
          f"lost {k['lost']}, orphans {k['orphans']}, integrity failures {k['integrity_failures']}")
    for fault, v in res["storage"].items():
        print(f"storage {fault}: {v['statuses']}, reads ok {v['reads_ok']}, unchanged {v['unchanged']}, "
              f"recovered {v['recovered']}")
    for kind, v in res["models"].items():
        print(f"model {kind}: {v}")
    print(f"provider: {res['provider']}")
    print("pass:", ok)
    print("wrote", write_result(args.name, res))
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
