"""Error slices: the groups of rows, named by a few predicates, where the model errs most.

A slice is a conjunction of up to ``max_depth`` predicates, each ``category = value`` or
``number in bin`` (quantile bins, :mod:`._bins`), e.g. ``context.region = south and
context.device = ios``. :func:`error_slices` counts the rows and errors of every slice in
one aggregate query, tests each against the overall error rate, controls the false
discovery rate over all the slices it tested, folds slices that only repeat a parent, and
ranks the rest by their excess errors (or SliceLine's score).

How the counts are made in one pass: each field becomes a small integer code per row
(its bin, its value among the kept categories, ``(other)`` or missing); the fields are
covered by a few groups whose codes pack into one integer (every pair of fields, or every
``max_depth``-subset, lies in some group, and a group has at most :data:`CELLS` possible
cells); one ``GROUP BY GROUPING SETS`` over the packed keys gives the rows, Σw, Σw·e and
Σw² of each cell of each group; the slices are sums of those cells, added up in numpy.
All four aggregates are sums, so every slice's figures are exact.

The statistics are written out in docs/error-slices.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from predlog.replay._shapes import ident, lit

from ._bins import SAMPLE_ROWS, bin_label, bin_sql, check_bins
from ._labeled import Labeled, labeled
from ._performance import wilson
from ._result import Result, figure
from ._stats import upper_p

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa
    from matplotlib.figure import Figure

    from predlog.replay import Store

__all__ = [
    "BINS",
    "CELLS",
    "MAX_DEPTH",
    "MAX_VALUES",
    "MIN_SUPPORT_ROWS",
    "MIN_SUPPORT_SHARE",
    "SCORE_ALPHA",
    "SETS_PER_PASS",
    "ErrorSlices",
    "error_slices",
]

BINS = 5
"""Quantile bins of a number field (quintiles): a slice of one bin holds about a fifth of the rows."""

MAX_DEPTH = 3
"""The most predicates a slice may have (the number of slices grows as fields ** depth)."""

MAX_VALUES = 50
"""A category keeps its this many heaviest values (rows, in the bins' sample); the rest are
pooled into one value, ``(other)``."""

MIN_SUPPORT_ROWS = 30
"""The default ``min_support`` is this many scored rows, or :data:`MIN_SUPPORT_SHARE` of the
scored rows when that is more."""

MIN_SUPPORT_SHARE = 0.001
"""See :data:`MIN_SUPPORT_ROWS`."""

SCORE_ALPHA = 0.95
"""SliceLine's α, the weight of the error term against the size term in its score (the
sliceline package defaults to 0.6; 0.95 weighs the error rate more)."""

CELLS = 1 << 15
"""The most cells (the product of the fields' numbers of codes) one packed group may have."""

SETS_PER_PASS = 32
"""The most grouping sets (packed groups) in one query: more fields need more passes."""

RANKS = {"excess": "excess_errors", "sliceline": "score"}
"""The orders of ``rank=`` and the column each sorts by (descending)."""

OTHER = "(other)"
MISSING = "(missing)"


class ErrorSlices(Result):
    """The error slices of a model: where its error rate is significantly above its overall rate.

    Attributes:
        df: The reported slices, best first (at most ``top``): ``slice`` (the predicates as
            text), ``depth``, ``feature_1``, ``value_1``, … ``feature_<max_depth>``,
            ``value_<max_depth>`` (None past the slice's depth), ``rows`` (scored rows),
            ``size`` (the slice's share of the scored weight), ``errors`` (Σw over its
            errors), ``error_rate`` with ``error_rate_low`` and ``error_rate_high`` (95 %
            Wilson interval over Kish's effective rows), ``lift`` (error rate / overall
            rate), ``excess_errors`` (Σw·e − overall rate · Σw: the errors beyond the overall
            rate), ``n_eff``, ``p_value`` (one-sided, against the overall rate),
            ``p_adjusted`` (Benjamini–Hochberg), ``p_vs_parents`` (for a significant slice of
            depth 2 or more: its adjusted p-value against its parents' error rates, the
            first folding rule; else NaN) and ``score`` (SliceLine's).
        tested: Every slice tested (at least ``min_support`` scored rows), with the columns
            of ``df`` and ``significant``, ``folded_into`` (the slice it was folded into, or
            None) and ``reported``; in the order of ``rank``.
        summary: ``text`` (one sentence naming the top slice), ``model``, ``rows`` (scored
            rows), ``overall_error_rate``, ``error`` (what an error is), ``features``,
            ``max_depth``, ``bins``, ``min_support``, ``alpha``, ``rank``, ``tested``, ``significant``,
            ``reported``, ``top`` (the top slice's text, or None), ``top_error_rate``,
            ``top_lift``, ``top_size``.
        cuts: The cut points of each number field (a bin ``i`` holds ``cuts[i-1] <= x < cuts[i]``).
        values: The kept values of each category field (the others are ``(other)``).
        overall_error_rate: Σw·e / Σw over the scored rows.
        filters: The model and the store filters of the rows (empty for a DataFrame).
    """

    _title = "Error slices"

    def __init__(
        self,
        df: pd.DataFrame,
        tested: pd.DataFrame,
        summary: dict[str, Any],
        cuts: dict[str, list[float]],
        values: dict[str, list[str]],
        filters: dict[str, Any],
    ) -> None:
        self.df = df
        self.tested = tested
        self.summary = summary
        self.cuts = cuts
        self.values = values
        self.filters = filters

    @property
    def overall_error_rate(self) -> float:
        return float(self.summary["overall_error_rate"])

    def _table(self) -> pd.DataFrame:
        cols = ["slice", "rows", "size", "error_rate", "lift", "excess_errors", "p_adjusted", "score"]
        return self.df[cols]

    def plot(self, top: int | None = None) -> Figure:
        """Bars of the reported slices' error rates (95 % intervals), the overall rate dashed.

        Args:
            top: Draw at most this many slices (default: every reported slice).
        """
        df = self.df if top is None else self.df.head(top)
        k = len(df)
        fig = figure(figsize=(8.0, 1.2 + 0.45 * max(k, 1)), layout="constrained")
        ax = fig.add_subplot()
        overall = self.overall_error_rate
        if k:
            y = np.arange(k)[::-1]
            rate = df["error_rate"].to_numpy(float)
            err = np.vstack([rate - df["error_rate_low"].to_numpy(float), df["error_rate_high"].to_numpy(float) - rate])
            ax.barh(y, rate, xerr=np.maximum(err, 0.0), color="tab:red", alpha=0.75, capsize=3)
            ax.set_yticks(y, [str(s) for s in df["slice"]])
            for yi, r, lift, size in zip(y, rate, df["lift"], df["size"], strict=True):
                ax.text(r, yi, f"  ×{lift:.2f}, {100 * size:.1f} %", va="center", fontsize=8)
        else:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no error slice", transform=ax.transAxes, ha="center", va="center")
        ax.axvline(overall, color="black", linestyle="--", linewidth=1, label=f"overall {overall:.3g}")
        ax.set_xlabel("error rate")
        ax.set_xlim(0, 1.05 * max([overall, *df["error_rate_high"].tolist()] if k else [overall]) + 0.02)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(str(self.summary.get("text", "")), fontsize=9, wrap=True)
        return fig


def error_slices(
    source: Store | pd.DataFrame | pa.Table,
    *,
    model: str | None = None,
    features: str | Sequence[str] | None = None,
    max_depth: int = 2,
    min_support: int | float | None = None,
    alpha: float = 0.05,
    top: int | None = 10,
    bins: int = BINS,
    error: Any = None,
    prediction: str = "prediction",
    label: str = "label",
    task: str = "auto",
    threshold: float = 0.5,
    positive_label: Any = None,
    rank: str = "excess",
    **filters: Any,
) -> ErrorSlices:
    """The slices of rows whose error rate is significantly above the overall error rate.

    A slice is a conjunction of up to ``max_depth`` predicates over the ``features``: a
    category equal to one value (missing is a value, and past :data:`MAX_VALUES` values the
    lightest are pooled as ``(other)``), a number in one of ``bins`` quantile bins (or
    missing). Every slice with at least ``min_support`` scored rows is tested: a one-sided
    binomial test of its errors against the overall error rate, then Benjamini–Hochberg
    over all the slices tested; the significant ones at ``alpha`` are kept unless they only
    repeat a parent (a slice of the same predicates but one) or a parent only repeats them
    (the folding rules of docs/error-slices.md), and ordered by ``rank``. Every figure is
    weighted by ``1 / sample_rate``; every row is read (no sampling), in DuckDB.

    Args:
        source: A ``Store`` with labels, or a pandas DataFrame (or pyarrow Table) with a
            prediction column, a label column and one column per feature (``age``) or
            context field (``context.device``).
        model: The store's model; may be omitted when the store holds one.
        features: The fields to slice by: ``"context.device"``, ``"features.age"``, a bare
            name for a feature (``"age"``), or a list; default every feature and context
            field that is a number or a category.
        max_depth: The most predicates in a slice, 1 to :data:`MAX_DEPTH`.
        min_support: The fewest scored rows a slice must have to be tested: a number of rows
            (an integer of at least 1) or a share of the scored rows (a float in (0, 1));
            default ``max(30, 0.1 % of the scored rows)``.
        alpha: The false discovery rate (Benjamini–Hochberg) over the slices tested, and
            the level of the folding tests.
        top: Report at most this many slices (None: all).
        bins: The quantile bins of each number field (at least 2).
        error: What an error is (see :meth:`Labeled.errors`): None (a misclassification; for
            a regression, an absolute error above the 90th percentile), a SQL expression
            over ``prediction`` and ``label``, or a callable ``error(label, prediction)``.
        prediction: The prediction column of a DataFrame, or the field scored in a store
            (``"prediction.score"`` for one output of a dict prediction).
        label: The label column of a DataFrame.
        task: ``"classification"``, ``"regression"`` or ``"auto"``, as for ``performance``.
        threshold: A float score at or above ``threshold`` is class 1.
        positive_label: As for ``performance``.
        rank: How the reported slices are ordered: ``"excess"`` (the default: by excess
            errors, Σw·(e − overall rate) over the slice's rows, the errors it has beyond the
            overall rate) or ``"sliceline"`` (by SliceLine's score with α = :data:`SCORE_ALPHA`).
        **filters: ``Store.predictions`` filters (``version``, ``start``, ``end``, ``last``,
            ``where``, …); a DataFrame takes none.

    Returns:
        An :class:`ErrorSlices`.

    Raises:
        KeyError: A feature the rows do not have (the message lists close matches).
        ValueError: No labels, no scored rows, or a bad argument.
        TypeError: A source or argument of the wrong type.
    """
    depth_max = _check_args(max_depth, min_support, alpha, top, bins, rank)
    lab = labeled(
        source,
        model=model,
        filters=filters,
        prediction=prediction,
        label=label,
        task=task,
        threshold=threshold,
        positive_label=positive_label,
        what="error_slices",
    )
    if not lab.labels:
        raise _no_rows(lab)
    paths = lab.resolve(features, "features")
    if features is None:
        paths.sort()  # the same slices and names whatever order the source lists its fields in
    if not paths:
        raise ValueError(f"{lab.label} has no feature or context field to slice by (numbers or categories)")
    depth = min(depth_max, len(paths))
    kinds = [lab.fields[p].kind for p in paths]
    numbers = [p for p, k in zip(paths, kinds, strict=True) if k == "number"]
    categories = [p for p, k in zip(paths, kinds, strict=True) if k == "category"]
    cuts = lab.cuts(numbers, bins) if numbers else {}
    values = _values(lab, categories)
    codes = [_code(p, cuts[p]) if p in cuts else _code_category(p, values[p]) for p in paths]
    cards = [len(cuts[p]) + 2 if p in cuts else len(values[p]) + 2 for p in paths]
    groups = _cover(cards, depth)
    rel, what = lab.errors(paths, error)
    cells = _cells(rel, codes, cards, groups)
    total = cells[0]
    n_all, sw_all, se_all = int(total["n"].sum()), float(total["sw"].sum()), float(total["se"].sum())
    if n_all == 0:
        raise _no_rows(lab)
    support = _support(min_support, n_all)
    raw = _slices(cells, groups, cards, depth)
    names = _names(paths, cuts, values)
    numbered = {i for i, p in enumerate(paths) if p in cuts}
    tested = _test(raw, paths, names, numbered, sw_all, se_all, support, alpha, depth)
    order = RANKS[rank]
    tested = tested.sort_values([order, "p_value", "slice"], ascending=[False, True, True], kind="mergesort")
    tested = tested.reset_index(drop=True)
    reported = tested[tested["reported"]]
    df = (reported if top is None else reported.head(top)).drop(columns=["significant", "folded_into", "reported"])
    df = df.reset_index(drop=True)
    overall = se_all / sw_all if sw_all > 0 else float("nan")
    summary = _summary(lab, df, tested, paths, what, n_all, overall, depth, bins, support, alpha, rank)
    filt = {"model": lab.model, **lab.filters} if lab.model is not None else {}
    return ErrorSlices(df, tested, summary, cuts, values, filt)


# ---------------------------------------------------------------- arguments


def _check_args(max_depth: Any, min_support: Any, alpha: Any, top: Any, bins: Any, rank: Any) -> int:
    if rank not in RANKS:
        raise ValueError(f"rank must be one of {', '.join(map(repr, RANKS))}, got {rank!r}")
    if isinstance(max_depth, bool) or not isinstance(max_depth, (int, np.integer)) or not 1 <= max_depth <= MAX_DEPTH:
        raise ValueError(f"max_depth must be an integer from 1 to {MAX_DEPTH}, got {max_depth!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must be a number between 0 and 1 (a false discovery rate, e.g. 0.05), got {alpha!r}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1):
        raise ValueError(f"top must be an integer of at least 1 (or None for every slice), got {top!r}")
    check_bins(bins)
    if min_support is not None:
        ok = not isinstance(min_support, bool) and (
            (isinstance(min_support, (int, np.integer)) and min_support >= 1)
            or (isinstance(min_support, (float, np.floating)) and 0 < min_support < 1)
        )
        if not ok:
            raise ValueError(
                "min_support must be a number of rows (an integer of at least 1) or a share of the scored rows "
                f"(a float between 0 and 1), got {min_support!r}"
            )
    return int(max_depth)


def _no_rows(lab: Labeled) -> ValueError:
    """The error for a selection without scored rows: no rows, no labels, or no usable pair."""
    rows = lab.rows()
    if rows == 0:
        hint = "" if lab.model is None else ": widen the selection (version, start, end, last, where)"
        return ValueError(f"no predictions in {lab.label}{hint}")
    got = lab.relation([], raw=True).aggregate('count("label")').fetchall()[0][0]
    if not got:
        return ValueError(
            f"no labels in {lab.label} ({rows:,} predictions): error slices compare predictions with their labels; "
            + (
                "log labels with predlog.log_label(label, prediction_id=...) or Recorder.log_labels(frame)"
                if lab.model is not None
                else "the label column has no value"
            )
        )
    return ValueError(
        f"no scored rows in {lab.label}: none of the {got:,} labeled predictions has a usable prediction and "
        "label (a failed call, a missing score, a label the rule cannot compare)"
    )


def _support(min_support: int | float | None, rows: int) -> int:
    if min_support is None:
        return max(MIN_SUPPORT_ROWS, math.ceil(MIN_SUPPORT_SHARE * rows))
    if isinstance(min_support, (float, np.floating)):
        return max(1, math.ceil(float(min_support) * rows))
    return int(min_support)


# ---------------------------------------------------------------- codes


def _values(lab: Labeled, paths: Sequence[str]) -> dict[str, list[str]]:
    """The kept values of each category field, as text: the :data:`MAX_VALUES` heaviest by
    rows (ties by value), over a seeded sample as the bins' cut points are when the
    selection is large (a value too rare to be seen there is far below any slice's support)."""
    if not paths:
        return {}
    rows = lab.rows()
    rel = lab.predictions(paths)
    source = "r"
    if rows > SAMPLE_ROWS:
        source = f"(SELECT * FROM r USING SAMPLE {100.0 * SAMPLE_ROWS / rows!r}% (system, 7))"
    # One (field index, value) row per field and row, zipped by two unnests: any number of fields.
    values = ", ".join(f"CAST({ident(p)} AS VARCHAR)" for p in paths)
    sql = (
        f"SELECT i, v, count(*) AS n FROM (SELECT unnest(range({len(paths)})) AS i, unnest([{values}]) AS v "
        f"FROM {source}) WHERE v IS NOT NULL GROUP BY i, v"
    )
    got = rel.query("r", sql)
    assert got is not None  # a SELECT always gives a relation
    counts: dict[str, list[tuple[int, str]]] = {p: [] for p in paths}
    for i, v, n in got.fetchall():
        counts[paths[int(i)]].append((-int(n), str(v)))
    return {p: [v for _, v in sorted(c)[:MAX_VALUES]] for p, c in counts.items()}


def _code(path: str, cuts: Sequence[float]) -> str:
    """A number field's code: 0 missing, 1 + its bin."""
    return f"coalesce({bin_sql(path, cuts)} + 1, 0)"


def _code_category(path: str, values: Sequence[str]) -> str:
    """A category field's code: 0 missing, 1 … k its kept values, k + 1 ``(other)``."""
    col = ident(path)
    if not values:
        return f"CASE WHEN {col} IS NULL THEN 0 ELSE 1 END"
    kept = "[" + ", ".join(lit(v) for v in values) + "]"
    return (
        f"CASE WHEN {col} IS NULL THEN 0 ELSE coalesce(list_position({kept}, CAST({col} AS VARCHAR)), "
        f"{len(values) + 1}) END"
    )


def _names(paths: Sequence[str], cuts: dict[str, list[float]], values: dict[str, list[str]]) -> list[list[str]]:
    """What each code of each field reads as: ``(missing)``, a bin, a value, ``(other)``."""
    out = []
    for p in paths:
        if p in cuts:
            c = cuts[p]
            out.append([MISSING, *(bin_label(c, i) for i in range(len(c) + 1))])
        else:
            out.append([MISSING, *values[p], OTHER])
    return out


def _cover(cards: Sequence[int], depth: int) -> list[list[int]]:
    """Groups of fields such that every ``depth``-subset of fields lies in one group and no
    group has more than :data:`CELLS` cells (unless one subset alone has more): greedy, each
    group grown by the field that covers the most subsets not yet covered."""
    m = len(cards)
    uncovered = set(itertools.combinations(range(m), depth))
    limit = max([CELLS, *(math.prod(cards[i] for i in s) for s in uncovered)])
    groups: list[list[int]] = []
    # Each group starts from the largest subset not yet covered: sorted once, walked once.
    order = sorted(uncovered, key=lambda s: (-math.prod(cards[i] for i in s), s))
    at = 0
    while uncovered:
        while order[at] not in uncovered:
            at += 1
        first = order[at]
        group, size = list(first), math.prod(cards[i] for i in first)
        while True:
            best, gain = -1, 0
            for f in range(m):
                if f in group or size * cards[f] > limit:
                    continue
                got = sum(1 for s in itertools.combinations(group, depth - 1) if tuple(sorted((*s, f))) in uncovered)
                if got > gain:
                    best, gain = f, got
            if best < 0:
                break
            group.append(best)
            size *= cards[best]
        group.sort()
        groups.append(group)
        uncovered -= set(itertools.combinations(group, depth))
    return groups


def _cells(
    rel: duckdb.DuckDBPyRelation, codes: Sequence[str], cards: Sequence[int], groups: Sequence[Sequence[int]]
) -> list[dict[str, np.ndarray]]:
    """Per group, each occurring cell's packed key, rows, Σw, Σw·e and Σw² over the scored
    rows: one pass for every :data:`SETS_PER_PASS` groups (one pass for 20 fields of a few
    values each at depth 2)."""
    # Codes first, as SMALLINTs, so each is computed once however many groups use it.
    coded = rel.filter("_e IS NOT NULL").project(
        ", ".join(f"CAST({c} AS SMALLINT) AS k{i}" for i, c in enumerate(codes)) + ", _wt, _e"
    )
    out: list[dict[str, np.ndarray]] = []
    for lo in range(0, len(groups), SETS_PER_PASS):
        batch = groups[lo : lo + SETS_PER_PASS]
        keys = []
        for j, g in enumerate(batch):
            expr = ""
            for f in g:
                expr = f"CAST(k{f} AS BIGINT)" if not expr else f"({expr}) * {cards[f]} + k{f}"
            keys.append(f"{expr} AS g{j}")
        packed = coded.project(", ".join(keys) + ", _wt, CAST(_e AS DOUBLE) AS _e")
        names = ", ".join(f"g{j}" for j in range(len(batch)))
        sets = ", ".join(f"(g{j})" for j in range(len(batch)))
        sql = (
            f"SELECT {names}, GROUPING({names}) AS gid, count(*) AS n, sum(_wt) AS sw, sum(_wt * _e) AS se, "
            f"sum(_wt * _wt) AS sw2 FROM c GROUP BY GROUPING SETS ({sets})"
        )
        got = packed.query("c", sql)
        assert got is not None  # a SELECT always gives a relation
        arrays = got.fetchnumpy()
        gid = np.asarray(arrays["gid"], dtype=np.int64)
        full = (1 << len(batch)) - 1
        for j in range(len(batch)):
            mine = gid == (full ^ (1 << (len(batch) - 1 - j)))  # GROUPING sets the bits of the other keys
            out.append(
                {
                    "key": np.asarray(arrays[f"g{j}"][mine], dtype=np.int64),
                    **{a: np.asarray(arrays[a][mine], dtype=np.float64) for a in ("n", "sw", "se", "sw2")},
                }
            )
    return out


def _slices(
    cells: Sequence[dict[str, np.ndarray]], groups: Sequence[Sequence[int]], cards: Sequence[int], depth: int
) -> dict[tuple[int, ...], dict[str, np.ndarray]]:
    """Every slice of 1 … ``depth`` fields, summed from the first group that holds its fields:
    for each set of fields, the codes of each occurring slice and its rows, Σw, Σw·e, Σw²."""
    out: dict[tuple[int, ...], dict[str, np.ndarray]] = {}
    for g, c in zip(groups, cells, strict=True):
        dims = [cards[f] for f in g]
        unpacked = np.unravel_index(c["key"], dims) if len(c["key"]) else [np.zeros(0, np.int64) for _ in g]
        for d in range(1, depth + 1):
            for pos in itertools.combinations(range(len(g)), d):
                fields = tuple(g[i] for i in pos)
                if fields in out:
                    continue
                sub = [cards[f] for f in fields]
                flat = np.ravel_multi_index([unpacked[i] for i in pos], sub) if len(c["key"]) else np.zeros(0, int)
                size = math.prod(sub)
                sums = {a: np.bincount(flat, weights=c[a], minlength=size) for a in ("n", "sw", "se", "sw2")}
                keep = np.flatnonzero(sums["n"] > 0)
                codes = np.unravel_index(keep, sub)
                out[fields] = {"codes": np.stack(codes, axis=1), **{a: v[keep] for a, v in sums.items()}}
    return out


# ---------------------------------------------------------------- statistics


def _test(
    raw: dict[tuple[int, ...], dict[str, np.ndarray]],
    paths: Sequence[str],
    names: Sequence[Sequence[str]],
    numbers: set[int],
    sw_all: float,
    se_all: float,
    support: int,
    alpha: float,
    depth: int,
) -> pd.DataFrame:
    """The tested slices with their statistics, significance and folding."""
    import pandas as pd
    from scipy.stats import false_discovery_control

    p0 = se_all / sw_all if sw_all > 0 else float("nan")
    # Every slice as (field, code) pairs, with its sums.
    keys: list[tuple[tuple[int, int], ...]] = []
    cols: dict[str, list[np.ndarray]] = {a: [] for a in ("n", "sw", "se", "sw2")}
    index: dict[tuple[tuple[int, int], ...], int] = {}
    for fields, s in raw.items():
        big = s["n"] >= support
        for row in s["codes"][big]:
            key = tuple(zip(fields, (int(v) for v in row), strict=True))
            index[key] = len(keys)
            keys.append(key)
        for a in cols:
            cols[a].append(s[a][big])
    n, sw, se, sw2 = (np.concatenate(cols[a]) if cols[a] else np.zeros(0) for a in ("n", "sw", "se", "sw2"))
    rate = np.where(sw > 0, se / np.where(sw > 0, sw, 1.0), np.nan)
    n_eff = np.where(sw2 > 0, sw * sw / np.where(sw2 > 0, sw2, 1.0), 0.0)
    p = upper_p(rate, n_eff, p0)
    p_adj = false_discovery_control(np.clip(p, 0.0, 1.0), method="bh") if len(p) else np.zeros(0)
    significant = (p_adj <= alpha) & (rate > p0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = rate / p0
        score = SCORE_ALPHA * (lift - 1.0) - (1.0 - SCORE_ALPHA) * (sw_all / sw - 1.0)
    score = np.where(np.isfinite(score), score, -np.inf)
    low, high = wilson(rate, n_eff)

    # Folding, rule 1: a slice is folded into the parent whose error rate it is least
    # significantly above, unless it is significantly above every parent's. Its p-value
    # against the parents is the largest of those against each one (the same rows as a parent
    # give about 1/2), adjusted (Benjamini–Hochberg) over the significant slices of depth 2 or
    # more: many children are compared, and chance alone lifts a few over their parent.
    folded: list[int | None] = [None] * len(keys)
    vs_parents = np.full(len(keys), np.nan)
    children = [i for i, key in enumerate(keys) if len(key) >= 2 and significant[i]]
    worst_p, worst_parent = [], []
    for i in children:
        key = keys[i]
        parents = [index[key[:drop] + key[drop + 1 :]] for drop in range(len(key))]
        vs = upper_p(np.full(len(parents), rate[i]), np.full(len(parents), n_eff[i]), rate[parents])
        worst_p.append(float(np.max(vs)))
        worst_parent.append(parents[int(np.argmax(vs))])
    if children:
        adjusted = false_discovery_control(np.clip(worst_p, 0.0, 1.0), method="bh")
        for i, q, parent in zip(children, adjusted, worst_parent, strict=True):
            vs_parents[i] = q
            if q > alpha:
                folded[i] = parent
    # Rule 2: a significant parent is folded into a kept child when the parent's rows outside
    # the child are not significantly above the overall rate (the child explains the parent).
    kept_children: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        if len(key) >= 2 and significant[i] and folded[i] is None:
            for drop in range(len(key)):
                kept_children.setdefault(index[key[:drop] + key[drop + 1 :]], []).append(i)
    for parent, children in kept_children.items():
        if not significant[parent] or folded[parent] is not None:
            continue
        for child in sorted(children, key=lambda c: -score[c]):
            r_sw, r_se, r_sw2 = sw[parent] - sw[child], se[parent] - se[child], sw2[parent] - sw2[child]
            if r_sw <= 0 or r_sw2 <= 0:
                rest_p = 1.0
            else:
                rest_p = float(upper_p(r_se / r_sw, r_sw * r_sw / r_sw2, p0)[()])
            if rest_p > alpha:
                folded[parent] = child
                break

    text = [_text(k, paths, names, numbers) for k in keys]
    frame: dict[str, Any] = {"slice": text, "depth": [len(k) for k in keys]}
    for d in range(depth):
        frame[f"feature_{d + 1}"] = [paths[k[d][0]] if d < len(k) else None for k in keys]
        frame[f"value_{d + 1}"] = [names[k[d][0]][k[d][1]] if d < len(k) else None for k in keys]
    frame.update(
        rows=n.astype(np.int64),
        size=sw / sw_all if sw_all > 0 else np.full(len(sw), np.nan),
        errors=se,
        error_rate=rate,
        error_rate_low=low,
        error_rate_high=high,
        lift=lift,
        excess_errors=se - p0 * sw,
        n_eff=n_eff,
        p_value=p,
        p_adjusted=p_adj,
        p_vs_parents=vs_parents,
        score=score,
        significant=significant,
        folded_into=[text[f] if f is not None else None for f in folded],
    )
    out = pd.DataFrame(frame)
    out["reported"] = out["significant"] & out["folded_into"].isna()
    return out


def _text(
    key: Sequence[tuple[int, int]], paths: Sequence[str], names: Sequence[Sequence[str]], numbers: set[int]
) -> str:
    """A slice as text: ``features.age in [31, 42) and context.device = ios``."""
    parts = []
    for f, c in key:
        name = names[f][c]
        if c == 0:
            parts.append(f"{paths[f]} is missing")
        elif f in numbers:
            parts.append(f"{paths[f]} {'in ' if name.startswith('[') else ''}{name}")
        else:
            parts.append(f"{paths[f]} = {name}")
    return " and ".join(parts)


def _summary(
    lab: Labeled,
    df: pd.DataFrame,
    tested: pd.DataFrame,
    paths: list[str],
    what: str,
    rows: int,
    overall: float,
    depth: int,
    bins: int,
    support: int,
    alpha: float,
    rank: str,
) -> dict[str, Any]:
    significant = int(tested["significant"].sum())
    reported = int(tested["reported"].sum())
    out: dict[str, Any] = {
        "model": lab.model,
        "rows": rows,
        "overall_error_rate": overall,
        "error": what,
        "features": paths,
        "max_depth": depth,
        "bins": bins,
        "min_support": support,
        "alpha": alpha,
        "rank": rank,
        "tested": len(tested),
        "significant": significant,
        "reported": reported,
        "top": None,
        "top_error_rate": None,
        "top_lift": None,
        "top_size": None,
    }
    if len(df):
        t = df.iloc[0]
        out.update(
            top=str(t["slice"]),
            top_error_rate=float(t["error_rate"]),
            top_lift=float(t["lift"]),
            top_size=float(t["size"]),
        )
        more = f"; {reported - 1} more slice{'s' if reported != 2 else ''}" if reported > 1 else ""
        out["text"] = (
            f"The top error slice is {t['slice']}: error rate {100 * t['error_rate']:.3g} % against "
            f"{100 * overall:.3g} % overall (lift {t['lift']:.2f}), {int(t['rows']):,} rows "
            f"({100 * t['size']:.3g} % of the scored rows){more}; false discovery rate {alpha:g} over "
            f"{len(tested):,} slices tested."
        )
    else:
        out["text"] = (
            f"No error slice: no slice of up to {depth} predicate{'s' if depth > 1 else ''} over {len(paths)} "
            f"field{'s' if len(paths) > 1 else ''} has an error rate significantly above the overall "
            f"{100 * overall:.3g} % (false discovery rate {alpha:g} over {len(tested):,} slices of at least "
            f"{support:,} rows, of {rows:,} scored rows)."
        )
    return {"text": out.pop("text"), **out}
