"""Drift over time: every window of the selected rows against one reference, field by field.

:func:`drift_over_time` cuts the rows that ``**filters`` select into fixed windows
(``time_bucket`` of ``ts`` in UTC) and compares each window with the reference, for every
feature, ``prediction`` and ``confidence``. The reference is summarised once
(:mod:`._summary`, as :func:`~predlog.analysis.input_drift` does); the windows are counted
in DuckDB over one relation of the selected rows:

- ``"psi"`` (``"auto"``): PSI on the reference's deciles for numbers (the bins of
  :mod:`._stats`: ``decile_edges``, right-closed, shares floored at ``PSI_FLOOR``), on the
  categories for categories. One query counts every window's bins of every field
  (``GROUP BY GROUPING SETS ((window, bin of field 1), (window, bin of field 2), ...)``).
- ``"js"``: Jensen–Shannon distance (base 2) on the same bins, from the same query.
- ``"mean"``: each window's (weighted) mean, beside the reference's: one ``GROUP BY window``.
- ``"ks"``: the two-sample Kolmogorov–Smirnov statistic, exact (every value), with scipy's
  asymptotic p-value. Each field's values come back (one field at a time, sorted by window in
  numpy): it reads as much as the store holds of those fields, where the others bring back a
  few numbers per window — slower on large stores.

Each cell equals the statistic of :mod:`._stats` (and so scipy) computed on that window's
rows alone. Under ``"mean"`` and ``"ks"``, category fields keep PSI (the ``statistic``
column says which).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _stats
from ._drift import THRESHOLDS, _natural
from ._result import Result, figure
from ._sides import WEIGHT, Side, StoreSide, feature_path, model_in_sides, resolve_model, side_of
from ._summary import (
    EXACT_LIMIT,
    KEPT_CATEGORIES,
    Categories,
    Field,
    Numbers,
    Summary,
    _plain,
    _present,
    _query,
    category_table,
    pooled,
)
from ._windows import Windows, utc_times, when

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from matplotlib.figure import Figure

    from predlog.replay import Store

__all__ = [
    "STATISTICS",
    "DriftOverTime",
    "drift_over_time",
    "number_text",
    "weighted_mean",
]

STATISTICS = ("auto", "psi", "js", "mean", "ks")
"""``statistic=`` values of :func:`drift_over_time`."""

_NAMES = {"psi": "PSI", "js": "JS", "mean": "mean", "ks": "KS"}
_COLUMNS = [
    "window_start",
    "feature",
    "kind",
    "statistic",
    "value",
    "ref_value",
    "rows",
    "missing",
    "p_value",
    "drifted",
    "note",
]
_WORKERS = min(4, os.cpu_count() or 1)


def weighted_mean(v: str) -> str:
    """Two aggregates over a window: the count of ``v`` (NULL where a row has no value) and its
    mean weighted by ``_wt`` (Kahan-summed: ``fsum``).

    NULLs from a CASE, not ``FILTER`` clauses: DuckDB runs this twice as fast.
    """
    return f"count({v}), fsum(_wt * {v}) / fsum(CASE WHEN {v} IS NOT NULL THEN _wt END)"


def number_text(value: float) -> str:
    """A number for a sentence: three significant digits."""
    return "-" if value is None or math.isnan(value) else f"{value:.3g}"


# ---------------------------------------------------------------------------- the result


class DriftOverTime(Result):
    """Drift of each window against a reference, field by field.

    Attributes:
        df: Long format, one row per window and field: ``window_start`` (UTC), ``feature``,
            ``kind``, ``statistic`` (``"psi"``, ``"js"``, ``"mean"``, ``"ks"``), ``value``
            (NaN where not computed: ``note`` says why), ``ref_value`` (the reference's mean,
            for ``"mean"``), ``rows`` (values in the window), ``missing`` (rows of the window
            without one), ``p_value`` (``"ks"``: asymptotic), ``drifted`` and ``note``.
        wide: ``value`` as a table, one row per window and one column per field.
        summary: ``text`` (one sentence), ``model``, ``reference``, ``window``, ``statistic``
            (the one chosen), ``threshold``, ``windows``, ``fields``, ``start``/``end``,
            ``drifted`` (fields drifted on their last tested window, strongest first),
            ``since`` (field → the start of its run of drifted windows that reaches its last
            window), ``last`` (field → value on its last tested window), ``skipped`` (fields
            not compared → why).
        reference: The reference's description; ``filters`` the store filters of the windows.
    """

    _title = "Drift over time"

    def __init__(
        self,
        df: pd.DataFrame,
        summary: dict[str, Any],
        *,
        reference: str,
        windows: Windows,
        filters: dict[str, Any],
        ref_std: Mapping[str, float],
    ) -> None:
        self.df = df
        self.summary = summary
        self.reference = reference
        self.windows = windows
        self.filters = filters
        self._ref_std = dict(ref_std)

    @property
    def wide(self) -> pd.DataFrame:
        """Window × field table of ``value``."""
        order = list(dict.fromkeys(self.df["feature"]))
        wide = self.df.pivot(index="window_start", columns="feature", values="value")
        return wide.reindex(columns=order).rename_axis(columns=None)

    @property
    def drifted(self) -> list[str]:
        """The fields drifted on their last tested window, strongest first."""
        return list(self.summary["drifted"])

    def _table(self) -> pd.DataFrame:
        return self.df[["window_start", "feature", "statistic", "value", "rows", "drifted", "note"]]

    def plot(self, features: Sequence[str] | None = None) -> Figure:
        """A heat map, one row per field and one column per window; drifted cells are dotted.

        Distances are drawn as they are; ``"mean"`` as the difference from the reference's
        mean in reference standard deviations, so that fields of any scale share one colour
        scale.
        """
        names = [feature_path(f) for f in features] if features else list(dict.fromkeys(self.df["feature"]))
        wide = self.wide
        missing = [n for n in names if n not in wide.columns]
        if missing:
            raise ValueError(f"not in this result: {', '.join(missing)}; fields: {', '.join(wide.columns)}")
        values = wide[names].to_numpy(dtype=float).T.copy()
        stat = str(self.summary["statistic"])
        label = _NAMES[stat]
        if stat == "mean":
            first = self.df.drop_duplicates("feature").set_index("feature")
            for i, n in enumerate(names):
                if first.loc[n, "statistic"] == "mean":
                    std = self._ref_std.get(n, math.nan)
                    values[i] = (values[i] - float(first.loc[n, "ref_value"])) / std if std > 0 else math.nan
            label = "(mean − reference mean) / reference sd; categories: PSI"
        flags = self.df.pivot(index="window_start", columns="feature", values="drifted")[names]
        flags = flags.fillna(False).to_numpy(dtype=bool).T
        fig = figure(figsize=(min(16.0, 3.0 + 0.35 * values.shape[1]), 1.2 + 0.32 * len(names)), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", interpolation="nearest", cmap="viridis")
        fig.colorbar(image, ax=ax, label=label)
        ys, xs = np.nonzero(flags)
        ax.scatter(xs, ys, s=8, c="red", marker="o", label="drifted")
        ax.set_yticks(range(len(names)), names, fontsize=8)
        starts = list(wide.index)
        step = max(1, math.ceil(len(starts) / 12))
        ax.set_xticks(range(0, len(starts), step), [when(t, self.windows) for t in starts[::step]], rotation=45)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{label} per {self.windows.text} window against {self.reference}", fontsize=9)
        return fig


# ---------------------------------------------------------------------------- the function


def drift_over_time(
    s: Store,
    reference: Any,
    *,
    window: str | dt.timedelta = "1D",
    features: Sequence[str] | None = None,
    statistic: str = "auto",
    model: str | None = None,
    min_rows: int = 30,
    threshold: float | None = None,
    alpha: float = 0.05,
    **filters: Any,
) -> DriftOverTime:
    """Each window of the selected rows against ``reference``, for every field.

    Args:
        s: The store.
        reference: A dict of ``Store.predictions`` filters (``{"start": "2026-11-01", "end":
            "2026-11-04"}``, ``{"version": "1.3"}``), a pandas DataFrame (a training set, one
            column per feature) or a :class:`~predlog.analysis.Profile`.
        window: The windows' width: ``"1D"``, ``"6h"``, ``"15min"``, ``"7D"`` or a timedelta
            (``time_bucket`` on ``ts`` in UTC: daily windows start at midnight UTC, weekly ones
            on Mondays). Windows without rows between the first and the last are kept, empty.
        features: The fields (``"age"`` means ``"features.age"``; ``"prediction"``,
            ``"confidence"``, ``"context.country"`` as they are). Default: every feature of
            either side, then the prediction (each output of a struct prediction) and
            ``confidence``.
        statistic: ``"auto"`` (= ``"psi"``), ``"psi"``, ``"js"``, ``"mean"`` or ``"ks"``: see
            :mod:`predlog.analysis`. Category fields use PSI under ``"mean"`` and ``"ks"``.
        model: The model; may be omitted when the store holds one.
        min_rows: A window with fewer values of a field than this gets NaN for it (noted);
            so does every window of a field with fewer in the reference.
        threshold: For ``"psi"``/``"js"``: drifted above it (default :data:`THRESHOLDS`:
            PSI 0.2, JS 0.1). For ``"mean"``: drifted when the mean is further than this many
            reference standard deviations (ddof=0) from the reference's mean (default
            ``THRESHOLDS["wasserstein"]``, 0.1: for a pure shift the Wasserstein distance is
            the difference of means).
        alpha: For ``"ks"``: drifted when the p-value, adjusted over every cell by
            Benjamini–Hochberg, is below ``alpha``.
        **filters: ``Store.predictions`` filters selecting the rows cut into windows
            (``start``, ``end``, ``last``, ``version``, ``where``...). Default: every row of the
            model.

    All counting happens in DuckDB over one relation of the selected rows
    (``Store.relation(model, columns=[...], ordered=False, **filters)``); only a few numbers
    per window and field come back (``"ks"``: the values). Rows weigh ``1 / sample_rate``.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    stat = "psi" if statistic == "auto" else statistic
    windows = Windows.of(window)
    if not isinstance(min_rows, int) or min_rows < 1:
        raise ValueError(f"min_rows must be a positive integer, got {min_rows!r}")
    model, (reference,) = model_in_sides(model, reference)
    name = resolve_model(s, model, filters)
    cur = StoreSide(s, name, filters)
    ref = side_of(s, name, reference, "reference")
    if features is not None and not isinstance(features, str) and not list(features):
        raise ValueError("features=[] names no field: pass field names, or None for every field")
    fields, skipped = _fields(ref, cur, features)
    ref_sums = ref.summarize(list(fields.values())) if fields else {}
    if ref_sums and not any(x.n for x in ref_sums.values()):
        raise ValueError(
            f"the reference ({ref.label}) has no values of any field: nothing to compare against; check its "
            "filters (a time range with rows, a version the model has)"
        )
    plans: list[_Plan] = []
    for path, f in fields.items():
        ref_sum = ref_sums.get(path)
        if ref_sum is None or ref_sum.n == 0:
            skipped[path] = "no values in the reference"
            continue
        use = stat if f.kind == "number" or stat in ("psi", "js") else "psi"
        plans.append(_Plan(f, use, ref_sum))
    cells = _Cells(cur.relation, plans, windows, min_rows)
    df = cells.frame()
    _decide(df, stat, threshold, alpha, {p.field.path: p for p in plans})
    ref_std = {p.field.path: p.std for p in plans}
    summary = _summary(df, stat, threshold, windows, ref.label, name, skipped, ref_std, min_rows)
    return DriftOverTime(df, summary, reference=ref.label, windows=windows, filters=cur.filters, ref_std=ref_std)


