"""Is the input changing, and what is the model predicting: drift between two sides.

:func:`input_drift` compares every feature of a reference (a store selection, a DataFrame or
a :class:`~predlog.analysis.Profile`) with a current side; :func:`prediction_drift` does the
same for what the model answered, without labels. Both summarise each side in DuckDB
(:mod:`._summary`) and compute the statistics from the summaries (:mod:`._stats`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import _stats
from ._result import Result, figure, fmt
from ._sides import Side, StoreSide, feature_path, last_day, model_in_sides, one_kind, resolve_model, side_of
from ._summary import NO_VALUE, Categories, Field, Numbers, Summary

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from predlog.replay import Store

__all__ = ["METHODS", "THRESHOLDS", "DriftResult", "input_drift", "prediction_drift"]

METHODS = ("auto", "ks", "chi2", "psi", "js", "wasserstein")
"""``method=`` values: the statistic that decides whether a field drifted."""

THRESHOLDS = {"psi": 0.2, "js": 0.1, "wasserstein": 0.1}
"""Default thresholds of the distance methods: a field drifted when its distance is above.

PSI above 0.2 is the usual "significant shift"; Jensen–Shannon distance (base 2) above 0.1;
Wasserstein distance above 0.1 reference standard deviations.
"""

_COLUMNS = [
    "feature",
    "kind",
    "method",
    "statistic",
    "p_value",
    "p_adjusted",
    "drifted",
    "ref_rows",
    "cur_rows",
    "ref_missing",
    "cur_missing",
    "ks",
    "ks_p_value",
    "ks_method",
    "ks_location",
    "wasserstein",
    "psi",
    "js",
    "chi2",
    "chi2_p_value",
    "new_categories",
    "new_share",
    "error_bound",
    "note",
]


class DriftResult(Result):
    """Drift between a reference and a current side, one row per field.

    Attributes:
        df: One row per field: ``feature``, ``kind`` (``"number"``/``"category"``), ``method``
            (the test that decides), ``statistic`` and ``p_value`` of that test, ``p_adjusted``
            (after ``correction``), ``drifted``, ``ref_rows``/``cur_rows`` (rows with a value),
            ``ref_missing``/``cur_missing`` (shares without one), every statistic computed
            (``ks``, ``ks_p_value``, ``ks_method`` as scipy chose it, ``ks_location``,
            ``wasserstein`` in reference standard deviations, ``psi``, ``js``, ``chi2``,
            ``chi2_p_value``), ``new_categories`` (current categories the reference lacks),
            ``new_share``, ``error_bound`` (of ``ks``: 0 unless a side was sketched) and
            ``note`` (why a field was not tested: "insufficient data", "only in reference"...).
            Drifted fields first, then by p-value.
        summary: ``text`` (one sentence), ``model``, ``reference``, ``current``, ``features``
            (fields compared), ``tested``, ``drifted``, ``share_drifted``, ``alpha``,
            ``correction``, ``method``.
        means: For number fields: ``mean_ref``, ``mean_cur``, ``mean_diff`` and Welch's 95 %
            interval (``ci_low``, ``ci_high``) and p-value (``welch_p_value``).
        shares: For category fields: ``category``, ``ref_share``, ``cur_share``, ``diff``.
        reference, current: The sides' descriptions; ``filters`` are the store filters of the
            current side (usable as ``s.predictions(**result.filters)``), None for a frame.
    """

    _title = "Drift"

    def __init__(
        self,
        df: pd.DataFrame,
        summary: dict[str, Any],
        means: pd.DataFrame,
        shares: pd.DataFrame,
        *,
        reference: Side,
        current: Side,
        summaries: tuple[Mapping[str, Summary], Mapping[str, Summary]],
    ) -> None:
        self.df = df
        self.summary = summary
        self.means = means
        self.shares = shares
        self.reference = reference.label
        self.current = current.label
        self.filters = current.filters
        self._summaries = summaries

    @property
    def drifted(self) -> list[str]:
        """The fields that drifted, strongest first."""
        return [str(f) for f in self.df.loc[self.df["drifted"].astype(bool), "feature"]]

    def _table(self) -> pd.DataFrame:
        cols = ["feature", "kind", "method", "statistic", "p_value", "p_adjusted", "drifted", "psi", "note"]
        return self.df[[c for c in cols if c in self.df.columns]]

    def to_dict(self) -> dict[str, Any]:
        from ._result import jsonable

        out = super().to_dict()
        out["means"] = jsonable(self.means.to_dict("records"))
        out["shares"] = jsonable(self.shares.to_dict("records"))
        return out

    def plot(self, features: Sequence[str] | None = None, *, top: int = 6) -> Figure:
        """Reference against current for ``features`` (default: the ``top`` strongest):
        ECDFs for numbers, shares for categories."""
        ref, cur = self._summaries
        names = [feature_path(f) for f in features] if features else list(self.df["feature"])
        names = [n for n in names if n in ref and n in cur][: (len(names) if features else top)]
        if not names:
            raise ValueError("nothing to plot: no field has values on both sides")
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig = figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            a, b = ref[name], cur[name]
            if isinstance(a, Numbers) and isinstance(b, Numbers):
                for s, label in ((a, f"reference ({self.reference})"), (b, f"current ({self.current})")):
                    ax.step(s.values, s.weights.cumsum() / s.weights.sum(), where="post", label=label)
                ax.set_ylabel("ECDF")
            elif isinstance(a, Categories) and isinstance(b, Categories):
                sh = self.shares[self.shares["feature"] == name].head(12)
                x = range(len(sh))
                ax.bar([i - 0.2 for i in x], sh["ref_share"], width=0.4, label="reference")
                ax.bar([i + 0.2 for i in x], sh["cur_share"], width=0.4, label="current")
                ax.set_xticks(list(x), [str(c) for c in sh["category"]], rotation=45, ha="right")
                ax.set_ylabel("share")
            row = self.df[self.df["feature"] == name].iloc[0]
            flag = " (drifted)" if row["drifted"] else ""
            p = row["p_adjusted"]
            said = "" if p is None or _nan(p) else f", p_adj={fmt(p)}"  # the p-value the decision used
            ax.set_title(f"{name}{flag}\n{row['method']} {fmt(row['statistic'])}{said}", fontsize=9)
        for ax in list(axes.flat)[len(names) :]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        return fig


def _sides(s: Store | None, reference: Any, current: Any, model: str | None) -> tuple[Side, Side, str | None]:
    """The reference and current sides, and the model when the store is read."""
    from predlog.replay import Store

    store = s if isinstance(s, Store) else None
    if s is not None and store is None:
        raise TypeError(f"the first argument must be a predlog.replay.Store (or None), got {type(s).__name__}")
    needs_store = isinstance(reference, Mapping) or current is None or isinstance(current, Mapping)
    if needs_store and store is None:
        raise TypeError("a store selection (a dict of filters, or current=None for the last day) needs a Store")
    model, (reference, current) = model_in_sides(model, reference, current)
    live = {"include_live": any(isinstance(x, Mapping) and x.get("include_live") for x in (reference, current))}
    name = resolve_model(store, model, live) if needs_store and store is not None else model
    ref = side_of(store, name, reference, "reference")
    if current is None:
        assert store is not None and name is not None
        window = last_day(store, name, {"include_live": True} if live["include_live"] else None)
        cur: Side = StoreSide(store, name, window, label=f"last day ({_span(window)})")
    else:
        cur = side_of(store, name, current, "current")
    return ref, cur, name


def _span(window: Mapping[str, Any]) -> str:
    return f"{window['start']:%Y-%m-%d %H:%M} → {window['end']:%Y-%m-%d %H:%M} UTC"


def input_drift(
    s: Store | None,
    reference: Any,
    current: Any = None,
    *,
    model: str | None = None,
    features: Sequence[str] | None = None,
    method: str = "auto",
    alpha: float = 0.05,
    correction: str | None = "bh",
    min_rows: int = 30,
    threshold: float | None = None,
) -> DriftResult:
    """Which inputs changed between ``reference`` and ``current``, feature by feature.

    Args:
        s: The store (None when both sides are DataFrames or profiles).
        reference, current: Each a dict of ``Store.predictions`` filters
            (``{"version": "1.3"}``, ``{"start": "2026-11-01", "end": "2026-11-08"}``,
            ``{"last": "7d"}``, with ``where=``), a pandas DataFrame with one column per
            feature (a training set), or a :class:`Profile`. ``current=None`` is the last
            day: the 24 hours ending with the model's newest row.
        model: The model; may be omitted when the store holds one.
        features: Fields to compare (``"age"`` means ``"features.age"``; ``"context.country"``
            compares a context field). Default: every feature of either side.
        method: The test that decides whether a field drifted: ``"auto"`` (Kolmogorov–Smirnov
            for numbers, chi-squared for categories), ``"ks"``, ``"chi2"`` (each for its kind;
            the other kind keeps its auto test), or a distance with a threshold: ``"psi"``,
            ``"js"``, ``"wasserstein"`` (numbers only) — see :data:`THRESHOLDS`.
        alpha: Significance level of the tests, after correction.
        correction: Over the tested fields: ``"bh"`` (Benjamini–Hochberg, as
            ``scipy.stats.false_discovery_control``), ``"bonferroni"`` or None.
        min_rows: Fewer values than this on either side: "insufficient data", not tested.
        threshold: For the distance methods, instead of :data:`THRESHOLDS`.

    Every statistic is computed for every field and kept in ``df``: KS statistic and p-value
    (equal to ``scipy.stats.ks_2samp``, whose ``method="auto"`` rule picks exact or
    asymptotic), Wasserstein distance in reference standard deviations, PSI on the
    reference's deciles and Jensen–Shannon distance on the same bins for numbers;
    chi-squared (``scipy.stats.chi2_contingency``), PSI and Jensen–Shannon on the categories
    for categories. See :mod:`predlog.analysis` for the formulas.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    ref, cur, name = _sides(s, reference, current, model)
    rf, cf = ref.fields(), cur.fields()
    if features is None:
        paths = sorted({p for p in (*rf, *cf) if p.startswith("features.")}, key=_natural)
    else:
        paths = [feature_path(f) for f in ([features] if isinstance(features, str) else features)]
        for p in paths:
            if p not in rf and p not in cf:
                raise ValueError(
                    f"{p!r} is on neither side; fields: {', '.join(sorted(set(rf) | set(cf), key=_natural)) or 'none'}"
                )
    return _compare(
        ref,
        cur,
        name,
        paths,
        method=method,
        alpha=alpha,
        correction=correction,
        min_rows=min_rows,
        threshold=threshold,
        what="input",
    )


