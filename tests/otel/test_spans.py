"""A span per prediction, exported over OTLP to a real receiver, its ids in the Parquet rows.

Every test runs predlog's own pipeline (or an application's SDK provider) against the
receiver process of ``conftest.py`` over loopback and reads the store back with DuckDB.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import predlog

from .conftest import OtlpReceiver

PARENT_TRACE_ID = 0x5B8AA5A2D2C872E8321CF37308D69DF2
PARENT_SPAN_ID = 0x051581BF3CB55C13
PROTOCOLS = {"grpc": "grpc", "http": "http/protobuf"}


# ---------------------------------------------------------------- helpers


def rows(store: Path, order: str = "ts, batch_index") -> list[dict[str, Any]]:
    """Every prediction row of the store, as dicts (empty when no Parquet file exists)."""
    if not glob.glob(f"{store}/predictions/**/*.parquet", recursive=True):
        return []
    cur = duckdb.connect().execute(
        f"select * from read_parquet('{store}/predictions/**/*.parquet', hive_partitioning=true, "
        f"union_by_name=true) order by {order}"
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def otlp_env(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver, transport: str) -> None:
    """Point predlog's own OTLP exporters at the receiver, through the standard variables only."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", PROTOCOLS[transport])
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_endpoint if transport == "grpc" else receiver.http_endpoint
    )


@contextmanager
def parent_span(
    trace_id: int = PARENT_TRACE_ID, span_id: int = PARENT_SPAN_ID, *, sampled: bool = True
) -> Iterator[None]:
    """Make a remote parent span context current, as a propagator would for an incoming request."""
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
    parent = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    try:
        yield
    finally:
        otel_context.detach(token)


def flushed(rec: predlog.Recorder) -> dict[str, Any]:
    """Flush (rows into Parquet, spans to the receiver) and check the call accounting."""
    assert rec.flush(timeout_s=15) is True
    s = rec.stats()
    assert s["captured"] == s["written"] + s["dropped_total"], s
    return s


def by_prediction_id(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {s["attributes"]["predlog.prediction_id"]: s for s in spans}
    assert len(out) == len(spans), "one span per prediction"
    return out


def is_predict(span: dict[str, Any]) -> bool:
    return span["name"] == "predict m"


# ---------------------------------------------------------------- 1. single calls over gRPC and HTTP


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_span_per_prediction_over_otlp(
    transport: str, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, make_rec: Any, tmp_path: Path
) -> None:
    otlp_env(monkeypatch, otlp_receiver, transport)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "fraud-api")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=risk")
    rec = make_rec(otlp=True, hash_fields=["user_id"], hash_key=b"k3y")

    @rec.capture(confidence=lambda out: out["p"])
    def predict(x: dict[str, Any]) -> dict[str, Any]:
        if x["amount"] < 0:
            raise ValueError(f"negative amount {x['amount']}")
        return {"fraud": x["amount"] > 100, "p": min(1.0, x["amount"] / 200)}

    amounts = [10, 150, -5, 60, 199]
    ids: list[str | None] = []
    with parent_span(), predlog.context(user_id="alice@example.com", request_id="req-1"):
        for a in amounts:
            try:
                predict({"amount": a})
            except ValueError:
                pass
            ids.append(predlog.last_prediction_id())
    flushed(rec)

    stored = rows(tmp_path / "store")
    assert [r["prediction_id"] for r in stored] == ids
    spans = otlp_receiver.spans(min_count=len(amounts), predicate=is_predict)
    assert len(spans) == len(amounts), "exactly one span per prediction"
    assert {s["transport"] for s in spans} == {transport}
    by_id = by_prediction_id(spans)
    store = os.path.abspath(tmp_path / "store")
    for row in stored:
        span = by_id[row["prediction_id"]]
        a = span["attributes"]
        # The trace points at the row, and the row at the trace.
        assert (span["trace_id"], span["span_id"]) == (row["trace_id"], row["span_id"])
        assert span["trace_id"] == f"{PARENT_TRACE_ID:032x}"
        assert span["parent_span_id"] == f"{PARENT_SPAN_ID:016x}"
        assert span["kind"] == "internal"
        assert span["resource"]["service.name"] == "fraud-api"
        assert span["resource"]["deployment.environment"] == "test"
        assert span["resource"]["team"] == "risk"
        assert span["scope"] == "predlog"
        assert a["predlog.model"] == "m" and a["predlog.model_version"] == "2"
        assert a["predlog.status"] == row["status"]
        assert a["predlog.latency_ms"] == row["latency_ms"]
        assert span["end_time_unix_nano"] - span["start_time_unix_nano"] == pytest.approx(
            row["latency_ms"] * 1e6, abs=1000
        )
        assert a["predlog.store"] == store
        # hash_fields applies before the span is made: the span carries the hashed id, never the raw one.
        assert a["enduser.id"] == row["user_id"] != "alice@example.com"
        assert len(row["user_id"]) == 32
        assert "alice@example.com" not in json.dumps(span)
        if row["status"] == "ok":
            assert a["predlog.confidence"] == pytest.approx(row["confidence"])
            assert "error.type" not in a
            assert span["status"]["code"] == 0 and span["events"] == []
        else:
            assert row["features"]["amount"] == -5
            assert a["error.type"] == row["error_type"] == "ValueError"
            assert "predlog.confidence" not in a
            assert span["status"]["code"] == 2
            assert "negative amount -5" in span["status"]["message"]
            (event,) = span["events"]
            assert event["name"] == "exception"
            assert event["attributes"]["exception.type"] == "ValueError"
            assert event["attributes"]["exception.message"] == "negative amount -5"
            assert "raise ValueError" in event["attributes"]["exception.stacktrace"]
    assert sum(r["status"] == "error" for r in stored) == 1


