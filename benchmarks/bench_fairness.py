"""Fairness benchmark: predlog.analysis.fairness_audit against pandas + fairlearn's MetricFrame on the same rows.

    python benchmarks/bench_fairness.py fairness [--quick] [--cache DIR]

On the investigation benchmarks' generated store (benchmarks/investigate_store.py: 10M
labeled predictions of a binary classifier over 30 days, 1M with --quick),
``fairness_audit(s, ["context.gender", "context.region"])``: selection rate, TPR, FPR, FNR,
precision, accuracy and count for each of the 15 gender × region groups and overall, their
gaps (difference and ratio, between groups and to overall), demographic parity and
equalized odds, the four-fifths rule. Timed without the bootstrap (``n_boot=0``: the number
the target is about) and, separately, with the default 1,000 replicates. A floor is timed
too: the labels join alone, a ``count(*)`` over ``Store.labeled_relation`` (every audit
with labels needs it).

Baseline, in the same run: pandas reads the predictions' columns the audit needs
(``read_parquet`` of ``prediction_id``, ``prediction``, ``context``, ``sample_rate``,
``status`` with pyarrow dtypes) and the labels, keeps the latest label of each prediction,
merges, and builds ``fairlearn.metrics.MetricFrame`` with the same metrics
(``selection_rate``, ``true_positive_rate``, ``false_positive_rate``,
``false_negative_rate``, scikit-learn's ``precision_score`` and ``accuracy_score``,
``count``; ``sample_weight = 1 / sample_rate``) over the two sensitive columns, then reads
``by_group``, ``overall``, ``difference()`` and ``ratio()``. MetricFrame alone (on the
arrays already in memory) is reported too. The results are compared.
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
from investigate_store import SENSITIVE, investigation_store, join_floor, read_labeled  # noqa: E402

RATES = ("selection_rate", "tpr", "fpr", "fnr", "precision", "accuracy")


def _read(path: str) -> Any:
    """The rows by hand: pandas reads predictions and labels, keeps the latest label, merges."""

    cols = ["prediction_id", "prediction", "context", "sample_rate", "status"]
    df = read_labeled(path, cols)
    for p in SENSITIVE:
        df[p] = df["context"].struct.field(p.split(".", 1)[1])
    return df


def _metric_frame(df: Any) -> tuple[Any, float]:
    """fairlearn's MetricFrame over the scored rows with the audit's metrics, and its seconds."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_negative_rate,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, precision_score

    ok = df["label"].notna() & df["prediction"].notna() & (df["status"] == "ok")
    y = df.loc[ok, "label"].to_numpy(dtype=np.int64)
    yp = (df.loc[ok, "prediction"].to_numpy(dtype=float) >= 0.5).astype(np.int64)
    w = 1.0 / df.loc[ok, "sample_rate"].fillna(1.0).to_numpy(dtype=float)
    sens = df.loc[ok, list(SENSITIVE)].astype(str).reset_index(drop=True)
    fns = {
        "selection_rate": selection_rate,
        "tpr": true_positive_rate,
        "fpr": false_positive_rate,
        "fnr": false_negative_rate,
        "precision": precision_score,
        "accuracy": accuracy_score,
    }
    t0 = perf_counter()
    mf = MetricFrame(
        metrics={**fns, "count": count},
        y_true=y,
        y_pred=yp,
        sensitive_features=sens,
        sample_params={m: {"sample_weight": w} for m in fns},
    )
    _ = (mf.by_group, mf.overall, mf.difference(), mf.ratio(), mf.difference(method="to_overall"))
    return mf, perf_counter() - t0


def _agreement(got: Any, mf: Any) -> float:
    """The largest relative difference between the audit and MetricFrame (by group, overall, gaps)."""
    want = mf.by_group.dropna(how="all")
    worst = 0.0
    for m in RATES:
        pairs = [
            (got.by_group[m].to_numpy(dtype=float), want[m].to_numpy(dtype=float)),
            (np.array([got.overall[m]]), np.array([mf.overall[m]])),
            (np.array([got.difference()[m]]), np.array([mf.difference()[m]])),
            (np.array([got.ratio()[m]]), np.array([mf.ratio()[m]])),
            (np.array([got.difference("to_overall")[m]]), np.array([mf.difference(method="to_overall")[m]])),
        ]
        for a, b in pairs:
            if a.shape != b.shape:
                return float("inf")
            worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))))
    return worst


