"""Records → Arrow tables, in the writer thread.

The fast path hands whole columns to Arrow's C++ converter. When Arrow refuses a column
(mixed types, objects, integers past 64 bits, empty structs) the column is rebuilt field by
field, and only the values Arrow cannot hold become JSON text, flagged in the row's ``flags``
as ``json:<path>``. Strings and bytes longer than the cap are cut and flagged as
``truncated:<path>``. Values never make conversion fail: the last resort stores ``repr``,
and a batch Arrow refuses column-wise is rebuilt row by row.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterator, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from . import _ids

if TYPE_CHECKING:
    import pyarrow as pa

    from ._capture import FunctionSpec

__all__ = ["Flags", "column", "ids_for", "label_kind", "labels_to_tables", "records_to_table", "shape_of", "to_json", "truncate"]

class Flags:
    """Per-row flags collected while converting (sparse: most rows have none)."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[int, list[str]] = {}

    def add(self, row: int, flag: str) -> None:
        self.rows.setdefault(row, []).append(flag)


# ---------------------------------------------------------------- values → JSON


def _json_default(obj: Any) -> Any:
    try:
        if hasattr(obj, "tolist"):  # numpy arrays and scalars
            return obj.tolist()
        if hasattr(obj, "model_dump"):  # pydantic
            return obj.model_dump()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=repr)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj).hex()
        if hasattr(obj, "isoformat"):
            return obj.isoformat()
        return repr(obj)
    except Exception:  # user code (__repr__, tolist, ...) raised: keep the rest of the value
        return f"<unrepresentable {type(obj).__qualname__}>"


def to_json(value: Any) -> str:
    """JSON text for any value, never raising, always valid UTF-8."""
    try:
        text = json.dumps(value, default=_json_default, ensure_ascii=False)
    except Exception:  # TypeError (keys), ValueError, RecursionError, or user code raising
        try:
            text = json.dumps(repr(value), ensure_ascii=False)
        except Exception:  # repr itself raised
            return json.dumps(f"<unrepresentable {type(value).__qualname__}>")
    if not _utf8_ok(text):
        # Lone surrogates cannot be UTF-8; as \u escapes they still load back exactly.
        text = json.dumps(json.loads(text))
    return text


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------- columns


def _plain(value: Any) -> Any:
    """numpy arrays → lists, pydantic models → dicts, Mappings → dicts (one level, cheap)."""
    t = type(value)
    if t is dict or t is str or t is float or t is int or t is bool or value is None:
        return value
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return value.model_dump()
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "tolist") and hasattr(value, "ndim") and getattr(value, "ndim", 0) > 0:
        return value.tolist()
    return value


def _is_missing(value: Any) -> bool:
    """pandas' missing-value markers (``pd.NA``, ``pd.NaT``), stored as null."""
    name = type(value).__name__
    return (name == "NAType" or name == "NaTType") and type(value).__module__.startswith("pandas")


def _series_value(s: Any) -> Any:
    """A Series as data: a dict when its index holds names (one row of features), else a list."""
    if len(s) and all(type(k) is str for k in s.index):
        return {k: _clean(v) for k, v in zip(s.index, s.tolist())}
    return [_clean(v) for v in s.tolist()]


def frame_columns(df: Any) -> dict[str, Any]:
    """A DataFrame as data: one field per column holding that column's values as a list.

    Missing values are null, NaN of float columns included (pandas' missing value there), as
    in the rows of a batch call.
    """
    out: dict[str, Any] = {}
    for i, c in enumerate(df.columns):
        col = df.iloc[:, i]
        values = col.tolist()
        if getattr(col.dtype, "kind", "") == "f":
            values = [None if v != v else v for v in values]
        out[str(c)] = [_clean(v) for v in values]
    return out


