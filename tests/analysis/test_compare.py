"""compare_versions(): the verdict between two versions, every test equal to scipy's.

Stores are written as the SDK writes them (the writer's Arrow frame, a write-ahead segment,
the sealer) with the columns a comparison reads: versions, latencies, statuses, request ids,
predictions, confidences and sample rates; labels are logged with ``Recorder.log_labels``.
The references are computed with scipy on the frames the tests wrote, not on the store.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

import predlog
from predlog._ids import uuid7_array
from predlog._sealing import ensure_store, seal_segment
from predlog._segment import KIND_PREDICTIONS, SegmentWriter, encode_frame
from predlog.analysis import Verdict, compare_versions
from predlog.analysis import _compare_stats as cs
from predlog.replay import Store, UnknownVersionError

T0 = pd.Timestamp("2026-11-01", tz="UTC")
_STEMS = itertools.count()


def write(path: Path, frame: pd.DataFrame, *, model: str = "m") -> pd.DataFrame:
    """Seal ``frame``'s rows as predictions of ``model``: columns ``version``, ``latency_ms``,
    ``status``, ``prediction`` and, optionally, ``request_id``, ``confidence``,
    ``sample_rate``, ``ts``. Returns the frame with ``prediction_id``."""
    ensure_store(str(path))
    n = len(frame)
    frame = frame.reset_index(drop=True)
    ts = frame["ts"] if "ts" in frame else T0 + pd.to_timedelta(np.arange(n), unit="s")
    ts_us = pd.to_datetime(ts, utc=True).to_numpy(dtype="datetime64[us]").astype(np.int64)
    data, _ = uuid7_array(ts_us * 1000, np.arange(n, dtype=np.uint64) + next(_STEMS) * 10_000_000, None)
    offsets = np.arange(0, (n + 1) * 36, 36, dtype=np.int32)
    ids = pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))

    def col(name: str, typ: pa.DataType, default: Any = None) -> pa.Array:
        if name in frame:
            return pa.array([None if pd.isna(x) else x for x in frame[name].tolist()], typ)
        return pa.nulls(n, typ) if default is None else pa.repeat(pa.scalar(default, typ), n)

    status = frame["status"] if "status" in frame else pd.Series(["ok"] * n)
    table = pa.table(
        {
            "prediction_id": ids,
            "ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "model": pa.repeat(pa.scalar(model), n),
            "model_version": pa.array(frame["version"].tolist(), pa.string()),
            "latency_ms": col("latency_ms", pa.float64()),
            "cpu_ms": pa.nulls(n, pa.float64()),
            "status": pa.array(status.tolist(), pa.string()),
            "error_type": pa.array([("ValueError" if s == "error" else None) for s in status], pa.string()),
            "error_message": pa.nulls(n, pa.string()),
            "request_id": col("request_id", pa.string()),
            "user_id": pa.nulls(n, pa.string()),
            "batch_id": pa.nulls(n, pa.string()),
            "batch_index": pa.nulls(n, pa.int32()),
            "batch_size": pa.nulls(n, pa.int32()),
            "trace_id": pa.nulls(n, pa.string()),
            "span_id": pa.nulls(n, pa.string()),
            "features": pa.StructArray.from_arrays([pa.array(np.arange(n, dtype=np.int64))], names=["row"]),
            "prediction": pa.array(frame["prediction"].tolist()),
            "confidence": col("confidence", pa.float64()),
            "context": pa.StructArray.from_arrays([col("shadow", pa.bool_())], names=["canary_shadow"]),
            "sample_rate": col("sample_rate", pa.float64(), 1.0),
            "capture_flags": pa.nulls(n, pa.list_(pa.string())),
        }
    )
    segment = os.path.join(str(path), "_wal", f"compare-{os.getpid()}-{uuid.uuid4().hex[:16]}.arrows")
    writer = SegmentWriter(segment)
    writer.append(encode_frame(KIND_PREDICTIONS, table), table.num_rows)
    writer.sync()
    writer.close()
    seal_segment(str(path), segment)
    return frame.assign(prediction_id=ids.to_pylist())


def labels(path: Path, frame: pd.DataFrame) -> None:
    """Log ``frame["label"]`` for ``frame["prediction_id"]``."""
    rec = predlog.Recorder(store=str(path), model="labels")
    try:
        rec.log_labels(frame[["prediction_id", "label"]])
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()


def side(rng: np.random.Generator, n: int, version: str, *, slower: float = 1.0, errors: float = 0.01,
         accuracy: float = 0.85) -> pd.DataFrame:  # fmt: skip
    """``n`` calls of a binary classifier: lognormal latencies, scores, labels right ``accuracy`` of the time."""
    score = rng.random(n)
    cls = (score >= 0.5).astype(np.int64)
    right = rng.random(n) < accuracy
    return pd.DataFrame(
        {
            "version": version,
            "latency_ms": np.round(rng.lognormal(3.0, 0.3, n) * slower, 3),
            "status": np.where(rng.random(n) < errors, "error", "ok"),
            "prediction": score,
            "confidence": np.abs(score - 0.5) * 2,
            "label": np.where(right, cls, 1 - cls),
        }
    )


def rows(v: Verdict, metric: str) -> dict[str, Any]:
    got = v.df[v.df["metric"] == metric]
    assert len(got) == 1, v.df
    return got.iloc[0].to_dict()  # type: ignore[no-any-return]


# ---------------------------------------------------------------- the verdicts


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    """One store, versions: "base" (6,000 rows) and candidates of 1,500 rows: "same", "slow"
    (+30 % latency), "worse" (accuracy 5 points lower), "tiny" (100 rows)."""
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("compare") / "store"
    frames = {
        "base": side(rng, 6000, "base"),
        "same": side(rng, 1500, "same"),
        "slow": side(rng, 1500, "slow", slower=1.3),
        "worse": side(rng, 1500, "worse", accuracy=0.80),
        "tiny": side(rng, 100, "tiny"),
    }
    written = write(path, pd.concat(frames.values(), ignore_index=True))
    labels(path, written[written["status"] == "ok"])
    return path, {k: written[written["version"] == k] for k in frames}


def test_equal_versions_promote(planted: Any) -> None:
    path, _ = planted
    with Store(path) as s:
        v = compare_versions(s, "base", "same")
    assert v.decision == "promote", v.reasons
    assert set(v.df["metric"]) == {
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "error_rate",
        "prediction_distribution",
        "confidence_mean",
        "accuracy",
    }
    assert (v.df["status"] == "pass").all(), v.df
    assert v.summary["text"].startswith("promote same")


def test_planted_latency_rolls_back(planted: Any) -> None:
    path, _ = planted
    with Store(path) as s:
        v = compare_versions(s, "base", "slow")
    assert v.decision == "rollback"
    assert v.summary["failed"][:3] == ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]
    assert v.reasons[0].startswith("p50 latency ") and "tolerance ×1.20, p < 0.001" in v.reasons[0]
    assert v.summary["text"] == f"rollback slow: {v.reasons[0]}"


def test_planted_accuracy_rolls_back(planted: Any) -> None:
    path, _ = planted
    with Store(path) as s:
        v = compare_versions(s, "base", "worse")
    assert v.decision == "rollback"
    assert v.summary["failed"] == ["accuracy"]
    assert v.reasons[0].startswith("accuracy 0.8") and "tolerance -1.00 points" in v.reasons[0]


def test_few_candidate_rows_hold(planted: Any) -> None:
    path, _ = planted
    with Store(path) as s:
        v = compare_versions(s, "base", "tiny")
    assert v.decision == "hold"
    assert v.reasons[0] == "candidate tiny has 100 rows, fewer than min_rows=500: wait for more traffic."
    assert (v.df["status"] == "no-data").all()


def test_every_test_equals_scipy(planted: Any) -> None:
    """Without tolerances (ratio 1, difference 0) each test is the plain one; with the
    defaults, the same test on the tolerance-shifted candidate."""
    path, frames = planted
    b, c = frames["base"], frames["slow"]
    neutral = {
        "latency_p50_ms": 1.0,
        "latency_p95_ms": 1.0,
        "latency_p99_ms": 1.0,
        "error_rate": 0.0,
        "confidence_mean": 0.0,
        "accuracy": 0.0,
    }
    with Store(path) as s:
        plain = compare_versions(s, "base", "slow", tolerances=neutral)
        shifted = compare_versions(s, "base", "slow")
    lb = b.loc[b["status"] == "ok", "latency_ms"].to_numpy()
    lc = c.loc[c["status"] == "ok", "latency_ms"].to_numpy()
    for q, name in ((0.5, "latency_p50_ms"), (0.95, "latency_p95_ms"), (0.99, "latency_p99_ms")):
        row = rows(plain, name)
        np.testing.assert_allclose([row["baseline"], row["candidate"]], [np.quantile(lb, q), np.quantile(lc, q)])
    for verdict, scale in ((plain, 1.0), (shifted, 1.2)):
        want = stats.mannwhitneyu(lc / scale, lb, alternative="greater", method="asymptotic")
        row = rows(verdict, "latency_p50_ms")
        assert row["test"] == "Mann–Whitney U"
        np.testing.assert_allclose([row["statistic"], row["p_value"]], [want.statistic, want.pvalue], rtol=1e-9)
        for q, name in ((0.95, "latency_p95_ms"), (0.99, "latency_p99_ms")):
            check_tail(rows(verdict, name), lb, lc, q, scale)

    eb, ec = int((b["status"] == "error").sum()), int((c["status"] == "error").sum())
    chi2 = stats.chi2_contingency([[eb, len(b) - eb], [ec, len(c) - ec]], correction=False)
    row = rows(plain, "error_rate")
    assert row["baseline"] == eb / len(b) and row["candidate"] == ec / len(c)
    np.testing.assert_allclose(row["statistic"] ** 2, chi2.statistic, rtol=1e-9)
    worse = ec / len(c) > eb / len(b)
    np.testing.assert_allclose(row["p_value"], chi2.pvalue / 2 if worse else 1 - chi2.pvalue / 2, rtol=1e-9)
    row = rows(shifted, "error_rate")
    np.testing.assert_allclose(row["p_value"], restricted_p(eb, len(b), ec, len(c), 0.01), rtol=1e-6)

    ks = stats.ks_2samp(b["prediction"], c["prediction"])
    row = rows(plain, "prediction_distribution")
    np.testing.assert_allclose([row["statistic"], row["p_value"]], [ks.statistic, ks.pvalue], rtol=1e-9)

    for verdict, shift in ((plain, 0.0), (shifted, -0.05)):
        t = stats.ttest_ind(c["confidence"] - shift, b["confidence"], equal_var=False, alternative="less")
        np.testing.assert_allclose(rows(verdict, "confidence_mean")["p_value"], t.pvalue, rtol=1e-9)

    hb = b[b["status"] == "ok"]
    hc = c[c["status"] == "ok"]
    kb, kc = (
        int((hb["label"] == (hb["prediction"] >= 0.5)).sum()),
        int((hc["label"] == (hc["prediction"] >= 0.5)).sum()),
    )
    chi2 = stats.chi2_contingency([[kb, len(hb) - kb], [kc, len(hc) - kc]], correction=False)
    row = rows(plain, "accuracy")
    np.testing.assert_allclose([row["baseline"], row["candidate"]], [kb / len(hb), kc / len(hc)], rtol=1e-12)
    np.testing.assert_allclose(row["statistic"] ** 2, chi2.statistic, rtol=1e-9)
    row = rows(shifted, "accuracy")
    np.testing.assert_allclose(row["p_value"], 1 - restricted_p(kb, len(hb), kc, len(hc), -0.01), rtol=1e-6)


def check_tail(row: dict[str, Any], lb: np.ndarray, lc: np.ndarray, q: float, scale: float) -> None:
    """The tail test of quantile ``q``: the candidate's share above ``scale`` × the baseline's
    quantile against the baseline's share above it, as scipy's χ² of the 2×2 table."""
    cut = np.quantile(lb, q)
    kb, kc = int((lb > cut).sum()), int((lc > scale * cut).sum())
    chi2 = stats.chi2_contingency([[kb, len(lb) - kb], [kc, len(lc) - kc]], correction=False)
    assert row["test"] == "tail share z"
    np.testing.assert_allclose(row["statistic"] ** 2, chi2.statistic, rtol=1e-9)
    worse = kc / len(lc) > kb / len(lb)
    np.testing.assert_allclose(row["p_value"], chi2.pvalue / 2 if worse else 1 - chi2.pvalue / 2, rtol=1e-9)


def restricted_p(kb: int, nb: int, kc: int, nc: int, margin: float) -> float:
    """P(Z > z) of the score test of p_c − p_b = margin, the restricted maximum likelihood
    found numerically (the reference of the closed form)."""
    from scipy import optimize

    lo, hi = max(0.0, -margin), min(1.0, 1.0 - margin)

    def nll(pb: float) -> float:
        pc = pb + margin
        eps = 1e-15
        return -(kb * np.log(max(pb, eps)) + (nb - kb) * np.log(max(1 - pb, eps)) +
                 kc * np.log(max(pc, eps)) + (nc - kc) * np.log(max(1 - pc, eps)))  # fmt: skip

    pb = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13}).x
    pc = pb + margin
    z = (kc / nc - kb / nb - margin) / np.sqrt(pb * (1 - pb) / nb + pc * (1 - pc) / nc)
    return float(stats.norm.sf(z))


def test_binned_tests_stay_within_their_bounds(planted: Any) -> None:
    """Above EXACT_VALUES values, rank sums and ECDFs are read on a grid: the statistics and
    p-values stay within the bounds they report."""
    path, frames = planted
    b, c = frames["base"], frames["slow"]
    with Store(path) as s:
        rel = s.relation("m", columns=["model_version", "latency_ms", "status", "prediction"], ordered=False,
                         version=["base", "slow"])  # fmt: skip
        cand = "(model_version = 'slow')"
        ok = "status = 'ok'"
        grid = cs.mann_whitney(rel, "latency_ms", cand, ok, exact=False)
        ks_exact, _, _ = cs.ks(rel, "prediction", cand, "true", exact=True)
        ks_grid, _, _ = cs.ks(rel, "prediction", cand, "true", exact=False)
    lb = b.loc[b["status"] == "ok", "latency_ms"].to_numpy()
    lc = c.loc[c["status"] == "ok", "latency_ms"].to_numpy()
    want = stats.mannwhitneyu(lc, lb, alternative="greater", method="asymptotic")
    assert abs(grid.statistic - want.statistic) <= grid.bound + 1e-9
    assert abs(grid.p_value - want.pvalue) <= grid.p_bound + 1e-12
    ks = stats.ks_2samp(b["prediction"], c["prediction"], method="asymp")
    np.testing.assert_allclose([ks_exact.statistic, ks_exact.p_value], [ks.statistic, ks.pvalue], rtol=1e-9)
    assert ks_grid.statistic <= ks.statistic <= ks_grid.statistic + ks_grid.bound + 1e-12
    assert abs(ks_grid.p_value - ks.pvalue) <= ks_grid.p_bound + 1e-12
    # Where the bound could move the p-value across alpha, the test is computed exactly.
    with Store(path) as s:
        rel = s.relation("m", columns=["model_version", "latency_ms", "status", "prediction"], ordered=False,
                         version=["base", "slow"])  # fmt: skip
        settled = cs.mann_whitney(rel, "latency_ms", cand, ok, exact=False, alpha=grid.p_value)
        ks_settled, _, _ = cs.ks(rel, "prediction", cand, "true", exact=False, alpha=ks_grid.p_value)
    assert settled.p_bound == 0 and ks_settled.p_bound == 0
    np.testing.assert_allclose([settled.statistic, settled.p_value], [want.statistic, want.pvalue], rtol=1e-9)
    np.testing.assert_allclose([ks_settled.statistic, ks_settled.p_value], [ks.statistic, ks.pvalue], rtol=1e-9)


def test_equal_versions_promote_nearly_always(tmp_path: Path) -> None:
    """40 comparisons of two versions drawn from the same distributions: at least 38 promote."""
    rng = np.random.default_rng(2026)
    versions = [f"v{i:02d}" for i in range(80)]
    frame = pd.concat([side(rng, 700, v) for v in versions], ignore_index=True)
    written = write(tmp_path / "store", frame)
    labels(tmp_path / "store", written[written["status"] == "ok"])
    with Store(tmp_path / "store") as s:
        decisions = [compare_versions(s, versions[i], versions[i + 1]).decision for i in range(0, 80, 2)]
    assert decisions.count("promote") >= 38, decisions
    assert "hold" not in decisions


def test_a_slower_tail_alone_rolls_back(tmp_path: Path) -> None:
    """3 % of the candidate's calls 6× slower: the median barely moves (Mann–Whitney passes)
    but p99 is several times the baseline's, and its tail test rejects."""
    rng = np.random.default_rng(31)
    b, c = side(rng, 20_000, "t1"), side(rng, 20_000, "t2")
    c["latency_ms"] = np.where(rng.random(len(c)) < 0.03, c["latency_ms"] * 6, c["latency_ms"])
    write(tmp_path / "store", pd.concat([b, c], ignore_index=True))
    with Store(tmp_path / "store") as s:
        v = compare_versions(s, "t1", "t2")
    assert v.decision == "rollback", v.reasons
    assert "latency_p99_ms" in v.summary["failed"] and "latency_p50_ms" not in v.summary["failed"]
    row = rows(v, "latency_p99_ms")
    assert row["effect"] > 2 and row["reason"] in v.reasons[: len(v.summary["failed"])]
    assert row["reason"].startswith("p99 latency") and row["reason"].endswith("worse beyond tolerance.")
    lb = b.loc[b["status"] == "ok", "latency_ms"].to_numpy()
    lc = c.loc[c["status"] == "ok", "latency_ms"].to_numpy()
    check_tail(row, lb, lc, 0.99, 1.2)
    check_tail(rows(v, "latency_p95_ms"), lb, lc, 0.95, 1.2)


