"""The generated labeled store of the investigation benchmarks (error correlation, error
slices, fairness audits).

10M predictions of a binary classifier over 30 days (1M with ``--quick``), written with
``predlog.log_frame`` and labelled with ``predlog.log_labels`` (every row), 1M rows at a time:

- 20 features: ``f0`` … ``f15`` (floats, standard normal), ``plan`` (5 values), ``channel``
  (8), ``category`` (20) and ``tier`` (3);
- context: ``gender`` (f, m and x at 48/48/4 %), ``region`` (north, south, east, west,
  central) and ``device`` (ios, android, web);
- ``prediction``: a score in (0, 1), the logistic of ``0.9 f0 - 0.6 f1 + 0.4 [plan = gold]``;
  the label is drawn from the score, so a threshold of 0.5 misclassifies about a quarter of
  the rows;
- a planted slice: where ``region = south`` and ``device = ios`` (about 6.7 % of rows) the
  label is flipped for 40 % of rows, which triples the error rate there; and the score is a
  little lower for ``gender = x`` (a planted selection-rate gap).

``investigation_store(args, tmp)`` returns a private hard-linked copy of the store (kept in
``--cache`` / ``PREDLOG_BENCH_CACHE`` between runs) and its description.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from time import perf_counter
from typing import Any

import numpy as np

ROWS = 10_000_000
ROWS_QUICK = 1_000_000
DAYS = 30
SEED = 11
CHUNK = 1_000_000
FLOATS = [f"f{i}" for i in range(16)]
CATEGORIES = {
    "plan": ["free", "basic", "plus", "gold", "team"],
    "channel": [f"ch{i}" for i in range(8)],
    "category": [f"cat{i:02d}" for i in range(20)],
    "tier": ["a", "b", "c"],
}
CONTEXT = {
    "gender": (["f", "m", "x"], [0.48, 0.48, 0.04]),
    "region": (["north", "south", "east", "west", "central"], None),
    "device": (["ios", "android", "web"], None),
}
FEATURES = [*FLOATS, *CATEGORIES]
SENSITIVE = ["context.gender", "context.region"]
MODEL = "churn"
PLANTED = {"context.region": "south", "context.device": "ios"}


def _chunk(rng: np.random.Generator, n: int, t0_us: int, span_us: int) -> Any:
    import pandas as pd

    cols: dict[str, Any] = {f: rng.standard_normal(n) for f in FLOATS}
    for name, values in CATEGORIES.items():
        cols[name] = np.asarray(values, dtype=object)[rng.integers(0, len(values), n)]
    for name, (values, p) in CONTEXT.items():
        cols[name] = np.asarray(values, dtype=object)[rng.choice(len(values), n, p=p)]
    logit = 0.9 * cols["f0"] - 0.6 * cols["f1"] + 0.4 * (cols["plan"] == "gold") - 0.5 * (cols["gender"] == "x")
    score = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(n) < score).astype(np.int64)
    planted = (cols["region"] == "south") & (cols["device"] == "ios")
    flip = planted & (rng.random(n) < 0.4)
    label = np.where(flip, 1 - label, label)
    ts = t0_us + np.sort(rng.integers(0, span_us, n))
    frame = pd.DataFrame(cols)
    frame["prediction"] = score
    frame["ts"] = pd.to_datetime(ts, unit="us", utc=True)
    return frame, label


def generate(path: str, rows: int) -> dict[str, Any]:
    """Write the store at ``path``; return its description."""
    import pandas as pd

    import predlog

    t_start = perf_counter()
    rng = np.random.default_rng(SEED)
    t0 = int(pd.Timestamp("2026-10-01", tz="UTC").value // 1000)
    day_us = 86_400_000_000
    chunks = max(1, rows // CHUNK)
    per = rows // chunks
    span = DAYS * day_us // chunks
    rec = predlog.Recorder(store=path, model=MODEL, version="2.1.0")
    try:
        for i in range(chunks):
            n = per if i < chunks - 1 else rows - per * (chunks - 1)
            frame, label = _chunk(rng, n, t0 + i * span, span)
            ids = rec.log_frame(frame, prediction="prediction", ts="ts", context=list(CONTEXT), features=FEATURES)
            rec.log_labels(pd.DataFrame({"prediction_id": ids, "label": label}))
            print(f"  {(i + 1) * per:,} rows", file=sys.stderr, flush=True)
        assert rec.flush(timeout_s=600)
    finally:
        rec.shutdown()
    files = sum(len(f) for _, _, f in os.walk(path))
    size = sum(os.path.getsize(os.path.join(d, x)) for d, _, fs in os.walk(path) for x in fs)
    return {"rows": rows, "files": files, "bytes": size, "generate_s": round(perf_counter() - t_start, 1)}


def investigation_store(args: argparse.Namespace, tmp: str) -> tuple[str, dict[str, Any]]:
    """A private copy of the benchmark store for this run (generated, or from ``--cache``)."""
    from bench_replay import _link_copy

    rows = getattr(args, "rows", None) or (ROWS_QUICK if args.quick else ROWS)
    key = f"investigate-store-{rows}-{DAYS}-{SEED}"
    cache_dir = getattr(args, "cache", None) or os.environ.get("PREDLOG_BENCH_CACHE")
    cache = os.path.abspath(cache_dir) if cache_dir else tmp
    src = os.path.join(cache, key)
    if not os.path.exists(src + ".json"):
        shutil.rmtree(src, ignore_errors=True)
        print(f"generating {rows:,} labeled predictions into {src} ...", file=sys.stderr, flush=True)
        desc = generate(src, rows)
        with open(src + ".json", "w") as f:
            json.dump(desc, f)
        print(f"  {desc['files']} files, {desc['bytes'] / 1e9:.2f} GB in {desc['generate_s']} s", file=sys.stderr)
    with open(src + ".json") as f:
        desc = json.load(f)
    dst = os.path.join(tmp, key + "-run")
    _link_copy(src, dst)
    return dst, desc


def read_labeled(path: str, columns: list[str]) -> Any:
    """The baselines' read, by pandas: the predictions' ``columns`` (pyarrow dtypes) merged
    with the latest label of each prediction (a ``label`` column)."""
    import pandas as pd

    df = pd.read_parquet(os.path.join(path, "predictions"), columns=columns, dtype_backend="pyarrow", partitioning=None)
    labels = pd.read_parquet(os.path.join(path, "labels"), columns=["prediction_id", "ts", "label"], partitioning=None)
    labels = labels.sort_values("ts").drop_duplicates("prediction_id", keep="last")
    return df.merge(labels[["prediction_id", "label"]], on="prediction_id", how="left")


def join_floor(s: Any, columns: list[str] | None = None) -> float:
    """Seconds of the labels join alone: a ``count(*)`` over ``Store.labeled_relation`` of
    ``columns`` (default: the prediction and the label), the floor under every investigation."""
    t0 = perf_counter()
    columns = columns or ["prediction", "label"]
    rel = s.labeled_relation(MODEL, include_unlabeled=True, columns=columns, ordered=False)
    rel.aggregate("count(*)").fetchall()
    return perf_counter() - t0