def _clean(value: Any, depth: int = 0) -> Any:
    """Plain Python data for Arrow, recursively: pandas and numpy containers become lists and
    dicts, pandas' missing markers become None. Only used once Arrow refused the plain values."""
    t = type(value)
    if t is str or t is float or t is int or t is bool or value is None or depth > 32:
        return value
    if _is_missing(value):
        return None
    if _is_dataframe(value):
        return frame_columns(value)
    if _is_series(value):
        return _series_value(value)
    if t is dict or isinstance(value, Mapping):
        return {k: _clean(v, depth + 1) for k, v in value.items()}
    if t is list or t is tuple:
        return [_clean(v, depth + 1) for v in value]
    if hasattr(value, "model_dump") and callable(value.model_dump) and not isinstance(value, type):
        return _clean(value.model_dump(), depth + 1)
    if _is_ndarray(value):
        return _clean(value.tolist(), depth + 1) if value.ndim else _clean(value.item(), depth + 1)
    if t.__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _has_empty_struct(t: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(t):
        return t.num_fields == 0 or any(_has_empty_struct(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_empty_struct(t.value_type)
    if pa.types.is_map(t):
        return _has_empty_struct(t.item_type) or _has_empty_struct(t.key_type)
    return bool(pa.types.is_union(t))


def _may_lose(t: pa.DataType, in_list: bool = False) -> bool:
    """Whether Arrow's inference may have changed values on the way into this type.

    Given both str and bytes, it stores str as bytes in a binary column, and inside a list
    that starts with a str it stores bytes unchecked in a string column (invalid UTF-8 that
    makes the Parquet file unreadable). For structs it decodes bytes keys, so keys "a" and
    b"a" share one field and one value is lost.
    """
    import pyarrow as pa

    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return True
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return in_list
    if pa.types.is_struct(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _may_lose(t.value_type, True)
    if pa.types.is_map(t):
        return _may_lose(t.key_type, True) or _may_lose(t.item_type, True)
    return False


def _lossy(values: list[Any]) -> bool:
    """Whether str and bytes both occur in these values, or a dict has a key that is not str."""
    seen_str = seen_bytes = False
    stack = list(values)
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            seen_str = True
        elif isinstance(v, (bytes, bytearray, memoryview)):
            seen_bytes = True
        elif isinstance(v, Mapping):
            if not all(type(k) is str for k in v):
                return True
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif _is_ndarray(v):
            kind = v.dtype.kind
            if kind == "U":
                seen_str = True
            elif kind == "S":
                seen_bytes = True
            elif kind == "O":
                stack.extend(v.flat)
        if seen_str and seen_bytes:
            return True
    return False


def _has_duplicate_fields(t: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        return len(set(names)) < len(names) or any(_has_duplicate_fields(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_duplicate_fields(t.value_type)
    if pa.types.is_map(t):
        return _has_duplicate_fields(t.item_type)
    return False


def _storable(arr: pa.Array, values: list[Any]) -> bool:
    """Whether Arrow's own conversion of ``values`` can be kept as it is."""
    import pyarrow as pa

    t = arr.type
    if _has_empty_struct(t) or _has_duplicate_fields(t):  # Parquet cannot hold these
        return False
    if (pa.types.is_floating(t) or pa.types.is_decimal(t)) and bool in set(map(type, values)):
        return False  # Arrow would store True as 1.0 after a float (and refuse it before one)
    if pa.types.is_temporal(t) and not _all_temporal(t, values):
        # Arrow reads a number after a datetime as an offset from the epoch, and cuts a
        # datetime after a date to its day: such a mix is not one type.
        return False
    return not (_may_lose(t) and _lossy(values))


def _all_temporal(t: pa.DataType, values: list[Any]) -> bool:
    import pyarrow as pa

    if pa.types.is_timestamp(t):
        want: tuple[type, ...] = (dt.datetime,)
    elif pa.types.is_date(t):
        return all(v is None or _is_missing(v) or (isinstance(v, dt.date) and not isinstance(v, dt.datetime))
                   for v in values)
    elif pa.types.is_time(t):
        want = (dt.time,)
    elif pa.types.is_duration(t):
        want = (dt.timedelta,)
    else:
        return True
    return all(v is None or _is_missing(v) or isinstance(v, want)
               or (type(v).__module__ == "numpy" and getattr(getattr(v, "dtype", None), "kind", "") in ("M", "m"))
               for v in values)


def column(values: list[Any], path: str, flags: Flags, row_of: list[int] | None = None, depth: int = 0) -> pa.Array:
    """Build one Arrow array from Python values, never raising.

    ``row_of[i]`` is the table row that ``values[i]`` belongs to (for flags); None means i.
    Values of one type keep it; numbers of mixed kinds widen (int and float → float); other
    mixes of scalars become text (see :func:`_text_column`); the rest that Arrow cannot hold
    becomes JSON text. Datetimes are stored in UTC, naive ones taken as UTC.
    """
    import pyarrow as pa

    try:
        arr = pa.array(values)
        if _storable(arr, values):
            return arr
    except Exception:  # Arrow (or a user object inside it) refused
        pass
    # Arrow refused the column as a whole. Pivot dicts into fields; widen scalars; JSON the rest.
    plain = [_clean(v) for v in values]
    if depth < 16 and plain and all(v is None or type(v) is dict for v in plain) and any(v for v in plain):
        return _struct_column(plain, path, flags, row_of, depth)
    try:
        arr = pa.array(plain)
        if _storable(arr, plain):
            return arr
    except Exception:  # Arrow (or a user object inside it) refused
        pass
    kinds = {type(v) for v in plain if v is not None}
    if len(kinds) > 1 and kinds <= _TEXT_SCALARS and all(type(v) is not str or _utf8_ok(v) for v in plain):
        return _text_column(plain, path, flags, row_of)
    # Empty dicts end here too: Parquet cannot hold a struct without fields, JSON can ("{}").
    return _json_column(plain, path, flags, row_of)


def _scalar_text(value: Any) -> str:
    """The text of a scalar in a column of mixed scalars: as JSON would write it, unquoted."""
    if type(value) is str:
        return value
    if isinstance(value, dt.datetime):
        return _utc_datetime(value).isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value.total_seconds())
    if isinstance(value, decimal.Decimal):
        return str(value)
    return json.dumps(value)  # numbers and booleans: 75001, 1.5, NaN, true


def _text_column(plain: list[Any], path: str, flags: Flags, row_of: list[int] | None) -> pa.Array:
    """Scalars of several types under one path (an int here, a str there): one string column.

    Strings stay as they are; the other values become their text (``75001``, ``1.5``,
    ``true``, ISO 8601 for datetimes, in UTC) and the row is flagged ``text:<path>``.
    """
    import pyarrow as pa

    out: list[str | None] = []
    for i, v in enumerate(plain):
        if v is None or type(v) is str:
            out.append(v)
            continue
        out.append(_scalar_text(v))
        flags.add(row_of[i] if row_of is not None else i, f"text:{path}")
    return pa.array(out, type=pa.string())


def _utc_datetime(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


_TEXT_SCALARS = frozenset({str, int, float, bool, dt.datetime, dt.date, dt.time, dt.timedelta, decimal.Decimal})


def _naive_time(t: pa.DataType) -> bool:
    """Whether a type holds timestamps not in UTC (naive, or another zone) at any depth."""
    import pyarrow as pa

    if pa.types.is_timestamp(t):
        return bool(t.tz != "UTC")
    if pa.types.is_struct(t):
        return any(_naive_time(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _naive_time(t.value_type)
    return False


def to_utc(arr: pa.Array) -> pa.Array:
    """Timestamps in UTC at any depth: naive values are taken as UTC, zoned ones converted.

    One rule for every datetime predlog stores, so values logged with and without a zone
    compare as they should.
    """
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if not _naive_time(t):
        return arr
    if pa.types.is_timestamp(t):
        return arr.cast(pa.timestamp(t.unit, tz="UTC"))
    if pa.types.is_struct(t):
        children = [to_utc(arr.field(i)) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(children, names=[t.field(i).name for i in range(t.num_fields)],
                                          mask=arr.is_null() if arr.null_count else None)
    values = to_utc(arr.flatten())
    offsets = arr.offsets if not pa.types.is_fixed_size_list(t) else None
    if offsets is None:
        return pa.FixedSizeListArray.from_arrays(values, t.list_size, mask=arr.is_null() if arr.null_count else None)
    if arr.offset:
        import pyarrow.compute as pc

        offsets = pc.subtract(offsets, offsets[0])
    cls = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
    return cls.from_arrays(offsets, values, mask=arr.is_null() if arr.null_count else None)


def _json_column(plain: list[Any], path: str, flags: Flags, row_of: list[int] | None) -> pa.Array:
    import pyarrow as pa

    out: list[str | None] = []
    for i, v in enumerate(plain):
        if v is None:
            out.append(None)
        else:
            out.append(to_json(v))
            flags.add(row_of[i] if row_of is not None else i, f"json:{path}")
    return pa.array(out, type=pa.string())


def _field_name(key: Any) -> str:
    """Column name of a dict key: str keys as they are, UTF-8 bytes decoded (as Arrow names
    them), anything else as str(key)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        try:
            return key.decode()
        except UnicodeDecodeError:
            pass
    return str(key)


def _struct_column(rows: list[dict[str, Any] | None], path: str, flags: Flags, row_of: list[int] | None, depth: int) -> pa.Array:
    import pyarrow as pa

    keys: dict[str, None] = {}
    for r in rows:
        if r:
            for k in r:
                keys[k] = None
    children = []
    names = [_field_name(k) for k in keys]
    if len(set(names)) < len(names) or not all(map(_utf8_ok, names)):
        # Keys 1 and "1" would share a column; a key with lone surrogates cannot name one.
        return _json_column(rows, path, flags, row_of)
    for k, name in zip(keys, names):
        child_values = [None if r is None else r.get(k) for r in rows]
        children.append(column(child_values, f"{path}.{name}", flags, row_of, depth + 1))
    mask = pa.array([r is None for r in rows], type=pa.bool_())
    if not names:
        return pa.nulls(len(rows))
    return pa.StructArray.from_arrays(children, names=names, mask=mask)


def truncate(arr: pa.Array, path: str, cap: int, flags: Flags, parent_rows: Any = None) -> pa.Array:
    """Cut strings and bytes longer than ``cap`` (recursing into structs and lists)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        lengths = pc.binary_length(arr)
        over = pc.greater(lengths, cap)
        if not pc.any(over).as_py():
            return arr
        for i in np.flatnonzero(over.to_numpy(zero_copy_only=False)):
            row = int(parent_rows[i]) if parent_rows is not None else int(i)
            flags.add(row, f"truncated:{path}")
        # Over-long values are rare: cut them one by one, at the last whole UTF-8 character
        # that fits in cap bytes for strings.
        is_text = pa.types.is_string(t) or pa.types.is_large_string(t)
        cut = []
        for value in arr.filter(over).to_pylist():
            if is_text:
                cut.append(value.encode("utf-8", "surrogatepass")[:cap].decode("utf-8", "ignore"))
            else:
                cut.append(value[:cap])
        return pc.replace_with_mask(arr, over, pa.array(cut, type=t))
    if pa.types.is_struct(t):
        children = [truncate(arr.field(i), f"{path}.{t.field(i).name}", cap, flags, parent_rows) for i in range(t.num_fields)]
        if all(c is arr.field(i) for i, c in enumerate(children)):
            return arr
        mask = arr.is_null() if arr.null_count else None
        return pa.StructArray.from_arrays(children, fields=list(t), mask=mask)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if len(arr.values) == 0:
            return arr
        parents = pc.list_parent_indices(arr).to_numpy()
        if parent_rows is not None:
            parents = np.asarray(parent_rows)[parents]
        values = truncate(arr.flatten(), f"{path}[]", cap, flags, parents)
        if values is arr.flatten():
            return arr
        offsets = pc.subtract(arr.offsets, arr.offsets[0]) if arr.offset else arr.offsets
        cls = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
        return cls.from_arrays(offsets, values, mask=arr.is_null() if arr.null_count else None)
    return arr


# ---------------------------------------------------------------- records → rows


def _is_dataframe(x: Any) -> bool:
    t = type(x)
    return t.__name__ == "DataFrame" and t.__module__.startswith("pandas")


def _is_series(x: Any) -> bool:
    t = type(x)
    return t.__name__ == "Series" and t.__module__.startswith("pandas")


def _is_ndarray(x: Any) -> bool:
    t = type(x)
    return t.__name__ == "ndarray" and t.__module__ == "numpy"


def _length(x: Any) -> int | None:
    if x is None or isinstance(x, (str, bytes, dict)):
        return None
    try:
        return len(x)
    except Exception:
        return None


class _Shape:
    """How one call becomes rows: a single row, or a batch of n rows."""

    __slots__ = ("batch", "n", "features", "outputs")

    def __init__(self, batch: bool, n: int, features: Any, outputs: Any) -> None:
        self.batch = batch
        self.n = n
        self.features = features
        self.outputs = outputs


def _bound_args(spec: FunctionSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    sig = spec.signature
    if sig is not None:
        try:
            bound = sig.bind_partial(*args, **kwargs)
        except TypeError:
            pass
        else:
            out = dict(bound.arguments)
            if spec.skip_self and out:
                out.pop(next(iter(out)))
            for name, p in sig.parameters.items():
                if p.kind is p.VAR_KEYWORD and name in out:
                    out.update(out.pop(name))
            return out
    out = {f"arg{i}": a for i, a in enumerate(args[spec.skip_self :])}
    out.update(kwargs)
    return out


def shape_of(spec: FunctionSpec, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any, exc: BaseException | None) -> _Shape:
    """Decide single row or batch, and find the features. Same answer every time it is asked."""
    sel = spec.features
    if callable(sel):
        x = sel(*args, **kwargs)
        auto = False
    elif isinstance(sel, str):
        x = kwargs[sel] if sel in kwargs else _bound_args(spec, args, kwargs).get(sel)
        auto = False
    else:
        i = spec.skip_self
        if len(args) > i:
            x = args[i]
        elif kwargs and spec.signature is not None:
            # The first argument in signature order, as if it had been passed positionally:
            # a mapping / model / frame / array is the features, a scalar falls back below.
            bound = _bound_args(spec, args, kwargs)
            x = next(iter(bound.values())) if bound else None
        else:
            x = None
        auto = True
    t = type(x)
    if t is dict:
        return _Shape(False, 1, x, output)
    if isinstance(x, Mapping):
        return _Shape(False, 1, dict(x), output)
    if hasattr(x, "model_dump") and callable(x.model_dump) and not isinstance(x, type):
        return _Shape(False, 1, x.model_dump(), output)
    # A batch: N input rows and N outputs. A call that raised has no outputs; its N input
    # rows are still a batch, so the inputs are kept row by row, each row marked as an error.
    n_out = _length(output) if exc is None else -1
    if _is_dataframe(x):
        n = len(x)
        if n >= 1 and (n_out == n or (n_out == -1 and n > 1)):
            return _Shape(True, n, x, output)
        if n == 1:
            return _Shape(False, 1, {str(k): v for k, v in x.iloc[0].to_dict().items()}, output)
        # Not one output per row: one row whose features are the frame's columns, as lists.
        return _Shape(False, 1, frame_columns(x), output)
    elif _is_series(x):
        value = _series_value(x)
        return _Shape(False, 1, value if isinstance(value, dict) else {str(x.name or "value"): value}, output)
    elif _is_ndarray(x):
        if x.ndim == 1:
            names = spec.feature_names or tuple(f"f{i}" for i in range(x.shape[0]))
            if len(names) == x.shape[0]:
                return _Shape(False, 1, dict(zip(names, x.tolist())), output)
        elif x.ndim == 2 and x.shape[0] >= 1 and n_out in (x.shape[0], -1):
            return _Shape(True, x.shape[0], x, output)
        elif x.ndim == 2:
            # Not one output per row: one row whose features are the array's columns, as lists.
            given = spec.feature_names
            names = given if given and len(given) == x.shape[1] else tuple(f"f{i}" for i in range(x.shape[1]))
            return _Shape(False, 1, {name: x[:, j].tolist() for j, name in enumerate(names)}, output)
    elif (
        isinstance(x, (list, tuple)) and x and n_out in (len(x), -1)
        and all(isinstance(r, Mapping) for r in x)
    ):
        return _Shape(True, len(x), x, output)
    elif auto and x is None and not args[spec.skip_self :] and not kwargs:
        return _Shape(False, 1, None, output)
    if auto:
        return _Shape(False, 1, _bound_args(spec, args, kwargs), output)
    return _Shape(False, 1, {"value": x} if x is not None else None, output)


def ids_for(rec: tuple[Any, ...]) -> list[str]:
    """Prediction ids of one record (one id, or one per batch row), on demand."""
    spec, args, kwargs, output, exc, t0, _t1, _cpu, _ctx, seq = rec[:10]
    try:
        shape = shape_of(spec, args, kwargs, output, exc)
    except Exception:
        return [_ids.uuid7_str(t0, seq)]
    if shape.batch:
        return [_ids.uuid7_str(t0, seq, i) for i in range(shape.n)]
    return [_ids.uuid7_str(t0, seq)]


def _error_fields(exc: BaseException) -> tuple[str, str]:
    t = type(exc)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    try:
        msg = str(exc)
    except Exception:
        msg = f"<str() of {name} raised>"
    return name, msg


def _confidence(spec: FunctionSpec | _SpecView, pred: Any) -> float | None:
    conf = spec.confidence
    if conf is None or pred is None:
        return None
    if conf == "max":
        value = pred
        if hasattr(value, "tolist"):
            value = value.tolist()
        while isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
            value = value[0]
        if isinstance(value, Mapping):
            value = list(value.values())
        value = max(value)
    elif callable(conf):
        value = conf(pred)
    else:
        return None
    if hasattr(value, "item"):
        value = value.item()
    value = float(value)
    return value


def _confidence_column(spec: FunctionSpec | _SpecView, predictions: list[Any], flags: Flags) -> pa.Array:
    """Confidence of each prediction; a row whose confidence cannot be computed is flagged."""
    import pyarrow as pa

    if spec.confidence is None:
        return pa.nulls(len(predictions), pa.float64())
    out: list[float | None] = []
    for i, pred in enumerate(predictions):
        try:
            out.append(_confidence(spec, pred))
        except Exception:
            out.append(None)
            flags.add(i, "confidence_error")
    return _float_column(out, flags, "confidence")


def _unwrap_single(pred: Any) -> Any:
    """The prediction of a single call as data.

    A vectorised model called on one row returns a length-1 array (or a one-row DataFrame,
    or a length-1 Series): store the element. A one-row DataFrame with several columns is a
    dict; other frames are their columns as lists, other Series a list (or a dict by name).
    """
    if _is_ndarray(pred) and pred.ndim >= 1 and pred.shape[0] == 1:
        return pred[0].tolist() if hasattr(pred[0], "tolist") else pred[0]
    if _is_dataframe(pred):
        if len(pred) == 1:
            row = {str(k): _clean(v) for k, v in pred.iloc[0].to_dict().items()}
            return next(iter(row.values())) if len(row) == 1 else row
        return frame_columns(pred)
    if _is_series(pred):
        return _clean(pred.iloc[0]) if len(pred) == 1 else _series_value(pred)
    if hasattr(pred, "tolist") and hasattr(pred, "ndim"):
        return pred.tolist()
    return pred


def records_to_table(
    records: list[tuple[Any, ...]], flags: Flags, max_value_bytes: int,
) -> Iterator[tuple[pa.Table, list[tuple[Any, ...]]]]:
    """Convert prediction records to tables in the store's predictions schema.

    Yields (table, records) pairs: one table for the single calls (one row per record, in
    order), then one per batch call (its rows, one record), each as soon as it is built (a
    drain of large batch calls never sits in memory whole).
    """
    import numpy as np
    import pyarrow as pa

    fast = _fast_singles(records, flags, max_value_bytes)
    if fast is not None:
        yield fast, records
        return

    ts: list[int] = []
    seqs: list[int] = []
    model: list[str] = []
    version: list[str] = []
    latency: list[float] = []
    cpu: list[float | None] = []
    status: list[str] = []
    etype: list[str | None] = []
    emsg: list[str | None] = []
    req: list[str | None] = []
    user: list[str | None] = []
    features: list[Any] = []
    prediction: list[Any] = []
    confidence: list[float | None] = []
    context: list[Any] = []
    rate: list[float] = []
    batches: list[tuple[int, _Shape, tuple[Any, ...]]] = []
    singles: list[tuple[Any, ...]] = []

    for rec in records:
        spec, args, kwargs, output, exc, t0, t1, cpu_ns, ctx, seq = rec[:10]
        try:
            shape = shape_of(spec, args, kwargs, output, exc)
        except Exception as e:  # the features selector raised: keep the call, flag it
            shape = _Shape(False, 1, {"_features_error": to_json(f"{type(e).__name__}: {e}")}, output)
            flags.add(len(ts), "features_error")
        if shape.batch:
            batches.append((len(batches), shape, rec))
            continue
        row = len(ts)
        singles.append(rec)
        ts.append(t0)
        seqs.append(seq)
        model.append(spec.model)
        version.append(spec.version)
        latency.append((t1 - t0) / 1e6)
        cpu.append(min(cpu_ns, t1 - t0) / 1e6 if cpu_ns >= 0 else None)
        if ctx is not None:
            req.append(ctx.request_id)
            user.append(ctx.user_id)
            context.append(ctx.extra or None)
        else:
            req.append(None)
            user.append(None)
            context.append(None)
        features.append(shape.features)
        rate.append(spec.sample_rate if exc is None else 1.0)
        if exc is not None:
            name, msg = _error_fields(exc)
            status.append("error")
            etype.append(name)
            emsg.append(msg)
            prediction.append(None if spec.kind in ("sync", "async") else output or None)
            confidence.append(None)
            continue
        status.append("ok")
        etype.append(None)
        emsg.append(None)
        try:
            pred = spec.prediction(output) if spec.prediction is not None else _unwrap_single(output)
        except Exception as e:
            pred = output
            flags.add(row, f"prediction_error:{type(e).__name__}")
        prediction.append(pred)
        try:
            conf = _confidence(spec, pred)
            confidence.append(conf)
        except Exception:
            confidence.append(None)
            flags.add(row, "confidence_error")

    if ts:
        ts_arr = np.asarray(ts, dtype=np.int64)
        data, n = _ids.uuid7_array(ts_arr, np.asarray(seqs, dtype=np.uint64), None)
        ids = _fixed_strings(data, n, 36)
        cols = {
            "prediction_id": ids,
            "ts": pa.array(ts_arr // 1000, type=pa.timestamp("us", tz="UTC")),
            "model": pa.array(model, type=pa.string()),
            "model_version": pa.array(version, type=pa.string()),
            "latency_ms": pa.array(latency, type=pa.float64()),
            "cpu_ms": pa.array(cpu, type=pa.float64()),
            "status": pa.array(status, type=pa.string()),
            "error_type": pa.array(etype, type=pa.string()),
            "error_message": _str_column(emsg, "error_message", flags),
            "request_id": _str_column(req, "request_id", flags),
            "user_id": _str_column(user, "user_id", flags),
            "features": column(features, "features", flags),
            "prediction": column(prediction, "prediction", flags),
            "confidence": _float_column(confidence, flags, "confidence"),
            "context": column(context, "context", flags),
            "sample_rate": pa.array(rate, type=pa.float64()),
        }
        yield _finish(cols, flags, max_value_bytes), singles
    for _, shape, rec in batches:
        bflags = Flags()
        try:
            table = _batch_table(shape, rec, bflags, max_value_bytes)
        except Exception:  # Arrow (or a user object inside it) refused
            # Could not build the batch column-wise: keep every row as JSON rather than lose it.
            table = _batch_fallback(shape, rec, bflags, max_value_bytes)
        yield table, [rec]


_SCALAR_TYPES = frozenset({float, int, str, bool, type(None)})


def _dict_rows(rows: list[dict[Any, Any]], path: str, flags: Flags) -> pa.Array:
    """A struct column from dicts; fast when every row has the same keys (the usual case).

    The rows are transposed with C-level ``itemgetter`` and ``zip`` and each field becomes
    one Arrow array, which is several times faster than Arrow's row-wise dict converter.
    """
    import pyarrow as pa

    first = rows[0]
    keys = tuple(first)
    k = len(keys)
    if not k or set(map(len, rows)) != {k} or not all(type(key) is str and _utf8_ok(key) for key in keys):
        return column(rows, path, flags)
    try:
        values = list(map(itemgetter(*keys), rows))
    except Exception:  # a row with other keys (KeyError), or a user Mapping acting up
        return column(rows, path, flags)
    fields = [values] if k == 1 else zip(*values)
    children = [column(list(c), f"{path}.{key}", flags) for key, c in zip(keys, fields)]
    return pa.StructArray.from_arrays(children, names=list(keys))


def _fast_singles(records: list[tuple[Any, ...]], flags: Flags, max_value_bytes: int) -> pa.Table | None:
    """Column-wise conversion of the common case, or None to take the general path.

    The common case: single calls of one function, none raised, features are the first
    argument and a plain dict. Every per-row step is a C-level map, zip or numpy operation.
    """
    import numpy as np
    import pyarrow as pa

    n = len(records)
    specs, args, _kwargs, outputs, excs, t0s, t1s, cpus, ctxs, seqs, _otel = zip(*records)
    spec = specs[0]
    if spec.features is not None or specs.count(spec) != n or excs.count(None) != n:
        return None
    try:
        firsts = list(map(itemgetter(spec.skip_self), args))
    except IndexError:
        return None
    if set(map(type, firsts)) != {dict}:
        return None

    if spec.prediction is None and set(map(type, outputs)) <= _SCALAR_TYPES:
        predictions: list[Any] = list(outputs)
    else:
        predictions = []
        for i, out in enumerate(outputs):
            try:
                predictions.append(spec.prediction(out) if spec.prediction is not None else _unwrap_single(out))
            except Exception as e:
                predictions.append(out)
                flags.add(i, f"prediction_error:{type(e).__name__}")
    confidence = _confidence_column(spec, predictions, flags)

    if ctxs.count(None) == n:
        request_id = user_id = pa.nulls(n, pa.string())
        context = pa.nulls(n, pa.null())
    else:
        request_id = _str_column([c.request_id if c is not None else None for c in ctxs], "request_id", flags)
        user_id = _str_column([c.user_id if c is not None else None for c in ctxs], "user_id", flags)
        context = column([c.extra or None if c is not None else None for c in ctxs], "context", flags)

    t0 = np.array(t0s, dtype=np.int64)
    cpu = np.array(cpus, dtype=np.float64)
    data, _ = _ids.uuid7_array(t0, np.array(seqs, dtype=np.uint64), None)
    cols = {
        "prediction_id": _fixed_strings(data, n, 36),
        "ts": pa.array(t0 // 1000, type=pa.timestamp("us", tz="UTC")),
        "model": pa.repeat(pa.scalar(spec.model, pa.string()), n),
        "model_version": pa.repeat(pa.scalar(spec.version, pa.string()), n),
        "latency_ms": pa.array((np.array(t1s, dtype=np.int64) - t0) / 1e6),
        # The thread CPU clock can run a hair ahead of the wall clock: CPU time never exceeds
        # the call's wall time for one thread, so clamp.
        "cpu_ms": pa.array(np.minimum(cpu, np.array(t1s, dtype=np.int64) - t0) / 1e6, mask=cpu < 0),
        "status": pa.repeat(pa.scalar("ok", pa.string()), n),
        "request_id": request_id,
        "user_id": user_id,
        "features": _dict_rows(firsts, "features", flags),
        "prediction": column(predictions, "prediction", flags),
        "confidence": confidence,
        "context": context,
        "sample_rate": pa.array(np.full(n, spec.sample_rate, dtype=np.float64)),
    }
    return _finish(cols, flags, max_value_bytes)


def _fixed_strings(data: bytes, n: int, width: int) -> pa.Array:
    import numpy as np
    import pyarrow as pa

    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def _str_column(values: list[Any], path: str, flags: Flags) -> pa.Array:
    import pyarrow as pa

    try:
        return pa.array(values, type=pa.string())
    except Exception:  # Arrow (or a user object inside it) refused
        out = []
        for v in values:
            text = None if v is None else str(v)
            if text is not None and not _utf8_ok(text):  # lone surrogates: keep them readable, escaped
                text = text.encode("utf-8", "backslashreplace").decode("utf-8")
            out.append(text)
        return pa.array(out, type=pa.string())


def _float_column(values: list[Any], flags: Flags, path: str) -> pa.Array:
    import pyarrow as pa

    try:
        return pa.array(values, type=pa.float64())
    except Exception:  # Arrow (or a user object inside it) refused
        out = []
        for i, v in enumerate(values):
            try:
                out.append(None if v is None else float(v))
            except Exception:
                out.append(None)
                flags.add(i, f"invalid:{path}")
        return pa.array(out, type=pa.float64())


# The predictions columns in store order, with the type a column gets when it is absent
# (ts, features and prediction are always given).
_PREDICTION_COLUMNS = (
    ("prediction_id", "string"), ("ts", "null"), ("model", "string"), ("model_version", "string"),
    ("latency_ms", "float64"), ("cpu_ms", "float64"), ("status", "string"), ("error_type", "string"),
    ("error_message", "string"), ("request_id", "string"), ("user_id", "string"), ("batch_id", "string"),
    ("batch_index", "int32"), ("batch_size", "int32"), ("trace_id", "string"), ("span_id", "string"),
    ("features", "null"), ("prediction", "null"), ("confidence", "float64"), ("context", "null"),
    ("sample_rate", "float64"),
)


def _finish(cols: dict[str, pa.Array], flags: Flags, max_value_bytes: int) -> pa.Table:
    """Order the columns as the store format does, fill absent ones with nulls, truncate
    long values and add the ``flags`` column."""
    import pyarrow as pa

    n = len(cols["prediction_id"])
    ordered = {
        name: cols[name] if name in cols else pa.nulls(n, getattr(pa, typ)())
        for name, typ in _PREDICTION_COLUMNS
    }
    for name in ("features", "prediction", "context"):
        ordered[name] = to_utc(ordered[name])
    for name in ("error_message", "request_id", "user_id", "features", "prediction", "context"):
        ordered[name] = truncate(ordered[name], name, max_value_bytes, flags)
    ordered[FLAGS] = flags_column(flags, n)
    return pa.table(ordered)


FLAGS = "capture_flags"
"""The column listing what was changed on the way in (``flags`` in files of predlog < 0.2)."""


def flags_column(flags: Flags, n: int) -> pa.Array:
    import pyarrow as pa

    if flags.rows:
        return pa.array([flags.rows.get(i) for i in range(n)], type=pa.list_(pa.string()))
    return pa.nulls(n, pa.list_(pa.string()))


def _batch_features(spec: FunctionSpec, shape: _Shape, flags: Flags) -> pa.Array:
    import pyarrow as pa

    x = shape.features
    if _is_dataframe(x):
        try:
            table = pa.Table.from_pandas(x, preserve_index=False, nthreads=1)
            names = [str(c) for c in table.column_names]
            arrays = [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in table.columns]
            if not arrays:
                return pa.nulls(shape.n)
            if not any(_has_empty_struct(a.type) for a in arrays):
                return pa.StructArray.from_arrays(arrays, names=names)
        except Exception:  # Arrow (or a user object inside it) refused
            pass
        return column([{str(k): v for k, v in r.items()} for r in x.to_dict("records")], "features", flags)
    if _is_ndarray(x):
        ncols = x.shape[1]
        given = spec.feature_names
        names = list(given) if given and len(given) == ncols else [f"f{i}" for i in range(ncols)]
        try:
            if x.dtype.kind in "biuf":
                arrays = [pa.array(x[:, j]) for j in range(ncols)]
                return pa.StructArray.from_arrays(arrays, names=names)
        except Exception:  # Arrow (or a user object inside it) refused
            pass
        return column([dict(zip(names, row)) for row in x.tolist()], "features", flags)
    return column([_plain(r) for r in x], "features", flags)


def _batch_predictions(spec: FunctionSpec | _SpecView, output: Any, n: int, flags: Flags) -> tuple[pa.Array, pa.Array]:
    import numpy as np
    import pyarrow as pa

    conf = None
    if spec.prediction is not None:
        try:
            output = spec.prediction(output)
        except Exception as e:  # keep the raw output, as for single calls
            for i in range(n):
                flags.add(i, f"prediction_error:{type(e).__name__}")
    if _is_ndarray(output):
        if output.ndim == 1:
            pred = pa.array(output) if output.dtype.kind in "biufUSM?" else column(output.tolist(), "prediction", flags)
        else:
            rows = output.reshape(n, -1)
            pred = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), rows.shape[1]) if rows.dtype.kind in "biuf" else column(rows.tolist(), "prediction", flags)
            if pa.types.is_fixed_size_list(pred.type):
                pred = pred.cast(pa.list_(pred.type.value_type))
            if spec.confidence == "max" and rows.dtype.kind in "biuf":
                conf = pa.array(rows.max(axis=1).astype(np.float64))
    elif _is_dataframe(output) and output.shape[1] > 1:
        # Several output columns (e.g. a class and a score): one struct per row, by name.
        pred = column([dict(zip(map(str, output.columns), row)) for row in output.itertuples(index=False)],
                      "prediction", flags)
    elif _is_dataframe(output):
        return _batch_predictions(_SpecView(spec), output.iloc[:, 0].to_numpy(), n, flags)
    elif _is_series(output):
        return _batch_predictions(_SpecView(spec), output.to_numpy(), n, flags)
    else:
        pred = column([_plain(o) for o in output], "prediction", flags)
    if conf is None:
        if spec.confidence is None:
            conf = pa.nulls(n, pa.float64())
        else:
            conf = _confidence_column(spec, pred.to_pylist(), flags)
    return pred, conf


class _SpecView:
    """The spec without its ``prediction`` extractor (already applied)."""

    __slots__ = ("_spec",)
    prediction = None

    def __init__(self, spec: FunctionSpec | _SpecView) -> None:
        self._spec = spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)


def _batch_table(shape: _Shape, rec: tuple[Any, ...], flags: Flags, max_value_bytes: int) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    spec, args, kwargs, output, exc, t0, t1, cpu_ns, ctx, seq = rec[:10]
    n = shape.n
    data, _ = _ids.uuid7_array(np.full(n, t0, dtype=np.int64), np.full(n, seq, dtype=np.uint64), np.arange(n, dtype=np.uint64))
    ids = _fixed_strings(data, n, 36)
    if exc is None:
        pred, conf = _batch_predictions(spec, output, n, flags)
        status, etype, emsg = "ok", None, None
    else:
        pred, conf = pa.nulls(n, pa.null()), pa.nulls(n, pa.float64())
        status = "error"
        etype, emsg = _error_fields(exc)
    call_latency = (t1 - t0) / 1e6  # every row of a batch carries the whole call's latency
    ctx_extra = ctx.extra if ctx is not None and ctx.extra else None
    context = column([ctx_extra] * n, "context", flags) if ctx_extra else pa.nulls(n, pa.null())

    def rep(value: Any, typ: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, typ), n) if value is not None else pa.nulls(n, typ)

    cols = {
        "prediction_id": ids,
        "ts": pa.array(np.full(n, t0 // 1000, dtype=np.int64), type=pa.timestamp("us", tz="UTC")),
        "model": rep(spec.model, pa.string()),
        "model_version": rep(spec.version, pa.string()),
        "latency_ms": rep(call_latency, pa.float64()),
        "cpu_ms": rep(min(cpu_ns, t1 - t0) / 1e6 if cpu_ns >= 0 else None, pa.float64()),
        "status": rep(status, pa.string()),
        "error_type": rep(etype, pa.string()),
        "error_message": rep(emsg, pa.string()),
        "request_id": rep(ctx.request_id if ctx else None, pa.string()),
        "user_id": rep(ctx.user_id if ctx else None, pa.string()),
        "batch_id": rep(_ids.uuid7_str(t0, seq), pa.string()),
        "batch_index": pa.array(np.arange(n, dtype=np.int32)),
        "batch_size": rep(n, pa.int32()),
        "features": _batch_features(spec, shape, flags),
        "prediction": pred,
        "confidence": conf,
        "context": context,
        "sample_rate": rep(spec.sample_rate if exc is None else 1.0, pa.float64()),
    }
    return _finish(cols, flags, max_value_bytes)


def _batch_fallback(shape: _Shape, rec: tuple[Any, ...], flags: Flags, max_value_bytes: int) -> pa.Table:
    """Last resort for a batch Arrow would not take column-wise: one JSON value per row."""
    spec, args, kwargs, output, exc, t0, t1, cpu_ns, ctx, seq = rec[:10]
    n = shape.n
    x = shape.features
    if _is_dataframe(x):
        feats = x.to_dict("records")
    elif _is_ndarray(x):
        feats = x.tolist()
    else:
        feats = list(x)
    try:
        outs = list(output)
    except Exception:
        outs = [output] * n
    singles = Flags()
    sub: list[tuple[Any, ...]] = [(_RowSpec(spec), (feats[i],), {}, outs[i] if i < len(outs) else None, None, t0, t1, cpu_ns, ctx, seq, None) for i in range(n)]
    import pyarrow as pa

    import numpy as np

    tables = [t for t, _ in records_to_table(sub, singles, max_value_bytes)]
    table = pa.concat_tables(tables, promote_options="permissive")
    # Rows keep the identity of the batch call they came from.
    data, _ = _ids.uuid7_array(np.full(n, t0, dtype=np.int64), np.full(n, seq, dtype=np.uint64), np.arange(n, dtype=np.uint64))
    fixes = {
        "prediction_id": _fixed_strings(data, n, 36),
        "batch_id": pa.repeat(pa.scalar(_ids.uuid7_str(t0, seq), pa.string()), n),
        "batch_index": pa.array(np.arange(n, dtype=np.int32)),
        "batch_size": pa.repeat(pa.scalar(n, pa.int32()), n),
    }
    if exc is not None:
        etype, emsg = _error_fields(exc)
        fixes["status"] = pa.repeat(pa.scalar("error", pa.string()), n)
        fixes["error_type"] = pa.repeat(pa.scalar(etype, pa.string()), n)
        fixes["error_message"] = pa.repeat(pa.scalar(emsg, pa.string()), n)
    for name, arr in fixes.items():
        table = table.set_column(table.schema.get_field_index(name), name, arr)
    return table


class _RowSpec:
    """A spec view that treats one row of a failed batch as a single call."""

    __slots__ = ("_spec",)
    features = None
    prediction = None
    skip_self = 0
    signature = None
    kind = "sync"

    def __init__(self, spec: FunctionSpec) -> None:
        self._spec = spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)


# ---------------------------------------------------------------- labels


def label_kind(value: Any) -> str:
    """The family of a label value: labels of one family share a file and a column type.

    A batch of labels of several families (a spam model's ``"ham"`` beside a churn model's
    ``1``) becomes one table per family, so that no label is widened to another's type.
    """
    if value is None or _is_missing(value):
        return "null"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "bool"
    if isinstance(value, int) or (type(value).__module__ == "numpy" and getattr(value, "dtype", None) is not None
                                  and value.dtype.kind in "iu" and getattr(value, "ndim", 1) == 0):
        return "int"
    if isinstance(value, float) or (type(value).__module__ == "numpy" and getattr(value, "dtype", None) is not None
                                    and value.dtype.kind == "f" and getattr(value, "ndim", 1) == 0):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, Mapping) or (hasattr(value, "model_dump") and not isinstance(value, type)):
        return "struct"
    if isinstance(value, (list, tuple)) or _is_ndarray(value) or _is_series(value):
        return "list"
    return f"other:{type(value).__qualname__}"


def labels_to_tables(records: list[tuple[Any, ...]], max_value_bytes: int) -> list[pa.Table]:
    """Label records ``(LABEL, prediction_id, request_id, label, extra, ts_ns)`` → labels tables,
    one per :func:`label_kind` family (in order of first appearance)."""
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for r in records:
        groups.setdefault(label_kind(r[3]), []).append(r)
    return [_labels_table(group, max_value_bytes) for group in groups.values()]


def _labels_table(records: list[tuple[Any, ...]], max_value_bytes: int) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    flags = Flags()
    ts = np.asarray([r[5] for r in records], dtype=np.int64)
    cols = {
        "prediction_id": _str_column([r[1] for r in records], "prediction_id", flags),
        "request_id": _str_column([r[2] for r in records], "request_id", flags),
        "ts": pa.array(ts // 1000, type=pa.timestamp("us", tz="UTC")),
        "label": to_utc(column([_plain(r[3]) for r in records], "label", flags)),
        "extra": to_utc(column([r[4] or None for r in records], "extra", flags)),
    }
    for name in ("label", "extra"):
        cols[name] = truncate(cols[name], name, max_value_bytes, flags)
    cols[FLAGS] = flags_column(flags, len(records))
    return pa.table(cols)
