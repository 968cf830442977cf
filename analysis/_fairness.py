"""Is the model fair to each group: metrics per group of sensitive fields, their gaps, and intervals.

:func:`fairness_audit` reads the labeled rows of an investigation (:mod:`._labeled`: a
store selection with its latest labels, or a DataFrame) in ONE aggregate pass in DuckDB:

- classification: one row per group × weight × (true class, predicted class, scored) with
  its count. Grouping by the row's weight (``1 / sample_rate``) keeps every weighted sum
  exact (a count times a weight); every metric of every group, of the whole selection and
  of every bootstrap replicate follows from these cells in numpy.
- regression: one row per group × weight with counts, the sums of the absolute errors and
  of the predictions, and their spreads (``var_pop``) for the intervals.

Number fields are cut into quantile bins first (:meth:`Labeled.cuts`, a pass over a sample
of the predictions without the label join). The result reads like fairlearn's
``MetricFrame``: ``.overall``, ``.by_group``, ``.group_min()``, ``.group_max()``,
``.difference()``, ``.ratio()``, with the usual fairness measures, the four-fifths rule and
stratified bootstrap intervals on every gap. docs/fairness.md says how each number is made.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._bins import check_bins
from ._result import Result, figure, jsonable

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from matplotlib.figure import Figure

    from predlog.replay import Store

    from ._labeled import Labeled

__all__ = [
    "CLASSIFICATION_METRICS",
    "FOUR_FIFTHS",
    "MEASURES",
    "METHODS",
    "REGRESSION_METRICS",
    "FairnessResult",
    "fairness_audit",
]

CLASSIFICATION_METRICS = ("selection_rate", "tpr", "fpr", "fnr", "precision", "accuracy", "count")
"""Metrics of a classification, per group (``count`` is the group's rows, unweighted)."""

REGRESSION_METRICS = ("mae", "mean_prediction", "count")
"""Metrics of a regression, per group."""

MEASURES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "equal_opportunity_difference",
)
"""The summary measures of a classification, between groups (fairlearn's functions of the same names)."""

METHODS = ("between_groups", "to_overall")
"""How ``difference()`` and ``ratio()`` compare groups (fairlearn's ``method=``)."""

MAX_LISTED = 20
"""The summary lists at most this many too-small groups and groups outside four-fifths (``.df``
has them all)."""

FOUR_FIFTHS = 0.8
"""A group passes the four-fifths rule when its selection rate is within [4/5, 5/4] of the reference group's."""

_NEED_LABELS = frozenset({"tpr", "fpr", "fnr", "precision", "accuracy", "mae"})

# Per-row statistics of a classification cell; a group's value is their sum over its rows.
_ROWS, _PRED, _SC, _W, _WP, _WSEL, _WSC, _WTP, _WFN, _WFP, _WTN, _WHIT = range(12)
_K = 12


# ---------------------------------------------------------------- the result


