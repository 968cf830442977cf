"""Error correlation benchmark: predlog.analysis.error_correlation against pandas + scikit-learn on the same rows.

    python benchmarks/bench_errors.py errors [--quick] [--cache DIR]

On the investigation benchmarks' generated store (benchmarks/investigate_store.py: 10M
labeled predictions of a binary classifier over 30 days, 1M with --quick),
``error_correlation(s)`` over its 20 features and 3 context fields: error rate per category
and per quantile bin (10) with Wilson intervals, mutual information, Cramér's V, χ² and, for
the 16 number features, the AUC and the point-biserial correlation. Every row counted.

Baseline, in the same run: pandas reads the columns the analysis needs (``read_parquet`` of
``prediction_id``, ``features``, ``context``, ``prediction``, ``sample_rate`` with pyarrow
dtypes) and the labels, keeps the latest label of each prediction, merges, marks the
misclassified rows (score >= 0.5 against the label), then per field ``pd.qcut(x, 10)`` (a
number) or the value (a category), a ``groupby`` of the error rate and scikit-learn's
``mutual_info_score`` on the count table. It computes no interval, AUC or correlation.

The results are compared: on the same rows with the same bins (``pd.cut`` at the cut points
the result reports), every group's rows and errors must be equal and the mutual information
equal to 1e-9; against ``pd.qcut``'s own bins (its quantiles interpolate, ours are
``quantile_disc`` points read from fine cells) the largest difference in mutual information is
reported. A floor is timed too: the labels join alone, a ``count(*)`` over
``Store.labeled_relation``.
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
from bench_replay import _replay_arguments  # noqa: E402
from investigate_store import CATEGORIES, CONTEXT, FEATURES, investigation_store, join_floor, read_labeled  # noqa: E402

MODEL = "churn"


def _read(path: str) -> Any:
    """The selected rows with their latest labels and the error indicator, by pandas."""

    cols = ["prediction_id", "features", "context", "prediction", "sample_rate"]
    df = read_labeled(path, cols)
    out = df["features"].struct.explode()
    for name in CONTEXT:
        out[f"context.{name}"] = df["context"].struct.field(name)
    out.columns = [c if c.startswith("context.") else f"features.{c}" for c in out.columns]
    out["_e"] = ((df["prediction"] >= 0.5).astype(int) != df["label"]).astype(int).to_numpy()
    return out


def _baseline(df: Any) -> dict[str, Any]:
    """Per field: error rate per group and sklearn's mutual information, pd.qcut bins."""
    import pandas as pd
    from sklearn.metrics import mutual_info_score

    out = {}
    for f in df.columns:
        if f == "_e":
            continue
        key = df[f] if f.split(".", 1)[1] in {*CATEGORIES, *CONTEXT} else pd.qcut(df[f], 10, duplicates="drop")
        rates = df["_e"].groupby(key, observed=True).agg(["size", "mean"])
        table = pd.crosstab(key, df["_e"]).to_numpy()
        out[f] = (rates, mutual_info_score(None, None, contingency=table))
    return out


def _same_bins(df: Any, got: Any) -> tuple[bool, float]:
    """Rows and errors per group, and the mutual information, by pandas on the result's own bins."""
    import pandas as pd
    from sklearn.metrics import mutual_info_score

    ok, worst = True, 0.0
    for _, row in got.df.iterrows():
        f = row["feature"]
        g = got.by_group[got.by_group["feature"] == f]
        if row["kind"] == "number":
            bins = g[g["bin"].notna()]
            cuts = sorted(bins["lower"].dropna())
            idx = pd.cut(df[f].to_numpy(dtype=float), [-np.inf, *cuts, np.inf], right=False, labels=False)
            key = pd.Series(idx).map(dict(zip(bins["bin"].astype(int), bins["group"], strict=True)))
        else:
            key = df[f].astype(object)
        want = pd.Series(df["_e"].to_numpy()).groupby(key.to_numpy(), observed=True).agg(["size", "sum"])
        mine = g.set_index("group").loc[want.index]
        ok = ok and bool((mine["rows"].to_numpy() == want["size"].to_numpy()).all())
        ok = ok and bool((mine["errors"].to_numpy() == want["sum"].to_numpy()).all())
        table = pd.crosstab(key.to_numpy(), df["_e"].to_numpy()).to_numpy()
        mi = mutual_info_score(None, None, contingency=table)
        worst = max(worst, abs(row["mutual_info"] - mi) / max(mi, 1e-300))
    return ok and worst <= 1e-9, worst


