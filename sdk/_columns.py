"""Python values → Arrow columns, never failing: the one place that decides how a value is stored.

The fast path hands whole columns to Arrow's C++ converter. When Arrow refuses a column, or
would change values on the way in (a number after a datetime, a bool among floats, str and
bytes together), the column is rebuilt: dicts pivot into struct fields, scalars of several
types become their text (flagged ``text:<path>``), and only what Arrow cannot hold becomes
JSON text (flagged ``json:<path>``). Strings and bytes longer than the cap are cut and
flagged ``truncated:<path>``. Datetimes are stored in UTC, naive ones taken as UTC.

Whole columns (a pandas Series, a numpy or Arrow array: :func:`frame_column`) follow the
same rules without a Python value per row where their dtype says what they hold.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "FLAGS",
    "Flags",
    "clean",
    "column",
    "flags_column",
    "float_column",
    "frame_column",
    "frame_columns",
    "has_empty_struct",
    "is_dataframe",
    "is_missing",
    "is_ndarray",
    "is_series",
    "is_typed_column",
    "plain",
    "series_value",
    "store_type",
    "str_column",
    "to_json",
    "to_utc",
    "truncate",
    "utf8_ok",
]


class Flags:
    """Per-row flags collected while converting (sparse: most rows have none)."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[int, list[str]] = {}

    def add(self, row: int, flag: str) -> None:
        self.rows.setdefault(row, []).append(flag)


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
    if not utf8_ok(text):
        # Lone surrogates cannot be UTF-8; as \u escapes they still load back exactly.
        text = json.dumps(json.loads(text))
    return text


def utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def plain(value: Any) -> Any:
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


def is_missing(value: Any) -> bool:
    """pandas' missing-value markers (``pd.NA``, ``pd.NaT``), stored as null."""
    name = type(value).__name__
    return (name == "NAType" or name == "NaTType") and type(value).__module__.startswith("pandas")


def series_value(s: Any) -> Any:
    """A Series as data: a dict when its index holds names (one row of features), else a list."""
    if len(s) and all(type(k) is str for k in s.index):
        return {k: clean(v) for k, v in zip(s.index, s.tolist())}
    return [clean(v) for v in s.tolist()]


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
        out[str(c)] = [clean(v) for v in values]
    return out


