"""predlog's own OTLP pipeline (``otlp=True``): private providers and exporters.

The exporters are opentelemetry's, configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables, with four changes for a process that must not notice its collector:

* gRPC channels reconnect at least every ``RECONNECT_BACKOFF_MAX_S`` (gRPC's own ceiling is
  120 s, so a collector back after a few minutes could wait that long), each on a connection
  of its own: channels to one address otherwise share a connection and its back-off, and
  the failing metrics channel held the span channel back after an outage.
* While the collector does not answer, and while ``flush()`` or ``shutdown()`` waits, an
  export is one attempt instead of retries with back-off (1, 2, 4 s ... within the
  exporter's timeout): a collector that is down does not make them wait out the outage.
* A collector that answers that it does not take metrics (gRPC UNIMPLEMENTED, HTTP 404, 405
  or 501) is told once in predlog's log; metrics are not sent to it again.
* The exporters' own log lines about predlog's exports (one per attempt, on stderr when the
  application configures no logging) go to predlog's logger at DEBUG; predlog logs one
  warning when exports start failing and one line when they work again.

These changes reach into the exporters (opentelemetry-exporter-otlp 1.45 was read), because
the library offers no public hook for them. Each private name is read with ``getattr`` and a
fallback, so that a library that changed them gives the library's own behaviour (retries,
its log lines), never an error; ``tests/otel/test_private_fallbacks.py`` checks each fallback:

============================================  ==========================================
private name                                  why, and without it
============================================  ==========================================
``_initialize_channel_and_stub``, ``_client``  watch each gRPC attempt; else not watched
(gRPC exporters)
``_client._submit`` (HTTP exporters)          watch each HTTP attempt; else not watched
``_shutdown_event``, ``_shutdown_in_progress``  end retries when flush/shutdown waits; else
``_shutdown``                                 the library's own retries
``_client._logger``                           quiet the client's log lines; else not quieted
``_endpoint``                                 name the collector in a message; else "the collector"
``_preferred_temporality``/``_aggregation``   keep the metric exporter's preferences; else defaults
``_batch_processor._queue`` (span processor)  count spans still queued; else 0
============================================  ==========================================
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export import SpanExportResult

logger = logging.getLogger("predlog")

__all__ = ["RECONNECT_BACKOFF_MAX_S", "OwnPipeline"]

RECONNECT_BACKOFF_MAX_S = 2.0
_GRPC_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", int(RECONNECT_BACKOFF_MAX_S * 1000)),
    ("grpc.use_local_subchannel_pool", 1),
)
# HTTP answers meaning "this endpoint does not take this signal", not "try again later".
_REFUSED_HTTP = frozenset({404, 405, 501})


def otlp_protocol(signal: str) -> str:
    proto = (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip().lower() or "http/protobuf"
    if proto not in ("grpc", "http/protobuf"):
        logger.warning("predlog: OTLP protocol %r is not supported; using http/protobuf", proto)
        proto = "http/protobuf"
    return proto


# ---------------------------------------------------------------- the collector, as seen by one signal


class _Link:
    """What one signal's exporter knows of the collector: answering, down since when, or
    refusing the signal. Told by the exporter's threads after every attempt."""

    def __init__(self, signal: str) -> None:
        self.signal = signal
        self.down_since: float | None = None
        self.why = ""
        self.refused: str | None = None
        self._warned = False
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def attempt(self, ok: bool, why: str = "") -> None:
        with self._lock:
            if ok:
                since, warned = self.down_since, self._warned
                self.down_since, self._warned = None, False
            else:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                if why:
                    self.why = why
                return
        if since is not None and warned:
            logger.info("predlog: OTLP %s export works again after %.1f s", self.signal, time.monotonic() - since)

    def refuse(self, why: str) -> None:
        self.refused = why

    def failed(self, what: str, endpoint: str, then: str) -> None:
        """An export failed after its attempts: say so once until exports work again."""
        with self._lock:
            if self.down_since is None:
                self.down_since = time.monotonic()
            if self._warned:
                return
            self._warned = True
            why = self.why or "no answer"
        logger.warning("predlog: could not export %s over OTLP to %s (%s); %s", what, endpoint, why, then)


