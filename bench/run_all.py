"""Run every benchmark in bench/ at a size that finishes in minutes on 2 cores, then write
one report: ``bench/results/<machine>.json`` and a Markdown table ``bench/results/<machine>.md``
with each target, the measured ratio and whether it is met.

    make bench                                  # = python bench/run_all.py
    python bench/run_all.py --machine laptop    # name the result files
    python bench/run_all.py --only embed,peer   # a subset
    python bench/run_all.py --full              # each benchmark's own (large) defaults

Each benchmark runs as its own process (a crash or a timeout in one is reported, not
fatal) and writes its own JSON under bench/results/; this script reads them back. See
bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
from bench.common import RESULTS, machine, rel

#: name -> (script, small-size flags, result file, timeout s). Benchmarks in OUT_FLAG take ``--out FILE``.
BENCHMARKS: dict[str, tuple[str, list[str], str, int]] = {
    "embed": ("embed.py", ["--seconds", "6", "--rounds", "3", "--batches", "1", "8", "32"], "embed.json", 600),
    "verify_latency": ("verify_latency.py", ["--pairs", "6", "--budget", "30"], "verify_latency.json", 600),
    "identify": ("identify.py", ["--sizes", "1M", "--queries", "200", "--latency-queries", "100",
                                 "--latency-budget", "4", "--nprobe", "64,256,512"], "identify.json", 1500),
    "peer": ("peer.py", ["--rounds", "1"], "peer.json", 900),
    "load": ("load.py", ["--clients", "32", "--duration", "60", "--warmup", "15"], "load.json", 600),
    "faults": ("faults.py", ["--rounds", "5"], "faults.json", 900),
    "train_throughput": ("train_throughput.py", ["--models", "mbf", "--budget", "20"], "train_throughput.json", 600),
}


OUT_FLAG = {"identify", "verify_latency", "train_throughput"}


def run_one(name: str, full: bool, env: dict, results_dir: Path = RESULTS) -> dict:
    script, flags, out, timeout = BENCHMARKS[name]
    path = (results_dir if name in OUT_FLAG else RESULTS) / out
    cmd = [sys.executable, str(BENCH / script), *([] if full else flags),
           *(["--out", str(path)] if name in OUT_FLAG else [])]
    before = path.stat().st_mtime if path.exists() else 0.0
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        rc, tail = p.returncode, (p.stdout + p.stderr)[-4000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = "timeout", ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                               else (e.stdout or ""))[-4000:]
    wall = round(time.monotonic() - t0, 1)
    fresh = path.exists() and path.stat().st_mtime > before
    result = json.loads(path.read_text()) if fresh else None
    return {"command": " ".join(rel(c) for c in cmd[1:]), "exit_code": rc, "wall_s": wall, "result_file": rel(path),
            "fresh": fresh, "output_tail": tail, "result": result}


# --- targets ------------------------------------------------------------------------------------------
def _fmt(x, nd=2):
    return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def targets(runs: dict) -> list[dict]:
    """One row per target: measured value, target, met (True/False/None = not measured), note."""
    rows = []

    def res(name):
        r = runs.get(name)
        return r["result"] if r and r.get("result") else None

    e = res("embed")
    if e:
        ratios = [r["ratio"] for r in e["rows"]]
        worst = min(e["rows"], key=lambda r: r["ratio"])
        rows.append({"target": "service >= 0.9 x raw ORT throughput (bench/embed.py)", "measured": round(min(ratios), 3),
                     "goal": ">= 0.9", "met": min(ratios) >= 0.9,
                     "note": "worst row: {} batch {} ({:.1f} vs {:.1f} faces/s); all: {}".format(
                         worst["model"], worst["batch"], worst["service_faces_per_s"], worst["raw_faces_per_s"],
                         ", ".join(f"{r['model']}@{r['batch']}={r['ratio']:.2f}" for r in e["rows"]))})
    else:
        rows.append({"target": "service >= 0.9 x raw ORT throughput", "measured": None, "goal": ">= 0.9",
                     "met": None, "note": "not measured"})

    v = res("verify_latency")
    if v:
        r = v["ratio"]
        rows.append({"target": "verify e2e <= 1.2 x pipeline time (bench/verify_latency.py)",
                     "measured": f"p50 {r['p50']:.2f}, p99 {r['p99']:.2f}", "goal": "<= 1.2",
                     "met": bool(v.get("pass")),
                     "note": f"HTTP p50 {v['http_ms']['p50']:.0f} ms vs in-process {v['in_process_ms']['p50']:.0f} ms; "
                             f"vs the parallel in-process path p50 {v['ratio_vs_parallel']['p50']:.2f}"})
    else:
        rows.append({"target": "verify e2e <= 1.2 x pipeline time", "measured": None, "goal": "<= 1.2",
                     "met": None, "note": "not measured"})

    i = res("identify")
    if i:
        big = [r for r in i["results"] if r["size"] >= 1_000_000]
        tr = i.get("meta", {}).get("target_recall", 0.99)
        ok = [r for r in big if r["recall_at_10"] >= tr]
        best = min(ok, key=lambda r: r["p99_ms"]) if ok else None
        closest = max(big, key=lambda r: r["recall_at_10"] - r["p99_ms"] / 1000) if big else None
        note = "; ".join(f"{r['index']}: recall {r['recall_at_10']:.3f}, p99 {r['p99_ms']:.1f} ms" for r in big)
        rows.append({"target": "1M identify p99 <= 20 ms at recall@10 >= 0.99 (bench/identify.py)",
                     "measured": f"{best['p99_ms']:.1f} ms ({best['index']})" if best else "no index reaches the recall",
                     "goal": "<= 20 ms", "met": bool(best and best["p99_ms"] <= 20.0),
                     "note": note or (closest and closest["index"]) or ""})
    else:
        rows.append({"target": "1M identify p99 <= 20 ms at recall@10 >= 0.99", "measured": None, "goal": "<= 20 ms",
                     "met": None, "note": "not measured"})

    p = res("peer")
    if p and p.get("peer_available"):
        rows.append({"target": ">= 5x face_recognition encodings/s (bench/peer.py)",
                     "measured": p["ratio_encodings_facegate"], "goal": ">= 5", "met": p["ratio_encodings_facegate"] >= 5,
                     "note": f"facegate {p['sides']['facegate']['encodings_per_s']} vs peer "
                             f"{p['sides']['peer']['encodings_per_s']} encodings/s on {p['photos']} photos; photos/s "
                             f"ratio {p['ratio_photos_facegate']}; with 1 ORT thread "
                             f"{p.get('ratio_encodings_facegate_1thread', '—')}x"})
    else:
        rows.append({"target": ">= 5x face_recognition encodings/s", "measured": None, "goal": ">= 5", "met": None,
                     "note": (p or {}).get("peer_error", "not measured")})

    ld = res("load")
    if ld:
        rows.append({"target": "load: 0 errors (bench/load.py)", "measured": ld["errors"], "goal": "0",
                     "met": ld["errors"] == 0,
                     "note": f"{ld['clients']} clients, {ld['duration_s']} s, {ld['throughput_rps']} req/s, "
                             + ", ".join(f"{k} p50/p95/p99 {r['p50_ms']:.0f}/{r['p95_ms']:.0f}/{r['p99_ms']:.0f} ms"
                                         for k, r in ld["routes"].items())})
        if "rss_growth" in ld:
            rows.append({"target": "load: RSS growth < 10 %", "measured": f"{ld['rss_growth'] * 100:+.1f} %",
                         "goal": "< 10 %", "met": ld["rss_growth"] < 0.10,
                         "note": f"{ld['rss_start_mib']} -> {ld['rss_end_mib']} MiB (peak {ld['rss_peak_mib']}); "
                                 f"second half {ld['rss_growth_second_half'] * 100:+.1f} %"})
    f = res("faults")
    if f:
        k = f["sigkill"]
        rows.append({"target": "SIGKILL rounds: 0 lost, 0 orphans, integrity ok (bench/faults.py)",
                     "measured": f"lost {k['lost']}, orphans {k['orphans']}, integrity failures {k['integrity_failures']}",
                     "goal": "0 / 0 / 0", "met": k["lost"] == 0 and k["orphans"] == 0 and k["integrity_failures"] == 0,
                     "note": f"{k['rounds']} rounds, {k['attempts']} attempts, {k['acknowledged']} acknowledged"})
        rows.append({"target": "storage / model / provider faults", "measured": str(f["pass"]),
                     "goal": "all True", "met": all(f["pass"].values()), "note": ""})
    return rows


def markdown(name: str, report: dict) -> str:
    m = report["machine"]
    lines = [f"# Benchmark report — {name}", "",
             (f"{report['when']} · {m.get('cpu', '?')} · {m.get('cpus')} CPUs · onnxruntime {m.get('onnxruntime', '?')} · "
              f"load average at start {report['load_avg_start']}, at end {report['load_avg_end']}"), "",
             "Timings on shared 2-core machines drift ±30 %: every target is a ratio measured within one run.", "",
             "| target | measured | goal | met | note |", "|---|---|---|---|---|"]
    for r in report["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[r["met"]]
        lines.append(f"| {r['target']} | {_fmt(r['measured'])} | {r['goal']} | {met} | {r['note']} |")
    lines += ["", "| benchmark | command | exit | wall s | result |", "|---|---|---|---|---|"]
    for bname, run in report["runs"].items():
        lines.append(f"| {bname} | `{run['command']}` | {run['exit_code']} | {run['wall_s']} | "
                     f"{run['result_file'] if run['fresh'] else 'no fresh result'} |")
    ld = (report["runs"].get("load") or {}).get("result")
    if ld:
        lines += ["", f"## Load ({ld['clients']} clients, {ld['duration_s']} s)", "",
                  "| route | requests | req/s | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|---|"]
        for k, r in ld["routes"].items():
            lines.append(f"| {k} | {r['requests']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |")
        for model, h in ld.get("batch_histogram", {}).items():
            lines.append(f"\nMicro-batches ({model}): {int(h['batches'])}, mean {h['mean_batch']}; "
                         + ", ".join(f"{b}: {int(c)}" for b, c in h["buckets"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--machine", default=socket.gethostname())
    ap.add_argument("--only", default="", help="comma list of: " + ",".join(BENCHMARKS))
    ap.add_argument("--skip", default="")
    ap.add_argument("--full", action="store_true", help="run each benchmark with its own defaults (slow)")
    ap.add_argument("--report-only", action="store_true",
                    help="rebuild the report from the result files already there (after re-running one benchmark)")
    ap.add_argument("--results-dir", type=Path, default=RESULTS,
                    help="where benchmarks that take --out write their JSON (default bench/results)")
    args = ap.parse_args(argv)
    names = [n for n in (args.only.split(",") if args.only else BENCHMARKS) if n]
    names = [n for n in names if n not in args.skip.split(",")]
    env = {**os.environ}
    env.setdefault("FACEGATE_TEST_DATA", str((ROOT.parent / "shared" / "data").resolve()))
    report = {"machine_name": args.machine, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(), "load_avg_start": [round(x, 2) for x in os.getloadavg()], "runs": {}}
    prev_path = RESULTS / f"{args.machine}.json"
    prev = json.loads(prev_path.read_text()).get("runs", {}) if prev_path.exists() else {}
    for n in names:
        if args.report_only:
            _, _, out, _ = BENCHMARKS[n]
            path = (args.results_dir if n in OUT_FLAG else RESULTS) / out
            run = {**prev.get(n, {"command": "(not run by run_all)", "exit_code": None, "wall_s": None}),
                   "result_file": rel(path), "fresh": path.exists(), "output_tail": prev.get(n, {}).get("output_tail", "")}
            run["result"] = json.loads(path.read_text()) if path.exists() else None
            report["runs"][n] = run
            continue
        print(f"== {n}", flush=True)
        run = run_one(n, args.full, env, args.results_dir)
        report["runs"][n] = run
        print(f"   exit {run['exit_code']}, {run['wall_s']} s, {'fresh result' if run['fresh'] else 'NO RESULT'}",
              flush=True)
    report["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["targets"] = targets(report["runs"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    slim = {**report, "runs": {k: {kk: vv for kk, vv in v.items() if kk != "output_tail"} | {
        "output_tail": v["output_tail"][-1500:]} for k, v in report["runs"].items()}}
    (RESULTS / f"{args.machine}.json").write_text(json.dumps(slim, indent=2, default=str) + "\n")
    md = markdown(args.machine, report)
    (RESULTS / f"{args.machine}.md").write_text(md)
    print(md)
    print("wrote", rel(RESULTS / f"{args.machine}.json"), "and", rel(RESULTS / f"{args.machine}.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
