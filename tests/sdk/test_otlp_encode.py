"""predlog's OTLP span encoder against opentelemetry's own, on the same spans."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from predlog._otlp_encode import encode_request

RESOURCES = [Resource.create({"service.name": "svc", "n": 3}), Resource.create({})]
SCOPES = [InstrumentationScope("predlog", "0.1.0"), InstrumentationScope("other"), None]

scalars = st.one_of(
    st.text(max_size=300),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=20),
)
values = st.one_of(scalars, st.lists(st.text(max_size=5), max_size=3), st.lists(st.integers(-5, 5), max_size=3))
attributes = st.dictionaries(st.text(min_size=1, max_size=20), values, max_size=8)
ids64 = st.integers(min_value=1, max_value=2**64 - 1)
ids128 = st.integers(min_value=1, max_value=2**128 - 1)
times = st.integers(min_value=0, max_value=2**63 - 1)


@st.composite
def spans(draw: Any) -> ReadableSpan:
    state = TraceState([("vendor", "x")]) if draw(st.booleans()) else None
    ctx = SpanContext(draw(ids128), draw(ids64), False, TraceFlags(1), trace_state=state)
    parent = draw(
        st.one_of(
            st.none(), st.builds(lambda t, s, r: SpanContext(t, s, r, TraceFlags(1)), ids128, ids64, st.booleans())
        )
    )
    events = draw(
        st.lists(
            st.builds(lambda n, a, t: Event(n, a, timestamp=t), st.text(max_size=10), attributes, times), max_size=2
        )
    )
    links = draw(
        st.lists(
            st.builds(
                lambda t, s, r, a: Link(SpanContext(t, s, r, TraceFlags(1)), a),
                ids128,
                ids64,
                st.booleans(),
                attributes,
            ),
            max_size=2,
        )
    )
    status = draw(
        st.sampled_from([Status(StatusCode.UNSET), Status(StatusCode.OK), Status(StatusCode.ERROR, "boom: é")])
    )
    return ReadableSpan(
        name=draw(st.text(max_size=40)),
        context=ctx,
        parent=parent,
        resource=draw(st.sampled_from(RESOURCES)),
        attributes=draw(attributes),
        events=events,
        links=links,
        kind=draw(st.sampled_from(list(SpanKind))),
        status=status,
        start_time=draw(times),
        end_time=draw(times),
        instrumentation_scope=draw(st.sampled_from(SCOPES)),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(spans(), min_size=1, max_size=6))
def test_same_message_as_opentelemetry(batch: list[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_request(batch))
    assert ours == encode_spans(batch)


def test_predlog_shaped_spans_repeated() -> None:
    # The caches (repeated attribute pairs, resource, scope) must not leak one span into another.
    resource, scope = RESOURCES[0], SCOPES[0]
    batch = []
    for i in range(2000):
        attrs = {
            "predlog.model": f"m{i % 3}",
            "predlog.model_version": "1",
            "predlog.status": "ok" if i % 7 else "error",
            "predlog.latency_ms": i / 7,
            "predlog.store": "/s",
            "predlog.prediction_id": f"id-{i}",
            "enduser.id": f"u{i % 50}",
        }
        ctx = SpanContext(i + 1, i + 1, False, TraceFlags(1))
        batch.append(
            ReadableSpan(
                name=f"predict m{i % 3}",
                context=ctx,
                parent=None,
                resource=resource,
                attributes=attrs,
                kind=SpanKind.INTERNAL,
                status=Status(StatusCode.UNSET),
                start_time=i,
                end_time=i + 1,
                instrumentation_scope=scope,
            )
        )
    for part in (batch[:512], batch[512:]):
        assert ExportTraceServiceRequest.FromString(encode_request(part)) == encode_spans(part)
