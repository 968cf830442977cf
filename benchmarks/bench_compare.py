"""Version comparison benchmark: predlog.analysis.compare_versions against pandas + scipy on the same rows.

    python benchmarks/bench_compare.py compare [--quick] [--cache DIR]

The store: 10M predictions of a binary classifier over 30 days (1M with ``--quick``), 95 %
from version 1.4.0 and 5 % from the candidate 1.5.0 (a canary), each with a latency
(lognormal, the candidate 10 % slower), a status (1 % errors), a score and a confidence;
30 % of the rows are labelled with ``Recorder.log_labels``. Rows are sealed as the SDK's
writer seals them (Arrow frame, write-ahead segment, sealer), 1M at a time; ``--cache DIR``
(or ``PREDLOG_BENCH_CACHE``) keeps the store between runs.

Timed: ``compare_versions(s, "1.4.0", "1.5.0")`` — latency quantiles and Mann–Whitney U,
error rate, the predictions' KS test, mean confidence and accuracy against the labels.

Baseline, in the same run: pandas reads the columns the comparison needs
(``read_parquet`` of ``prediction_id``, ``model_version``, ``status``, ``latency_ms``,
``prediction``, ``confidence``) and the labels (the latest per prediction), merges, and
calls ``scipy.stats.mannwhitneyu``, ``chi2_contingency``, ``ks_2samp`` and ``ttest_ind``
and ``numpy.quantile`` per version. The p-values are compared (within the bounds the binned
tests report).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import uuid
from time import perf_counter
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_capture import Row, run_cli, temp_store  # noqa: E402
from bench_replay import _replay_arguments  # noqa: E402
from investigate_store import cached_store  # noqa: E402

ROWS = 10_000_000
ROWS_QUICK = 1_000_000
DAYS = 30
SEED = 17
CHUNK = 1_000_000
CANARY = 0.05
LABELED = 0.3
MODEL = "ranker"
BASELINE, CANDIDATE = "1.4.0", "1.5.0"
UNLABELED = ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "error_rate", "prediction_distribution",
             "confidence_mean"]  # fmt: skip


def _chunk(rng: np.random.Generator, n: int, t0_us: int, span_us: int) -> tuple[Any, np.ndarray]:
    """One chunk of rows as the writer's Arrow frame, and the labels of its rows (-1: none)."""
    import pyarrow as pa

    from predlog._ids import uuid7_array

    cand = rng.random(n) < CANARY
    ts = t0_us + np.sort(rng.integers(0, span_us, n))
    data, _ = uuid7_array(ts * 1000, rng.integers(0, 2**62, n, dtype=np.uint64), None)
    ids = pa.StringArray.from_buffers(n, pa.py_buffer(np.arange(0, (n + 1) * 36, 36, dtype=np.int32).tobytes()),
                                      pa.py_buffer(data))  # fmt: skip
    score = rng.random(n)
    truth = (rng.random(n) < score).astype(np.int64)
    status = np.where(rng.random(n) < 0.01, "error", "ok")
    latency = rng.lognormal(3.0, 0.4, n) * np.where(cand, 1.1, 1.0)

    def nulls(typ: Any) -> Any:
        return pa.nulls(n, typ)

    table = pa.table(
        {
            "prediction_id": ids,
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "model": pa.repeat(pa.scalar(MODEL), n),
            "model_version": pa.array(np.where(cand, CANDIDATE, BASELINE)),
            "latency_ms": pa.array(latency),
            "cpu_ms": nulls(pa.float64()),
            "status": pa.array(status),
            "error_type": nulls(pa.string()),
            "error_message": nulls(pa.string()),
            "request_id": nulls(pa.string()),
            "user_id": nulls(pa.string()),
            "batch_id": nulls(pa.string()),
            "batch_index": nulls(pa.int32()),
            "batch_size": nulls(pa.int32()),
            "trace_id": nulls(pa.string()),
            "span_id": nulls(pa.string()),
            "features": pa.StructArray.from_arrays([pa.array(rng.standard_normal(n))], names=["x"]),
            "prediction": pa.array(score),
            "confidence": pa.array(np.abs(score - 0.5) * 2),
            "context": nulls(pa.struct([("region", pa.string())])),
            "sample_rate": pa.repeat(pa.scalar(1.0), n),
            "capture_flags": nulls(pa.list_(pa.string())),
        }
    )
    labels = np.where((rng.random(n) < LABELED) & (status == "ok"), truth, -1)
    return table, labels


