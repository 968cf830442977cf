"""Alert rules: a condition on one signal, checked window by window.

::

    from predlog.analysis import Monitor, rules

    monitor = Monitor(s, reference={"version": "1.3"}, rules=[
        rules.metric_below("accuracy", 0.85, window="1D", consecutive=3),
        rules.share_drifted(max=0.3),
        rules.error_rate_above(0.01, window="1h"),
        rules.latency_above(p95_ms=250),
    ])
    for alert in monitor.check():
        print(alert)

A rule looks at ``consecutive`` windows of length ``window`` ending at the check's time, and
fires only when its condition holds on every one of them: a one-window blip is not an alert.
A window without enough data (no rows, no labels, fewer than ``min_rows``) breaks the run.

Each rule is a small frozen dataclass with ``evaluate(context, start, end) -> Reading``; write
your own the same way and pass it to :class:`Monitor`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import duckdb

    from predlog.replay import Store

    from ._sides import Side

__all__ = [
    "Context",
    "Reading",
    "Rule",
    "error_rate_above",
    "feature_drift",
    "from_dict",
    "label_coverage_below",
    "latency_above",
    "metric_below",
    "prediction_shift",
    "share_drifted",
]


@dataclasses.dataclass(frozen=True)
class Context:
    """What a rule reads: the store, the model, the monitor's reference and filters."""

    store: Store
    model: str
    reference: Side | None
    filters: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Reading:
    """A rule's value on one window.

    Attributes:
        value: The signal (an error rate, a metric, a count of drifted features); NaN when the
            window had too little data.
        breached: Whether the condition holds; None when it could not be told (no data).
        detail: The numbers behind it, for the alert (``rows``, ``drifted`` features, ...).
    """

    value: float
    breached: bool | None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Rule(Protocol):
    """A condition checked window by window (see the module's docstring)."""

    name: str
    window: str | dt.timedelta
    consecutive: int

    def evaluate(self, ctx: Context, start: dt.datetime, end: dt.datetime) -> Reading:
        """The rule's reading of the model's rows in ``[start, end)``."""
        ...

    def describe(self) -> str:
        """The condition in a few words ("error rate above 1%")."""
        ...


def _window_filters(ctx: Context, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    return {**dict(ctx.filters), "start": start, "end": end}


def _check(consecutive: int, window: Any, **more: Any) -> None:
    """The arguments every rule shares, checked when the rule is made (not at its first check):
    ``consecutive``, ``window``, and those of ``min_rows``, ``min_labeled``, ``alpha`` and
    ``method`` it has."""
    from ._drift import METHODS
    from ._windows import Windows

    for name, value in {"consecutive": consecutive, **more}.items():
        if name in ("consecutive", "min_rows", "min_labeled") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a whole number, 1 or more, got {value!r}")
        if name == "alpha" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1):
            raise ValueError(f"alpha must be a number between 0 and 1, got {value!r}")
        if name == "method" and value not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {value!r}")
    Windows.of(window)


def _number(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a float, checked: a number (not text, not a bool) within ``[low, high]``."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(
            f"{name} must be a number, got {value!r}" + (" (text: drop the quotes)" if isinstance(value, str) else "")
        )
    number = float(value)
    if (low is not None and number < low) or (high is not None and number > high):
        span = f"between {low:g} and {high:g}" if low is not None and high is not None else f">= {low:g}"
        raise ValueError(f"{name} must be {span}, got {value!r}")
    return number


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


# ---------------------------------------------------------------- operational signals


_PERFORMANCE_OPTIONS = ("task", "threshold", "positive_label", "average", "prediction")
"""What :func:`metric_below` passes on to :func:`~predlog.analysis.performance`."""


def _known(what: str, name: str, names: Sequence[str], error: type[Exception]) -> None:
    """Raise ``error`` naming the closest of ``names`` when ``name`` is not one of them."""
    import difflib

    if name in names:
        return
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise error(f"{what} {name!r} is unknown: {hint}one of {', '.join(names)}")


def _weighted_share(rel: duckdb.DuckDBPyRelation, condition: str) -> tuple[int, float]:
    """The rows of ``rel``, and the share of them (weighted by ``1 / sample_rate``) where
    ``condition`` holds (NaN without rows)."""
    from ._sides import WEIGHT

    n, total, hits = rel.aggregate(f"count(*), sum({WEIGHT}), sum({WEIGHT}) FILTER (WHERE {condition})").fetchall()[0]
    return int(n), float(hits or 0.0) / float(total) if n else math.nan


