"""Imported history: frames of past predictions and of labels → tables in the store's schemas.

``log_frame`` and ``log_labels`` take a pandas DataFrame, a pyarrow Table (or RecordBatch),
or a dict of equal-length columns, whose columns their arguments name. Everything is checked
first, so that a bad frame is rejected before any row is queued: a ValueError names the
column and says what to do. Then the rows are converted column-wise, in chunks of
``CHUNK_ROWS``, in the caller's thread, into tables the recorder queues for the writer as
table records (:mod:`._record`). Values follow capture's storage rules
(:func:`._columns.frame_column`); no Python object is made per value except in object
columns. pandas is never imported here: a DataFrame brings its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _ids
from ._columns import (
    Flags,
    column,
    frame_column,
    is_dataframe,
    is_missing,
    is_ndarray,
    is_series,
    is_typed_column,
    plain,
    str_column,
)
from ._config import ConfigError, validate_model_name
from ._convert import finish_labels, finish_predictions, fixed_strings, label_kind

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["CHUNK_ROWS", "Columns", "FrameImport", "LabelsImport", "frame_import", "labels_import"]

# Rows per table handed to the writer: Arrow's per-call costs vanish, memory stays bounded,
# and the writer writes one chunk while the caller converts the next.
CHUNK_ROWS = 131_072
# A chunk larger than this (long strings, wide vectors) is cut before it is queued.
_MAX_TABLE_BYTES = 256 * 1024 * 1024
# 48 bits of milliseconds in a UUIDv7: the last time an id can hold (year 10889), in µs.
_MAX_US = (1 << 48) * 1000


class Columns:
    """The columns of a frame by name, whatever holds them, with their row count.

    Raises ValueError for anything but a pandas DataFrame, a pyarrow Table or RecordBatch,
    or a mapping of names to equal-length columns (lists, numpy or Arrow arrays, Series).
    """

    def __init__(self, data: Any, fn: str) -> None:
        import pyarrow as pa

        self.fn = fn
        self.data = data
        self.kind: str
        if is_dataframe(data):
            self.kind = "pandas"
            self.names: list[Any] = list(data.columns)
            self.n: int = len(data)
        elif isinstance(data, (pa.Table, pa.RecordBatch)):
            self.kind = "arrow"
            self.names = list(data.column_names)
            self.n = data.num_rows
        elif isinstance(data, Mapping):
            self.kind = "dict"
            self.names = list(data)
            lengths: dict[Any, int] = {}
            for name, col in data.items():
                if isinstance(col, (str, bytes)) or not hasattr(col, "__len__"):
                    raise ValueError(
                        f"{fn}(): column {name!r} of the dict is a {type(col).__name__}, not a column of values; "
                        "give a list, a numpy or Arrow array or a pandas Series per column"
                    )
                lengths[name] = len(col)
            self.n = next(iter(lengths.values()), 0)
            for name, length in lengths.items():
                if length != self.n:
                    first = next(iter(lengths))
                    raise ValueError(
                        f"{fn}(): column {name!r} has {length} values but column {first!r} has {self.n}; "
                        "every column of the dict must have one value per row"
                    )
        else:
            raise ValueError(
                f"{fn}() takes a pandas DataFrame, a pyarrow Table or a dict of equal-length columns, "
                f"got {type(data).__module__}.{type(data).__qualname__}"
            )
        self._seen: set[Any] = set()
        for name in self.names:
            if name in self._seen:
                raise ValueError(f"{fn}(): the frame has two columns named {name!r}; rename one of them")
            self._seen.add(name)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._seen
        except TypeError:  # unhashable
            return False

    def get(self, name: Any, arg: str, what: str) -> Any:
        """The whole column ``name``, named by argument ``arg`` (which should hold ``what``)."""
        if name not in self:
            shown = ", ".join(repr(c) for c in self.names[:20]) + (", ..." if len(self.names) > 20 else "")
            close = difflib.get_close_matches(str(name), [str(c) for c in self.names], n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"{self.fn}(): {arg}={name!r} is not a column of the frame.{hint} "
                f"Pass {arg}= the name of the column that holds {what} (the frame's columns: {shown or 'none'})"
            )
        if self.kind == "pandas":
            return self.data[name]
        if self.kind == "arrow":
            return self.data.column(name)
        return self.data[name]

    @staticmethod
    def rows(col: Any, lo: int, hi: int, at: np.ndarray | None = None) -> Any:
        """Rows ``lo:hi`` of a column (without a copy where the column allows it), or with
        ``at``, the rows at those positions."""
        import pyarrow as pa

        if at is None:
            if isinstance(col, (pa.Array, pa.ChunkedArray)):
                return col.slice(lo, hi - lo)
            if hasattr(col, "iloc"):
                return col.iloc[lo:hi]
            return col[lo:hi]
        import numpy as np

        if isinstance(col, (pa.Array, pa.ChunkedArray)):
            return col.take(pa.array(at))
        if is_ndarray(col):
            return col[at]
        if is_series(col):  # its values, without the index pandas would take along
            return col.to_numpy(copy=False)[at] if isinstance(col.dtype, np.dtype) else col.array.take(at)
        if hasattr(col, "take"):  # pandas extension arrays
            return col.take(at)
        return [col[i] for i in at.tolist()]


# ---------------------------------------------------------------- whole-column checks


def _first(mask: Any) -> int:
    import numpy as np

    return int(np.flatnonzero(mask)[0])


def _utc_us(value: Any) -> int | None:
    """One time value (datetime, date, ISO 8601 text, numpy datetime64) → µs since the epoch, UTC."""
    import numpy as np

    if value is None or is_missing(value) or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return None
        return int(value.astype("datetime64[us]").astype(np.int64))
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip())
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            value = value.replace(tzinfo=dt.UTC)
        return int((value - _EPOCH) // _US)
    if isinstance(value, dt.date):
        return int((dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC) - _EPOCH) // _US)
    raise TypeError(type(value).__name__)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)


def timestamps(col: Any, what: str) -> np.ndarray:
    """A time column → int64 µs since the epoch, UTC (naive values are UTC). Raises ValueError.

    Takes datetimes (numpy, pandas, Python), Arrow timestamps and dates, and ISO 8601 text;
    rejects missing values, numbers, and times an id cannot hold (before 1970).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    arr: pa.Array | None = None
    if isinstance(col, pa.ChunkedArray):
        arr = col.combine_chunks()
    elif isinstance(col, pa.Array):
        arr = col
    else:
        try:  # datetimes (aware ones in UTC, naive ones as they are), text, dates: vectorised
            arr = pa.array(col if is_ndarray(col) or hasattr(col, "dtype") else list(col), from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            arr = None
    if arr is not None and pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr is not None and (pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type)):
        arr = arr.cast(pa.string())
    if arr is not None and pa.types.is_string(arr.type):
        arr = _parse_text(arr)  # None: mixed forms, parsed value by value below
    if arr is None:
        values = col.to_pylist() if isinstance(col, (pa.Array, pa.ChunkedArray)) else list(col)
        out: list[int | None] = []
        for i, v in enumerate(values):
            try:
                out.append(_utc_us(v))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{what} row {i}: {v!r} is not a time; give datetimes, Arrow timestamps or ISO 8601 text "
                    "(naive times are taken as UTC)"
                ) from None
        arr = pa.array(out, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    t = arr.type
    if pa.types.is_date(t):
        arr = arr.cast(pa.timestamp("s")) if pa.types.is_date32(t) else arr.cast(pa.timestamp("ms"))
        t = arr.type
    if not pa.types.is_timestamp(t) and not pa.types.is_null(t):
        hint = (
            " (numbers since the epoch: convert them first, e.g. pd.to_datetime(df[col], unit='s', utc=True))"
            if pa.types.is_integer(t) or pa.types.is_floating(t)
            else ""
        )
        raise ValueError(f"{what} holds {t} values, not times; give datetimes, Arrow timestamps or ISO 8601 text{hint}")
    if arr.null_count:
        first = _first(arr.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(
            f"{what} has {arr.null_count} missing value(s) (the first at row {first}); every row needs its time: "
            "fill them or drop those rows first"
        )
    if pa.types.is_null(t):  # no rows at all
        return np.zeros(0, dtype=np.int64)
    if t.unit == "ns":  # cut to µs, predlog's precision (floor, as for negative values too)
        us = arr.cast(pa.int64()).to_numpy() // 1000
    else:
        try:
            us = arr.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            raise ValueError(f"{what} holds times beyond the year 10889, which an id cannot hold") from None
    if len(us):
        low, high = int(us.min()), int(us.max())
        if low < 0:
            row = _first(us < 0)
            raise ValueError(
                f"{what} row {row}: {pc.cast(pa.scalar(low, pa.int64()), pa.timestamp('us', tz='UTC'))} is before "
                "1970-01-01, which a prediction id (UUIDv7) cannot hold"
            )
        if high >= _MAX_US:
            raise ValueError(f"{what} holds times beyond the year 10889, which a prediction id (UUIDv7) cannot hold")
    return np.ascontiguousarray(us, dtype=np.int64)


def _parse_text(arr: pa.Array) -> pa.Array | None:
    """ISO 8601 text → timestamps, vectorised: all with a zone offset, or all without (UTC).

    None when the forms are mixed (parsed value by value instead).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    for target in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns"), pa.timestamp("us", tz="UTC"), pa.timestamp("us")):
        try:
            out: pa.Array = pc.cast(arr, target)
            return out
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return None


def _floats(col: Any, what: str) -> pa.Array:
    """A numeric column → float64 (missing values null). Raises ValueError for anything else."""
    import pyarrow as pa

    arr = frame_column(col, what, Flags())
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        return arr.cast(pa.float64())
    raise ValueError(f"{what} holds {t} values; it takes numbers (missing ones allowed)")


def _strings(col: Any, what: str, *, nulls: bool = True) -> pa.Array:
    """A column of ids → strings, as ``predlog.context`` stores them (``str(value)``)."""
    import pyarrow as pa

    arr = frame_column(col, what, Flags()) if is_typed_column(col) else None
    if arr is not None and (
        pa.types.is_string(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_null(arr.type)
    ):
        arr = arr.cast(pa.string())
    else:
        values = arr.to_pylist() if arr is not None else list(col.tolist() if hasattr(col, "tolist") else col)
        texts = [None if v is None or is_missing(v) or (isinstance(v, float) and v != v) else str(v) for v in values]
        arr = str_column(texts, what, Flags())
    if not nulls and arr.null_count:
        first = _first(arr.is_null().to_numpy(zero_copy_only=False))
        raise ValueError(
            f"{what} has {arr.null_count} missing value(s) (the first at row {first}); "
            "drop those rows or fill them first"
        )
    return arr


def _names(value: str | Sequence[str] | None) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _value_or_column(
    cols: Columns, value: Any, arg: str, default: str | None, check: Any
) -> tuple[str | None, pa.Array | None]:
    """``model`` / ``version``: a column of the frame when the string names one, else the value."""
    if value is None:
        if default is None:
            raise ValueError(
                f"{cols.fn}(): no {arg}: pass {arg}='<name>' (or a column name), or configure the recorder's {arg}"
            )
        return default, None
    if not isinstance(value, str):
        raise ValueError(f"{cols.fn}(): {arg} must be a string (a value, or the name of a column), got {value!r}")
    if value in cols:
        arr = _strings(cols.get(value, arg, ""), f"{cols.fn}(): column {value!r} ({arg}=)", nulls=False)
        for name in arr.unique().to_pylist():
            check(name, f"{cols.fn}(): column {value!r} ({arg}=)")
        return None, arr
    check(value, f"{cols.fn}(): {arg}=")
    return value, None


def _check_model(name: str, where: str) -> None:
    try:
        validate_model_name(name)
    except ConfigError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_version(name: str, where: str) -> None:
    if not name:
        raise ValueError(f"{where}: a model version must be a non-empty string")


# ---------------------------------------------------------------- predictions


@dataclasses.dataclass
class FrameImport:
    """A checked frame of past predictions, turned into tables chunk by chunk.

    Rows are taken in order of (model, UTC date) when the frame is not in that order already
    (a stable order: rows of one day keep theirs), so that a chunk holds few partitions and
    sealing cuts it into slices instead of copying it row by row. ``model`` and ``version``
    are (value, None) or (None, a column of values).
    """

    n: int
    model: tuple[str | None, pa.Array | None]
    version: tuple[str | None, pa.Array | None]
    ts_us: np.ndarray
    prediction: Any
    features: list[tuple[str, Any]]
    context: list[tuple[str, Any]]
    confidence: pa.Array | None
    latency_ms: pa.Array | None
    user_id: pa.Array | None
    request_id: pa.Array | None
    max_value_bytes: int

    def __post_init__(self) -> None:
        import numpy as np

        self.order = _partition_order(self.ts_us, self.model[1])
        self._ids = np.empty(self.n, dtype="S36")

    def tables(self) -> Iterator[pa.Table]:
        """The rows as tables in the predictions schema, chunk after chunk."""
        for lo in range(0, self.n, CHUNK_ROWS):
            hi = min(self.n, lo + CHUNK_ROWS)
            yield from _cut(self._chunk(lo, hi))

    def ids(self) -> list[str]:
        """The prediction ids of every row, in row order (once :meth:`tables` is consumed)."""
        ids: list[str] = fixed_strings(self._ids.tobytes(), self.n, 36).to_pylist()
        return ids

    def rows_of(self, done: int) -> list[int]:
        """Positions in the frame of the first ``done`` rows handed out by :meth:`tables`."""
        if self.order is None:
            return list(range(done))
        return sorted(self.order[:done].tolist())

    def _chunk(self, lo: int, hi: int) -> pa.Table:
        import numpy as np
        import pyarrow as pa

        m = hi - lo
        at = None if self.order is None else self.order[lo:hi]
        rows = Columns.rows
        flags = Flags()
        ts_us = self.ts_us[lo:hi] if at is None else self.ts_us[at]
        # One counter value per chunk, the row's index within it: the batch layout of ids,
        # with each row's own time.
        seq = _ids.next_seq()
        data, _ = _ids.uuid7_array(ts_us, np.full(m, seq, dtype=np.uint64), np.arange(m, dtype=np.uint64), per_ms=1000)
        self._ids[slice(lo, hi) if at is None else at] = np.frombuffer(data, dtype="S36")

        def given(spec: tuple[str | None, pa.Array | None]) -> pa.Array:
            value, arr = spec
            return rows(arr, lo, hi, at) if arr is not None else pa.repeat(pa.scalar(value, pa.string()), m)

        def optional(arr: pa.Array | None, typ: pa.DataType) -> pa.Array:
            return rows(arr, lo, hi, at) if arr is not None else pa.nulls(m, typ)

        def struct(fields: list[tuple[str, Any]], path: str) -> pa.Array:
            if not fields:
                return pa.nulls(m)
            children = [frame_column(rows(col, lo, hi, at), f"{path}.{name}", flags) for name, col in fields]
            return pa.StructArray.from_arrays(children, names=[name for name, _ in fields])

        cols = {
            "prediction_id": fixed_strings(data, m, 36),
            "ts": pa.array(ts_us, type=pa.timestamp("us", tz="UTC")),
            "model": given(self.model),
            "model_version": given(self.version),
            "latency_ms": optional(self.latency_ms, pa.float64()),
            "status": pa.repeat(pa.scalar("ok", pa.string()), m),
            "request_id": optional(self.request_id, pa.string()),
            "user_id": optional(self.user_id, pa.string()),
            "features": struct(self.features, "features"),
            "prediction": frame_column(rows(self.prediction, lo, hi, at), "prediction", flags),
            "confidence": optional(self.confidence, pa.float64()),
            "context": struct(self.context, "context"),
            "sample_rate": pa.repeat(pa.scalar(1.0, pa.float64()), m),
        }
        return finish_predictions(cols, flags, self.max_value_bytes)


def _partition_order(ts_us: np.ndarray, models: pa.Array | None) -> np.ndarray | None:
    """The stable order of rows by (model, UTC date), or None when they are in it already."""
    import numpy as np
    import pyarrow.compute as pc

    if not len(ts_us):
        return None
    key = ts_us // _US_PER_DAY
    if models is not None:
        codes = pc.dictionary_encode(models).indices.to_numpy().astype(np.int64)
        key = codes * (int(key.max()) + 1) + key
    if bool((key[1:] >= key[:-1]).all()):
        return None
    return np.argsort(key, kind="stable")


_US_PER_DAY = 86_400_000_000


def _cut(table: pa.Table) -> Iterator[pa.Table]:
    """A chunk whose values are large, in pieces a write-ahead frame holds comfortably."""
    pieces = -(-table.nbytes // _MAX_TABLE_BYTES)
    if pieces <= 1:
        yield table
        return
    step = -(-table.num_rows // pieces)
    for lo in range(0, table.num_rows, step):
        yield table.slice(lo, step)


def frame_import(
    data: Any,
    *,
    default_model: str | None,
    default_version: str,
    max_value_bytes: int,
    model: str | None,
    version: str | None,
    ts: str,
    prediction: str,
    confidence: str | None,
    features: str | Sequence[str] | None,
    user_id: str | None,
    request_id: str | None,
    context: str | Sequence[str] | None,
    latency_ms: str | None,
) -> FrameImport:
    """Check a frame of past predictions as a whole; raise ValueError naming what is wrong."""
    fn = "log_frame"
    cols = Columns(data, fn)

    def named(arg: str, name: Any, what: str) -> Any:
        return cols.get(name, arg, what)

    def where(name: Any, arg: str) -> str:
        return f"{fn}(): column {name!r} ({arg}=)"

    ts_us = timestamps(named("ts", ts, "the time of each prediction"), where(ts, "ts"))
    pred = named("prediction", prediction, "the predictions")
    used: list[Any] = [ts, prediction]

    def optional(arg: str, name: str | None, what: str, convert: Callable[[Any, str], pa.Array]) -> pa.Array | None:
        if name is None:
            return None
        used.append(name)
        return convert(named(arg, name, what), where(name, arg))

    conf = optional("confidence", confidence, "the confidences", _floats)
    lat = optional("latency_ms", latency_ms, "the latencies in ms", _floats)
    uid = optional("user_id", user_id, "the user ids", _strings)
    rid = optional("request_id", request_id, "the request ids", _strings)
    ctx = [(str(name), named("context", name, "context values")) for name in _names(context)]
    used.extend(_names(context))
    model_spec = _value_or_column(cols, model, "model", default_model, _check_model)
    version_spec = _value_or_column(cols, version, "version", default_version, _check_version)
    for value, spec in ((model, model_spec), (version, version_spec)):
        if spec[1] is not None:
            used.append(value)
    if features is None:
        taken = set(used)
        feats = [(str(name), cols.get(name, "features", "")) for name in cols.names if name not in taken]
    else:
        feats = [(str(name), named("features", name, "features")) for name in _names(features)]
    return FrameImport(
        cols.n,
        model=model_spec,
        version=version_spec,
        ts_us=ts_us,
        prediction=pred,
        features=feats,
        context=ctx,
        confidence=conf,
        latency_ms=lat,
        user_id=uid,
        request_id=rid,
        max_value_bytes=max_value_bytes,
    )


# ---------------------------------------------------------------- labels


@dataclasses.dataclass
class LabelsImport:
    """A checked frame of labels, turned into tables (one per label type family) chunk by chunk."""

    n: int
    label: Any
    prediction_id: pa.Array
    request_id: pa.Array
    ts_us: np.ndarray | None
    max_value_bytes: int

    def tables(self, first_ts_us: int) -> Iterator[pa.Table]:
        """Labels tables in row order; without a ``ts`` column, row i is logged at
        ``first_ts_us + i`` µs (strictly increasing, as ``log_label`` stamps them)."""
        import numpy as np

        ts_us = self.ts_us if self.ts_us is not None else first_ts_us + np.arange(self.n, dtype=np.int64)
        for lo in range(0, self.n, CHUNK_ROWS):
            hi = min(self.n, lo + CHUNK_ROWS)
            yield from self._chunk(lo, hi, ts_us[lo:hi])

    def _chunk(self, lo: int, hi: int, ts_us: np.ndarray) -> Iterator[pa.Table]:
        import pyarrow as pa

        m = hi - lo
        keys = {
            "prediction_id": self.prediction_id.slice(lo, m),
            "request_id": self.request_id.slice(lo, m),
            "ts": pa.array(ts_us, type=pa.timestamp("us", tz="UTC")),
        }
        col = Columns.rows(self.label, lo, hi)
        if not is_typed_column(col):
            # Values one by one, as log_label() gets them: each keeps its own type family.
            values = [None if v is None or is_missing(v) or (isinstance(v, float) and v != v) else v for v in col]
            groups: dict[str, list[int]] = {}
            for i, v in enumerate(values):
                groups.setdefault(label_kind(v), []).append(i)
            for rows in groups.values():
                flags = Flags()
                label = column([plain(values[i]) for i in rows], "label", flags)
                take = pa.array(rows, type=pa.int64()) if len(groups) > 1 else None
                part = {k: (v.take(take) if take is not None else v) for k, v in keys.items()}
                yield self._table(part, label, flags)
            return
        flags = Flags()
        yield self._table(keys, frame_column(col, "label", flags), flags)

    def _table(self, keys: dict[str, pa.Array], label: pa.Array, flags: Flags) -> pa.Table:
        import pyarrow as pa

        cols = {**keys, "label": label, "extra": pa.nulls(len(label))}
        return finish_labels(cols, flags, self.max_value_bytes)


def labels_import(
    data: Any,
    *,
    max_value_bytes: int,
    label: str,
    prediction_id: str | None,
    request_id: str | None,
    ts: str | None,
) -> LabelsImport:
    """Check a frame of labels as a whole; raise ValueError naming what is wrong."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fn = "log_labels"
    cols = Columns(data, fn)
    value = cols.get(label, "label", "the labels")
    if (
        prediction_id is not None
        and prediction_id not in cols
        and request_id is not None
        and prediction_id == ("prediction_id")
    ):
        prediction_id = None  # the default, absent: the labels are keyed by request id alone
    if prediction_id is None and request_id is None:
        raise ValueError(
            f"{fn}(): pass prediction_id='<column>' or request_id='<column>' to say what each label is for"
        )
    keys = [(arg, name) for arg, name in (("prediction_id", prediction_id), ("request_id", request_id)) if name]
    arrays: dict[str, pa.Array] = {}
    for arg, name in keys:
        what = f"the id of the {'prediction' if arg == 'prediction_id' else 'request'} each label is for"
        arrays[arg] = _strings(cols.get(name, arg, what), f"{fn}(): column {name!r} ({arg}=)", nulls=len(keys) > 1)
    if len(keys) > 1:
        mask = pc.and_(arrays["prediction_id"].is_null(), arrays["request_id"].is_null()).to_numpy(zero_copy_only=False)
        if mask.any():
            raise ValueError(
                f"{fn}(): {int(mask.sum())} row(s) have neither a prediction_id ({prediction_id!r}) nor a request_id "
                f"({request_id!r}), the first at row {_first(mask)}; drop them or fill one of the two"
            )
    n = cols.n
    ts_us = timestamps(cols.get(ts, "ts", "the time of each label"), f"{fn}(): column {ts!r} (ts=)") if ts else None
    return LabelsImport(
        n,
        value,
        arrays.get("prediction_id", pa.nulls(n, pa.string())),
        arrays.get("request_id", pa.nulls(n, pa.string())),
        ts_us,
        max_value_bytes,
    )
