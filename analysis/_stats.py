"""Two-sample statistics from two summaries (see :mod:`._summary`), each equal to its reference.

======================  =====================================================================
statistic               reference it equals (on the same values)
======================  =====================================================================
KS statistic, p-value   ``scipy.stats.ks_2samp(ref, cur, method=...)``
Wasserstein             ``scipy.stats.wasserstein_distance(ref, cur)``, divided by the
                        reference's standard deviation (``ddof=0``)
PSI                     Σ (c − r) · ln(c / r) over the reference's deciles
                        (``np.quantile(ref, q, method="inverted_cdf")``, right-closed bins
                        (−∞, q10], (q10, q20], …, (q90, ∞), repeated edges merged); shares
                        floored at :data:`PSI_FLOOR` so that an empty bin counts, finitely
Jensen–Shannon          ``scipy.spatial.distance.jensenshannon(r, c, base=2)`` on the same
                        bins (0 = same, 1 = disjoint)
chi-squared             ``scipy.stats.chi2_contingency([ref_counts, cur_counts])`` over the
                        categories of either side (Yates' correction when there are two
                        categories, as scipy's default)
======================  =====================================================================

When a side's rows were sampled at different rates, shares and ECDFs are weighted by
``1 / sample_rate`` and the tests use Kish's effective sample size: there is no reference
for that case, and the figures are documented approximations.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ._summary import OTHER, Categories, Numbers, category_table

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "PSI_FLOOR",
    "CategoryTest",
    "NumberTest",
    "adjust",
    "compare_categories",
    "compare_numbers",
    "decile_edges",
    "ks_pvalue",
    "query",
    "upper_p",
    "welch",
]

PSI_FLOOR = 1e-4
"""Smallest share a PSI bin counts with (an empty bin would make PSI infinite)."""

MAX_AUTO_N = 10_000  # scipy's ks_2samp: method="auto" is exact up to this many values per side


def query(rel: duckdb.DuckDBPyRelation, sql: str) -> duckdb.DuckDBPyRelation:
    """``sql`` over ``rel``, which it names ``r``."""
    got = rel.query("r", sql)
    assert got is not None  # a SELECT always gives a relation
    return got


@dataclasses.dataclass(frozen=True)
class NumberTest:
    ks: float
    ks_p: float
    ks_method: str
    ks_location: float
    wasserstein: float
    wasserstein_norm: float
    psi: float
    js: float
    error_bound: float  # how far ks may be from the exact statistic (0 when exact)


@dataclasses.dataclass(frozen=True)
class CategoryTest:
    chi2: float
    chi2_p: float
    dof: int
    psi: float
    js: float
    new: list[Any]  # categories of the current side that the reference has not
    new_share: float  # the current side's share of them
    categories: list[Any]
    ref_shares: np.ndarray
    cur_shares: np.ndarray


def _ecdfs(ref: Numbers, cur: Numbers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both ECDFs at every distinct value of either side: (values, F_ref, F_cur)."""
    values = np.concatenate([ref.values, cur.values])
    order = np.argsort(values, kind="stable")  # a merge of two sorted runs
    values = values[order]
    last = np.r_[values[1:] != values[:-1], True]  # the last of each run of equal values
    if ref.weights_are_counts and cur.weights_are_counts and len(order) == ref.n + cur.n:
        # One row per value: counts are exact integers, and count / n is scipy's arithmetic.
        from_ref = np.cumsum(order < len(ref.values))
        below = np.flatnonzero(last)
        c_ref = from_ref[below]
        return values[last], c_ref / ref.n, (below + 1 - c_ref) / cur.n
    w_ref = np.concatenate([ref.weights, np.zeros(len(cur.weights))])[order]
    w_cur = np.concatenate([np.zeros(len(ref.weights)), cur.weights])[order]
    return values[last], np.cumsum(w_ref)[last] / ref.total, np.cumsum(w_cur)[last] / cur.total


def ks_pvalue(d: float, n1: float, n2: float) -> float:
    """scipy's asymptotic two-sided p-value of the two-sample KS statistic ``d``."""
    from scipy import stats

    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0, 1))