def _fields(ref: Side, cur: Side, features: Sequence[str] | None) -> tuple[dict[str, Field], dict[str, str]]:
    """The fields to compare (path → the current side's field) and those skipped (→ why)."""
    rf, cf = ref.fields(), cur.fields()
    if isinstance(features, str):  # one field
        features = [features]
    if features is None:
        every = {**rf, **cf}
        names = sorted({p for p in every if p.startswith("features.")}, key=_natural)
        names += sorted(
            {
                p
                for p, f in every.items()
                if p.split(".", 1)[0].split("[", 1)[0] == "prediction"
                and not (f.kind is None and f"{p}.class" in every)  # a vector: by its derived fields
            },
            key=_natural,
        )
        names += ["confidence"] if "confidence" in cf else []
    else:
        names = [feature_path(f) for f in features]
        for p in names:
            if p not in rf and p not in cf:
                known = ", ".join(sorted(set(rf) | set(cf), key=_natural)) or "none"
                raise ValueError(f"{p!r} is on neither side; fields: {known}")
    fields: dict[str, Field] = {}
    skipped: dict[str, str] = {}
    for p in names:
        a, b = rf.get(p), cf.get(p)
        if a is None or b is None:
            skipped[p] = "only in the reference" if b is None else "only in the windows"
        elif b.kind is None or a.kind is None:
            skipped[p] = b.note or a.note
        elif a.kind != b.kind:
            skipped[p] = f"types differ: {a.dtype} in the reference, {b.dtype} in the windows"
        else:
            fields[p] = b
    return fields, skipped


