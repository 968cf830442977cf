"""The OTLP test receiver, proven with the plain OpenTelemetry SDK and raw OTLP requests."""

from __future__ import annotations

import bisect
import gzip
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import grpc
import psutil
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from .conftest import RECEIVER_SCRIPT, OtlpReceiver

RESOURCE = Resource.create({"service.name": "otel-harness"})


def _span_exporter(receiver: OtlpReceiver, transport: str, *, gzip: bool = False, timeout_s: float = 5) -> SpanExporter:
    if transport == "grpc":
        return GrpcSpanExporter(
            endpoint=receiver.grpc_endpoint,
            insecure=True,
            timeout=timeout_s,
            compression=grpc.Compression.Gzip if gzip else None,
        )
    return HttpSpanExporter(
        endpoint=receiver.http_endpoint + "/v1/traces",
        timeout=timeout_s,
        compression=HttpCompression.Gzip if gzip else None,
    )


def _tracer_provider(*exporters: SpanExporter) -> TracerProvider:
    provider = TracerProvider(resource=RESOURCE)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _hex_ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _names(spans: list[dict[str, Any]]) -> list[str]:
    return sorted(s["name"] for s in spans)


@pytest.mark.parametrize(
    ("transport", "compressed"),
    [("grpc", False), ("grpc", True), ("http", False), ("http", True)],
    ids=["grpc", "grpc-gzip", "http", "http-gzip"],
)
def test_sdk_spans_arrive_with_ids_parents_and_attributes(
    otlp_receiver: OtlpReceiver, transport: str, compressed: bool
) -> None:
    provider = _tracer_provider(_span_exporter(otlp_receiver, transport, gzip=compressed))
    tracer = provider.get_tracer("harness.tests", "1.2.3")
    try:
        with tracer.start_as_current_span(
            "parent", kind=SpanKind.SERVER, attributes={"model": "m", "rows": 3, "latency_ms": 1.5, "ok": True}
        ) as parent:
            with tracer.start_as_current_span("child", attributes={"tags": ("a", "b"), "sizes": [1, 2]}) as child:
                child.add_event("retry", {"attempt": 2})
                child.set_status(Status(StatusCode.ERROR, "boom"))
        assert provider.force_flush()
    finally:
        provider.shutdown()

    # The receiver writes before it answers, so the data is there once the export returned.
    received = {s["name"]: s for s in otlp_receiver.spans()}
    assert sorted(received) == ["child", "parent"]
    trace_id, parent_id = _hex_ids(parent)
    _, child_id = _hex_ids(child)

    p, c = received["parent"], received["child"]
    assert (p["trace_id"], p["span_id"], p["parent_span_id"]) == (trace_id, parent_id, None)
    assert (c["trace_id"], c["span_id"], c["parent_span_id"]) == (trace_id, child_id, parent_id)
    assert p["transport"] == c["transport"] == transport
    assert p["attributes"] == {"model": "m", "rows": 3, "latency_ms": 1.5, "ok": True}
    assert c["attributes"] == {"tags": ["a", "b"], "sizes": [1, 2]}
    assert (p["kind"], c["kind"]) == ("server", "internal")
    assert p["status"] == {"code": 0, "message": ""}
    assert c["status"] == {"code": 2, "message": "boom"}
    assert [(e["name"], e["attributes"]) for e in c["events"]] == [("retry", {"attempt": 2})]
    assert p["start_time_unix_nano"] <= c["start_time_unix_nano"] <= c["end_time_unix_nano"] <= p["end_time_unix_nano"]
    for span in (p, c):
        assert span["resource"]["service.name"] == "otel-harness"
        assert span["resource"]["telemetry.sdk.language"] == "python"
        assert (span["scope"], span["scope_version"]) == ("harness.tests", "1.2.3")
        assert span["dropped_attributes_count"] == 0


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_metrics_arrive_as_data_points(otlp_receiver: OtlpReceiver, transport: str) -> None:
    exporter = (
        GrpcMetricExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True, timeout=5)
        if transport == "grpc"
        else HttpMetricExporter(endpoint=otlp_receiver.http_endpoint + "/v1/metrics", timeout=5)
    )
    # An infinite interval starts no thread: only force_flush exports.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("harness.tests")
    try:
        counter = meter.create_counter("requests")
        counter.add(3, {"route": "/a"})
        counter.add(4, {"route": "/a"})
        counter.add(1, {"route": "/b"})
        depth = meter.create_up_down_counter("queue_depth")
        depth.add(5)
        depth.add(-7)
        latency = meter.create_histogram("latency_ms", unit="ms")
        for value in (1, 2, 30, 700):
            latency.record(value, {"model": "m"})
        meter.create_gauge("temperature").set(21.5)
        meter.create_observable_gauge("open_files", callbacks=[lambda _options: [Observation(7, {"kind": "wal"})]])
        assert provider.force_flush()
    finally:
        provider.shutdown()

    points = otlp_receiver.metrics()
    by_key = {(m["name"], json.dumps(m["attributes"], sort_keys=True)): m for m in points}
    assert len(by_key) == len(points) == 6, points

    requests_a = by_key["requests", '{"route": "/a"}']
    assert (requests_a["kind"], requests_a["value"], requests_a["is_monotonic"]) == ("sum", 7, True)
    assert by_key["requests", '{"route": "/b"}']["value"] == 1
    queue_depth = by_key["queue_depth", "{}"]
    assert (queue_depth["kind"], queue_depth["value"], queue_depth["is_monotonic"]) == ("sum", -2, False)

    hist = by_key["latency_ms", '{"model": "m"}']
    assert (hist["kind"], hist["unit"], hist["count"], hist["sum"]) == ("histogram", "ms", 4, 733)
    assert (hist["min"], hist["max"]) == (1, 700)
    assert sum(hist["bucket_counts"]) == 4
    assert len(hist["bucket_counts"]) == len(hist["explicit_bounds"]) + 1
    assert hist["bucket_counts"][bisect.bisect_left(hist["explicit_bounds"], 700)] == 1

    assert (by_key["temperature", "{}"]["kind"], by_key["temperature", "{}"]["value"]) == ("gauge", 21.5)
    assert by_key["open_files", '{"kind": "wal"}']["value"] == 7
    for point in points:
        assert point["transport"] == transport
        assert point["resource"]["service.name"] == "otel-harness"
        assert point["scope"] == "harness.tests"
        assert point["time_unix_nano"] > 0


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_stop_and_start_serve_again_on_the_same_ports(otlp_receiver: OtlpReceiver) -> None:
    grpc_port, http_port, first_pid = otlp_receiver.grpc_port, otlp_receiver.http_port, otlp_receiver.pid
    assert first_pid is not None and str(RECEIVER_SCRIPT) in psutil.Process(first_pid).cmdline()
    # One provider, both transports: every span is sent twice.
    provider = _tracer_provider(_span_exporter(otlp_receiver, "grpc"), _span_exporter(otlp_receiver, "http"))
    tracer = provider.get_tracer("harness.tests")
    try:
        with tracer.start_as_current_span("before"):
            pass
        assert provider.force_flush()
        assert len(otlp_receiver.spans()) == 2

        assert otlp_receiver.stop() == 0  # clean exit on SIGTERM
        assert otlp_receiver.pid is None and not psutil.pid_exists(first_pid)
        assert _refused(grpc_port) and _refused(http_port)

        otlp_receiver.start()
        assert (otlp_receiver.grpc_port, otlp_receiver.http_port) == (grpc_port, http_port)
        assert otlp_receiver.pid not in (None, first_pid)

        # The same exporters reconnect (gRPC may need one retry after its channel's backoff).
        with tracer.start_as_current_span("after"):
            pass
        assert provider.force_flush()
    finally:
        provider.shutdown()
    spans = otlp_receiver.spans()
    assert sorted((s["name"], s["transport"]) for s in spans) == [
        ("after", "grpc"),
        ("after", "http"),
        ("before", "grpc"),
        ("before", "http"),
    ]


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_spans_exported_while_the_receiver_is_down_are_lost(otlp_receiver: OtlpReceiver, transport: str) -> None:
    # The exporter's timeout bounds its retries. gRPC needs room for one retry (backoff 0.8-1.2 s)
    # after the restart, when its channel may still be in reconnect backoff.
    timeout_s = 1.5 if transport == "grpc" else 1.0
    provider = _tracer_provider(_span_exporter(otlp_receiver, transport, timeout_s=timeout_s))
    tracer = provider.get_tracer("harness.tests")
    try:
        otlp_receiver.stop()
        with tracer.start_as_current_span("lost"):
            pass
        started = time.monotonic()
        # BatchSpanProcessor.force_flush ignores the exporter's result: True although nothing arrived.
        assert provider.force_flush() is True
        # The exporter retries with backoff only within its own timeout.
        assert time.monotonic() - started < timeout_s + 1.0

        otlp_receiver.start()
        with tracer.start_as_current_span("kept"):
            pass
        assert provider.force_flush()
    finally:
        provider.shutdown()
    # A failed batch is not queued again.
    assert _names(otlp_receiver.spans()) == ["kept"]


