"""When did it change: change points of a series, and when the predictions shifted.

:func:`change_points` finds where the level of a series (a statistic per window) changes:
offline with PELT (``ruptures``) or as a stream with two-sided CUSUM or Page–Hinkley
detectors. :func:`when_shifted` computes one number per window of the selected predictions
in DuckDB and returns the largest change as a :class:`Shift`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ._drift import _natural
from ._over_time import number_text, weighted_mean
from ._result import Result, figure
from ._sides import WEIGHT, StoreSide, feature_path, one_kind, resolve_model
from ._summary import _present, _query
from ._windows import Windows, utc_times

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from predlog.replay import Store

__all__ = [
    "CUSUM_DRIFT",
    "CUSUM_THRESHOLD",
    "MAD_TO_SIGMA",
    "METHODS",
    "ChangePoint",
    "Shift",
    "change_points",
    "default_penalty",
    "robust_sigma",
    "when_shifted",
]

METHODS = ("pelt", "cusum", "page_hinkley")
"""``method=`` values of :func:`change_points`."""

MIN_SIZE = 2
"""PELT's shortest segment (``ruptures.Pelt(min_size=2)``)."""

CUSUM_THRESHOLD = 8.0
"""Default alarm threshold of the CUSUM and Page–Hinkley detectors, in robust sigmas."""

CUSUM_DRIFT = 0.5
"""Default drift (CUSUM's k, Page–Hinkley's delta), in robust sigmas: tuned to a 1-sigma shift."""

CUSUM_WARMUP = 10
"""Values CUSUM reads before it watches (their mean is the first level), at the start and after
each change."""


@dataclasses.dataclass(frozen=True)
class ChangePoint:
    """Where the level of a series changes.

    Attributes:
        index: Position in the series (NaN included) of the first value of the new level.
        at: The series' index label there (a window start, for the results of this package).
        before: Mean of the segment before (from the previous change point, or the start).
        after: Mean of the segment from ``at`` to the next change point (or the end).
        delta: ``after - before``.
        alarm: ``"cusum"`` and ``"page_hinkley"``: the label where the detector fired (the
            change is seen there; ``at`` is its estimated start). None for ``"pelt"``.
    """

    index: int
    at: Any
    before: float
    after: float
    delta: float
    alarm: Any = None


MAD_TO_SIGMA = 1.482602218505602
"""``1 / Φ⁻¹(3/4)``: a normal sample's MAD times this is its sigma (scipy's ``scale="normal"``)."""


def robust_sigma(values: np.ndarray) -> float:
    """The noise level of a series: ``MAD(first differences) * 1.4826 / sqrt(2)``, i.e.
    ``scipy.stats.median_abs_deviation(np.diff(x), scale="normal") / sqrt(2)``.

    First differences cancel the level (a step moves one of them), and the MAD ignores the few
    that a change moves; the difference of two independent values has twice their variance.
    When more than half the differences are equal (a step without noise), their standard
    deviation over ``sqrt(2)`` instead; 0 for a constant series.
    """
    d = np.diff(np.asarray(values, dtype=float))
    if len(d) == 0:
        return 0.0
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)
    if sigma == 0:
        sigma = float(np.std(d)) / math.sqrt(2)
    return sigma


def default_penalty(values: np.ndarray) -> float:
    """PELT's default penalty, BIC-like: ``2 * sigma**2 * ln(n)``, sigma by :func:`robust_sigma`."""
    n = len(values)
    return 2.0 * robust_sigma(values) ** 2 * math.log(max(n, 2))