# ---------------------------------------------------------------- batch calls


def test_batch_call_is_one_span(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, make_rec: Any, tmp_path: Path
) -> None:
    otlp_env(monkeypatch, otlp_receiver, "http")
    rec = make_rec(otlp=True)
    df = pd.DataFrame({"age": [20, 30, 40, 50, 60], "income": [1.0, 2.0, 3.0, 4.5, 5.0]})

    @rec.capture(features="frame")
    def predict(frame: pd.DataFrame | dict[str, Any], threshold: int) -> np.ndarray | int:
        if isinstance(frame, dict):
            return int(frame["age"] > threshold)
        return (frame["age"].to_numpy() > threshold).astype(np.int64)

    with parent_span():
        predict(df, threshold=35)
    ids = predlog.last_prediction_ids()
    predict({"age": 1, "income": 0.0}, threshold=35)  # a single call after it: its own span
    single = predlog.last_prediction_id()
    flushed(rec)

    stored = rows(tmp_path / "store")
    batch = [r for r in stored if r["batch_id"] is not None]
    assert [r["prediction_id"] for r in batch] == ids and len(ids) == 5
    assert {r["batch_size"] for r in batch} == {5}
    spans = otlp_receiver.spans(min_count=2, predicate=is_predict)
    assert len(spans) == 2
    (span,) = [s for s in spans if "predlog.batch_id" in s["attributes"]]
    a = span["attributes"]
    assert a["predlog.batch_size"] == 5
    assert a["predlog.batch_id"] == batch[0]["batch_id"]
    assert "predlog.prediction_id" not in a
    assert span["trace_id"] == f"{PARENT_TRACE_ID:032x}"
    assert span["parent_span_id"] == f"{PARENT_SPAN_ID:016x}"
    # All five rows point at the one span.
    assert {(r["trace_id"], r["span_id"]) for r in batch} == {(span["trace_id"], span["span_id"])}
    (other,) = [s for s in spans if s is not span]
    (single_row,) = [r for r in stored if r["batch_id"] is None]
    assert other["attributes"]["predlog.prediction_id"] == single_row["prediction_id"] == single
    assert (other["trace_id"], other["span_id"]) == (single_row["trace_id"], single_row["span_id"])
    assert other["parent_span_id"] is None and other["trace_id"] != span["trace_id"]


# ---------------------------------------------------------------- payload


