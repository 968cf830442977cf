"""Time windows: fixed widths of ``ts`` in UTC, as every analysis cuts them.

``Windows.of(window)`` reads a width as the store's durations are read (``"1D"``, ``"6h"``,
``"15min"``, ``"2w"``, seconds, a timedelta) or as pandas reads a fixed width
(``"1h30min"``); windows start at multiples of the width from DuckDB's ``time_bucket``
origin, Monday 2000-01-03 00:00 UTC.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_WINDOWS", "Windows", "utc_times", "when"]


@dataclasses.dataclass(frozen=True)
class Windows:
    """Fixed windows on ``ts``: ``time_bucket`` of ``width`` in UTC.

    Windows start at multiples of ``width`` from DuckDB's origin, Monday 2000-01-03 00:00 UTC:
    daily windows start at midnight UTC, hourly ones on the hour, weekly ones on Mondays.
    """

    width: dt.timedelta
    text: str

    @classmethod
    def of(cls, window: str | float | dt.timedelta) -> Windows:
        """A duration as the store's filters take it (``"1D"``, ``"6h"``, ``"15min"``,
        ``"2w"``, a number of seconds or a timedelta; months and years vary in length and are
        not windows), or any other fixed width pandas reads (``"1h30min"``)."""
        import pandas as pd

        from predlog.replay._timebounds import parse_duration

        try:
            width = parse_duration(window, "window")
        except ValueError as exc:
            other: dt.timedelta | None = None
            if isinstance(window, str):
                with contextlib.suppress(ValueError):  # not a width pandas reads either
                    other = pd.Timedelta(window).to_pytimedelta()
            if other is None or other <= dt.timedelta(0):
                raise ValueError(f"{exc} (months and years vary in length: they are not windows)") from None
            width = other
        text = window.strip() if isinstance(window, str) else str(pd.Timedelta(width))
        return cls(width, text)

    @property
    def micros(self) -> int:
        return self.width // dt.timedelta(microseconds=1)

    @property
    def daily(self) -> bool:
        """Whole days: windows start at midnight UTC, and a date names them."""
        return self.width % dt.timedelta(days=1) == dt.timedelta(0)

    def sql(self, ts: str = '"ts"') -> str:
        """The window start of each row, as microseconds since the epoch (BIGINT)."""
        return f"epoch_us(time_bucket(to_microseconds({self.micros}), {ts}, 'UTC'))"

    def span(self, found: Sequence[int]) -> np.ndarray:
        """Every window start from the first found to the last (gaps included), in microseconds."""
        if not len(found):
            return np.empty(0, dtype=np.int64)
        first, last = min(found), max(found)
        count = (last - first) // self.micros + 1
        if count > MAX_WINDOWS:
            lo, hi = utc_times(np.array([first, last]))
            raise ValueError(
                f"the selected rows span {count:,} windows of {self.text} (from {lo:%Y-%m-%d %H:%M} to "
                f"{hi:%Y-%m-%d %H:%M} UTC; more than {MAX_WINDOWS:,}): a row with a wrong time (1970?) stretches "
                "the span: select a time range (start=, end=, last=) or use a wider window"
            )
        return np.arange(first, last + 1, self.micros, dtype=np.int64)


MAX_WINDOWS = 100_000
"""The most windows one result holds (every window from the first with rows to the last)."""


def utc_times(micros: np.ndarray) -> pd.DatetimeIndex:
    """Microseconds since the epoch as UTC times (nanosecond precision, whatever pandas' default)."""
    import pandas as pd

    return pd.DatetimeIndex(pd.to_datetime(np.asarray(micros, dtype=np.int64) * 1000, unit="ns", utc=True))


def when(ts: Any, windows: Windows) -> str:
    """A window start as a person reads it: a date for daily windows, else date and time in UTC."""
    import pandas as pd

    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return f"{t:%Y-%m-%d}" if windows.daily else f"{t:%Y-%m-%d %H:%M} UTC"
