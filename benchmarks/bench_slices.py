"""Error slices benchmark: predlog.analysis.error_slices against pandas on the same rows.

    python benchmarks/bench_slices.py slices [--quick] [--cache DIR]

On the investigation benchmarks' generated store (benchmarks/investigate_store.py: 10M
labeled predictions of a binary classifier over 30 days, 1M with --quick),
``error_slices(s, features=FIELDS, max_depth=2)`` over 10 fields: the 3 context fields, the 4
category features and the float features ``f2``, ``f3``, ``f4`` (5 quantile bins each), so
every single value and every pair of values of two fields is a slice (1,676 tested). Every
row is counted. ``f0`` and ``f1`` are left out: the score is made of them, so their middle
bins (scores near the 0.5 threshold) are real error slices of the model as generated, and
the first of them ranks above the planted slice when they are included.

Checked: the planted slice (``context.region = south`` and ``context.device = ios``, where
40 % of labels are flipped) is reported first.

Baseline, in the same run: pandas reads the columns the analysis needs (``read_parquet`` of
``prediction_id``, ``features``, ``context``, ``prediction``, ``sample_rate`` with pyarrow
dtypes) and the labels, keeps the latest label of each prediction, merges, marks the
misclassified rows (score >= 0.5 against the label), bins the float fields with ``pd.cut``
at the cut points the result reports, and counts rows and errors with one ``groupby`` per
field and per pair of fields (55). It computes no test, no correction and no folding. Every
slice the result tested must have the same rows and errors in the baseline. Two floors are
timed too: the labels join alone, a ``count(*)`` over ``Store.labeled_relation``; and the
rows read and scored, counts over ``Labeled.errors`` of the 10 fields (the relation the
slices are counted over).
"""

from __future__ import annotations

import argparse
import itertools
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
from investigate_store import CATEGORIES, CONTEXT, PLANTED, investigation_store, join_floor, read_labeled  # noqa: E402

from predlog.replay._shapes import ident  # noqa: E402

MODEL = "churn"
FIELDS = [
    *(f"context.{c}" for c in CONTEXT),
    *(f"features.{c}" for c in CATEGORIES),
    "features.f2",
    "features.f3",
    "features.f4",
]
PLANTED_SLICE = " and ".join(f"{k} = {v}" for k, v in sorted(PLANTED.items()))


def _read(path: str) -> Any:
    """The rows with their latest labels and the error indicator, by pandas."""
    import pandas as pd

    cols = ["prediction_id", "features", "context", "prediction", "sample_rate"]
    df = read_labeled(path, cols)
    out = pd.DataFrame(index=df.index)
    for f in FIELDS:
        root, name = f.split(".", 1)
        out[f] = df[root].struct.field(name)
    out["_e"] = ((df["prediction"] >= 0.5).astype(int) != df["label"]).astype(int).to_numpy()
    return out


def _baseline(df: Any, cuts: dict[str, list[float]]) -> dict[tuple[str, ...], Any]:
    """Rows and errors per value of each field and per pair of values of two fields."""
    import pandas as pd

    from predlog.analysis._bins import bin_label

    keys = {}
    for f in FIELDS:
        if f in cuts:
            names = [bin_label(cuts[f], i) for i in range(len(cuts[f]) + 1)]
            idx = pd.cut(df[f].to_numpy(dtype=float), [-np.inf, *cuts[f], np.inf], right=False, labels=False)
            keys[f] = pd.Categorical.from_codes(np.where(np.isnan(idx), -1, idx).astype(int), categories=names)
        else:
            keys[f] = pd.Categorical(df[f].astype(object).to_numpy())
    e = df["_e"]
    out = {}
    for f in FIELDS:
        out[(f,)] = e.groupby(keys[f], observed=True).agg(["size", "sum"])
    for a, b in itertools.combinations(FIELDS, 2):
        out[(a, b)] = e.groupby([keys[a], keys[b]], observed=True).agg(["size", "sum"])
    return out


def _agree(got: Any, want: dict[tuple[str, ...], Any]) -> tuple[bool, int]:
    """Whether every tested slice has the baseline's rows and errors; how many were compared."""
    checked = 0
    for _, s in got.tested.iterrows():
        fields = tuple(s[f"feature_{d}"] for d in range(1, s["depth"] + 1))
        values = tuple(s[f"value_{d}"] for d in range(1, s["depth"] + 1))
        order = sorted(range(len(fields)), key=lambda i: FIELDS.index(fields[i]))
        table = want[tuple(fields[i] for i in order)]
        key = values[order[0]] if len(order) == 1 else tuple(values[i] for i in order)
        if key not in table.index:
            return False, checked
        row = table.loc[key]
        if int(row["size"]) != int(s["rows"]) or int(row["sum"]) != round(float(s["errors"])):
            return False, checked
        checked += 1
    return True, checked