def _floor(s: Any) -> float:
    """Seconds of the labels join alone."""
    return join_floor(s)


def _pass(s: Any) -> float:
    """Seconds of the one aggregate pass alone (the labeled rows, their cells and values counted)."""
    from predlog.analysis._errors import _cells, _Grid, _locations
    from predlog.analysis._labeled import labeled

    lab = labeled(s, model=MODEL, filters={}, what="error_correlation")
    paths = lab.resolve(None, "features")
    nums = [p for p in paths if lab.fields[p].kind == "number"]
    grids = {p: _Grid(*loc, integer=False) for p, loc in _locations(lab, nums).items()}
    rel, _ = lab.errors(paths)
    t0 = perf_counter()
    _cells(rel, paths, grids)
    return perf_counter() - t0


def bench_errors(args: argparse.Namespace) -> list[Row]:
    """error_correlation() over the 20 features and 3 context fields against pandas + scikit-learn."""
    from predlog.analysis import error_correlation
    from predlog.replay import Store

    runs = 3
    with temp_store(args.tmpdir, "errors") as tmp:
        path, desc = investigation_store(args, tmp)
        with Store(path) as s:
            got = error_correlation(s)  # warm-up: file footers, imports
            times, floors, passes = [], [], []
            for _ in range(runs):  # interleaved, so the machine's noise hits all alike
                t0 = perf_counter()
                got = error_correlation(s)
                times.append(perf_counter() - t0)
                floors.append(_floor(s))
                passes.append(_pass(s))
        t0 = perf_counter()
        df = _read(path)
        want = _baseline(df)
        base = perf_counter() - t0
        agree, worst = _same_bins(df, got)
        qcut = max(
            abs(float(m) - float(got.df.set_index("feature").loc[f, "mutual_info"])) for f, (_, m) in want.items()
        )
        del df
    ours, floor, one = statistics.median(times), statistics.median(floors), statistics.median(passes)
    top = got.df.iloc[0]
    note = "; ".join(
        [
            f"{desc['rows']:,} rows, {len(got.df)} fields ({len(FEATURES)} features + {len(CONTEXT)} context), "
            f"{len(got.by_group)} groups",
            f"median of {runs} runs {', '.join(f'{t:.2f}' for t in times)} s",
            "baseline = pandas read_parquet (5 columns, pyarrow dtypes) + labels (latest per prediction) merged "
            "+ per field pd.qcut(10)/groupby error rate + sklearn mutual_info_score, one run",
            f"same rows and bins: counts equal and MI within 1e-9: {agree} (largest relative MI difference "
            f"{worst:.1e}); against pd.qcut's bins the MI differs by at most {qcut:.1e} nats",
            f"top field {top['feature']} (Cramér's V {top['cramers_v']:.3f}): {got.summary['text']}",
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus",
        ]
    )
    return [
        Row(
            "errors",
            "error_correlation(), 23 fields",
            ours,
            "s",
            baseline=base,
            ratio=base / ours,
            target="<= 3 s",
            met=ours <= 3.0 and agree,
            note=note,
        ),
        Row(
            "errors",
            "  floor: the labels join alone (count(*) over Store.labeled_relation)",
            floor,
            "s",
            baseline=ours,
            ratio=ours / floor,
            note=f"median of {runs}; ratio = error_correlation() / floor",
        ),
        Row(
            "errors",
            "  the one pass alone (GROUPING SETS over the labeled rows)",
            one,
            "s",
            baseline=floor,
            ratio=one / floor,
            note=f"median of {runs}; ratio = pass / floor; the rest of error_correlation() is labeled(), the "
            "cells' location (a LIMIT query) and the statistics in numpy",
        ),
    ]


BENCHMARKS = {"errors": bench_errors}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv, _replay_arguments)


if __name__ == "__main__":
    sys.exit(main())
