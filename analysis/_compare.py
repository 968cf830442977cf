"""Should the candidate version replace the baseline: one verdict from latency, errors,
predictions and labels.

:func:`compare_versions` reads the rows of two versions of one model through the reading
side's query core (``Store.relation`` and, for labels, ``Store.labeled_relation`` by way of
:mod:`._labeled`), aggregates them in DuckDB (:mod:`._compare_stats`) and decides
``"promote"``, ``"hold"`` or ``"rollback"``. docs/versions.md says what each number equals.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from predlog.replay._shapes import ident, lit

from . import _compare_stats as cs
from ._performance import CLASSIFICATION_METRICS, REGRESSION_METRICS, _check_filters
from ._sides import WEIGHT, StoreSide, resolve_model
from ._stats import query
from ._verdict import METRICS, Metric, Verdict, check_tolerance

if TYPE_CHECKING:
    import duckdb

    from predlog.replay import Store

    from ._labeled import Labeled

__all__ = ["METRICS", "PAIRED_SHARE", "Metric", "compare_versions"]

PAIRED_SHARE = 0.5
"""``paired="auto"`` pairs when more than this share of the candidate's rows have a partner."""


_LATENCY = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}
_EXTRA = [m for m in (*CLASSIFICATION_METRICS, *REGRESSION_METRICS) if m not in ("accuracy", "mae")]
_OK_LATENCY = '"status" = \'ok\' AND isfinite("latency_ms")'
_CONFIDENCE = 'isfinite("confidence")'
_COLUMNS = ["model_version", "status", "latency_ms", "confidence", "sample_rate", "request_id", "batch_index"]


@dataclasses.dataclass
class _Row:
    """The numbers of one metric before it is judged."""

    metric: Metric
    baseline: float = math.nan
    candidate: float = math.nan
    n_baseline: int = 0
    n_candidate: int = 0
    test: cs.Test | None = None
    missing: str = ""  # why there is no comparison ("no labels", "no latency logged")
    effect: float | None = None  # when not derived from the values (a distribution's distance)
    paired: bool = False


# ---------------------------------------------------------------- entry point


