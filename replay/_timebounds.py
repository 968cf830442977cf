"""Time bounds of queries: ``start``/``end`` (inclusive/exclusive, UTC), ``last=`` and ``days=``."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from ._errors import DURATION_FORMS, TIME_FORMS, TimeBoundError

__all__ = ["UTC", "date_range", "parse_duration", "parse_time", "window"]

UTC = dt.UTC
_UTC = UTC


def parse_time(value: Any, name: str) -> dt.datetime | None:
    """A time bound as an aware UTC datetime; naive values are UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed: dt.datetime | dt.date = dt.datetime.fromisoformat(text)
        except ValueError:
            try:
                parsed = dt.date.fromisoformat(text)
            except ValueError:
                raise TimeBoundError(f"{name}={value!r} is not a time: pass {TIME_FORMS}") from None
        value = parsed
    if type(value).__name__ == "NaTType":
        raise TimeBoundError(f"{name}=NaT is not a time: pass {TIME_FORMS}")
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            value = value.replace(tzinfo=_UTC)
        out = value.astimezone(_UTC)
        # pandas Timestamps keep nanoseconds that datetime cannot: drop them (storage is µs)
        return dt.datetime(out.year, out.month, out.day, out.hour, out.minute, out.second, out.microsecond, tzinfo=_UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=_UTC)
    if type(value).__module__ == "numpy" and hasattr(value, "dtype") and "datetime64" in str(value.dtype):
        import pandas as pd

        return parse_time(pd.Timestamp(value).to_pydatetime(), name)
    raise TimeBoundError(f"{name}={value!r} ({type(value).__name__}) is not a time: pass {TIME_FORMS}")


_DURATION = re.compile(
    r"\s*(\d+(?:\.\d*)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?|w|weeks?)\s*", re.I
)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any, name: str) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        delta = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise TimeBoundError(f"{name}={value!r} is not a duration: pass {DURATION_FORMS}")
        delta = dt.timedelta(seconds=value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        unit = m.group(2).lower()
        key = "m" if unit.startswith("m") else unit[0]
        delta = dt.timedelta(seconds=float(m.group(1)) * _UNIT_S[key])
    else:
        raise TimeBoundError(f"{name}={value!r} is not a duration: pass {DURATION_FORMS}")
    if delta <= dt.timedelta(0):
        raise TimeBoundError(f"{name}={value!r} must be a positive duration ({DURATION_FORMS})")
    return delta


def window(start: Any, end: Any, last: Any = None, days: Any = None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``[start, end)`` as aware UTC datetimes (either may be None = unbounded)."""
    lo = parse_time(start, "start")
    hi = parse_time(end, "end")
    if last is not None or days is not None:
        if last is not None and days is not None:
            raise TimeBoundError("pass last=... or days=..., not both")
        if lo is not None:
            raise TimeBoundError("pass start=... or last=/days=..., not both")
        delta = parse_duration(last, "last") if last is not None else _days(days)
        lo = (hi or dt.datetime.now(_UTC)) - delta
    if lo is not None and hi is not None and hi < lo:
        raise TimeBoundError(f"end ({hi.isoformat()}) is before start ({lo.isoformat()})")
    return lo, hi


def _days(value: Any) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise TimeBoundError(f"days={value!r} must be a positive number of days")
    return dt.timedelta(days=value)


def date_range(lo: dt.datetime | None, hi: dt.datetime | None) -> tuple[dt.date | None, dt.date | None]:
    """UTC date partitions that can hold rows of ``[lo, hi)``."""
    return (
        None if lo is None else lo.date(),
        None if hi is None else (hi - dt.timedelta(microseconds=1)).date(),
    )
