"""OpenTelemetry: a span per prediction, and predlog's counters as metrics.

The request thread only reads the caller's OpenTelemetry context (one context-variable
read). The writer builds the span afterwards from that parent, the call's own timestamps and
the converted row, and writes the span's ids into the row, so a trace points at the row and
the row at the trace. With ``nest_spans=True`` the span is started on the request thread
instead (spans made inside predict nest under it) and finished by the writer.

With an SDK ``TracerProvider`` the writer hands finished ``ReadableSpan`` objects straight to
the provider's span processors: it honours the provider's sampler, id generator and resource,
but skips the live-span machinery (attribute locks, ``on_start``) that makes a span cost
tens of microseconds. Other providers get spans through the public API.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._health import Health
from ._record import EXC, OTEL, SPEC, T0, T1
from ._version import version

if TYPE_CHECKING:
    import pyarrow as pa

    from ._config import Config
    from ._otlp import OwnPipeline

logger = logging.getLogger("predlog")

__all__ = ["SPAN_DROP_REASONS", "Telemetry", "is_batch_table", "parent_getter"]

SPAN_DROP_REASONS = ("rate", "queue_full", "export_failed", "error")
_INSTRUMENTATION = "predlog"
_PAYLOAD_CHARS = 4096
_MESSAGE_CHARS = 1024


def parent_getter() -> Callable[[], Any] | None:
    """A function returning the caller's OpenTelemetry context, as cheap as can be.

    OpenTelemetry keeps the current context in a ``contextvars.ContextVar`` by default;
    reading it directly costs one C call, where ``context.get_current()`` costs three
    Python calls. Any other runtime context falls back to the public function.
    """
    try:
        import contextvars

        from opentelemetry import context as otel_context
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
        return None
    # Private: the ContextVar behind the default runtime context (one C call instead of
    # three Python calls per predict); any other runtime gets the public get_current.
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if isinstance(var, contextvars.ContextVar):
        return var.get
    return otel_context.get_current


class _TokenBucket:
    """At most ``rate`` spans a second on average, in bursts of up to two seconds' worth
    (the writer takes a second of calls at a time, and a late cycle takes more)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(2.0 * rate, 1.0)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self, n: int) -> int:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        got = min(n, int(self.tokens))
        self.tokens -= got
        return got


def exporter_wanted(signal: str) -> bool:
    """Whether ``OTEL_<signal>_EXPORTER`` lets predlog's own pipeline export ``signal``.

    Unset or empty means ``otlp``; a list that names ``otlp`` (``otlp,console``) means on;
    ``none`` means off. predlog's own pipeline speaks only OTLP: any other value turns
    it off for that signal, with a warning (send predlog's spans or metrics through a
    provider of yours with ``tracer_provider=`` / ``meter_provider=`` instead).
    """
    name = f"OTEL_{signal}_EXPORTER"
    raw = os.environ.get(name, "")
    values = {v.strip().lower() for v in raw.split(",") if v.strip()}
    if not values or "otlp" in values:
        return True
    if values != {"none"} and (name, raw) not in _WARNED_EXPORTERS:
        _WARNED_EXPORTERS.add((name, raw))
        logger.warning(
            "predlog: %s=%s: predlog's own pipeline (otlp=True) exports only over OTLP, so it sends no %s; "
            "pass tracer_provider= / meter_provider= to send them through a provider of yours",
            name,
            raw,
            signal.lower(),
        )
    return False


_WARNED_EXPORTERS: set[tuple[str, str]] = set()