def test_the_tail_test_fails_at_the_tolerance_about_alpha_of_the_time() -> None:
    """The candidate's latencies 1.2 × the baseline's, 2,000 calls a side: p95 and p99 (the
    engine's test, on the counts it reads) fail in about alpha of the repetitions."""
    rng = np.random.default_rng(13)
    n = 2000
    for q in (0.95, 0.99):
        failed = []
        for _ in range(1000):
            b, c = rng.lognormal(3.0, 0.3, n), 1.2 * rng.lognormal(3.0, 0.3, n)
            cut = np.quantile(b, q)
            t = cs.two_proportions(int((b > cut).sum()), n, int((c > 1.2 * cut).sum()), n, higher_is_worse=True)
            failed.append(t.p_value < 0.05 and np.quantile(c, q) > 1.2 * cut)
        assert 0.03 < np.mean(failed) < 0.09, (q, np.mean(failed))


def test_a_slower_tail_of_shadow_pairs_rolls_back(tmp_path: Path) -> None:
    """The same on shadow pairs: the candidate repeats the baseline's latency (±1 %), but 3 %
    of its calls are 6× slower. The pairs' tail test is McNemar's z on the pairs where one
    version is above its limit (the baseline's p99, and 1.2 × it for the candidate)."""
    rng = np.random.default_rng(32)
    b = side(rng, 5000, "s1").assign(request_id=[f"r{i}" for i in range(5000)])
    c = b.copy()
    c["version"], c["shadow"] = "s2", True
    slow = np.where(rng.random(len(c)) < 0.03, 6.0, 1.0)
    c["latency_ms"] = np.round(b["latency_ms"].to_numpy() * rng.uniform(0.99, 1.01, len(c)) * slow, 3)
    write(tmp_path / "store", pd.concat([b, c], ignore_index=True))
    with Store(tmp_path / "store") as s:
        v = compare_versions(s, "s1", "s2")
    assert v.summary["paired"] and v.decision == "rollback", v.reasons
    assert "latency_p99_ms" in v.summary["failed"] and "latency_p50_ms" not in v.summary["failed"]
    ok = (b["status"] == "ok").to_numpy() & (c["status"] == "ok").to_numpy()
    lb, lc = b["latency_ms"].to_numpy()[ok], c["latency_ms"].to_numpy()[ok]
    for q, name in ((0.95, "latency_p95_ms"), (0.99, "latency_p99_ms")):
        cut = np.quantile(lb, q)
        above_b, above_c = lb > cut, lc > 1.2 * cut
        worse, better = int((above_c & ~above_b).sum()), int((above_b & ~above_c).sum())
        chi2 = (worse - better) ** 2 / (worse + better)  # McNemar, no continuity correction
        row = rows(v, name)
        assert row["test"] == "tail share z (paired)"
        np.testing.assert_allclose(row["statistic"] ** 2, chi2, rtol=1e-9)
        p = stats.chi2.sf(chi2, 1) / 2
        np.testing.assert_allclose(row["p_value"], p if worse > better else 1 - p, rtol=1e-9)
    assert rows(v, "latency_p99_ms")["reason"].startswith("p99 latency")


