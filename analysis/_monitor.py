"""The monitor: alert rules checked over consecutive windows, alerts with their reasons."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._result import fmt, jsonable
from ._sides import model_in_sides, resolve_model, side_of
from .rules import Context, Reading, Rule

if TYPE_CHECKING:
    import pandas as pd

    from predlog.replay import Store

__all__ = ["Alert", "Monitor", "RuleCheckError"]

logger = logging.getLogger("predlog.analysis")


@dataclasses.dataclass(frozen=True)
class Alert:
    """A rule whose condition held on ``consecutive`` windows in a row.

    Attributes:
        rule: The rule's name (``"metric_below"``).
        condition: The condition in words (``"accuracy below 0.85"``).
        model: The model checked.
        reason: One sentence with the numbers.
        value: The signal on the latest window.
        start, end: The span of the windows that breached (``[start, end)``, UTC).
        windows: Per window: ``start``, ``end``, ``value``, ``breached`` and the rule's details.
        filters: ``Store.predictions`` filters that select the rows behind the alert:
            ``s.predictions(**alert.filters)``.
    """

    rule: str
    condition: str
    model: str
    reason: str
    value: float
    start: dt.datetime
    end: dt.datetime
    windows: list[dict[str, Any]]
    filters: dict[str, Any]

    def __str__(self) -> str:
        return self.reason

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (times in ISO 8601)."""
        out: dict[str, Any] = jsonable(dataclasses.asdict(self))
        return out


class Monitor:
    """Alert rules over one model's predictions, checked on demand (from a notebook, a cron
    job or CI: ``predlog monitor``).

    ::

        monitor = Monitor(s, rules=[rules.metric_below("accuracy", 0.85, consecutive=3)],
                          reference=Profile.load("train.profile.json"),
                          on_alert=[lambda alert: post_to_slack(str(alert))])
        alerts = monitor.check()             # the windows that end now
        alerts = monitor.check(at="2026-11-15")

    Args:
        s: The store.
        rules: Rules from :mod:`predlog.analysis.rules` (or your own :class:`~.rules.Rule`).
        model: The model; may be omitted when the store holds one.
        reference: What the drift rules compare against: store filters (a dict), a
            DataFrame or a :class:`Profile` (read once, when the monitor is made).
        on_alert: Callables called with each :class:`Alert` that fires; an exception in one
            is logged and does not stop the others.
        **filters: ``Store.predictions`` filters every rule reads within (``version=``,
            ``where=``...).
    """

    def __init__(
        self,
        s: Store,
        rules: Sequence[Rule],
        *,
        model: str | None = None,
        reference: Any = None,
        on_alert: Callable[[Alert], Any] | Sequence[Callable[[Alert], Any]] = (),
        **filters: Any,
    ) -> None:
        from .rules import Rule as RuleType

        self.store = s
        model, (reference,) = model_in_sides(model, reference)
        self.model = resolve_model(s, model, filters)
        for r in rules:
            if not isinstance(r, RuleType):
                raise TypeError(f"rules must be made by predlog.analysis.rules (or follow rules.Rule), got {r!r}")
        self.rules = list(rules)
        needs = [r.name for r in self.rules if r.name in ("feature_drift", "share_drifted", "prediction_shift")]
        if needs and reference is None:
            raise ValueError(f"{', '.join(needs)} compare against a reference: pass Monitor(..., reference=...)")
        self.reference = None if reference is None else side_of(s, self.model, reference, "reference")
        if self.reference is not None and "prediction_shift" in needs:
            paths = self.reference.fields()
            if not any(p == "prediction" or p.startswith(("prediction.", "prediction[")) for p in paths):
                raise ValueError(
                    f"prediction_shift compares predictions, and the reference ({self.reference.label}) has no "
                    "prediction column (a training frame?): give rows of the store, e.g. reference={'version': "
                    "'1.3'}, a Profile.from_store(...), or a frame with a 'prediction' column"
                )
        timed = sorted(set(filters) & {"start", "end", "last", "days"})
        if timed:
            raise ValueError(
                f"Monitor(..., {', '.join(f'{k}=' for k in timed)}): the rules choose their windows (window=, "
                "consecutive=) ending at check(at=...); pass the time to check(at=...) instead"
            )
        s.selection(self.model, **filters)  # bad filters fail now, not at the first check
        self.filters = dict(filters)
        self.on_alert = [on_alert] if callable(on_alert) else list(on_alert)
        self.last: pd.DataFrame | None = None
        """Every rule's readings of the last :meth:`check`, one row per rule and window."""

    def check(self, at: Any = None) -> list[Alert]:
        """Check every rule on the windows that end at ``at`` (default: now); the alerts that fire.

        ``at`` is a time as the store's filters take it (a datetime, naive meaning UTC, a
        date or an ISO 8601 string). Each rule reads its ``consecutive`` windows of length
        ``window`` before ``at``; :attr:`last` keeps all the readings.

        Raises:
            RuleCheckError: a rule could not be checked (labels of several types, a metric
                the model does not have...). Every other rule was checked and its alerts
                sent to the callbacks; they are in the error's ``alerts``.
        """
        import pandas as pd

        from predlog.replay._timebounds import parse_time

        from ._windows import Windows

        end = parse_time(at, "at") if at is not None else dt.datetime.now(dt.UTC)
        assert end is not None
        ctx = Context(self.store, self.model, self.reference, self.filters)
        alerts: list[Alert] = []
        readings: list[dict[str, Any]] = []
        failed: list[tuple[str, Exception]] = []
        for rule in self.rules:
            length = Windows.of(rule.window).width
            spans = [(end - (k + 1) * length, end - k * length) for k in reversed(range(rule.consecutive))]
            try:
                got = [(a, b, rule.evaluate(ctx, a, b)) for a, b in spans]
            except Exception as exc:  # the other rules are still checked, and their alerts still sent
                failed.append((rule.describe(), exc))
                continue
            windows = [_window(a, b, r) for a, b, r in got]
            readings += [{"rule": rule.name, "condition": rule.describe(), **w} for w in windows]
            if all(r.breached for _, _, r in got):
                alerts.append(self._alert(rule, got, windows))
        self.last = pd.DataFrame(readings)
        for alert in alerts:
            for callback in self.on_alert:
                try:
                    callback(alert)
                except Exception:  # one failing hook must not silence the others
                    logger.exception("predlog: on_alert callback %r failed for %s", callback, alert.rule)
        if failed:
            raise RuleCheckError(failed, alerts) from failed[0][1]
        return alerts

    def _alert(
        self, rule: Rule, got: list[tuple[dt.datetime, dt.datetime, Reading]], windows: list[dict[str, Any]]
    ) -> Alert:
        start, end, last = got[0][0], got[-1][1], got[-1][2]
        values = ", ".join(fmt(r.value) for _, _, r in got)
        span = (
            f"{len(got)} consecutive {_duration(rule.window)} windows"
            if len(got) > 1
            else f"the {_duration(rule.window)} window"
        )
        extra = ""
        if last.detail.get("drifted"):
            extra = f" (drifted: {', '.join(last.detail['drifted'][:5])})"
        reason = (
            f"{self.model}: {rule.describe()} on {span} ending {end:%Y-%m-%d %H:%M} UTC "
            f"({'values' if len(got) > 1 else 'value'} {values}){extra}."
        )
        return Alert(
            rule=rule.name,
            condition=rule.describe(),
            model=self.model,
            reason=reason,
            value=last.value,
            start=start,
            end=end,
            windows=windows,
            filters={"model": self.model, **self.filters, "start": start, "end": end},
        )

    def __repr__(self) -> str:
        return f"Monitor({self.model!r}, rules=[{', '.join(r.describe() for r in self.rules)}])"