def _floor(s: Any) -> float:
    """Seconds of the labels join alone, over the columns the audit reads."""
    return join_floor(s, [*SENSITIVE, "prediction", "label", "sample_rate"])


def bench_fairness(args: argparse.Namespace) -> list[Row]:
    """fairness_audit over gender × region on the labeled store against pandas + fairlearn."""
    from predlog.analysis import fairness_audit
    from predlog.replay import Store

    runs = 5
    with temp_store(args.tmpdir, "fairness") as tmp:
        path, desc = investigation_store(args, tmp)
        with Store(path) as s:
            got = fairness_audit(s, SENSITIVE, n_boot=0)  # warm-up: file footers, imports
            times, boots, floors = [], [], []
            for _ in range(runs):  # interleaved, so the machine's noise hits each alike
                t0 = perf_counter()
                got = fairness_audit(s, SENSITIVE, n_boot=0)
                times.append(perf_counter() - t0)
                t0 = perf_counter()
                booted = fairness_audit(s, SENSITIVE, n_boot=1000)
                boots.append(perf_counter() - t0)
                floors.append(_floor(s))
        t0 = perf_counter()
        df = _read(path)
        mf, alone = _metric_frame(df)
        base = perf_counter() - t0
        rows = len(df)
        del df
    ours, with_boot, floor = statistics.median(times), statistics.median(boots), statistics.median(floors)
    worst = _agreement(got, mf)
    agree = worst <= 1e-9
    dp = got.measures.loc["demographic_parity_difference"]
    b_dp = booted.measures.loc["demographic_parity_difference"]
    note = "; ".join(
        [
            f"{rows:,} rows, {len(got.by_group)} gender x region groups ({desc.get('files', '?')} files)",
            f"median of {runs} runs {', '.join(f'{t:.2f}' for t in times)} s",
            "baseline = pandas read_parquet (5 columns, pyarrow dtypes) + labels (latest per prediction) merged "
            "+ fairlearn MetricFrame (7 metrics, sample weights) with by_group/overall/difference/ratio, one run",
            f"results agree (<= 1e-9 relative): {agree} (largest difference {worst:.1e})",
            f"demographic parity difference {dp['value']:.4f} [{b_dp['low']:.4f}, {b_dp['high']:.4f}]",
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus",
        ]
    )
    return [
        Row(
            "fairness",
            f"fairness_audit(sensitive={list(SENSITIVE)}, n_boot=0)",
            ours,
            "s",
            baseline=base,
            ratio=base / ours,
            target="<= 0.5 s, >= 10x",
            met=ours <= 0.5 and base / ours >= 10 and agree,
            note=note,
        ),
        Row(
            "fairness",
            "  fairlearn MetricFrame alone (arrays in memory)",
            alone,
            "s",
            baseline=ours,
            ratio=alone / ours,
            note="ratio = MetricFrame alone / fairness_audit(n_boot=0)",
        ),
        Row(
            "fairness",
            "  with the bootstrap (n_boot=1000, stratified, every gap)",
            with_boot,
            "s",
            baseline=ours,
            ratio=with_boot / ours,
            note=f"median of {runs} runs {', '.join(f'{t:.2f}' for t in boots)} s; the bootstrap alone about "
            f"{min(boots) - min(times):.2f} s (the difference of the fastest runs, which the machine's noise "
            "touches least)",
        ),
        Row(
            "fairness",
            "  floor: the labels join alone (count(*) over Store.labeled_relation)",
            floor,
            "s",
            baseline=ours,
            ratio=ours / floor,
            note=f"median of {runs} {', '.join(f'{t:.2f}' for t in floors)} s; ratio = fairness_audit() / floor: "
            "the share of the time the join takes",
        ),
    ]


BENCHMARKS = {"fairness": bench_fairness}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv, _replay_arguments)


if __name__ == "__main__":
    sys.exit(main())