# ---------------------------------------------------------------- shadow pairs


@pytest.fixture(scope="module")
def shadow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """Baseline "p1" serves 2,000 requests; candidate "p2" shadows 1,600 of them (same
    request id, ``context.canary_shadow``), 30 % slower, with more errors and other predictions
    on some requests. Labels are logged for the baseline's rows."""
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("shadow") / "store"
    b = side(rng, 2000, "p1").assign(request_id=[f"r{i}" for i in range(2000)])
    c = b.iloc[:1600].copy()
    c["version"], c["shadow"] = "p2", True
    c["latency_ms"] = np.round(c["latency_ms"].to_numpy() * 1.3 + rng.normal(0, 0.5, 1600), 3)
    c["status"] = np.where(rng.random(1600) < 0.03, "error", c["status"])
    flip = rng.random(1600) < 0.1
    c["prediction"] = np.where(flip, 1 - c["prediction"], c["prediction"])
    written = write(path, pd.concat([b, c], ignore_index=True))
    wb = written[written["version"] == "p1"]
    labels(path, wb[wb["status"] == "ok"])
    return path, wb.reset_index(drop=True), written[written["version"] == "p2"].reset_index(drop=True)


def test_shadow_pairs_use_paired_tests_equal_to_scipy(shadow: Any) -> None:
    path, b, c = shadow
    with Store(path) as s:
        v = compare_versions(s, "p1", "p2")
        unpaired = compare_versions(s, "p1", "p2", paired=False)
    assert v.summary["paired"] and v.summary["pairs"] == 1600
    assert not unpaired.summary["paired"]
    # p99 of 1,545 pairs rests on some 15 calls a side: too few to show ×1.3 against ×1.2
    assert v.decision == "rollback" and v.summary["failed"][:3] == ["latency_p50_ms", "latency_p95_ms", "error_rate"]
    pairs = b.iloc[:1600].reset_index(drop=True).join(c.add_suffix("_c"))
    ok = (pairs["status"] == "ok") & (pairs["status_c"] == "ok")
    lb, lc = pairs.loc[ok, "latency_ms"].to_numpy(), pairs.loc[ok, "latency_ms_c"].to_numpy()
    want = stats.wilcoxon(lc - 1.2 * lb, alternative="greater", method="asymptotic")
    row = rows(v, "latency_p50_ms")
    assert row["test"] == "Wilcoxon signed-rank (paired)"
    np.testing.assert_allclose([row["statistic"], row["p_value"]], [want.statistic, want.pvalue], rtol=1e-9)
    for q, name in ((0.5, "latency_p50_ms"), (0.95, "latency_p95_ms"), (0.99, "latency_p99_ms")):
        row = rows(v, name)
        np.testing.assert_allclose([row["baseline"], row["candidate"]], [np.quantile(lb, q), np.quantile(lc, q)])

    n = len(pairs)
    eb, ec = pairs["status"] == "error", pairs["status_c"] == "error"
    worse, better = int((ec & ~eb).sum()), int((eb & ~ec).sum())
    row = rows(v, "error_rate")
    assert row["test"] == "Tango score z (paired)"
    check_paired_score(row, worse, better, n, 0.01)

    both = pairs[pairs["status"] == "ok"]  # a label (logged for the baseline's successful calls), two predictions
    hit_b = both["label"] == (both["prediction"] >= 0.5)
    hit_c = both["label"] == (both["prediction_c"] >= 0.5)
    worse, better = int((hit_b & ~hit_c).sum()), int((hit_c & ~hit_b).sum())
    row = rows(v, "accuracy")
    assert row["n_candidate"] == len(both)
    np.testing.assert_allclose([row["baseline"], row["candidate"]], [hit_b.mean(), hit_c.mean()])
    # accuracy may drop by 0.01: the share wrong may rise by 0.01
    check_paired_score(row, worse, better, len(both), 0.01)
    with Store(path) as s:
        plain = compare_versions(s, "p1", "p2", metrics=["accuracy"], tolerances={"accuracy": 0.0})
    chi2 = (worse - better) ** 2 / (worse + better)  # at tolerance 0, McNemar's χ² (no continuity correction)
    row = rows(plain, "accuracy")
    np.testing.assert_allclose(row["statistic"] ** 2, chi2, rtol=1e-9)
    p = stats.chi2.sf(chi2, 1) / 2
    np.testing.assert_allclose(row["p_value"], p if worse > better else 1 - p, rtol=1e-9)
    agree = pairs.loc[ok, "prediction"] == pairs.loc[ok, "prediction_c"]
    np.testing.assert_allclose(v.summary["agreement"], agree.mean())
    assert any(r.startswith("Paired on 1,600 requests") for r in v.reasons)


