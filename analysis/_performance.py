"""Is the model still right: metrics against the labels, per time window and per segment.

:func:`performance` joins the selected predictions with their latest labels through the
store's query core (``Store.labeled_relation``) and aggregates in DuckDB, in one pass (two
with ROC AUC):

- one row per window × segment × weight × (true class, predicted class) with counts, the
  log-loss sum and, for regression, the sums of errors and the mean and variance of the
  labels. Grouping by the row's weight (``1 / sample_rate``) keeps every weighted sum exact:
  a weighted sum is a count times a weight. Confusion matrices, accuracy, precision, recall,
  F1, coverage and regression metrics of each window, each segment and the whole selection
  follow from these cells in pandas (a few thousand rows at most).
- ROC AUC, where probabilities exist, in a second pass: the rank statistic (Mann–Whitney
  with ties counted half, weighted) from the weighted positives and negatives at each
  distinct score, with cumulative sums per window × segment, for the windows, the segments
  and the whole selection at once (``GROUPING SETS``). Only the areas come back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._result import Result, figure, jsonable
from ._sides import WEIGHT, describe_filters, feature_path, one_kind, resolve_model
from ._stats import query as _query
from ._summary import finite
from ._windows import Windows, when

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from matplotlib.figure import Figure

    from predlog.replay import Store

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "PerformanceResult",
    "performance",
    "wilson",
]

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
"""Metrics of a classification task (``roc_auc`` and ``log_loss`` need probabilities)."""

REGRESSION_METRICS = ("mae", "rmse", "r2")
"""Metrics of a regression task."""

TASKS = ("auto", "classification", "regression")
AVERAGES = ("binary", "macro", "micro", "weighted")

Z95 = statistics.NormalDist().inv_cdf(0.975)
"""The normal quantile of a two-sided 95 % interval (scipy's ``ndtri(0.975)``)."""

EPS = float(np.finfo(np.float64).eps)
"""scikit-learn's log-loss clipping: probabilities are clipped to ``[eps, 1 - eps]``."""

MIN_ROWS = 30
"""The summary's lowest (or highest) window is chosen among windows with at least this
many scored rows; without one, the summary names none."""

# time_bucket's default origin for widths of days and less: Monday 2000-01-03 00:00 UTC.
_ORIGIN = "2000-01-03"
_ORIGIN_US = 946_857_600_000_000
_DAY_US = 86_400_000_000
_INTERVALS = ("accuracy", "precision", "recall")
_LOWER_IS_BETTER = ("log_loss", "mae", "rmse")
_INTEGER = frozenset(
    {"tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint", "uinteger", "ubigint"}
)
_FLOAT = frozenset({"float", "double", "decimal"})


# ---------------------------------------------------------------- the result


class PerformanceResult(Result):
    """Performance of a model against its labels, per window (and segment).

    Attributes:
        df: One row per window (× segment when ``by=``), in time order: ``window_start``
            (UTC), the segment columns (named by path: ``context.country``,
            ``features.plan``), ``rows`` (predictions), ``weighted_rows`` (the calls they
            stand for: the sum of ``1 / sample_rate``), ``labeled_rows`` and
            ``weighted_labeled_rows``, ``scored_rows`` (labeled rows with a usable
            prediction: those the metrics are computed on), ``label_coverage`` and
            ``error_rate`` (weighted shares of rows) with ``_low``/``_high`` Wilson 95 %
            bounds, then the metrics: ``accuracy``, ``precision``, ``recall`` (each with
            ``_low``/``_high``), ``f1``, ``roc_auc``, ``log_loss`` for classification;
            ``mae``, ``rmse``, ``r2`` for regression.
        overall: The same columns (without ``window_start`` and segments), one row: the whole
            selection.
        by_group: When ``by=``, one row per segment over the whole selection (like
            fairlearn's ``MetricFrame.by_group``); None otherwise.
        summary: ``text`` (one sentence), ``model``, ``task``, ``rule`` (how a prediction
            becomes a class), ``average``, ``threshold``, ``positive_label``, ``metrics``,
            ``window``, ``by``, ``windows``, ``filters``, the overall counts and every
            overall metric, and ``worst`` (the window, and segment, where the first metric
            is worst).
    """

    _title = "Performance"

    def __init__(
        self,
        df: pd.DataFrame,
        overall: pd.DataFrame,
        by_group: pd.DataFrame | None,
        summary: dict[str, Any],
        *,
        segments: list[str],
    ) -> None:
        self.df = df
        self.overall = overall
        self.by_group = by_group
        self.summary = summary
        self.segments = segments

    @property
    def metrics(self) -> list[str]:
        """The metrics computed, in column order."""
        return list(self.summary["metrics"])

    def _table(self) -> pd.DataFrame:
        cols = ["window_start", *self.segments, "rows", "scored_rows", "label_coverage", *self.metrics]
        return self.df[[c for c in cols if c in self.df.columns]]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["overall"] = jsonable(self.overall.to_dict("records"))
        out["by_group"] = None if self.by_group is None else jsonable(self.by_group.to_dict("records"))
        return out

    def plot(self, metric: str | None = None, *, top: int = 8) -> Figure:
        """``metric`` (default: the first metric) over time with its 95 % band where it has
        one; one line per segment when ``by=`` (the ``top`` segments by weighted rows)."""
        name = metric or (self.metrics[0] if self.metrics else "label_coverage")
        if name not in self.df.columns:
            choices = [*self.metrics, "label_coverage", "error_rate"]
            raise ValueError(f"no metric {name!r} in this result; choose one of {', '.join(choices)}")
        fig = figure(figsize=(8.0, 3.6), layout="constrained")
        ax = fig.subplots()
        band = f"{name}_low" in self.df.columns
        if self.segments:
            weights = self.by_group if self.by_group is not None else self.df
            order = weights.sort_values("weighted_rows", ascending=False)[self.segments].head(top)
            lines = [tuple(row) for row in order.itertuples(index=False, name=None)]
        else:
            lines = [()]
        for key in lines:
            part = self.df
            for col, value in zip(self.segments, key, strict=True):
                part = part[part[col].isna()] if _missing(value) else part[part[col] == value]
            part = part.sort_values("window_start")
            label = ", ".join(f"{c}={v}" for c, v in zip(self.segments, key, strict=True)) or name
            (line,) = ax.plot(part["window_start"], part[name], marker=".", label=label)
            if band:
                ax.fill_between(
                    part["window_start"],
                    part[f"{name}_low"].astype(float),
                    part[f"{name}_high"].astype(float),
                    color=line.get_color(),
                    alpha=0.15,
                    linewidth=0,
                )
        ax.set_ylabel(name)
        ax.set_title(str(self.summary.get("text", "")), fontsize=9)
        if self.segments:
            ax.legend(fontsize=7)
        fig.autofmt_xdate()
        return fig


# ---------------------------------------------------------------- entry point


def performance(
    s: Store,
    *,
    model: str | None = None,
    window: str | dt.timedelta = "1D",
    by: str | Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    task: str = "auto",
    threshold: float = 0.5,
    positive_label: Any = None,
    average: str = "macro",
    prediction: str = "prediction",
    **filters: Any,
) -> PerformanceResult:
    """Metrics of the model against its labels, per time window and per segment.

    Labels are joined as in ``Store.labeled``: the latest label of each prediction (by
    ``prediction_id``, else by ``request_id``), however late it came; a prediction counts
    in the window of its own ``ts``. Every count, share and metric is weighted by
    ``1 / sample_rate``, so a store that kept 10 % of its successful calls (and every
    error) reports the rates of the calls, not of the rows kept.

    Args:
        s: The store.
        model: The model; may be omitted when the store holds one.
        window: The width of a window: ``"1D"``, ``"1h"``, ``"7D"``, ``"30min"`` or a
            timedelta. Windows are UTC and start where DuckDB's ``time_bucket`` starts
            them (origin Monday 2000-01-03 00:00 UTC: days at midnight, weeks on Mondays).
        by: Segments: a path or a list of paths (``"context.country"``; a bare name is a
            feature, ``"plan"`` means ``"features.plan"``).
        metrics: The metrics to compute (default: all that apply): ``accuracy``,
            ``precision``, ``recall``, ``f1``, ``roc_auc``, ``log_loss`` for
            classification, ``mae``, ``rmse``, ``r2`` for regression.
        task: ``"classification"``, ``"regression"`` or ``"auto"`` (the rules below).
        threshold: A float score in [0, 1] at or above ``threshold`` is class 1.
        positive_label: The positive class of ``average="binary"`` (default 1, or True for
            boolean labels, with a score; required otherwise), and the class whose
            probability scores ROC AUC for a probability vector of two classes.
        average: How per-class precision, recall and F1 are averaged, as scikit-learn:
            ``"binary"`` (the positive class only; two classes), ``"macro"``, ``"micro"``
            or ``"weighted"`` (by each class's weighted support).
        prediction: The field scored: ``"prediction"``, or one output of a prediction that is
            a dict (``"prediction.score"``, or ``"score"`` for short).
        **filters: ``Store.predictions`` filters: ``version``, ``start``, ``end``,
            ``last``, ``user_id``, ``status``, ``request_id``, ``where``, ``include_live``,
            ``include_replays``.

    How a prediction is scored (``summary["rule"]`` says which rule applied):

    - a float prediction with labels in {0, 1} (or booleans): binary classification,
      ``prediction >= threshold`` is class 1; ROC AUC and log loss on the float (log loss
      only where every score is within [0, 1]).
    - a float prediction with other numeric labels: regression.
    - a string, integer or boolean prediction: the class as is, compared with the label
      (as text when the two types differ, as numbers when both are numbers).
    - a list (a probability vector): the class is the index of its largest entry (the first
      one on ties, as ``numpy.argmax``), compared with an integer label that is the index of
      the true class; ROC AUC one-vs-rest over the vector's entries (sklearn's
      ``multi_class="ovr"`` with ``labels=range(len(vector))``; with two entries, the
      binary AUC of the positive entry) and log loss of the true class's entry.

    ``task=`` overrides the first choice: ``"regression"`` scores any numeric prediction
    as a number, ``"classification"`` scores a float prediction with non-binary labels as
    a class value. A row counts in the metrics when it has a label and a usable prediction
    (not null, not NaN; error rows count in ``rows`` and ``error_rate`` only).

    Agreement with scikit-learn, on the same rows with ``sample_weight = 1 / sample_rate``:
    ``accuracy_score``, ``precision_score``/``recall_score``/``f1_score`` with
    ``zero_division=np.nan`` (a class never predicted has no precision and is left out of
    the average instead of counting as 0), ``roc_auc_score`` (NaN where a window has one
    class only, as scikit-learn's undefined-metric NaN), ``log_loss`` with the labels the
    scores imply (``[0, 1]``, or the vector's indices), ``mean_absolute_error``,
    ``root_mean_squared_error`` and ``r2_score`` (NaN below two rows; 1 or 0 for a
    constant target, as its ``force_finite``).

    Intervals: Wilson score 95 % intervals for proportions (accuracy, coverage, error rate,
    and precision and recall with ``average="binary"`` or ``"micro"``), on the number of
    rows, or Kish's effective number ``(sum w)^2 / sum w^2`` when weights differ. For a
    macro or weighted average of per-class proportions the Wilson interval uses the
    effective number that gives the average its normal-approximation variance
    ``sum a_c^2 p_c (1 - p_c) / n_c`` (an approximation: per-class estimates are taken as
    independent).

    Raises:
        ValueError: for bad arguments, labels of several types (select one model and
            version), labels and predictions that cannot be compared, or a metric that does
            not apply.
    """
    from predlog.replay import Store

    if not isinstance(s, Store):
        raise TypeError(f"the first argument must be a predlog.replay.Store, got {type(s).__name__}")
    _check_filters(filters, "performance")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    width_us, window_label = _window(window)
    segments = _segments(by)
    name = resolve_model(s, model, filters)

    when = "date" if width_us % _DAY_US == 0 else "ts"
    if not isinstance(prediction, str) or not prediction or "[" in prediction:
        raise ValueError(
            f"prediction={prediction!r}: name the prediction, or one output of a dict prediction "
            "('prediction.score', or 'score')"
        )
    field = prediction if prediction.split(".", 1)[0] == "prediction" else f"prediction.{prediction}"
    columns = [when, *segments, field, "label", "sample_rate", "status"]

    def labeled(include_unlabeled: bool = True) -> duckdb.DuckDBPyRelation:
        """The selected predictions with their labels; the field scored is named ``prediction``."""
        from predlog.replay._shapes import ident

        got = s.labeled_relation(name, include_unlabeled=include_unlabeled, columns=columns, ordered=False, **filters)
        if field == "prediction":
            return got
        return got.project(", ".join(f"{ident(c)} AS {ident('prediction' if c == field else c)}" for c in got.columns))

    rel = one_label_type(labeled, name, "performance")
    types = dict(zip(rel.columns, (str(t) for t in rel.types), strict=True))
    if types["prediction"] == "VARCHAR" and field == "prediction":
        one_kind(s, name, filters)
    plan = _plan(rel, types["prediction"], types["label"], task, threshold, positive_label, average)
    cells = _query(rel, _cells_sql(plan, segments, width_us)).df()
    decided = _decide(plan, cells, rel)
    if decided.kind != plan.kind and decided.kind == "value":  # asked to classify non-binary labels
        rel = labeled()
        cells = _query(rel, _cells_sql(decided, segments, width_us)).df()
    plan = decided
    wanted = _metrics(plan, metrics)

    s_keys = _seg_keys(segments)
    keys = {"window": ["_w", *s_keys], "group": s_keys, "overall": []}
    if not segments:
        del keys["group"]
    levels = {level: _base(cells, k) for level, k in keys.items()}
    if plan.task == "classification":
        for level, frame in levels.items():
            _classify(frame, cells, keys[level], plan)
        scored = bool(len(cells)) and int(cells["n_sc"].sum()) > 0
        if "roc_auc" in wanted and scored:
            auc_rel = labeled(include_unlabeled=False)
            _auc(levels, _query(auc_rel, _auc_sql(plan, segments, width_us)).df(), segments, plan)
    else:
        for level, frame in levels.items():
            _regress(frame, cells, keys[level])

    shown = [*_COUNTS, *(c for m in wanted for c in _columns_of(m))]
    df = _finish(levels["window"], shown, segments, width_us, window=True)
    overall = _finish(levels["overall"], shown, [], width_us)
    if overall.empty:
        overall = _empty_row(shown)
    by_group = _finish(levels["group"], shown, segments, width_us) if segments else None
    summary = _summary(df, overall, plan, wanted, name, window_label, width_us, segments, filters)
    return PerformanceResult(df, overall, by_group, summary, segments=segments)


# ---------------------------------------------------------------- arguments


def one_label_type(make: Callable[[], duckdb.DuckDBPyRelation], model: str, what: str) -> duckdb.DuckDBPyRelation:
    """The labeled relation ``make()`` gives, or a ValueError when the selection's labels are
    of several types (a ``MixedLabelTypesWarning``): ``what`` compares one kind of label with
    the predictions. Other warnings pass through."""
    from predlog.replay import MixedLabelTypesWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MixedLabelTypesWarning)
        rel = make()
    for w in caught:
        if issubclass(w.category, MixedLabelTypesWarning):
            raise ValueError(
                f"the labels of model {model!r} in this selection have several types ({w.message}); {what} "
                "compares one kind of label with the predictions: select one model and version "
                "(model=..., version=...), or log one label type per model"
            )
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return rel


