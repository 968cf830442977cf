"""A FastAPI service whose predictions are recorded by predlog and traced by OpenTelemetry.

Each request gets a span from opentelemetry-instrumentation-fastapi; the prediction made
while serving it becomes a child span ``predict iris`` carrying the prediction id, and the
Parquet row carries the trace and span ids. A small ASGI middleware sets predlog's user and
request context from the request headers.

Run it (no server needed: requests go through an in-process client)::

    python examples/fastapi_app.py [STORE_DIR]

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the spans go to that collector over OTLP (protocol
from ``OTEL_EXPORTER_OTLP_PROTOCOL``, default http/protobuf); otherwise they are printed.
Serve it for real with uvicorn's app factory (and call ``predlog.shutdown()`` on shutdown,
as examples/workers_app.py does, so a worker's last rows are sealed)::

    PREDLOG_STORE=predlog-store uvicorn --factory 'examples.fastapi_app:create_app_from_env'

"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from typing import Any

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from pydantic import BaseModel
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import predlog


class PredlogContext:
    """ASGI middleware: every HTTP request runs inside ``predlog.context(...)``.

    The user comes from ``X-User-Id``; the request id from ``X-Request-Id`` (generated when
    absent, and echoed back so a client can send labels for it later).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode("latin-1")))
            await send(message)

        with predlog.context(user_id=headers.get("x-user-id"), request_id=request_id, route=scope.get("path")):
            await self.app(scope, receive, send_with_id)


class Flower(BaseModel):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


class Label(BaseModel):
    prediction_id: str
    species: int


def train() -> LogisticRegression:
    data = load_iris()
    return LogisticRegression(max_iter=500).fit(data.data, data.target)


def create_app(store: str, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The service. ``tracer_provider`` defaults to one exporting over OTLP or to the console."""
    if tracer_provider is None:
        tracer_provider = TracerProvider(resource=Resource.create({"service.name": "iris-service"}))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))

    model = train()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    recorder = predlog.Recorder(store=store, model="iris", version="1.0.0", tracer_provider=tracer_provider)

    @recorder.capture(confidence="max")  # the prediction is the probability vector
    def predict(features: dict[str, float]) -> Any:
        return model.predict_proba([[features[n] for n in names]])[0]

    app = FastAPI(title="iris")

    @app.post("/predict")
    def predict_endpoint(flower: Flower) -> dict[str, Any]:
        proba = predict(flower.model_dump())
        return {"species": int(proba.argmax()), "prediction_id": predlog.last_prediction_id()}

    @app.post("/label")
    def label_endpoint(label: Label) -> dict[str, str]:
        recorder.log_label(label.species, prediction_id=label.prediction_id)
        return {"status": "ok"}

    app.add_middleware(PredlogContext)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider)
    app.state.recorder = recorder
    app.state.tracer_provider = tracer_provider
    return app


def create_app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory``: the store from ``$PREDLOG_STORE``."""
    return create_app(os.environ.get("PREDLOG_STORE", "predlog-store"))


def main(argv: list[str]) -> int:
    from fastapi.testclient import TestClient

    store = argv[1] if len(argv) > 1 else tempfile.mkdtemp(prefix="predlog-fastapi-")
    app = create_app(store)
    data = load_iris()
    with TestClient(app) as client:
        for i in range(0, 150, 10):
            flower = dict(zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], map(float, data.data[i])))
            r = client.post("/predict", json=flower, headers={"X-User-Id": f"user-{i % 3}"})
            client.post("/label", json={"prediction_id": r.json()["prediction_id"], "species": int(data.target[i])})
    app.state.recorder.shutdown()
    app.state.tracer_provider.shutdown()

    import duckdb

    rows = duckdb.sql(
        f"select p.user_id, p.request_id, p.trace_id, p.span_id, p.prediction, l.label "
        f"from read_parquet('{store}/predictions/**/*.parquet', hive_partitioning=true) p "
        f"left join read_parquet('{store}/labels/**/*.parquet') l using (prediction_id) order by p.ts limit 5"
    )
    print(f"\nstore: {store}")
    print(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
