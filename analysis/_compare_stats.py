"""The two-sample tests of a version comparison, aggregated in DuckDB.

Every function here takes a relation of both versions' rows (or of their pairs) and SQL
expressions over it: the value, the group (the candidate's rows, a positive difference), the
rows that count. Only a few numbers per query come back; scipy turns them into p-values.

================================  ==============================================================
test                              equals (on the same rows)
================================  ==============================================================
:func:`mann_whitney`              ``scipy.stats.mannwhitneyu(cand, base, alternative="greater",
                                  method="asymptotic")`` (continuity correction, tie term)
:func:`wilcoxon`                  ``scipy.stats.wilcoxon(cand - base, alternative="greater",
                                  method="asymptotic")`` (zeros dropped, tie term)
:func:`ks`                        ``scipy.stats.ks_2samp(base, cand)`` with its asymptotic
                                  p-value (``method="auto"`` above 10,000 values a side)
:func:`two_proportions`           the Farrington–Manning score test of a difference
                                  ``margin``; at 0, ``scipy.stats.chi2_contingency(table,
                                  correction=False)`` (z² is χ², the one-sided p half its p)
:func:`welch_moments`             ``scipy.stats.ttest_ind(cand, base, equal_var=False)``
:func:`paired_t`                  ``scipy.stats.ttest_rel(cand, base)``
:func:`paired_proportions`        the Tango (1998) / Nam (1997) score test of a paired difference
                                  ``margin``; at 0, McNemar's test without continuity correction
                                  (z² is ``(w − b)² / (w + b)``, χ² with one degree of freedom)
================================  ==============================================================

Rank tests and KS need every value in order. Up to :data:`EXACT_VALUES` values the engine
groups the rows by their exact value (ties and all) and the statistic is exact. Above it,
values are grouped on a logarithmic grid of :data:`GRID_STEPS` bins per unit of ``ln x``
(a relative width of 1.5·10⁻⁵) and the result carries a bound: a rank sum is off by at
most half the pairs of the two groups that share a bin, a KS statistic by at most the
largest jump within a bin; p-values come with the largest change those bounds allow
(``p_bound``). Given ``alpha``, a binned test whose p-value is within ``p_bound`` of
``alpha`` (where the bound could change the decision) is computed again exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._stats import ks_pvalue, query

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "EXACT_VALUES",
    "GRID_STEPS",
    "Moments",
    "Test",
    "ks",
    "mann_whitney",
    "moments",
    "paired_proportions",
    "paired_t",
    "two_proportions",
    "welch_moments",
    "wilcoxon",
]

EXACT_VALUES = 100_000
"""Up to this many values (both groups together), rank tests and KS group rows by exact value."""

GRID_STEPS = 2**16
"""Bins per unit of ``ln |x|`` above :data:`EXACT_VALUES` values (a bin is 1.5·10⁻⁵ wide, relatively)."""

TINY = 1e-9
"""Values within ±TINY share the grid's middle bin (a nanosecond, for latencies in ms)."""


@dataclasses.dataclass(frozen=True)
class Test:
    """A test's statistic and one-sided p-value, with how far either may be from the exact one."""

    name: str
    statistic: float
    p_value: float
    bound: float = 0.0  # |statistic - exact statistic| <= bound
    p_bound: float = 0.0  # |p_value - exact p_value| <= p_bound


def grid(x: str) -> str:
    """SQL: the bin of ``x`` on a logarithmic grid symmetric about 0 (order-preserving)."""
    steps = f"{GRID_STEPS}.0"
    return (
        f"CASE WHEN {x} > {TINY} THEN floor(ln({x} / {TINY}) * {steps}) + 1 "
        f"WHEN {x} < -{TINY} THEN -floor(ln(-({x}) / {TINY}) * {steps}) - 1 ELSE 0 END"
    )


@dataclasses.dataclass(frozen=True)
class _Ranks:
    r1: float  # the rank sum of group 1 (midranks)
    n1: int
    n: int
    ties: float  # Σ (t³ - t) over groups of tied values (exact), or its upper bound (grid)
    bound: float  # |r1 - exact r1| <= bound
    exact: bool