class FairnessResult(Result):
    """A fairness audit: metrics per group of the sensitive fields, their gaps and intervals.

    Attributes:
        df: One row per group (every combination of the sensitive fields' values found in
            the rows; a number field by its bin, ``"[31, 42)"``; a missing value is its own
            group, ``None``): the sensitive fields by path, ``count`` (rows),
            ``predicted_rows`` (rows with a usable prediction), ``scored_rows`` (rows with
            a label and a usable prediction), ``weight`` (the calls the rows stand for: the
            sum of ``1 / sample_rate``), ``too_small`` (fewer than ``min_group_size`` rows:
            shown, left out of every gap), each metric with ``_low``/``_high`` bootstrap
            bounds, and for a classification ``reference`` (the reference group),
            ``impact_ratio`` (selection rate / the reference group's, with bounds) and
            ``four_fifths`` (True: passes, False: fails, None: not judged).
        overall: Each metric over the whole selection (a Series; too-small groups included).
        by_group: Each metric per group (a DataFrame indexed by the sensitive fields'
            values, one column per metric), like ``MetricFrame.by_group``.
        gaps: Per metric, ``difference`` and ``ratio`` (between groups), ``difference_to_overall``
            and ``ratio_to_overall``, each with ``_low``/``_high`` bootstrap bounds.
        measures: Per summary measure (demographic parity difference and ratio, equalized
            odds difference and ratio, equal opportunity difference): ``value``, ``low``,
            ``high``. Empty for a regression.
        cuts: The cut points of each number field (``features.age``: ``[31.0, 42.0, 55.0]``).
        summary: ``text`` (one sentence: the largest gap and between which groups), and
            ``model``, ``task``, ``rule``, ``threshold``, ``positive_label``, ``sensitive``,
            ``metrics``, ``rows``, ``groups``, ``too_small`` (the groups left out),
            ``reference_group``, ``four_fifths_failing``, ``largest_gap``, every measure
            (``{"value", "low", "high"}``), ``ci``, ``n_boot``, ``seed``, ``filters``.
    """

    _title = "Fairness audit"

    def __init__(
        self,
        df: pd.DataFrame,
        overall: pd.Series,
        by_group: pd.DataFrame,
        gaps: pd.DataFrame,
        measures: pd.DataFrame,
        summary: dict[str, Any],
        *,
        sensitive: list[str],
        eligible: np.ndarray,
        cuts: dict[str, list[float]],
    ) -> None:
        self.df = df
        self.overall = overall
        self.by_group = by_group
        self.gaps = gaps
        self.measures = measures
        self.summary = summary
        self.sensitive = sensitive
        self.cuts = cuts
        self._eligible = eligible

    @property
    def metrics(self) -> list[str]:
        """The metrics computed, in column order."""
        return list(self.by_group.columns)

    def _compared(self) -> pd.DataFrame:
        """``by_group`` without the too-small groups (the groups every gap compares)."""
        return self.by_group[self._eligible]

    def group_min(self) -> pd.Series:
        """The smallest value of each metric over the groups compared (too-small groups left out)."""
        return self._compared().min()

    def group_max(self) -> pd.Series:
        """The largest value of each metric over the groups compared (too-small groups left out)."""
        return self._compared().max()

    def difference(self, method: str = "between_groups") -> pd.Series:
        """The largest gap of each metric, as fairlearn's ``MetricFrame.difference``.

        Args:
            method: ``"between_groups"``: ``group_max() - group_min()``; ``"to_overall"``:
                the largest ``|group - overall|``.
        """
        _check_method(method)
        col = "difference" if method == "between_groups" else "difference_to_overall"
        return self.gaps[col].rename(None)

    def ratio(self, method: str = "between_groups") -> pd.Series:
        """The smallest ratio of each metric, as fairlearn's ``MetricFrame.ratio``.

        Args:
            method: ``"between_groups"``: ``group_min() / group_max()``; ``"to_overall"``:
                the smallest of ``group / overall`` and ``overall / group`` over the groups.
        """
        _check_method(method)
        col = "ratio" if method == "between_groups" else "ratio_to_overall"
        return self.gaps[col].rename(None)

    def _table(self) -> pd.DataFrame:
        cols = [*self.sensitive, "count", "too_small", *[m for m in self.metrics if m != "count"]]
        cols += ["impact_ratio", "four_fifths"]
        return self.df[[c for c in cols if c in self.df.columns]]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["overall"] = jsonable(self.overall.to_dict())
        out["gaps"] = jsonable(self.gaps.reset_index().to_dict("records"))
        out["measures"] = jsonable(self.measures.reset_index().to_dict("records"))
        out["cuts"] = jsonable(self.cuts)
        return out

    def plot(self, metrics: str | Sequence[str] | None = None) -> Figure:
        """Each metric per group with its bootstrap interval as whiskers, the overall value as
        a dashed line; too-small groups drawn hollow. One panel per metric (default: every
        metric but ``count``)."""
        names = [m for m in self.metrics if m != "count"] if metrics is None else _as_list(metrics)
        for name in names:
            if name not in self.metrics:
                raise ValueError(f"no metric {name!r} in this result; choose from {', '.join(self.metrics)}")
        if not names:
            names = list(self.metrics)
        labels = [
            _group_name(self.sensitive, key, short=True) for key in self.df[self.sensitive].itertuples(index=False)
        ]
        height = max(2.4, 0.32 * len(labels) + 1.2)
        fig = figure(figsize=(min(3.2 * len(names), 14.0), height), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True, squeeze=False)[0])
        y = np.arange(len(labels))
        small = self.df["too_small"].to_numpy(dtype=bool)
        for ax, name in zip(axes, names, strict=True):
            v = self.df[name].to_numpy(dtype=float)
            lo = self.df.get(f"{name}_low", self.df[name]).to_numpy(dtype=float)
            hi = self.df.get(f"{name}_high", self.df[name]).to_numpy(dtype=float)
            err = np.vstack([np.where(np.isnan(lo), 0.0, v - lo), np.where(np.isnan(hi), 0.0, hi - v)])
            err = np.where(np.isnan(err), 0.0, np.maximum(err, 0.0))
            for mask, face in ((~small, "C0"), (small, "none")):
                if mask.any():
                    ax.errorbar(
                        v[mask], y[mask], xerr=err[:, mask], fmt="o", color="C0", mfc=face, capsize=3, linewidth=1
                    )
            overall = float(self.overall[name])
            if math.isfinite(overall):
                ax.axvline(overall, color="grey", linestyle="--", linewidth=1)
            ax.set_xlabel(name)
        axes[0].set_yticks(y, labels, fontsize=8)
        axes[0].invert_yaxis()
        fig.suptitle(str(self.summary.get("text", "")), fontsize=9, wrap=True)
        return fig


# ---------------------------------------------------------------- entry point