def _window(window: Any) -> tuple[int, str]:
    """``(width in microseconds, label)`` of a window: text as the store's durations
    (``"1D"``, ``"1h"``, ``"7d"``, ``"30min"``, ``"1w"``) or a timedelta."""
    us = Windows.of(window).micros
    return us, window.strip() if isinstance(window, str) else _duration(us)


def _duration(us: int) -> str:
    for unit, size in (("D", _DAY_US), ("h", _DAY_US // 24), ("min", _DAY_US // 1440), ("s", 1_000_000)):
        if us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"


def _check_filters(filters: Mapping[str, Any], what: str) -> None:
    """``filters`` must be ``Store.predictions`` filters (not row options such as ``columns=``)."""
    from predlog.replay._selection import Filters

    names = sorted(Filters.__required_keys__ | Filters.__optional_keys__)
    for key in filters:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(
                f"{what}() got an unexpected keyword argument {key!r}{hint}; the filters are {', '.join(names)}"
            )


def _segments(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    items = [by] if isinstance(by, str) else list(by)
    paths = [feature_path(str(b)) for b in items]
    if len(set(paths)) != len(paths):
        raise ValueError(f"by= names a segment twice: {items}")
    for p in paths:
        if p in ("prediction", "label", "ts", "sample_rate", "status"):
            raise ValueError(f"by={p!r}: segment by a feature or a context field, not by {p}")
    return paths


def _seg_keys(segments: Sequence[str]) -> list[str]:
    return [f"_s{i}" for i in range(len(segments))]


def _metrics(plan: _Plan, metrics: Sequence[str] | None) -> list[str]:
    if plan.task == "classification":
        applicable = [m for m in CLASSIFICATION_METRICS if plan.probabilities or m not in ("roc_auc", "log_loss")]
    else:
        applicable = list(REGRESSION_METRICS)
    if metrics is None:
        return applicable
    chosen = [metrics] if isinstance(metrics, str) else list(metrics)
    every = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)
    for m in chosen:
        if m not in every:
            close = difflib.get_close_matches(str(m), every, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown metric {m!r}{hint}; metrics are {', '.join(every)}")
        if m not in applicable:
            raise ValueError(
                f"metric {m!r} does not apply: the task is {plan.task} ({plan.rule}); "
                f"applicable metrics: {', '.join(applicable)}"
            )
    return [m for m in applicable if m in chosen]


def _columns_of(metric: str) -> list[str]:
    if metric in _INTERVALS:
        return [metric, f"{metric}_low", f"{metric}_high"]
    return [metric]


# ---------------------------------------------------------------- how predictions are scored


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How predictions are scored: the task, the rule, and the SQL that follows from them.

    ``kind``: ``"score"`` (a float scored against 0/1 labels by a threshold), ``"value"``
    (classes compared as they are), ``"vector"`` (argmax of a probability vector),
    ``"regression"``, or ``"undecided"`` (a float with numeric labels: binary when every
    label is 0 or 1, decided after the first pass).
    """

    task: str
    kind: str
    rule: str
    threshold: float
    positive: Any
    average: str
    probabilities: bool
    ptype: str
    ltype: str
    cast: str | None = None  # the SQL type both sides are compared as (value rule)
    explicit: bool = False  # task="classification" was asked for
    unlabeled: bool = False  # the selection has no labels at all
    classes: int = 0  # entries of the probability vectors (vector rule, after the first pass)


def _family(dtype: str) -> str:
    t = dtype.lower()
    if t.endswith("]") or t.startswith("list") or t.startswith("array"):
        return "list"
    if t.startswith("struct") or t.startswith("map") or t.startswith("union"):
        return "struct"
    if t == "boolean":
        return "bool"
    if t in _INTEGER:
        return "int"
    if t in _FLOAT or t.startswith("decimal"):
        return "float"
    if t == "varchar":
        return "string"
    return "other"


def _plan(
    rel: duckdb.DuckDBPyRelation,
    ptype: str,
    ltype: str,
    task: str,
    threshold: float,
    positive: Any,
    average: str,
) -> _Plan:
    """The scoring plan from the column types (and, for a float, the labels' values later)."""
    pf, lf = _family(ptype), _family(ltype)
    base: dict[str, Any] = {
        "threshold": float(threshold),
        "positive": positive,
        "average": average,
        "ptype": ptype,
        "ltype": ltype,
    }
    if pf in ("struct", "other"):
        raise ValueError(
            f"the prediction column is {ptype}: performance scores a number, a class (string, integer, boolean) "
            "or a probability vector (a list); for a prediction that is a dict, name the output to score: "
            "performance(s, prediction='prediction.score')"
        )
    if ltype.strip('"').upper() == "NULL":  # a label column without a single value: no labels yet
        return _unlabeled(pf, task, base)
    if lf in ("struct", "list", "other"):
        raise ValueError(f"the labels are {ltype}: performance compares a number, a class or a class index")
    comparable = lf in ("bool", "int", "float") or (lf == "string" and pf in ("string", "int", "bool"))
    if not comparable:
        if not _has_labels(rel):  # no label at all: the labels column is a placeholder
            return _unlabeled(pf, task, base)
        if pf == "list":
            raise ValueError(
                f"the predictions are vectors ({ptype}) and the labels {ltype}: a probability vector is scored "
                "against an integer label, the index of the true class"
            )
        raise ValueError(
            f"the predictions are numbers ({ptype}) and the labels text ({ltype}): log labels of the prediction's "
            "kind (0/1 for a score, the true value for a regression), or select another model or version"
        )
    if task == "regression":
        if pf not in ("int", "float") or lf not in ("int", "float", "bool"):
            raise ValueError(f"task='regression' needs numeric predictions and labels; they are {ptype} and {ltype}")
        return _Plan("regression", "regression", "the prediction as a number", probabilities=False, **base)
    if pf == "list":
        if lf not in ("int", "float"):
            raise ValueError(
                f"the predictions are vectors ({ptype}) and the labels {ltype}: a probability vector is scored "
                "against an integer label, the index of the true class"
            )
        return _vector_plan(base)
    if pf == "float" and lf == "bool":
        return _score_plan(base, explicit=task == "classification")
    if pf == "float":
        pos = 1 if positive is None else positive
        _check_score_positive(pos)
        return _Plan(
            "classification",
            "undecided",
            _score_rule(threshold),
            probabilities=True,
            explicit=task == "classification",
            **{**base, "positive": pos},
        )
    return _value_plan(pf, lf, base)


def _has_labels(rel: duckdb.DuckDBPyRelation) -> bool:
    return bool(_query(rel, 'SELECT count("label") FROM r').fetchall()[0][0])


def _unlabeled(pf: str, task: str, base: dict[str, Any]) -> _Plan:
    """No labels at all in the selection: the task from the predictions alone."""
    b = {**base, "ltype": "NULL"}
    if task == "regression" and pf in ("int", "float"):
        return _Plan("regression", "regression", "the prediction as a number", probabilities=False, unlabeled=True, **b)
    if pf == "list":
        return dataclasses.replace(_vector_plan(b), unlabeled=True)
    if pf == "float":
        pos = 1 if base["positive"] is None else base["positive"]
        _check_score_positive(pos)
        return _Plan(
            "classification",
            "undecided",
            _score_rule(base["threshold"]),
            probabilities=True,
            explicit=task == "classification",
            unlabeled=True,
            **{**b, "positive": pos},
        )
    return dataclasses.replace(_value_plan(pf, "null", b), unlabeled=True)


def _score_rule(threshold: float) -> str:
    return f"score >= {threshold:g} is class 1"


def _check_score_positive(positive: Any) -> None:
    if isinstance(positive, str) or positive not in (0, 1):  # True == 1 and False == 0
        raise ValueError(
            f"positive_label={positive!r}: with a score, the classes are 0 and 1 (score >= threshold is class 1)"
        )


def _score_plan(base: dict[str, Any], *, explicit: bool = False) -> _Plan:
    positive = True if base["positive"] is None else base["positive"]
    _check_score_positive(positive)
    return _Plan(
        "classification",
        "score",
        _score_rule(base["threshold"]),
        probabilities=True,
        explicit=explicit,
        **{**base, "positive": positive},
    )


def _vector_plan(base: dict[str, Any]) -> _Plan:
    pos = base["positive"]
    if pos is not None and (isinstance(pos, (str, bool, float)) or not isinstance(pos, (int, np.integer)) or pos < 0):
        raise ValueError(
            f"positive_label={pos!r}: with probability vectors, a class is an index into the vector "
            "(0, 1, ...): pass the index of the positive class"
        )
    return _Plan(
        "classification",
        "vector",
        "argmax of the probability vector (its index) against the label as a class index",
        probabilities=True,
        **base,
    )


def _value_plan(pf: str, lf: str, base: dict[str, Any]) -> _Plan:
    fams = {pf, lf}
    if lf == "null" or pf == lf:
        cast = None
    elif fams <= {"int", "float"} or fams == {"float", "bool"}:
        cast = "DOUBLE"
    elif fams == {"int", "bool"}:
        cast = "BIGINT"
    else:
        cast = "VARCHAR"
    rule = "the class value as is" + (" (compared as text)" if cast == "VARCHAR" else "")
    return _Plan("classification", "value", rule, probabilities=False, cast=cast, **base)


def _decide(plan: _Plan, cells: pd.DataFrame, rel: duckdb.DuckDBPyRelation) -> _Plan:
    """The plan after the first pass: a float with numeric labels is a binary score when
    every label is 0 or 1, else a regression (or, asked to classify, classes as they are);
    a probability vector learns its length."""
    if plan.kind == "vector" and len(cells) and "kmax" in cells.columns:
        k = cells["kmax"].max()
        classes = 0 if _missing(k) else int(k)
        if plan.positive is not None and classes and plan.positive >= classes:
            raise ValueError(
                f"positive_label={plan.positive!r}: the probability vectors have {classes} entries, "
                f"so the classes are 0 to {classes - 1}"
            )
        return dataclasses.replace(plan, classes=classes)
    if plan.kind != "undecided":
        return plan
    scored = int(cells["n_sc"].sum()) if len(cells) else 0
    nonbinary = int(cells["nonbin"].sum()) if len(cells) else 0
    if scored and not nonbinary:
        return dataclasses.replace(plan, kind="score")
    if scored:
        if plan.explicit:
            return _value_plan("float", _family(plan.ltype), _base_of(plan))
        return dataclasses.replace(
            plan, task="regression", kind="regression", rule="the prediction as a number", probabilities=False
        )
    # No labels to score yet: scores within [0, 1] are taken for probabilities.
    lo, hi = _prediction_range(rel) if len(cells) else (math.nan, math.nan)
    if plan.explicit or _missing(lo) or (lo >= 0 and hi <= 1):
        return dataclasses.replace(plan, kind="score", rule=plan.rule + " (no labels yet: scores within [0, 1])")
    return dataclasses.replace(
        plan,
        task="regression",
        kind="regression",
        rule="the prediction as a number (no labels yet: scores outside [0, 1])",
        probabilities=False,
    )


def decide(rel: duckdb.DuckDBPyRelation, plan: _Plan) -> _Plan:
    """The plan once the rows are known (see :func:`_decide`), from one small aggregate:
    for a float prediction, are the scored labels all 0 or 1; for a vector, its length."""
    if plan.kind not in ("undecided", "vector"):
        return plan
    aggs = [f"count(*) FILTER ({_scored(plan)}) AS n_sc"]
    if plan.kind == "undecided":
        aggs.append(f"count(*) FILTER ({_scored(plan)} AND {_Y} NOT IN (0, 1)) AS nonbin")
    else:
        aggs.append(f"max(len({_P})) FILTER ({_scored(plan)}) AS kmax")
    return _decide(plan, _query(rel, f"SELECT {', '.join(aggs)} FROM r").df(), rel)


def _base_of(plan: _Plan) -> dict[str, Any]:
    return {
        "threshold": plan.threshold,
        "positive": plan.positive,
        "average": plan.average,
        "ptype": plan.ptype,
        "ltype": plan.ltype,
    }


# ---------------------------------------------------------------- SQL


def _bucket(width_us: int) -> str:
    """The window index of a row: DuckDB's ``time_bucket`` windows, on integers.

    Windows of whole days count days from the origin on the ``date`` partition (the UTC date
    of ``ts``, by the store format: a constant per file, nearly free to read); shorter
    windows count microseconds of ``ts``. (``time_bucket`` on a TIMESTAMPTZ goes through
    ICU's calendar and costs ten times as much.)
    """
    if width_us % _DAY_US == 0:
        d, width = f"(\"date\" - DATE '{_ORIGIN}')", width_us // _DAY_US
    else:
        d, width = f'(epoch_us("ts") - {_ORIGIN_US})', width_us
    if width == 1:
        return d
    return f"({d} // {width} - CASE WHEN {d} % {width} < 0 THEN 1 ELSE 0 END)"


_P, _Y = '"prediction"', '"label"'


def _ok_prediction(plan: _Plan) -> str:
    fam = _family(plan.ptype)
    if fam == "float":
        return f"({_P} IS NOT NULL AND {finite(_P)})"
    if fam == "list":
        return (
            f"({_P} IS NOT NULL AND len({_P}) > 0 AND list_count({_P}) = len({_P}) "
            f"AND {finite(f'CAST(list_max({_P}) AS DOUBLE)')} AND {finite(f'CAST(list_min({_P}) AS DOUBLE)')})"
        )
    return f"({_P} IS NOT NULL)"


def _ok_label(plan: _Plan) -> str:
    if plan.unlabeled:
        return "false"
    if _family(plan.ltype) == "float":
        return f"({_Y} IS NOT NULL AND {finite(_Y)})"
    return f"({_Y} IS NOT NULL)"


def _scored(plan: _Plan) -> str:
    """The rows the metrics are computed on: a label and a usable prediction (and, for a
    vector, a label that indexes it)."""
    ok = f"{_ok_prediction(plan)} AND {_ok_label(plan)}"
    if plan.kind == "vector" and not plan.unlabeled:
        index = f"CAST({_Y} AS DOUBLE)"
        ok += f" AND {index} = floor({index}) AND {index} >= 0 AND {index} < len({_P})"
    return f"({ok})"


def _binary(plan: _Plan) -> str:
    """A scored row whose label is 0 or 1 (every scored row, for boolean labels)."""
    if plan.unlabeled or _family(plan.ltype) == "bool":
        return _scored(plan)
    return f"({_scored(plan)} AND {_Y} IN (0, 1))"


def _classes(plan: _Plan) -> tuple[str, str]:
    """SQL of the true and the predicted class of a scored row (NULL for other rows)."""
    if plan.kind in ("score", "undecided"):
        b = _binary(plan)
        return (
            f"CASE WHEN {b} THEN CAST({_Y} AS INTEGER) END",
            f"CASE WHEN {b} THEN CAST({_P} >= {plan.threshold!r} AS INTEGER) END",
        )
    sc = _scored(plan)
    if plan.kind == "vector":
        return (
            f"CASE WHEN {sc} THEN CAST({_Y} AS BIGINT) END",
            f"CASE WHEN {sc} THEN list_position({_P}, list_max({_P})) - 1 END",
        )
    if plan.kind == "value":
        y = f"CAST({_Y} AS {plan.cast})" if plan.cast else _Y
        p = f"CAST({_P} AS {plan.cast})" if plan.cast else _P
        return f"CASE WHEN {sc} THEN {y} END", f"CASE WHEN {sc} THEN {p} END"
    return "CAST(NULL AS INTEGER)", "CAST(NULL AS INTEGER)"


def _clip(x: str) -> str:
    return f"greatest(least({x}, {1 - EPS!r}), {EPS!r})"


def _cells_sql(plan: _Plan, segments: Sequence[str], width_us: int) -> str:
    """One row per window × segment × weight × (true, predicted) class: counts and sums.

    Rows are first given their window, weight, classes and flags, and the values the metrics
    use only where the row is scored (NULL elsewhere, which every aggregate skips); the
    aggregates then only count and sum.
    """
    from predlog.replay._shapes import ident

    sc = _scored(plan)
    yt, yp = _classes(plan)
    cols = [f"{_bucket(width_us)} AS _w"]
    cols += [f"{ident(p)} AS _s{i}" for i, p in enumerate(segments)]
    cols += [
        f"{WEIGHT} AS _wt",
        f"{yt} AS _yt",
        f"{yp} AS _yp",
        "CASE WHEN \"status\" = 'error' THEN 1 END AS _err",
        f"CASE WHEN {_ok_label(plan)} THEN 1 END AS _lab",
        f"CASE WHEN {sc} THEN 1 END AS _sc",
    ]
    aggs = ["count(*) AS n", "count(_err) AS n_err", "count(_lab) AS n_lab", "count(_sc) AS n_sc"]
    if plan.kind in ("regression", "undecided"):
        cols += [
            f"CASE WHEN {sc} THEN CAST({_Y} AS DOUBLE) END AS _y",
            f"CASE WHEN {sc} THEN CAST({_P} AS DOUBLE) END AS _p",
        ]
        aggs += [
            "sum(abs(_y - _p)) AS sae",
            "sum((_y - _p) * (_y - _p)) AS sse",
            "avg(_y) AS ymean",
            "var_pop(_y) AS yvar",
            "min(_y) AS ymin",
            "max(_y) AS ymax",
        ]
    if plan.kind == "undecided":
        aggs.append("count(_sc) - count(_yt) AS nonbin")
    if plan.kind in ("score", "undecided"):
        p = f"CAST({_P} AS DOUBLE)"
        cols += [
            f"CASE WHEN {yt} = 1 THEN -ln({_clip(p)}) WHEN {yt} = 0 THEN -ln({_clip(f'1.0 - {p}')}) END AS _ll",
            f"CASE WHEN {yt} IS NOT NULL THEN {p} END AS _ps",
        ]
        aggs += ["sum(_ll) AS ll", "min(_ps) AS pmin_sc", "max(_ps) AS pmax_sc"]
    if plan.kind == "vector":
        cols += [
            f"CASE WHEN {sc} THEN -ln({_clip(f'CAST({_P}[CAST({_Y} AS BIGINT) + 1] AS DOUBLE)')}) END AS _ll",
            f"CASE WHEN {sc} THEN CAST(list_min({_P}) AS DOUBLE) END AS _lo",
            f"CASE WHEN {sc} THEN CAST(list_max({_P}) AS DOUBLE) END AS _hi",
            f"CASE WHEN {sc} THEN len({_P}) END AS _k",
        ]
        aggs += ["sum(_ll) AS ll", "min(_lo) AS pmin_sc", "max(_hi) AS pmax_sc", "min(_k) AS kmin", "max(_k) AS kmax"]
    keys = ["_w", *_seg_keys(segments), "_wt", "_yt", "_yp"]
    return (
        f"SELECT {', '.join(keys)}, {', '.join(aggs)} FROM (SELECT {', '.join(cols)} FROM r) GROUP BY {', '.join(keys)}"
    )


def _prediction_range(rel: duckdb.DuckDBPyRelation) -> tuple[float, float]:
    """The smallest and largest usable float prediction (to tell scores from numbers without labels)."""
    ok = finite(_P)
    lo, hi = _query(rel, f"SELECT min({_P}) FILTER ({ok}), max({_P}) FILTER ({ok}) FROM r").fetchall()[0]
    return (math.nan if lo is None else float(lo)), (math.nan if hi is None else float(hi))


def _auc_sql(plan: _Plan, segments: Sequence[str], width_us: int) -> str:
    """ROC AUC per window × segment, per segment and overall, as the weighted rank statistic.

    At each distinct score: the weight of positives ``wp`` and of negatives ``wn``; the area
    is ``sum(wp * (weight of negatives below + wn / 2)) / (P * N)`` (ties count half, as the
    trapezoids of scikit-learn's ROC curve). A probability vector is unnested into one
    (class, entry) row per entry for one-vs-rest, or scored by its positive entry.
    """
    from predlog.replay._shapes import ident

    sc = _scored(plan)
    s_keys = _seg_keys(segments)
    head = ", ".join([f"{_bucket(width_us)} AS _w", *(f"{ident(p)} AS _s{i}" for i, p in enumerate(segments))])
    cls: list[str] = []
    if plan.kind == "vector" and (plan.average == "binary" or plan.classes == 2):
        pos = 1 if plan.positive is None else int(plan.positive)
        rows = (
            f"SELECT {head}, CASE WHEN {sc} THEN CAST({_P}[{pos + 1}] AS DOUBLE) END AS _score, "
            f"CAST(CAST({_Y} AS DOUBLE) = {pos} AS INTEGER) AS _y, {WEIGHT} AS _wt FROM r"
        )
    elif plan.kind == "vector":
        inner = (
            f"SELECT {head}, {sc} AS _ok, CAST({_Y} AS DOUBLE) AS _label, {WEIGHT} AS _wt, "
            f"unnest({_P}) AS _entry, generate_subscripts({_P}, 1) - 1 AS _k FROM r"
        )
        cls = [] if plan.average == "micro" else ["_k"]
        rows = (
            f"SELECT {', '.join(['_w', *s_keys])}, CASE WHEN _ok THEN CAST(_entry AS DOUBLE) END AS _score, "
            f"CAST(_label = _k AS INTEGER) AS _y, {', '.join(['_wt', *cls])} FROM ({inner})"
        )
    else:
        rows = (
            f"SELECT {head}, CASE WHEN {_binary(plan)} THEN CAST({_P} AS DOUBLE) END AS _score, "
            f"CAST({_Y} AS INTEGER) AS _y, {WEIGHT} AS _wt FROM r"
        )
    sets = [["_w", *s_keys], s_keys, []] if s_keys else [["_w"], []]
    grouping = ", ".join("(" + ", ".join([*k, *cls, "_score"]) + ")" for k in sets)
    flags = ["GROUPING(_w) AS _gw", *([f"GROUPING({s_keys[0]}) AS _gs"] if s_keys else [])]
    part = ", ".join(["_gw", *(["_gs"] if s_keys else []), "_w", *s_keys, *cls])
    return (
        f"WITH x AS ({rows}), "
        f"g AS (SELECT {', '.join([*flags, '_w', *s_keys, *cls, '_score'])}, "
        "sum(_wt) FILTER (_y = 1) AS _wp, sum(_wt) FILTER (_y = 0) AS _wn "
        f"FROM x GROUP BY GROUPING SETS ({grouping})), "
        f"c AS (SELECT *, coalesce(sum(_wn) OVER (PARTITION BY {part} ORDER BY _score "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS _below FROM g) "
        f"SELECT {part}, "
        "sum(coalesce(_wp, 0) * (_below + 0.5 * coalesce(_wn, 0))) FILTER (_score IS NOT NULL) AS _u, "
        "coalesce(sum(_wp) FILTER (_score IS NOT NULL), 0) AS _pos, "
        "coalesce(sum(_wn) FILTER (_score IS NOT NULL), 0) AS _neg "
        f"FROM c GROUP BY {part}"
    )


# ---------------------------------------------------------------- from cells to metrics


_SUMMED = ("n", "n_err", "n_lab", "n_sc", "sw", "sw2", "sw_err", "sw_lab", "sw_sc", "sw2_sc")


def _weighted(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells with their weighted counts: a count times the cell's weight (exact)."""
    wt = cells["_wt"].astype(float)
    return cells.assign(
        sw=cells["n"] * wt,
        sw2=cells["n"] * wt * wt,
        sw_err=cells["n_err"] * wt,
        sw_lab=cells["n_lab"] * wt,
        sw_sc=cells["n_sc"] * wt,
        sw2_sc=cells["n_sc"] * wt * wt,
    )


def _grouped(frame: pd.DataFrame, keys: list[str]) -> Any:
    """``frame`` grouped by ``keys`` (missing keys kept as a group), or as one group."""
    if keys:
        return frame.groupby(keys, dropna=False, sort=True)
    return frame.assign(_all=0).groupby("_all", sort=False)


def _by_key(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A per-key aggregate as a frame with the keys as columns (none for the whole selection)."""
    return frame.reset_index(drop=not keys)


def _base(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Counts, coverage and error rate per key: the rows of one level, before the metrics."""
    import pandas as pd

    if cells.empty:
        return pd.DataFrame(columns=[*keys, *_SUMMED])
    out = _by_key(_grouped(_weighted(cells), keys)[list(_SUMMED)].sum(), keys)
    n_eff = _kish(out["sw"], out["sw2"])
    out["label_coverage"] = _ratio(out["sw_lab"], out["sw"])
    out["label_coverage_low"], out["label_coverage_high"] = wilson(out["label_coverage"], n_eff)
    out["error_rate"] = _ratio(out["sw_err"], out["sw"])
    out["error_rate_low"], out["error_rate_high"] = wilson(out["error_rate"], n_eff)
    return out


def _ratio(num: Any, den: Any) -> np.ndarray:
    """``num / den``, NaN where ``den`` is 0 (scikit-learn's ``zero_division=np.nan``)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, num / safe, np.nan)


def _kish(sw: Any, sw2: Any) -> np.ndarray:
    """Kish's effective number of rows, ``(sum w)^2 / sum w^2`` (the count when weights are equal)."""
    sw = np.asarray(sw, dtype=float)
    return _ratio(sw * sw, sw2)


def wilson(p: Any, n: Any, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of proportions ``p`` over ``n`` rows (``n`` may be an effective number).

    The formula of ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` (Newcombe
    1998) with ``p = k / n``: the bounds are exactly 0 at ``p = 0`` and 1 at ``p = 1``.
    NaN where ``p`` is NaN or ``n`` is not positive.
    """
    p = np.asarray(p, dtype=float)
    n = np.asarray(n, dtype=float)
    ok = np.isfinite(p) & np.isfinite(n) & (n > 0)
    nn = np.where(ok, n, 1.0)
    pp = np.where(ok, p, 0.5)
    denom = 2 * (nn + z * z)
    center = (2 * nn * pp + z * z) / denom
    delta = z / denom * np.sqrt(np.maximum(4 * nn * pp * (1 - pp), 0.0) + z * z)
    low = np.where(pp <= 0, 0.0, np.maximum(center - delta, 0.0))
    high = np.where(pp >= 1, 1.0, np.minimum(center + delta, 1.0))
    return np.where(ok, low, np.nan), np.where(ok, high, np.nan)


def _put(frame: pd.DataFrame, result: pd.DataFrame, keys: list[str]) -> None:
    """The columns of ``result`` (keys as columns) into ``frame`` by key, NaN where absent."""
    if not keys:
        for col in result.columns:
            frame[col] = result[col].to_numpy()[:1] if len(result) and len(frame) else np.nan
        return
    if frame.empty or result.empty:
        for col in result.columns:
            if col not in keys:
                frame[col] = np.nan
        return
    merged = frame[keys].merge(result, on=keys, how="left")
    for col in result.columns:
        if col not in keys:
            frame[col] = merged[col].to_numpy()


_CLASS_COLUMNS = (
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "precision",
    "precision_low",
    "precision_high",
    "recall",
    "recall_low",
    "recall_high",
    "f1",
    "log_loss",
)


def _classify(frame: pd.DataFrame, cells: pd.DataFrame, keys: list[str], plan: _Plan) -> None:
    """Accuracy, precision, recall, F1 and log loss per key, into ``frame``."""
    import pandas as pd

    sc = _weighted(cells[cells["_yt"].notna()]) if len(cells) else cells
    if frame.empty or sc.empty:
        for col in _CLASS_COLUMNS:
            frame[col] = np.nan
        return
    sc = sc.assign(sw_hit=np.where(sc["_yt"] == sc["_yp"], sc["sw_sc"], 0.0))
    if plan.probabilities:
        sc = sc.assign(wll=sc["ll"].fillna(0.0) * sc["_wt"])
    g = _grouped(sc, keys)
    out = _by_key(g[["sw_sc", "sw2_sc", "sw_hit", *(["wll"] if plan.probabilities else [])]].sum(), keys)
    out["accuracy"] = _ratio(out["sw_hit"], out["sw_sc"])
    out["accuracy_low"], out["accuracy_high"] = wilson(out["accuracy"], _kish(out["sw_sc"], out["sw2_sc"]))
    if plan.probabilities:
        # Groups come in the same (sorted) order as ``out``'s.
        lo, hi = g["pmin_sc"].min().to_numpy(dtype=float), g["pmax_sc"].max().to_numpy(dtype=float)
        valid = (lo >= 0) & (hi <= 1)
        if plan.kind == "vector":
            valid &= g["kmin"].min().to_numpy(dtype=float) == g["kmax"].max().to_numpy(dtype=float)
        out["log_loss"] = np.where(valid, _ratio(out["wll"], out["sw_sc"]), np.nan)
    else:
        out["log_loss"] = np.nan
    averaged = _averaged(_per_class(sc, keys), keys, plan)
    out = pd.concat([out.reset_index(drop=True), averaged.reset_index(drop=True)], axis=1)
    _put(frame, out[[*keys, *_CLASS_COLUMNS]], keys)


def _per_class(sc: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per key and class: weighted true positives, predicted and true totals, their sums of
    squared weights, and the class's precision, recall and F1."""
    import pandas as pd

    true = sc[[*keys, "_yt", "sw_sc", "sw2_sc"]].rename(columns={"_yt": "_c", "sw_sc": "true", "sw2_sc": "true2"})
    pred = sc[[*keys, "_yp", "sw_sc", "sw2_sc"]].rename(columns={"_yp": "_c", "sw_sc": "pred", "sw2_sc": "pred2"})
    hit = sc[[*keys, "_yt", "sw_hit"]].rename(columns={"_yt": "_c", "sw_hit": "tp"})
    long = pd.concat([true, pred, hit], ignore_index=True)
    sums = ["tp", "true", "true2", "pred", "pred2"]
    long[sums] = long[sums].fillna(0.0)
    out = long.groupby([*keys, "_c"], dropna=False, sort=True)[sums].sum().reset_index()
    out["precision"] = _ratio(out["tp"], out["pred"])
    out["recall"] = _ratio(out["tp"], out["true"])
    out["f1"] = _ratio(2 * out["tp"], out["pred"] + out["true"])
    out["n_precision"] = _kish(out["pred"], out["pred2"])
    out["n_recall"] = _kish(out["true"], out["true2"])
    return out


def _averaged(pc: pd.DataFrame, keys: list[str], plan: _Plan) -> pd.DataFrame:
    """Precision, recall and F1 averaged over classes per key (sorted by key), with Wilson
    intervals for precision and recall."""
    import pandas as pd

    gkeys = keys or ["_all"]
    pc = pc.assign(_all=0)
    g = pc.groupby(gkeys, dropna=False, sort=True)
    if plan.average == "binary":
        pos = _check_binary(pc, plan)
        one = pc.assign(_pos=[_same(pos, c) for c in pc["_c"]])
        for col in ("tp", "true", "true2", "pred", "pred2"):
            one[col] = np.where(one["_pos"], one[col], 0.0)
        sums = one.groupby(gkeys, dropna=False, sort=True)[["tp", "true", "true2", "pred", "pred2"]].sum()
    else:
        sums = g[["tp", "true", "true2", "pred", "pred2"]].sum()
    out = pd.DataFrame(index=sums.index)
    if plan.average in ("binary", "micro"):
        out["precision"] = _ratio(sums["tp"], sums["pred"])
        out["recall"] = _ratio(sums["tp"], sums["true"])
        out["f1"] = _ratio(2 * sums["tp"], sums["pred"] + sums["true"])
        n_precision, n_recall = _kish(sums["pred"], sums["pred2"]), _kish(sums["true"], sums["true2"])
    else:
        weighted = plan.average == "weighted"
        out["precision"], n_precision = _class_average(pc, gkeys, "precision", "n_precision", weighted)
        out["recall"], n_recall = _class_average(pc, gkeys, "recall", "n_recall", weighted)
        out["f1"], _ = _class_average(pc, gkeys, "f1", None, weighted)
    out["precision_low"], out["precision_high"] = wilson(out["precision"], n_precision)
    out["recall_low"], out["recall_high"] = wilson(out["recall"], n_recall)
    return out[["precision", "precision_low", "precision_high", "recall", "recall_low", "recall_high", "f1"]]


def _check_binary(pc: pd.DataFrame, plan: _Plan) -> Any:
    classes = sorted({_plain(c) for c in pc["_c"].dropna()}, key=str)
    if len(classes) > 2:
        raise ValueError(
            f"average='binary' needs two classes, but the labels and predictions hold {len(classes)} "
            f"({', '.join(map(str, classes[:10]))}); use average='macro', 'micro' or 'weighted'"
        )
    pos = plan.positive
    if pos is None:
        raise ValueError(
            f"average='binary' needs positive_label= (the positive class), e.g. positive_label={classes[-1]!r}"
        )
    if len(classes) == 2 and not any(_same(pos, c) for c in classes):
        raise ValueError(f"positive_label={pos!r} is not a class; the classes are {classes}")
    return pos


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) != isinstance(b, str):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _class_average(
    pc: pd.DataFrame, gkeys: list[str], metric: str, n_col: str | None, weighted: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The macro (or support-weighted) average of a per-class metric per key, leaving out
    undefined classes as scikit-learn's ``_nanaverage``; and the effective number of rows
    whose Wilson interval has the average's variance ``sum a_c^2 p_c (1 - p_c) / n_c``."""
    m = pc[metric].to_numpy(dtype=float)
    defined = ~np.isnan(m)
    w = np.where(defined, pc["true"].to_numpy(dtype=float) if weighted else 1.0, 0.0)
    frame = pc[gkeys].copy()
    frame["w"] = w
    frame["d"] = defined.astype(float)
    total = frame.groupby(gkeys, dropna=False, sort=True)["w"].transform("sum").to_numpy()
    if weighted:
        # Every defined class weighs 0: scikit-learn falls back to their plain mean.
        frame["w"] = w = np.where(total > 0, w, frame["d"].to_numpy())
        total = frame.groupby(gkeys, dropna=False, sort=True)["w"].transform("sum").to_numpy()
    a = _ratio(w, total)
    m0 = np.where(defined, m, 0.0)
    frame["am"] = np.where(defined, a * m0, 0.0)
    if n_col is not None:
        n = pc[n_col].to_numpy(dtype=float)
        frame["var"] = np.where(defined & (n > 0), a * a * m0 * (1 - m0) / np.where(n > 0, n, 1.0), 0.0)
        frame["nd"] = np.where(defined, n, 0.0)
    g = frame.groupby(gkeys, dropna=False, sort=True)
    value = np.where(g["d"].sum().to_numpy() > 0, g["am"].sum().to_numpy(), np.nan)
    if n_col is None:
        return value, np.full(len(value), np.nan)
    var = g["var"].sum().to_numpy()
    n_eff = np.where(var > 0, value * (1 - value) / np.where(var > 0, var, 1.0), g["nd"].sum().to_numpy())
    return value, n_eff


def _regress(frame: pd.DataFrame, cells: pd.DataFrame, keys: list[str]) -> None:
    """MAE, RMSE and R² per key, into ``frame``: the labels' spread merged from each cell's
    mean and variance by Chan's parallel formula (no cancellation of large sums)."""
    sc = cells[cells["n_sc"] > 0] if len(cells) else cells
    if frame.empty or sc.empty:
        for col in ("mae", "rmse", "r2"):
            frame[col] = np.nan
        return
    wt = sc["_wt"].astype(float)
    c = sc.assign(
        W=sc["n_sc"] * wt,
        wae=sc["sae"] * wt,
        wse=sc["sse"] * wt,
        wy=sc["ymean"] * sc["n_sc"] * wt,
        m2=sc["yvar"] * sc["n_sc"] * wt,
    )
    c = c.assign(_all=0)
    gkeys = keys or ["_all"]
    total_w = c.groupby(gkeys, dropna=False, sort=True)["W"].transform("sum")
    mean = c.assign(_x=c["wy"]).groupby(gkeys, dropna=False, sort=True)["_x"].transform("sum") / total_w
    c["dev"] = c["W"] * (c["ymean"] - mean) ** 2
    g = c.groupby(gkeys, dropna=False, sort=True)
    out = g[["W", "wae", "wse", "m2", "dev", "n_sc"]].sum()
    ymin, ymax = g["ymin"].min(), g["ymax"].max()
    out["mae"] = out["wae"] / out["W"]
    out["rmse"] = np.sqrt(out["wse"] / out["W"])
    ss_tot = (out["m2"] + out["dev"]).to_numpy()
    constant = (ymin == ymax).to_numpy()
    r2 = np.where(constant, np.where(out["wse"] == 0, 1.0, 0.0), 1 - _ratio(out["wse"], np.where(constant, 1, ss_tot)))
    out["r2"] = np.where(out["n_sc"] < 2, np.nan, r2)
    _put(frame, _by_key(out[["mae", "rmse", "r2"]], keys), keys)


def _auc(levels: dict[str, pd.DataFrame], got: pd.DataFrame, segments: list[str], plan: _Plan) -> None:
    """ROC AUC per key from the rank sums of :func:`_auc_sql`, into each level's frame.

    One-vs-rest over classes (``_k``): macro is the plain mean (NaN when a class's area is
    undefined), weighted the mean by each class's weighted support (an absent class scores 0
    with weight 0), as scikit-learn's ``_average_binary_score``.
    """
    s_keys = _seg_keys(segments)
    got = got.assign(
        auc=_ratio(got["_u"], np.where((got["_pos"] > 0) & (got["_neg"] > 0), got["_pos"] * got["_neg"], 0.0)),
        _all=0,
    )
    for level, frame in levels.items():
        if level == "window":
            part, keys = got[got["_gw"] == 0], ["_w", *s_keys]
        elif level == "group":
            part, keys = got[(got["_gw"] == 1) & (got["_gs"] == 0)], s_keys
        else:
            part, keys = (got[(got["_gw"] == 1) & (got["_gs"] == 1)] if s_keys else got[got["_gw"] == 1]), []
        gkeys = keys or ["_all"]
        if "_k" in part.columns:
            part = part.assign(
                _x=part["auc"].where(part["_pos"] > 0, 0.0) * part["_pos"]
                if plan.average == "weighted"
                else part["auc"],
                _nan=part["auc"].isna() & ((part["_pos"] > 0) if plan.average == "weighted" else True),
            )
            g = part.groupby(gkeys, dropna=False, sort=True)
            if plan.average == "weighted":
                value = g["_x"].sum() / g["_pos"].sum()
            else:
                value = g["_x"].mean()
            value = value.where(~g["_nan"].any(), np.nan)
        else:
            value = part.groupby(gkeys, dropna=False, sort=True)["auc"].first()
        _put(frame, _by_key(value.to_frame("roc_auc"), keys), keys)


# ---------------------------------------------------------------- output


_COUNTS = [
    "rows",
    "weighted_rows",
    "labeled_rows",
    "weighted_labeled_rows",
    "scored_rows",
    "label_coverage",
    "label_coverage_low",
    "label_coverage_high",
    "error_rate",
    "error_rate_low",
    "error_rate_high",
]


def _finish(
    frame: pd.DataFrame, shown: list[str], segments: list[str], width_us: int, *, window: bool = False
) -> pd.DataFrame:
    """A level's frame as the result shows it: window start, segments by path, then ``shown``."""
    import pandas as pd

    out = pd.DataFrame(index=range(len(frame)))
    if window:
        start = _ORIGIN_US + frame["_w"].to_numpy(dtype=np.int64) * width_us
        out["window_start"] = pd.to_datetime(start, unit="us", utc=True)
    for i, path in enumerate(segments):
        out[path] = frame[f"_s{i}"].to_numpy()
    named = frame.rename(
        columns={
            "n": "rows",
            "sw": "weighted_rows",
            "n_lab": "labeled_rows",
            "sw_lab": "weighted_labeled_rows",
            "n_sc": "scored_rows",
        }
    )
    for col in shown:
        out[col] = named[col].to_numpy() if col in named.columns else np.full(len(frame), np.nan)
    for col in shown:
        out[col] = out[col].astype("int64" if col in ("rows", "labeled_rows", "scored_rows") else float)
    if window and len(out):
        out = out.sort_values(["window_start", *segments], kind="stable").reset_index(drop=True)
    return out


def _empty_row(shown: list[str]) -> pd.DataFrame:
    import pandas as pd

    row: dict[str, Any] = dict.fromkeys(shown, np.nan)
    row.update(rows=0, labeled_rows=0, scored_rows=0, weighted_rows=0.0, weighted_labeled_rows=0.0)
    return pd.DataFrame([row], columns=shown)


def _missing(x: Any) -> bool:
    """None or NaN (a missing segment value or metric)."""
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def _short(x: Any) -> str:
    """A metric as the summary sentence shows it: three decimals."""
    if _missing(x):
        return "-"
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:,.0f}"


def _span(windows: int, label: str, width_us: int) -> str:
    units = {_DAY_US: "day", _DAY_US // 24: "hour", 7 * _DAY_US: "week", _DAY_US // 1440: "minute"}
    unit = units.get(width_us)
    if unit:
        return f"{windows:,} {unit}{'s' if windows != 1 else ''}"
    return f"{windows:,} windows of {label}"


def _summary(
    df: pd.DataFrame,
    overall: pd.DataFrame,
    plan: _Plan,
    metrics: list[str],
    model: str,
    window: str,
    width_us: int,
    segments: list[str],
    filters: dict[str, Any],
) -> dict[str, Any]:
    row = overall.iloc[0]
    windows = int(df["window_start"].nunique()) if len(df) else 0
    summary: dict[str, Any] = {
        "text": "",
        "model": model,
        "task": plan.task,
        "rule": plan.rule,
        "average": plan.average if plan.task == "classification" else None,
        "threshold": plan.threshold if plan.kind == "score" else None,
        "positive_label": _plain(plan.positive) if plan.task == "classification" else None,
        "metrics": metrics,
        "window": window,
        "by": segments or None,
        "windows": windows,
        "filters": describe_filters(filters),
        "rows": int(row["rows"]),
        "weighted_rows": float(row["weighted_rows"]),
        "labeled_rows": int(row["labeled_rows"]),
        "scored_rows": int(row["scored_rows"]),
        "label_coverage": _plain(row["label_coverage"]),
        "error_rate": _plain(row["error_rate"]),
    }
    for m in metrics:
        for col in _columns_of(m):
            summary[col] = _plain(row[col])
    summary["worst"] = None
    span = _span(windows, window, width_us)
    if int(row["rows"]) == 0:
        summary["text"] = f"No predictions of {model} in this selection ({summary['filters']})."
        return summary
    if int(row["scored_rows"]) == 0:
        labeled = int(row["labeled_rows"])
        summary["text"] = (
            f"No labels to score yet: {labeled:,} of {int(row['rows']):,} predictions over {span} have a label"
            + (" but no usable prediction" if labeled else "")
            + "; log labels with predlog.log_label(label, prediction_id=...)."
        )
        return summary
    head = metrics[0] if metrics else None
    if head is None:
        summary["text"] = f"{int(row['scored_rows']):,} labeled predictions over {span}."
        return summary
    value = row[head]
    text = f"{head} {_short(value)}"
    if f"{head}_low" in overall.columns and not _missing(row[f"{head}_low"]):
        text += f" [{_short(row[f'{head}_low'])}, {_short(row[f'{head}_high'])}]"
    text += f" over {span}"
    worst = _worst(df, head, segments)
    if worst is not None and (windows > 1 or segments):
        summary["worst"] = worst
        word = "highest" if head in _LOWER_IS_BETTER else "lowest"
        where = f" for {', '.join(f'{k}={v}' for k, v in worst['segment'].items())}" if segments else ""
        text += (
            f"; {word} {_short(worst['value'])} on {when(worst['window_start'], Windows(dt.timedelta(microseconds=width_us), ''))}{where} "
            f"(n={worst['scored_rows']:,})"
        )
    coverage = _plain(row["label_coverage"])
    if coverage is not None and not _missing(coverage) and coverage < 1:
        text += f"; {coverage:.0%} of predictions labeled"
    summary["text"] = text + "."
    return summary


def _worst(df: pd.DataFrame, metric: str, segments: list[str]) -> dict[str, Any] | None:
    frame = df[df[metric].notna()]
    if frame.empty:
        return None
    frame = frame[frame["scored_rows"] >= MIN_ROWS]  # a window of 3 rows is not "the worst day"
    if frame.empty:
        return None
    ascending = metric not in _LOWER_IS_BETTER
    pick = frame.sort_values([metric, "scored_rows"], ascending=[ascending, False], kind="stable").iloc[0]
    return {
        "window_start": pick["window_start"],
        "segment": {s: _plain(pick[s]) for s in segments},
        "value": _plain(pick[metric]),
        "scored_rows": int(pick["scored_rows"]),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
