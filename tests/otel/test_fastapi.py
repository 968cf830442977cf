"""The FastAPI example end to end: request span → prediction span → Parquet row, over OTLP."""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import duckdb
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "fastapi_app.py"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_request_span_is_the_parent_of_the_prediction_span(otlp_receiver: Any, tmp_path: pathlib.Path) -> None:
    example = _load_example()
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_receiver.http_endpoint + "/v1/traces"))
    )
    store = tmp_path / "store"
    app = example.create_app(str(store), tracer_provider=provider)
    flower = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    answers = []
    with TestClient(app) as client:
        for i in range(6):
            r = client.post("/predict", json=flower, headers={"X-User-Id": f"u{i % 2}", "X-Request-Id": f"req-{i}"})
            assert r.status_code == 200
            assert r.headers["x-request-id"] == f"req-{i}"
            answers.append(r.json())
    assert app.state.recorder.flush(timeout_s=30)
    provider.force_flush()

    rows = duckdb.sql(
        f"select prediction_id, user_id, request_id, trace_id, span_id, context.route as route "
        f"from read_parquet('{store}/predictions/**/*.parquet', hive_partitioning=true) order by ts"
    ).fetchall()
    assert [r[0] for r in rows] == [a["prediction_id"] for a in answers]
    assert [(r[1], r[2], r[5]) for r in rows] == [(f"u{i % 2}", f"req-{i}", "/predict") for i in range(6)]

    spans = otlp_receiver.spans(min_count=6, predicate=lambda s: s["name"] == "predict iris")
    predict_spans = {s["attributes"]["predlog.prediction_id"]: s for s in spans if s["name"] == "predict iris"}
    assert len(predict_spans) == 6
    # The server span the instrumentation made for each request: its name is "POST /predict".
    all_spans = otlp_receiver.spans(min_count=6, predicate=lambda s: s["name"] == "POST /predict")
    server = {s["span_id"]: s for s in all_spans if s["name"] == "POST /predict"}
    assert len(server) == 6
    for pid, user, request, trace_id, span_id, _route in rows:
        span = predict_spans[pid]
        assert span["trace_id"] == trace_id
        assert span["span_id"] == span_id
        assert span["parent_span_id"] in server, "the request span is the parent"
        assert server[span["parent_span_id"]]["trace_id"] == trace_id
        assert span["attributes"]["enduser.id"] == user
        assert span["attributes"]["predlog.model"] == "iris"
        assert span["attributes"]["predlog.model_version"] == "1.0.0"
        assert span["attributes"]["predlog.status"] == "ok"
        assert 0.0 < span["attributes"]["predlog.confidence"] <= 1.0
    app.state.recorder.shutdown()
    provider.shutdown()
