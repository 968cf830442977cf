"""Statistics over the replay store: is the input changing, what is the model predicting,
is it still right.

::

    from predlog.replay import Store
    from predlog.analysis import compare_versions, drift_over_time, input_drift, performance, prediction_drift
    from predlog.analysis import report, when_shifted

    s = Store("predlog-store")
    input_drift(s, reference={"version": "1.3"}, current={"last": "1d"})
    prediction_drift(s, reference=train_df)
    performance(s, window="1D", by="context.country")
    drift_over_time(s, reference=train_df, window="1D")   # every day against the reference
    when_shifted(s, "prediction", window="1h")            # when did the predictions move?
    compare_versions(s, "1.4.0", "1.5.0")                 # promote, hold or roll back the candidate?
    report(s, "report.html", sensitive="context.region") # all of it in one HTML file

Every function aggregates in DuckDB through the store's query core (``Store.relation``
over a selection) and brings back aggregates, histograms or, for the KS test, the values of
one column at a time. Each statistic equals its reference implementation (scipy.stats,
scikit-learn, ruptures) on the same rows; where rows weigh differently (mixed sample rates),
significance tests use Kish's effective sample size, a documented approximation
(docs/analysis.md).
Results have ``.df`` (pandas), ``.summary``, ``to_dict()``, an HTML view for notebooks and
``plot()`` (``pip install 'predlog[plot]'``).
"""

from __future__ import annotations

from . import retrain, rules
from ._compare import compare_versions
from ._drift import DriftResult, input_drift, prediction_drift
from ._errors import ErrorCorrelation, error_correlation
from ._fairness import FairnessResult, fairness_audit
from ._monitor import Alert, Monitor, RuleCheckError
from ._over_time import DriftOverTime, drift_over_time
from ._performance import PerformanceResult, performance
from ._profile import Profile
from ._report import report
from ._shift import ChangePoint, Shift, change_points, when_shifted
from ._slices import ErrorSlices, error_slices
from ._verdict import Verdict

__all__ = [
    "Alert",
    "ChangePoint",
    "DriftOverTime",
    "DriftResult",
    "ErrorCorrelation",
    "ErrorSlices",
    "FairnessResult",
    "Monitor",
    "PerformanceResult",
    "Profile",
    "RuleCheckError",
    "Shift",
    "Verdict",
    "change_points",
    "compare_versions",
    "drift_over_time",
    "error_correlation",
    "error_slices",
    "fairness_audit",
    "input_drift",
    "performance",
    "prediction_drift",
    "report",
    "retrain",
    "rules",
    "when_shifted",
]
