"""predlog's counters and latency histogram as OpenTelemetry metrics.

Over OTLP to the real receiver (predlog's own meter provider, exported when flush()
force-flushes it), and through an application's MeterProvider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import predlog

from .conftest import OtlpReceiver
from .test_spans import flushed, otlp_env, rows

COUNTERS = (
    "predlog.predictions.captured",
    "predlog.predictions.written",
    "predlog.predictions.dropped",
    "predlog.rows.written",
    "predlog.rows.sealed",
    "predlog.files.written",
    "predlog.labels.written",
    "predlog.failures",
    "predlog.spans",
    "predlog.spans.dropped",
)
INSTRUMENTS = (*COUNTERS, "predlog.queue.depth", "predlog.prediction.latency")
N_CALLS = 40


def run_calls(rec: predlog.Recorder) -> tuple[int, int]:
    """N_CALLS calls, every 7th an error; a processor drops the rows of every 5th.
    Returns (errors, dropped)."""

    @rec.capture
    def predict(x: dict[str, int]) -> int:
        if x["i"] % 7 == 3:
            raise RuntimeError("model failed")
        return x["i"] * 2

    for i in range(N_CALLS):
        try:
            predict({"i": i})
        except RuntimeError:
            pass
    errors = sum(i % 7 == 3 for i in range(N_CALLS))
    dropped = sum(i % 5 == 0 for i in range(N_CALLS))
    return errors, dropped


def drop_every_fifth(row: dict[str, Any]) -> dict[str, Any] | None:
    return None if row["features"]["i"] % 5 == 0 else row


def latest(points: list[dict[str, Any]]) -> dict[tuple[str, tuple[tuple[str, Any], ...]], dict[str, Any]]:
    """The last point received of each (metric, attributes)."""
    out = {}
    for p in points:
        # Counters carry the store they count for (several recorders may share a provider).
        if p["name"] != "predlog.prediction.latency":
            assert p["attributes"].get("predlog.store", "").endswith("store"), p
        attrs = {k: v for k, v in p["attributes"].items() if k != "predlog.store"}
        out[(p["name"], tuple(sorted(attrs.items())))] = p
    return out


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_metrics_over_otlp_at_flush(
    transport: str, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, make_rec: Any, tmp_path: Path
) -> None:
    otlp_env(monkeypatch, otlp_receiver, transport)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "scoring")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")  # only flush() exports
    # A low span rate, so that one span-drop reason has something to count.
    rec = make_rec(otlp=True, metrics=True, processors=[drop_every_fifth], max_spans_per_s=10)
    errors, dropped = run_calls(rec)
    assert errors > 0 and dropped > 0
    # Nothing is exported before the flush: the periodic reader waits ten minutes.
    assert otlp_receiver.metrics() == []
    s = flushed(rec)

    stored = rows(tmp_path / "store")
    assert len(stored) == N_CALLS - dropped
    assert sum(r["status"] == "error" for r in stored) == sum(i % 7 == 3 and i % 5 != 0 for i in range(N_CALLS))
    points = otlp_receiver.metrics(min_count=len(INSTRUMENTS), predicate=lambda p: p["name"].startswith("predlog."))
    assert {p["transport"] for p in points} == {transport}
    assert {p["resource"]["service.name"] for p in points} == {"scoring"}
    assert {p["name"] for p in points} >= set(INSTRUMENTS)
    last = latest(points)

    def value(name: str, **attrs: Any) -> Any:
        return last[(name, tuple(sorted(attrs.items())))]["value"]

    assert value("predlog.predictions.captured") == N_CALLS == s["captured"]
    assert value("predlog.predictions.written") == N_CALLS - dropped
    assert value("predlog.predictions.dropped", reason="processor") == dropped
    for reason in ("queue_full", "write_error", "processor_error", "convert_error"):
        assert value("predlog.predictions.dropped", reason=reason) == 0
    assert value("predlog.rows.written") == N_CALLS - dropped
    assert value("predlog.rows.sealed") == N_CALLS - dropped
    assert value("predlog.files.written") >= 1
    assert value("predlog.labels.written") == 0
    assert value("predlog.failures") == 0
    assert value("predlog.queue.depth") == 0
    made = s["spans"]
    assert 0 < made < N_CALLS
    assert value("predlog.spans") == made
    assert value("predlog.spans.dropped", reason="rate") == N_CALLS - made == s["spans_dropped"]["rate"]
    for reason in ("queue_full", "export_failed", "error"):
        assert value("predlog.spans.dropped", reason=reason) == 0
    assert len(otlp_receiver.spans(min_count=made, predicate=lambda p: p["name"] == "predict m")) == made
    for name in COUNTERS:
        p = next(p for p in points if p["name"] == name)
        assert p["kind"] == "sum" and p["is_monotonic"], p
    (hist,) = [p for p in points if p["name"] == "predlog.prediction.latency"]
    assert hist["kind"] == "histogram"
    assert hist["unit"] == "ms"
    assert hist["attributes"] == {"predlog.model": "m", "predlog.model_version": "2"}
    assert hist["count"] == N_CALLS  # every call, errors and dropped rows included
    assert 0 < hist["sum"] < N_CALLS * 1000

    # A second flush exports again, with the counters moved on.
    rec.log_label(1, prediction_id=stored[0]["prediction_id"])
    flushed(rec)
    later = otlp_receiver.metrics(
        min_count=1, predicate=lambda p: p["name"] == "predlog.labels.written" and p["value"] == 1
    )
    assert len(later) == 1


def test_metrics_through_the_application_meter_provider(make_rec: Any, tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        rec = make_rec(meter_provider=provider, tracing=False, processors=[drop_every_fifth])
        errors, dropped = run_calls(rec)
        flushed(rec)
        data = reader.get_metrics_data()
        assert data is not None
        metrics = {
            m.name: m
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            if sm.scope.name == "predlog"
            for m in sm.metrics
        }
        assert set(metrics) >= set(INSTRUMENTS)

        def points(name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
            return {
                tuple(sorted((k, v) for k, v in (p.attributes or {}).items() if k != "predlog.store")): p
                for p in metrics[name].data.data_points
            }

        assert points("predlog.predictions.captured")[()].value == N_CALLS
        assert points("predlog.predictions.dropped")[(("reason", "processor"),)].value == dropped
        assert points("predlog.rows.written")[()].value == N_CALLS - dropped
        assert points("predlog.files.written")[()].value >= 1
        assert points("predlog.spans")[()].value == 0  # tracing=False
        (hist,) = points("predlog.prediction.latency").items()
        assert dict(hist[0]) == {"predlog.model": "m", "predlog.model_version": "2"}
        assert hist[1].count == N_CALLS
        assert len(rows(tmp_path / "store")) == N_CALLS - dropped
    finally:
        provider.shutdown()