def prediction_drift(
    s: Store | None,
    reference: Any,
    current: Any = None,
    *,
    model: str | None = None,
    alpha: float = 0.05,
    correction: str | None = "bh",
    min_rows: int = 30,
) -> DriftResult:
    """What the model predicts, reference against current, without labels.

    Number predictions: the mean shift with Welch's 95 % interval (in ``means``) and KS;
    class predictions (strings, integers, booleans): class shares (in ``shares``) with a
    chi-squared test; probability vectors: the predicted class (argmax) shares and the mean
    probability of each class (``prediction[i]`` in ``means``); ``confidence``: KS and the
    mean shift. A prediction with several outputs (a struct) is compared output by output.
    Sides as for :func:`input_drift`.
    """
    ref, cur, name = _sides(s, reference, current, model)
    rf, cf = ref.fields(), cur.fields()
    for side, fields in ((ref, rf), (cur, cf)):
        f = fields.get("prediction")
        if isinstance(side, StoreSide) and f is not None and f.dtype == "VARCHAR":
            one_kind(side.store, side.model, side.filters, "prediction_drift")
    every = {**cf, **rf}
    paths = sorted(
        {
            p
            for p, f in every.items()
            if (p == "confidence" or p.split(".", 1)[0].split("[", 1)[0] == "prediction")
            and not (f.kind is None and f"{p}.class" in every)  # a vector: compared by its derived fields
        },
        key=_natural,
    )
    if not paths:
        raise ValueError("neither side has a prediction column")
    return _compare(
        ref,
        cur,
        name,
        paths,
        method="auto",
        alpha=alpha,
        correction=correction,
        min_rows=min_rows,
        threshold=None,
        what="prediction",
    )


