"""Exceptions and warnings of the reading side (all exported by predlog.replay). Every
message says what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class StoreError(Exception):
    """Base class of the errors raised by :class:`predlog.replay.Store`."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """There is no replay store at the given path."""

    def __init__(self, path: str, reason: str = "") -> None:
        self.path = path
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"no predlog store at {path!r}{detail}: expected a directory holding 'predlog.json' and/or "
            "'predictions/'. A store is created by the first write of a recorder, e.g. "
            "predlog.configure(store=..., model=...) or predlog.Recorder(store=..., model=...); "
            "check the path, or the PREDLOG_STORE setting of the writing service"
        )

    def __str__(self) -> str:  # FileNotFoundError would print "[Errno None] None: None"
        return str(self.args[0])


class UnsupportedStoreError(StoreError, NotImplementedError):
    """The store location is not a local path (object storage is not supported yet)."""

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__(
            f"cannot open {location!r}: only local paths are supported yet (object storage URIs such as "
            "s3://, gs:// or az:// are not); sync the store to a local directory, or mount the "
            "bucket, and pass its local path"
        )


def _close(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    pool = list(candidates)
    # The same name under the other root first: "features.region" when it is "context.region".
    leaf = name.rsplit(".", 1)[-1]
    same = [c for c in pool if c != name and "." in c and c.rsplit(".", 1)[-1] == leaf]
    close = difflib.get_close_matches(name, pool, n=n, cutoff=0.5)
    if not close:
        low = name.lower()
        close = [c for c in pool if low and (low in c.lower() or c.lower() in low)][:n]
    return [*same, *(c for c in close if c not in same)][:n]


_LIVE_HINT = (
    "they reach Parquet when the writer seals its segment (every segment_max_age_s, on predlog.flush() and at "
    "exit); pass include_live=True (--include-live on the command line) to read them now"
)


def _unknown(what: str, value: str, present: list[str], *, none: str, of: str = "") -> str:
    """The message of a model or version the store does not hold: those it holds, the closest
    (a version that extends the one given, "1.3" → "1.3.0", before any other)."""
    extended = [p for p in present if p.startswith(f"{value}.") or p.startswith(f"{value}-")]
    close = extended or _close(value, present, 3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(repr(p) for p in present) if present else none
    return (
        f"{what} {value!r} is not in the store{of} ({what}s present: {listed}).{hint} "
        f"Pass one of the {what}s present, or {what}=None for all of them"
    )


def _live_only(what: str, value: str, of: str = "") -> str:
    return (
        f"{what} {value!r}{of} has rows only in live write-ahead segments, none sealed into Parquet yet: {_LIVE_HINT}"
    )


class UnknownModelError(StoreError, ValueError):
    """A model name that has no partition in the store; with ``model=None``, a store that
    holds no predictions at all (``live_only``: live segments were looked at too)."""

    def __init__(self, model: str | None, present: Iterable[str], *, live_only: bool = False) -> None:
        self.model = model
        self.present = sorted(present)
        self.live_only = live_only
        if model is None:  # asked for "the" model of a store that holds none
            message = "the store holds no predictions yet" + (
                "" if live_only else " (rows still in live write-ahead segments count with include_live=True)"
            )
        elif live_only:
            message = _live_only("model", model)
        else:
            message = _unknown("model", model, self.present, none="none yet")
        super().__init__(message)


class UnknownVersionError(StoreError, ValueError):
    """A ``version=`` that no prediction of the selected models has."""

    def __init__(
        self, version: str, present: Iterable[str], *, models: Iterable[str] | None = None, live_only: bool = False
    ) -> None:
        self.version = version
        self.present = sorted(present)
        self.live_only = live_only
        of = f" for model {', '.join(repr(m) for m in models)}" if models else ""
        message = (
            _live_only("version", version, of)
            if live_only
            else _unknown("version", version, self.present, none="none", of=of)
        )
        super().__init__(message)


class LiveRowsWarning(UserWarning):
    """A query found nothing sealed, while rows it would match wait in live write-ahead segments."""


class MixedLabelTypesWarning(UserWarning):
    """The labels of the selected predictions have several types (``label`` is JSON text then)."""


class UnknownColumnError(StoreError, ValueError):
    """A column (or ``features.<name>`` / ``context.<name>`` field) that the data does not have."""

    def __init__(self, column: str, available: Iterable[str], *, where: str = "the predictions") -> None:
        self.column = column
        self.available = sorted(set(available))
        self.close = _close(column, self.available)
        hint = f"close matches: {', '.join(repr(c) for c in self.close)}" if self.close else "no close match"
        super().__init__(
            f"unknown column {column!r} in {where} ({hint}). Nested fields are written "
            "'features.<name>' or 'context.<name>'; Store.schema(model=...) lists the columns and "
            "Store.feature_names(model=...) the features"
        )


class TimeBoundError(StoreError, ValueError):
    """A ``start``/``end``/``last``/``days`` argument that cannot be read as a time bound."""


TIME_FORMS = (
    "a datetime (naive means UTC), a date (midnight UTC), a pandas Timestamp, or an ISO 8601 string "
    "such as '2026-03-01', '2026-03-01T12:30', '2026-03-01 12:30:00+02:00' or '2026-03-01T12:30Z'"
)
DURATION_FORMS = "a datetime.timedelta, a number of seconds, or a string such as '90s', '15m', '1h', '7d' or '2w'"


class FilterError(StoreError, ValueError):
    """A ``where=`` filter (or another filter argument) of a form the store does not accept."""


class NothingToReplayError(StoreError, LookupError):
    """No logged prediction matches the filters given to :meth:`Store.replay`."""


class MaintenanceBusyError(StoreError, RuntimeError):
    """Another maintenance operation holds the store's maintenance lock."""


class QueryNotAllowedError(StoreError, PermissionError):
    """SQL that the store's locked connection refuses: writes, settings, files outside the store."""


class PredictionNotFoundError(StoreError, KeyError):
    """``Store.get()`` of a prediction id that is not in the store."""

    def __init__(self, prediction_id: str, message: str) -> None:
        self.prediction_id = prediction_id
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])