def _floor(s: Any) -> float:
    """Seconds of the labels join alone."""
    return join_floor(s)


def _scored(s: Any) -> float:
    """Seconds of reading and scoring the rows the slices count: the 10 fields, the weight and
    the error indicator of every scored row (``Labeled.errors``), summed."""
    from predlog.analysis._labeled import labeled

    t0 = perf_counter()
    lab = labeled(s, model=MODEL, filters={}, what="bench")
    rel, _ = lab.errors(FIELDS)
    sums = ", ".join(f"count({ident(f)})" for f in FIELDS)
    rel.filter("_e IS NOT NULL").aggregate(f"{sums}, sum(_wt), sum(_e)").fetchall()
    return perf_counter() - t0


def bench_slices(args: argparse.Namespace) -> list[Row]:
    """error_slices() of depth 2 over 10 fields against pandas groupbys per field and pair."""
    from predlog.analysis import error_slices
    from predlog.replay import Store

    runs = 3
    with temp_store(args.tmpdir, "slices") as tmp:
        path, desc = investigation_store(args, tmp)
        with Store(path) as s:
            got = error_slices(s, features=FIELDS, max_depth=2)  # warm-up: file footers, imports
            times, floors, scored = [], [], []
            for _ in range(runs):  # interleaved, so the machine's noise hits all alike
                t0 = perf_counter()
                got = error_slices(s, features=FIELDS, max_depth=2)
                times.append(perf_counter() - t0)
                floors.append(_floor(s))
                scored.append(_scored(s))
        t0 = perf_counter()
        df = _read(path)
        want = _baseline(df, got.cuts)
        base = perf_counter() - t0
        del df
    agree, checked = _agree(got, want)
    ours, floor, read = statistics.median(times), statistics.median(floors), statistics.median(scored)
    first = len(got.df) > 0 and {(got.df.iloc[0][f"feature_{d}"], got.df.iloc[0][f"value_{d}"]) for d in (1, 2)} == set(
        PLANTED.items()
    )
    top = got.df.iloc[0] if len(got.df) else None
    found = (
        f"first slice {top['slice']} (error rate {top['error_rate']:.3f}, lift {top['lift']:.2f}, "
        f"{int(top['rows']):,} rows); {len(got.df)} reported"
        if top is not None
        else "no slice reported"
    )
    note = "; ".join(
        [
            f"{desc['rows']:,} rows, {len(FIELDS)} fields, depth 2, {got.summary['tested']:,} slices tested, "
            f"{got.summary['significant']:,} significant, {got.summary['reported']:,} reported",
            f"median of {runs} runs {', '.join(f'{t:.2f}' for t in times)} s",
            "baseline = pandas read_parquet (5 columns, pyarrow dtypes) + labels (latest per prediction) merged "
            "+ pd.cut at the result's cut points + 55 groupbys (each field, each pair): counts only, one run",
            f"planted slice ({PLANTED_SLICE}) first: {first}; {found}",
            f"every tested slice's rows and errors equal pandas': {agree} ({checked:,} compared)",
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus",
        ]
    )
    return [
        Row(
            "slices",
            "error_slices(max_depth=2), 10 fields",
            ours,
            "s",
            baseline=base,
            ratio=base / ours,
            target="<= 10 s",
            met=ours <= 10.0 and first and agree,
            note=note,
        ),
        Row(
            "slices",
            "  floor: the labels join alone (count(*) over Store.labeled_relation)",
            floor,
            "s",
            baseline=ours,
            ratio=ours / floor,
            note=f"median of {runs}; ratio = error_slices() / floor",
        ),
        Row(
            "slices",
            "  the rows read and scored (count over Labeled.errors of the 10 fields)",
            read,
            "s",
            baseline=ours,
            ratio=ours / read,
            note=f"median of {runs}; ratio = error_slices() / this: what the slicing adds to one pass",
        ),
    ]


BENCHMARKS = {"slices": bench_slices}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv, _replay_arguments)


if __name__ == "__main__":
    sys.exit(main())
