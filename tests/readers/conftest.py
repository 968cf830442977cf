"""A store written by the SDK for the README's "Reading with other tools" snippets, and a
runner that executes a snippet exactly as the README shows it, on that store.

The store has what trips up readers of a directory of Parquet files: two models whose
features and prediction types differ (a float, a list of floats); a model whose features
changed between files (each file has a feature the other lacks); columns that one file
holds only nulls of (Arrow's null type: ``context`` before any call had context, a feature
that was always None, a label's ``extra``); and a prediction labelled twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import pytest

import predlog

README = Path(__file__).parents[2] / "README.md"
STORE_LINE = 'store = "predlog-store"'


def readme_snippet(name: str) -> str:
    """The fenced Python block that follows ``<!-- snippet: name -->`` in README.md."""
    found = re.findall(rf"<!-- snippet: {re.escape(name)} -->\n```python\n(.*?)```\n", README.read_text(), re.S)
    assert len(found) == 1, f"README.md has {len(found)} snippets named {name!r}"
    return found[0]


def run_snippet(name: str, store: str | Path) -> dict[str, Any]:
    """Run the README's snippet on ``store`` (its one ``store = ...`` line is replaced); return its globals."""
    code = readme_snippet(name)
    assert code.count(STORE_LINE) == 1, f"the {name} snippet must set {STORE_LINE!r} once"
    code = code.replace(STORE_LINE, f"store = {str(store)!r}")
    namespace: dict[str, Any] = {"__name__": f"readme_{name}"}
    exec(compile(code, f"README.md:{name}", "exec"), namespace)
    return namespace


@dataclasses.dataclass
class Logged:
    """What was logged: per prediction id, the values a reader must give back."""

    root: str
    fraud: dict[str, dict[str, Any]]
    reco: dict[str, dict[str, Any]]
    ts_window: dict[str, tuple[int, int]]  # prediction id -> (µs before the call, µs after)

    def check_ts(self, prediction_id: str, ts_us: int, date: str) -> None:
        """``ts`` lies within the call, and ``date`` is its UTC date."""
        before, after = self.ts_window[prediction_id]
        assert before <= ts_us <= after, (prediction_id, before, ts_us, after)
        assert date == dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC).date().isoformat()


# Every column the SDK writes (the partition columns come from the path).
PREDICTION_COLUMNS = {
    "prediction_id",
    "ts",
    "model_version",
    "latency_ms",
    "cpu_ms",
    "status",
    "error_type",
    "error_message",
    "request_id",
    "user_id",
    "batch_id",
    "batch_index",
    "batch_size",
    "trace_id",
    "span_id",
    "features",
    "prediction",
    "confidence",
    "context",
    "sample_rate",
    "capture_flags",
    "model",
    "date",
}


@pytest.fixture(scope="session")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    store = str(tmp_path_factory.mktemp("readers") / "store")
    fraud_rec = predlog.Recorder(store=store, model="fraud", version="1.0")
    reco_rec = predlog.Recorder(store=store, model="reco", version="7")

    @fraud_rec.capture
    def score(x: dict[str, Any]) -> float:
        return round(x["amount"] / 100, 3)

    @reco_rec.capture
    def recommend(x: dict[str, Any]) -> list[float]:
        return [x["age"] / 100, 0.5]

    fraud: dict[str, dict[str, Any]] = {}
    reco: dict[str, dict[str, Any]] = {}
    window: dict[str, tuple[int, int]] = {}

    def call(fn: Any, x: dict[str, Any]) -> str:
        before = time.time_ns() // 1000
        fn(x)
        after = time.time_ns() // 1000 + 1
        pid = predlog.last_prediction_id()
        assert pid is not None
        window[pid] = (before, after)
        return pid

    # fraud 1.0: amount, country, a coupon that is always None; no context at all.
    for i in range(3):
        x = {"amount": 10.0 * (i + 1), "country": "FR", "coupon": None}
        pid = call(score, x)
        fraud[pid] = {
            "model_version": "1.0",
            "user_id": None,
            "region": None,
            "prediction": round(x["amount"] / 100, 3),
            "features": {"amount": x["amount"], "country": "FR", "age": None, "coupon": None},
            "label": None,
        }
    assert fraud_rec.flush(timeout_s=30)
    # fraud 1.1, in a file of its own: country replaced by age; coupon sometimes set; context.
    fraud_rec.configure(store=store, model="fraud", version="1.1")
    for i in range(3):
        x = {"amount": 5.0 * i, "age": 30 + i, "coupon": "SPRING" if i else None}
        with predlog.context(user_id=f"u{i}", request_id=f"r{i}", region="eu"):
            pid = call(score, x)
        fraud[pid] = {
            "model_version": "1.1",
            "user_id": f"u{i}",
            "region": "eu",
            "prediction": round(x["amount"] / 100, 3),
            "features": {"amount": x["amount"], "country": None, "age": 30 + i, "coupon": x["coupon"]},
            "label": None,
        }
    # reco: other features, and a list of floats as its prediction.
    for i in range(2):
        x = {"age": 40 + i, "items": [i, i + 1]}
        with predlog.context(user_id="u9", region="us"):
            pid = call(recommend, x)
        reco[pid] = {
            "model_version": "7",
            "user_id": "u9",
            "region": "us",
            "prediction": [x["age"] / 100, 0.5],
            "features": {"age": 40 + i, "items": [i, i + 1]},
            "label": None,
        }

    fraud_ids, reco_ids = list(fraud), list(reco)
    fraud_rec.log_label(1, prediction_id=fraud_ids[0])
    fraud_rec.log_label(0, prediction_id=fraud_ids[3])
    assert fraud_rec.flush(timeout_s=30)
    time.sleep(0.002)  # the relabel is strictly later
    fraud_rec.log_label(0, prediction_id=fraud_ids[0], source="review")  # the latest label wins
    fraud_rec.log_label(1, prediction_id=reco_ids[1], source="click")
    fraud[fraud_ids[0]]["label"] = 0
    fraud[fraud_ids[3]]["label"] = 0
    reco[reco_ids[1]]["label"] = 1
    for rec in (fraud_rec, reco_rec):
        assert rec.flush(timeout_s=30)
        s = rec.stats()
        assert s["captured"] == s["written"] and s["dropped_total"] == 0, s
        rec.shutdown(timeout_s=10)
    assert len(list(Path(store, "predictions", "model=fraud").glob("*/*.parquet"))) == 2
    return Logged(store, fraud, reco, window)