def _rank_sum(rel: duckdb.DuckDBPyRelation, value: str, group: str, present: str, exact: bool | None) -> _Ranks:
    """The midrank sum of the rows where ``group`` is true, among the rows where ``present`` is.

    Rows are grouped by value (or grid bin); a running sum of the counts gives each value's
    rank range, so ``2 · midrank = 2 · below + t + 1`` is an integer and the sum is exact.
    """
    if exact is None:
        n = int(query(rel, f"SELECT count(*) FROM r WHERE {present}").fetchall()[0][0])
        exact = n <= EXACT_VALUES
    key = value if exact else grid(value)
    sql = (
        f"WITH v AS (SELECT {key} AS k, count(*) FILTER ({group}) AS c1, count(*) AS t FROM r WHERE {present} "
        "GROUP BY k), "
        "w AS (SELECT CAST(c1 AS HUGEINT) AS c1, CAST(t AS HUGEINT) AS t, "
        "coalesce(sum(t) OVER (ORDER BY k ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS below FROM v) "
        "SELECT sum(c1 * (2 * below + t + 1)), sum(c1), sum(t), sum(t * t * t - t), sum(c1 * (t - c1)) FROM w"
    )
    r1x2, n1, n, ties, mixed = query(rel, sql).fetchall()[0]
    if n is None:
        return _Ranks(math.nan, 0, 0, 0.0, 0.0, exact)
    return _Ranks(int(r1x2) / 2, int(n1), int(n), float(ties), 0.0 if exact else int(mixed) / 2, exact)


def _worst_p(center: float, corners: list[float]) -> float:
    return max(abs(p - center) for p in corners) if corners else 0.0


def _undecided(test: Test, alpha: float | None) -> bool:
    """A binned test whose p-value might fall on either side of ``alpha``."""
    return alpha is not None and test.p_bound > 0 and abs(test.p_value - alpha) <= test.p_bound


def mann_whitney(
    rel: duckdb.DuckDBPyRelation,
    value: str,
    candidate: str,
    present: str,
    *,
    exact: bool | None = None,
    alpha: float | None = None,
) -> Test:
    """Mann–Whitney U of the candidate's values (group ``candidate``) against the others:
    one-sided, the candidate greater. ``statistic`` is U of the candidate."""
    from scipy import stats

    rk = _rank_sum(rel, value, candidate, present, exact)
    n1, n2 = rk.n1, rk.n - rk.n1
    if n1 == 0 or n2 == 0:
        return Test("Mann–Whitney U", math.nan, math.nan)
    u = rk.r1 - n1 * (n1 + 1) / 2

    def p(u_: float, ties: float) -> float:
        n = n1 + n2
        s = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
        if s == 0:
            return 1.0
        return float(min(max(stats.norm.sf((u_ - n1 * n2 / 2 - 0.5) / s), 0.0), 1.0))

    if rk.exact:
        return Test("Mann–Whitney U", u, p(u, rk.ties))
    center = p(u, 0.0)  # distinct values in a bin are taken as distinct: no ties
    corners = [p(u + du, t) for du in (-rk.bound, rk.bound) for t in (0.0, rk.ties)]
    test = Test("Mann–Whitney U", u, center, rk.bound, _worst_p(center, corners))
    return mann_whitney(rel, value, candidate, present, exact=True) if _undecided(test, alpha) else test


