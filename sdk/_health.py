"""One recorder's health: counters, losses by reason, and the guard around internal errors.

Handed to the parts that need it (the queue, the writer, the sinks, telemetry) instead of
the recorder that owns them. Losses are counted where their reason is known; a failure is
logged once per kind through the ``predlog`` logger (a logging filter drops the repeats),
counted, and never reaches the server's request threads.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Any

__all__ = ["Health", "log_once"]

logger = logging.getLogger("predlog")

# Under pytest, internal errors fail the test instead of being swallowed.
_RAISE_INTERNAL = os.environ.get("PREDLOG_RAISE_INTERNAL_ERRORS") == "1"


class _Once(logging.Filter):
    """Passes a record that carries a ``once`` key only the first time that key is seen."""

    def __init__(self) -> None:
        super().__init__("predlog")
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = getattr(record, "predlog_once", None)
        if key is None:
            return True
        with self.lock:
            if key in self.seen:
                return False
            self.seen.add(key)
            return True


_ONCE = _Once()
logger.addFilter(_ONCE)


def log_once(level: int, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
    """Log through predlog's logger, once per process for each ``key``."""
    logger.log(level, msg, *args, exc_info=exc_info, extra={"predlog_once": key})


class Health:
    """Counters of one recorder (thread-safe). ``counts`` hold events, ``dropped`` losses by reason."""

    def __init__(self) -> None:
        self._tag = f"{id(self):x}"  # failures are said once per recorder
        self.reset()

    def reset(self) -> None:
        """Zero everything (a new recorder, or a forked child that starts afresh)."""
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def drop(self, reason: str, n: int) -> None:
        with self.lock:
            self.dropped[reason] += n

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self.lock:
            return dict(self.counts), dict(self.dropped)

    def error_once(self, key: str, msg: str, *args: Any) -> None:
        """An expected failure (store not writable, a label without an id): said once."""
        log_once(logging.ERROR, f"{self._tag}:{key}", msg, *args)

    def internal_error(self, where: str) -> None:
        """A bug in predlog, caught: counted, logged once with its traceback, never raised
        into the server (except under ``PREDLOG_RAISE_INTERNAL_ERRORS=1``, for tests)."""
        self.count("failed")
        log_once(
            logging.ERROR,
            f"{self._tag}:internal:{where}",
            "predlog: internal error in %s (counted, serving continues)",
            where,
            exc_info=True,
        )
        if _RAISE_INTERNAL:
            raise