def _natural(path: str) -> tuple[Any, ...]:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path))


def _compare(
    ref: Side,
    cur: Side,
    model: str | None,
    paths: list[str],
    *,
    method: str,
    alpha: float,
    correction: str | None,
    min_rows: int,
    threshold: float | None,
    what: str,
) -> DriftResult:
    import pandas as pd

    rf, cf = ref.fields(), cur.fields()
    rows: list[dict[str, Any]] = []
    means: list[dict[str, Any]] = []
    shares: list[dict[str, Any]] = []
    kept: tuple[dict[str, Summary], dict[str, Summary]] = ({}, {})

    def one(p: str) -> dict[str, Any]:
        """The row of one field: both sides summarised, then compared (run in parallel)."""
        row: dict[str, Any] = dict.fromkeys(_COLUMNS)
        row.update(feature=p, drifted=False, note="", new_categories=[])
        in_ref = p in rf and rf[p].note != NO_VALUE
        in_cur = p in cf and cf[p].note != NO_VALUE
        if not (in_ref and in_cur):
            row["kind"] = (rf[p] if in_ref else cf[p] if in_cur else (rf.get(p) or cf[p])).kind
            row["note"] = "only in reference" if in_ref else "only in current" if in_cur else NO_VALUE
            return row
        a_field, b_field = rf[p], cf[p]
        row["kind"] = a_field.kind or b_field.kind
        if not _comparable(a_field, b_field):
            row["note"] = a_field.note or b_field.note or f"types differ: {a_field.dtype} / {b_field.dtype}"
            return row
        a, b = ref.summarize([a_field]).get(p), cur.summarize([b_field]).get(p)
        if a is None or b is None:
            row["note"] = "no values"
            return row
        kept[0][p], kept[1][p] = _small(a), _small(b)
        row.update(ref_rows=a.n, cur_rows=b.n, ref_missing=_share(a.missing, a.n), cur_missing=_share(b.missing, b.n))
        if (a.n == 0) != (b.n == 0):  # in the other side's schema, but never given a value there
            row["note"] = "only in reference" if a.n else "only in current"
            return row
        if a.n < min_rows or b.n < min_rows:
            row["note"] = f"insufficient data (fewer than {min_rows} values)"
            return row
        if isinstance(a, Numbers) and isinstance(b, Numbers):
            _number_row(row, a, b, method)
            w = _stats.welch(a, b)
            row["_means"] = {
                "feature": p,
                "mean_ref": a.mean,
                "mean_cur": b.mean,
                "mean_diff": w.diff,
                "ci_low": w.low,
                "ci_high": w.high,
                "welch_p_value": w.p,
            }
        elif isinstance(a, Categories) and isinstance(b, Categories):
            t = _category_row(row, a, b, method)
            row["_shares"] = [
                {"feature": p, "category": c, "ref_share": rsh, "cur_share": csh, "diff": csh - rsh}
                for c, rsh, csh in zip(t.categories, t.ref_shares, t.cur_shares, strict=True)
            ]
        if _constant(a) and _constant(b):
            row["note"] = "constant"
        return row

    # Fields in parallel: DuckDB and numpy's sorts and merges release the GIL, and only a
    # few fields' sorted values are in memory at once.
    with ThreadPoolExecutor(_WORKERS, thread_name_prefix="predlog-drift") as pool:
        for row in pool.map(one, paths):
            if "_means" in row:
                means.append(row.pop("_means"))
            shares.extend(row.pop("_shares", []))
            rows.append(row)
    rs, cs = kept
    _decide(rows, method, alpha, correction, threshold)
    df = pd.DataFrame(rows, columns=_COLUMNS)
    # Drifted first; then by adjusted p-value, or by the distance where there is none.
    df = df.assign(
        _order=df["drifted"].map({True: 0, False: 1}),
        _p=df["p_adjusted"].astype(float).fillna(2.0),
        _d=-df["statistic"].astype(float).fillna(-math.inf),
    )
    df = df.sort_values(["_order", "_p", "_d"], kind="stable").drop(columns=["_order", "_p", "_d"])
    df = df.reset_index(drop=True)
    tested = int(df["p_adjusted"].notna().sum() if method in ("auto", "ks", "chi2") else df["statistic"].notna().sum())
    drifted = int(df["drifted"].sum())
    summary = {
        "text": _sentence(df, what, ref.label, cur.label, tested, drifted, correction),
        "model": model,
        "reference": ref.label,
        "current": cur.label,
        "features": len(paths),
        "tested": tested,
        "drifted": drifted,
        "share_drifted": drifted / tested if tested else 0.0,
        "alpha": alpha,
        "correction": correction,
        "method": method,
    }
    return DriftResult(
        df,
        summary,
        pd.DataFrame(
            means, columns=["feature", "mean_ref", "mean_cur", "mean_diff", "ci_low", "ci_high", "welch_p_value"]
        ),
        pd.DataFrame(shares, columns=["feature", "category", "ref_share", "cur_share", "diff"]),
        reference=ref,
        current=cur,
        summaries=(rs, cs),
    )