@dataclasses.dataclass(frozen=True)
class ErrorRateAbove:
    """The share of calls that raised (weighted by ``1 / sample_rate``) is above ``max``."""

    max: float
    window: str | dt.timedelta = "1h"
    consecutive: int = 1
    min_rows: int = 1
    name: str = "error_rate_above"

    def describe(self) -> str:
        return f"error rate above {_pct(self.max)}"

    def evaluate(self, ctx: Context, start: dt.datetime, end: dt.datetime) -> Reading:
        rel = ctx.store.relation(
            ctx.model, columns=["status", "sample_rate"], ordered=False, **_window_filters(ctx, start, end)
        )
        n, rate = _weighted_share(rel, "status = 'error'")
        if n < self.min_rows:
            return Reading(math.nan, None, {"rows": n})
        return Reading(rate, rate > self.max, {"rows": n, "error_rate": rate})


def error_rate_above(
    max: float, *, window: str | dt.timedelta = "1h", consecutive: int = 1, min_rows: int = 1
) -> ErrorRateAbove:
    """Fires when the error rate is above ``max``: the share of predictions whose call raised
    (a failed batch call of 10 rows is 10 failed predictions), weighted by ``1 / sample_rate``."""
    _check(consecutive, window, min_rows=min_rows)
    return ErrorRateAbove(_number("error_rate_above(): max", max, 0, 1), window, consecutive, min_rows)


_QUANTILES = {"p50_ms": 0.5, "p90_ms": 0.9, "p95_ms": 0.95, "p99_ms": 0.99}


@dataclasses.dataclass(frozen=True)
class LatencyAbove:
    """A latency percentile (or the mean) of successful calls is above its limit."""

    limits: tuple[tuple[str, float], ...]
    window: str | dt.timedelta = "1h"
    consecutive: int = 1
    min_rows: int = 1
    name: str = "latency_above"

    def describe(self) -> str:
        return "latency " + " or ".join(f"{k.removesuffix('_ms')} above {v:g} ms" for k, v in self.limits)

    def evaluate(self, ctx: Context, start: dt.datetime, end: dt.datetime) -> Reading:
        ok = {**_window_filters(ctx, start, end), "status": "ok"}  # a failed call's latency is not the model's
        rel = ctx.store.relation(ctx.model, columns=["latency_ms"], ordered=False, **ok)
        exprs = ["count(latency_ms)"] + [
            "avg(latency_ms)" if k == "mean_ms" else f"quantile_cont(latency_ms, {_QUANTILES[k]})"
            for k, _ in self.limits
        ]
        got = rel.aggregate(", ".join(exprs)).fetchall()[0]
        n = int(got[0])
        if n < self.min_rows:
            return Reading(math.nan, None, {"rows": n})
        values = {k: float(v) for (k, _), v in zip(self.limits, got[1:], strict=True)}
        over = {k: values[k] > limit for k, limit in self.limits}
        first = self.limits[0][0]
        return Reading(values[first], any(over.values()), {"rows": n, **values})


def latency_above(
    *,
    p50_ms: float | None = None,
    p90_ms: float | None = None,
    p95_ms: float | None = None,
    p99_ms: float | None = None,
    mean_ms: float | None = None,
    window: str | dt.timedelta = "1h",
    consecutive: int = 1,
    min_rows: int = 1,
) -> LatencyAbove:
    """Fires when a latency percentile (``quantile_cont`` of ``latency_ms``) or the mean of the
    successful calls is above its limit.

    Not weighted by ``1 / sample_rate``: successful calls share one rate, so the kept rows are
    a uniform sample of them (errors, kept whatever the rate, are left out)."""
    limits = tuple(
        (k, _number(f"latency_above(): {k}", v, 0))
        for k, v in (
            ("p50_ms", p50_ms),
            ("p90_ms", p90_ms),
            ("p95_ms", p95_ms),
            ("p99_ms", p99_ms),
            ("mean_ms", mean_ms),
        )
        if v is not None
    )
    if not limits:
        raise ValueError("latency_above needs a limit: p50_ms=, p90_ms=, p95_ms=, p99_ms= or mean_ms=")
    _check(consecutive, window, min_rows=min_rows)
    return LatencyAbove(limits, window, consecutive, min_rows)


# ---------------------------------------------------------------- ground truth


