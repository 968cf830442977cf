"""What the request thread hands to the writer: records, as plain tuples with named positions.

A prediction record is the cheapest thing to build on the request thread, a tuple::

    (spec, args, kwargs, output, exc, t0_ns, t1_ns, cpu_ns, ctx, seq, otel)

read by the names below (``rec[T0]``). ``cpu_ns`` is -1 when the CPU clock was not read for
the call; ``otel`` is None (no tracing), the caller's OpenTelemetry context (the writer makes
the span) or, under ``nest_spans``, the span started around the call (the writer ends it).

A label record is ``(LABEL, prediction_id, request_id, label, extra, ts_ns)``; a call kept
only for its span (sampled out of Parquet) is ``(SPAN_ONLY, record)``; a table of imported
history (``log_frame``, ``log_labels``), already in the store's predictions or labels schema,
is ``(TABLE, table, labels)``. The first element tells them apart: a :class:`Spec` for
predictions, a marker otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "ARGS",
    "ASYNC_KINDS",
    "CPU",
    "CTX",
    "EXC",
    "KWARGS",
    "LABEL",
    "L_EXTRA",
    "L_LABEL",
    "L_PREDICTION_ID",
    "L_REQUEST_ID",
    "L_TS",
    "OTEL",
    "OUTPUT",
    "Record",
    "SEQ",
    "SPAN_ONLY",
    "SPEC",
    "Spec",
    "TABLE",
    "TB_LABELS",
    "TB_TABLE",
    "T0",
    "T1",
]

Record = tuple[Any, ...]

# A prediction record, by position.
SPEC, ARGS, KWARGS, OUTPUT, EXC, T0, T1, CPU, CTX, SEQ, OTEL = range(11)

# A label record, by position (LABEL first).
L_PREDICTION_ID, L_REQUEST_ID, L_LABEL, L_EXTRA, L_TS = range(1, 6)

# A table record, by position (TABLE first): a pyarrow Table, and whether it holds labels.
TB_TABLE, TB_LABELS = range(1, 3)

ASYNC_KINDS = frozenset({"async", "asyncgen"})


class _Marker:
    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return self.kind.upper()


LABEL = _Marker("label")
"""The head of a label record."""

SPAN_ONLY = _Marker("span_only")
"""The head of ``(SPAN_ONLY, record)``: a call sampled out of Parquet, kept for its span."""

TABLE = _Marker("table")
"""The head of ``(TABLE, table, labels)``: rows of imported history, built in the caller's thread."""


class Spec(Protocol):
    """What the writer reads of a decorated function (a ``FunctionSpec``)."""

    fn: Callable[..., Any]
    name: str
    model: str
    version: str
    sample_rate: float
    kind: str  # "sync", "async", "gen" or "asyncgen"
    features: str | Callable[..., Any] | None
    feature_names: tuple[str, ...] | None
    prediction: Callable[[Any], Any] | None
    confidence: Callable[[Any], Any] | str | None
    skip_self: int
    signature: inspect.Signature | None

    def observe_latency(self, median_ns: float) -> None: ...