def compare_versions(
    s: Store,
    baseline: str,
    candidate: str,
    *,
    model: str | None = None,
    metrics: Sequence[str] | None = None,
    tolerances: Mapping[str, float] | None = None,
    min_rows: int = 500,
    alpha: float = 0.05,
    paired: bool | str = "auto",
    **filters: Any,
) -> Verdict:
    """Compare two versions of a model and decide: ``"promote"``, ``"hold"`` or ``"rollback"``.

    ::

        v = compare_versions(s, baseline="1.4.0", candidate="1.5.0", last="1d")
        v.decision      # "rollback"
        v.reasons[0]    # "p95 latency 31.2 ms vs 24.0 ms (×1.30, tolerance ×1.20, p < 0.001): worse beyond tolerance."
        v.df            # one row per metric

    A metric *fails* when the candidate is significantly worse (one-sided p < ``alpha``) and
    its effect is beyond the tolerance. The decision: ``"rollback"`` when a critical metric
    fails; else ``"hold"`` when a version has fewer than ``min_rows`` rows or a metric named
    in ``metrics=`` could not be checked (no labels, say); else ``"promote"``.

    Args:
        s: The store.
        baseline, candidate: The two ``model_version`` values.
        model: The model; may be omitted when the store holds one.
        metrics: The metrics to compare, by name (see :data:`METRICS`; ``"f1"``,
            ``"roc_auc"`` and the other metrics of ``performance`` too). Default: the three
            latency quantiles, ``error_rate``, ``prediction_distribution``,
            ``confidence_mean`` where confidences are logged, and ``accuracy``
            (classification) or ``mae`` (regression). A metric named here must be checked,
            or the verdict holds.
        tolerances: Per metric, instead of the defaults of :data:`METRICS`: a factor for a
            ratio (``{"latency_p95_ms": 1.5}``), a signed difference for a rate or score
            (``{"accuracy": -0.02, "error_rate": 0.005}``), a distance for
            ``prediction_distribution``.
        min_rows: Fewer rows than this in a version, or of a metric's values on a side:
            not enough to decide.
        alpha: Significance level of the one-sided tests.
        paired: ``"auto"`` pairs the versions' rows by ``request_id`` (shadow traffic) when
            more than half of the candidate's rows have a partner; True always pairs, False
            never.
        **filters: ``Store.predictions`` filters but ``version`` (``start``, ``end``,
            ``last``, ``where``, ``user_id``, ``include_live``...).

    Raises:
        UnknownVersionError: a version the model does not have (the message lists them).
        ValueError: equal versions, an unknown metric or tolerance, a bad argument.
    """
    checked = _arguments(s, baseline, candidate, metrics, tolerances, min_rows, alpha, paired, filters)
    name = resolve_model(s, model, filters)
    both = {**filters, "version": [baseline, candidate]}
    cand = f'("model_version" = {lit(candidate)})'
    # An unknown version raises UnknownVersionError here, listing the versions present.
    rel = s.relation(name, columns=[*_COLUMNS, "prediction"], ordered=False, **both)

    tolerance = {**{m: METRICS[m].tolerance for m in METRICS}, **{k: float(v) for k, v in (tolerances or {}).items()}}
    sides = _sides(rel, cand)
    pairs, n_pairs, use_pairs = _pairing(rel, cand, sides, paired)

    def asked(*names: str) -> bool:
        return not checked or any(n in checked for n in names)

    rows: list[_Row] = []
    if asked(*_LATENCY):
        if use_pairs:
            rows += _paired_latency(pairs, tolerance, min_rows, alpha)
        else:
            rows += _latency(rel, cand, sides, tolerance, min_rows, alpha)
    if asked("error_rate"):
        rows.append(_paired_errors(pairs, tolerance, min_rows) if use_pairs else _errors(sides, tolerance, min_rows))
    if asked("prediction_distribution"):
        rows.append(_distribution(s, name, filters, (baseline, candidate), rel, cand, sides, min_rows, alpha))
    if "confidence_mean" in checked or (not checked and (sides[0]["conf"].n or sides[1]["conf"].n)):
        rows.append(_confidence(sides, tolerance, min_rows))
    if asked("accuracy", "mae"):
        rows.append(_labels(s, name, both, cand, checked, use_pairs, tolerance, min_rows))
    rows += _extra(s, name, filters, baseline, candidate, [m for m in checked if m in _EXTRA])
    if checked:
        rows = [r for r in rows if r.metric.name in checked]
    order = {m: i for i, m in enumerate(METRICS)}
    rows.sort(key=lambda r: order[r.metric.name])
    agreement = _agreement(pairs) if use_pairs else None
    return _verdict(
        rows,
        tolerance=tolerance,
        alpha=alpha,
        min_rows=min_rows,
        named=set(checked),
        sides=sides,
        model=name,
        baseline=baseline,
        candidate=candidate,
        paired=use_pairs,
        pairs=n_pairs if use_pairs else 0,
        agreement=agreement,
        filters=filters,
    )


# ---------------------------------------------------------------- arguments