def fairness_audit(
    source: Store | pd.DataFrame | pa.Table,
    sensitive: str | Sequence[str],
    *,
    model: str | None = None,
    metrics: str | Sequence[str] | None = None,
    reference_group: Any = None,
    ci: float = 0.95,
    n_boot: int = 1000,
    min_group_size: int = 30,
    threshold: float = 0.5,
    positive_label: Any = None,
    bins: int = 4,
    seed: int = 0,
    prediction: str = "prediction",
    label: str | None = "label",
    task: str = "auto",
    **filters: Any,
) -> FairnessResult:
    """Metrics per group of the sensitive fields, their gaps, the four-fifths rule, and
    bootstrap intervals on every gap.

    Args:
        source: A :class:`~predlog.replay.Store` (the selected predictions with their latest
            labels, as ``Store.labeled``) or a pandas DataFrame (or pyarrow Table) with a
            prediction column, a label column and one column per feature or context field.
        sensitive: A field or a list of fields, named as the store's filters name them:
            ``"context.gender"``, ``"features.age"`` (a bare name is a feature). With several,
            each combination of values is a group (intersectional). A number field is cut
            into ``bins`` quantile bins.
        model: The model; may be omitted when the store holds one.
        metrics: The metrics shown (default: all that apply and that the rows can give):
            ``selection_rate``, ``tpr``, ``fpr``, ``fnr``, ``precision``, ``accuracy``,
            ``count`` for a classification; ``mae``, ``mean_prediction``, ``count`` for a
            regression. Every metric but ``selection_rate``, ``mean_prediction`` and
            ``count`` needs labels.
        reference_group: The group the four-fifths rule compares with: a value (one
            sensitive field), a tuple of values in the order of ``sensitive``, or a dict
            ``{field: value}``; a number field's group is its bin's label. Default: the
            largest group (by weight) that is not too small.
        ci: The confidence level of the intervals (percentile bootstrap).
        n_boot: Bootstrap replicates (0: no intervals).
        min_group_size: A group with fewer rows is listed, marked ``too_small`` and left
            out of ``group_min``/``group_max``, every gap, every measure and the four-fifths
            rule; its rows still count in ``overall``.
        threshold: A float score at or above ``threshold`` is class 1.
        positive_label: The positive class of the binary metrics: default 1 (True) for a
            score or for 0/1 (boolean) classes, index 1 of a probability vector of two
            entries; required for other classes.
        bins: Quantile bins of a number field.
        seed: Seeds the bootstrap: the same rows and seed give the same intervals.
        prediction: The prediction column (a DataFrame), or the field scored (a store:
            ``"prediction"``, or one output of a dict prediction, ``"prediction.score"``).
        label: The label column of a DataFrame; None for a DataFrame without labels (selection
            rate, demographic parity and count need none).
        task: ``"classification"``, ``"regression"`` or ``"auto"`` (as ``performance``).
        **filters: ``Store.predictions`` filters (``version``, ``start``, ``end``, ``last``,
            ``user_id``, ``status``, ``request_id``, ``where``, ...).

    Every rate is weighted by ``1 / sample_rate``; ``count`` counts rows. ``selection_rate``
    is computed over the rows with a usable prediction (labeled or not), the other metrics
    over the scored rows (a label and a usable prediction).

    Raises:
        KeyError: an unknown sensitive field (close matches listed).
        ValueError: bad arguments, a sensitive field with one group, a metric that needs
            labels the rows do not have, an empty selection, an unknown metric or reference
            group, classes without a positive class.
    """
    from ._labeled import labeled

    if sensitive is None:
        raise ValueError("sensitive= names the field(s) whose groups are compared, e.g. sensitive='context.gender'")
    _check_numbers(ci, n_boot, min_group_size, threshold, bins, seed)
    lab = labeled(
        source,
        model=model,
        filters=filters,
        prediction=prediction,
        label=label,
        task=task,
        threshold=threshold,
        positive_label=positive_label,
        what="fairness_audit",
    )
    paths = lab.resolve(sensitive, "sensitive")
    wanted = _wanted(lab, metrics)
    numbers = [p for p in paths if lab.fields[p].kind == "number"]
    cuts = lab.cuts(numbers, bins) if numbers else {}
    cells = _cells(lab, paths, cuts)
    if cells.empty or int(cells["n"].sum()) == 0:
        raise ValueError(f"no predictions in {lab.label}: nothing to audit (check the model and filters)")
    keys, gid = _groups(cells, paths, cuts)
    _check_groups(keys, paths)
    engine = (
        _Classified(lab, cells, gid, len(keys)) if lab.task == "classification" else _Regressed(cells, gid, len(keys))
    )
    scored = int(engine.counts()["scored_rows"].sum())
    need = [m for m in (wanted or []) if m in _NEED_LABELS]
    if need and scored == 0:
        other = "['selection_rate', 'count']" if lab.task == "classification" else "['mean_prediction', 'count']"
        raise ValueError(
            f"metric {need[0]!r} needs labels, and no row of {lab.label} has a label and a usable prediction; "
            f"log labels with predlog.log_label(label, prediction_id=...), or audit metrics={other}"
        )
    shown = wanted or _default_metrics(lab.task, scored > 0)
    return _assemble(
        lab,
        engine,
        keys,
        paths,
        shown,
        cuts,
        reference_group=reference_group,
        ci=ci,
        n_boot=n_boot,
        min_group_size=min_group_size,
        seed=seed,
        scored=scored,
    )


# ---------------------------------------------------------------- arguments