def _ks(
    ref: Numbers, cur: Numbers, values: np.ndarray, diff: np.ndarray, method: str
) -> tuple[float, float, str, float]:
    """KS statistic, p-value, the method used and where the ECDFs differ most, as scipy does."""
    from scipy import stats

    i_max, i_min = int(np.argmax(diff)), int(np.argmin(diff))
    max_s, min_s = float(diff[i_max]), float(np.clip(-diff[i_min], 0, 1))
    d, loc = (min_s, float(values[i_min])) if min_s > max_s else (max_s, float(values[i_max]))
    sample = ref.exact and cur.exact and not ref.weighted and not cur.weighted
    exact = method == "exact" or (method == "auto" and max(ref.n, cur.n) <= MAX_AUTO_N)
    if exact and sample:
        # The exact distribution depends on n1, n2 and d only; scipy's own code computes it.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            got = stats.ks_2samp(ref.sample(), cur.sample(), method="exact")
        # scipy falls back to the asymptotic p-value (with a warning) where the exact one fails
        used = "asymp" if any("Switching to method=asymp" in str(w.message) for w in caught) else "exact"
        return float(got.statistic), float(got.pvalue), used, loc
    return d, ks_pvalue(d, ref.n_eff, cur.n_eff), "asymp", loc


def decile_edges(ref: Numbers) -> np.ndarray:
    """The reference's deciles, repeated edges merged.

    ``np.quantile(values, q, method="inverted_cdf")`` (with ``weights=`` when rows weigh
    differently), read from the summary without sorting again.
    """
    q = np.arange(1, 10) / 10  # exactly 0.1 ... 0.9 (linspace's 0.30000000000000004 moves an edge)
    cum = np.cumsum(ref.weights)
    if ref.weighted or not ref.exact:
        at = np.searchsorted(cum / cum[-1], q, side="left")
    else:
        # numpy's unweighted rule: the value at 0-based position ceil(n q - 1).
        k = np.ceil(ref.n * q - 1)
        at = np.searchsorted(cum, k + 1, side="left")
    return np.unique(ref.values[np.minimum(at, len(ref.values) - 1)])


def _binned(s: Numbers, edges: np.ndarray) -> np.ndarray:
    """Shares of ``s`` in the right-closed bins (−∞, e1], (e1, e2], …, (ek, ∞)."""
    cum = np.r_[0.0, np.cumsum(s.weights)]
    at = cum[np.searchsorted(s.values, edges, side="right")]  # weight of values <= each edge
    counts = np.diff(np.r_[0.0, at, cum[-1]])
    return np.asarray(counts / cum[-1], dtype=float)


