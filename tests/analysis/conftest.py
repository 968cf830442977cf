"""Stores written by the SDK for the analysis tests: predictions at chosen past times, labels
logged later.

:func:`log_history` records real calls of a decorated predict function through a
``predlog.Recorder`` (batch calls, or one call per row with sampling), then moves each row to
the time the test gives it: the sealed file is read back as the writer's frame, its ``ts``
replaced, and the frame sealed again into its day partitions by the SDK's own segment writer
and sealer. :func:`log_labels` logs labels with ``Recorder.log_label``, now, so every label
arrives after its prediction (days after, for past predictions). Test modules get them from
the ``write`` fixture: ``write.history(...)``, ``write.labels(...)``.
"""

from __future__ import annotations

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


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _prediction_files(store: Path, model: str) -> set[Path]:
    return set((store / "predictions" / f"model={model}").glob("date=*/*.parquet"))


def _retime(store: Path, path: Path, model: str, ts: pd.Series) -> pa.Table:
    """Seal the rows of ``path`` again at ``ts[row]`` (``row``: their ``features.row``)."""
    from predlog._sealing import seal_segment
    from predlog._segment import KIND_PREDICTIONS, SegmentWriter, encode_frame

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
