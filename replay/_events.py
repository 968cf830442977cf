"""The store's event log read back: the promote / rollback / share events of canaries.

Each event is one small JSON file under ``<store>/events/date=<YYYY-MM-DD>/`` (see
docs/store-format.md), written by ``predlog.canary``. The files are few and tiny, so they
are parsed with :mod:`json` rather than through DuckDB. A file that is not a valid event is
skipped with a warning naming it (the other events stay readable).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from typing import TYPE_CHECKING, Any

from predlog._canary import EVENT_KINDS
from predlog._layout import event_paths

from ._errors import FilterError
from ._selection import Names, names
from ._timebounds import UTC, date_range, window

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EVENT_COLUMNS", "read_events"]

EVENT_COLUMNS = (
    "ts",
    "model",
    "kind",
    "baseline_version",
    "candidate_version",
    "share",
    "state",
    "shadow",
    "host",
    "pid",
    "reason",
)

_TEXT = ("model", "kind", "baseline_version", "candidate_version", "state", "host")


def _parse(path: str) -> dict[str, Any]:
    """One event file as a row; ValueError saying what is wrong with it."""
    with open(path, encoding="utf-8") as f:
        event = json.load(f)
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    row: dict[str, Any] = {}
    for name in _TEXT:
        value = event.get(name)
        if not isinstance(value, str):
            raise ValueError(f"{name} is {value!r}, not a string")
        row[name] = value
    ts = event.get("ts")
    if not isinstance(ts, str):
        raise ValueError(f"ts is {ts!r}, not an ISO 8601 time")
    parsed = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"ts {ts!r} has no time zone")
    row["ts"] = parsed.astimezone(UTC)
    share = event.get("share")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share):
        raise ValueError(f"share is {share!r}, not a number")
    row["share"] = float(share)
    shadow = event.get("shadow")
    if not isinstance(shadow, bool):
        raise ValueError(f"shadow is {shadow!r}, not true or false")
    row["shadow"] = shadow
    pid = event.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise ValueError(f"pid is {pid!r}, not an integer")
    row["pid"] = pid
    reason = event.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"reason is {reason!r}, not a string")
    row["reason"] = reason
    return row


def read_events(
    root: str,
    model: Names = None,
    *,
    kind: Names = None,
    start: Any = None,
    end: Any = None,
) -> pd.DataFrame:
    """The events of the store at ``root`` (see :meth:`Store.events`), sorted by ``ts``."""
    import pandas as pd

    models = names(model, "model")
    kinds = names(kind, "kind")
    if kinds is not None and not set(kinds) <= set(EVENT_KINDS):
        unknown = ", ".join(sorted(set(kinds) - set(EVENT_KINDS)))
        raise FilterError(f"kind {unknown} is not an event kind: pass one or more of {', '.join(EVENT_KINDS)}")
    lo, hi = window(start, end)
    rows = []
    for path in event_paths(root, *date_range(lo, hi)):
        try:
            row = _parse(path)
        except FileNotFoundError:
            continue  # removed by retention since it was listed
        except (OSError, ValueError) as exc:
            warnings.warn(
                f"predlog: skipped the event file {path}: {exc}. It is not an event predlog wrote; "
                "remove it (or restore it from a backup) to silence this warning",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        if models is not None and row["model"] not in models:
            continue
        if kinds is not None and row["kind"] not in kinds:
            continue
        if (lo is not None and row["ts"] < lo) or (hi is not None and row["ts"] >= hi):
            continue
        rows.append(row)
    rows.sort(key=lambda r: r["ts"])
    return pd.DataFrame({name: _column(pd, name, [r[name] for r in rows]) for name in EVENT_COLUMNS})


def _column(pd: Any, name: str, values: list[Any]) -> pd.Series:
    if name == "ts":
        return pd.Series(pd.to_datetime(values, utc=True), dtype="datetime64[us, UTC]")
    dtype = {"share": "float64", "shadow": "bool", "pid": "int64"}.get(name, "object")
    return pd.Series(values, dtype=dtype)  # text columns keep None for a missing value