def _raw_trace_request(prefix: str, count: int) -> trace_service_pb2.ExportTraceServiceRequest:
    spans = [
        trace_pb2.Span(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name=f"{prefix}-{i}",
            kind=trace_pb2.Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=1_000 + i,
            end_time_unix_nano=2_000 + i,
            attributes=[common_pb2.KeyValue(key="i", value=common_pb2.AnyValue(int_value=i))],
        )
        for i in range(count)
    ]
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[common_pb2.KeyValue(key="host", value=common_pb2.AnyValue(string_value="h1"))]
                ),
                scope_spans=[
                    trace_pb2.ScopeSpans(scope=common_pb2.InstrumentationScope(name="raw"), spans=spans),
                ],
            )
        ]
    )


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float = 5) -> bytes:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return bytes(response.read())


def test_concurrent_grpc_and_http_requests_are_written_whole(otlp_receiver: OtlpReceiver) -> None:
    requests = {
        transport: [_raw_trace_request(f"{transport}{n}", 500) for n in range(10)] for transport in ("grpc", "http")
    }

    def send_grpc() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{otlp_receiver.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            for request in requests["grpc"]:
                stub.Export(request, timeout=10)

    def send_http() -> None:
        for n, request in enumerate(requests["http"]):
            body = request.SerializeToString()
            headers = {"Content-Type": "application/x-protobuf"}
            if n % 2:
                body = gzip.compress(body)
                headers["Content-Encoding"] = "gzip"
            reply = _post(otlp_receiver.http_endpoint + "/v1/traces", body, headers)
            assert trace_service_pb2.ExportTraceServiceResponse.FromString(reply) is not None

    threads = [threading.Thread(target=send_grpc), threading.Thread(target=send_http)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    spans = otlp_receiver.spans()  # every line parses: no request was interleaved with another
    assert len(spans) == 10_000
    sent = {
        (transport, span.span_id.hex())
        for transport, batch in requests.items()
        for request in batch
        for span in request.resource_spans[0].scope_spans[0].spans
    }
    assert {(s["transport"], s["span_id"]) for s in spans} == sent
    first = next(s for s in spans if s["name"] == "http1-7")
    assert first["attributes"] == {"i": 7} and first["kind"] == "client"
    assert (first["resource"], first["scope"], first["start_time_unix_nano"]) == ({"host": "h1"}, "raw", 1_007)


def test_every_otlp_value_type_becomes_a_python_value(otlp_receiver: OtlpReceiver) -> None:
    def kv(key: str, **value: Any) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))

    request = _raw_trace_request("typed", 1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    del span.attributes[:]
    span.attributes.extend(
        [
            kv("s", string_value="x"),
            kv("b", bool_value=False),
            kv("i", int_value=-(2**62)),
            kv("d", double_value=0.25),
            kv("raw", bytes_value=b"\x00\xff"),
            kv(
                "arr",
                array_value=common_pb2.ArrayValue(
                    values=[common_pb2.AnyValue(int_value=1), common_pb2.AnyValue(string_value="two")]
                ),
            ),
            kv("kv", kvlist_value=common_pb2.KeyValueList(values=[kv("inner", bool_value=True)])),
            common_pb2.KeyValue(key="empty"),
        ]
    )
    span.parent_span_id = bytes.fromhex("00112233445566ff")
    span.status.code = trace_pb2.Status.STATUS_CODE_OK
    span.events.add(name="e", time_unix_nano=1_500).attributes.append(kv("n", int_value=1))
    link = span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    link.attributes.append(kv("why", string_value="retry-of"))
    span.dropped_attributes_count = 3
    headers = {"Content-Type": "application/x-protobuf"}
    _post(otlp_receiver.http_endpoint + "/v1/traces", request.SerializeToString(), headers)

    [received] = otlp_receiver.spans()
    assert received["attributes"] == {
        "s": "x",
        "b": False,
        "i": -(2**62),
        "d": 0.25,
        "raw": "00ff",
        "arr": [1, "two"],
        "kv": {"inner": True},
        "empty": None,
    }
    assert received["parent_span_id"] == "00112233445566ff"
    assert received["status"] == {"code": 1, "message": ""}
    assert received["events"] == [{"name": "e", "time_unix_nano": 1_500, "attributes": {"n": 1}}]
    assert received["links"] == [{"trace_id": "01" * 16, "span_id": "02" * 8, "attributes": {"why": "retry-of"}}]
    assert received["dropped_attributes_count"] == 3


def test_bad_http_requests_are_refused_and_write_nothing(otlp_receiver: OtlpReceiver) -> None:
    body = _raw_trace_request("bad", 1).SerializeToString()
    protobuf = {"Content-Type": "application/x-protobuf"}
    cases = [
        ("/v1/logs", body, protobuf, 404),
        ("/v1/traces", body, {"Content-Type": "application/json"}, 415),
        ("/v1/traces", body, {**protobuf, "Content-Encoding": "br"}, 415),
        ("/v1/traces", b"\xff\xff\xff", protobuf, 400),
        ("/v1/traces", body, {**protobuf, "Content-Encoding": "gzip"}, 400),
    ]
    for path, payload, headers, status in cases:
        with pytest.raises(urllib.error.HTTPError) as error:
            _post(otlp_receiver.http_endpoint + path, payload, headers)
        assert error.value.code == status, (path, headers)

    started = time.monotonic()
    assert otlp_receiver.spans(min_count=1, timeout_s=0.2) == []
    assert time.monotonic() - started >= 0.2
    assert otlp_receiver.metrics() == []


def test_a_paused_receiver_serves_requests_after_resume(otlp_receiver: OtlpReceiver) -> None:
    body = _raw_trace_request("late", 1).SerializeToString()
    otlp_receiver.pause()
    try:
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            _post(otlp_receiver.http_endpoint + "/v1/traces", body, {"Content-Type": "application/x-protobuf"}, 0.3)
    finally:
        otlp_receiver.resume()
    # The client gave up, but its request was already in the socket: it is written anyway.
    assert _names(otlp_receiver.spans(min_count=1, timeout_s=5)) == ["late-0"]


@pytest.mark.slow
def test_receiver_exits_when_its_parent_dies(tmp_path: Any) -> None:
    launcher = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, {str(RECEIVER_SCRIPT)!r}, '--out', {str(tmp_path / 'out.jsonl')!r}],"
        " stdout=subprocess.PIPE)\n"
        "print(p.stdout.readline().decode().strip(), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        ready = json.loads(parent.stdout.readline())
        receiver = psutil.Process(ready["pid"])
        assert receiver.ppid() == parent.pid
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    try:
        receiver.wait(timeout=5)
    except psutil.TimeoutExpired:
        receiver.kill()
        pytest.fail("the receiver outlived its parent")
    except psutil.NoSuchProcess:
        pass