def wilcoxon(
    rel: duckdb.DuckDBPyRelation, diff: str, present: str, *, exact: bool | None = None, alpha: float | None = None
) -> Test:
    """Wilcoxon signed-rank test of the paired differences ``diff`` (zeros dropped): one-sided,
    the differences greater than 0. ``statistic`` is the rank sum of the positive ones."""
    from scipy import stats

    rk = _rank_sum(rel, f"abs({diff})", f"{diff} > 0", f"{present} AND {diff} <> 0", exact)
    n = rk.n
    if n == 0:
        return Test("Wilcoxon signed-rank", math.nan, math.nan)

    def p(r: float, ties: float) -> float:
        se = math.sqrt((n * (n + 1.0) * (2.0 * n + 1.0) - ties / 2) / 24)
        if se == 0:
            return 1.0
        return float(stats.norm.sf((r - n * (n + 1.0) * 0.25) / se))

    if rk.exact:
        return Test("Wilcoxon signed-rank", rk.r1, p(rk.r1, rk.ties))
    center = p(rk.r1, 0.0)
    corners = [p(rk.r1 + dr, t) for dr in (-rk.bound, rk.bound) for t in (0.0, rk.ties)]
    test = Test("Wilcoxon signed-rank", rk.r1, center, rk.bound, _worst_p(center, corners))
    return wilcoxon(rel, diff, present, exact=True) if _undecided(test, alpha) else test


def ks(
    rel: duckdb.DuckDBPyRelation,
    value: str,
    candidate: str,
    present: str,
    *,
    weight: str | None = None,
    exact: bool | None = None,
    alpha: float | None = None,
) -> tuple[Test, int, int]:
    """Two-sample Kolmogorov–Smirnov between the baseline's and the candidate's values, with
    the asymptotic p-value (Kish's effective sizes when ``weight`` varies); and the two counts.

    ``weight`` (SQL) weighs each row; None counts rows, so that every ECDF step is
    ``count / n`` as scipy computes it.
    """
    if exact is None:
        n = int(query(rel, f"SELECT count(*) FROM r WHERE {present}").fetchall()[0][0])
        exact = n <= EXACT_VALUES
    key = value if exact else grid(value)
    aggs = [f"count(*) FILTER ({candidate}) AS c1", f"count(*) FILTER (NOT ({candidate})) AS c0"]
    steps = ("c1", "c0")  # counts: each ECDF step is count / n, as scipy computes it
    if weight is not None:  # weights, and their squares for Kish's effective sizes
        for name, side in (("1", candidate), ("0", f"NOT ({candidate})")):
            aggs += [
                f"sum({weight}) FILTER ({side}) AS w{name}",
                f"sum({weight} * {weight}) FILTER ({side}) AS q{name}",
            ]
        steps = ("w1", "w0")
    s1, s0 = steps
    kish = (
        "sum(w1) AS w1, sum(w0) AS w0, sum(q1) AS q1, sum(q0) AS q0"
        if weight is not None
        else "NULL AS w1, NULL AS w0, NULL AS q1, NULL AS q0"
    )
    sql = (
        f"WITH v AS (SELECT {key} AS k, {', '.join(aggs)} FROM r WHERE {present} GROUP BY k), "
        f"t AS (SELECT sum(c1) AS n1, sum(c0) AS n0, sum({s1}) AS m1, sum({s0}) AS m0, {kish} FROM v), "
        f"c AS (SELECT coalesce(sum({s1}) OVER o, 0) AS a1, coalesce(sum({s0}) OVER o, 0) AS a0, "
        f"coalesce({s1}, 0) AS d1, coalesce({s0}, 0) AS d0 FROM v "
        "WINDOW o AS (ORDER BY k ROWS UNBOUNDED PRECEDING)), "
        "f AS (SELECT a0 / m0 AS f0, a1 / m1 AS f1, (a0 - d0) / m0 AS p0, (a1 - d1) / m1 AS p1 FROM c, t) "
        "SELECT max(f0 - f1), min(f0 - f1), max(greatest(abs(f0 - f1), abs(f0 - p1), abs(p0 - f1))), "
        "any_value(n1), any_value(n0), any_value(w1), any_value(w0), any_value(q1), any_value(q0) FROM f, t"
    )
    hi, lo, upper, n1, n0, w1, w0, q1, q0 = query(rel, sql).fetchall()[0]
    n1, n0 = int(n1 or 0), int(n0 or 0)
    if not n1 or not n0:
        return Test("Kolmogorov–Smirnov", math.nan, math.nan), n0, n1
    d = max(float(hi), min(max(-float(lo), 0.0), 1.0))
    e1 = n1 if weight is None else float(w1) ** 2 / float(q1)
    e0 = n0 if weight is None else float(w0) ** 2 / float(q0)
    p = ks_pvalue(d, e0, e1)
    if exact:
        return Test("Kolmogorov–Smirnov", d, p), n0, n1
    bound = max(float(upper) - d, 0.0)
    test = Test("Kolmogorov–Smirnov", d, p, bound, abs(p - ks_pvalue(d + bound, e0, e1)))
    if _undecided(test, alpha):
        return ks(rel, value, candidate, present, weight=weight, exact=True)
    return test, n0, n1