def psi(ref_shares: np.ndarray, cur_shares: np.ndarray) -> float:
    r = np.maximum(ref_shares, PSI_FLOOR)
    c = np.maximum(cur_shares, PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def js(ref_shares: np.ndarray, cur_shares: np.ndarray) -> float:
    from scipy.spatial import distance

    return float(distance.jensenshannon(ref_shares, cur_shares, base=2))


def compare_numbers(ref: Numbers, cur: Numbers, *, method: str = "auto") -> NumberTest:
    """KS, Wasserstein, PSI and Jensen–Shannon between two number summaries (both non-empty)."""
    values, f_ref, f_cur = _ecdfs(ref, cur)
    diff = f_ref - f_cur
    d, p, used, loc = _ks(ref, cur, values, diff, method)
    # Wasserstein-1: the area between the ECDFs, as scipy sums it.
    w1 = float(np.sum(np.abs(diff[:-1]) * np.diff(values)))
    std = math.sqrt(_population_var(ref))
    edges = decile_edges(ref)
    r_sh, c_sh = _binned(ref, edges), _binned(cur, edges)
    return NumberTest(
        ks=d,
        ks_p=p,
        ks_method=used,
        ks_location=loc,
        wasserstein=w1,
        wasserstein_norm=w1 / std if std > 0 else (0.0 if w1 == 0 else math.inf),
        psi=psi(r_sh, c_sh),
        js=js(r_sh, c_sh),
        error_bound=ref.ecdf_error + cur.ecdf_error,
    )


def _population_var(s: Numbers) -> float:
    """The reference's variance with ddof=0, from its summary."""
    if s.n == 0:
        return math.nan
    if s.exact and not s.weighted and s.n > 1:
        return s.var * (s.n - 1) / s.n
    total = s.weights.sum()
    mean = float(np.sum(s.values * s.weights) / total)
    return float(np.sum(s.weights * (s.values - mean) ** 2) / total)


def compare_categories(ref: Categories, cur: Categories) -> CategoryTest:
    """Chi-squared test of homogeneity, PSI and Jensen–Shannon between two category summaries."""
    from scipy import stats

    cats, r, c = category_table(ref, cur)
    r_sh, c_sh = r / r.sum(), c / c.sum()
    table = np.vstack([r, c])
    if ref.weighted or cur.weighted:
        # Weighted shares at the effective sample sizes: a documented approximation.
        table = np.vstack([r_sh * ref.n_eff, c_sh * cur.n_eff])
    if len(cats) < 2:
        chi2, p, dof = 0.0, 1.0, 0
    else:
        got = stats.chi2_contingency(table)
        chi2, p, dof = float(got.statistic), float(got.pvalue), int(got.dof)
    new = [k for k in cur.counts if k not in ref.counts and k != OTHER]  # pooled or not
    return CategoryTest(
        chi2=chi2,
        chi2_p=p,
        dof=dof,
        psi=psi(r_sh, c_sh),
        js=js(r_sh, c_sh),
        new=new,
        new_share=float(sum(cur.counts[k] for k in new) / c.sum()) if new else 0.0,
        categories=cats,
        ref_shares=r_sh,
        cur_shares=c_sh,
    )


def adjust(p_values: list[float], correction: str | None) -> list[float]:
    """p-values adjusted for testing several at once: ``"bh"``, ``"bonferroni"`` or None."""
    ps = np.asarray(p_values, dtype=float)
    if correction is None or len(ps) == 0:
        return [float(x) for x in ps]
    if correction == "bh":
        from scipy import stats

        return [float(x) for x in stats.false_discovery_control(ps, method="bh")]
    if correction == "bonferroni":
        return [float(x) for x in np.minimum(ps * len(ps), 1.0)]
    raise ValueError(f"correction must be 'bh', 'bonferroni' or None, got {correction!r}")


@dataclasses.dataclass(frozen=True)
class Welch:
    """Difference of means (current − reference) with Welch's t interval and test."""

    diff: float
    low: float
    high: float
    t: float
    p: float
    df: float


def welch(ref: Numbers, cur: Numbers, *, confidence: float = 0.95) -> Welch:
    """Welch's two-sample t test and interval from the summaries' means and variances.

    Equal to ``scipy.stats.ttest_ind(cur, ref, equal_var=False)`` and its
    ``confidence_interval(confidence)``.
    """
    from scipy import stats

    n1, n2 = cur.n_eff, ref.n_eff
    v1, v2 = cur.var / n1, ref.var / n2
    diff = cur.mean - ref.mean
    se = math.sqrt(v1 + v2)
    if not se > 0:
        nan = math.nan
        return Welch(diff, diff if se == 0 else nan, diff if se == 0 else nan, nan, nan, nan)
    dof = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), dof))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * se
    return Welch(diff, diff - half, diff + half, t, p, dof)


def upper_p(rate: Any, n_eff: Any, p0: Any) -> np.ndarray:
    """One-sided p-value of ``rate`` over ``n_eff`` rows against a rate ``p0``: P(X ≥ k) for
    X ~ Binomial(n_eff, p0), k = rate · n_eff, as the regularised incomplete beta
    I_p0(k, n_eff − k + 1) (``scipy.stats.binomtest(k, n, p0, alternative="greater")`` when k
    and n are whole numbers; continuous in both otherwise). 1 where k is 0."""
    from scipy.special import betainc

    rate = np.asarray(rate, dtype=float)
    n = np.asarray(n_eff, dtype=float)
    p0 = np.broadcast_to(np.asarray(p0, dtype=float), rate.shape)
    k = np.clip(rate * n, 0.0, n)
    ok = (k > 0) & (n > 0) & np.isfinite(k) & np.isfinite(p0)
    a = np.where(ok, k, 1.0)
    b = np.where(ok, n - k + 1.0, 1.0)
    x = np.clip(np.where(ok, p0, 0.5), 0.0, 1.0)
    return np.where(ok, betainc(a, b, x), 1.0)