def test_span_payload_is_truncated_and_redacted(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, make_rec: Any, tmp_path: Path
) -> None:
    otlp_env(monkeypatch, otlp_receiver, "http")
    rec = make_rec(otlp=True, span_payload=True, redact=["email"])

    @rec.capture
    def predict(x: dict[str, Any]) -> dict[str, Any]:
        return {"label": "spam" if "win" in x["text"] else "ham", "email": x["email"]}

    predict({"text": "hello", "email": "bob@example.com", "n": 3})
    small = predlog.last_prediction_id()
    predict({"text": "win " * 5000, "email": "eve@example.com", "n": 4})
    big = predlog.last_prediction_id()
    flushed(rec)

    spans = by_prediction_id(otlp_receiver.spans(min_count=2, predicate=is_predict))
    assert set(spans) == {small, big}
    s = spans[small]["attributes"]
    assert json.loads(s["predlog.features"]) == {"text": "hello", "email": "[REDACTED]", "n": 3}
    assert json.loads(s["predlog.prediction"]) == {"label": "ham", "email": "[REDACTED]"}
    b = spans[big]["attributes"]
    assert len(b["predlog.features"]) <= 4096
    assert b["predlog.features"].endswith("…")
    assert b["predlog.features"].startswith('{"text":"win win')
    assert json.loads(b["predlog.prediction"]) == {"label": "spam", "email": "[REDACTED]"}
    dumped = json.dumps(otlp_receiver.spans())
    assert "bob@example.com" not in dumped and "eve@example.com" not in dumped
    # The rows are redacted alike.
    assert {r["features"]["email"] for r in rows(tmp_path / "store")} == {"[REDACTED]"}


# ---------------------------------------------------------------- 2. nest_spans with the application's provider


def test_nest_spans_under_the_application_request_span(
    otlp_receiver: OtlpReceiver, make_rec: Any, tmp_path: Path
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_receiver.http_endpoint + "/v1/traces"))
    )
    try:
        app = provider.get_tracer("app")
        rec = make_rec(nest_spans=True, tracer_provider=provider)

        @rec.capture
        def predict(x: dict[str, Any]) -> int:
            with app.start_as_current_span("feature lookup"):
                return x["v"] * 2

        requests = []
        for i in range(3):
            with app.start_as_current_span("POST /score") as request:
                predict({"v": i})
                requests.append((request.get_span_context(), predlog.last_prediction_id()))
        flushed(rec)
        assert provider.force_flush(10_000)

        stored = {r["prediction_id"]: r for r in rows(tmp_path / "store")}
        spans = otlp_receiver.spans(min_count=9)
        assert len(spans) == 9
        predict_spans = by_prediction_id([s for s in spans if is_predict(s)])
        inner = {s["parent_span_id"]: s for s in spans if s["name"] == "feature lookup"}
        for request_ctx, pid in requests:
            span = predict_spans[pid]
            row = stored[pid]
            assert span["parent_span_id"] == f"{request_ctx.span_id:016x}"
            assert span["trace_id"] == f"{request_ctx.trace_id:032x}"
            assert (row["trace_id"], row["span_id"]) == (span["trace_id"], span["span_id"])
            child = inner[span["span_id"]]  # the span made inside predict nests under the predict span
            assert child["trace_id"] == span["trace_id"]
            assert span["start_time_unix_nano"] <= child["start_time_unix_nano"]
            assert child["end_time_unix_nano"] <= span["end_time_unix_nano"]
            assert span["attributes"]["predlog.status"] == "ok"
    finally:
        provider.shutdown()


# ---------------------------------------------------------------- 3. trace sampling never decides what Parquet keeps


def test_sampled_out_of_parquet_calls_are_still_traced(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, make_rec: Any, tmp_path: Path
) -> None:
    otlp_env(monkeypatch, otlp_receiver, "http")
    rec = make_rec(otlp=True, sample_rate=0.0)
    predict = rec.capture(lambda x: x + 1)
    with parent_span():
        for i in range(7):
            predict(i)
    s = flushed(rec)

    assert rows(tmp_path / "store") == []
    assert s["captured"] == 0 and s["spans"] == 7
    spans = otlp_receiver.spans(min_count=7, predicate=lambda s: s["name"].startswith("predict"))
    assert len(spans) == 7
    for span in spans:
        # No row exists, so the span names none.
        assert "predlog.prediction_id" not in span["attributes"]
        assert span["attributes"]["predlog.status"] == "ok"
        assert span["parent_span_id"] == f"{PARENT_SPAN_ID:016x}"