def _arguments(
    s: Any,
    baseline: Any,
    candidate: Any,
    metrics: Sequence[str] | None,
    tolerances: Mapping[str, float] | None,
    min_rows: Any,
    alpha: Any,
    paired: Any,
    filters: Mapping[str, Any],
) -> list[str]:
    """Check the arguments; return the metrics named (empty: the defaults)."""
    from predlog.replay import Store

    if not isinstance(s, Store):
        raise TypeError(f"the first argument must be a predlog.replay.Store, got {type(s).__name__}")
    if "version" in filters:
        raise TypeError("compare_versions() takes no version=: baseline= and candidate= are the two versions")
    _check_filters(filters, "compare_versions")
    for what, v in (("baseline", baseline), ("candidate", candidate)):
        if not isinstance(v, str) or not v:
            raise TypeError(f"{what}= is a model_version (text), got {v!r}")
    if baseline == candidate:
        raise ValueError(f"baseline and candidate are both {baseline!r}: name two different versions")
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise ValueError(f"min_rows must be a positive integer, got {min_rows!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number between 0 and 1, got {alpha!r}")
    if paired not in ("auto", True, False):
        raise ValueError(f"paired must be 'auto', True or False, got {paired!r}")
    named = [] if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
    for m in [*named, *(tolerances or {})]:
        if m not in METRICS:
            close = difflib.get_close_matches(str(m), list(METRICS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown metric {m!r}{hint}; the metrics are {', '.join(METRICS)}")
    if metrics is not None and not named:
        raise ValueError(f"metrics= names no metric; name some of {', '.join(METRICS)}, or leave it out")
    if "accuracy" in named and "mae" in named:
        raise ValueError("metrics= names accuracy and mae: a model is a classifier or a regression, not both")
    for m, tol in (tolerances or {}).items():
        check_tolerance(METRICS[m], tol, f"tolerances[{m!r}]")
    return list(dict.fromkeys(named))


# ---------------------------------------------------------------- the two sides


def _sides(rel: duckdb.DuckDBPyRelation, cand: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per version (baseline first): rows, weights, errors, latency quantiles and the
    confidences' moments. One pass; a second for the weighted sums when a version's rows
    were kept at different sample rates."""
    rate = "coalesce(sample_rate, 1.0)"
    conf = f"FILTER ({_CONFIDENCE})"
    aggs = [
        "count(*)",
        "count(*) FILTER (\"status\" = 'error')",
        f"min({rate})",
        f"max({rate})",
        f"count(*) FILTER ({_OK_LATENCY})",
        f'quantile_cont("latency_ms", [0.5, 0.95, 0.99]) FILTER ({_OK_LATENCY})',
        f'count(*) {conf}, avg("confidence") {conf}, var_samp("confidence") {conf}',
        "count(request_id)",
    ]
    got = {bool(r[0]): r[1:] for r in query(rel, f"SELECT {cand}, {', '.join(aggs)} FROM r GROUP BY 1").fetchall()}
    out = []
    for side in (False, True):
        r = got.get(side)
        if r is None:
            r = (0, 0, 1.0, 1.0, 0, None, 0, None, None, 0)
        w = 1.0 / float(r[2])
        out.append(
            {
                "n": int(r[0]),
                "sw": int(r[0]) * w,
                "sw2": int(r[0]) * w * w,
                "err": int(r[1]),
                "sw_err": int(r[1]) * w,
                "same": r[2] == r[3],
                "lat_n": int(r[4]),
                "q": [math.nan] * 3 if r[5] is None else [float(x) for x in r[5]],
                "conf": cs.moments((r[6], None, None, None, None, r[7], r[8], 1.0, 1.0)),
                "requests": int(r[9]),
            }
        )
    if not (out[0]["same"] and out[1]["same"]):
        _weighted(rel, cand, out)
    return out[0], out[1]


def _weighted(rel: duckdb.DuckDBPyRelation, cand: str, out: list[dict[str, Any]]) -> None:
    """The weighted sums of versions whose rows weigh differently (1 / sample_rate), into ``out``."""
    w = WEIGHT
    aggs = [
        f"sum({w})",
        f"sum({w} * {w})",
        f"coalesce(sum({w}) FILTER (\"status\" = 'error'), 0)",
        *cs.moments_sql('"confidence"', w, _CONFIDENCE),
    ]
    got = {bool(r[0]): r[1:] for r in query(rel, f"SELECT {cand}, {', '.join(aggs)} FROM r GROUP BY 1").fetchall()}
    for side, found in zip((False, True), out, strict=True):
        r = got.get(side)
        if r is None or found["same"]:
            continue
        found.update(sw=float(r[0]), sw2=float(r[1]), sw_err=float(r[2]), conf=cs.moments(tuple(r[3:])))


def _count(rel: duckdb.DuckDBPyRelation) -> int:
    return int(rel.aggregate("count(*)").fetchall()[0][0])


def _pairs_sql(cand: str, columns: Sequence[str]) -> str:
    """The pairs: a baseline row and a candidate row with the same request (and batch index).

    Requests that occur more than once in a version (retries) are left out: their pairing
    would be a guess.
    """
    cols = ", ".join(ident(c) for c in columns)
    picked = ", ".join(f"b.{ident(c)} AS {ident('b_' + c)}, c.{ident(c)} AS {ident('c_' + c)}" for c in columns)
    return (
        f"WITH s AS (SELECT {cand} AS _g, request_id, batch_index, {cols} FROM r WHERE request_id IS NOT NULL "
        f"QUALIFY count(*) OVER (PARTITION BY {cand}, request_id, batch_index) = 1) "
        f"SELECT {picked} FROM s AS b JOIN s AS c ON b.request_id = c.request_id "
        "AND b.batch_index IS NOT DISTINCT FROM c.batch_index AND NOT b._g AND c._g"
    )


def _pairing(
    rel: duckdb.DuckDBPyRelation, cand: str, sides: tuple[dict[str, Any], dict[str, Any]], paired: bool | str
) -> tuple[duckdb.DuckDBPyRelation, int, bool]:
    """The pairs relation, how many pairs it has, and whether to use it (``paired="auto"``:
    when more than :data:`PAIRED_SHARE` of the candidate's rows have a partner)."""
    pairs = query(rel, _pairs_sql(cand, ["status", "latency_ms", "prediction"]))
    if paired is False or (paired == "auto" and sides[1]["requests"] <= PAIRED_SHARE * sides[1]["n"]):
        return pairs, 0, False  # too few of the candidate's rows have a request id: no join
    n = _count(pairs)
    if paired is True and n == 0:
        raise ValueError(
            "paired=True, but no candidate row shares a request_id with a baseline row: pairs are the shadow "
            "calls of one request by both versions; use paired='auto' or False"
        )
    return pairs, n, n > 0 and (paired is True or n > PAIRED_SHARE * sides[1]["n"])


def _agreement(pairs: duckdb.DuckDBPyRelation) -> float:
    """The share of pairs, both calls ok, whose predictions are equal."""
    ok = "b_status = 'ok' AND c_status = 'ok'"
    got = query(pairs, f"SELECT avg(CAST(b_prediction IS NOT DISTINCT FROM c_prediction AS DOUBLE)) FROM r WHERE {ok}")
    value = got.fetchall()[0][0]
    return math.nan if value is None else float(value)


# ---------------------------------------------------------------- unlabeled metrics


def _scaled(x: str, cand: str, tol: float) -> str:
    """SQL: ``x``, divided by ``tol`` on the candidate's rows (the tolerance-shifted null)."""
    return x if tol == 1 else f"CASE WHEN {cand} THEN {x} / {_double(tol)} ELSE {x} END"


def _double(x: float) -> str:
    return f"CAST({float(x)!r} AS DOUBLE)"


def _latency(
    rel: duckdb.DuckDBPyRelation,
    cand: str,
    sides: Any,
    tolerance: Mapping[str, float],
    min_rows: int,
    alpha: float,
) -> list[_Row]:
    """Latency quantiles of the successful calls. p50: Mann–Whitney U of the candidate's
    latencies divided by the tolerance against the baseline's. p95, p99: the share of the
    candidate's calls above ``tolerance × the baseline's quantile`` against the baseline's
    share above its quantile (two-proportion z), so that a regression of the tail alone shows."""
    b, c = sides
    rows = [_Row(METRICS[name], b["q"][i], c["q"][i], b["lat_n"], c["lat_n"]) for i, name in enumerate(_LATENCY)]
    if min(b["lat_n"], c["lat_n"]) < min_rows:
        for r in rows:
            r.missing = _few("successful calls with a latency", b["lat_n"], c["lat_n"], min_rows)
        return rows
    p50 = rows[0]
    exact = b["lat_n"] + c["lat_n"] <= cs.EXACT_VALUES
    scaled = _scaled('"latency_ms"', cand, tolerance[p50.metric.name])
    p50.test = cs.mann_whitney(rel, scaled, cand, _OK_LATENCY, exact=exact, alpha=alpha)
    tails = rows[1:]
    above = []
    for r in tails:
        cut = r.baseline  # the baseline's quantile
        limit = f"CASE WHEN {cand} THEN {_double(tolerance[r.metric.name] * cut)} ELSE {_double(cut)} END"
        above.append(f'count(*) FILTER ({_OK_LATENCY} AND "latency_ms" > {limit})')
    got = {bool(x[0]): x[1:] for x in query(rel, f"SELECT {cand}, {', '.join(above)} FROM r GROUP BY 1").fetchall()}
    for i, r in enumerate(tails):
        kb, kc = int(got[False][i]), int(got[True][i])
        test = cs.two_proportions(kb, b["lat_n"], kc, c["lat_n"], higher_is_worse=True)
        r.test = dataclasses.replace(test, name="tail share z")
    return rows


def _paired_latency(
    pairs: duckdb.DuckDBPyRelation, tolerance: Mapping[str, float], min_rows: int, alpha: float
) -> list[_Row]:
    """Latency quantiles over the pairs of successful calls. p50: Wilcoxon signed-rank test
    of ``candidate − tolerance · baseline``. p95, p99: of the pairs, the candidate's share above
    ``tolerance × the baseline's quantile`` against the baseline's share above its quantile,
    McNemar's z on the pairs where exactly one of the two is above."""
    ok = "b_status = 'ok' AND c_status = 'ok' AND isfinite(b_latency_ms) AND isfinite(c_latency_ms)"
    q = "[0.5, 0.95, 0.99]"
    n, qb, qc = query(
        pairs,
        f"SELECT count(*), quantile_cont(b_latency_ms, {q}), quantile_cont(c_latency_ms, {q}) FROM r WHERE {ok}",
    ).fetchall()[0]
    n = int(n)
    qb = [math.nan] * 3 if qb is None else [float(x) for x in qb]
    qc = [math.nan] * 3 if qc is None else [float(x) for x in qc]
    rows = [_Row(METRICS[name], qb[i], qc[i], n, n, paired=True) for i, name in enumerate(_LATENCY)]
    if n < min_rows:
        for r in rows:
            r.missing = _few("pairs of successful calls", n, n, min_rows)
        return rows
    p50 = rows[0]
    diff = f"(c_latency_ms - {_double(tolerance[p50.metric.name])} * b_latency_ms)"
    p50.test = cs.wilcoxon(pairs, diff, ok, exact=n <= cs.EXACT_VALUES, alpha=alpha)
    tails = rows[1:]
    counts = []
    for r in tails:
        b_above = f"b_latency_ms > {_double(r.baseline)}"
        c_above = f"c_latency_ms > {_double(tolerance[r.metric.name] * r.baseline)}"
        counts += [
            f"count(*) FILTER ({c_above} AND NOT {b_above})",
            f"count(*) FILTER ({b_above} AND NOT {c_above})",
        ]
    got = query(pairs, f"SELECT {', '.join(counts)} FROM r WHERE {ok}").fetchall()[0]
    for i, r in enumerate(tails):
        test = cs.paired_proportions(int(got[2 * i]), int(got[2 * i + 1]), n)
        r.test = dataclasses.replace(test, name="tail share z")
    return rows


def _errors(sides: Any, tolerance: Mapping[str, float], min_rows: int) -> _Row:
    """The error rate of the calls (rows weigh 1 / sample_rate); the two-proportion test
    of a rise by more than the tolerance."""
    tol = tolerance["error_rate"]
    b, c = sides
    row = _Row(METRICS["error_rate"], n_baseline=b["n"], n_candidate=c["n"])
    if not b["n"] or not c["n"]:
        row.missing = "no rows"
        return row
    row.baseline, row.candidate = b["sw_err"] / b["sw"], c["sw_err"] / c["sw"]
    if min(b["n"], c["n"]) < min_rows:
        row.missing = _few("predictions", b["n"], c["n"], min_rows)
        return row
    if b["same"] and c["same"]:  # one weight a side: the counts themselves
        row.test = cs.two_proportions(b["err"], b["n"], c["err"], c["n"], margin=tol, higher_is_worse=True)
    else:
        nb, nc = b["sw"] ** 2 / b["sw2"], c["sw"] ** 2 / c["sw2"]
        row.test = cs.two_proportions(row.baseline * nb, nb, row.candidate * nc, nc, margin=tol, higher_is_worse=True)
    return row


def _paired_errors(pairs: duckdb.DuckDBPyRelation, tolerance: Mapping[str, float], min_rows: int) -> _Row:
    """The error rates of the pairs; the paired score test of a rise by more than the tolerance."""
    b_err, c_err = "b_status = 'error'", "c_status = 'error'"
    n, nb, nc, worse, better = query(
        pairs,
        f"SELECT count(*), count(*) FILTER ({b_err}), count(*) FILTER ({c_err}), "
        f"count(*) FILTER ({c_err} AND NOT {b_err}), count(*) FILTER ({b_err} AND NOT {c_err}) FROM r",
    ).fetchall()[0]
    row = _Row(METRICS["error_rate"], n_baseline=int(n), n_candidate=int(n), paired=True)
    if n:
        row.baseline, row.candidate = int(nb) / int(n), int(nc) / int(n)
        row.test = cs.paired_proportions(int(worse), int(better), int(n), margin=tolerance["error_rate"])
    if n < min_rows:
        row.missing, row.test = _few("pairs", int(n), int(n), min_rows), None
    return row


def _confidence(sides: Any, tolerance: Mapping[str, float], min_rows: int) -> _Row:
    """Mean confidence; Welch's t test of a drop by more than the tolerance."""
    b, c = sides[0]["conf"], sides[1]["conf"]
    row = _Row(METRICS["confidence_mean"], b.mean, c.mean, b.n, c.n)
    if not b.n or not c.n:
        row.missing = "no confidence logged" + ("" if b.n or c.n else " by either version")
        return row
    if min(b.n, c.n) < min_rows:
        row.missing = _few("confidences", b.n, c.n, min_rows)
        return row
    shifted = dataclasses.replace(c, mean=c.mean - tolerance["confidence_mean"])
    row.test = cs.welch_moments(b, shifted, higher_is_worse=False)
    return row


def _distribution(
    s: Store,
    name: str,
    filters: Mapping[str, Any],
    versions: tuple[str, str],
    rel: duckdb.DuckDBPyRelation,
    cand: str,
    sides: Any,
    min_rows: int,
    alpha: float,
) -> _Row:
    """KS for number predictions, chi-squared for classes: as :func:`prediction_drift`.

    A number prediction with more than 10,000 rows on a side (where scipy's KS p-value is
    asymptotic) is tested in the engine on ``rel``; anything else through the drift layer's
    summaries of each version."""
    from . import _stats
    from ._summary import kind_of

    row = _Row(METRICS["prediction_distribution"])
    dtype = dict(zip(rel.columns, rel.types, strict=True))["prediction"]
    if kind_of(dtype)[0] == "number" and max(sides[0]["n"], sides[1]["n"]) > _stats.MAX_AUTO_N:
        weight = None if sides[0]["same"] and sides[1]["same"] else WEIGHT
        p = '"prediction"'
        present = f"{p} IS NOT NULL AND isfinite(CAST({p} AS DOUBLE))"
        exact = sides[0]["n"] + sides[1]["n"] <= cs.EXACT_VALUES
        value = f"CAST({p} AS DOUBLE)"
        test, row.n_baseline, row.n_candidate = cs.ks(
            rel, value, cand, present, weight=weight, exact=exact, alpha=alpha
        )
        if min(row.n_baseline, row.n_candidate) < min_rows:
            row.missing = _few("predictions", row.n_baseline, row.n_candidate, min_rows)
            return row
        row.test, row.effect = test, test.statistic
        return row
    baseline, candidate = versions
    ref = StoreSide(s, name, {**filters, "version": baseline})
    cur = StoreSide(s, name, {**filters, "version": candidate})
    rf, cf = ref.fields(), cur.fields()
    path = next((p for p in ("prediction", "prediction.class") if rf.get(p) and rf[p].kind), None)
    path = path or next((p for p, f in rf.items() if p.startswith("prediction.") and f.kind), None)
    if path is None or path not in cf or cf[path].kind != rf[path].kind:
        row.missing = "the predictions are of no kind compared (a number or a class) on both versions"
        return row
    field = rf[path]
    a, b = ref.summarize([field]).get(path), cur.summarize([cf[path]]).get(path)
    if a is None or b is None:
        row.missing = "no predictions"
        return row
    row.n_baseline, row.n_candidate = a.n, b.n
    if min(a.n, b.n) < min_rows:
        row.missing = _few("predictions", a.n, b.n, min_rows)
        return row
    if field.kind == "category":
        t = _stats.compare_categories(a, b)  # type: ignore[arg-type]
        row.effect = float(0.5 * abs(t.cur_shares - t.ref_shares).sum())
        row.test = cs.Test("chi-squared", t.chi2, t.chi2_p)
    else:
        n = _stats.compare_numbers(a, b)  # type: ignore[arg-type]
        row.effect = n.ks
        row.test = cs.Test("Kolmogorov–Smirnov", n.ks, n.ks_p, n.error_bound)
    return row


# ---------------------------------------------------------------- labeled metrics


def _labels(
    s: Store,
    name: str,
    both: Mapping[str, Any],
    cand: str,
    named: list[str],
    use_pairs: bool,
    tolerance: Mapping[str, float],
    min_rows: int,
) -> _Row:
    """Accuracy (classification) or MAE (regression) of each version against its labels."""
    from ._labeled import labeled

    lab = labeled(s, model=name, filters=dict(both), what="compare_versions")
    task = "accuracy" if lab.task == "classification" else "mae"
    wrong = {"accuracy", "mae"} - {task}
    if wrong & set(named) and lab.labels:
        asked = next(iter(wrong & set(named)))
        raise ValueError(f"metric {asked!r} does not apply: the task is {lab.task} ({lab.plan.rule}); use {task!r}")
    if named and "accuracy" in named:
        task = "accuracy"
    elif named and "mae" in named:
        task = "mae"
    row = _Row(METRICS[task])
    if not lab.labels:
        row.missing = "no labels for either version"
        return row
    tol = tolerance[task]
    if use_pairs:
        row = _paired_labels(lab, cand, task, tol)
    elif task == "accuracy":
        row = _accuracy(lab, cand, tol)
    else:
        row = _mae(lab, cand, tol)
    if not row.missing and min(row.n_baseline, row.n_candidate) < min_rows:
        what = "labeled pairs" if use_pairs else "labeled predictions"
        row.missing = _few(what, row.n_baseline, row.n_candidate, min_rows)
        row.test = None
    return row


def _accuracy(lab: Labeled, cand: str, tol: float) -> _Row:
    """Accuracy with weights 1 / sample_rate as ``performance`` computes it; the
    two-proportion test of a drop by more than the tolerance."""
    rel = lab.relation(["model_version"])
    sc, hit = "_sc = 1", "_sc = 1 AND _yt = _yp"
    sql = (
        f"SELECT {cand}, count(*) FILTER ({sc}), sum(_wt) FILTER ({sc}), sum(_wt * _wt) FILTER ({sc}), "
        f"coalesce(sum(_wt) FILTER ({hit}), 0), count(*) FILTER ({hit}), min(_wt) FILTER ({sc}), "
        f"max(_wt) FILTER ({sc}) FROM r GROUP BY 1"
    )
    got = {bool(r[0]): r[1:] for r in query(rel, sql).fetchall()}
    row = _Row(METRICS["accuracy"])
    b, c = got.get(False), got.get(True)
    row.n_baseline, row.n_candidate = (int(b[0]) if b else 0), (int(c[0]) if c else 0)
    if not row.n_baseline or not row.n_candidate:
        row.missing = "no labels for " + ("either version" if not (row.n_baseline or row.n_candidate) else "a version")
        return row
    assert b is not None and c is not None
    row.baseline, row.candidate = float(b[3]) / float(b[1]), float(c[3]) / float(c[1])
    if b[5] == b[6] and c[5] == c[6]:
        row.test = cs.two_proportions(int(b[4]), int(b[0]), int(c[4]), int(c[0]), margin=tol, higher_is_worse=False)
    else:
        nb, nc = float(b[1]) ** 2 / float(b[2]), float(c[1]) ** 2 / float(c[2])
        row.test = cs.two_proportions(row.baseline * nb, nb, row.candidate * nc, nc, margin=tol, higher_is_worse=False)
    return row


def _mae(lab: Labeled, cand: str, tol: float) -> _Row:
    """MAE with weights 1 / sample_rate; Welch's t test of the candidate's absolute errors
    divided by the tolerance against the baseline's."""
    rel = lab.relation(["model_version"])
    aggs = cs.moments_sql("abs(_y - _p)", "_wt", "_sc = 1")
    got = {bool(r[0]): r[1:] for r in query(rel, f"SELECT {cand}, {', '.join(aggs)} FROM r GROUP BY 1").fetchall()}
    empty = (0, None, None, None, None, None, None, None, None)
    b, c = cs.moments(tuple(got.get(False, empty))), cs.moments(tuple(got.get(True, empty)))
    row = _Row(METRICS["mae"], b.mean, c.mean, b.n, c.n)
    if not b.n or not c.n:
        row.missing = "no labels for " + ("either version" if not (b.n or c.n) else "a version")
        return row
    scaled = dataclasses.replace(c, mean=c.mean / tol, var=c.var / (tol * tol))
    row.test = cs.welch_moments(b, scaled, higher_is_worse=True)
    return row


def _paired_labels(lab: Labeled, cand: str, task: str, tol: float) -> _Row:
    """On the pairs: a request's label (either row's) against both predictions. Accuracy: the
    paired score test (Tango) of a drop by more than the tolerance, from the pairs one version
    got right and the other wrong; MAE: the paired t
    test of ``|error of the candidate| / tolerance − |error of the baseline|``. Pairs are not
    weighted (each is one request)."""
    if task == "accuracy":
        rel = query(lab.relation(["model_version", "request_id", "batch_index"]), _pairs_sql(cand, ["_yt", "_yp"]))
        y = "coalesce(b__yt, c__yt)"
        ok = f"{y} IS NOT NULL AND b__yp IS NOT NULL AND c__yp IS NOT NULL"
        n, hb, hc, worse, better = query(
            rel,
            f"SELECT count(*), count(*) FILTER (b__yp = {y}), count(*) FILTER (c__yp = {y}), "
            f"count(*) FILTER (b__yp = {y} AND c__yp <> {y}), count(*) FILTER (c__yp = {y} AND b__yp <> {y}) "
            f"FROM r WHERE {ok}",
        ).fetchall()[0]
        row = _Row(METRICS["accuracy"], n_baseline=int(n), n_candidate=int(n), paired=True)
        if not n:
            row.missing = "no labeled pairs"
            return row
        row.baseline, row.candidate = int(hb) / int(n), int(hc) / int(n)
        # A drop of accuracy by more than -tol is a rise of the share wrong by more than it.
        row.test = cs.paired_proportions(int(worse), int(better), int(n), margin=-tol)
        return row
    rel = query(lab.relation(["model_version", "request_id", "batch_index"]), _pairs_sql(cand, ["_y", "_p"]))
    y = "coalesce(b__y, c__y)"
    eb, ec = f"abs({y} - b__p)", f"abs({y} - c__p)"
    ok = f"{y} IS NOT NULL AND b__p IS NOT NULL AND c__p IS NOT NULL"
    got = query(
        rel,
        f"SELECT avg({eb}), avg({ec}), {', '.join(cs.moments_sql(f'({ec} / {_double(tol)} - {eb})', '1', ok))} FROM r WHERE {ok}",
    )
    mb, mc, *rest = got.fetchall()[0]
    d = cs.moments(tuple(rest))
    row = _Row(METRICS["mae"], n_baseline=d.n, n_candidate=d.n, paired=True)
    if not d.n:
        row.missing = "no labeled pairs"
        return row
    row.baseline, row.candidate = float(mb), float(mc)
    row.test = cs.paired_t(d, higher_is_worse=True)
    return row


def _extra(
    s: Store, name: str, filters: Mapping[str, Any], baseline: str, candidate: str, names: list[str]
) -> list[_Row]:
    """Other metrics of :func:`performance`, by value only (each version's overall figure)."""
    if not names:
        return []
    from ._performance import performance

    values = []
    for version in (baseline, candidate):
        got = performance(s, model=name, window="1D", metrics=names, version=version, **filters)
        values.append((got.overall.iloc[0], int(got.overall["scored_rows"].iloc[0])))
    rows = []
    for m in names:
        (b, nb), (c, nc) = values
        row = _Row(METRICS[m], float(b[m]), float(c[m]), nb, nc)
        if math.isnan(row.baseline) or math.isnan(row.candidate):
            row.missing = f"{m} is undefined on a version (too few labels, or one class)"
        rows.append(row)
    return rows


def _few(what: str, nb: int, nc: int, min_rows: int) -> str:
    return f"{nb:,} and {nc:,} {what} (baseline, candidate), fewer than min_rows={min_rows:,}"


# ---------------------------------------------------------------- judging


def _effect(r: _Row) -> float:
    if r.effect is not None:
        return r.effect
    if r.metric.kind == "ratio":
        if r.baseline == 0:
            return 1.0 if r.candidate == 0 else math.inf
        return r.candidate / r.baseline
    return r.candidate - r.baseline


def _beyond(m: Metric, effect: float, tol: float) -> bool:
    if m.kind == "difference" and m.worse_when == "lower":
        return effect < tol
    return effect > tol


def _judge(r: _Row, tol: float, alpha: float) -> tuple[str, float]:
    """``(status, effect)`` of one metric: it fails when its test rejects the tolerance-shifted
    null at ``alpha`` and its effect is beyond the tolerance (untested metrics: the latter)."""
    if r.missing:
        return "no-data", math.nan
    effect = _effect(r)
    if math.isnan(effect):
        return "no-data", math.nan
    if not _beyond(r.metric, effect, tol):
        return "pass", effect
    if not r.metric.tested:
        return "fail", effect
    p = r.test.p_value if r.test is not None else math.nan
    return ("fail" if p < alpha else "pass"), effect


def _verdict(rows: list[_Row], **ctx: Any) -> Verdict:
    import pandas as pd

    from ._verdict import COLUMNS, reason

    records: list[dict[str, Any]] = []
    for r in rows:
        tol = float(ctx["tolerance"][r.metric.name])
        status, effect = _judge(r, tol, ctx["alpha"])
        test = r.test
        records.append(
            {
                "metric": r.metric.name,
                "baseline": r.baseline,
                "candidate": r.candidate,
                "effect": effect,
                "kind": r.metric.kind,
                "tolerance": tol,
                "test": "" if test is None else test.name + (" (paired)" if r.paired else ""),
                "statistic": math.nan if test is None else test.statistic,
                "p_value": math.nan if test is None else test.p_value,
                "p_bound": math.nan if test is None else test.p_bound,
                "worse_when": r.metric.worse_when,
                "critical": r.metric.critical,
                "status": status,
                "n_baseline": r.n_baseline,
                "n_candidate": r.n_candidate,
                "reason": "",
                "_missing": r.missing,
            }
        )
    for rec in records:
        rec["reason"] = reason(rec, METRICS[rec["metric"]], ctx["alpha"])
    df = pd.DataFrame(records)
    missing = df.pop("_missing") if len(df) else pd.Series(dtype=object)
    df = df[COLUMNS] if len(df) else pd.DataFrame(columns=COLUMNS)
    return Verdict.build(df, missing, **ctx)