@dataclasses.dataclass
class _Plan:
    """One field: its statistic and what the windows are compared with."""

    field: Field
    stat: str
    ref: Summary
    edges: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0))
    ref_shares: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        if isinstance(self.ref, Numbers) and self.stat in ("psi", "js"):
            self.edges = _stats.decile_edges(self.ref)
            self.ref_shares = _stats._binned(self.ref, self.edges)

    @property
    def binned(self) -> bool:
        return self.stat in ("psi", "js") or self.field.kind == "category"

    @property
    def std(self) -> float:
        """The reference's standard deviation (ddof=0), NaN for categories."""
        if isinstance(self.ref, Numbers):
            return math.sqrt(_stats._population_var(self.ref))
        return math.nan

    def bin_sql(self) -> str:
        """Each row's bin: its category, or its decile bin's number; NULL without a value."""
        col = self.field.sql
        if self.field.kind == "category":
            return col
        v = f"CAST({col} AS DOUBLE)"
        arms = "".join(f" WHEN {v} <= CAST('{float(e)!r}' AS DOUBLE) THEN {i}" for i, e in enumerate(self.edges))
        return f"CASE WHEN NOT ({self.present_sql()}) THEN NULL{arms} ELSE {len(self.edges)} END"

    def present_sql(self) -> str:
        return _present(self.field.sql, self.field)

    def distance(self, counts: Mapping[Any, float]) -> float:
        """PSI or JS of one window's weight per bin (or per category) against the reference."""
        if isinstance(self.ref, Numbers):
            c = np.array([counts.get(i, 0.0) for i in range(len(self.edges) + 1)])
            r_sh, c_sh = self.ref_shares, c / c.sum()
        else:
            total = float(sum(counts.values()))
            cur = Categories(counts=pooled(counts, KEPT_CATEGORIES), n=int(total), missing=0, n_eff=total)
            _, r, c = category_table(self.ref, cur)
            r_sh, c_sh = r / r.sum(), c / c.sum()
        return _stats.psi(r_sh, c_sh) if self.stat == "psi" else _stats.js(r_sh, c_sh)