def two_proportions(
    k_base: float, n_base: float, k_cand: float, n_cand: float, *, margin: float = 0.0, higher_is_worse: bool
) -> Test:
    """Is the candidate's proportion worse than the baseline's by more than ``margin``?

    The Farrington–Manning score test of H0: ``p_cand − p_base = margin`` (the variance at
    the proportions' maximum likelihood under H0), one-sided: ``p_cand − p_base > margin``
    when higher is worse, ``< margin`` when lower is. ``statistic`` is z, signed so that
    positive is worse. At ``margin=0`` it is the pooled two-proportion z test: z² is the χ²
    of ``scipy.stats.chi2_contingency([[k_b, n_b − k_b], [k_c, n_c − k_c]],
    correction=False)`` and the p-value half of its p-value (when the candidate is worse).
    Counts may be weighted (effective numbers): then an approximation.
    """
    from scipy import stats

    if not n_base > 0 or not n_cand > 0:
        return Test("two-proportion z", math.nan, math.nan)
    p_b, p_c = k_base / n_base, k_cand / n_cand
    r_c, r_b = _restricted(p_c, n_cand, p_b, n_base, margin)
    se = math.sqrt(max(r_c * (1 - r_c), 0.0) / n_cand + max(r_b * (1 - r_b), 0.0) / n_base)
    if not se > 0:
        return Test("two-proportion z", 0.0, 1.0)
    z = (p_c - p_b - margin) / se
    z = z if higher_is_worse else -z
    return Test("two-proportion z", z, float(stats.norm.sf(z)))


def _restricted(p1: float, n1: float, p2: float, n2: float, delta: float) -> tuple[float, float]:
    """The maximum likelihood proportions under ``p1 − p2 = delta`` (Farrington & Manning
    1990, the closed form of the cubic's root); the pooled proportion at ``delta = 0``."""
    if delta == 0:
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        return pooled, pooled
    theta = n2 / n1
    a = 1 + theta
    b = -(1 + theta + p1 + theta * p2 + delta * (theta + 2))
    c = delta * delta + delta * (2 * p1 + theta + 1) + p1 + theta * p2
    d = -p1 * delta * (1 + delta)
    v = b**3 / (27 * a**3) - b * c / (6 * a * a) + d / (2 * a)
    u = math.copysign(math.sqrt(max(b * b / (9 * a * a) - c / (3 * a), 0.0)), v)
    if u == 0:
        r1 = -b / (3 * a)
    else:
        w = (math.pi + math.acos(min(max(v / u**3, -1.0), 1.0))) / 3
        r1 = 2 * u * math.cos(w) - b / (3 * a)
    r1 = min(max(r1, max(delta, 0.0)), min(1.0, 1.0 + delta))
    return r1, r1 - delta


@dataclasses.dataclass(frozen=True)
class Moments:
    """Count, weighted mean and variance of one side's values; ``n_eff`` is Kish's."""

    n: int
    n_eff: float
    mean: float
    var: float


def moments(row: Sequence[Any]) -> Moments:
    """:class:`Moments` from the aggregates of :func:`moments_sql`, in their order."""
    n, sw, sw2, swx, swx2, mean, var, wmin, wmax = row
    if not n:
        return Moments(0, 0.0, math.nan, math.nan)
    if wmin == wmax:  # every row weighs the same: the plain mean and variance
        return Moments(int(n), float(n), float(mean), math.nan if var is None else float(var))
    total, q = float(sw), float(sw2)
    m = float(swx) / total
    denom = total - q / total
    v = (float(swx2) - total * m * m) / denom if denom > 0 else math.nan
    return Moments(int(n), total * total / q, m, max(v, 0.0))