def test_unsampled_parent_keeps_every_row_and_makes_no_span(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, make_rec: Any, tmp_path: Path
) -> None:
    otlp_env(monkeypatch, otlp_receiver, "http")
    rec = make_rec(otlp=True)  # predlog's provider: the default ParentBased(ALWAYS_ON) sampler

    @rec.capture
    def predict(x: int) -> int:
        return x * 3

    unsampled = 0x0AF7651916CD43DD8448EB211C80319C
    with parent_span(unsampled, 0x00F067AA0BA902B7, sampled=False):
        for i in range(6):
            predict(i)
    with parent_span():  # a sampled call after them: proves the pipeline delivers
        predict(100)
        sentinel = predlog.last_prediction_id()
    s = flushed(rec)

    stored = rows(tmp_path / "store")
    assert len(stored) == 7 and s["written"] == 7
    traced = [r for r in stored if r["prediction_id"] != sentinel]
    assert {r["span_id"] for r in traced} == {None}
    # The row still names the caller's trace, though no span of predlog's is in it.
    assert {r["trace_id"] for r in traced} == {f"{unsampled:032x}"}
    spans = otlp_receiver.spans(min_count=1, predicate=is_predict)
    # flush() force-flushed the exporter, so nothing else is on its way.
    assert [s["attributes"]["predlog.prediction_id"] for s in spans] == [sentinel]
    assert s["spans"] == 1
    assert sum(s["spans_dropped"].values()) == 0


# ---------------------------------------------------------------- 4. fork after configure


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_forked_children_export_their_own_spans(
    transport: str, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, make_rec: Any, tmp_path: Path
) -> None:
    otlp_env(monkeypatch, otlp_receiver, transport)
    rec = make_rec(otlp=True)

    @rec.capture
    def predict(x: dict[str, Any]) -> int:
        return x["child"] * 1000 + x["k"]

    predict({"child": -1, "k": 0})  # the parent's pipeline (writer, exporter) is up before the fork
    flushed(rec)
    assert len(otlp_receiver.spans(min_count=1, predicate=is_predict)) == 1

    n_children, k_calls = 3, 25
    pids = []
    for c in range(n_children):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                for k in range(k_calls):
                    predict({"child": c, "k": k})
                ok = rec.flush(timeout_s=15)
                s = rec.stats()
                ok = rec.shutdown(timeout_s=15) and ok
                if ok and s["spans"] == k_calls and sum(s["spans_dropped"].values()) == 0:
                    code = 0
                else:
                    os.write(2, f"child {c}: flush ok={ok} stats={s}\n".encode())
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    predict({"child": -1, "k": 1})  # the parent still exports after its children
    flushed(rec)
    total = n_children * k_calls + 2
    spans = otlp_receiver.spans(min_count=total, predicate=is_predict)
    assert len(spans) == total
    by_id = by_prediction_id(spans)
    stored = {r["prediction_id"]: r for r in rows(tmp_path / "store")}
    assert set(stored) == set(by_id)
    per_child: dict[int, int] = {}
    for pid, row in stored.items():
        span = by_id[pid]
        assert (row["trace_id"], row["span_id"]) == (span["trace_id"], span["span_id"])
        per_child[row["features"]["child"]] = per_child.get(row["features"]["child"], 0) + 1
    assert per_child == {-1: 2, **{c: k_calls for c in range(n_children)}}


# ---------------------------------------------------------------- 7. the rate limit


def test_span_rate_limit_never_limits_rows(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, make_rec: Any, tmp_path: Path
) -> None:
    otlp_env(monkeypatch, otlp_receiver, "http")
    rec = make_rec(otlp=True, max_spans_per_s=50)
    predict = rec.capture(lambda x: x % 7)
    calls = 400
    for i in range(calls):
        predict(i)
    s = flushed(rec)

    stored = rows(tmp_path / "store")
    assert len(stored) == calls and s["written"] == calls
    made = s["spans"]
    assert 0 < made <= 100
    assert s["spans_dropped"]["rate"] == calls - made
    spans = otlp_receiver.spans(min_count=made, predicate=is_predict)
    assert len(spans) == made
    by_id = by_prediction_id(spans)
    with_span = [r for r in stored if r["span_id"] is not None]
    assert {r["prediction_id"] for r in with_span} == set(by_id)
    for r in with_span:
        assert (r["trace_id"], r["span_id"]) == (
            by_id[r["prediction_id"]]["trace_id"],
            by_id[r["prediction_id"]]["span_id"],
        )
    # A call over the limit has no span, so its row names none.
    assert all(r["trace_id"] is None for r in stored if r["span_id"] is None)