class _Cells:
    """Every window × field cell, counted in DuckDB over the windows' relation."""

    def __init__(
        self,
        relation_of: Callable[[Sequence[str]], duckdb.DuckDBPyRelation],
        plans: Sequence[_Plan],
        windows: Windows,
        min_rows: int,
    ) -> None:
        self.relation_of = relation_of
        self.plans = list(plans)
        self.windows = windows
        self.min_rows = min_rows
        self.rows: dict[int, int] = {}  # window -> rows
        # path -> window -> (values, missing, value, p_value)
        self.cells: dict[str, dict[int, tuple[int, int, float, float]]] = {p.field.path: {} for p in plans}

    def _relation(self, plans: Sequence[_Plan]) -> duckdb.DuckDBPyRelation:
        """The windows' rows with the columns ``plans`` read (a derived field reads its source)."""
        return self.relation_of(["ts", "sample_rate", *dict.fromkeys(p.field.column for p in plans)])

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        binned = [p for p in self.plans if p.binned]
        moments = [p for p in self.plans if p.stat == "mean"]
        samples = [p for p in self.plans if p.stat == "ks"]
        if binned or not self.plans:
            self._binned(binned)
        if moments or samples:
            self._moments(moments, samples)
        if samples:
            values = max(sum(c[0] for c in self.cells[p.field.path].values()) for p in samples)
            if values > EXACT_LIMIT:
                raise ValueError(
                    f"statistic='ks' compares every window's values with the reference's, and one field has "
                    f"{values:,} values in the selection (more than {EXACT_LIMIT:,}, which would be read into "
                    "memory): select fewer rows (start=, end=, where=) or use statistic='psi', 'js' or 'mean', "
                    "which count in DuckDB"
                )
            with ThreadPoolExecutor(_WORKERS, thread_name_prefix="predlog-over-time") as pool:
                for path, got in zip((p.field.path for p in samples), pool.map(self._samples, samples), strict=True):
                    self.cells[path].update(got)
        span = self.windows.span(list(self.rows))
        times = utc_times(span)
        records: list[dict[str, Any]] = []
        for p in self.plans:
            path = p.field.path
            ref_value = p.ref.mean if isinstance(p.ref, Numbers) and p.stat == "mean" else math.nan
            few_ref = p.ref.n < self.min_rows
            for t, w in zip(times, span.tolist(), strict=True):
                n, missing, value, pv = self.cells[path].get(w, (0, self.rows.get(w, 0), math.nan, math.nan))
                note = ""
                if w not in self.rows:
                    note = "no rows"
                elif few_ref:
                    note = f"fewer than {self.min_rows} values in the reference"
                elif n < self.min_rows:
                    note = f"fewer than {self.min_rows} values"
                if note:
                    value, pv = math.nan, math.nan
                records.append(
                    {
                        "window_start": t,
                        "feature": path,
                        "kind": p.field.kind,
                        "statistic": p.stat,
                        "value": value,
                        "ref_value": ref_value,
                        "rows": n,
                        "missing": missing,
                        "p_value": pv,
                        "drifted": False,
                        "note": note,
                    }
                )
        return pd.DataFrame(records, columns=_COLUMNS)

    def _binned(self, plans: Sequence[_Plan]) -> None:
        """One query: per window, the weight in each bin of every binned field (GROUPING SETS)."""
        cols = [f"{p.bin_sql()} AS _b{i}" for i, p in enumerate(plans)]
        inner = ", ".join([f"{self.windows.sql()} AS _w", f"{WEIGHT} AS _wt", *cols])
        sets = ", ".join(["(_w)", *(f"(_w, _b{i})" for i in range(len(plans)))])
        picks = "".join(f", _b{i}, GROUPING(_b{i}) AS _g{i}" for i in range(len(plans)))
        sql = (
            f"SELECT _w{picks}, count(*) AS _n, sum(_wt) AS _s FROM (SELECT {inner} FROM side) "
            f"GROUP BY GROUPING SETS ({sets})"
        )
        got = _query(self._relation(plans), sql).fetchall()
        counts: list[dict[int, dict[Any, float]]] = [{} for _ in plans]
        present: list[dict[int, int]] = [{} for _ in plans]
        nulls: list[dict[int, int]] = [{} for _ in plans]
        for row in got:
            w, n, total = int(row[0]), int(row[-2]), float(row[-1])
            grouped = [i for i in range(len(plans)) if row[2 + 2 * i] == 0]
            if not grouped:
                self.rows[w] = n
                continue
            i = grouped[0]
            value = row[1 + 2 * i]
            if value is None:
                nulls[i][w] = n
            else:
                counts[i].setdefault(w, {})[_plain(value)] = total
                present[i][w] = present[i].get(w, 0) + n
        for i, p in enumerate(plans):
            out = self.cells[p.field.path]
            for w, by_bin in counts[i].items():
                n = present[i][w]
                value = p.distance(by_bin) if n >= self.min_rows else math.nan
                out[w] = (n, nulls[i].get(w, 0), value, math.nan)
            for w, m in nulls[i].items():
                if w not in out:
                    out[w] = (0, m, math.nan, math.nan)

    def _moments(self, moments: Sequence[_Plan], samples: Sequence[_Plan]) -> None:
        """One query: per window its rows, and each field's values (and weighted mean)."""
        values, aggs = [], ["count(*)"]
        for i, p in enumerate((*moments, *samples)):
            values.append(f"CASE WHEN {p.present_sql()} THEN CAST({p.field.sql} AS DOUBLE) END AS _v{i}")
            aggs.append(weighted_mean(f"_v{i}") if p.stat == "mean" else f"count(_v{i})")
        inner = ", ".join([f"{self.windows.sql()} AS _w", f"{WEIGHT} AS _wt", *values])
        sql = f"SELECT _w, {', '.join(aggs)} FROM (SELECT {inner} FROM side) GROUP BY _w"
        got = _query(self._relation([*moments, *samples]), sql).fetchall()
        for row in got:
            w, rows = int(row[0]), int(row[1])
            self.rows[w] = rows
            k = 2
            for p in (*moments, *samples):
                n = int(row[k])
                value = math.nan
                if p.stat == "mean":
                    value = float(row[k + 1]) if row[k + 1] is not None and n >= self.min_rows else math.nan
                self.cells[p.field.path][w] = (n, rows - n, value, math.nan)
                k += 2 if p.stat == "mean" else 1

    def _samples(self, p: _Plan) -> dict[int, tuple[int, int, float, float]]:
        """The KS statistic of every window of one field: its values come back, sorted by window."""
        sql = (
            f"SELECT {self.windows.sql()} AS _w, CAST({p.field.sql} AS DOUBLE) AS v, {WEIGHT} AS wt FROM side "
            f"WHERE {p.present_sql()}"
        )
        got = _query(self._relation([p]), sql).fetchnumpy()
        w, v, wt = (np.asarray(got[k]) for k in ("_w", "v", "wt"))
        order = np.lexsort((v, w))
        w, v, wt = w[order], v[order], wt[order]
        starts = np.flatnonzero(np.r_[True, w[1:] != w[:-1]]) if len(w) else np.empty(0, dtype=np.int64)
        out: dict[int, tuple[int, int, float, float]] = {}
        ref = p.ref
        assert isinstance(ref, Numbers)
        for lo, hi in zip(starts, np.r_[starts[1:], len(w)], strict=True):
            key = int(w[lo])
            n, missing = int(hi - lo), self.cells[p.field.path][key][1]
            if n < self.min_rows:
                out[key] = (n, missing, math.nan, math.nan)
                continue
            t = _stats.compare_numbers(ref, _numbers(v[lo:hi], wt[lo:hi]), method="asymp")
            out[key] = (n, missing, t.ks, t.ks_p)
        return out