@dataclasses.dataclass(frozen=True)
class MetricBelow:
    """A performance metric (see :func:`~predlog.analysis.performance`) is below ``min``."""

    metric: str
    min: float
    window: str | dt.timedelta = "1D"
    consecutive: int = 1
    min_labeled: int = 30
    options: tuple[tuple[str, Any], ...] = ()
    name: str = "metric_below"

    def describe(self) -> str:
        return f"{self.metric} below {self.min:g}"

    def evaluate(self, ctx: Context, start: dt.datetime, end: dt.datetime) -> Reading:
        from ._performance import CLASSIFICATION_METRICS, REGRESSION_METRICS, performance

        res = performance(
            ctx.store, model=ctx.model, window=end - start, **dict(self.options), **_window_filters(ctx, start, end)
        )
        row = res.overall.iloc[0]
        labeled = int(row.get("labeled_rows", 0) or 0)
        if self.metric not in res.overall.columns:
            task = res.summary.get("task")
            given = [m for m in (*CLASSIFICATION_METRICS, *REGRESSION_METRICS) if m in res.overall.columns]
            raise ValueError(
                f"metric_below: {self.metric!r} is not a metric of model {ctx.model!r} ({task}); "
                f"its metrics are {', '.join(given) or 'none (no labels scored)'}"
            )
        value = float(row[self.metric])
        if labeled < self.min_labeled or math.isnan(value):
            return Reading(math.nan, None, {"labeled_rows": labeled})
        return Reading(value, value < self.min, {"labeled_rows": labeled, self.metric: value})


def metric_below(
    metric: str,
    min: float,
    *,
    window: str | dt.timedelta = "1D",
    consecutive: int = 1,
    min_labeled: int = 30,
    **performance_options: Any,
) -> MetricBelow:
    """Fires when ``metric`` (``"accuracy"``, ``"f1"``, ``"mae"``...: a column of
    :func:`~predlog.analysis.performance`) is below ``min`` on windows with at least
    ``min_labeled`` labeled predictions. Options such as ``threshold=`` go to ``performance``."""
    from ._performance import CLASSIFICATION_METRICS, REGRESSION_METRICS

    _known("metric_below(): metric", metric, (*CLASSIFICATION_METRICS, *REGRESSION_METRICS), ValueError)
    for key in performance_options:
        arguments = ("window", "consecutive", "min_labeled", *_PERFORMANCE_OPTIONS)
        _known("metric_below(): the argument", key, arguments, TypeError)
    _check(consecutive, window, min_labeled=min_labeled)
    return MetricBelow(
        metric,
        _number("metric_below(): min", min),
        window,
        consecutive,
        min_labeled,
        tuple(sorted(performance_options.items())),
    )


@dataclasses.dataclass(frozen=True)
class LabelCoverageBelow:
    """The share of predictions that have a label is below ``min``."""

    min: float
    window: str | dt.timedelta = "1D"
    consecutive: int = 1
    min_rows: int = 1
    name: str = "label_coverage_below"

    def describe(self) -> str:
        return f"label coverage below {_pct(self.min)}"

    def evaluate(self, ctx: Context, start: dt.datetime, end: dt.datetime) -> Reading:
        rel = ctx.store.labeled_relation(
            ctx.model,
            columns=["label_ts", "sample_rate"],
            include_unlabeled=True,
            ordered=False,
            **_window_filters(ctx, start, end),
        )
        n, share = _weighted_share(rel, "label_ts IS NOT NULL")
        if n < self.min_rows:
            return Reading(math.nan, None, {"rows": n})
        return Reading(share, share < self.min, {"rows": n, "label_coverage": share})


def label_coverage_below(
    min: float, *, window: str | dt.timedelta = "1D", consecutive: int = 1, min_rows: int = 1
) -> LabelCoverageBelow:
    """Fires when fewer than ``min`` of the predictions (weighted) have a label."""
    _check(consecutive, window, min_rows=min_rows)
    return LabelCoverageBelow(_number("label_coverage_below(): min", min, 0, 1), window, consecutive, min_rows)


# ---------------------------------------------------------------- drift against the reference


@dataclasses.dataclass(frozen=True)
class FeatureDrift:
    """Features drifted against the monitor's reference (:func:`~predlog.analysis.input_drift`)."""

    features: tuple[str, ...] | None = None
    method: str = "auto"
    alpha: float = 0.05
    max_share: float | None = None  # share_drifted: fire above this share instead of on any
    window: str | dt.timedelta = "1D"
    consecutive: int = 1
    min_rows: int = 30
    name: str = "feature_drift"

    def describe(self) -> str:
        if self.max_share is not None:
            return f"more than {_pct(self.max_share)} of the features drifted"
        named = f" ({', '.join(self.features)})" if self.features else ""
        return f"a feature drifted{named}"

    def evaluate(self, ctx: Context, start: dt.datetime, end: dt.datetime) -> Reading:
        from ._drift import input_drift

        if ctx.reference is None:
            raise ValueError(f"{self.name} compares against a reference: Monitor(..., reference=...)")
        res = input_drift(
            ctx.store,
            ctx.reference,
            _window_filters(ctx, start, end),
            model=ctx.model,
            features=list(self.features) if self.features else None,
            method=self.method,
            alpha=self.alpha,
            min_rows=self.min_rows,
        )
        tested, drifted = res.summary["tested"], res.drifted
        if tested == 0:
            return Reading(math.nan, None, {"tested": 0})
        share = len(drifted) / tested
        hit = share > self.max_share if self.max_share is not None else bool(drifted)
        value = share if self.max_share is not None else float(len(drifted))
        return Reading(value, hit, {"tested": tested, "drifted": drifted, "share_drifted": share})


