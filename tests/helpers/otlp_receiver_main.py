"""A real OTLP receiver for tests, run as its own process on loopback.

Usage::

    python tests/helpers/otlp_receiver_main.py --out FILE [--grpc-port N] [--http-port N] [--refuse-metrics]

Port 0 (the default) picks a free port. The receiver serves

* OTLP/gRPC: ``TraceService/Export`` and ``MetricsService/Export``;
* OTLP/HTTP: ``POST /v1/traces`` and ``POST /v1/metrics`` with
  ``Content-Type: application/x-protobuf`` and an optional ``Content-Encoding``
  of ``gzip`` or ``deflate``.

With ``--refuse-metrics`` it plays a backend that takes traces but not metrics
(Arize Phoenix, for one): metrics requests are answered with gRPC UNIMPLEMENTED
or HTTP 405 Method Not Allowed, and each refused request becomes one line
``{"type": "refused", "signal": "metrics", "transport": "grpc" | "http"}``.

Every received span and every metric data point becomes one JSON line appended
to FILE. The lines of one request are written and flushed under a lock *before*
the request is answered, so once an exporter's export call has succeeded its
data is in the file. Span lines::

    {"type": "span", "transport": "grpc" | "http", "trace_id": hex, "span_id": hex,
     "parent_span_id": hex | null, "name", "kind": "internal" | "server" | "client" |
     "producer" | "consumer" | "unspecified", "start_time_unix_nano",
     "end_time_unix_nano", "attributes": {k: v}, "dropped_attributes_count",
     "status": {"code": int, "message": str}, "events": [{"name", "time_unix_nano",
     "attributes"}], "dropped_events_count", "links": [{"trace_id", "span_id",
     "attributes"}], "resource": {k: v}, "scope": name, "scope_version"}

``status.code`` uses the OTLP numbering, which is also the numbering of the
Python API's ``StatusCode``: 0 unset, 1 ok, 2 error. Metric lines::

    {"type": "metric", "transport", "name", "unit", "kind": "sum" | "gauge" |
     "histogram" | "exponential_histogram" | "summary", "attributes",
     "start_time_unix_nano", "time_unix_nano", "resource", "scope", ...}

with ``value`` (plus ``is_monotonic`` and ``aggregation_temporality`` for sums),
or ``count``, ``sum``, ``min``, ``max``, ``bucket_counts``, ``explicit_bounds``
for histograms (the exponential histogram and summary carry their own fields).
Attribute values are Python values: str, bool, int, float, lists and dicts;
bytes values become hex strings.

Once both servers are bound the receiver prints one line to stdout,
``{"ready": true, "grpc_port": N, "http_port": M, "pid": P}``, and flushes it.
SIGTERM or SIGINT stop it cleanly (exit status 0); it also stops when its
parent process goes away, so a crashed test run leaves nothing behind.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import sys
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Index = the OTLP Span.SpanKind value.
_SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")

_ENCODER = json.JSONEncoder(check_circular=False)


# ---------------------------------------------------------------------------
# protobuf -> JSON-ready dicts


def _any_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def _attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in key_values}


def span_lines(request: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> list[str]:
    """One JSON line per span of an ``ExportTraceServiceRequest``."""
    lines = []
    dumps = _ENCODER.encode
    for resource_spans in request.resource_spans:
        resource = dumps(_attributes(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            # Resource and scope are the same for every span of the group: encode them once.
            tail = f', "resource": {resource}, "scope": {dumps(scope_spans.scope.name)}, '
            tail += f'"scope_version": {dumps(scope_spans.scope.version)}}}'
            for span in scope_spans.spans:
                kind = span.kind
                lines.append(
                    dumps(
                        {
                            "type": "span",
                            "transport": transport,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex() or None,
                            "name": span.name,
                            "kind": _SPAN_KINDS[kind] if 0 <= kind < len(_SPAN_KINDS) else kind,
                            "start_time_unix_nano": span.start_time_unix_nano,
                            "end_time_unix_nano": span.end_time_unix_nano,
                            "attributes": _attributes(span.attributes),
                            "dropped_attributes_count": span.dropped_attributes_count,
                            "status": {"code": span.status.code, "message": span.status.message},
                            "events": [
                                {
                                    "name": event.name,
                                    "time_unix_nano": event.time_unix_nano,
                                    "attributes": _attributes(event.attributes),
                                }
                                for event in span.events
                            ],
                            "dropped_events_count": span.dropped_events_count,
                            "links": [
                                {
                                    "trace_id": link.trace_id.hex(),
                                    "span_id": link.span_id.hex(),
                                    "attributes": _attributes(link.attributes),
                                }
                                for link in span.links
                            ],
                        }
                    )[:-1]
                    + tail
                )
    return lines


def _number(point: Any) -> int | float | None:
    which = point.WhichOneof("value")
    return None if which is None else getattr(point, which)


def _optional(point: Any, field: str) -> Any:
    return getattr(point, field) if point.HasField(field) else None


def _metric_points(metric: Any) -> Iterable[dict[str, Any]]:
    data = metric.WhichOneof("data")
    if data == "sum":
        for point in metric.sum.data_points:
            yield {
                "kind": "sum",
                "value": _number(point),
                "is_monotonic": metric.sum.is_monotonic,
                "aggregation_temporality": metric.sum.aggregation_temporality,
                "point": point,
            }
    elif data == "gauge":
        for point in metric.gauge.data_points:
            yield {"kind": "gauge", "value": _number(point), "point": point}
    elif data == "histogram":
        for point in metric.histogram.data_points:
            yield {
                "kind": "histogram",
                "count": point.count,
                "sum": _optional(point, "sum"),
                "min": _optional(point, "min"),
                "max": _optional(point, "max"),
                "bucket_counts": list(point.bucket_counts),
                "explicit_bounds": list(point.explicit_bounds),
                "aggregation_temporality": metric.histogram.aggregation_temporality,
                "point": point,
            }
    elif data == "exponential_histogram":
        for point in metric.exponential_histogram.data_points:
            yield {
                "kind": "exponential_histogram",
                "count": point.count,
                "sum": _optional(point, "sum"),
                "min": _optional(point, "min"),
                "max": _optional(point, "max"),
                "scale": point.scale,
                "zero_count": point.zero_count,
                "positive": {"offset": point.positive.offset, "bucket_counts": list(point.positive.bucket_counts)},
                "negative": {"offset": point.negative.offset, "bucket_counts": list(point.negative.bucket_counts)},
                "aggregation_temporality": metric.exponential_histogram.aggregation_temporality,
                "point": point,
            }
    elif data == "summary":
        for point in metric.summary.data_points:
            yield {
                "kind": "summary",
                "count": point.count,
                "sum": point.sum,
                "quantiles": [{"quantile": q.quantile, "value": q.value} for q in point.quantile_values],
                "point": point,
            }


def metric_lines(request: metrics_service_pb2.ExportMetricsServiceRequest, transport: str) -> list[str]:
    """One JSON line per metric data point of an ``ExportMetricsServiceRequest``."""
    lines = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                for fields in _metric_points(metric):
                    point = fields.pop("point")
                    line = {
                        "type": "metric",
                        "transport": transport,
                        "name": metric.name,
                        "unit": metric.unit,
                        "attributes": _attributes(point.attributes),
                        "start_time_unix_nano": point.start_time_unix_nano,
                        "time_unix_nano": point.time_unix_nano,
                        "resource": resource,
                        "scope": scope,
                    }
                    line.update(fields)
                    lines.append(json.dumps(line))
    return lines


# ---------------------------------------------------------------------------
# output file


class _Output:
    """The JSON-lines file: whole requests appended and flushed under one lock.

    With ``count_only`` (for benchmarks) nothing is converted: the number of spans received
    so far is rewritten to ``<path>.count`` after each request instead.
    """

    def __init__(self, path: str, count_only: bool = False) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self._closed = False
        self.count_only = count_only
        self._count_path = path + ".count"
        self._spans = 0

    def count(self, request: Any) -> bool:
        """Count the spans of a trace request (count_only mode)."""
        n = sum(len(ss.spans) for rs in getattr(request, "resource_spans", ()) for ss in rs.scope_spans)
        with self._lock:
            if self._closed:
                return False
            self._spans += n
            tmp = self._count_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(self._spans))
            os.replace(tmp, self._count_path)
        return True

    def write(self, lines: list[str]) -> bool:
        """Append ``lines``; False once the receiver is stopping."""
        data = "".join(line + "\n" for line in lines)
        with self._lock:
            if self._closed:
                return False
            if data:
                self._file.write(data)
                self._file.flush()
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._file.close()


# ---------------------------------------------------------------------------
# OTLP/gRPC


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, output: _Output) -> None:
        self._output = output

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        out = self._output
        if not (out.count(request) if out.count_only else out.write(span_lines(request, "grpc"))):
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver is stopping")
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, output: _Output, refuse: bool = False) -> None:
        self._output = output
        self._refuse = refuse

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        if self._refuse:
            self._output.write([_refused_line("grpc")])
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this backend does not accept metrics")
        if not self._output.write(metric_lines(request, "grpc")):
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver is stopping")
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _refused_line(transport: str) -> str:
    return json.dumps({"type": "refused", "signal": "metrics", "transport": transport})


def _start_grpc(output: _Output, port: int, refuse_metrics: bool = False) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"),
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            # Without this a second receiver could bind the same port and share the traffic.
            ("grpc.so_reuseport", 0),
        ],
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(output), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(output, refuse_metrics), server)
    try:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot bind the gRPC port 127.0.0.1:{port}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port 127.0.0.1:{port}")
    server.start()
    return server, bound


# ---------------------------------------------------------------------------
# OTLP/HTTP

_Route = tuple[Callable[[bytes], Message], Callable[[Any, str], list[str]], bytes]

_HTTP_ROUTES: dict[str, _Route] = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest.FromString,
        span_lines,
        trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest.FromString,
        metric_lines,
        metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
    ),
}


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporters' connection pools expect
    server_version = "otlp-test-receiver"
    output: _Output  # set on the subclass made in _start_http
    refuse_metrics = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:  # noqa: N802 - http.server method name
        body = self._read_body()
        route = _HTTP_ROUTES.get(self.path.split("?", 1)[0])
        if route is None:
            self._reply(404, b"unknown OTLP path")
            return
        parse, convert, response = route
        if self.refuse_metrics and convert is metric_lines:
            self.output.write([_refused_line("http")])
            self._reply(405, b"this backend does not accept metrics")
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-protobuf":
            self._reply(415, b"only application/x-protobuf is supported")
            return
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "identity"):
                self._reply(415, b"unsupported Content-Encoding")
                return
            request = parse(body)
        except (OSError, EOFError, zlib.error, DecodeError) as exc:
            self._reply(400, f"bad request body: {exc}".encode())
            return
        out = self.output
        if not (
            out.count(request) if out.count_only and convert is span_lines else out.write(convert(request, "http"))
        ):
            self._reply(503, b"receiver is stopping")
            return
        self._reply(200, response, "application/x-protobuf")


class _OtlpHttpServer(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True  # idle keep-alive connections must not hold up the exit


def _start_http(
    output: _Output, port: int, refuse_metrics: bool = False
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    handler = type("OtlpHttpHandler", (_OtlpHttpHandler,), {"output": output, "refuse_metrics": refuse_metrics})
    server = _OtlpHttpServer(("127.0.0.1", port), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="otlp-http", daemon=True
    )
    thread.start()
    return server, thread


# ---------------------------------------------------------------------------
# process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON-lines file to append to")
    parser.add_argument("--grpc-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--http-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--count-only", action="store_true", help="only count spans, into FILE.count")
    parser.add_argument(
        "--refuse-metrics", action="store_true", help="answer metrics with gRPC UNIMPLEMENTED / HTTP 405"
    )
    args = parser.parse_args(argv)

    # Block the stop signals before any thread exists: every thread inherits the mask,
    # so the signals stay pending until the main thread collects them with sigtimedwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    parent_pid = os.getppid()

    output = _Output(args.out, count_only=args.count_only)
    try:
        grpc_server, grpc_port = _start_grpc(output, args.grpc_port, args.refuse_metrics)
    except OSError as exc:
        print(f"receiver: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        http_server, http_thread = _start_http(output, args.http_port, args.refuse_metrics)
    except OSError as exc:
        print(f"receiver: cannot bind the HTTP port 127.0.0.1:{args.http_port}: {exc}", file=sys.stderr, flush=True)
        grpc_server.stop(None)
        return 1
    http_port = http_server.server_address[1]

    sys.stdout.write(json.dumps({"ready": True, "grpc_port": grpc_port, "http_port": http_port, "pid": os.getpid()}))
    sys.stdout.write("\n")
    sys.stdout.flush()

    while True:
        info = signal.sigtimedwait(_STOP_SIGNALS, 0.5)
        # SIGCONT after a long SIGSTOP interrupts the wait with a meaningless result: only a
        # stop signal actually received ends the loop.
        if info is not None and info.si_signo in _STOP_SIGNALS:
            break
        if os.getppid() != parent_pid:
            break

    # Requests already in progress get a short grace period; later ones are refused.
    grpc_server.stop(grace=1.0).wait()
    http_server.shutdown()
    http_server.server_close()
    http_thread.join()
    output.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
