"""Performance benchmark: predlog.analysis.performance against pandas + scikit-learn on the same rows.

    python benchmarks/bench_performance.py performance [--quick] [--cache DIR]

On the query benchmarks' generated store (10M predictions over 30 days, 20 float features,
``context.country`` of 10 values; about 1M labels, each the prediction plus noise, logged an
hour after it: a regression; 1M rows with --quick), ``performance(s, window="1D",
by="context.country")``: rows, label coverage, error rate, MAE, RMSE and R² for each of the
300 day × country groups, each country and the whole store. Measured on the store as
written and after ``Store.compact()``.

Baseline, in the same run: pandas reads the predictions' columns the metrics need
(``read_parquet`` of ``prediction_id``, ``ts``, ``prediction``, ``context``,
``sample_rate``, ``status`` with pyarrow dtypes) and the labels, keeps the latest label of
each prediction, merges, and calls scikit-learn's ``mean_absolute_error``,
``root_mean_squared_error`` and ``r2_score`` (``sample_weight = 1 / sample_rate``) per day
× country. The results are compared. A floor is timed too: the labels join alone, a
``count(*)`` over ``Store.labeled_relation`` (every metric needs it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from time import perf_counter
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_capture import Row, run_cli, temp_store  # noqa: E402
from bench_replay import _query_store, _replay_arguments  # noqa: E402

BY = "context.country"
METRICS = ("mae", "rmse", "r2")


def _pandas_sklearn(path: str) -> Any:
    """The same figures by hand: pandas reads and joins, scikit-learn scores each group."""
    import pandas as pd
    from sklearn import metrics

    cols = ["prediction_id", "ts", "prediction", "context", "sample_rate", "status"]
    df = pd.read_parquet(os.path.join(path, "predictions"), columns=cols, dtype_backend="pyarrow", partitioning=None)
    labels = pd.read_parquet(os.path.join(path, "labels"), columns=["prediction_id", "ts", "label"], partitioning=None)
    labels = labels.sort_values("ts").drop_duplicates("prediction_id", keep="last")
    df = df.merge(labels[["prediction_id", "label"]], on="prediction_id", how="left")
    df["day"] = df["ts"].dt.floor("D")
    df["country"] = df["context"].struct.field("country")
    df["weight"] = 1.0 / df["sample_rate"].fillna(1.0)
    rows = []
    for (day, country), g in df.groupby(["day", "country"], sort=True):
        ok = g["label"].notna() & g["prediction"].notna()
        y, p, w = (g.loc[ok, c].to_numpy(dtype=float) for c in ("label", "prediction", "weight"))
        rows.append(
            {
                "window_start": day,
                BY: country,
                "rows": len(g),
                "label_coverage": float(g.loc[g["label"].notna(), "weight"].sum() / g["weight"].sum()),
                "error_rate": float(g.loc[g["status"] == "error", "weight"].sum() / g["weight"].sum()),
                "mae": metrics.mean_absolute_error(y, p, sample_weight=w),
                "rmse": metrics.root_mean_squared_error(y, p, sample_weight=w),
                "r2": metrics.r2_score(y, p, sample_weight=w),
            }
        )
    return pd.DataFrame(rows)


def _floor(s: Any) -> float:
    """Seconds of the labels join alone: count(*) over the labeled relation of the same columns."""
    t0 = perf_counter()
    columns = ["date", BY, "prediction", "label", "sample_rate", "status"]
    rel = s.labeled_relation("fraud", include_unlabeled=True, columns=columns, ordered=False)
    rel.aggregate("count(*)").fetchall()
    return perf_counter() - t0


def _one(args: argparse.Namespace, tmp: str, compacted: bool) -> list[Row]:
    from predlog.analysis import performance
    from predlog.replay import Store

    runs = 3
    path, desc = _query_store(args, tmp, compacted=compacted)
    with Store(path) as s:
        got = performance(s, window="1D", by=BY)  # warm-up: file footers, imports
        times, floors = [], []
        for _ in range(runs):  # interleaved, so the machine's noise hits both alike
            t0 = perf_counter()
            got = performance(s, window="1D", by=BY)
            times.append(perf_counter() - t0)
            floors.append(_floor(s))
    t0 = perf_counter()
    want = _pandas_sklearn(path)
    base = perf_counter() - t0
    ours, floor = statistics.median(times), statistics.median(floors)
    merged = got.df.merge(want, on=["window_start", BY], suffixes=("", "_want"))
    agree = len(merged) == len(want) == len(got.df) and (merged["rows"] == merged["rows_want"]).all()
    worst = max(
        float(np.max(np.abs(merged[m] - merged[f"{m}_want"]) / np.abs(merged[f"{m}_want"])))
        for m in (*METRICS, "label_coverage")
    )
    agree = bool(agree and worst <= 1e-9)
    state = f"after compact(), {desc['compact']['files_after']} files" if compacted else f"{desc['files']} files"
    note = "; ".join(
        [
            f"{desc['rows']:,} rows, {int(got.overall['labeled_rows'].iloc[0]):,} labeled, "
            f"{len(got.df)} day x country groups ({state})",
            f"median of {runs} runs {', '.join(f'{t:.2f}' for t in times)} s",
            "baseline = pandas read_parquet (6 columns, pyarrow dtypes) + labels (latest per prediction) merged "
            "+ sklearn MAE/RMSE/R² per group, one run",
            f"results agree (≤ 1e-9 relative): {agree} (largest difference {worst:.1e})",
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus",
        ]
    )
    return [
        Row(
            "performance",
            f"performance(window='1D', by='{BY}'), {state}",
            ours,
            "s",
            baseline=base,
            ratio=base / ours,
            target="<= 0.5 s, >= 10x",
            met=ours <= 0.5 and base / ours >= 10 and agree,
            note=note,
        ),
        Row(
            "performance",
            "  floor: the labels join alone (count(*) over Store.labeled_relation)",
            floor,
            "s",
            baseline=ours,
            ratio=ours / floor,
            note=f"median of {runs}; ratio = performance() / floor: the share of the time the join takes",
        ),
    ]


def bench_performance(args: argparse.Namespace) -> list[Row]:
    """performance() per day × country on the 10M-row store against pandas + scikit-learn."""
    with temp_store(args.tmpdir, "performance") as tmp:
        return [*_one(args, tmp, compacted=False), *_one(args, tmp, compacted=True)]


BENCHMARKS = {"performance": bench_performance}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv, _replay_arguments)


if __name__ == "__main__":
    sys.exit(main())