def clean(value: Any, depth: int = 0) -> Any:
    """Plain Python data for Arrow, recursively: pandas and numpy containers become lists and
    dicts, pandas' missing markers become None. Only used once Arrow refused the plain values."""
    t = type(value)
    if t is str or t is float or t is int or t is bool or value is None or depth > 32:
        return value
    if is_missing(value):
        return None
    if is_dataframe(value):
        return frame_columns(value)
    if is_series(value):
        return series_value(value)
    if t is dict or isinstance(value, Mapping):
        return {k: clean(v, depth + 1) for k, v in value.items()}
    if t is list or t is tuple:
        return [clean(v, depth + 1) for v in value]
    if hasattr(value, "model_dump") and callable(value.model_dump) and not isinstance(value, type):
        return clean(value.model_dump(), depth + 1)
    if is_ndarray(value):
        return clean(value.tolist(), depth + 1) if value.ndim else clean(value.item(), depth + 1)
    if t.__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def has_empty_struct(t: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(t):
        return t.num_fields == 0 or any(has_empty_struct(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return has_empty_struct(t.value_type)
    if pa.types.is_map(t):
        return has_empty_struct(t.item_type) or has_empty_struct(t.key_type)
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
        elif is_ndarray(v):
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
    if has_empty_struct(t) or _has_duplicate_fields(t):  # Parquet cannot hold these
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
        return all(
            v is None or is_missing(v) or (isinstance(v, dt.date) and not isinstance(v, dt.datetime)) for v in values
        )
    elif pa.types.is_time(t):
        want = (dt.time,)
    elif pa.types.is_duration(t):
        want = (dt.timedelta,)
    else:
        return True
    return all(
        v is None
        or is_missing(v)
        or isinstance(v, want)
        or (type(v).__module__ == "numpy" and getattr(getattr(v, "dtype", None), "kind", "") in ("M", "m"))
        for v in values
    )


def column(values: list[Any], path: str, flags: Flags, row_of: list[int] | None = None, depth: int = 0) -> pa.Array:
    """Build one Arrow array from Python values, never raising.

    ``row_of[i]`` is the table row that ``values[i]`` belongs to (for flags); None means i.
    Values of one type keep it; numbers of mixed kinds widen (int and float → float); other
    mixes of scalars become text (see :func:`_text_column`); the rest that Arrow cannot hold
    becomes JSON text. Datetimes are stored in UTC, naive ones taken as UTC.
    """
    arr = _as_arrow(values)
    if arr is not None:
        return arr
    # Arrow refused the column as a whole. Pivot dicts into fields; widen scalars; JSON the rest.
    plain = [clean(v) for v in values]
    if depth < 16 and plain and all(v is None or type(v) is dict for v in plain) and any(v for v in plain):
        return _struct_column(plain, path, flags, row_of, depth)
    arr = _as_arrow(plain)
    if arr is not None:
        return arr
    kinds = {type(v) for v in plain if v is not None}
    if len(kinds) > 1 and kinds <= _TEXT_SCALARS and all(type(v) is not str or utf8_ok(v) for v in plain):
        return _text_column(plain, path, flags, row_of)
    # Empty dicts end here too: Parquet cannot hold a struct without fields, JSON can ("{}").
    return _json_column(plain, path, flags, row_of)


def _as_arrow(values: list[Any]) -> pa.Array | None:
    """Arrow's own conversion of ``values`` when it keeps them as they are, else None."""
    import pyarrow as pa

    try:
        arr = pa.array(values)
    except Exception:  # Arrow (or a user object inside it) refused
        return None
    return arr if _storable(arr, values) else None


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
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


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
        return pa.StructArray.from_arrays(
            children,
            names=[t.field(i).name for i in range(t.num_fields)],
            mask=arr.is_null() if arr.null_count else None,
        )
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
        with contextlib.suppress(UnicodeDecodeError):  # not UTF-8: its repr below
            return key.decode()
    return str(key)


def _struct_column(
    rows: list[dict[str, Any] | None], path: str, flags: Flags, row_of: list[int] | None, depth: int
) -> pa.Array:
    import pyarrow as pa

    keys: dict[str, None] = {}
    for r in rows:
        if r:
            for k in r:
                keys[k] = None
    children = []
    names = [_field_name(k) for k in keys]
    if len(set(names)) < len(names) or not all(map(utf8_ok, names)):
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
        children = [
            truncate(arr.field(i), f"{path}.{t.field(i).name}", cap, flags, parent_rows) for i in range(t.num_fields)
        ]
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


def is_dataframe(x: Any) -> bool:
    t = type(x)
    return t.__name__ == "DataFrame" and t.__module__.startswith("pandas")


def is_series(x: Any) -> bool:
    t = type(x)
    return t.__name__ == "Series" and t.__module__.startswith("pandas")


def is_ndarray(x: Any) -> bool:
    t = type(x)
    return t.__name__ == "ndarray" and t.__module__ == "numpy"


def str_column(values: list[Any], path: str, flags: Flags) -> pa.Array:
    import pyarrow as pa

    try:
        return pa.array(values, type=pa.string())
    except Exception:  # Arrow (or a user object inside it) refused
        out = []
        for v in values:
            text = None if v is None else str(v)
            if text is not None and not utf8_ok(text):  # lone surrogates: keep them readable, escaped
                text = text.encode("utf-8", "backslashreplace").decode("utf-8")
            out.append(text)
        return pa.array(out, type=pa.string())


def float_column(values: list[Any], flags: Flags, path: str) -> pa.Array:
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


FLAGS = "capture_flags"


def flags_column(flags: Flags, n: int) -> pa.Array:
    import pyarrow as pa

    if flags.rows:
        return pa.array([flags.rows.get(i) for i in range(n)], type=pa.list_(pa.string()))
    return pa.nulls(n, pa.list_(pa.string()))


def store_type(t: pa.DataType) -> pa.DataType:
    """The type predlog stores for values of Arrow type ``t``, at any depth.

    Categoricals (dictionaries) as their values, large and view strings, binaries and lists
    as the plain ones, fixed-size lists as lists, timestamps as ``timestamp[us, UTC]`` (naive
    ones taken as UTC), durations in µs, date64 as date32: the types capture gives the same
    values when they come one by one as Python objects.
    """
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return store_type(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_duration(t):
        return pa.duration("us")
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t):
        return pa.list_(store_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, store_type(f.type)) for f in t])
    return t


def _missing_as_none(values: list[Any]) -> list[Any]:
    """pandas' missing values (None, NaN, ``pd.NA``, ``pd.NaT``) of an object column as None."""
    return [None if v is None or (isinstance(v, float) and v != v) or is_missing(v) else v for v in values]


def is_typed_column(col: Any) -> bool:
    """Whether a column's type says what its values are: an Arrow array, or a numpy array or
    pandas column (Series, Categorical, extension array) of any dtype but ``object``."""
    import numpy as np
    import pyarrow as pa

    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return True
    if not (is_ndarray(col) or (type(col).__module__.startswith("pandas") and hasattr(col, "dtype"))):
        return False
    return not (isinstance(col.dtype, np.dtype) and col.dtype.kind == "O")


def frame_column(col: Any, path: str, flags: Flags) -> pa.Array:
    """One column of a frame as capture stores its values, never failing.

    ``col`` is a pandas Series, a numpy array, an Arrow array or a sequence of values. Typed
    columns are converted whole (missing values and the NaN of float columns are null, as
    for the rows of a batch call) and given their :func:`store_type`; object columns and
    sequences go value by value through :func:`column` (mixed scalars become text, what
    Arrow cannot hold JSON, flagged). A 2-D numpy array is a list per row.
    """
    import pyarrow as pa

    arr: pa.Array | None = None
    if isinstance(col, pa.ChunkedArray):
        arr = col.combine_chunks()
    elif isinstance(col, pa.Array):
        arr = col
    elif is_ndarray(col) or (type(col).__module__.startswith("pandas") and hasattr(col, "dtype")):
        # numpy arrays and pandas columns (Series, Categorical, extension arrays)
        if not is_typed_column(col):  # dtype object: the values say what they are
            return column(_missing_as_none(col.tolist()), path, flags)
        dtype = col.dtype
        if is_ndarray(col) and col.ndim == 2 and dtype.kind in "biuf":
            flat = pa.array(col.ravel(), from_pandas=True)
            arr = pa.FixedSizeListArray.from_arrays(flat, col.shape[1])
        elif not is_ndarray(col) or col.ndim == 1:
            try:
                got = pa.array(col, from_pandas=True)
            except Exception:  # a dtype Arrow has no converter for (periods, intervals, ...)
                got = None
            # Arrow-backed pandas columns come back chunked when they were concatenated
            arr = got.combine_chunks() if isinstance(got, pa.ChunkedArray) else got
        if arr is None:
            return column(_missing_as_none([clean(v) for v in col.tolist()]), path, flags)
    else:
        return column(list(col), path, flags)
    if isinstance(arr.type, pa.BaseExtensionType) or has_empty_struct(arr.type) or _has_duplicate_fields(arr.type):
        return column(arr.to_pylist(), path, flags)  # values Parquet cannot hold as such
    target = store_type(arr.type)
    if target != arr.type:
        # Unsafe only for the cut of timestamps and durations to µs (Python's own precision).
        arr = arr.cast(target, safe=False)
    return arr