def paired_restricted_z(worse: int, better: int, n: int, margin: float) -> float:
    """z of the paired score test of p_c − p_b = margin: the cell probabilities' maximum
    likelihood under H0 found numerically (the reference of the closed form)."""
    from scipy import optimize

    rest = n - worse - better

    def nll(q01: float) -> float:  # q10 = q01 + margin; the concordant cells share the rest
        eps = 1e-300
        return -(worse * np.log(max(q01 + margin, eps)) + better * np.log(max(q01, eps)) +
                 rest * np.log(max(1 - 2 * q01 - margin, eps)))  # fmt: skip

    lo, hi = max(0.0, -margin), (1 - margin) / 2
    q01 = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-14}).x
    var = n * (2 * q01 + margin - margin**2)
    return float((worse - better - n * margin) / np.sqrt(var))


def check_paired_score(row: dict[str, Any], worse: int, better: int, n: int, margin: float) -> None:
    z = paired_restricted_z(worse, better, n, margin)
    np.testing.assert_allclose([row["statistic"], row["p_value"]], [z, stats.norm.sf(z)], rtol=1e-5)


def test_the_paired_score_test_fails_at_the_tolerance_about_alpha_of_the_time() -> None:
    """Pairs whose share bad truly rises by exactly the tolerance (0.06 against 0.05 discordant
    one way and the other): the metric fails (p < alpha and the rise beyond the tolerance) in
    about alpha of the repetitions, as the unpaired test does; exact McNemar ("any
    difference") failed about half of them."""
    rng = np.random.default_rng(12)
    n, margin, alpha = 4000, 0.01, 0.05
    cells = rng.multinomial(n, [0.06, 0.05, 0.89], size=3000)
    failed = [
        cs.paired_proportions(int(w), int(b), n, margin=margin).p_value < alpha and (w - b) / n > margin
        for w, b, _ in cells
    ]
    assert 0.035 < np.mean(failed) < 0.065, np.mean(failed)
    # at margin 0, McNemar's z: z² = (w − b)² / (w + b)
    t = cs.paired_proportions(70, 40, 1000)
    np.testing.assert_allclose(
        [t.statistic**2, t.p_value], [30**2 / 110, stats.chi2.sf(30**2 / 110, 1) / 2], rtol=1e-12
    )
    assert cs.paired_proportions(0, 0, 1000).p_value == 1.0