def change_points(
    series: Any,
    *,
    method: str = "pelt",
    penalty: float | None = None,
    threshold: float | None = None,
    drift: float | None = None,
) -> list[ChangePoint]:
    """Where the level of ``series`` changes, earliest first.

    Args:
        series: A pandas Series (its index labels the points: window starts, or positions),
            e.g. a column of ``drift_over_time(...).wide`` or ``Shift.series``; or an array.
            NaN (and infinite) values are dropped first; positions and labels refer to the
            series as given.
        method: ``"pelt"``: the segmentation minimising the squared error plus ``penalty`` per
            change, as ``ruptures.Pelt(model="l2", min_size=2, jump=1).fit(x).predict(pen=penalty)``
            (exact; quadratic in the worst case: fine for thousands of windows).
            ``"cusum"``: a two-sided tabular CUSUM (Page 1954), self-starting: around the
            mean of the values so far (from the ``CUSUM_WARMUP`` = 10 first on),
            ``S+ = max(0, S+ + x - mean - k)`` and ``S- = max(0, S- + mean - x - k)``, alarm
            when either passes ``h``.
            ``"page_hinkley"``: the two-sided Page–Hinkley test around the running mean,
            ``m = sum(x - running mean -+ delta)``, alarm when ``m`` moves ``h`` away from its
            extreme. Both detectors read the series as a stream: each change point carries
            where the alarm fired (``alarm``) and the change's estimated start (``at``: the
            least-squares split, into two levels, of the values read since the detector last
            (re)started); after an alarm the detector restarts from the next value.
        penalty: PELT's penalty; default :func:`default_penalty`, ``2 * sigma**2 * ln(n)``
            with sigma the robust noise level of the series (:func:`robust_sigma`, from the
            MAD of first differences).
        threshold: The detectors' ``h``, in robust sigmas (default :data:`CUSUM_THRESHOLD`,
            8: a flat Gaussian series raises about one false alarm per 8,000 values).
        drift: The detectors' ``k`` / ``delta``, in robust sigmas (default
            :data:`CUSUM_DRIFT`, 0.5: tuned to a shift of one sigma; a shift of 2 sigmas is
            seen after about 5 values, of 1 sigma after about 15).

    Returns:
        :class:`ChangePoint` per change: where the new level starts, the means of the
        segments on either side and their difference. Empty for a constant series or one
        shorter than 4 values.
    """
    import pandas as pd

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    for name, value in (("penalty", penalty), ("threshold", threshold), ("drift", drift)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
            raise ValueError(f"{name} must be a number >= 0 (or None for the default), got {value!r}")
    s = series if isinstance(series, pd.Series) else pd.Series(np.asarray(series, dtype=float))
    values = s.to_numpy(dtype=float)
    keep = np.flatnonzero(np.isfinite(values))
    x = values[keep]
    if len(x) < 2 * MIN_SIZE or robust_sigma(x) == 0:
        return []
    alarms: list[int] = []
    if method == "pelt":
        starts = _pelt(x, default_penalty(x) if penalty is None else penalty)
    else:
        sigma = robust_sigma(x)
        h = (CUSUM_THRESHOLD if threshold is None else threshold) * sigma
        k = (CUSUM_DRIFT if drift is None else drift) * sigma
        starts, alarms = (_cusum if method == "cusum" else _page_hinkley)(x, h, k)
    bounds = [0, *starts, len(x)]
    out = []
    for j, start in enumerate(starts):
        before = float(np.mean(x[bounds[j] : start]))
        after = float(np.mean(x[start : bounds[j + 2]]))
        alarm = s.index[keep[alarms[j]]] if alarms else None
        out.append(ChangePoint(int(keep[start]), s.index[keep[start]], before, after, after - before, alarm))
    return out


def _pelt(x: np.ndarray, penalty: float) -> list[int]:
    import ruptures  # type: ignore[import-untyped]

    bkps = ruptures.Pelt(model="l2", min_size=MIN_SIZE, jump=1).fit(x).predict(pen=penalty)
    return [int(b) for b in bkps[:-1]]


def _restarting(x: np.ndarray, first_alarm: Callable[[int], int | None]) -> tuple[list[int], list[int]]:
    """Run a detector from the start, and again after each alarm: the changes' estimated
    starts and the alarms. ``first_alarm(begin)`` watches ``x`` from ``begin`` on and returns
    where it first raises an alarm, or None."""
    starts: list[int] = []
    alarms: list[int] = []
    begin = 0
    while (t := first_alarm(begin)) is not None:
        starts.append(_split(x, begin, t))
        alarms.append(t)
        begin = t + 1
    return starts, alarms


def _cusum(x: np.ndarray, h: float, k: float) -> tuple[list[int], list[int]]:
    """Two-sided tabular CUSUM, self-starting: the level is the mean of the values since the
    (re)start, from the first ``CUSUM_WARMUP`` on (a level from the warm-up alone errs by
    0.3 sigma, enough to make false alarms common)."""

    def first_alarm(begin: int) -> int | None:
        if begin + CUSUM_WARMUP >= len(x):
            return None
        total, count = float(np.sum(x[begin : begin + CUSUM_WARMUP])), CUSUM_WARMUP
        up = down = 0.0
        for t in range(begin + CUSUM_WARMUP, len(x)):
            level = total / count
            total, count = total + x[t], count + 1
            up = max(0.0, up + x[t] - level - k)
            down = max(0.0, down + level - x[t] - k)
            if up > h or down > h:
                return t
        return None

    return _restarting(x, first_alarm)


def _page_hinkley(x: np.ndarray, h: float, delta: float) -> tuple[list[int], list[int]]:
    """Two-sided Page–Hinkley test around the running mean since each (re)start."""

    def first_alarm(begin: int) -> int | None:
        mean = up = down = low = high = 0.0
        for i, t in enumerate(range(begin, len(x)), 1):
            mean += (x[t] - mean) / i
            up += x[t] - mean - delta  # falls while the level holds, rises after an increase
            down += x[t] - mean + delta  # rises while the level holds, falls after a decrease
            low, high = min(low, up), max(high, down)
            if up - low > h or high - down > h:
                return t
        return None

    return _restarting(x, first_alarm)


def _split(x: np.ndarray, begin: int, alarm: int) -> int:
    """Where the change that raised an alarm began: the least-squares split of the values
    since the (re)start up to the alarm into two levels (the first value of the second)."""
    seg = x[begin : alarm + 1]
    n = len(seg)
    if n < 2:
        return alarm
    left = np.cumsum(seg)[:-1]  # sums of seg[:j] for j = 1 .. n-1
    j = np.arange(1, n)
    gain = (left - j * seg.sum() / n) ** 2 * n / (j * (n - j))  # between-segment sum of squares
    return begin + 1 + int(np.argmax(gain))


# ---------------------------------------------------------------------------- when_shifted


class Shift(Result):
    """The largest change of one number per window of the predictions.

    Attributes:
        at: The start of the first window of the new level (UTC).
        before, after: The number over the rows of the segments on either side of the
            change (from the previous change, or the first window, to the next change, or
            the last window): each window's number weighted by its rows' weight, so that a
            window of few rows counts for few.
        column: The field (``"prediction"``, ``"confidence"``, ``"features.age"``...).
        window: The windows' width (``"1h"``).
        change_points: Every change found, earliest first (``at`` is the largest).
        series: The number per window (NaN for windows with too few rows), indexed by window
            start: pass it to :func:`change_points` with other settings.
        measure: What the number is ("prediction mean", "share of 'spam' in prediction"...).
        df: ``window_start``, ``value``, ``rows`` (rows with a value).
        summary: ``text``, ``column``, ``measure``, ``at``, ``before``, ``after``, ``delta``,
            ``window``, ``model``, ``changes`` (how many were found).
    """

    _title = "Shift"

    def __init__(
        self,
        at: Any,
        before: float,
        after: float,
        column: str,
        window: str,
        change_points: list[ChangePoint],
        series: pd.Series,
        *,
        measure: str | None = None,
        rows: pd.Series | None = None,
        model: str | None = None,
        filters: dict[str, Any] | None = None,
    ) -> None:
        import pandas as pd

        self.at = at
        self.before = before
        self.after = after
        self.column = column
        self.window = window
        self.change_points = change_points
        self.series = series
        self.measure = measure or f"{column} mean"
        self.filters = filters
        self.df = pd.DataFrame(
            {
                "window_start": series.index,
                "value": series.to_numpy(dtype=float),
                "rows": (rows if rows is not None else pd.Series(0, index=series.index)).to_numpy(dtype=np.int64),
            }
        )
        self.summary = {
            "text": f"{self.measure} moved from {number_text(before)} to {number_text(after)} starting {_starting(at)}",
            "column": column,
            "measure": self.measure,
            "at": at,
            "before": before,
            "after": after,
            "delta": after - before,
            "window": window,
            "model": model,
            "changes": len(change_points),
        }

    def plot(self) -> Figure:
        """The number per window, the segments' means, and the change marked."""
        fig = figure(figsize=(9.0, 3.2), layout="constrained")
        ax = fig.subplots()
        times = list(self.series.index)
        ax.plot(times, self.series.to_numpy(dtype=float), marker=".", lw=1, label=self.measure)
        bounds = [times[0], *(c.at for c in self.change_points), times[-1]]
        levels = [self.change_points[0].before, *(c.after for c in self.change_points)]
        for lo, hi, level in zip(bounds[:-1], bounds[1:], levels, strict=True):
            ax.hlines(level, lo, hi, colors="gray", linestyles="dashed", lw=1)
        for c in self.change_points:
            ax.axvline(c.at, color="red" if c.at == self.at else "orange", lw=1.5 if c.at == self.at else 0.8)
        ax.set_ylabel(self.measure)
        ax.set_title(str(self.summary["text"]), fontsize=9)
        fig.autofmt_xdate()
        return fig


def _starting(at: Any) -> str:
    import pandas as pd

    return f"{pd.Timestamp(at).tz_convert('UTC'):%Y-%m-%d %H:%M} UTC"


def _level(series: pd.Series, weights: pd.Series, start: Any, end: Any) -> float:
    """The mean over the rows of the windows from ``start`` to ``end`` (exclusive; None: the
    last) that have a value: each window's mean weighted by its rows' weight."""
    inside = (series.index >= start) & series.notna().to_numpy()
    if end is not None:
        inside &= series.index < end
    w = weights[inside].to_numpy()
    return float(np.sum(series[inside].to_numpy() * w) / np.sum(w)) if w.sum() > 0 else math.nan


def when_shifted(
    s: Store,
    column: str = "prediction",
    *,
    window: str | dt.timedelta = "1h",
    model: str | None = None,
    method: str = "pelt",
    penalty: float | None = None,
    min_rows: int = 30,
    **filters: Any,
) -> Shift | None:
    """When did the predictions shift: the largest change of a number per window.

    The number per window, computed in DuckDB (``GROUP BY time_bucket``, rows weighing
    ``1 / sample_rate``):

    - a number (``prediction``, ``confidence``, a feature): its mean; an integer prediction
      is a number too (for 0/1 classes, its mean is the share of 1);
    - a class (a string or boolean): the share of the class most frequent over the whole
      selection;
    - a probability vector (a list of numbers): the mean predicted class index (argmax,
      the first on ties): for two classes, the share of class 1.

    Then :func:`change_points` (``method``, ``penalty``) over the windows with at least
    ``min_rows`` values, and the change with the largest ``|after - before|``.

    Args:
        s: The store.
        column: ``"prediction"`` (default), ``"prediction.score"`` (an output of a struct
            prediction), ``"confidence"``, or a feature (``"age"`` or ``"features.age"``).
        window: The windows' width, as for :func:`drift_over_time` (default one hour).
        model: The model; may be omitted when the store holds one.
        method, penalty: As for :func:`change_points`.
        min_rows: Windows with fewer values are NaN (left out of the search).
        **filters: ``Store.predictions`` filters selecting the rows (default: every row).

    Returns:
        A :class:`Shift` (``str(shift)``: "prediction mean moved from 0.31 to 0.44 starting
        2026-11-12 14:00 UTC"), or None when no change was found; also None, with a
        warning that says what to change, when fewer than four windows have ``min_rows``
        values.
    """
    import pandas as pd

    from predlog.replay._shapes import lit

    windows = Windows.of(window)
    name = resolve_model(s, model, filters)
    side = StoreSide(s, name, filters)
    path = feature_path(column)
    fields = side.fields()
    field = fields.get(path)
    if field is None:
        import difflib

        close = difflib.get_close_matches(path, list(fields), n=3)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        known = ", ".join(sorted(fields, key=_natural)) or "none"
        raise ValueError(f"{path!r} is not a column of model {name!r}: {hint}fields: {known}")
    if path == "prediction" and field.dtype == "VARCHAR":
        one_kind(s, name, filters, "when_shifted")
    measure = f"{path} mean"
    vector = field.kind is None and f"{path}.class" in fields
    if vector:  # a probability vector: its argmax
        field = fields[f"{path}.class"]
        measure = f"{path} mean class index (argmax)"
    col = field.sql
    if field.kind == "number" or vector:
        value = f"CAST({col} AS DOUBLE)"
        present = _present(col, field)
    elif field.kind == "category":
        sql = f"SELECT {col} AS c FROM side WHERE {col} IS NOT NULL GROUP BY c ORDER BY sum({WEIGHT}) DESC, c LIMIT 1"
        heaviest = _query(side.relation([field.column, "sample_rate"]), sql).fetchall()
        if not heaviest:
            return None
        (cls,) = heaviest[0]
        literal = ("true" if cls else "false") if isinstance(cls, bool) else lit(str(cls))
        value = f"CAST({col} = {literal} AS DOUBLE)"
        present = f"{col} IS NOT NULL"
        measure = f"share of {cls!r} in {path}"
    else:
        raise ValueError(f"{path!r} is {field.note or field.dtype}: give a number, class or probability vector column")
    inner = f"{windows.sql()} AS _w, {WEIGHT} AS _wt, CASE WHEN {present} THEN {value} END AS _v"
    weight = "fsum(CASE WHEN _v IS NOT NULL THEN _wt END)"
    sql = f"SELECT _w, {weighted_mean('_v')}, {weight} FROM (SELECT {inner} FROM side) GROUP BY _w ORDER BY _w"
    got = _query(side.relation([field.column, "ts", "sample_rate"]), sql).fetchall()
    found_w = np.array([r[0] for r in got], dtype=np.int64)
    span = windows.span(list(found_w))
    index = pd.Index(utc_times(span), name="window_start")
    rows = pd.Series(0, index=index, dtype=np.int64)
    series = pd.Series(math.nan, index=index, dtype=float, name=measure)
    at = np.searchsorted(span, found_w)
    n = np.array([r[1] for r in got], dtype=np.int64)
    v = np.array([math.nan if r[2] is None else r[2] for r in got], dtype=float)
    rows.iloc[at] = n
    series.iloc[at] = np.where(n >= min_rows, v, math.nan)
    weights = pd.Series(0.0, index=index)
    weights.iloc[at] = [0.0 if r[3] is None else float(r[3]) for r in got]
    tested = int(series.notna().sum())
    if tested < 2 * MIN_SIZE:
        fix = (
            "use a narrower window= (more windows)"
            if len(series) < 2 * MIN_SIZE
            else "widen window= or lower min_rows="
        )
        warnings.warn(
            f"when_shifted: {tested} of {len(series)} windows of {windows.text} have at least {min_rows} values "
            f"of {path}; a change needs {2 * MIN_SIZE}: {fix}",
            stacklevel=2,
        )
        return None
    points = change_points(series, method=method, penalty=penalty)
    if not points:
        return None
    top = max(range(len(points)), key=lambda i: abs(points[i].delta))
    starts = [index[0], *(p.at for p in points), None]
    before = _level(series, weights, starts[top], points[top].at)
    after = _level(series, weights, points[top].at, starts[top + 2])
    return Shift(
        points[top].at,
        before,
        after,
        path,
        windows.text,
        points,
        series,
        measure=measure,
        rows=rows,
        model=name,
        filters=side.filters,
    )