class _Direct:
    """Finished spans straight into an SDK TracerProvider's processors (see module doc)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

        # Private, and the only way to hand a finished span to the provider's processors
        # without the live-span machinery; providers without it take the public path.
        self.processor = provider._active_span_processor
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.resource = provider.resource
        self.scope = InstrumentationScope(_INSTRUMENTATION, version())
        self.ReadableSpan = ReadableSpan
        self.SpanContext = SpanContext
        self.kind = SpanKind.INTERNAL
        self.flags = (TraceFlags(TraceFlags.DEFAULT), TraceFlags(TraceFlags.SAMPLED))

    @staticmethod
    def usable(provider: Any) -> bool:
        try:
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError:  # pragma: no cover
            return False
        return isinstance(provider, TracerProvider) and all(
            hasattr(provider, a) for a in ("_active_span_processor", "sampler", "id_generator", "resource")
        )


_COUNTERS = (
    ("predlog.predictions.captured", "{prediction}", "Calls that passed sampling"),
    ("predlog.predictions.written", "{prediction}", "Calls whose rows reached the write-ahead segment"),
    ("predlog.predictions.dropped", "{prediction}", "Calls lost, by reason"),
    ("predlog.rows.written", "{row}", "Rows written to the write-ahead segment"),
    ("predlog.rows.sealed", "{row}", "Rows sealed into Parquet"),
    ("predlog.files.written", "{file}", "Parquet files written"),
    ("predlog.labels.written", "{label}", "Label rows written"),
    ("predlog.failures", "{failure}", "Internal errors (counted, serving continued)"),
    ("predlog.spans", "{span}", "Spans made"),
    ("predlog.spans.dropped", "{span}", "Spans not made or not delivered, by reason"),
)


class _Instruments:
    """predlog's instruments on one meter provider, observing every recorder that uses it.

    A meter hands back the first instrument registered under a name, so recorders sharing
    a provider share the instruments; each reports its counters labelled with its store.
    """

    _by_provider: dict[int, _Instruments] = {}
    _lock = threading.Lock()

    def __init__(self, provider: Any) -> None:
        from opentelemetry.metrics import Observation

        self.provider = provider
        self.members: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        meter = provider.get_meter(_INSTRUMENTATION, version())

        def callback(name: str) -> Callable[[Any], list[Observation]]:
            def observe(_options: Any) -> list[Observation]:
                out: list[Observation] = []
                for member in list(self.members):
                    if member._metrics_for is not provider:  # reconfigured, or a forked copy
                        continue
                    try:
                        out.extend(Observation(v, a) for v, a in member.observations()[name])
                    except Exception:
                        continue
                return out

            return observe

        for name, unit, description in _COUNTERS:
            meter.create_observable_counter(name, [callback(name)], unit=unit, description=description)
        meter.create_observable_up_down_counter(
            "predlog.queue.depth",
            [callback("predlog.queue.depth")],
            unit="{record}",
            description="Records waiting for the writer",
        )
        self.histogram = meter.create_histogram(
            "predlog.prediction.latency",
            unit="ms",
            description="Wall time of predict calls",
        )

    @classmethod
    def of(cls, provider: Any) -> _Instruments:
        with cls._lock:
            found = cls._by_provider.get(id(provider))
            if found is None or found.provider is not provider:
                found = cls._by_provider[id(provider)] = cls(provider)
            return found


_Call = tuple[Any, dict[str, Any], "BaseException | None", int, int, str]
"""What a span is made of: the parent context, attributes, the exception, start and end (ns), model."""


class Telemetry:
    """Spans and metrics of one recorder. Spans are made in the writer thread only."""

    def __init__(self, health: Health, stats: Callable[[], dict[str, Any]], config: Config) -> None:
        self._health = health
        self._stats = stats  # the recorder's stats(), for the metrics it reports
        self._config = config
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._own: OwnPipeline | None = None
        self._bucket: _TokenBucket | None = None
        self._direct: tuple[Any, _Direct | None] | None = None
        self._tracer: tuple[Any, Any] | None = None
        self._metrics_for: Any = None
        self._histogram: Any = None
        self._hist_attrs: dict[tuple[str, str], dict[str, str]] = {}
        self._own_traces = False
        self._own_metrics = False
        self._built = True
        # Whether spans have somewhere to go: read on the request thread (sampled-out calls
        # are queued for their span only when they do); kept fresh by the writer.
        self.active = False

    # ----------------------------------------------------------- bookkeeping

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = dict(self._counts)
        handed = c.get("spans_handed", 0)
        dropped = {r: 0 for r in SPAN_DROP_REASONS}
        dropped["rate"] = c.get("rate", 0)
        dropped["error"] = c.get("span_error", 0)
        dropped["export_failed"] = c.get("export_failed", 0)
        # Earlier pipelines' queue losses (kept at their shutdown), plus this one's: what its
        # batch processor took but neither sent, failed to send, nor holds.
        dropped["queue_full"] = c.get("queue_full_final", 0)
        own = self._own
        if own is not None and own.span_processor is not None:
            failed_here = dropped["export_failed"] - c.get("export_failed_base", 0)
            settled = c.get("spans_exported", 0) + failed_here + c.get("in_export", 0) + own.queued()
            dropped["queue_full"] += max(0, handed - settled)
        return {"spans": c.get("spans", 0), "spans_dropped": dropped}

    # ----------------------------------------------------------- configuration

    def configure(self, cfg: Config, *, build: bool = True) -> None:
        """Called when the recorder's configuration changes (and in a forked child).

        ``build=False`` defers setting up predlog's own OTLP pipeline to the writer thread
        (at import time, and in a forked child, whose parent's exporter threads are gone).
        """
        old, self._own = self._own, None
        if old is not None:
            old.shutdown()
        self._config = cfg
        self._bucket = _TokenBucket(cfg.max_spans_per_s)
        self._direct = None
        self._tracer = None
        self._metrics_for = None
        self._histogram = None
        self._hist_attrs = {}
        # OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER=none: as without otlp=True for that signal.
        self._own_traces = cfg.otlp and cfg.tracing and cfg.tracer_provider is None and exporter_wanted("TRACES")
        self._own_metrics = cfg.otlp and cfg.metrics and cfg.meter_provider is None and exporter_wanted("METRICS")
        self._built = not (self._own_traces or self._own_metrics)
        if build:
            self.ensure()
        self.refresh()

    def refresh(self) -> None:
        """Recompute ``active`` (an application may install its provider at any time)."""
        try:
            self.active = self._own_traces or self.tracer_provider() is not None
        except Exception:
            self.active = False

    def ensure(self) -> None:
        """Build predlog's own OTLP pipeline if it is wanted and not built yet."""
        if self._built:
            return
        with self._lock:
            if self._built:
                return
            try:
                from ._otlp import OwnPipeline

                self._own = OwnPipeline(self._count, traces=self._own_traces, metrics=self._own_metrics)
            except ImportError as exc:
                logger.warning(
                    "predlog: otlp=True needs the OTLP exporter (pip install 'predlog[otlp]'): %s; "
                    "spans and metrics are off",
                    exc,
                )
            except Exception:
                logger.warning("predlog: could not set up OTLP export; spans and metrics are off", exc_info=True)
            self._built = True

    def prepare(self) -> None:
        """Build predlog's own pipeline, and join its meter, now rather than in the writer."""
        self.ensure()
        own = self._own
        if own is not None and own.meter_provider is not None:
            self.setup_metrics()

    def after_fork_in_child(self, cfg: Config) -> None:
        # The parent's exporter threads and channels do not exist here; build new ones.
        # (The SDK restarts the old providers' threads in the child; they are left idle:
        # no span goes to them, and the metric callbacks answer only the current provider.)
        self._own = None
        self._lock = threading.Lock()
        self._counts = {}
        self.configure(cfg, build=False)

    def force_flush(self, timeout_s: float) -> bool:
        own = self._own
        return own.force_flush(timeout_s) if own is not None else True

    def shutdown(self, timeout_s: float = 5.0) -> None:
        own = self._own
        if own is not None:
            own.shutdown(timeout_s)
            lost = self.stats()["spans_dropped"]["queue_full"]  # the final count, kept
            self._own = None
            with self._lock:
                self._counts["queue_full_final"] = lost
                for key in ("spans_handed", "spans_exported", "in_export"):
                    self._counts.pop(key, None)
                self._counts["export_failed_base"] = self._counts.get("export_failed", 0)
        self._built = not (self._own_traces or self._own_metrics)

    def tracer_provider(self) -> Any:
        """The provider spans go to, or None when nobody installed one (no spans then)."""
        cfg = self._config
        if not cfg.tracing:
            return None
        if cfg.tracer_provider is not None:
            return cfg.tracer_provider
        if self._own is not None and self._own.tracer_provider is not None:
            return self._own.tracer_provider
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
        return provider

    def tracer(self) -> Any:
        provider = self.tracer_provider()
        if provider is None:
            return None
        cached = self._tracer
        if cached is None or cached[0] is not provider:
            cached = self._tracer = (provider, provider.get_tracer(_INSTRUMENTATION, version()))
        return cached[1]

    def _direct_for(self, provider: Any) -> _Direct | None:
        cached = self._direct
        if cached is not None and cached[0] is provider:
            return cached[1]
        direct = _Direct(provider) if _Direct.usable(provider) else None
        self._direct = (provider, direct)  # also "not an SDK provider": asked once per provider
        return direct

    # ----------------------------------------------------------- spans

    def annotate(self, table: pa.Table, recs: Sequence[tuple[Any, ...]]) -> pa.Table:
        """Make the spans of the calls in ``table`` and write their ids into its rows.

        ``recs`` are the records the table was built from: one per row for single calls,
        or one batch call for all rows. Runs in the writer; never raises.
        """
        provider = self.tracer_provider()
        if provider is None:
            self.abandon(recs)  # nest_spans spans whose provider went away
            return table
        try:
            return self._annotate(provider, table, recs)
        except Exception:
            self._count("span_error", len(recs))
            self._health.internal_error("spans")
            return table

    def abandon(self, recs: Sequence[tuple[Any, ...]]) -> None:
        """End the nest_spans spans of calls that will have no row (dropped, or no provider).

        The span still describes the call; it is marked ``predlog.recorded = False`` so no
        one looks for its row. Never raises.
        """
        for rec in recs:
            span = rec[OTEL] if len(rec) > OTEL else None
            if span is None or isinstance(span, dict):
                continue
            try:
                if span.is_recording():
                    span.set_attribute("predlog.recorded", False)
                    span.end(end_time=rec[T1])
            except Exception:
                self._count("span_error")

    def _annotate(self, provider: Any, table: pa.Table, recs: Sequence[tuple[Any, ...]]) -> pa.Table:
        import pyarrow as pa

        cfg = self._config
        n_calls = len(recs)
        allowed = self._bucket.take(n_calls) if self._bucket is not None else n_calls
        if allowed < n_calls:
            self._count("rate", n_calls - allowed)
        batch = n_calls == 1 and is_batch_table(table)
        cols = {
            name: table.column(name).to_pylist()
            for name in (
                "prediction_id",
                "user_id",
                "status",
                "error_type",
                "error_message",
                "confidence",
                "latency_ms",
                "batch_id",
                "batch_size",
                "model",
                "model_version",
            )
        }
        payload = self._payloads(table) if cfg.span_payload else None
        store = os.path.abspath(cfg.store)
        direct = self._direct_for(provider)
        tracer = None if direct is not None else self.tracer()
        trace_ids: list[str | None] = [None] * n_calls
        span_ids: list[str | None] = [None] * n_calls
        made = 0
        for i, rec in enumerate(recs):
            otel = rec[OTEL]
            live = otel if otel is not None and not isinstance(otel, dict) else None
            if i >= allowed and live is None:
                continue
            row = 0 if batch else i
            attrs = _attributes(cols, row, batch, store)
            if payload is not None:
                attrs["predlog.features"], attrs["predlog.prediction"] = payload[row]
            exc = rec[EXC]
            try:
                if live is not None:
                    ids = _finish_live(live, attrs, exc, rec[T1])
                    if ids is not None and ids[1] is not None and self._own is not None:
                        self._count("spans_handed")
                elif direct is not None:
                    ids = self._direct_span(direct, (otel, attrs, exc, rec[T0], rec[T1], cols["model"][row]))
                else:
                    ids = _api_span(tracer, (otel, attrs, exc, rec[T0], rec[T1], cols["model"][row]))
            except Exception:  # one span (a processor's on_end, say) must not cost the others
                self._count("span_error")
                self._health.internal_error("span")
                continue
            if ids is not None:
                trace_ids[i], span_ids[i] = ids
                if ids[1] is not None:
                    made += 1
        self._count("spans", made)
        if not made and not any(trace_ids):
            return table
        if batch:
            n = table.num_rows
            tid = pa.repeat(pa.scalar(trace_ids[0], pa.string()), n)
            sid = pa.repeat(pa.scalar(span_ids[0], pa.string()), n)
        else:
            tid = pa.array(trace_ids, type=pa.string())
            sid = pa.array(span_ids, type=pa.string())
        table = table.set_column(table.schema.get_field_index("trace_id"), "trace_id", tid)
        return table.set_column(table.schema.get_field_index("span_id"), "span_id", sid)

    def _direct_span(self, d: _Direct, call: _Call) -> tuple[str | None, str | None] | None:
        parent_ctx, attrs, exc, t0, t1, model = call
        from opentelemetry import trace

        parent = trace.get_current_span(parent_ctx).get_span_context() if parent_ctx is not None else None
        if parent is not None and not parent.is_valid:
            parent = None
        trace_id = parent.trace_id if parent is not None else d.ids.generate_trace_id()
        name = f"predict {model}"
        result = d.sampler.should_sample(parent_ctx, trace_id, name, d.kind, attrs, None)
        if not result.decision.is_recording():
            return (f"{parent.trace_id:032x}", None) if parent is not None else None
        if result.attributes:
            attrs = {**attrs, **result.attributes}
        ctx = d.SpanContext(
            trace_id,
            d.ids.generate_span_id(),
            is_remote=False,
            trace_flags=d.flags[bool(result.decision.is_sampled())],
            trace_state=result.trace_state,
        )
        status, events = _status_events(exc, t1)
        span = d.ReadableSpan(
            name=name,
            context=ctx,
            parent=parent,
            resource=d.resource,
            attributes=attrs,
            events=events,
            kind=d.kind,
            status=status,
            start_time=t0,
            end_time=t1,
            instrumentation_scope=d.scope,
        )
        d.processor.on_end(span)
        if ctx.trace_flags.sampled:
            self._count("spans_handed")
        return f"{trace_id:032x}", f"{ctx.span_id:016x}"

    def span_only(self, recs: Sequence[tuple[Any, ...]], pipeline: Any, *, table: Any = None) -> None:
        """Spans for calls that have no row in Parquet (sampled out, or dropped by a processor).

        ``table`` holds their rows when the caller has them (after the built-in
        processors); otherwise they are converted here and ``pipeline``'s built-ins
        (hashing, redaction) applied, so a span never carries what a row would not.
        """
        provider = self.tracer_provider()
        if provider is None:
            self.abandon(recs)
            return
        try:
            import pyarrow as pa

            if table is not None:
                self._annotate(provider, _sampled_out(table, pa), recs)
                return
            from ._columns import Flags
            from ._convert import records_to_table

            cfg = self._config
            for part_table, part in records_to_table(list(recs), Flags(), cfg.max_value_bytes):
                if pipeline is not None:
                    part_table = pipeline.apply_builtin(part_table)
                self._annotate(provider, _sampled_out(part_table, pa), part)
        except Exception:
            self._count("span_error", len(recs))
            self.abandon(recs)
            self._health.internal_error("spans")

    def _payloads(self, table: pa.Table) -> list[tuple[str, str]]:
        feats = table.column("features").to_pylist()
        preds = table.column("prediction").to_pylist()
        return [(_json(f), _json(p)) for f, p in zip(feats, preds)]

    # ----------------------------------------------------------- metrics

    def setup_metrics(self) -> None:
        """Join the instruments of the meter provider in use (shared by every recorder on it)."""
        cfg = self._config
        if not cfg.metrics:
            return
        if cfg.meter_provider is not None:
            provider = cfg.meter_provider
        elif self._own is not None and self._own.meter_provider is not None:
            provider = self._own.meter_provider
        else:
            from opentelemetry import metrics

            provider = metrics.get_meter_provider()  # a proxy until the application sets one
        if self._metrics_for is provider:
            return
        instruments = _Instruments.of(provider)
        instruments.members.add(self)
        self._metrics_for = provider
        self._histogram = instruments.histogram
        self._hist_attrs = {}

    def observations(self) -> dict[str, list[tuple[int, dict[str, Any]]]]:
        """This recorder's counters, by instrument name, labelled with its store."""
        s = self._stats()
        store = {"predlog.store": os.path.abspath(self._config.store)}

        def one(v: int, **attrs: Any) -> tuple[int, dict[str, Any]]:
            return v, {**store, **attrs}

        return {
            "predlog.predictions.captured": [one(s["captured"])],
            "predlog.predictions.written": [one(s["written"])],
            "predlog.predictions.dropped": [one(v, reason=k) for k, v in s["dropped"].items()],
            "predlog.rows.written": [one(s["rows_written"])],
            "predlog.rows.sealed": [one(s["sealed_rows"])],
            "predlog.files.written": [one(s["files"])],
            "predlog.labels.written": [one(s["labels"])],
            "predlog.failures": [one(s["failed"])],
            "predlog.queue.depth": [one(s["queue_depth"])],
            "predlog.spans": [one(s["spans"])],
            "predlog.spans.dropped": [one(v, reason=k) for k, v in s["spans_dropped"].items()],
        }

    def record_latency(self, recs: Sequence[tuple[Any, ...]]) -> None:
        hist = self._histogram
        if hist is None:
            return
        record = hist.record
        attrs = self._hist_attrs
        for rec in recs:
            spec = rec[SPEC]
            key = (spec.model, spec.version)
            a = attrs.get(key)
            if a is None:
                a = attrs[key] = {"predlog.model": spec.model, "predlog.model_version": spec.version}
            record((rec[T1] - rec[T0]) / 1e6, a)


def is_batch_table(table: pa.Table) -> bool:
    """Whether ``table`` holds the rows of one batch call (they share a batch_id)."""
    return bool(table.column("batch_id").null_count < table.num_rows)


def _sampled_out(table: pa.Table, pa: Any) -> pa.Table:
    # The span of a call not kept in Parquet must not point at a row that does not exist.
    i = table.schema.get_field_index("prediction_id")
    return table.set_column(i, "prediction_id", pa.nulls(table.num_rows, pa.string()))


def _attributes(cols: dict[str, list[Any]], row: int, batch: bool, store: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "predlog.model": cols["model"][row],
        "predlog.model_version": cols["model_version"][row],
        "predlog.status": cols["status"][row],
        "predlog.latency_ms": cols["latency_ms"][row],
        "predlog.store": store,
    }
    if batch:
        attrs["predlog.batch_id"] = cols["batch_id"][row]
        attrs["predlog.batch_size"] = cols["batch_size"][row]
    elif cols["prediction_id"][row] is not None:
        attrs["predlog.prediction_id"] = cols["prediction_id"][row]
    error_type = cols["error_type"][row]
    if error_type is not None:
        attrs["error.type"] = error_type
    confidence = cols["confidence"][row]
    if confidence is not None and not batch:
        attrs["predlog.confidence"] = confidence
    user = cols["user_id"][row]
    if user is not None:
        attrs["enduser.id"] = user
    return attrs


def _status_events(exc: BaseException | None, t1: int) -> tuple[Any, tuple[Any, ...]]:
    from opentelemetry.sdk.trace import Event
    from opentelemetry.trace import Status, StatusCode

    if exc is None:
        return Status(StatusCode.UNSET), ()
    etype = type(exc)
    name = etype.__qualname__ if etype.__module__ == "builtins" else f"{etype.__module__}.{etype.__qualname__}"
    try:
        message = str(exc)[:_MESSAGE_CHARS]
    except Exception:
        message = ""
    stack = "".join(traceback.format_exception(etype, exc, exc.__traceback__))[-8192:]
    event = Event(
        "exception",
        {
            "exception.type": name,
            "exception.message": message,
            "exception.stacktrace": stack,
            "exception.escaped": True,
        },
        timestamp=t1,
    )
    return Status(StatusCode.ERROR, f"{name}: {message}"), (event,)


def _api_span(tracer: Any, call: _Call) -> tuple[str | None, str | None] | None:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    parent_ctx, attrs, exc, t0, t1, model = call

    span = tracer.start_span(
        f"predict {model}", context=parent_ctx, kind=SpanKind.INTERNAL, attributes=attrs, start_time=t0
    )
    if exc is not None:
        span.record_exception(exc, timestamp=t1, escaped=True)
        span.set_status(Status(StatusCode.ERROR, f"{attrs.get('error.type')}: {str(exc)[:_MESSAGE_CHARS]}"))
    span.end(end_time=t1)
    return _ids_of(span)


def _finish_live(
    span: Any, attrs: dict[str, Any], exc: BaseException | None, t1: int
) -> tuple[str | None, str | None] | None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attributes(attrs)
    if exc is not None:
        span.record_exception(exc, timestamp=t1, escaped=True)
        span.set_status(Status(StatusCode.ERROR, f"{attrs.get('error.type')}: {str(exc)[:_MESSAGE_CHARS]}"))
    span.end(end_time=t1)
    return _ids_of(span)


def _ids_of(span: Any) -> tuple[str | None, str | None] | None:
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    return f"{sc.trace_id:032x}", (f"{sc.span_id:016x}" if sc.trace_flags.sampled or span.is_recording() else None)


def _json(value: Any) -> str:
    try:
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    except Exception:
        text = repr(value)
    return text if len(text) <= _PAYLOAD_CHARS else text[: _PAYLOAD_CHARS - 1] + "…"