# ---------------------------------------------------------------- regression, no labels, results


def test_regression_mae_equals_welch_on_absolute_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frames = []
    for version, noise in (("r1", 1.0), ("r2", 1.3)):
        y = rng.normal(50, 10, 1200)
        frames.append(pd.DataFrame({"version": version, "latency_ms": rng.lognormal(2, 0.2, 1200),
                                    "prediction": y + rng.normal(0, noise, 1200), "label": y}))  # fmt: skip
    written = write(tmp_path / "store", pd.concat(frames, ignore_index=True))
    labels(tmp_path / "store", written)
    with Store(tmp_path / "store") as s:
        v = compare_versions(s, "r1", "r2")
    row = rows(v, "mae")
    ab, ac = (np.abs(f["prediction"] - f["label"]).to_numpy() for f in frames)
    np.testing.assert_allclose([row["baseline"], row["candidate"]], [ab.mean(), ac.mean()], rtol=1e-12)
    t = stats.ttest_ind(ac / 1.05, ab, equal_var=False, alternative="greater")
    np.testing.assert_allclose([row["statistic"], row["p_value"]], [t.statistic, t.pvalue], rtol=1e-9)
    assert v.decision == "rollback" and v.summary["failed"] == ["mae"]


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("unlabeled") / "store"
    write(path, pd.concat([side(rng, 800, "a"), side(rng, 800, "b")], ignore_index=True))
    return path


