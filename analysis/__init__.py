"""Statistics over the replay store: is the input changing, what is the model predicting,
is it still right.

::

    from predlog.replay import Store
    from predlog.analysis import input_drift, performance, prediction_drift

    s = Store("predlog-store")
    input_drift(s, reference={"version": "1.3"}, current={"last": "1d"})
    prediction_drift(s, reference=train_df)
    performance(s, window="1D", by="context.country")

Every function aggregates in DuckDB through the store's query core (``Store.relation``
over a selection) and brings back only aggregates, histograms or one sorted column. Each
statistic equals its reference implementation (scipy.stats, scikit-learn) on the same data.
Results have ``.df`` (pandas), ``.summary``, ``to_dict()``, an HTML view for notebooks and
``plot()`` (``pip install 'predlog[plot]'``).
"""

from __future__ import annotations

from . import rules
from ._drift import DriftResult, input_drift, prediction_drift
from ._monitor import Alert, Monitor
from ._performance import PerformanceResult, performance
from ._profile import Profile

__all__ = [
    "Alert",
    "DriftResult",
    "Monitor",
    "PerformanceResult",
    "Profile",
    "input_drift",
    "performance",
    "prediction_drift",
    "rules",
]