def generate(path: str, rows: int) -> dict[str, Any]:
    """Write the store at ``path``; return its description."""
    import pandas as pd

    import predlog
    from predlog._sealing import ensure_store, seal_segment
    from predlog._segment import KIND_PREDICTIONS, SegmentWriter, encode_frame

    t_start = perf_counter()
    rng = np.random.default_rng(SEED)
    ensure_store(path)
    t0 = int(pd.Timestamp("2026-10-01", tz="UTC").value // 1000)
    chunks = max(1, rows // CHUNK)
    span = DAYS * 86_400_000_000 // chunks
    rec = predlog.Recorder(store=path, model="labels")
    labeled = 0
    try:
        for i in range(chunks):
            n = rows // chunks if i < chunks - 1 else rows - (rows // chunks) * (chunks - 1)
            table, labels = _chunk(rng, n, t0 + i * span, span)
            segment = os.path.join(path, "_wal", f"bench-{os.getpid()}-{uuid.uuid4().hex[:16]}.arrows")
            writer = SegmentWriter(segment)
            writer.append(encode_frame(KIND_PREDICTIONS, table), table.num_rows)
            writer.sync()
            writer.close()
            seal_segment(path, segment)
            keep = labels >= 0
            ids = np.asarray(table.column("prediction_id").to_pylist(), dtype=object)[keep]
            rec.log_labels(pd.DataFrame({"prediction_id": ids, "label": labels[keep]}))
            labeled += int(keep.sum())
            print(f"  {(i + 1) * (rows // chunks):,} rows", file=sys.stderr, flush=True)
        assert rec.flush(timeout_s=600)
    finally:
        rec.shutdown()
    files = sum(len(f) for _, _, f in os.walk(path))
    size = sum(os.path.getsize(os.path.join(d, x)) for d, _, fs in os.walk(path) for x in fs)
    took = round(perf_counter() - t_start, 1)
    return {"rows": rows, "labeled": labeled, "files": files, "bytes": size, "generate_s": took}


def compare_store(args: argparse.Namespace, tmp: str) -> tuple[str, dict[str, Any]]:
    """A private copy of the benchmark store for this run (generated, or from ``--cache``)."""
    rows = args.rows or (ROWS_QUICK if args.quick else ROWS)
    return cached_store(args, tmp, f"compare-store-{rows}-{DAYS}-{SEED}", rows, generate, "predictions of two versions")


def _pandas_scipy(path: str) -> dict[str, float]:
    """The same tests by hand: pandas reads and joins, scipy tests (p-values by metric)."""
    import pandas as pd
    from scipy import stats

    cols = ["prediction_id", "model_version", "status", "latency_ms", "prediction", "confidence"]
    df = pd.read_parquet(os.path.join(path, "predictions"), columns=cols, partitioning=None)
    labels = pd.read_parquet(os.path.join(path, "labels"), columns=["prediction_id", "ts", "label"], partitioning=None)
    labels = labels.sort_values("ts").drop_duplicates("prediction_id", keep="last")
    df = df.merge(labels[["prediction_id", "label"]], on="prediction_id", how="left")
    b, c = df[df["model_version"] == BASELINE], df[df["model_version"] == CANDIDATE]
    lb = b.loc[b["status"] == "ok", "latency_ms"].to_numpy()
    lc = c.loc[c["status"] == "ok", "latency_ms"].to_numpy()
    out = {f"q{q}": float(np.quantile(lc, q) / np.quantile(lb, q)) for q in (0.5, 0.95, 0.99)}
    out["latency_p95_ms"] = float(stats.mannwhitneyu(lc / 1.2, lb, alternative="greater").pvalue)
    eb, ec = int((b["status"] == "error").sum()), int((c["status"] == "error").sum())
    out["error_rate"] = float(stats.chi2_contingency([[eb, len(b) - eb], [ec, len(c) - ec]], correction=False).pvalue)
    out["prediction_distribution"] = float(stats.ks_2samp(b["prediction"], c["prediction"]).pvalue)
    out["confidence_mean"] = float(
        stats.ttest_ind(c["confidence"] + 0.05, b["confidence"], equal_var=False, alternative="less").pvalue
    )
    hb, hc = b[b["label"].notna()], c[c["label"].notna()]
    out["accuracy"] = float(((hc["prediction"] >= 0.5) == hc["label"]).mean())
    out["accuracy_b"] = float(((hb["prediction"] >= 0.5) == hb["label"]).mean())
    return out


def bench_compare(args: argparse.Namespace) -> list[Row]:
    """compare_versions() on the 10M-row two-version store against pandas + scipy."""
    from predlog.analysis import compare_versions
    from predlog.replay import Store

    runs = 3
    with temp_store(args.tmpdir, "compare") as tmp:
        path, desc = compare_store(args, tmp)
        with Store(path) as s:
            v = compare_versions(s, BASELINE, CANDIDATE, model=MODEL)  # warm-up: footers, imports
            times = []
            for _ in range(runs):
                t0 = perf_counter()
                v = compare_versions(s, BASELINE, CANDIDATE, model=MODEL)
                times.append(perf_counter() - t0)
            unlabeled = []
            for _ in range(runs):
                t0 = perf_counter()
                compare_versions(s, BASELINE, CANDIDATE, model=MODEL, metrics=UNLABELED)
                unlabeled.append(perf_counter() - t0)
            t0 = perf_counter()
            s.relation(MODEL, columns=["model_version", "latency_ms"], ordered=False).aggregate(
                "sum(latency_ms)"
            ).fetchall()
            scan = perf_counter() - t0
        t0 = perf_counter()
        want = _pandas_scipy(path)
        base = perf_counter() - t0
    ours = statistics.median(times)
    df = v.df.set_index("metric")
    ratios = {q: df.loc[f"latency_p{int(q * 100)}_ms", "effect"] for q in (0.5, 0.95, 0.99)}
    worst_q = max(abs(ratios[q] / want[f"q{q}"] - 1) for q in ratios)
    p95 = df.loc["latency_p95_ms"]
    agree = (
        worst_q <= 1e-9
        and abs(p95["p_value"] - want["latency_p95_ms"]) <= p95["p_bound"] + 1e-12
        and abs(df.loc["prediction_distribution", "p_value"] - want["prediction_distribution"])
        <= df.loc["prediction_distribution", "p_bound"] + 1e-12
        and abs(df.loc["confidence_mean", "p_value"] - want["confidence_mean"]) <= 1e-9
        and abs(df.loc["accuracy", "candidate"] - want["accuracy"]) <= 1e-12
    )
    note = "; ".join(
        [
            f"{desc['rows']:,} rows ({CANARY:.0%} candidate), {desc['labeled']:,} labeled, {desc['files']} files",
            f"decision {v.decision}: {v.summary['text'][:100]}",
            f"median of {runs} runs {', '.join(f'{t:.2f}' for t in times)} s",
            "baseline = pandas read_parquet (6 columns) + labels (latest per prediction) merged + scipy "
            "mannwhitneyu/chi2_contingency/ks_2samp/ttest_ind + numpy quantiles, one run",
            f"results agree (quantiles 1e-9, p-values within the reported bounds: MWU ±{p95['p_bound']:.1e}, "
            f"KS ±{df.loc['prediction_distribution', 'p_bound']:.1e}): {agree}",
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus",
        ]
    )
    return [
        Row(
            "compare",
            "compare_versions(1.4.0 vs 1.5.0), 7 metrics with labels",
            ours,
            "s",
            baseline=base,
            ratio=base / ours,
            target="<= 1 s",
            met=ours <= 1.0 and bool(agree),
            note=note,
        ),
        Row(
            "compare",
            "  the same without labels (6 metrics: no labels join)",
            statistics.median(unlabeled),
            "s",
            baseline=ours,
            ratio=ours / statistics.median(unlabeled),
            note=f"median of {runs}; ratio = with labels / without: the labels join's share",
        ),
        Row(
            "compare",
            "  floor: one scan of model_version, latency_ms (sum)",
            scan,
            "s",
            baseline=ours,
            ratio=ours / scan,
            note="ratio = compare_versions() / one scan of two columns",
        ),
    ]


BENCHMARKS = {"compare": bench_compare}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv, _replay_arguments)


if __name__ == "__main__":
    sys.exit(main())
