"""Which features go with wrong predictions: error rates per category and bin, and how
strongly each field is associated with the errors.

:func:`error_correlation` reads the labeled rows once (``Labeled.errors``: the selection
joined with its latest labels, each scored row an error or not) and aggregates them in
DuckDB in one pass: ``GROUP BY GROUPING SETS`` with one set per field, each counting the rows
of every (group, weight, error) cell. A category is its own group; a number is grouped by a
fine cell of its value (:class:`_Grid`: one branch-free expression per row), from which its
quantile bins over every row, its AUC and its point-biserial correlation follow without
sorting the rows. Grouping by the row's weight (``1 / sample_rate``) keeps every weighted sum
exact: a weighted sum is a count times a weight. What comes back to Python is a few thousand
cells per field; the statistics follow in numpy. See docs/error-correlation.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from predlog.replay._shapes import ident

from ._bins import bin_label, check_bins
from ._performance import Z95, wilson
from ._result import Result, figure, jsonable
from ._stats import upper_p
from ._summary import finite

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from matplotlib.figure import Figure

    from predlog.replay import Store

    from ._labeled import Labeled

__all__ = ["FINE_CELLS", "MAX_CATEGORIES", "MIN_ROWS", "ErrorCorrelation", "error_correlation"]

MAX_CATEGORIES = 50
"""A category field keeps its heaviest values (by weighted rows) as groups; the others are
pooled as ``"(other)"``."""

FINE_CELLS = 2048
"""Cells per number field for the AUC and the point-biserial correlation (spread over its
quantile bins)."""

LOCATION_ROWS = 65_536
"""The cells of a number field are finest around the median of this many of the first rows read."""

MIN_ROWS = 30
"""The summary names a group only if it has at least this many scored rows."""

MISSING = "(missing)"
OTHER = "(other)"
_INTEGER = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)


# ---------------------------------------------------------------- the result


class ErrorCorrelation(Result):
    """How each feature and context field goes with the model's errors.

    Attributes:
        df: One row per field, the most associated first (by Cramér's V, then mutual
            information): ``feature`` (its path), ``kind`` (``"number"``, ``"category"``),
            ``groups`` (bins or categories, ``(missing)`` and ``(other)`` included),
            ``scored_rows``, ``cramers_v``, ``mutual_info`` (nats), ``chi2`` and ``p_value``
            (no continuity correction), ``auc`` (how well the field's value separates errors
            from the rest: 0.5 none, 1 larger values are errors, 0 smaller ones; numbers
            only), ``auc_bound`` (the largest possible difference from the exact AUC: 0 where
            exact), ``point_biserial`` (the correlation of the value with the error
            indicator; numbers only), ``exact`` (whether ``auc`` and ``point_biserial`` are
            exact; None for a category), and the group with the highest lift among those
            significantly above the overall rate: ``top_group``, ``top_error_rate``,
            ``top_lift``, ``top_rows`` (None and NaN when there is none).
        by_group: One row per field × group: ``feature``, ``kind``, ``group`` (the category,
            or the bin as ``"[a, b)"``), ``bin`` (the bin's index; None for a category),
            ``lower`` and ``upper`` (the bin's bounds, NaN where open), ``rows``,
            ``weighted_rows``, ``scored_rows``, ``weighted_scored``, ``errors``,
            ``weighted_errors``, ``error_rate`` with ``error_rate_low`` and
            ``error_rate_high`` (Wilson 95 %), and ``lift`` (the error rate over the overall
            rate).
        summary: ``text`` (one sentence), ``model``, ``task``, ``error`` (what an error is),
            ``rows``, ``scored_rows``, ``weighted_scored``, ``weighted_errors``,
            ``error_rate``, ``fields``, ``bins``, ``ranked_by``, ``top_feature``,
            ``top_group``, ``top_lift``, ``filters``.
    """

    _title = "Error correlation"

    def __init__(self, df: pd.DataFrame, by_group: pd.DataFrame, summary: dict[str, Any]) -> None:
        self.df = df
        self.by_group = by_group
        self.summary = summary

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["by_group"] = jsonable(self.by_group.to_dict("records"))
        return out

    def _table(self) -> pd.DataFrame:
        cols = ["feature", "kind", "groups", "cramers_v", "mutual_info", "auc", "top_group", "top_lift"]
        return self.df[cols]

    def plot(self, features: str | Sequence[str] | None = None, *, top: int = 4) -> Figure:
        """The error rate per group (with its 95 % interval) of ``features`` (default: the
        ``top`` most associated fields), the overall rate dashed."""
        if features is None:
            names = list(self.df["feature"].head(top))
        else:
            from ._sides import feature_path

            names = [feature_path(n) for n in ([features] if isinstance(features, str) else list(features))]
            known = set(self.df["feature"])
            for n in names:
                if n not in known:
                    raise ValueError(f"no field {n!r} in this result; choose among {', '.join(sorted(known))}")
        if not names:
            raise ValueError("nothing to plot: the result has no field")
        fig = figure(figsize=(4.0 * min(len(names), 2), 3.2 * math.ceil(len(names) / 2)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(math.ceil(len(names) / 2), min(len(names), 2), squeeze=False)).ravel()
        overall = float(self.summary["error_rate"])
        for ax, name in zip(axes, names, strict=False):
            part = self.by_group[self.by_group["feature"] == name]
            rate = part["error_rate"].to_numpy(dtype=float)
            low = np.nan_to_num(rate - part["error_rate_low"].to_numpy(dtype=float))
            high = np.nan_to_num(part["error_rate_high"].to_numpy(dtype=float) - rate)
            x = np.arange(len(part))
            ax.bar(x, np.nan_to_num(rate), yerr=[low, high], color="#4c72b0", capsize=2)
            ax.axhline(overall, color="black", linestyle="--", linewidth=1)
            ax.set_xticks(x, [str(g) for g in part["group"]], rotation=60, ha="right", fontsize=7)
            ax.set_title(name, fontsize=9)
            ax.set_ylabel("error rate")
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        fig.suptitle(str(self.summary.get("text", "")), fontsize=8)
        return fig


# ---------------------------------------------------------------- entry point


def error_correlation(
    source: Store | pd.DataFrame | pa.Table,
    *,
    model: str | None = None,
    features: str | Sequence[str] | None = None,
    error: Any = None,
    bins: int = 10,
    alpha: float = 0.05,
    prediction: str = "prediction",
    label: str = "label",
    task: str = "auto",
    threshold: float = 0.5,
    positive_label: Any = None,
    **filters: Any,
) -> ErrorCorrelation:
    """Error rates per category and bin of each field, and how strongly each goes with the errors.

    Every row of the selection is counted (no sampling), weighted by ``1 / sample_rate``.

    Args:
        source: A :class:`~predlog.replay.Store` (its predictions with their latest labels),
            or a pandas DataFrame (or pyarrow Table) with a prediction column, a label column
            and one column per field (``age`` is ``features.age``; ``context.device`` is a
            context field; a ``sample_rate`` column, if any, weighs the rows).
        model: The model (a store holding one model needs none).
        features: The fields to examine, named as the store's filters name them
            (``"context.device"``, ``"features.age"``, or ``"age"`` for a feature), one or a
            list; default every feature and context field that is a number or a category.
        error: What an error is (see ``Labeled.errors``): None for a misclassification, or
            for a regression an absolute error above the 90th percentile of the absolute
            errors; a SQL expression over ``prediction`` and ``label`` (``"abs(label -
            prediction) > 5"``); or a callable ``error(label, prediction) -> booleans``.
        bins: Quantile bins of a number field (at least 2; fewer when the field has few
            distinct values).
        alpha: The false discovery rate of the groups called significantly above the
            overall error rate (one-sided binomial tests, Benjamini–Hochberg over every group
            of every field with 30 scored rows or more): the summary states the strongest
            significant one, or none.
        prediction: The prediction column of a DataFrame, or the field scored in a store
            (``"prediction.score"``).
        label: The label column of a DataFrame.
        task: ``"classification"``, ``"regression"`` or ``"auto"``, as for ``performance``.
        threshold: A float score at or above it is class 1, as for ``performance``.
        positive_label: As for ``performance``.
        **filters: ``Store.predictions`` filters (``version``, ``start``, ``end``, ``last``,
            ``where``, ...).

    Returns:
        An :class:`ErrorCorrelation`: ``.df`` ranks the fields, ``.by_group`` has the error
        rate of every group, ``.summary["text"]`` states the strongest finding.

    Raises:
        KeyError: a field the rows do not have (close matches listed).
        ValueError: ``bins`` below 2, no labels, no scored rows, no field to examine, or an
            ``error`` expression that is not SQL over these rows.
    """
    from ._labeled import labeled

    bins = check_bins(bins)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number between 0 and 1, got {alpha!r}")
    lab = labeled(
        source,
        model=model,
        filters=filters,
        prediction=prediction,
        label=label,
        task=task,
        threshold=threshold,
        positive_label=positive_label,
        what="error_correlation",
    )
    if not lab.labels:
        raise ValueError(_no_labels(lab, label))
    paths = lab.resolve(features, "features")
    if not paths:
        raise ValueError(f"no feature or context field in {lab.label} is a number or a category")
    nums = [p for p in paths if lab.fields[p].kind == "number"]
    locations = _locations(lab, nums)
    grids = {p: _Grid(*locations[p], integer=lab.fields[p].dtype.upper() in _INTEGER) for p in nums}
    rel, what = lab.errors(paths, error)
    cells = _cells(rel, paths, grids)
    moments = _moments(rel, paths, grids)
    return _result(lab, paths, grids, cells, moments, what, bins, alpha)


def _no_labels(lab: Labeled, column: str) -> str:
    if lab.model is None:
        return f"no labels in {lab.label}: its label column {column!r} has no value"
    return (
        f"no labels in {lab.label}: error correlation compares predictions with their labels; log them with "
        "predlog.log_label(label, prediction_id=...) or Recorder.log_labels(frame)"
    )


def _locations(lab: Labeled, nums: list[str]) -> dict[str, tuple[float, float]]:
    """The centre and scale of each number field's cells, from the first rows read."""
    if not nums:
        return {}
    aggs = []
    for p in nums:
        x = f"CAST({ident(p)} AS DOUBLE)"
        aggs.append(f"quantile_cont({x}, [0.1, 0.5, 0.9]) FILTER ({ident(p)} IS NOT NULL AND {finite(x)})")
    row = lab.predictions(nums).limit(LOCATION_ROWS).aggregate(", ".join(aggs)).fetchall()[0]
    out = {}
    for p, q in zip(nums, row, strict=True):
        lo, mid, hi = (float(v) for v in q) if q else (0.0, 0.0, 0.0)
        scale = (hi - lo) / 2
        if not (math.isfinite(scale) and scale > 0):
            scale = max(abs(mid), 1.0) if math.isfinite(mid) else 1.0
        out[p] = (mid if math.isfinite(mid) else 0.0, scale)
    return out


# ---------------------------------------------------------------- the fine grid of a number field


class _Grid:
    """The cells of a number field, and its quantile bins as runs of cells.

    A value ``x`` falls into cell ``floor(F * (1/2 + t / (2 (1 + |t|))))``, with ``t = (x -
    centre) / scale`` and ``F`` = :data:`FINE_CELLS`: one expression per row (no branch),
    monotone, and reaching to ±infinity with ``F`` cells, narrow near the centre and wider far
    out (a NaN or ±inf gives NULL: a missing value). The centre and scale are the median and
    half the 10 %–90 % range of the first :data:`LOCATION_ROWS` rows read: they only set where
    the cells are finest; every count is exact whatever they are.

    The quantile bins follow from the cells, over every row: the edge of bin ``i`` is the
    lower edge of the cell holding the weighted ``i / bins`` quantile (``quantile_disc``: the
    first cell where the cumulative weight reaches it), repeated edges merged. For an integer
    field, whose cells near its values hold one integer each, the edge is that integer.
    """

    def __init__(self, centre: float, scale: float, integer: bool) -> None:
        self.integer = integer
        self.centre, self.scale = centre, scale
        self.inv = 1.0 / scale
        self.starts = np.zeros(0, np.int64)
        self.bounds: list[float] = []

    def fit(self, cells: np.ndarray, weights: np.ndarray, bins: int) -> None:
        """The bins from the weight of every (distinct, sorted) populated cell."""
        cum = np.cumsum(weights)
        total = float(cum[-1]) if len(cum) else 0.0
        if total <= 0:
            return
        at = np.searchsorted(cum, [total * i / bins for i in range(1, bins)], side="left")
        starts = np.unique(cells[np.minimum(at, len(cells) - 1)])
        self.starts = starts[starts > cells[0]]  # nothing is below the lowest cell
        edges = self.edges(self.starts)
        if self.integer:
            _, one = self.values(self.starts)
            first = np.ceil(edges - 1e-9 * np.maximum(1.0, np.abs(edges)))
            # a cell holding one integer starts at it; another starts at its first integer
            edges = np.where(one, self.values(self.starts)[0], first)
        self.bounds = [float(e) for e in edges]

    def cell(self, x: np.ndarray) -> np.ndarray:
        t = (x - self.centre) * self.inv
        return np.floor(float(FINE_CELLS) * (0.5 + 0.5 * (t / (1.0 + np.abs(t))))).astype(np.int64)

    def t_sql(self, path: str) -> str:
        """SQL of ``t`` (a column of the inner query: the cell's expression reads it twice)."""
        return f"(CAST({ident(path)} AS DOUBLE) - {self.centre!r}) * {self.inv!r}"

    @staticmethod
    def cell_sql(t: str) -> str:
        """SQL of a row's cell from its ``t`` column (NULL for a missing value)."""
        return f"TRY_CAST(floor({float(FINE_CELLS)!r} * (0.5 + 0.5 * ({t} / (1.0 + abs({t}))))) AS BIGINT)"

    def edges(self, cells: np.ndarray) -> np.ndarray:
        """The lowest value of each cell (the inverse of the map at its lower edge)."""
        s = 2.0 * (np.asarray(cells, dtype=float) / FINE_CELLS) - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(np.abs(s) < 1, s / (1.0 - np.abs(s)), np.sign(s) * np.inf)
        return np.asarray(self.centre + t * self.scale, dtype=float)

    def bin_of(self, cells: np.ndarray) -> np.ndarray:
        """The bin of each cell: how many bin edges are at or below it."""
        return np.searchsorted(self.starts, cells, side="right")

    def label(self, b: int) -> str:
        return bin_label(self.bounds, b) if self.bounds else "all values"

    def values(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A value for each cell, and whether the cell can hold one value only (then it is
        that value): an integer field's cell holding a single integer. Otherwise the middle
        of the cell (on the map's scale, so that the open cells at the ends have one too)."""
        cells = np.asarray(cells, dtype=np.int64)
        lo, hi = self.edges(cells), self.edges(cells + 1)
        mid = self.edges(cells + 0.5)
        if not self.integer:
            return mid, np.zeros(len(cells), bool)
        eps = 1e-9 * np.maximum(1.0, np.maximum(np.abs(np.nan_to_num(lo)), np.abs(np.nan_to_num(hi))))
        ok = np.isfinite(lo) & np.isfinite(hi) & (hi - lo < 3)
        first = np.where(ok, np.ceil(np.where(ok, lo, 0.0) - eps), 0.0)
        # the integers near the cell, placed as the SQL places them (the same operations)
        inside = np.stack([(self.cell(first + d) == cells) & ok for d in range(4)])
        one = inside.sum(axis=0) == 1
        first = first + np.argmax(inside, axis=0)
        return np.where(one, first, mid), one


# ---------------------------------------------------------------- the one pass


def _cells(rel: Any, paths: list[str], grids: dict[str, _Grid]) -> pd.DataFrame:
    """Rows per field × cell (a number's cell key, a category's value) × weight × error, in
    one aggregate over ``rel``; categories past the :data:`MAX_CATEGORIES` heaviest pooled."""
    inner = [f"{grids[p].t_sql(p)} AS t{i}" if p in grids else f"{ident(p)} AS k{i}" for i, p in enumerate(paths)]
    keys = [f"{_Grid.cell_sql(f't{i}')} AS k{i}" if p in grids else f"k{i}" for i, p in enumerate(paths)]
    sets = ", ".join(f"(k{i}, _wt, _e)" for i in range(len(paths)))
    flags = ", ".join(f"GROUPING(k{i}) AS g{i}" for i in range(len(paths)))
    which = " ".join(f"WHEN g{i} = 0 THEN {i}" for i in range(len(paths)))
    num = " ".join(f"WHEN g{i} = 0 THEN k{i}" for i, p in enumerate(paths) if p in grids) or "WHEN false THEN 0"
    cat = (
        " ".join(f"WHEN g{i} = 0 THEN CAST(k{i} AS VARCHAR)" for i, p in enumerate(paths) if p not in grids)
        or "WHEN false THEN ''"
    )
    # g is MATERIALIZED: it is read twice below, and must not run the labeled rows twice.
    sql = f"""
        WITH g AS MATERIALIZED (
            SELECT {flags}, {", ".join(f"k{i}" for i in range(len(paths)))}, _wt, _e, count(*) AS n
            FROM (SELECT {", ".join(keys)}, _wt, _e FROM (SELECT {", ".join(inner)}, _wt, _e FROM r))
            GROUP BY GROUPING SETS ({sets})
        ),
        u AS (
            SELECT CASE {which} END AS _s, CAST(CASE {num} END AS BIGINT) AS _k, CASE {cat} END AS _v, _wt, _e, n
            FROM g
        ),
        rk AS (
            SELECT _s, _v, row_number() OVER (PARTITION BY _s ORDER BY sum(n * _wt) DESC, _v) AS _r
            FROM u WHERE _v IS NOT NULL GROUP BY _s, _v
        )
        SELECT u._s, u._k, CASE WHEN rk._r > {MAX_CATEGORIES} THEN NULL ELSE u._v END AS _v,
               coalesce(rk._r > {MAX_CATEGORIES}, false) AS _other, u._wt, u._e, sum(u.n) AS n
        FROM u LEFT JOIN rk ON u._s = rk._s AND u._v = rk._v
        GROUP BY ALL
    """
    got = rel.query("r", sql)
    frame: pd.DataFrame = got.df()
    return frame


def _moments(rel: Any, paths: list[str], grids: dict[str, _Grid]) -> dict[str, pd.DataFrame]:
    """Per number field, per weight × error: the scored rows with a value, and the sums of
    ``t`` and ``t²`` (``t``: the value centred and scaled, :meth:`_Grid.t_sql`, which keeps
    the sums well conditioned): the point-biserial correlation follows exactly.

    A second, small aggregate: inside the grouping sets the sums would be computed for every
    set, which costs several times the pass itself.
    """
    nums = [(i, p) for i, p in enumerate(paths) if p in grids]
    if not nums:
        return {}
    inner = ", ".join(f"{grids[p].t_sql(p)} AS t{i}" for i, p in nums)
    aggs = ", ".join(
        f"count(t{i}) FILTER (isfinite(t{i})) AS n{i}, sum(t{i}) FILTER (isfinite(t{i})) AS s{i}, "
        f"sum(t{i} * t{i}) FILTER (isfinite(t{i})) AS q{i}"
        for i, _ in nums
    )
    sql = f"SELECT _wt, _e, {aggs} FROM (SELECT {inner}, _wt, _e FROM r WHERE _e IS NOT NULL) GROUP BY _wt, _e"
    got = rel.query("r", sql)
    frame: pd.DataFrame = got.df()
    return {
        p: frame[["_wt", "_e", f"n{i}", f"s{i}", f"q{i}"]].set_axis(["_wt", "_e", "n", "s", "q"], axis=1)
        for i, p in nums
    }


# ---------------------------------------------------------------- statistics


def _association(table: np.ndarray, n_eff: float) -> tuple[float, float, float, float]:
    """Mutual information (nats), χ² (no continuity correction), its p-value and Cramér's V
    of a groups × {error, ok} table of weights (rows and columns without weight dropped for
    χ²)."""
    from scipy import stats

    table = np.asarray(table, dtype=float)
    total = float(table.sum())
    if total <= 0:
        return math.nan, math.nan, math.nan, math.nan
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    # sklearn.metrics.mutual_info_score(None, None, contingency=table), operation for
    # operation (so that an integer table gives the same bits), in floats
    nzx, nzy = np.nonzero(table)
    nz = table[nzx, nzy]
    outer = rows.take(nzx) * cols.take(nzy)
    log_outer = -np.log(outer) + math.log(rows.sum()) + math.log(cols.sum())
    share = nz / total
    terms = share * (np.log(nz) - math.log(total)) + share * log_outer
    terms = np.where(np.abs(terms) < np.finfo(float).eps, 0.0, terms)
    mi = max(float(terms.sum()), 0.0) if len(rows) > 1 else 0.0
    t = table[rows > 0][:, cols > 0]
    if t.shape[0] < 2 or t.shape[1] < 2:
        return mi, math.nan, math.nan, math.nan
    expected = np.outer(t.sum(axis=1), t.sum(axis=0)) / total
    chi2 = float(np.sum((t - expected) ** 2 / expected))
    v = math.sqrt(chi2 / (total * (min(t.shape) - 1)))
    # the p-value on the effective number of rows: the statistic scales with the rows counted
    p = float(stats.chi2.sf(chi2 * n_eff / total, (t.shape[0] - 1) * (t.shape[1] - 1)))
    return mi, chi2, p, v


def _auc(value_key: np.ndarray, pos: np.ndarray, neg: np.ndarray, single: np.ndarray) -> tuple[float, float]:
    """The AUC of cells sorted by value (ties within a cell counted half) and its bound: half
    the error-by-ok weight of the cells that may hold several values, over the total."""
    order = np.argsort(value_key, kind="stable")
    p, q, one = pos[order], neg[order], single[order]
    P, N = float(p.sum()), float(q.sum())
    if P <= 0 or N <= 0:
        return math.nan, math.nan
    below = np.cumsum(q) - q
    auc = float(np.sum(p * (below + 0.5 * q)) / (P * N))
    bound = float(0.5 * np.sum((p * q)[~one]) / (P * N))
    return auc, bound


def _pearson_sums(w: np.ndarray, e: np.ndarray, wx: np.ndarray, wxx: np.ndarray) -> float:
    """The weighted correlation of a value with the 0/1 error indicator from per-cell sums:
    the cells' weights ``w``, errors ``e`` (0 or 1 per cell), and weighted sums of the value
    ``wx`` and of its square ``wxx`` (``scipy.stats.pointbiserialr`` with equal weights)."""
    sw = float(w.sum())
    if sw <= 0:
        return math.nan
    swx, swe = float(wx.sum()), float(np.sum(w * e))
    mx, me = swx / sw, swe / sw
    sxx = float(wxx.sum()) - sw * mx * mx
    see = swe - sw * me * me
    sxe = float(np.sum(wx * e)) - sw * mx * me
    if sxx <= 0 or see <= 0:
        return math.nan
    return sxe / math.sqrt(sxx * see)


def _field_groups(cells: pd.DataFrame, grid: _Grid | None, bins: int) -> pd.DataFrame:
    """One row per group of one field: its label, bounds and counts."""
    import pandas as pd

    c = cells.copy()
    wt, n = c["_wt"].to_numpy(dtype=float), c["n"].to_numpy(dtype=np.int64)
    e = c["_e"]
    scored = e.notna().to_numpy()
    err = (e == 1).fillna(False).to_numpy(dtype=bool)
    c["rows"] = n
    c["weighted_rows"] = n * wt
    c["scored_rows"] = np.where(scored, n, 0)
    c["weighted_scored"] = np.where(scored, n * wt, 0.0)
    c["sw2"] = np.where(scored, n * wt * wt, 0.0)
    c["errors"] = np.where(err, n, 0)
    c["weighted_errors"] = np.where(err, n * wt, 0.0)
    sums = ["rows", "weighted_rows", "scored_rows", "weighted_scored", "sw2", "errors", "weighted_errors"]
    if grid is not None:
        key = c["_k"]
        valued = c[key.notna()]
        per_cell = valued.groupby("_k", sort=True)["weighted_rows"].sum()
        grid.fit(per_cell.index.to_numpy(dtype=np.int64), per_cell.to_numpy(dtype=float), bins)
        c["_g"] = np.where(key.notna(), grid.bin_of(key.fillna(0).to_numpy(dtype=np.int64)), -1)
        g = c.groupby("_g", sort=True)[sums].sum().reset_index()
        present = g[g["_g"] >= 0]
        idx = present["_g"].to_numpy(dtype=np.int64)
        m = len(grid.bounds)
        labels = [grid.label(int(i)) for i in idx]
        cuts = np.asarray(grid.bounds, dtype=float)
        lower = np.array([cuts[i - 1] if i > 0 else np.nan for i in idx], dtype=float)
        upper = np.array([cuts[i] if i < m else np.nan for i in idx], dtype=float)
        out = pd.DataFrame({"group": labels, "bin": idx.astype(object), "lower": lower, "upper": upper})
        out = pd.concat([out, present[sums].reset_index(drop=True)], axis=1)
        missing = g[g["_g"] < 0]
    else:
        c["_grp"] = np.where(c["_other"].to_numpy(dtype=bool), OTHER, c["_v"].astype(object))
        valued = c[c["_v"].notna() | c["_other"]]
        g = valued.groupby("_grp", sort=False)[sums].sum().reset_index()
        g = g.assign(_o=(g["_grp"] == OTHER).astype(int)).sort_values(
            ["_o", "weighted_rows", "_grp"], ascending=[True, False, True]
        )
        out = pd.DataFrame({"group": g["_grp"].to_numpy(), "bin": None, "lower": np.nan, "upper": np.nan})
        out = pd.concat([out, g[sums].reset_index(drop=True)], axis=1)
        missing = c[c["_v"].isna() & ~c["_other"]][sums].sum().to_frame().T
        missing = missing if float(missing["rows"].iloc[0]) > 0 else missing.iloc[:0]
    if len(missing):
        row = {"group": MISSING, "bin": None, "lower": np.nan, "upper": np.nan}
        row.update({s: missing[s].sum() for s in sums})
        out = pd.concat([out, pd.DataFrame([row])], ignore_index=True)
    return out


def _result(
    lab: Labeled,
    paths: list[str],
    grids: dict[str, _Grid],
    cells: pd.DataFrame,
    moments: dict[str, pd.DataFrame],
    what: str,
    bins: int,
    alpha: float,
) -> ErrorCorrelation:
    import pandas as pd

    first = cells[cells["_s"] == 0]
    wt = first["_wt"].to_numpy(dtype=float)
    n = first["n"].to_numpy(dtype=np.int64)
    e = first["_e"]
    scored = e.notna().to_numpy()
    err = (e == 1).fillna(False).to_numpy(dtype=bool)
    rows = int(n.sum())
    if rows == 0:
        raise ValueError(f"no rows in {lab.label}: the selection is empty (check the filters)")
    if not scored.any():
        if not lab.relation(raw=True).aggregate('count("label")').fetchall()[0][0]:
            raise ValueError(_no_labels(lab, "label"))
        raise ValueError(
            f"no scored rows in {lab.label}: none of its {rows:,} rows has both a label and a usable prediction"
        )
    total_w = float(np.sum((n * wt)[scored]))
    total_e = float(np.sum((n * wt)[err]))
    overall = total_e / total_w
    n_eff = total_w**2 / float(np.sum((n * wt * wt)[scored]))

    groups: list[pd.DataFrame] = []
    stats: list[dict[str, Any]] = []
    for i, path in enumerate(paths):
        part = cells[cells["_s"] == i]
        grid = grids.get(path)
        g = _field_groups(part, grid, bins)
        g.insert(0, "kind", "number" if grid is not None else "category")
        g.insert(0, "feature", path)
        ws, we = g["weighted_scored"].to_numpy(dtype=float), g["weighted_errors"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(ws > 0, we / np.where(ws > 0, ws, 1.0), np.nan)
            eff = np.where(g["sw2"] > 0, ws * ws / np.where(g["sw2"] > 0, g["sw2"], 1.0), 0.0)
        low, high = wilson(rate, eff, Z95)
        g["error_rate"], g["error_rate_low"], g["error_rate_high"] = rate, low, high
        g["lift"] = rate / overall if overall > 0 else np.nan
        # one-sided: is the group's error rate above the overall rate (BH over every group below)
        g["p_value"] = np.where(ws > 0, upper_p(np.nan_to_num(rate), eff, overall), np.nan)
        g = g.drop(columns=["sw2"])
        table = np.column_stack([we, ws - we])
        mi, chi2, p, v = _association(table, n_eff)
        auc = bound = pb = math.nan
        exact: bool | None = None
        if grid is not None:
            auc, bound, pb, exact = _numeric(part, grid, moments[path])
        stats.append(
            {
                "feature": path,
                "kind": "number" if grid is not None else "category",
                "groups": len(g),
                "scored_rows": int(g["scored_rows"].sum()),
                "cramers_v": v,
                "mutual_info": mi,
                "chi2": chi2,
                "p_value": p,
                "auc": auc,
                "auc_bound": bound,
                "point_biserial": pb,
                "exact": exact,
            }
        )
        groups.append(g)
    _significance(groups, alpha)
    for entry, g in zip(stats, groups, strict=True):
        best = _top(g)
        entry["top_group"] = None if best is None else best["group"]
        entry["top_error_rate"] = math.nan if best is None else float(best["error_rate"])
        entry["top_lift"] = math.nan if best is None else float(best["lift"])
        entry["top_rows"] = 0 if best is None else int(best["scored_rows"])
    df = pd.DataFrame(stats)
    df["_v"] = df["cramers_v"].fillna(-1.0)
    df["_mi"] = df["mutual_info"].fillna(-1.0)
    df = df.sort_values(["_v", "_mi", "feature"], ascending=[False, False, True], kind="stable")
    df = df.drop(columns=["_v", "_mi"]).reset_index(drop=True)
    by_group = pd.concat(groups, ignore_index=True)
    order = {f: i for i, f in enumerate(df["feature"])}
    by_group = by_group.assign(_o=by_group["feature"].map(order)).sort_values("_o", kind="stable")
    by_group = by_group.drop(columns=["_o"]).reset_index(drop=True)
    for col in ("rows", "scored_rows", "errors"):
        by_group[col] = by_group[col].astype(np.int64)
    summary = _summary(lab, df, by_group, what, bins, rows, total_w, total_e, int(n[scored].sum()), overall, alpha)
    return ErrorCorrelation(df, by_group, summary)


def _numeric(part: pd.DataFrame, grid: _Grid, sums: pd.DataFrame) -> tuple[float, float, float, bool | None]:
    """AUC, its bound, the point-biserial correlation and whether both are exact, from the
    scored cells of a number field that have a value."""
    ok = part["_k"].notna() & part["_e"].notna()
    c = part[ok]
    keys = c["_k"].to_numpy(dtype=np.int64)
    w = c["_wt"].to_numpy(dtype=float) * c["n"].to_numpy(dtype=float)
    e = c["_e"].to_numpy(dtype=float)
    uniq, inv = np.unique(keys, return_inverse=True)
    pos = np.bincount(inv, weights=w * e, minlength=len(uniq))
    neg = np.bincount(inv, weights=w * (1 - e), minlength=len(uniq))
    _, single = grid.values(uniq)
    auc, bound = _auc(uniq, pos, neg, single)
    wt = sums["_wt"].to_numpy(dtype=float)
    pb = _pearson_sums(
        wt * sums["n"].to_numpy(dtype=float),
        sums["_e"].to_numpy(dtype=float),
        wt * sums["s"].to_numpy(dtype=float),
        wt * sums["q"].to_numpy(dtype=float),
    )
    exact = bool(np.all(single[(pos > 0) | (neg > 0)])) if len(uniq) else None
    return auc, bound, pb, exact


def _significance(groups: list[pd.DataFrame], alpha: float) -> None:
    """``p_adjusted`` (Benjamini–Hochberg over every group of every field with
    :data:`MIN_ROWS` scored rows) and ``significant`` (at ``alpha``), into each frame: with
    dozens of fields and hundreds of groups, some group is above the overall rate by chance."""
    from scipy.stats import false_discovery_control

    tested = [
        (g["scored_rows"].to_numpy() >= MIN_ROWS) & np.isfinite(g["p_value"].to_numpy(dtype=float)) for g in groups
    ]
    p = np.concatenate([g["p_value"].to_numpy(dtype=float)[t] for g, t in zip(groups, tested, strict=True)])
    adjusted = false_discovery_control(np.clip(p, 0.0, 1.0), method="bh") if len(p) else p
    at = 0
    for g, t in zip(groups, tested, strict=True):
        col = np.full(len(g), np.nan)
        col[t] = adjusted[at : at + int(t.sum())]
        at += int(t.sum())
        g["p_adjusted"] = col
        g["significant"] = np.nan_to_num(col, nan=1.0) <= alpha


def _top(g: pd.DataFrame) -> dict[str, Any] | None:
    """The group with the highest lift among those significantly above the overall rate."""
    ok = g["significant"].to_numpy(dtype=bool)
    if not ok.any():
        return None
    best = g[ok].sort_values(["lift", "scored_rows"], ascending=[False, False], kind="stable").iloc[0]
    return {k: best[k] for k in ("group", "error_rate", "lift", "scored_rows", "kind")}


def _where(path: str, kind: str, group: str) -> str:
    if group == MISSING:
        return f"{path} is missing"
    if group == OTHER:
        return f"{path} is none of its {MAX_CATEGORIES} most frequent values"
    if kind == "number":
        return f"{path} is {group}" if group.startswith(("<", ">=", "=")) else f"{path} is in {group}"
    return f"{path} = {group!r}"


def _summary(
    lab: Labeled,
    df: pd.DataFrame,
    by_group: pd.DataFrame,
    what: str,
    bins: int,
    rows: int,
    total_w: float,
    total_e: float,
    scored: int,
    overall: float,
    alpha: float,
) -> dict[str, Any]:
    top_feature = top_group = None
    lift = math.nan
    text = ""
    for _, row in df.iterrows():
        if row["top_group"] is None:
            continue
        top_feature, top_group, lift = str(row["feature"]), str(row["top_group"]), float(row["top_lift"])
        first = (
            ""
            if row["feature"] == df["feature"].iloc[0]
            else f" (the most associated field, {df['feature'].iloc[0]}, has no such group)"
        )
        text = (
            f"Errors are {lift:.1f}× more frequent when {_where(top_feature, str(row['kind']), top_group)} "
            f"(n={int(row['top_rows']):,}): {float(row['top_error_rate']):.1%} against {overall:.1%} overall; "
            f"Cramér's V {float(row['cramers_v']):.3g}{first}."
        )
        break
    if not text:
        text = (
            f"No group of the {len(df)} fields has an error rate significantly above the overall {overall:.1%} "
            f"(false discovery rate {alpha:g}, groups of {MIN_ROWS} scored rows or more)."
        )
    return {
        "text": text,
        "model": lab.model,
        "task": lab.task,
        "error": what,
        "rows": rows,
        "scored_rows": scored,
        "weighted_scored": total_w,
        "weighted_errors": total_e,
        "error_rate": overall,
        "fields": len(df),
        "bins": bins,
        "ranked_by": "cramers_v",
        "top_feature": top_feature,
        "top_group": top_group,
        "top_lift": lift,
        "filters": ({"model": lab.model} if lab.model else {}) | dict(lab.filters),
    }