def feature_drift(
    features: Sequence[str] | None = None,
    *,
    method: str = "auto",
    alpha: float = 0.05,
    window: str | dt.timedelta = "1D",
    consecutive: int = 1,
    min_rows: int = 30,
) -> FeatureDrift:
    """Fires when any of ``features`` (default: every feature) drifted against the reference."""
    _check(consecutive, window, min_rows=min_rows, alpha=alpha, method=method)
    if isinstance(features, str):  # one feature
        features = [features]
    return FeatureDrift(tuple(features) if features else None, method, alpha, None, window, consecutive, min_rows)


def share_drifted(
    max: float = 0.3,
    *,
    method: str = "auto",
    alpha: float = 0.05,
    window: str | dt.timedelta = "1D",
    consecutive: int = 1,
    min_rows: int = 30,
) -> FeatureDrift:
    """Fires when more than ``max`` of the features tested drifted against the reference."""
    _check(consecutive, window, min_rows=min_rows, alpha=alpha, method=method)
    share = _number("share_drifted(): max", max, 0, 1)
    return FeatureDrift(None, method, alpha, share, window, consecutive, min_rows, name="share_drifted")


@dataclasses.dataclass(frozen=True)
class PredictionShift:
    """The predictions drifted against the reference (:func:`~predlog.analysis.prediction_drift`)."""

    alpha: float = 0.05
    window: str | dt.timedelta = "1D"
    consecutive: int = 1
    min_rows: int = 30
    name: str = "prediction_shift"

    def describe(self) -> str:
        return "the predictions shifted"

    def evaluate(self, ctx: Context, start: dt.datetime, end: dt.datetime) -> Reading:
        from ._drift import prediction_drift

        if ctx.reference is None:
            raise ValueError("prediction_shift compares against a reference: Monitor(..., reference=...)")
        res = prediction_drift(
            ctx.store,
            ctx.reference,
            _window_filters(ctx, start, end),
            model=ctx.model,
            alpha=self.alpha,
            min_rows=self.min_rows,
        )
        df = res.df[res.df["feature"] != "confidence"]
        tested = df[df["p_value"].notna()]
        if tested.empty:
            return Reading(math.nan, None, {"tested": 0})
        strongest = tested.sort_values("p_adjusted").iloc[0]
        detail = {
            "column": strongest["feature"],
            "statistic": strongest["statistic"],
            "p_value": strongest["p_adjusted"],
        }
        means = res.means.set_index("feature")
        if strongest["feature"] in means.index:
            m = means.loc[strongest["feature"]]
            detail.update(mean_ref=float(m["mean_ref"]), mean_cur=float(m["mean_cur"]))
        return Reading(float(strongest["statistic"]), bool(tested["drifted"].any()), detail)


def prediction_shift(
    *, alpha: float = 0.05, window: str | dt.timedelta = "1D", consecutive: int = 1, min_rows: int = 30
) -> PredictionShift:
    """Fires when the prediction's distribution differs from the reference's (KS for numbers,
    chi-squared for classes; see :func:`~predlog.analysis.prediction_drift`)."""
    _check(consecutive, window, min_rows=min_rows, alpha=alpha)
    return PredictionShift(alpha, window, consecutive, min_rows)


# ---------------------------------------------------------------- from a file

_MAKERS: dict[str, Any] = {
    "error_rate_above": error_rate_above,
    "feature_drift": feature_drift,
    "label_coverage_below": label_coverage_below,
    "latency_above": latency_above,
    "metric_below": metric_below,
    "prediction_shift": prediction_shift,
    "share_drifted": share_drifted,
}


def from_dict(spec: Mapping[str, Any]) -> Rule:
    """A rule from its description in a rules file: ``{"rule": "metric_below", "metric":
    "accuracy", "min": 0.85, "consecutive": 3}`` (the other keys are the function's arguments)."""
    spec = dict(spec)
    name = spec.pop("rule", None)
    if name is None:
        raise ValueError(f'a rule needs a name: rule = "error_rate_above" (one of {", ".join(sorted(_MAKERS))})')
    maker = _MAKERS.get(str(name))
    if maker is None:
        raise ValueError(f"unknown rule {name!r}; the rules are {', '.join(sorted(_MAKERS))}")
    try:
        rule: Rule = maker(**spec)
    except TypeError as exc:
        raise ValueError(f"rule {name!r}: {exc}") from exc
    return rule
