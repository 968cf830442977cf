"""Stores for the analysis tests, written by the SDK from DataFrames of past predictions.

``write_store(path, frame, ...)`` turns a frame (one row per prediction, with a ``ts`` column
of past times) into the writer's Arrow frame, writes it into a write-ahead segment with the
SDK's segment writer and seals it into the store with the SDK's sealer: the files are those a
recorder would have written, in the date partitions of the rows' own days.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from predlog._ids import uuid7_array
from predlog._sealing import ensure_store, seal_segment
from predlog._segment import KIND_PREDICTIONS, SegmentWriter, encode_frame

_STEMS = itertools.count()


def _column(values: pd.Series) -> pa.Array:
    """A frame column as Arrow: in number and object columns NaN stays NaN and None is null;
    in string columns a missing value is null."""
    if values.dtype == object:
        return pa.array(values.tolist(), from_pandas=False)
    if pd.api.types.is_numeric_dtype(values):
        return pa.array(values.to_numpy(), from_pandas=False)
    return pa.array(values, from_pandas=True)


def write_store(
    path: str | Path,
    frame: pd.DataFrame,
    *,
    model: str = "m",
    version: str = "1.0",
    features: Sequence[str] | None = None,
    prediction: str = "prediction",
    confidence: str | None = None,
    sample_rate: str | None = None,
    chunk_rows: int = 50_000,
) -> str:
    """Write ``frame``'s rows as predictions of ``model`` into the store at ``path``.

    ``frame`` has ``ts`` (datetimes, UTC) and the ``prediction`` column; ``features`` name the
    feature columns (default: every column no other argument names); ``confidence`` and
    ``sample_rate`` name those columns, if any. Float NaN stays NaN, None is null.
    """
    ensure_store(str(path))
    ts = pd.to_datetime(frame["ts"], utc=True)
    ts_us = ts.to_numpy(dtype="datetime64[us]").astype(np.int64)
    named = {"ts", prediction, confidence, sample_rate}
    features = [c for c in frame.columns if c not in named] if features is None else list(features)
    n = len(frame)
    data, _ = uuid7_array(ts_us * 1000, np.arange(n, dtype=np.uint64), None)
    offsets = np.arange(0, (n + 1) * 36, 36, dtype=np.int32)
    ids = pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))

    def rep(value: Any, typ: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, typ), n) if value is not None else pa.nulls(n, typ)

    table = pa.table(
        {
            "prediction_id": ids,
            "ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "model": rep(model, pa.string()),
            "model_version": rep(version, pa.string()),
            "latency_ms": rep(1.0, pa.float64()),
            "cpu_ms": rep(None, pa.float64()),
            "status": rep("ok", pa.string()),
            "error_type": rep(None, pa.string()),
            "error_message": rep(None, pa.string()),
            "request_id": rep(None, pa.string()),
            "user_id": rep(None, pa.string()),
            "batch_id": rep(None, pa.string()),
            "batch_index": rep(None, pa.int32()),
            "batch_size": rep(None, pa.int32()),
            "trace_id": rep(None, pa.string()),
            "span_id": rep(None, pa.string()),
            "features": pa.StructArray.from_arrays([_column(frame[c]) for c in features], names=list(features))
            if features
            else rep(None, pa.struct([])),
            "prediction": _column(frame[prediction]),
            "confidence": _column(frame[confidence]) if confidence else rep(None, pa.float64()),
            "context": rep(None, pa.struct([("source", pa.string())])),
            "sample_rate": _column(frame[sample_rate]).cast(pa.float64()) if sample_rate else rep(1.0, pa.float64()),
            "capture_flags": rep(None, pa.list_(pa.string())),
        }
    )
    segment = os.path.join(str(path), "_wal", f"analysis-{os.getpid()}-{next(_STEMS):016x}.arrows")
    writer = SegmentWriter(segment)
    for lo in range(0, n, chunk_rows):
        part = table.slice(lo, chunk_rows)
        writer.append(encode_frame(KIND_PREDICTIONS, part), part.num_rows)
    writer.sync()
    writer.close()
    seal_segment(str(path), segment)
    return str(path)


def hourly(start: str, rows: int, per_hour: int, seed: int = 0) -> pd.Series:
    """``rows`` times from ``start`` (UTC), ``per_hour`` an hour at random minutes, in order."""
    rng = np.random.default_rng(seed)
    hours = np.arange(rows) // per_hour
    offsets = hours * 3_600_000_000 + rng.integers(0, 3_600_000_000, size=rows)
    t0 = pd.Timestamp(start, tz="UTC")
    return pd.Series(t0 + pd.to_timedelta(np.sort(offsets), unit="us"))


@pytest.fixture(scope="session")
def store_writer() -> Any:
    """:func:`write_store`, for test modules (and their module-scoped fixtures)."""
    return write_store