class _WatchedStub:
    """A gRPC stub that tells the link how each export attempt went."""

    def __init__(self, stub: Any, link: _Link, probe: _Probe) -> None:
        self._stub = stub
        self._link = link
        self._probe = probe

    def Export(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - the stub's method name
        try:
            out = self._stub.Export(*args, **kwargs)
        except Exception as exc:
            err: Any = exc  # a grpc.RpcError from a call has code() and details()
            code = err.code() if callable(getattr(err, "code", None)) else None
            name = str(getattr(code, "name", "") or type(exc).__name__)
            details = err.details() if callable(getattr(err, "details", None)) else str(exc)
            if name == "UNIMPLEMENTED":
                self._link.refuse(f"gRPC {name}")
            self._link.attempt(False, f"gRPC {name}: {details}"[:300])
            self._probe.attempt_failed()
            raise
        self._link.attempt(True)
        return out


def _watch_http(exporter: Any, link: _Link) -> _Probe:
    """Tell the link how each attempt of an HTTP exporter goes; its probe."""
    probe = _Probe()
    client: Any = getattr(exporter, "_client", None)
    submit = getattr(client, "_submit", None)
    if not callable(submit):
        return probe

    def watched(data: bytes, timeout: float) -> Any:
        try:
            result = submit(data, timeout)
        except Exception as exc:
            link.attempt(False, repr(exc)[:300])
            probe.attempt_failed()
            raise
        status = getattr(result, "status_code", None)
        if status is not None and 200 <= status < 400:
            link.attempt(True)
            return result
        if status in _REFUSED_HTTP:
            link.refuse(f"HTTP {status}")
        error = getattr(result, "error", None)
        link.attempt(False, (f"HTTP {status} {getattr(result, 'reason', '') or ''}" if status else repr(error))[:300])
        probe.attempt_failed()
        return result

    client._submit = watched
    probe.attach(getattr(client, "_shutdown_event", None), lambda: bool(getattr(client, "_shutdown", False)))
    return probe


class _Probe:
    """Ends an export at its first failed attempt while the collector is down, and while a
    flush() or shutdown() waits.

    The exporters retry with back-off (1, 2, 4 s ...) within their timeout: right for a
    blip, but through an outage every batch, and every flush(), would wait all of it. The
    back-off waits on the exporter's shutdown event; setting it after a failed attempt ends
    the export there, and it is cleared again afterwards (unless the exporter was shut down).
    Each attempt keeps the exporter's own timeout, so a slow collector is still reached.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event: threading.Event | None = None
        self._closed: Callable[[], bool] = lambda: False
        self._exporting = False
        self._cut = False  # the export under way stops at its next failed attempt
        self._urgent = 0  # flush() or shutdown() calls waiting

    def attach(self, event: Any, closed: Callable[[], bool]) -> None:
        if isinstance(event, threading.Event):
            self._event, self._closed = event, closed

    def begin(self, down: bool) -> None:
        with self._lock:
            self._exporting = True
            self._cut = down or self._urgent > 0

    def attempt_failed(self) -> None:
        with self._lock:
            if (self._cut or self._urgent) and self._event is not None:
                self._cut = True
                self._event.set()

    def end(self) -> None:
        with self._lock:
            self._exporting = self._cut = False
            if self._event is not None and not self._closed():
                self._event.clear()

    @contextlib.contextmanager
    def urgent(self, down: bool) -> Iterator[None]:
        """No retries while a flush() or shutdown() waits; with the collector down, the
        export under way (maybe waiting to retry) ends now."""
        with self._lock:
            self._urgent += 1
            if down and self._exporting and self._event is not None:
                self._cut = True
                self._event.set()
        try:
            yield
        finally:
            with self._lock:
                self._urgent -= 1


# ---------------------------------------------------------------- the exporters' own log lines


class _QuietExports(logging.Filter):
    """Drops the exporters' records made while predlog's exporters export on this thread;
    they go to predlog's logger at DEBUG instead (predlog says once what went wrong)."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(self.local, "depth", 0):
            return True
        with contextlib.suppress(Exception):  # a record whose message cannot be formatted
            logger.debug("predlog: OTLP exporter (%s): %s", record.name, record.getMessage())
        return False


_QUIET = _QuietExports()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    local = _QuietExports.local
    local.depth = getattr(local, "depth", 0) + 1
    try:
        yield
    finally:
        local.depth -= 1


def _quiet_loggers_of(exporter: Any) -> None:
    """Put the filter on the loggers of the exporter's library modules (a logger's filters
    see only its own records, not its children's)."""
    names = {c.__module__ for c in type(exporter).__mro__ if c.__module__.startswith("opentelemetry.")}
    client_logger = getattr(getattr(exporter, "_client", None), "_logger", None)
    if isinstance(client_logger, logging.Logger):
        names.add(client_logger.name)
    for name in names:
        target = logging.getLogger(name)
        if _QUIET not in target.filters:
            target.addFilter(_QUIET)


# ---------------------------------------------------------------- exporters


def _span_exporter(protocol: str, link: _Link) -> tuple[Any, _Probe]:
    """opentelemetry's OTLP span exporter for ``protocol``, encoding with predlog's encoder.

    Where the library's internals are not as expected, its own encoder is used.
    """
    from ._otlp_encode import encode_request

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        class FastGrpc(Grpc):
            def _translate_data(self, data: Sequence[Any]) -> Any:
                return ExportTraceServiceRequest.FromString(encode_request(data))

        return _watched_grpc(FastGrpc, link)

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    class FastHttp(Http):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            client: Any = getattr(self, "_client", None)
            if getattr(self, "_shutdown", True) or not callable(getattr(client, "export", None)):
                return super().export(spans)
            try:
                data = encode_request(spans)
            except Exception:
                return super().export(spans)
            result = client.export(data)
            return SpanExportResult.SUCCESS if getattr(result, "success", False) else SpanExportResult.FAILURE

    http_exporter = FastHttp()
    return http_exporter, _watch_http(http_exporter, link)


def _metric_exporter(protocol: str, link: _Link) -> tuple[Any, _Probe]:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return _watched_grpc(Grpc, link)

    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    http_exporter = Http()
    return http_exporter, _watch_http(http_exporter, link)


def _watched_grpc(base: type[Any], link: _Link) -> tuple[Any, _Probe]:
    """An instance of the gRPC exporter class ``base`` whose stub reports each call to ``link``."""
    probe = _Probe()

    class Watched(base):  # type: ignore[misc]
        def _initialize_channel_and_stub(self) -> None:
            super()._initialize_channel_and_stub()
            self._client = _WatchedStub(self._client, link, probe)  # type: ignore[has-type]

    exporter = Watched(channel_options=_GRPC_CHANNEL_OPTIONS)
    probe.attach(getattr(exporter, "_shutdown_in_progress", None), lambda: bool(getattr(exporter, "_shutdown", False)))
    return exporter, probe


def _endpoint(exporter: Any) -> str:
    return str(getattr(exporter, "_endpoint", "") or "the collector")


class CountingSpanExporter:
    """Wraps predlog's OTLP span exporter: counts what was sent and lost, and says once
    when exports start failing."""

    def __init__(self, inner: Any, probe: _Probe, link: _Link, count: Callable[[str, int], None]) -> None:
        self._inner = inner
        self.probe = probe
        self._link = link
        self._count = count  # telemetry's counters: in_export, spans_exported, export_failed
        self._closed = False
        _quiet_loggers_of(inner)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        count = self._count
        n = len(spans)
        count("in_export", n)
        self.probe.begin(self._link.down)
        try:
            with _quiet():
                result = self._inner.export(spans)
        except Exception as exc:
            self._link.attempt(False, repr(exc)[:300])
            result = SpanExportResult.FAILURE
        finally:
            self.probe.end()
            count("in_export", -n)
        ok = result == SpanExportResult.SUCCESS
        count("spans_exported" if ok else "export_failed", n)
        if ok:
            self._link.attempt(True)
        else:
            self._link.failed(f"{n} spans", _endpoint(self._inner), "counting lost spans until it answers")
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _quiet():
            self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(getattr(self._inner, "force_flush", lambda *_: True)(timeout_millis))


class GuardedMetricExporter(MetricExporter):
    """Wraps predlog's OTLP metric exporter: stops for good when the collector says it does
    not take metrics, and says once when exports start failing."""

    def __init__(self, inner: Any, probe: _Probe, link: _Link) -> None:
        super().__init__(  # the wrapped exporter's preferences (private: see the module doc)
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self._inner = inner
        self.probe = probe
        self._link = link
        self._closed = False
        _quiet_loggers_of(inner)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self._link.refused is not None or self._closed:
            return MetricExportResult.SUCCESS  # nothing is sent any more: not a failure
        self.probe.begin(self._link.down)
        try:
            with _quiet():
                result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:
            self._link.attempt(False, repr(exc)[:300])
            result = MetricExportResult.FAILURE
        finally:
            self.probe.end()
        if self._link.refused is not None:
            logger.warning(
                "predlog: %s does not accept metrics (%s); predlog stops sending them from this process "
                "(spans are not affected; OTEL_METRICS_EXPORTER=none skips them from the start)",
                _endpoint(self._inner),
                self._link.refused,
            )
            self.shutdown()
            return MetricExportResult.FAILURE
        if result == MetricExportResult.SUCCESS:
            self._link.attempt(True)
        else:
            self._link.failed("metrics", _endpoint(self._inner), "trying again at each export interval")
        return MetricExportResult.SUCCESS if result == MetricExportResult.SUCCESS else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._closed:
            return
        self._closed = True
        with _quiet():
            self._inner.shutdown()


# ---------------------------------------------------------------- the pipeline


class OwnPipeline:
    """predlog's own OTLP providers (``otlp=True``): private, never installed globally."""

    def __init__(self, count: Callable[[str, int], None], *, traces: bool, metrics: bool) -> None:
        from opentelemetry.sdk.resources import Resource

        # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
        resource = Resource.create({})
        self.meter_provider: Any = None
        self.tracer_provider: Any = None
        self.span_processor: Any = None
        self._links: dict[str, _Link] = {}
        self._exporters: dict[str, Any] = {}
        self._outstanding: dict[str, threading.Thread] = {}
        if metrics:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            link = self._links["metrics"] = _Link("metrics")
            inner, probe = _metric_exporter(otlp_protocol("METRICS"), link)
            metric_exporter = self._exporters["metrics"] = GuardedMetricExporter(inner, probe, link)
            reader = PeriodicExportingMetricReader(metric_exporter)
            self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
        if traces:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            # OTEL_BSP_* variables tune the queue and batches; the defaults hold about a
            # quarter of a second at predlog's default span rate, so raise the queue.
            queue = int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "0") or 0) or 16_384
            link = self._links["traces"] = _Link("span")
            inner, probe = _span_exporter(otlp_protocol("TRACES"), link)
            span_exporter = self._exporters["traces"] = CountingSpanExporter(inner, probe, link, count)
            try:  # the processor reports its queue drops as metrics (opentelemetry-sdk >= 1.39)
                self.span_processor = BatchSpanProcessor(
                    span_exporter,  # type: ignore[arg-type]
                    max_queue_size=queue,
                    meter_provider=self.meter_provider,  # type: ignore[arg-type, unused-ignore]
                )
            except TypeError:
                self.span_processor = BatchSpanProcessor(span_exporter, max_queue_size=queue)  # type: ignore[arg-type]
            self.tracer_provider.add_span_processor(self.span_processor)

    def queued(self) -> int:
        inner = getattr(self.span_processor, "_batch_processor", None)
        q = getattr(inner, "_queue", None)
        return len(q) if q is not None else 0

    def _bounded(self, name: str, timeout_s: float) -> bool:
        """Run ``provider.<name>()`` for both providers side by side, waiting at most
        ``timeout_s`` in all.

        With the collector down the SDK's flush and shutdown block through every retry of
        every queued batch, whatever timeout they are given; predlog's must not. While they
        wait, exports make no retries (see ``_Probe``), and the calls run in daemon threads;
        at the end of a shutdown the exporters are closed, which ends what is still going on.
        """
        deadline = time.monotonic() + timeout_s
        running: list[tuple[threading.Thread, list[bool]]] = []
        ok = True
        with contextlib.ExitStack() as urgent:
            for signal, exporter in self._exporters.items():
                urgent.enter_context(exporter.probe.urgent(self._links[signal].down))
            for signal, provider in (("traces", self.tracer_provider), ("metrics", self.meter_provider)):
                if provider is None:
                    continue
                busy = self._outstanding.get(signal)
                if busy is not None and busy.is_alive() and name != "shutdown":
                    # The last flush is still stuck on a collector that is down: do not
                    # pile up threads, and do not make every flush wait out the outage.
                    ok = False
                    continue
                result: list[bool] = []
                thread = threading.Thread(
                    target=_call,
                    args=(provider, name, signal, timeout_s, result),
                    name=f"predlog-otlp-{name}-{signal}",
                    daemon=True,
                )
                self._outstanding[signal] = thread
                thread.start()
                running.append((thread, result))
            for thread, result in running:
                thread.join(max(0.0, deadline - time.monotonic()))
                ok = ok and not thread.is_alive() and bool(result and result[0])
        if name == "shutdown":
            for exporter in self._exporters.values():
                with contextlib.suppress(Exception):
                    exporter.shutdown()
        return ok

    def force_flush(self, timeout_s: float) -> bool:
        return self._bounded("force_flush", timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self._bounded("shutdown", timeout_s)


def _call(provider: Any, name: str, signal: str, timeout_s: float, result: list[bool]) -> None:
    try:
        if name == "force_flush":
            out = provider.force_flush(int(timeout_s * 1000))
        elif signal == "metrics":
            out = provider.shutdown(timeout_millis=timeout_s * 1000)
        else:
            out = provider.shutdown()
        result.append(out is not False)
    except Exception:  # a collector that is down must not break flush or shutdown
        logger.debug("predlog: OTLP %s of %s failed", name, signal, exc_info=True)
        result.append(False)