def test_without_labels_accuracy_is_not_checked(unlabeled: Path) -> None:
    with Store(unlabeled) as s:
        v = compare_versions(s, "a", "b")
        named = compare_versions(s, "a", "b", metrics=["latency_p95_ms", "accuracy"])
    assert v.decision == "promote"
    assert rows(v, "accuracy")["status"] == "no-data"
    assert "accuracy not checked: no labels for either version; log labels with predlog.log_label" in " ".join(
        v.reasons
    )
    assert named.decision == "hold" and list(named.df["metric"]) == ["latency_p95_ms", "accuracy"]
    assert "named in metrics=" in named.reasons[0]


def test_results_are_json_html_and_a_plot(planted: Any) -> None:
    path, _ = planted
    with Store(path) as s:
        v = compare_versions(s, "base", "slow", last=None)
    assert json.loads(json.dumps(v.to_dict()))["decision"] == "rollback"
    page = v._repr_html_()
    assert "ROLLBACK" in page and "#cf222e" in page and "latency_p95_ms" in page
    fig = v.plot()
    assert len([ax for ax in fig.axes if ax.get_visible()]) == len(v.df)


# ---------------------------------------------------------------- bad input


def test_bad_input_says_what_to_do(planted: Any) -> None:
    path, _ = planted
    with Store(path) as s:
        with pytest.raises(UnknownVersionError, match="base.*same.*slow"):
            compare_versions(s, "base", "9.9")
        with pytest.raises(ValueError, match="both 'base'"):
            compare_versions(s, "base", "base")
        with pytest.raises(
            ValueError,
            match="unknown metric 'acuracy' \\(did you mean 'accuracy'\\?\\); the metrics are latency_p50_ms",
        ):
            compare_versions(s, "base", "same", metrics=["acuracy"])
        with pytest.raises(ValueError, match="negative difference: e.g. -0.01"):
            compare_versions(s, "base", "same", tolerances={"accuracy": 0.01})
        with pytest.raises(ValueError, match="at least 1"):
            compare_versions(s, "base", "same", tolerances={"latency_p95_ms": 0.8})
        with pytest.raises(TypeError, match="no version="):
            compare_versions(s, "base", "same", version="x")
        with pytest.raises(ValueError, match="paired=True, but no candidate row"):
            compare_versions(s, "base", "same", paired=True)


