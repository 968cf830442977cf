"""Drift over time benchmark: predlog.analysis.drift_over_time against pandas + numpy.

    python benchmarks/bench_over_time.py over_time [--quick] [--cache DIR]

On the query benchmarks' generated store (10M rows, 20 float features, 30 days; 1M with
--quick, after ``Store.compact()``), every daily window of the whole store against the first
three days, for the 20 features: PSI on the reference's deciles (``statistic="psi"``, the
default) and the mean shift in reference standard deviations (``statistic="mean"``).

Baseline, in the same run: pandas reads ``ts`` and the feature columns of every row
(``read_parquet``, pyarrow dtypes), cuts the reference's deciles with numpy
(``quantile(method="inverted_cdf")``) and computes the same PSI per day and feature with
``searchsorted`` and ``bincount``. The results are compared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
from time import perf_counter
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_capture import Row, run_cli, temp_store  # noqa: E402
from bench_replay import QUERY_START, _query_store, _replay_arguments  # noqa: E402

FEATURES = [f"f{i}" for i in range(20)]


def _reference(days: int) -> dict[str, Any]:
    day0 = dt.datetime.fromisoformat(QUERY_START).replace(tzinfo=dt.UTC)
    return {"start": day0, "end": day0 + dt.timedelta(days=max(1, round(3 * days / 30)))}


def _pandas_numpy(pred_dir: str, ref: dict[str, Any]) -> dict[tuple[Any, str], float]:
    """PSI per (day, feature), by hand."""
    import pandas as pd

    df = pd.read_parquet(pred_dir, columns=["ts", "features"], dtype_backend="pyarrow", partitioning=None)
    feats = df["features"].struct.explode()
    day = df["ts"].dt.floor("D")
    in_ref = ((df["ts"] >= ref["start"]) & (df["ts"] < ref["end"])).to_numpy()
    out: dict[tuple[Any, str], float] = {}
    codes, days = pd.factorize(day, sort=True)
    for f in FEATURES:
        x = feats[f].to_numpy(dtype=float, na_value=np.nan)
        ok = ~np.isnan(x)
        r_x = x[in_ref & ok]
        edges = np.unique(np.quantile(r_x, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], method="inverted_cdf"))
        bins = len(edges) + 1
        r = np.maximum(np.bincount(np.searchsorted(edges, r_x), minlength=bins) / len(r_x), 1e-4)
        cell = codes[ok] * bins + np.searchsorted(edges, x[ok])
        counts = np.bincount(cell, minlength=len(days) * bins).reshape(len(days), bins)
        for i, d in enumerate(days):
            c = np.maximum(counts[i] / counts[i].sum(), 1e-4)
            out[(d, f"features.{f}")] = float(np.sum((c - r) * np.log(c / r)))
    return out


def _utc(t: Any) -> Any:
    import pandas as pd

    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def bench_over_time(args: argparse.Namespace) -> list[Row]:
    """drift_over_time: 30 daily windows x 20 features against pandas + numpy."""
    from predlog.analysis import drift_over_time
    from predlog.replay import Store

    runs = 3
    rows: list[Row] = []
    with temp_store(args.tmpdir, "over_time") as tmp:
        path, desc = _query_store(args, tmp, compacted=True)
        ref = _reference(desc["days"])
        times: dict[str, list[float]] = {"psi": [], "mean": []}
        got: dict[str, Any] = {}
        with Store(path) as s:
            drift_over_time(s, ref, model="fraud", features=FEATURES)  # warm-up: footers, imports
            for _ in range(runs):
                for statistic in times:
                    t0 = perf_counter()
                    got[statistic] = drift_over_time(s, ref, model="fraud", features=FEATURES, statistic=statistic)
                    times[statistic].append(perf_counter() - t0)
        t0 = perf_counter()
        want = _pandas_numpy(os.path.join(path, "predictions"), ref)
        base = perf_counter() - t0
    df = got["psi"].df
    mine = {(_utc(r.window_start), str(r.feature)): float(r.value) for r in df.itertuples()}
    want = {(_utc(d), f): v for (d, f), v in want.items()}
    agree = mine.keys() == want.keys()
    worst = max(abs(mine[k] - v) / max(abs(v), 1e-12) for k, v in want.items()) if agree else float("inf")
    windows = df["window_start"].nunique()
    for statistic, ts in times.items():
        ours = statistics.median(ts)
        note = [
            f"{windows} daily windows x {len(FEATURES)} features; median of {runs} runs "
            f"{', '.join(f'{t:.2f}' for t in ts)} s; store of {desc['rows']:,} rows after compact()",
        ]
        if statistic == "psi":
            note += [
                "baseline = pandas read_parquet (ts + features, pyarrow dtypes) + numpy PSI per day and feature, one run",
                f"cells agree: {agree}, largest relative difference {worst:.1e}",
            ]
        note.append(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
        rows.append(
            Row(
                "over_time",
                f"drift_over_time(window='1D', statistic='{statistic}')",
                ours,
                "s",
                baseline=base if statistic == "psi" else None,
                ratio=base / ours if statistic == "psi" else None,
                target="<= 10 s",
                met=ours <= 10 and (statistic != "psi" or worst <= 1e-9),
                note="; ".join(note),
            )
        )
    return rows


BENCHMARKS = {"over_time": bench_over_time}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv, _replay_arguments)


if __name__ == "__main__":
    sys.exit(main())
