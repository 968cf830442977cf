"""predlog: a flight recorder for production ML models.

Decorate a predict function and every call becomes one row in a Parquet replay store::

    import predlog

    predlog.configure(store="predlog-store", model="fraud", version="1.4.0")

    @predlog.capture
    def predict(x: dict) -> float: ...

    with predlog.context(user_id="u1", request_id="r1"):
        y = predict({"amount": 10.0, "country": "DE"})
        pid = predlog.last_prediction_id()
    predlog.log_label(1, prediction_id=pid)

History from before predlog, and labels in bulk, come in as frames: :func:`log_frame` and
:func:`log_labels`. A new version goes live on a share of traffic through :func:`canary`.
The module-level functions act on one default :class:`Recorder`. Reading the store lives in
:mod:`predlog.replay` (extra ``predlog[query]``); this package imports neither pandas,
duckdb nor scipy.
"""

from __future__ import annotations

from typing import Any

from ._canary import Canary
from ._config import Config, ConfigError
from ._context import context, suppressed
from ._convert import ids_for as _ids_for
from ._processors import Processor, hash_id
from ._recorder import Recorder
from ._recorder import last_record as _last_record
from ._sinks import Sink

__all__ = [
    "Canary",
    "Config",
    "ConfigError",
    "Processor",
    "Recorder",
    "Sink",
    "canary",
    "capture",
    "configure",
    "context",
    "flush",
    "hash_id",
    "last_prediction_id",
    "last_prediction_ids",
    "log_frame",
    "log_label",
    "log_labels",
    "recover",
    "shutdown",
    "stats",
    "suppressed",
]


def __getattr__(name: str) -> str:
    # The version is the installed distribution's, read on first use (import stays cheap).
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("predlog")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'predlog' has no attribute {name!r}")


_default = Recorder()

capture = _default.capture
canary = _default.canary
log_label = _default.log_label
log_labels = _default.log_labels
log_frame = _default.log_frame
stats = _default.stats
flush = _default.flush
shutdown = _default.shutdown


def configure(**config: Any) -> Config:
    """Configure the default recorder; see :class:`Config` for every setting.

    Precedence: argument > ``PREDLOG_*`` environment variable > default. Functions already
    decorated with ``@predlog.capture`` follow the new settings.

    Raises:
        ConfigError: an argument is invalid.
    """
    return _default.configure(**config)


def recover(store: str | None = None) -> int:
    """Seal the write-ahead segments left by dead processes into Parquet; return their rows.

    Writers do this by themselves when they start; call it after a crash to make the last
    rows of a dead process readable before anything writes to the store again. Segments
    of live writers are left alone. Defaults to the default recorder's store.
    """
    from ._sealing import recover_orphans

    results = recover_orphans(store if store is not None else _default.config.store)
    return sum(r.prediction_rows for r in results)


def last_prediction_ids() -> list[str]:
    """Ids of the rows written for the last recorded call in this thread or task.

    One id for a single call, one per row for a batch call; empty if nothing was recorded.
    """
    rec = _last_record()
    return [] if rec is None else _ids_for(rec)


def last_prediction_id() -> str | None:
    """Id of the last recorded prediction in this thread or task, to attach a label later.

    For a batch call, the id of its first row (see :func:`last_prediction_ids`).
    """
    ids = last_prediction_ids()
    return ids[0] if ids else None
