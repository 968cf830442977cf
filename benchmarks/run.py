"""Run every benchmark (capture, spans, queries, history import), each in its own process, and print one table.

    python benchmarks/run.py            # full run (a few minutes)
    python benchmarks/run.py --quick    # short run
    python benchmarks/run.py --only overhead,batch

Each benchmark measures its baseline in the same run; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_capture import BENCHMARKS as CAPTURE  # noqa: E402
from bench_capture import format_table  # noqa: E402
from bench_otel import BENCHMARKS as OTEL  # noqa: E402

# benchmark name -> the script that runs it
SCRIPTS = {**{n: "bench_capture.py" for n in CAPTURE}, **{n: "bench_otel.py" for n in OTEL}}
# Query benchmarks on a generated 10M-row store (1M with --quick); set PREDLOG_BENCH_CACHE=DIR
# to keep the generated store between runs (see benchmarks/README.md).
SCRIPTS.update({"replay": "bench_replay.py", "user": "bench_replay.py", "summary": "bench_replay.py"})
SCRIPTS.update({"drift": "bench_drift.py", "performance": "bench_performance.py", "over_time": "bench_over_time.py"})
# Imported history: log_frame of a 1M-row frame and log_labels of 1M labels, sealed in Parquet.
SCRIPTS["history"] = "bench_history.py"
# Investigations on a generated 10M-row labeled classification store (benchmarks/investigate_store.py).
SCRIPTS.update({"fairness": "bench_fairness.py", "errors": "bench_errors.py", "slices": "bench_slices.py"})
SCRIPTS["compare"] = "bench_compare.py"  # compare_versions on a 10M-row store of two versions (5 % canary)
SCRIPTS["report"] = "bench_report.py"  # the HTML report on the investigation store, against its analysis calls
SCRIPTS["canary"] = "bench_canary.py"  # canary routing: router(x) over the captured call
BENCHMARKS = SCRIPTS


def _environment() -> str:
    import numpy
    import pyarrow

    def git(*cmd: str) -> str:
        try:
            out = subprocess.run(["git", *cmd], cwd=HERE, capture_output=True, text=True, timeout=10)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    dirty = git("status", "--porcelain", "--", "../sdk")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"python {platform.python_version()}, pyarrow {pyarrow.__version__}, numpy {numpy.__version__}, "
        f"{os.cpu_count()} cpus, load {', '.join(f'{x:.2f}' for x in load)}\n"
        f"git {git('rev-parse', '--short', 'HEAD')}{' + uncommitted sdk/ changes' if dirty else ''}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run of every benchmark")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--tmpdir", help="where temporary stores go (default: the system temp dir)")
    parser.add_argument("--json", metavar="PATH", help="also write all result rows as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    for name in names:
        if name not in BENCHMARKS:
            parser.error(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")

    print(_environment(), flush=True)
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="predlog-bench-run-") as tmp:
        for name in names:
            out = os.path.join(tmp, f"{name}.json")
            cmd = [sys.executable, os.path.join(HERE, SCRIPTS[name]), name, "--json", out]
            if args.quick:
                cmd.append("--quick")
            if args.tmpdir:
                cmd += ["--tmpdir", args.tmpdir]
            print(f"running {name} ...", end=" ", flush=True)
            t0 = time.perf_counter()
            # A fresh process per benchmark: no writer threads, arrow pools or RSS left by another.
            proc = subprocess.run(cmd, capture_output=True, text=True)
            print(f"{time.perf_counter() - t0:.0f} s", flush=True)
            if proc.returncode != 0 or not os.path.exists(out):
                failed.append(name)
                print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
                continue
            with open(out) as f:
                rows.extend(json.load(f))
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s\n")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    missed = [f"{r['bench']}/{r['metric']}" for r in rows if r["met"] is False]
    print(
        f"\ntargets met: {sum(r['met'] is True for r in rows)}, missed: {len(missed)}"
        + (f" ({'; '.join(missed)})" if missed else "")
    )
    if failed:
        print(f"benchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