def moments_sql(x: str, weight: str, present: str) -> list[str]:
    """Aggregates over the rows where ``present`` is true that :func:`moments` reads."""
    f = f"FILTER ({present})"
    return [
        f"count(*) {f}",
        f"sum({weight}) {f}",
        f"sum({weight} * {weight}) {f}",
        f"sum({weight} * {x}) {f}",
        f"sum({weight} * {x} * {x}) {f}",
        f"avg({x}) {f}",
        f"var_samp({x}) {f}",
        f"min({weight}) {f}",
        f"max({weight}) {f}",
    ]


def welch_moments(base: Moments, cand: Moments, *, higher_is_worse: bool) -> Test:
    """Welch's t test of the means, one-sided in the worse direction: equal to
    ``scipy.stats.ttest_ind(cand, base, equal_var=False, alternative="greater")`` (or ``"less"``)."""
    from scipy import stats

    if base.n < 2 or cand.n < 2:
        return Test("Welch t", math.nan, math.nan)
    v1, v2 = cand.var / cand.n_eff, base.var / base.n_eff
    se = math.sqrt(v1 + v2)
    if not se > 0:
        return Test("Welch t", math.nan, 1.0)
    dof = (v1 + v2) ** 2 / (v1**2 / (cand.n_eff - 1) + v2**2 / (base.n_eff - 1))
    t = (cand.mean - base.mean) / se
    t = t if higher_is_worse else -t
    return Test("Welch t", t, float(stats.t.sf(t, dof)))


def paired_t(d: Moments, *, higher_is_worse: bool) -> Test:
    """The paired t test of differences (candidate − baseline) with these moments: equal to
    ``scipy.stats.ttest_rel(cand, base, alternative="greater")`` (or ``"less"``)."""
    from scipy import stats

    if d.n < 2:
        return Test("paired t", math.nan, math.nan)
    se = math.sqrt(d.var / d.n)
    if not se > 0:
        return Test("paired t", math.nan, 1.0)
    t = d.mean / se if higher_is_worse else -d.mean / se
    return Test("paired t", t, float(stats.t.sf(t, d.n - 1)))


def paired_proportions(worse: int, better: int, n: int, *, margin: float = 0.0) -> Test:
    """Is a bad outcome (an error, a wrong prediction) more frequent for the candidate than for
    the baseline by more than ``margin``, on ``n`` pairs?

    ``worse`` pairs went bad for the candidate only, ``better`` for the baseline only. The score
    test of Tango (1998) and Nam (1997) of H0: ``p_cand − p_base = margin`` (the variance of
    ``(worse − better) / n`` at the cell probabilities' maximum likelihood under H0, the root of
    a quadratic), one-sided: ``p_cand − p_base > margin``. ``statistic`` is z, positive when the
    candidate is worse. At ``margin=0`` it is McNemar's z without continuity correction,
    ``(worse − better) / sqrt(worse + better)``: z² is McNemar's χ² (one degree of freedom).
    """
    from scipy import stats

    if n <= 0:
        return Test("Tango score z", math.nan, math.nan)
    x10, x01, delta = float(worse), float(better), float(margin)
    if delta < 0:  # the likelihood is symmetric under swapping the discordant cells and the sign of delta
        x10, x01, delta = x01, x10, -delta
    # q01 (the restricted probability of the smaller discordant cell): 2n·q² + B·q + C = 0
    b = -x10 - x01 + (2 * n - x10 + x01) * delta
    c = -x01 * delta * (1 - delta)
    q01 = (-b + math.sqrt(max(b * b - 8 * n * c, 0.0))) / (4 * n)
    var = n * (2 * q01 + delta * (1 - delta))  # the variance of worse − better under H0
    if not var > 0:
        return Test("Tango score z", 0.0, 1.0)
    z = (worse - better - n * margin) / math.sqrt(var)
    return Test("Tango score z", z, float(stats.norm.sf(z)))