def test_sampled_rows_weigh_one_over_their_rate(tmp_path: Path) -> None:
    """Successful calls kept at rate 0.5 and every error at rate 1: the error rate and the
    mean confidence are those of the calls (weights 1 / sample_rate), as performance() has them."""
    rng = np.random.default_rng(9)
    frames = [side(rng, 1500, v, errors=0.05) for v in ("w1", "w2")]
    for f in frames:
        f["sample_rate"] = np.where(f["status"] == "ok", 0.5, 1.0)
    write(tmp_path / "store", pd.concat(frames, ignore_index=True))
    with Store(tmp_path / "store") as s:
        v = compare_versions(s, "w1", "w2")
    for f, which in zip(frames, ("baseline", "candidate"), strict=True):
        w = 1 / f["sample_rate"]
        np.testing.assert_allclose(rows(v, "error_rate")[which], w[f["status"] == "error"].sum() / w.sum(), rtol=1e-12)
        np.testing.assert_allclose(
            rows(v, "confidence_mean")[which], np.average(f["confidence"], weights=w), rtol=1e-12
        )
    assert v.decision == "promote", v.reasons


def test_class_predictions_use_chi_squared_and_named_metrics_come_from_performance(tmp_path: Path) -> None:
    from predlog.analysis import performance

    rng = np.random.default_rng(4)
    frames = []
    for version, p in (("c1", [0.5, 0.3, 0.2]), ("c2", [0.4, 0.35, 0.25])):
        pred = rng.choice(["cat", "dog", "owl"], 900, p=p)
        frames.append(pd.DataFrame({"version": version, "latency_ms": rng.lognormal(2, 0.2, 900), "prediction": pred,
                                    "label": np.where(rng.random(900) < 0.8, pred, "cat")}))  # fmt: skip
    written = write(tmp_path / "store", pd.concat(frames, ignore_index=True))
    labels(tmp_path / "store", written)
    with Store(tmp_path / "store") as s:
        v = compare_versions(s, "c1", "c2", metrics=["prediction_distribution", "accuracy", "f1"])
        f1 = [performance(s, version=x, metrics=["f1"]).overall["f1"].iloc[0] for x in ("c1", "c2")]
    counts = [f["prediction"].value_counts().reindex(["cat", "dog", "owl"]).to_numpy() for f in frames]
    chi2 = stats.chi2_contingency(counts)
    row = rows(v, "prediction_distribution")
    assert row["test"] == "chi-squared"
    np.testing.assert_allclose([row["statistic"], row["p_value"]], [chi2.statistic, chi2.pvalue], rtol=1e-9)
    shares = [c / c.sum() for c in counts]
    np.testing.assert_allclose(row["effect"], 0.5 * np.abs(shares[1] - shares[0]).sum(), rtol=1e-12)
    row = rows(v, "f1")
    np.testing.assert_allclose([row["baseline"], row["candidate"]], f1, rtol=1e-12)
    assert row["reason"].endswith(".") and "no significance test" in row["reason"]
    assert not row["critical"]


