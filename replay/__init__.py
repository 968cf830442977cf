"""The reading side of the replay store (DuckDB over the Parquet files).

::

    from predlog.replay import Store

    s = Store("predlog-store")
    s.predictions(model="fraud", last="1h", where={"features.age": ("<", 30)})
"""

from __future__ import annotations

from ._errors import (
    FilterError,
    LiveRowsWarning,
    MixedLabelTypesWarning,
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
from ._replay import ReplayResult
from ._store import Store

__all__ = [
    "FilterError",
    "LiveRowsWarning",
    "MixedLabelTypesWarning",
    "PredictionNotFoundError",
    "QueryNotAllowedError",
    "ReplayResult",
    "Store",
    "StoreError",
    "StoreNotFoundError",
    "TimeBoundError",
    "UnknownColumnError",
    "UnknownModelError",
    "UnknownVersionError",
    "UnsupportedStoreError",
]
