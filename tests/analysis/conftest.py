"""Stores written by the SDK for the analysis tests: predictions at chosen past times, labels
logged later.

:func:`log_history` records real calls of a decorated predict function through a
``predlog.Recorder`` (batch calls, or one call per row with sampling), then moves each row to
the time the test gives it: the sealed file is read back as the writer's frame, its ``ts``
replaced, and the frame sealed again into its day partitions by the SDK's own segment writer
and sealer. :func:`log_labels` logs labels with ``Recorder.log_label``, now, so every label
arrives after its prediction (days after, for past predictions). Test modules get them from
the ``write`` fixture: ``write.history(...)``, ``write.labels(...)``.

:func:`write_store` writes a DataFrame of past predictions straight into the writer's Arrow
frame, a write-ahead segment and the sealer (fixture ``store_writer``): fast, for stores of
many rows where the capture path itself is not under test.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import predlog
from predlog._ids import uuid7_array
from predlog._sealing import ensure_store, seal_segment
from predlog._segment import KIND_PREDICTIONS, SegmentWriter, encode_frame


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _prediction_files(store: Path, model: str) -> set[Path]:
    return set((store / "predictions" / f"model={model}").glob("date=*/*.parquet"))


def _retime(store: Path, path: Path, model: str, ts: pd.Series) -> pa.Table:
    """Seal the rows of ``path`` again at ``ts[row]`` (``row``: their ``features.row``)."""

    table = pq.read_table(path).replace_schema_metadata(None)
    table = table.append_column("model", pa.array([model] * table.num_rows, pa.string()))  # as the writer has it
    rows = pc.struct_field(table.column("features"), "row").to_numpy().astype(np.int64)
    when = pa.array(pd.DatetimeIndex(ts.to_numpy()[rows]).as_unit("us"), pa.timestamp("us", tz="UTC"))
    table = table.set_column(table.schema.get_field_index("ts"), "ts", when)
    path.unlink()
    segment = store / "_wal" / f"history-{os.getpid()}-{uuid.uuid4().hex[:16]}.arrows"
    writer = SegmentWriter(str(segment))
    writer.append(encode_frame(KIND_PREDICTIONS, table), table.num_rows)
    writer.sync()
    writer.close()
    seal_segment(str(store), str(segment))
    return table


def log_history(
    store: Path,
    model: str,
    features: pd.DataFrame,
    predictions: Sequence[Any] | np.ndarray,
    ts: Sequence[Any] | pd.Series,
    *,
    version: str = "1",
    context: Sequence[Mapping[str, Any]] | None = None,
    fail: Sequence[bool] | np.ndarray | None = None,
    sample_rate: float | None = None,
    batch: bool = True,
) -> pd.DataFrame:
    """Record one call per row of ``features`` (each returning ``predictions[row]``) and place
    row ``i`` at ``ts[i]``; return the rows stored.

    Args:
        features: The features of each row; a column ``row`` (0, 1, ...) is added.
        predictions: What the model answers for each row (floats, classes, or vectors as the
            rows of a 2-D array).
        ts: When each row was predicted (UTC).
        context: Per row, the ``predlog.context`` it is called under (``{"country": "FR"}``).
        fail: Per row, True when the call raises (an error row, kept whatever the sampling).
        sample_rate: The capture's sample rate (calls are then made one row at a time).
        batch: Rows with the same context are one batch call; False: one call per row, each
            under ``request_id`` ``"<model>-<version>-<row>"``.

    Returns:
        The rows stored, one per row kept: ``row``, ``prediction_id``, ``request_id``, ``ts``,
        ``status``, ``sample_rate``.
    """
    n = len(features)
    X = features.reset_index(drop=True).assign(row=np.arange(n))
    answers = np.asarray(predictions, dtype=object if not isinstance(predictions, np.ndarray) else None)
    failing = np.zeros(n, bool) if fail is None else np.asarray(fail, bool)
    contexts = [dict(c) for c in context] if context is not None else [{}] * n
    when = pd.Series(pd.to_datetime(list(ts), utc=True))
    before = _prediction_files(store, model)
    rec = predlog.Recorder(store=str(store), model=model, version=version)
    try:

        def predict(x: Any) -> Any:
            rows = x["row"].to_numpy() if isinstance(x, pd.DataFrame) else x["row"]
            if np.any(failing[rows]):
                raise ValueError("the model failed")
            out = answers[rows]
            return out.tolist() if isinstance(out, np.ndarray) and out.dtype == object else out

        captured = rec.capture(sample_rate=sample_rate)(predict)
        single = not batch or sample_rate is not None
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i in range(n):
            key = (i,) if single else (tuple(sorted(contexts[i].items())), bool(failing[i]))
            groups.setdefault(key, []).append(i)
        for rows in groups.values():
            ctx = dict(contexts[rows[0]])
            if single:
                ctx["request_id"] = f"{model}-{version}-{rows[0]}"
                arg: Any = {col: _plain(X[col].iat[rows[0]]) for col in X.columns}
            else:
                arg = X.iloc[rows].reset_index(drop=True)
            with predlog.context(**ctx):
                try:
                    captured(arg)
                except ValueError:
                    pass
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown(timeout_s=30)
    stored = [_retime(store, path, model, when) for path in sorted(_prediction_files(store, model) - before)]
    table = pa.concat_tables(stored, promote_options="permissive") if stored else None
    columns = ["prediction_id", "request_id", "ts", "status", "sample_rate"]
    if table is None:
        return pd.DataFrame(columns=["row", *columns])
    out = table.select(columns).to_pandas()
    out.insert(0, "row", pc.struct_field(table.column("features"), "row").to_numpy().astype(np.int64))
    return out.sort_values("row").reset_index(drop=True)


def log_labels(
    store: Path,
    labels: Sequence[Any],
    *,
    prediction_ids: Sequence[str | None] | None = None,
    request_ids: Sequence[str | None] | None = None,
) -> None:
    """Log ``labels[i]`` for ``prediction_ids[i]`` (or ``request_ids[i]``) with ``Recorder.log_label``, now."""
    rec = predlog.Recorder(store=str(store), model="labels")
    try:
        for i, label in enumerate(labels):
            pid = None if prediction_ids is None else prediction_ids[i]
            rid = None if request_ids is None else request_ids[i]
            rec.log_label(_plain(label), prediction_id=pid, request_id=rid)
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown(timeout_s=30)


def days_apart(start: str, n: int, days: int, seed: int = 0) -> pd.Series:
    """``n`` UTC times spread over ``days`` days from ``start``, in order, about evenly."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    offsets = np.sort(rng.integers(0, days * 86_400_000_000, n))
    return pd.Series(t0 + pd.to_timedelta(offsets, unit="us"))


