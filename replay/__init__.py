"""The reading side of the replay store (DuckDB over the Parquet files).

::

    from predlog.replay import Store

    s = Store("predlog-store")
    s.predictions(model="fraud", last="1h", where={"features.age": ("<", 30)})
"""

from __future__ import annotations

from ._compact import CompactResult
from ._errors import (
    FilterError,
    LiveRowsWarning,
    MaintenanceBusyError,
    MixedLabelTypesWarning,
    NothingToReplayError,
    PredictionNotFoundError,
    QueryNotAllowedError,
    StoreError,
    StoreNotFoundError,
    TimeBoundError,
    UnknownColumnError,
    UnknownModelError,
    UnknownVersionError,
    UnsupportedStoreError,
)
from ._forget import ForgetResult, UserNotFoundWarning
from ._replay_result import ReplayResult
from ._retain import RetainResult
from ._store import Store

__all__ = [
    "CompactResult",
    "FilterError",
    "ForgetResult",
    "LiveRowsWarning",
    "MaintenanceBusyError",
    "MixedLabelTypesWarning",
    "NothingToReplayError",
    "PredictionNotFoundError",
    "QueryNotAllowedError",
    "ReplayResult",
    "RetainResult",
    "Store",
    "StoreError",
    "StoreNotFoundError",
    "TimeBoundError",
    "UnknownColumnError",
    "UnknownModelError",
    "UnknownVersionError",
    "UnsupportedStoreError",
    "UserNotFoundWarning",
]
