"""Where predlog reads a private OpenTelemetry name, a library without it gives the public
behaviour, never an error (sdk/_otel.py and the table in sdk/_otlp.py's module doc)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import predlog
from predlog import _otel, _otlp


class Delegating:
    """A TracerProvider that is not the SDK's: it hands out the SDK provider's tracers."""

    def __init__(self, inner: TracerProvider) -> None:
        self.inner = inner

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.get_tracer(*args, **kwargs)


def test_spans_of_a_provider_without_the_private_processor_take_the_public_path(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    provider = Delegating(sdk)
    assert not _otel._Direct.usable(provider)  # noqa: SLF001 - the fallback under test
    rec = predlog.Recorder(store=str(tmp_path), model="m", tracer_provider=provider, metrics=False)
    try:
        parent = sdk.get_tracer("app").start_span("request")
        with trace.use_span(parent, end_on_exit=True):
            rec.capture(lambda x: 1)({"a": 1})
        assert rec.flush(timeout_s=30)
    finally:
        rec.shutdown()
    spans = [s for s in exporter.get_finished_spans() if s.name == "predict m"]
    assert len(spans) == 1 and spans[0].parent is not None
    assert spans[0].parent.span_id == parent.get_span_context().span_id
    assert rec.stats()["spans"] == 1


def test_the_parent_context_is_read_publicly_under_another_runtime_context(monkeypatch: pytest.MonkeyPatch) -> None:
    class Runtime:  # a runtime context without the private ContextVar
        def get_current(self) -> Any:
            return otel_context.Context({"marker": 1})

    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", Runtime())
    getter = _otel.parent_getter()
    assert getter is otel_context.get_current
    assert getter().get("marker") == 1


class Bare:
    """An exporter without any of the private names predlog looks for."""

    def export(self, data: Any, *args: Any) -> Any:
        return None


class BareGrpc(Bare):
    """A gRPC exporter without shutdown events or a stub to watch."""

    def __init__(self, channel_options: Any = None) -> None:
        self.channel_options = channel_options


def test_exporters_without_the_private_names_are_used_as_they_are() -> None:
    link = _otlp._Link("span")  # noqa: SLF001
    probe = _otlp._watch_http(Bare(), link)  # noqa: SLF001 - no _client: nothing is watched
    assert isinstance(probe, _otlp._Probe)  # noqa: SLF001
    exporter, probe = _otlp._watched_grpc(BareGrpc, link)  # noqa: SLF001 - no shutdown events
    assert isinstance(exporter, BareGrpc)
    _otlp._quiet_loggers_of(Bare())  # noqa: SLF001 - no client logger: nothing to quiet
    assert _otlp._endpoint(Bare()) == "the collector"  # noqa: SLF001
    guarded = _otlp.GuardedMetricExporter(Bare(), _otlp._Probe(), link)  # noqa: SLF001 - default preferences
    assert guarded is not None


def test_a_span_processor_without_a_visible_queue_counts_none_queued() -> None:
    pipeline = object.__new__(_otlp.OwnPipeline)
    pipeline.span_processor = SimpleSpanProcessor(InMemorySpanExporter())
    assert pipeline.queued() == 0