def _numbers(x: np.ndarray, w: np.ndarray) -> Numbers:
    """A window's sorted values as ``_summary`` summarises a column: plain when every row weighs
    the same, else with their weights (``1 / sample_rate``)."""
    n = len(x)
    if n and w.min() != w.max():
        total = float(w.sum())
        mean = float(np.sum(w * x) / total)
        q = float(np.sum(w * w))
        denom = total - q / total
        var = float(np.sum(w * (x - mean) ** 2) / denom) if denom > 0 else math.nan
        return Numbers(x, w, n, 0, total * total / q, mean, var)
    mean = float(np.mean(x)) if n else math.nan
    var = float(np.var(x, ddof=1)) if n > 1 else math.nan
    return Numbers(x, np.ones(n), n, 0, float(n), mean, var)


def _decide(df: pd.DataFrame, stat: str, threshold: float | None, alpha: float, plans: Mapping[str, _Plan]) -> None:
    """Fill ``drifted``: distances over their threshold, means too far, KS by adjusted p-value."""
    tested = df["value"].notna()
    for use in df.loc[tested, "statistic"].unique():
        rows = tested & (df["statistic"] == use)
        if use in ("psi", "js"):
            limit = threshold if threshold is not None and stat == use else THRESHOLDS[use]
            df.loc[rows, "drifted"] = df.loc[rows, "value"] > limit
        elif use == "mean":
            limit = threshold if threshold is not None else THRESHOLDS["wasserstein"]
            std = df.loc[rows, "feature"].map(lambda p: plans[p].std).astype(float)
            gap = (df.loc[rows, "value"] - df.loc[rows, "ref_value"]).abs()
            df.loc[rows, "drifted"] = (gap > limit * std) | ((std == 0) & (gap > 0))
        else:  # ks
            adjusted = _stats.adjust(list(df.loc[rows, "p_value"].astype(float)), "bh")
            df.loc[rows, "drifted"] = np.asarray(adjusted) < alpha
    df["drifted"] = df["drifted"].astype(bool)