class RuleCheckError(ValueError):
    """Some rules could not be checked. The others were, and their alerts were sent to the
    ``on_alert`` callbacks: they are in :attr:`alerts`; :attr:`failed` pairs each rule that
    could not be checked with its error."""

    def __init__(self, failed: list[tuple[str, Exception]], alerts: list[Alert]) -> None:
        self.failed = failed
        self.alerts = alerts
        said = "; ".join(f"{rule}: {exc}" for rule, exc in failed)
        fired = f" ({len(alerts)} alert{'s' if len(alerts) != 1 else ''} from the other rules in .alerts)"
        super().__init__(f"{len(failed)} rule(s) could not be checked: {said}{fired if alerts else ''}")


def _window(start: dt.datetime, end: dt.datetime, r: Reading) -> dict[str, Any]:
    return {"start": start, "end": end, "value": r.value, "breached": r.breached, **r.detail}


def _duration(window: Any) -> str:
    if isinstance(window, dt.timedelta):
        secs = window.total_seconds()
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if secs % size == 0:
                return f"{int(secs // size)}{unit}"
        return f"{secs:g}s"
    return str(window)


def load_rules(path: str) -> tuple[list[Rule], dict[str, Any]]:
    """Rules and settings from a TOML file (see ``predlog monitor --help``)."""
    import tomllib

    from .rules import from_dict

    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc})") from exc
    specs = data.pop("rules", None)
    if not isinstance(specs, list) or not specs:
        raise ValueError(
            f'{path}: no [[rules]]; each rule is a table such as\n[[rules]]\nrule = "error_rate_above"\nmax = 0.01'
        )
    rules = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            raise ValueError(f"{path}: rules[{i}] is not a table")
        try:
            rules.append(from_dict(spec))
        except ValueError as exc:
            raise ValueError(f"{path}: rules[{i}]: {exc}") from exc
    return rules, data
