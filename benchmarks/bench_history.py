"""Benchmarks of importing history (``log_frame``, ``log_labels``), each against a baseline
measured in the same run.

    python benchmarks/bench_history.py history [--quick]   # 1M-row frames and 1M labels (200k quick)

``python benchmarks/run.py`` runs it with the others. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import sys
from time import perf_counter
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_capture import Row, run_cli, temp_store, wait_sealed  # noqa: E402

import predlog  # noqa: E402

DAYS = 30


def make_history(n: int, seed: int = 0) -> Any:
    """A frame of n past predictions, 20 columns of mixed types, ``ts`` over 30 days in random order.

    ts, prediction, 8 float64 (normal), 3 int64, a bool, a nullable boolean, two strings (one
    with 5 % missing), two categoricals and a nullable Int64 (10 % missing).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    cols: dict[str, Any] = {
        "ts": start + pd.to_timedelta(rng.integers(0, DAYS * 86_400_000_000, n), unit="us"),
        "prediction": rng.random(n),
    }
    for j in range(8):
        cols[f"x{j}"] = rng.normal(size=n)
    for j in range(3):
        cols[f"i{j}"] = rng.integers(0, 10_000, size=n)
    cols["flag"] = rng.random(n) < 0.3
    cols["opt_in"] = pd.array(np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.5), dtype="boolean")
    cols["country"] = np.array(["DE", "FR", "US", "GB", "ES"], dtype=object)[rng.integers(0, 5, n)]
    cols["page"] = pd.array(
        np.where(
            rng.random(n) < 0.05, None, np.array(["home", "search", "checkout"], dtype=object)[rng.integers(0, 3, n)]
        )
    )
    cols["plan"] = pd.Categorical(np.array(["free", "pro", "team"])[rng.integers(0, 3, n)])
    cols["device"] = pd.Categorical(np.array(["ios", "android", "web"])[rng.integers(0, 3, n)])
    cols["visits"] = pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 100, n)), dtype="Int64")
    return pd.DataFrame(cols)


def _baseline(frame: Any, path: str) -> float:
    """``pa.Table.from_pandas`` + one zstd ``pq.write_table`` of the same frame (no fsync)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = perf_counter()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")
    return perf_counter() - t0


def _partitions(store: str) -> tuple[int, int]:
    files = glob.glob(os.path.join(store, "predictions", "model=*", "date=*", "*.parquet"))
    return len({os.path.dirname(f) for f in files}), len(files)


def _import(args: argparse.Namespace, root: str, name: str, frame: Any) -> tuple[float, float, str, list[str]]:
    """log_frame into a fresh store, then wait until every row is sealed in Parquet.

    Returns (seconds end to end, seconds in log_frame, a note, the ids)."""
    store = os.path.join(root, name)
    rec = predlog.Recorder(store=store, model="bench")
    gc.collect()
    t0 = perf_counter()
    ids = rec.log_frame(frame)
    t_call = perf_counter()
    ok, _ = wait_sealed(rec)
    t_end = perf_counter()
    s = rec.stats()
    rec.shutdown(timeout_s=60)
    parts, files = _partitions(store)
    note = (
        f"log_frame {t_call - t0:.2f} s + flush/seal {t_end - t_call:.2f} s; {s['sealed_rows']:,} rows sealed "
        f"in {files} files over {parts} date partitions, dropped {s['dropped_total']}, flush ok={ok}"
    )
    return t_end - t0, t_call - t0, note, ids


def bench_history(args: argparse.Namespace) -> list[Row]:
    import pandas as pd

    n = 200_000 if args.quick else 1_000_000
    repeats = 1 if args.quick else 3
    frames = {"random": make_history(n)}
    frames["ordered"] = frames["random"].sort_values("ts", ignore_index=True)
    times: dict[str, list[tuple[float, float, str]]] = {"random": [], "ordered": []}
    bases: list[float] = []
    label_times: list[float] = []
    label_bases: list[float] = []
    with temp_store(args.tmpdir, "history") as root:
        warm = predlog.Recorder(store=os.path.join(root, "warm"), model="bench")
        warm.log_frame(frames["random"].iloc[:20_000])
        wait_sealed(warm)
        warm.shutdown(timeout_s=60)
        _baseline(frames["random"].iloc[:20_000], os.path.join(root, "warm.parquet"))
        for r in range(repeats):  # interleave the baseline and predlog
            gc.collect()
            bases.append(_baseline(frames["random"], os.path.join(root, f"baseline-{r}.parquet")))
            for order, frame in frames.items():
                total, call, note, ids = _import(args, root, f"{order}-{r}", frame)
                times[order].append((total, call, note))
            labels = pd.DataFrame({"prediction_id": ids, "label": np.arange(n) % 2})
            gc.collect()
            label_bases.append(_baseline(labels, os.path.join(root, f"labels-{r}.parquet")))
            rec = predlog.Recorder(store=os.path.join(root, f"labels-{r}"), model="bench")
            gc.collect()
            t0 = perf_counter()
            rec.log_labels(labels)
            wait_sealed(rec)
            label_times.append(perf_counter() - t0)
            written = rec.stats()["labels"]
            rec.shutdown(timeout_s=60)
            assert written == n, f"{written:,} of {n:,} labels written"
            del ids, labels
    base = n / float(np.median(bases))
    rows = []
    for order, what in (("random", "ts in random order"), ("ordered", "ts in time order")):
        runs = sorted(times[order])
        total, call, note = runs[len(runs) // 2]
        rate = n / total
        rows.append(
            Row(
                "history",
                f"log_frame {n // 1000}k rows x 20 columns, 30 days, {what}: rows/s end to end",
                rate,
                "rows/s",
                baseline=base,
                ratio=rate / base,
                target=">=1M rows/s",
                met=rate >= 1_000_000,
                note=(
                    f"median of {repeats}: {note}; log_frame alone {n / call:,.0f} rows/s; "
                    "baseline = from_pandas + one pq.write_table (zstd, no fsync) of the same frame"
                ),
            )
        )
    label_rate = n / float(np.median(label_times))
    label_base = n / float(np.median(label_bases))
    rows.append(
        Row(
            "history",
            f"log_labels {n // 1000}k int labels: labels/s end to end",
            label_rate,
            "labels/s",
            baseline=label_base,
            ratio=label_rate / label_base,
            target="1M in <=2 s",
            met=float(np.median(label_times)) * 1_000_000 / n <= 2.0,
            note=(
                f"median {float(np.median(label_times)):.2f} s for {n:,}; "
                "baseline = from_pandas + pq.write_table of the labels frame"
            ),
        )
    )
    return rows


BENCHMARKS = {"history": bench_history}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