def _summary(
    df: pd.DataFrame,
    stat: str,
    threshold: float | None,
    windows: Windows,
    reference: str,
    model: str,
    skipped: Mapping[str, str],
    ref_std: Mapping[str, float],
    min_rows: int,
) -> dict[str, Any]:
    fields = list(dict.fromkeys(df["feature"]))
    starts = sorted(set(df["window_start"]))
    label = _NAMES[stat]
    limit = threshold if threshold is not None else THRESHOLDS.get(stat, THRESHOLDS["wasserstein"])
    since: dict[str, Any] = {}
    last: dict[str, float] = {}
    last_at: dict[str, Any] = {}
    ever: dict[str, list[Any]] = {}
    for path, rows in df[df["value"].notna()].groupby("feature", sort=False):
        flags = list(rows["drifted"])
        times = list(rows["window_start"])
        last[str(path)] = float(rows["value"].iloc[-1])
        last_at[str(path)] = times[-1]
        if any(flags):
            ever[str(path)] = [t for t, f in zip(times, flags, strict=True) if f]
        k = len(flags)
        while k and flags[k - 1]:
            k -= 1
        if k < len(flags):
            since[str(path)] = times[k]
    strength = _strength(df, ref_std)
    drifted = sorted(since, key=lambda p: -strength.get(p, 0.0))
    what = f"{label} against {reference}"
    if not starts:
        text = "No rows in the selection: nothing to compare."
    elif not last:
        text = f"No window had {min_rows} or more values of a field to compare; see the notes in .df."
    elif drifted:
        top = drifted[0]
        on = "the last window" if last_at[top] == starts[-1] else when(last_at[top], windows)
        text = f"{top} drifted from {when(since[top], windows)} ({_value(df, top)} on {on})"
        more = drifted[1:]
        text += f"; {len(more)} more: {', '.join(more[:5])}{'…' if len(more) > 5 else ''}." if more else "."
    elif ever:
        top = max(ever, key=lambda p: len(ever[p]))
        text = (
            f"No field drifted on its last window; {top} drifted in {len(ever[top])} of {len(starts)} windows, "
            f"last on {when(ever[top][-1], windows)}."
        )
    else:
        test = "KS, BH-adjusted p < alpha" if stat == "ks" else f"{label} above {number_text(limit)}"
        text = f"No drift: no window of the {len(last)} fields compared moved past the reference ({test})."
    return {
        "text": text,
        "model": model,
        "reference": reference,
        "compared": what,
        "window": windows.text,
        "statistic": stat,
        "threshold": None if stat == "ks" else limit,
        "windows": len(starts),
        "fields": len(fields),
        "start": starts[0] if starts else None,
        "end": starts[-1] + windows.width if starts else None,
        "drifted": drifted,
        "since": since,
        "last": last,
        "skipped": dict(skipped),
    }


def _strength(df: pd.DataFrame, ref_std: Mapping[str, float]) -> dict[str, float]:
    """How strongly each field drifted on its last tested window (to order them): the distance,
    or for means the gap in reference standard deviations."""
    out: dict[str, float] = {}
    for path, rows in df[df["value"].notna()].groupby("feature", sort=False):
        row = rows.iloc[-1]
        value = float(row["value"])
        if row["statistic"] == "mean":
            std = ref_std.get(str(path), math.nan)
            gap = abs(value - float(row["ref_value"]))
            value = gap / std if std > 0 else (math.inf if gap > 0 else 0.0)
        out[str(path)] = value
    return out


def _value(df: pd.DataFrame, path: str) -> str:
    """``PSI 0.31`` or ``mean 2.4, reference 1.9``: a field's last tested cell."""
    row = df[(df["feature"] == path) & df["value"].notna()].iloc[-1]
    text = f"{_NAMES[row['statistic']]} {number_text(float(row['value']))}"
    if row["statistic"] == "mean":
        text += f", reference {number_text(float(row['ref_value']))}"
    return text