class Writer:
    """The helpers above, for test modules (handed out by the session-scoped ``write`` fixture)."""

    history = staticmethod(log_history)
    labels = staticmethod(log_labels)
    days_apart = staticmethod(days_apart)


@pytest.fixture(scope="session")
def write() -> type[Writer]:
    return Writer


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Where a test's own store goes (created on the first write)."""
    return tmp_path / "store"


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


def write_labeled(
    path: str | Path,
    frame: pd.DataFrame,
    *,
    model: str = "m",
    version: str = "1.0",
    context: Sequence[str] = (),
    prediction: str = "prediction",
    label: str | None = "label",
    start: str = "2026-11-01",
) -> list[str]:
    """Log ``frame`` as past predictions of ``model`` with ``predlog.Recorder.log_frame`` (one
    row a minute from ``start``; ``context`` names the columns that become context fields,
    every other column but the prediction and label is a feature), then its ``label`` column
    with ``log_labels`` (null labels left out: not labelled yet). Returns the prediction ids.
    """
    frame = frame.reset_index(drop=True)
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(len(frame)), unit="min")
    rows = frame.drop(columns=[label] if label else []).assign(ts=ts)
    rec = predlog.Recorder(store=str(path), model=model, version=version)
    try:
        features = [c for c in rows.columns if c not in (prediction, "ts", *context)]
        ids = rec.log_frame(rows, prediction=prediction, features=features, context=list(context) or None, ts="ts")
        if label:
            labels = pd.DataFrame({"prediction_id": ids, "label": frame[label]})
            labels = labels[frame[label].notna().to_numpy()]
            if len(labels):
                rec.log_labels(labels)
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    return ids


@pytest.fixture(scope="session")
def labeled_writer() -> Any:
    """:func:`write_labeled`, for test modules."""
    return write_labeled
