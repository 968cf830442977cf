"""Spans at the edges: sampled-out calls, full queues, processors that drop rows, rate limits."""

from __future__ import annotations

import pathlib
import threading
import time
from typing import Any

import duckdb
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import predlog


@pytest.fixture
def traced() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def rows(store: pathlib.Path) -> list[dict[str, Any]]:
    files = list(store.glob("predictions/**/*.parquet"))
    if not files:
        return []
    rel = duckdb.sql(f"select * from read_parquet({[str(f) for f in files]}, union_by_name=true)")
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def predict_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("predict")]


def test_sampled_out_spans_are_hashed_like_rows(tmp_path: pathlib.Path, traced: Any) -> None:
    provider, exporter = traced
    rec = predlog.Recorder(
        store=str(tmp_path / "s"),
        model="m",
        tracer_provider=provider,
        sample_rate=0.5,
        hash_fields=["user_id"],
        hash_key=b"k" * 32,
        span_payload=True,
        redact=["email"],
    )
    f = rec.capture(lambda x: 1)
    try:
        for i in range(40):
            with predlog.context(user_id=f"alice{i}@example.com"):
                f({"email": f"alice{i}@example.com", "x": i})
        assert rec.flush(timeout_s=30)
    finally:
        rec.shutdown()
    spans = predict_spans(exporter)
    assert len(spans) == 40
    stored = rows(tmp_path / "s")
    assert 0 < len(stored) < 40
    for span in spans:
        text = repr(dict(span.attributes))
        assert "@example.com" not in text, text
        assert len(span.attributes["enduser.id"]) == 32
    kept = {r["prediction_id"] for r in stored}
    assert {s.attributes.get("predlog.prediction_id") for s in spans} - {None} == kept


def test_no_provider_sampled_out_calls_are_not_queued(tmp_path: pathlib.Path) -> None:
    rec = predlog.Recorder(store=str(tmp_path / "s"), model="m", sample_rate=0.0)
    f = rec.capture(lambda x: 1)
    try:
        for i in range(1000):
            f({"x": i})
        assert rec.stats()["queue_depth"] == 0
        assert rec.flush(timeout_s=30)
        s = rec.stats()
        assert s["captured"] == 0 and s["spans"] == 0
    finally:
        rec.shutdown()


def test_traced_only_calls_never_block_or_displace_rows(tmp_path: pathlib.Path, traced: Any) -> None:
    provider, _ = traced
    gate, held = threading.Event(), threading.Event()

    def hold(row: dict[str, Any]) -> dict[str, Any]:
        held.set()
        gate.wait(10)
        return row

    rec = predlog.Recorder(
        store=str(tmp_path / "s"),
        model="m",
        tracer_provider=provider,
        max_queue_size=20,
        on_full="block",
        block_timeout_s=0.5,
        processors=[hold],
    )
    kept = rec.capture(lambda x: 1)
    dropped = rec.capture(lambda x: 2, model="shadow", sample_rate=0.0)
    try:
        kept({"x": -1})
        assert held.wait(10), "the writer takes the first call and waits in the processor"
        for i in range(10):
            kept({"x": i})
        t0 = time.perf_counter()
        for i in range(50):
            dropped({"x": i})
        assert time.perf_counter() - t0 < 0.25, "a traced-only call waited for queue space"
        for i in range(10, 15):
            kept({"x": i})
        gate.set()
        assert rec.flush(timeout_s=30)
        s = rec.stats()
        assert s["dropped"]["queue_full"] == 0
        assert s["written"] == 16
        assert s["spans_dropped"]["queue_full"] > 0  # the traced-only calls that found no room
    finally:
        gate.set()
        rec.shutdown()


def test_nested_spans_end_even_when_the_call_is_dropped(tmp_path: pathlib.Path, traced: Any) -> None:
    provider, exporter = traced
    gate, held = threading.Event(), threading.Event()

    def hold(row: dict[str, Any]) -> dict[str, Any]:
        held.set()
        gate.wait(10)
        return row

    rec = predlog.Recorder(
        store=str(tmp_path / "s"),
        model="m",
        tracer_provider=provider,
        nest_spans=True,
        max_queue_size=2,
        processors=[hold],
    )
    f = rec.capture(lambda x: 1)
    try:
        f({"x": 0})
        assert held.wait(10), "the writer takes the first call and waits in the processor"
        for i in range(1, 50):
            f({"x": i})
        gate.set()
        assert rec.flush(timeout_s=30)
        dropped = rec.stats()["dropped"]["queue_full"]
    finally:
        gate.set()
        rec.shutdown()
    spans = predict_spans(exporter)
    assert len(spans) == 50, "every span started around a call is ended"
    assert sum(s.attributes.get("predlog.recorded") is False for s in spans) == dropped > 0


def test_spans_of_rows_a_processor_drops_name_no_row(tmp_path: pathlib.Path, traced: Any) -> None:
    provider, exporter = traced
    rec = predlog.Recorder(
        store=str(tmp_path / "s"),
        model="m",
        tracer_provider=provider,
        processors=[lambda row: None if row["features"]["x"] % 2 else row],
    )
    f = rec.capture(lambda x: x["x"])
    try:
        for i in range(6):
            f({"x": i})
        assert rec.flush(timeout_s=30)
    finally:
        rec.shutdown()
    stored = rows(tmp_path / "s")
    spans = predict_spans(exporter)
    assert len(stored) == 3 and len(spans) == 6
    by_id = {s.attributes.get("predlog.prediction_id"): s for s in spans}
    assert set(by_id) - {None} == {r["prediction_id"] for r in stored}
    for r in stored:
        assert by_id[r["prediction_id"]].context.span_id == int(r["span_id"], 16)


def test_rate_below_one_span_a_second_and_infinite_rate(tmp_path: pathlib.Path, traced: Any) -> None:
    provider, exporter = traced
    rec = predlog.Recorder(store=str(tmp_path / "s"), model="m", tracer_provider=provider, max_spans_per_s=0.5)
    f = rec.capture(lambda x: 1)
    try:
        f({"x": 1})
        assert rec.flush(timeout_s=30)
        assert rec.stats()["spans"] == 1
    finally:
        rec.shutdown()
    with pytest.raises(predlog.ConfigError, match="max_spans_per_s"):
        predlog.Recorder(store=str(tmp_path / "s"), max_spans_per_s=float("inf"))


def test_two_recorders_one_meter_provider(tmp_path: pathlib.Path) -> None:
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    recs = [
        predlog.Recorder(store=str(tmp_path / f"s{i}"), model="m", meter_provider=mp, tracing=False) for i in range(2)
    ]
    try:
        for n, rec in zip((3, 100), recs):
            f = rec.capture(lambda x: 1)
            for i in range(n):
                f({"x": i})
            assert rec.flush(timeout_s=30)
        data = reader.get_metrics_data()
        points = [
            p
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == "predlog.predictions.captured"
            for p in m.data.data_points
        ]
        assert sorted(p.value for p in points) == [3, 100]
        assert {p.attributes["predlog.store"] for p in points} == {str(tmp_path / "s0"), str(tmp_path / "s1")}
    finally:
        for rec in recs:
            rec.shutdown()
        mp.shutdown()