def _check_numbers(ci: Any, n_boot: Any, min_group_size: Any, threshold: Any, bins: Any, seed: Any) -> None:
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0 < ci < 1:
        raise ValueError(f"ci is a confidence level between 0 and 1 (0.95), got {ci!r}")
    for name, value in (("n_boot", n_boot), ("min_group_size", min_group_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a whole number of at least 0, got {value!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    check_bins(bins)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number of at least 0, got {seed!r}")


def _check_method(method: Any) -> None:
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {method!r}{hint}; method is one of {', '.join(METHODS)}")


def _as_list(names: str | Sequence[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _wanted(lab: Labeled, metrics: str | Sequence[str] | None) -> list[str] | None:
    """The metrics asked for, checked (None: the defaults, decided once the rows are known)."""
    if metrics is None:
        return None
    chosen = _as_list(metrics)
    if not chosen:
        raise ValueError("metrics= names no metric; leave it out for every metric that applies")
    applicable = CLASSIFICATION_METRICS if lab.task == "classification" else REGRESSION_METRICS
    every = tuple(dict.fromkeys((*CLASSIFICATION_METRICS, *REGRESSION_METRICS)))
    for m in chosen:
        if m not in every:
            close = difflib.get_close_matches(str(m), every, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown metric {m!r}{hint}; metrics are {', '.join(every)}")
        if m not in applicable:
            raise ValueError(
                f"metric {m!r} does not apply: the task is {lab.task} ({lab.plan.rule}); "
                f"applicable metrics: {', '.join(applicable)}"
            )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"metrics= names a metric twice: {chosen}")
    return [m for m in applicable if m in chosen]


def _default_metrics(task: str, labeled_rows: bool) -> list[str]:
    every = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    return [m for m in every if labeled_rows or m not in _NEED_LABELS]


# ---------------------------------------------------------------- the one pass


def _cells(lab: Labeled, paths: list[str], cuts: Mapping[str, list[float]]) -> pd.DataFrame:
    """One aggregate over the labeled rows: per group key × weight (× classes), counts and sums."""
    from predlog.replay._shapes import ident

    from ._bins import bin_sql
    from ._summary import finite

    keys, extra = [], []
    for i, p in enumerate(paths):
        if p in cuts:
            keys.append(f"{bin_sql(p, cuts[p])} AS _k{i}")
            x = f"CAST({ident(p)} AS DOUBLE)"
            # The values each bin holds: a bin of one value is named by it.
            extra += [f"min({x}) FILTER ({finite(x)}) AS _lo{i}", f"max({x}) FILTER ({finite(x)}) AS _hi{i}"]
        else:
            keys.append(f"{ident(p)} AS _k{i}")
    names = [f"_k{i}" for i in range(len(paths))]
    rel = lab.relation(paths)
    if lab.task == "classification":
        cols = [*keys, "_wt", "_yt", "_yp", "_sc"] + [ident(p) for p in paths if p in cuts]
        group = [*names, "_wt", "_yt", "_yp", "_sc"]
        aggs = ["count(*) AS n", *extra]
    else:
        cols = [*keys, "_wt", "_sc", "abs(_y - _p) AS _ae", "_p"] + [ident(p) for p in paths if p in cuts]
        group = [*names, "_wt"]
        aggs = [
            "count(*) AS n",
            "count(_p) AS n_p",
            "count(_ae) AS n_sc",
            "coalesce(sum(_ae), 0) AS sae",
            "coalesce(var_pop(_ae), 0) AS vae",
            "coalesce(sum(_p), 0) AS sp",
            "coalesce(var_pop(_p), 0) AS vp",
            *extra,
        ]
    # Ordered: the bootstrap draws over each group's cells in this order, and the same seed
    # must give the same intervals (a parallel GROUP BY returns its rows in any order).
    sql = (
        f"SELECT {', '.join([*group, *aggs])} FROM (SELECT {', '.join(cols)} FROM r) GROUP BY {', '.join(group)} "
        f"ORDER BY {', '.join(group)}"
    )
    got = rel.query("r", sql)
    assert got is not None  # a SELECT always gives a relation
    return got.df()


def _missing(v: Any) -> bool:
    """None, NaN or pandas' NA (a missing key or class as DuckDB hands it to pandas)."""
    if v is None or type(v).__name__ == "NAType":
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _plain(v: Any) -> Any:
    if _missing(v):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _groups(
    cells: pd.DataFrame, paths: list[str], cuts: Mapping[str, list[float]]
) -> tuple[list[tuple[Any, ...]], np.ndarray]:
    """The groups (their keys as shown, in order: by value, a bin by its place, missing last)
    and each cell's group index."""
    from ._bins import bin_label

    raw = [[_plain(v) for v in cells[f"_k{i}"].tolist()] for i in range(len(paths))]
    names: list[dict[Any, Any]] = []
    for i, p in enumerate(paths):
        if p not in cuts:
            names.append({})
            continue
        lo_all = cells[f"_lo{i}"].min()
        hi_all = cells[f"_hi{i}"].max()
        by_bin = cells.groupby(f"_k{i}")[[f"_lo{i}", f"_hi{i}"]].agg({f"_lo{i}": "min", f"_hi{i}": "max"})
        label = {}
        for b, row in by_bin.iterrows():
            lo, hi = float(row[f"_lo{i}"]), float(row[f"_hi{i}"])
            if lo == hi:
                label[int(b)] = f"= {lo:.4g}"
            else:
                label[int(b)] = bin_label(cuts[p], int(b), float(lo_all), float(hi_all))
        names.append(label)
        raw[i] = [None if v is None else int(v) for v in raw[i]]
    tuples = list(zip(*raw, strict=True)) if raw else [()] * len(cells)

    def order(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple((v is None, "" if v is None else (v if not isinstance(v, bool) else int(v))) for v in key)

    distinct = sorted(set(tuples), key=order)
    index = {k: j for j, k in enumerate(distinct)}
    gid = np.fromiter((index[t] for t in tuples), dtype=np.int64, count=len(tuples))
    shown = [tuple(names[i].get(v, v) if v is not None else None for i, v in enumerate(k)) for k in distinct]
    return shown, gid


def _check_groups(keys: list[tuple[Any, ...]], paths: list[str]) -> None:
    for i, p in enumerate(paths):
        values = {k[i] for k in keys}
        if len(values) < 2:
            only = next(iter(values)) if values else None
            raise ValueError(
                f"sensitive={p!r} has one group ({only!r}) in these rows: a fairness audit compares groups; "
                "name a field with at least two values"
            )


# ---------------------------------------------------------------- from cells to metrics


class _Classified:
    """Classification cells as per-row statistics, summed per group or drawn by the bootstrap."""

    task = "classification"

    def __init__(self, lab: Labeled, cells: pd.DataFrame, gid: np.ndarray, groups: int) -> None:
        self.positive = _positive(lab, cells)
        n = cells["n"].to_numpy(dtype=np.int64)
        w = cells["_wt"].to_numpy(dtype=float)
        yt, yp = cells["_yt"].tolist(), cells["_yp"].tolist()
        pred = np.array([not _missing(v) for v in yp])
        sc = cells["_sc"].notna().to_numpy() & pred & np.array([not _missing(v) for v in yt])
        tpos = sc & np.array([_is(v, self.positive) for v in yt], dtype=bool)
        ppos = pred & np.array([_is(v, self.positive) for v in yp], dtype=bool)
        hit = sc & np.array([_is(a, b) for a, b in zip(yt, yp, strict=True)], dtype=bool)
        v = np.zeros((len(cells), _K))
        v[:, _ROWS] = 1.0
        v[:, _PRED] = pred
        v[:, _SC] = sc
        v[:, _W] = w
        v[:, _WP] = w * pred
        v[:, _WSEL] = w * ppos
        v[:, _WSC] = w * sc
        v[:, _WTP] = w * (tpos & ppos)
        v[:, _WFN] = w * (tpos & ~ppos)
        v[:, _WFP] = w * (sc & ~tpos & ppos)
        v[:, _WTN] = w * (sc & ~tpos & ~ppos)
        v[:, _WHIT] = w * hit
        self.per_row, self.n, self.gid, self.groups = v, n, gid, groups
        self.sums = np.zeros((groups, _K))
        np.add.at(self.sums, gid, v * n[:, None])

    def counts(self) -> dict[str, np.ndarray]:
        s = self.sums
        return {"count": s[:, _ROWS], "predicted_rows": s[:, _PRED], "scored_rows": s[:, _SC], "weight": s[:, _W]}

    def point(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Each metric per group, and over the whole selection."""
        return _rates(self.sums), {k: v[0] for k, v in _rates(self.sums.sum(axis=0, keepdims=True)).items()}

    def boot(self, rng: np.random.Generator, n_boot: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``n_boot`` stratified replicates: each group's rows drawn with replacement, as many
        as it has (a multinomial draw over the group's cells)."""
        draws = np.zeros((n_boot, self.groups, _K))
        for g in range(self.groups):
            idx = np.flatnonzero(self.gid == g)
            counts = self.n[idx]
            total = int(counts.sum())
            d = rng.multinomial(total, counts / total, size=n_boot)
            draws[:, g, :] = d @ self.per_row[idx]
        return _rates(draws), _rates(draws.sum(axis=1))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _rates(s: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics from summed statistics (last axis), NaN where undefined."""
    pos = s[..., _WTP] + s[..., _WFN]
    neg = s[..., _WFP] + s[..., _WTN]
    return {
        "selection_rate": _ratio(s[..., _WSEL], s[..., _WP]),
        "tpr": _ratio(s[..., _WTP], pos),
        "fpr": _ratio(s[..., _WFP], neg),
        "fnr": _ratio(s[..., _WFN], pos),
        "precision": _ratio(s[..., _WTP], s[..., _WTP] + s[..., _WFP]),
        "accuracy": _ratio(s[..., _WHIT], s[..., _WSC]),
        "count": s[..., _ROWS].astype(float),
    }


def _is(value: Any, positive: Any) -> bool:
    if _missing(value):
        return False
    if isinstance(value, str) != isinstance(positive, str):
        return False
    try:
        return bool(value == positive)
    except (TypeError, ValueError):
        return False


def _positive(lab: Labeled, cells: pd.DataFrame) -> Any:
    """The positive class: 1 for a score; for classes as they are, 1 (True) when they are
    0/1 (booleans), else ``positive_label``, checked against the classes found."""
    plan = lab.plan
    if plan.kind == "score":
        return int(plan.positive)
    seen = {_plain(v) for v in [*cells["_yt"].tolist(), *cells["_yp"].tolist()]} - {None}
    classes = sorted(seen, key=lambda v: (str(type(v)), v))
    if plan.kind == "vector":
        if plan.positive is not None:
            return int(plan.positive)
        if plan.classes in (0, 2) and seen <= {0, 1}:
            return 1
        raise ValueError(
            f"the probability vectors have {plan.classes or len(classes)} entries: name the positive class "
            f"(an index) with positive_label=, e.g. positive_label={classes[-1] if classes else 1!r}"
        )
    pos = plan.positive
    if pos is None:
        if seen and all(isinstance(v, bool) for v in seen):
            return True
        if seen <= {0, 1} and not any(isinstance(v, str) for v in seen):
            return 1
        shown = ", ".join(repr(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise ValueError(
            f"the classes are {shown}: the binary fairness metrics need a positive class (the favourable "
            f"outcome); pass positive_label=, e.g. positive_label={classes[-1]!r}"
        )
    for c in classes:
        if _is(c, pos):
            return c
    # Classes compared as text (a number label and a text prediction): the text of the class.
    text = [c for c in classes if isinstance(c, str) and c == str(pos)]
    if text:
        return text[0]
    shown = ", ".join(repr(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
    raise ValueError(f"positive_label={pos!r} is not one of the classes in these rows ({shown})")


class _Regressed:
    """Regression cells: each group's mean absolute error and mean prediction, and their
    spreads for a normal-approximation bootstrap."""

    task = "regression"

    def __init__(self, cells: pd.DataFrame, gid: np.ndarray, groups: int) -> None:
        w = cells["_wt"].to_numpy(dtype=float)
        n, n_p, n_sc = (cells[c].to_numpy(dtype=float) for c in ("n", "n_p", "n_sc"))
        sae, sp = cells["sae"].to_numpy(dtype=float), cells["sp"].to_numpy(dtype=float)
        self.groups = groups

        def per_group(x: np.ndarray) -> np.ndarray:
            return np.bincount(gid, weights=x, minlength=groups).astype(float)

        self.n, self.n_p, self.n_sc = per_group(n), per_group(n_p), per_group(n_sc)
        self.weight = per_group(n * w)
        self.w_sc, self.w_p = per_group(n_sc * w), per_group(n_p * w)
        self.mae = _ratio(per_group(sae * w), self.w_sc)
        self.mean_p = _ratio(per_group(sp * w), self.w_p)
        # Linearised variance of a weighted mean: sum w_i^2 (x_i - m)^2 / W^2, each cell's
        # squares from its own mean and spread (Chan's merge: no cancellation).
        cell_ae = _ratio(sae, n_sc)
        cell_p = _ratio(sp, n_p)
        dev_ae = np.where(n_sc > 0, n_sc * cells["vae"].to_numpy(float) + n_sc * (cell_ae - self.mae[gid]) ** 2, 0.0)
        dev_p = np.where(n_p > 0, n_p * cells["vp"].to_numpy(float) + n_p * (cell_p - self.mean_p[gid]) ** 2, 0.0)
        self.se_mae = np.sqrt(_ratio(per_group(w * w * dev_ae), self.w_sc**2))
        self.se_p = np.sqrt(_ratio(per_group(w * w * dev_p), self.w_p**2))

    def counts(self) -> dict[str, np.ndarray]:
        return {"count": self.n, "predicted_rows": self.n_p, "scored_rows": self.n_sc, "weight": self.weight}

    def _overall(self, mae: np.ndarray, mean_p: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "mae": _ratio(np.nansum(mae * self.w_sc, axis=-1), np.sum(np.where(np.isnan(mae), 0, self.w_sc), axis=-1)),
            "mean_prediction": _ratio(
                np.nansum(mean_p * self.w_p, axis=-1), np.sum(np.where(np.isnan(mean_p), 0, self.w_p), axis=-1)
            ),
            "count": np.broadcast_to(self.n.sum(), np.shape(mae)[:-1]).astype(float),
        }

    def point(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        groups = {"mae": self.mae, "mean_prediction": self.mean_p, "count": self.n.astype(float)}
        return groups, {k: np.asarray(v) for k, v in self._overall(self.mae, self.mean_p).items()}

    def boot(self, rng: np.random.Generator, n_boot: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Each group's means drawn from their normal approximation, independently."""
        mae = self.mae + self.se_mae * rng.standard_normal((n_boot, self.groups))
        mean_p = self.mean_p + self.se_p * rng.standard_normal((n_boot, self.groups))
        groups = {"mae": mae, "mean_prediction": mean_p, "count": np.broadcast_to(self.n, mae.shape).astype(float)}
        return groups, self._overall(mae, mean_p)


# ---------------------------------------------------------------- gaps


def _nan(fn: Any, x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``numpy.nanmax``/``nanmin`` and friends, NaN (quietly) where every value is NaN or there
    is none (every group too small)."""
    if x.shape[axis] == 0:
        return np.full(np.delete(x.shape, axis), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(fn(x, axis=axis))


def _gaps(m: np.ndarray, overall: np.ndarray, eligible: np.ndarray) -> dict[str, np.ndarray]:
    """The four gaps of one metric (groups on the last axis), over the eligible groups,
    as fairlearn's ``difference``/``ratio`` (NaN groups skipped)."""
    x = m[..., eligible]
    o = np.asarray(overall)[..., None]
    hi, lo = _nan(np.nanmax, x), _nan(np.nanmin, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = x / o
        r = np.where(r > 1, 1 / r, r)
        between = lo / hi
    return {
        "difference": hi - lo,
        "difference_to_overall": _nan(np.nanmax, np.abs(x - o)),
        "ratio": between,
        "ratio_to_overall": _nan(np.nanmin, r),
    }


def _measures(gaps: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    tpr, fpr, sr = gaps["tpr"], gaps["fpr"], gaps["selection_rate"]
    stack = np.stack
    return {
        "demographic_parity_difference": sr["difference"],
        "demographic_parity_ratio": sr["ratio"],
        "equalized_odds_difference": _nan(np.nanmax, stack([tpr["difference"], fpr["difference"]], axis=-1)),
        "equalized_odds_ratio": _nan(np.nanmin, stack([tpr["ratio"], fpr["ratio"]], axis=-1)),
        "equal_opportunity_difference": tpr["difference"],
    }


def _interval(draws: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds over the replicates (first axis), NaN replicates left out."""
    a = 100 * (1 - ci) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(draws, [a, 100 - a], axis=0)
    return np.asarray(lo), np.asarray(hi)


# ---------------------------------------------------------------- the result


def _assemble(
    lab: Labeled,
    engine: _Classified | _Regressed,
    keys: list[tuple[Any, ...]],
    paths: list[str],
    shown: list[str],
    cuts: dict[str, list[float]],
    *,
    reference_group: Any,
    ci: float,
    n_boot: int,
    min_group_size: int,
    seed: int,
    scored: int,
) -> FairnessResult:
    import pandas as pd

    classification = engine.task == "classification"
    counts = engine.counts()
    eligible = counts["count"] >= min_group_size
    groups, overall = engine.point()
    computed = list(groups)
    gaps = {m: _gaps(groups[m], overall[m], eligible) for m in computed}
    measures = _measures(gaps) if classification else {}

    ref: int | None = None
    impact: np.ndarray | None = None
    if classification:
        ref = _reference(reference_group, keys, paths, eligible, counts["weight"])
        if ref is not None:
            sr = groups["selection_rate"]
            impact = _ratio(sr, np.full_like(sr, sr[ref]))
    boot_groups: dict[str, np.ndarray] = {}
    boot_gaps: dict[str, dict[str, np.ndarray]] = {}
    boot_measures: dict[str, np.ndarray] = {}
    boot_impact: np.ndarray | None = None
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boot_groups, boot_overall = engine.boot(rng, n_boot)
        boot_gaps = {m: _gaps(boot_groups[m], boot_overall[m], eligible) for m in computed}
        boot_measures = _measures(boot_gaps) if classification else {}
        if ref is not None:
            sr_b = boot_groups["selection_rate"]
            boot_impact = _ratio(sr_b, np.broadcast_to(sr_b[:, ref : ref + 1], sr_b.shape))

    def bounds(draws: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray]:
        if draws is None:
            return np.full(size, np.nan), np.full(size, np.nan)
        return _interval(draws, ci)

    frame = pd.DataFrame({p: [k[i] for k in keys] for i, p in enumerate(paths)})
    for col in ("count", "predicted_rows", "scored_rows"):
        frame[col] = counts[col].astype(np.int64)
    frame["weight"] = counts["weight"]
    frame["too_small"] = ~eligible
    for m in shown:
        frame[m] = groups[m].astype(np.int64) if m == "count" else groups[m]
        if m != "count":
            frame[f"{m}_low"], frame[f"{m}_high"] = bounds(boot_groups.get(m), len(keys))
    four: list[bool | None] = [None] * len(keys)
    if classification:
        frame["reference"] = [i == ref for i in range(len(keys))]
        frame["impact_ratio"] = impact if impact is not None else np.nan
        frame["impact_ratio_low"], frame["impact_ratio_high"] = bounds(boot_impact, len(keys))
        if impact is not None:
            four = [
                None if not eligible[i] or math.isnan(impact[i]) else bool(FOUR_FIFTHS <= impact[i] <= 1 / FOUR_FIFTHS)
                for i in range(len(keys))
            ]
        frame["four_fifths"] = pd.Series(four, dtype=object)

    index = (
        pd.Index([k[0] for k in keys], name=paths[0])
        if len(paths) == 1
        else pd.MultiIndex.from_tuples(keys, names=paths)
    )
    by_group = pd.DataFrame({m: groups[m].astype(np.int64) if m == "count" else groups[m] for m in shown}, index=index)
    overall_s = pd.Series({m: float(overall[m]) for m in shown}, dtype=float)
    gap_rows = {}
    for m in shown:
        row: dict[str, float] = {}
        for name in ("difference", "difference_to_overall", "ratio", "ratio_to_overall"):
            row[name] = float(gaps[m][name])
            lo, hi = bounds(boot_gaps[m][name] if boot_gaps else None, 1)
            row[f"{name}_low"], row[f"{name}_high"] = float(np.ravel(lo)[0]), float(np.ravel(hi)[0])
        gap_rows[m] = row
    gaps_df = pd.DataFrame.from_dict(gap_rows, orient="index")
    gaps_df.index.name = "metric"
    measure_rows = {}
    for name, value in measures.items():
        lo, hi = bounds(boot_measures[name] if boot_measures else None, 1)
        measure_rows[name] = {"value": float(value), "low": float(np.ravel(lo)[0]), "high": float(np.ravel(hi)[0])}
    measures_df = pd.DataFrame.from_dict(measure_rows, orient="index", columns=["value", "low", "high"])
    measures_df.index.name = "measure"

    summary = _summary(
        lab,
        frame,
        keys,
        paths,
        shown,
        gaps_df,
        measures_df,
        eligible,
        ref,
        four,
        ci=ci,
        n_boot=n_boot,
        seed=seed,
        scored=scored,
        min_group_size=min_group_size,
        cuts=cuts,
        groups=groups,
    )
    if isinstance(engine, _Classified):
        summary["positive_label"] = _plain(engine.positive)
    return FairnessResult(
        frame,
        overall_s,
        by_group,
        gaps_df,
        measures_df,
        summary,
        sensitive=paths,
        eligible=eligible,
        cuts=cuts,
    )


def _reference(
    given: Any, keys: list[tuple[Any, ...]], paths: list[str], eligible: np.ndarray, weight: np.ndarray
) -> int | None:
    """The reference group's index: the one named, or the heaviest group that is not too small."""
    if given is None:
        if not eligible.any():
            return None
        w = np.where(eligible, weight, -np.inf)
        return int(np.argmax(w))  # the first on ties: groups are in order
    if isinstance(given, Mapping):
        wanted = dict(given)
        unknown = [k for k in wanted if k not in paths and f"features.{k}" not in paths]
        if unknown:
            raise ValueError(f"reference_group names {unknown[0]!r}, not a sensitive field ({', '.join(paths)})")
        values = tuple(wanted.get(p, wanted.get(p.removeprefix("features."))) for p in paths)
    elif isinstance(given, tuple):
        values = given
    else:
        values = (given,)
    if len(values) != len(paths):
        raise ValueError(
            f"reference_group={given!r}: name one value per sensitive field ({', '.join(paths)}), "
            "as a tuple in that order or a dict {field: value}"
        )
    for i, key in enumerate(keys):
        if all(_is(a, b) or (a is None and b is None) for a, b in zip(key, values, strict=True)):
            if not eligible[i]:
                raise ValueError(
                    f"reference_group={given!r} has fewer rows than min_group_size: choose a larger group, "
                    "or lower min_group_size"
                )
            return i
    shown = ", ".join(repr(k[0] if len(k) == 1 else k) for k in keys[:20]) + (", ..." if len(keys) > 20 else "")
    raise ValueError(f"reference_group={given!r} is not a group of these rows; the groups are {shown}")


def _group_name(paths: Sequence[str], key: Sequence[Any], short: bool = False) -> str:
    return ", ".join(f"{p.split('.', 1)[-1] if short else p}={v}" for p, v in zip(paths, key, strict=True))


def _short(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.3f}"


def _with_ci(value: float, lo: float, hi: float) -> str:
    text = _short(value)
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{_short(lo)}, {_short(hi)}]"
    return text


def _summary(
    lab: Labeled,
    frame: pd.DataFrame,
    keys: list[tuple[Any, ...]],
    paths: list[str],
    shown: list[str],
    gaps: pd.DataFrame,
    measures: pd.DataFrame,
    eligible: np.ndarray,
    ref: int | None,
    four: list[bool | None],
    *,
    ci: float,
    n_boot: int,
    seed: int,
    scored: int,
    min_group_size: int,
    cuts: dict[str, list[float]],
    groups: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    from ._sides import describe_filters

    plan = lab.plan
    classification = plan.task == "classification"
    small = [dict(zip(paths, keys[i], strict=True)) for i in np.flatnonzero(~eligible)]
    failing = [dict(zip(paths, keys[i], strict=True)) for i, f in enumerate(four) if f is False][:MAX_LISTED]
    summary: dict[str, Any] = {
        "text": "",
        "model": lab.model,
        "task": plan.task,
        "rule": plan.rule,
        "threshold": plan.threshold if plan.kind == "score" else None,
        "positive_label": None,
        "sensitive": paths,
        "metrics": shown,
        "rows": int(frame["count"].sum()),
        "scored_rows": scored,
        "groups": len(keys),
        "too_small": small[:MAX_LISTED],
        "too_small_groups": len(small),
        "min_group_size": min_group_size,
        "reference_group": None if ref is None else dict(zip(paths, keys[ref], strict=True)),
        "four_fifths_failing": failing,
        "largest_gap": None,
        "ci": ci,
        "n_boot": n_boot,
        "seed": seed,
        "filters": describe_filters(lab.filters) if lab.filters else "",
        "cuts": cuts,
    }
    for name, row in measures.iterrows():
        summary[str(name)] = {"value": _num(row["value"]), "low": _num(row["low"]), "high": _num(row["high"])}
    parts: list[str] = []
    rated = [m for m in shown if m != "count" and not math.isnan(float(gaps.loc[m, "difference"]))]
    if rated:
        head = max(rated, key=lambda m: float(gaps.loc[m, "difference"]))
        values = np.where(eligible, groups[head], np.nan)
        lo_i, hi_i = int(np.nanargmin(values)), int(np.nanargmax(values))
        g = gaps.loc[head]
        summary["largest_gap"] = {
            "metric": head,
            "difference": _num(g["difference"]),
            "low": _num(g["difference_low"]),
            "high": _num(g["difference_high"]),
            "lowest": dict(zip(paths, keys[lo_i], strict=True)),
            "highest": dict(zip(paths, keys[hi_i], strict=True)),
        }
        if lo_i == hi_i or float(g["difference"]) == 0:
            parts.append(f"no gap: {head} is {_short(values[hi_i])} in every group compared")
        else:
            parts.append(
                f"largest gap: {head} {_with_ci(g['difference'], g['difference_low'], g['difference_high'])} between "
                f"{_group_name(paths, keys[lo_i])} ({_short(values[lo_i])}) and {_group_name(paths, keys[hi_i])} "
                f"({_short(values[hi_i])})"
            )
    elif not eligible.any():
        parts.append(f"no group has {min_group_size:,} rows or more (min_group_size), so no group is compared")
    else:
        parts.append("no metric is defined in the groups compared")
    if classification and len(measures):
        dp = measures.loc["demographic_parity_difference"]
        if not math.isnan(dp["value"]):
            parts.append(
                f"demographic parity difference {_with_ci(dp['value'], dp['low'], dp['high'])}"
                f" (ratio {_short(measures.loc['demographic_parity_ratio', 'value'])})"
            )
        eo = measures.loc["equalized_odds_difference"]
        if not math.isnan(eo["value"]):
            parts.append(f"equalized odds difference {_with_ci(eo['value'], eo['low'], eo['high'])}")
        elif scored == 0:
            parts.append("no labels yet, so no equalized odds")
        if ref is not None:
            who = _group_name(paths, keys[ref])
            if failing:
                names = "; ".join(_group_name(paths, tuple(f.values())) for f in failing[:3])
                parts.append(
                    f"{len(failing)} group{'s' if len(failing) != 1 else ''} outside four-fifths of {who}'s "
                    f"selection rate ({names}{', ...' if len(failing) > 3 else ''})"
                )
            else:
                parts.append(f"every group within four-fifths of {who}'s selection rate")
    if small and eligible.any():
        parts.append(
            f"{len(small)} group{'s' if len(small) != 1 else ''} under {min_group_size:,} rows left out of the gaps"
        )
    text = "; ".join(parts)
    summary["text"] = text[:1].upper() + text[1:] + "."
    return summary


def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x