_WORKERS = min(4, os.cpu_count() or 1)
_PLOT_POINTS = 2_000


def _small(s: Summary) -> Summary:
    """What plot() keeps of a summary: at most _PLOT_POINTS values (the ECDF within 1/2,000)."""
    from ._profile import bounded

    return bounded(s, _PLOT_POINTS)


def _comparable(a: Field, b: Field) -> bool:
    return a.kind is not None and a.kind == b.kind


def _share(missing: int, n: int) -> float:
    return missing / (missing + n) if missing + n else math.nan


def _constant(s: Summary) -> bool:
    if isinstance(s, Numbers):
        return len(s.values) > 0 and s.values[0] == s.values[-1]
    return len(s.counts) == 1


def _number_row(row: dict[str, Any], a: Numbers, b: Numbers, method: str) -> None:
    t = _stats.compare_numbers(a, b)
    row.update(
        ks=t.ks,
        ks_p_value=t.ks_p,
        ks_method=t.ks_method,
        ks_location=t.ks_location,
        wasserstein=t.wasserstein_norm,
        psi=t.psi,
        js=t.js,
        error_bound=t.error_bound,
    )
    use = "ks" if method in ("auto", "ks", "chi2") else method
    row["method"] = use
    if use == "ks":
        row.update(statistic=t.ks, p_value=t.ks_p)
    else:
        row["statistic"] = {"psi": t.psi, "js": t.js, "wasserstein": t.wasserstein_norm}[use]


