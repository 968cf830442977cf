"""The retraining loop as steps: small functions that each return their evidence.

predlog does not own the loop. Each step is a function a notebook, a cron job or an
orchestrator (Airflow, Prefect) calls, and each returns a result with ``.summary``, ``.df``,
``to_dict()`` and an HTML view, so the evidence can go into a report
(:func:`predlog.analysis.report` takes them as ``steps=``)::

    from predlog.analysis import Monitor, compare_versions, report, retrain, rules

    monitor = Monitor(s, rules=[rules.share_drifted(0.3, window="1D")], reference=train_df)
    alert = retrain.validate_alert(monitor, consecutive=3)       # 1. not a false alarm?
    if alert.validated:
        data = retrain.training_window(s, days=30)               # 2. last 30 days, labeled
        new = fit(data.X_train, data.y_train)                    # 3. your training code
        check = retrain.holdout_check(new.predict, old.predict, data)   # 4. held-out days
        if check.passed:
            router = predlog.canary(baseline=predict_v1, candidate=predict_v2, share=0.05)  # 5.
            ...                                                  # 6. a day of traffic
            verdict = compare_versions(s, baseline="1.4.0", candidate="1.5.0")          # 7.

The steps between (fitting the model, deploying it) are the user's code; predlog gives the
canary router (:func:`predlog.canary`) and the verdict (:func:`compare_versions`).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _compare_stats as cs
from ._result import Result, fmt
from ._verdict import METRICS, check_tolerance

if TYPE_CHECKING:
    import pandas as pd

    from predlog.replay import Store

    from ._monitor import Alert, Monitor

__all__ = [
    "AlertCheck",
    "HoldoutCheck",
    "TrainingWindow",
    "holdout_check",
    "training_window",
    "validate_alert",
]


# ---------------------------------------------------------------- 1. validate the alert


class AlertCheck(Result):
    """Whether a monitor's alert held on enough consecutive windows to act on.

    Attributes:
        validated: True when at least one rule breached on every one of the
            ``consecutive`` windows ending at ``at``.
        alerts: The :class:`~predlog.analysis.Alert` of each rule that held.
        consecutive: The number of windows asked for.
        df: One row per rule and window: rule, condition, start, end, value, breached.
        summary: ``text`` (one sentence), ``validated``, ``rules``, ``held``.
    """

    _title = "Alert validation"

    def __init__(self, alerts: list[Alert], readings: pd.DataFrame, consecutive: int, at: dt.datetime) -> None:
        self.alerts = alerts
        self.validated = bool(alerts)
        self.consecutive = consecutive
        self.at = at
        keep = [c for c in ("rule", "condition", "start", "end", "value", "breached") if c in readings.columns]
        self.df = readings[keep].reset_index(drop=True) if keep else readings
        self.summary = {
            "text": self._sentence(),
            "validated": self.validated,
            "rules": int(self.df["rule"].nunique()) if len(self.df) else 0,
            "held": len(alerts),
        }

    def _sentence(self) -> str:
        if self.alerts:
            return f"Validated: {self.alerts[0].reason}"
        if len(self.df) == 0:
            return "Not validated: the monitor has no rules to check."
        per_rule = self.df.groupby("condition", sort=False)["breached"].sum()
        worst, count = str(per_rule.idxmax()), int(per_rule.max())
        return (
            f"Not validated: {worst!r} held on {count} of the last {self.consecutive} windows "
            f"ending {self.at:%Y-%m-%d %H:%M} UTC; a passing blip, or too early to act. Check again later."
        )


def validate_alert(monitor: Monitor, consecutive: int = 3, *, at: Any = None) -> AlertCheck:
    """Step 1: is the alert real? Every rule of ``monitor`` is checked on the ``consecutive``
    windows (of the rule's own length) ending at ``at``; the alert is validated when some rule
    breached on all of them.

    A single drifted window is often a holiday, a batch job or a deploy; drift that holds on
    three days in a row is worth a retraining. The monitor's ``on_alert`` callbacks are not
    called again.

    Args:
        monitor: A :class:`~predlog.analysis.Monitor` (its rules, reference and filters).
        consecutive: How many windows in a row must breach (overrides each rule's own).
        at: The end of the last window (default: now), as ``Monitor.check`` takes it.

    Example::

        check = retrain.validate_alert(monitor, consecutive=3, at="2026-12-01")
        check.validated, check.summary["text"]
    """
    from predlog.replay._timebounds import parse_time

    if isinstance(consecutive, bool) or not isinstance(consecutive, int) or consecutive < 1:
        raise ValueError(f"validate_alert(): consecutive must be a whole number of windows >= 1, got {consecutive!r}")
    probe = copy.copy(monitor)
    probe.rules = [dataclasses.replace(rule, consecutive=consecutive) for rule in monitor.rules]  # type: ignore[type-var]
    probe.on_alert = []
    end = parse_time(at, "at") if at is not None else dt.datetime.now(dt.UTC)
    assert end is not None
    alerts = probe.check(end)
    assert probe.last is not None
    return AlertCheck(alerts, probe.last, consecutive, end)


# ---------------------------------------------------------------- 2. fetch the training data


class TrainingWindow(Result):
    """Labeled rows of the last ``days``, split by time: ``train`` before ``split``, ``holdout`` after.

    Attributes:
        train, holdout: Frames from :meth:`Store.training_data` (index ``prediction_id``,
            one column per feature, and ``label``), in time order.
        start, split, end: The bounds: train is ``[start, split)``, holdout ``[split, end)``.
        features: The feature columns.
        X_train, y_train, X_holdout, y_holdout: The frames split into features and label.
        df: One row per part: rows, start, end, label mean (numbers) or most common label.
    """

    _title = "Training window"

    def __init__(
        self, train: pd.DataFrame, holdout: pd.DataFrame, start: dt.datetime, split: dt.datetime, end: dt.datetime
    ) -> None:
        import pandas as pd

        self.train = train
        self.holdout = holdout
        self.start, self.split, self.end = start, split, end
        self.features = [c for c in train.columns if c not in ("label", "label_type")]
        self.df = pd.DataFrame(
            [_part("train", train, start, split), _part("holdout", holdout, split, end)],
        )
        days, held = (end - start) / dt.timedelta(days=1), (end - split) / dt.timedelta(days=1)
        self.summary = {
            "text": (
                f"{len(train):,} labeled rows from {start:%Y-%m-%d} to {split:%Y-%m-%d} to train on, "
                f"{len(holdout):,} from the {held:g} later days held out ({days:g} days in all)."
            ),
            "train_rows": len(train),
            "holdout_rows": len(holdout),
            "features": len(self.features),
        }

    @property
    def X_train(self) -> pd.DataFrame:
        return self.train[self.features]

    @property
    def y_train(self) -> pd.Series:
        return self.train["label"]

    @property
    def X_holdout(self) -> pd.DataFrame:
        return self.holdout[self.features]

    @property
    def y_holdout(self) -> pd.Series:
        return self.holdout["label"]


def _part(name: str, frame: pd.DataFrame, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    import pandas as pd

    label = frame["label"] if "label" in frame.columns else pd.Series([], dtype=float)
    numeric = pd.api.types.is_numeric_dtype(label) and not pd.api.types.is_bool_dtype(label)
    if len(label) == 0:
        typical: Any = None
    elif numeric:
        typical = float(label.mean())
    else:
        typical = label.astype(str).mode().iat[0]
    return {"part": name, "rows": len(frame), "start": start, "end": end, "label": typical}


def training_window(
    s: Store,
    days: float = 30,
    *,
    holdout_days: float | None = None,
    model: str | None = None,
    end: Any = None,
    **filters: Any,
) -> TrainingWindow:
    """Step 2: the labeled data of the last ``days``, split by time into a part to train on and
    a later part held out.

    Holding out the *latest* days (not a random sample) checks the new model on the data it
    will meet next, the distribution after the shift.

    Args:
        s: The store.
        days: How far back (default 30).
        holdout_days: The last days held out (default: a fifth of ``days``, at least one).
        model: The model (may be omitted when the store holds one).
        end: The end of the window (default: now), as the store's filters take times.
        **filters: ``Store.training_data`` filters (``version=``, ``where=``...).

    Raises:
        ValueError: No labeled rows in one of the parts: log labels (``predlog.log_labels``)
            or widen ``days``.
    """
    from predlog.replay._timebounds import parse_time

    if not (isinstance(days, (int, float)) and not isinstance(days, bool) and math.isfinite(days) and days > 0):
        raise ValueError(f"training_window(): days must be a positive number, got {days!r}")
    held = max(1.0, days / 5) if holdout_days is None else holdout_days
    if not (isinstance(held, (int, float)) and not isinstance(held, bool) and 0 < held < days):
        raise ValueError(f"training_window(): holdout_days must be above 0 and below days={days}, got {holdout_days!r}")
    timed = sorted(set(filters) & {"start", "end", "last", "days"} - {"end"})
    if timed:
        raise ValueError(f"training_window(): the window is days= and end=; drop {', '.join(timed)}=")
    stop = parse_time(end, "end") if end is not None else dt.datetime.now(dt.UTC)
    assert stop is not None
    start = stop - dt.timedelta(days=days)
    split = stop - dt.timedelta(days=held)
    train = s.training_data(model, start=start, end=split, **filters)
    holdout = s.training_data(model, start=split, end=stop, **filters)
    for part, frame, a, b in (("train", train, start, split), ("holdout", holdout, split, stop)):
        if len(frame) == 0:
            raise ValueError(
                f"training_window(): no labeled predictions in the {part} part [{a:%Y-%m-%d %H:%M}, "
                f"{b:%Y-%m-%d %H:%M}) UTC: log labels for them (predlog.log_labels) or widen days="
            )
    return TrainingWindow(train, holdout, start, split, stop)


# ---------------------------------------------------------------- 4. check on held-out rows


class HoldoutCheck(Result):
    """Candidate and baseline scored on the same held-out rows.

    Attributes:
        passed: False when the candidate is worse beyond ``tolerance`` and significantly so
            (one-sided, ``p < alpha``): the rule of :func:`compare_versions` on shadow pairs.
        task: ``"classification"`` (accuracy, the paired score test of a drop by more than
            the tolerance) or ``"regression"`` (mean absolute error, the paired t test of the
            candidate's absolute errors divided by the tolerance against the baseline's).
        df: One row: metric, baseline, candidate, difference, tolerance, p_value, n,
            and for classification the discordant pairs (``baseline_only``, ``candidate_only``).
        summary: ``text``, ``passed``, and the numbers of the row.
    """

    _title = "Held-out check"

    def __init__(self, row: dict[str, Any], passed: bool, task: str) -> None:
        import pandas as pd

        self.passed = passed
        self.task = task
        self.df = pd.DataFrame([row])
        better = "better" if row["difference"] * (1 if task == "classification" else -1) > 0 else "worse"
        verdict = "passed" if passed else "failed"
        p = row["p_value"]
        self.summary = {
            "text": (
                f"Held-out check {verdict}: {row['metric']} {fmt(row['candidate'])} for the candidate vs "
                f"{fmt(row['baseline'])} for the baseline on the same {row['n']:,} rows "
                f"({better} by {abs(row['difference']):.4g}; tolerance {row['tolerance']:g}; "
                f"p = {fmt(p)} that it is worse)."
            ),
            "passed": passed,
            **{k: v for k, v in row.items() if k != "metric"},
        }

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#cf222e"
        head = f"<p style='color:{colour};font-weight:bold'>{'PASSED' if self.passed else 'FAILED'}</p>"
        return head + super()._repr_html_()


def holdout_check(
    candidate_fn: Callable[[pd.DataFrame], Any],
    baseline_fn: Callable[[pd.DataFrame], Any],
    holdout: TrainingWindow | pd.DataFrame,
    *,
    label: str = "label",
    task: str = "auto",
    tolerance: float | None = None,
    alpha: float = 0.05,
) -> HoldoutCheck:
    """Step 4: score the candidate and the baseline on the same held-out rows.

    Each function is called once with the held-out features (a DataFrame, one column per
    feature) and returns one prediction per row (``model.predict``). Calls are made under
    :func:`predlog.suppressed`, so a ``@capture``d function does not log the check as traffic.

    Both models see the same rows, so the tests are those :func:`compare_versions` applies to
    shadow pairs, with its tolerances: accuracy, the score test of Tango (1998) and Nam (1997)
    of a drop by more than the tolerance, from the rows exactly one of the two gets right;
    the mean absolute error, the paired t test of ``|candidate error| / tolerance −
    |baseline error|`` (``scipy.stats.ttest_rel(|e_c| / tol, |e_b|, alternative="greater")``).
    The check fails when that test rejects (``p < alpha``) and the candidate is worse beyond
    the tolerance.

    Args:
        candidate_fn, baseline_fn: Predict functions over a feature frame.
        holdout: A :class:`TrainingWindow` (its ``holdout``) or a frame of features and ``label``.
        label: The label column of a frame.
        task: ``"classification"``, ``"regression"`` or ``"auto"`` (regression when the labels
            are floats that are not all whole numbers).
        tolerance: How much worse the candidate may be, as in ``compare_versions``: the
            largest drop of accuracy, a negative difference (default -0.01, one point), or the
            largest factor on the MAE, at least 1 (default 1.05).
        alpha: The significance level.

    Raises:
        ValueError: A prediction or label that is missing or not finite (NaN, inf, None), a
            tolerance of the wrong sign, a bad argument; the message says what to pass.

    Example::

        check = retrain.holdout_check(new_model.predict, old_model.predict, window)
        check.passed, check.summary["text"]
    """
    import numpy as np
    import pandas as pd

    import predlog

    frame = holdout.holdout if isinstance(holdout, TrainingWindow) else holdout
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"holdout_check(): holdout must be a TrainingWindow or a DataFrame, got {type(holdout).__name__}"
        )
    if label not in frame.columns:
        raise ValueError(f"holdout_check(): the held-out frame has no {label!r} column; pass label=<its name>")
    if len(frame) == 0:
        raise ValueError("holdout_check(): the held-out frame is empty")
    if not 0 < alpha < 1:
        raise ValueError(f"holdout_check(): alpha must be in (0, 1), got {alpha!r}")
    if task not in ("auto", "classification", "regression"):
        raise ValueError(f"holdout_check(): task must be 'classification', 'regression' or 'auto', got {task!r}")
    X = frame.drop(columns=[c for c in (label, "label_type") if c in frame.columns])
    y = frame[label].to_numpy()
    bad = _not_finite(y)
    if bad:
        raise ValueError(
            f"holdout_check(): {bad:,} of {len(y):,} held-out rows have a missing or non-finite {label!r} "
            "(NaN, inf or None): drop those rows from the held-out frame"
        )
    if task == "auto":
        task = "regression" if _is_continuous(y) else "classification"
    tol = _tolerance(task, tolerance)
    with predlog.suppressed():
        got = {name: _predictions(fn, X, name) for name, fn in (("candidate", candidate_fn), ("baseline", baseline_fn))}
    if task == "classification":
        row, passed = _accuracy_check(y, got["baseline"], got["candidate"], tol, alpha)
    else:
        y = np.asarray(y, dtype=float)
        row, passed = _mae_check(y, got["baseline"], got["candidate"], tol, alpha)
    return HoldoutCheck(row, passed, task)


def _tolerance(task: str, tolerance: Any) -> float:
    """The tolerance of ``task``'s metric, with compare_versions' default and sign."""
    metric = METRICS["accuracy" if task == "classification" else "mae"]
    if tolerance is None:
        return metric.tolerance
    check_tolerance(metric, tolerance, "holdout_check(): tolerance", hint=" (as in compare_versions)")
    return float(tolerance)


def _predictions(fn: Callable[[Any], Any], X: pd.DataFrame, name: str) -> Any:
    import numpy as np

    out = np.asarray(fn(X))
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim != 1 or len(out) != len(X):
        raise ValueError(
            f"holdout_check(): {name}_fn returned shape {out.shape} for {len(X)} rows; it must return one "
            "prediction per row (model.predict, not model.predict_proba)"
        )
    bad = _not_finite(out)
    if bad:
        raise ValueError(
            f"holdout_check(): {name}_fn returned {bad:,} of {len(out):,} predictions that are not finite "
            "(NaN, inf or None); the check scores every held-out row, so the model must predict each one: "
            "impute the features it cannot handle, or drop those rows from the held-out frame"
        )
    return out


def _not_finite(values: Any) -> int:
    """How many of ``values`` are missing or not finite: NaN, ±inf, None, NaT."""
    import numpy as np
    import pandas as pd

    if values.dtype.kind in "fc":
        return int((~np.isfinite(values)).sum())
    if values.dtype.kind != "O":
        return int(pd.isna(values).sum())
    infinite = [isinstance(x, (float, np.floating)) and math.isinf(x) for x in values]
    return int((pd.isna(values) | np.asarray(infinite, dtype=bool)).sum())


def _is_continuous(y: Any) -> bool:
    import numpy as np

    if y.dtype.kind != "f":
        return False
    finite = y[np.isfinite(y)]
    return bool(len(finite)) and not bool(np.all(finite == np.round(finite)))


def _accuracy_check(y: Any, base: Any, cand: Any, tolerance: float, alpha: float) -> tuple[dict[str, Any], bool]:
    """Accuracy; the paired score test of a drop by more than ``-tolerance`` (compare_versions'
    paired accuracy test: a drop of accuracy is a rise of the share wrong)."""
    base_right, cand_right = base == y, cand == y
    b = int((base_right & ~cand_right).sum())  # only the baseline right: a point against the candidate
    c = int((cand_right & ~base_right).sum())
    test = cs.paired_proportions(b, c, len(y), margin=-tolerance)
    base_acc, cand_acc = float(base_right.mean()), float(cand_right.mean())
    diff = cand_acc - base_acc
    row = {
        "metric": "accuracy",
        "baseline": base_acc,
        "candidate": cand_acc,
        "difference": diff,
        "tolerance": tolerance,
        "p_value": test.p_value,
        "n": len(y),
        "baseline_only": b,
        "candidate_only": c,
    }
    return row, not (test.p_value < alpha and diff < tolerance)


def _mae_check(y: Any, base: Any, cand: Any, tolerance: float, alpha: float) -> tuple[dict[str, Any], bool]:
    """MAE; the paired t test of the candidate's absolute errors divided by ``tolerance``
    against the baseline's (compare_versions' paired MAE test)."""
    import numpy as np

    base_err = np.abs(np.asarray(base, dtype=float) - y)
    cand_err = np.abs(np.asarray(cand, dtype=float) - y)
    d = cand_err / tolerance - base_err
    n = len(d)
    test = cs.paired_t(
        cs.Moments(n, float(n), float(d.mean()), float(d.var(ddof=1)) if n > 1 else math.nan), higher_is_worse=True
    )
    base_mae, cand_mae = float(base_err.mean()), float(cand_err.mean())
    ratio = cand_mae / base_mae if base_mae > 0 else (1.0 if cand_mae == 0 else math.inf)
    row = {
        "metric": "mae",
        "baseline": base_mae,
        "candidate": cand_mae,
        "difference": cand_mae - base_mae,
        "tolerance": tolerance,
        "p_value": test.p_value,
        "n": n,
    }
    return row, not (test.p_value < alpha and ratio > tolerance)
