"""Input drift benchmark: predlog.analysis.input_drift against pandas + scipy on the same rows.

    python benchmarks/bench_drift.py drift [--quick] [--cache DIR]

On the query benchmarks' generated store (10M rows, 20 float features, 30 days; 1M with
--quick), two windows of about 1M rows each (the first three days against days 27-29) are
compared feature by feature: KS statistic and p-value, Wasserstein distance, PSI and
Jensen-Shannon. Baseline, in the same run: pandas reads the two windows' feature columns
(``read_parquet`` with a ``ts`` filter, pyarrow dtypes) and scipy computes the same
statistics per feature (``ks_2samp``, ``wasserstein_distance``, PSI and ``jensenshannon``
on the reference's deciles). The results are compared too.
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


def _windows(days: int) -> tuple[dict[str, Any], dict[str, Any]]:
    day0 = dt.datetime.fromisoformat(QUERY_START).replace(tzinfo=dt.UTC)
    span = max(1, round(3 * days / 30))
    ref = {"start": day0, "end": day0 + dt.timedelta(days=span)}
    cur = {"start": day0 + dt.timedelta(days=days - span - 1), "end": day0 + dt.timedelta(days=days - 1)}
    return ref, cur


def _pandas_scipy(pred_dir: str, ref: dict[str, Any], cur: dict[str, Any]) -> dict[str, dict[str, float]]:
    import pandas as pd
    from scipy import stats
    from scipy.spatial import distance

    def read(w: dict[str, Any]) -> pd.DataFrame:
        df = pd.read_parquet(
            pred_dir,
            columns=["features"],
            filters=[("ts", ">=", w["start"]), ("ts", "<", w["end"])],
            dtype_backend="pyarrow",
            partitioning=None,
        )
        return df["features"].struct.explode()

    a, b = read(ref), read(cur)
    out: dict[str, dict[str, float]] = {}
    for f in FEATURES:
        x = a[f].dropna().to_numpy(dtype=float)
        y = b[f].dropna().to_numpy(dtype=float)
        ks = stats.ks_2samp(x, y)
        edges = np.unique(np.quantile(x, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], method="inverted_cdf"))
        r = np.bincount(np.searchsorted(edges, x), minlength=len(edges) + 1) / len(x)
        c = np.bincount(np.searchsorted(edges, y), minlength=len(edges) + 1) / len(y)
        rr, cc = np.maximum(r, 1e-4), np.maximum(c, 1e-4)
        out[f"features.{f}"] = {
            "ks": float(ks.statistic),
            "ks_p_value": float(ks.pvalue),
            "wasserstein": float(stats.wasserstein_distance(x, y) / np.std(x)),
            "psi": float(np.sum((cc - rr) * np.log(cc / rr))),
            "js": float(distance.jensenshannon(r, c, base=2)),
        }
    return out


def bench_drift(args: argparse.Namespace) -> list[Row]:
    """input_drift of 20 features between two ~1M-row windows against pandas + scipy."""
    from predlog.analysis import input_drift
    from predlog.replay import Store

    runs = 3
    with temp_store(args.tmpdir, "drift") as tmp:
        path, desc = _query_store(args, tmp, compacted=True)
        ref, cur = _windows(desc["days"])
        with Store(path) as s:
            got = input_drift(s, ref, cur, model="fraud", features=FEATURES)  # warm-up
            times = []
            for _ in range(runs):
                t0 = perf_counter()
                got = input_drift(s, ref, cur, model="fraud", features=FEATURES)
                times.append(perf_counter() - t0)
        t0 = perf_counter()
        want = _pandas_scipy(os.path.join(path, "predictions"), ref, cur)
        base = perf_counter() - t0
    ours = statistics.median(times)
    df = got.df.set_index("feature")
    worst = max(
        abs(float(df.loc[f, k]) - v) / max(abs(v), 1e-300)
        for f, stats_ in want.items()
        for k, v in stats_.items()
        if v != 0
    )
    rows_each = int(df["ref_rows"].iloc[0]), int(df["cur_rows"].iloc[0])
    return [
        Row(
            "drift",
            f"input_drift, 20 features, {rows_each[0]:,} vs {rows_each[1]:,} rows",
            ours,
            "s",
            baseline=base,
            ratio=base / ours,
            target="<= 2 s, >= 10x",
            met=ours <= 2.0 and base / ours >= 10,
            note=(
                f"median of {runs} runs {', '.join(f'{t:.2f}' for t in times)} s; baseline = pandas read_parquet "
                f"(ts filter, pyarrow dtypes) + scipy ks_2samp, wasserstein_distance, PSI and jensenshannon per "
                f"feature, one run; largest relative difference of any statistic {worst:.1e}; store of "
                f"{desc['rows']:,} rows over {desc['days']} days; load average {os.getloadavg()[0]:.1f}"
            ),
        )
    ]


BENCHMARKS = {"drift": bench_drift}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv, _replay_arguments)


if __name__ == "__main__":
    sys.exit(main())