def test_weighted_ks_in_the_engine_is_the_ks_of_rows_repeated_by_weight(tmp_path: Path) -> None:
    """Over 10,000 rows a side the predictions' KS runs in the engine; with mixed sample
    rates its ECDFs weigh rows by 1 / sample_rate (rows kept at 0.5 count twice) and its
    p-value uses Kish's effective sizes."""
    from predlog.analysis._stats import ks_pvalue

    rng = np.random.default_rng(8)
    frames = [side(rng, 11_000, "k1"), side(rng, 11_000, "k2")]
    frames[1]["prediction"] = frames[1]["prediction"] ** 1.1
    for f in frames:
        f["sample_rate"] = np.where(rng.random(len(f)) < 0.5, 0.5, 1.0)
    write(tmp_path / "store", pd.concat(frames, ignore_index=True))
    with Store(tmp_path / "store") as s:
        v = compare_versions(s, "k1", "k2", metrics=["prediction_distribution"])
    repeated = [np.repeat(f["prediction"].to_numpy(), (1 / f["sample_rate"]).astype(int)) for f in frames]
    d = stats.ks_2samp(*repeated).statistic
    kish = [(1 / f["sample_rate"]).sum() ** 2 / ((1 / f["sample_rate"]) ** 2).sum() for f in frames]
    row = rows(v, "prediction_distribution")
    np.testing.assert_allclose([row["statistic"], row["p_value"]], [d, ks_pvalue(d, *kish)], rtol=1e-9)