def _category_row(row: dict[str, Any], a: Categories, b: Categories, method: str) -> _stats.CategoryTest:
    t = _stats.compare_categories(a, b)
    row.update(chi2=t.chi2, chi2_p_value=t.chi2_p, psi=t.psi, js=t.js, new_categories=t.new, new_share=t.new_share)
    use = "chi2" if method in ("auto", "ks", "chi2", "wasserstein") else method
    row["method"] = use
    if use == "chi2":
        row.update(statistic=t.chi2, p_value=t.chi2_p)
    else:
        row["statistic"] = {"psi": t.psi, "js": t.js}[use]
    return t


def _decide(
    rows: list[dict[str, Any]], method: str, alpha: float, correction: str | None, threshold: float | None
) -> None:
    tested = [r for r in rows if r["p_value"] is not None]
    for r, adj in zip(tested, _stats.adjust([r["p_value"] for r in tested], correction), strict=True):
        r["p_adjusted"] = adj
        r["drifted"] = bool(adj < alpha)
    for r in rows:
        if r["p_value"] is None and r["statistic"] is not None:
            limit = threshold if threshold is not None else THRESHOLDS[r["method"]]
            r["drifted"] = bool(r["statistic"] > limit)


def _sentence(
    df: pd.DataFrame, what: str, ref: str, cur: str, tested: int, drifted: int, correction: str | None
) -> str:
    noun = "prediction columns" if what == "prediction" else "features"
    one_side = [
        f"{r.feature} ({r.note.removeprefix('only in ')})" for r in df.itertuples() if r.note.startswith("only in ")
    ]
    tail = f" On one side only: {', '.join(one_side)}." if one_side else ""
    if tested == 0:
        return f"No {noun} could be compared between {ref} and {cur}.{tail}"
    if drifted == 0:
        return f"No drift: none of {tested} {noun} differs between {ref} and {cur}.{tail}"
    top = df.iloc[0]
    lead = f"{top['feature']} ({top['method']} {fmt(top['statistic'])}"
    p_name = "p" if correction is None else f"p ({correction}-adjusted)"
    has_p = top["p_adjusted"] is not None and not _nan(top["p_adjusted"])
    lead += f", {p_name} {fmt(top['p_adjusted'])})" if has_p else ")"
    return f"{drifted} of {tested} {noun} drifted between {ref} and {cur}; strongest: {lead}.{tail}"


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)
