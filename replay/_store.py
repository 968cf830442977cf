"""The query layer of the replay store: DuckDB views over the store's Parquet files.

Every query lists the store's files again (writers seal new files, maintenance swaps them),
builds two temporary views on a fresh cursor of one locked DuckDB connection, runs, and
closes the cursor:

- ``predictions``: ``read_parquet([files], hive_partitioning=true, union_by_name=true)`` over
  the files of the models and UTC date partitions the query asks for;
- ``labels``: the same over the label files.

Files whose schemas DuckDB cannot unify (a column that is a scalar in some files and a list
or struct in others, typically ``prediction`` across two models) are read in groups that it
can, and the groups are combined with ``UNION ALL BY NAME``; the disagreeing column (or only
the disagreeing struct field) is then returned as JSON text. Pass ``model=...`` to get its
natural type back.

The connection can read only the store's directory (``allowed_directories``,
``enable_external_access=false``, ``lock_configuration=true``), and :meth:`Store.sql` runs
only single ``SELECT`` statements, so SQL given to a store cannot read or write other files.
Values given to the filter arguments are always bound as query parameters, and column names
are checked against the schema.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, Union

from . import _files
from ._errors import (
    DURATION_FORMS,
    TIME_FORMS,
    FilterError,
    PredictionNotFoundError,
    QueryNotAllowedError,
    StoreError,
    StoreNotFoundError,
    TimeBoundError,
    UnknownColumnError,
    UnknownModelError,
    UnsupportedStoreError,
)

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger("predlog")

__all__ = ["Store"]

T = TypeVar("T")

TimeBound = Union[dt.datetime, dt.date, str, None]
Names = Union[str, Sequence[str], None]
Where = Union[Mapping[str, Any], str, None]

_RETRIES = 10
_UTC = dt.timezone.utc


# ---------------------------------------------------------------- SQL text


def _lit(text: str) -> str:
    """A SQL string literal (quotes doubled; DuckDB strings have no backslash escapes)."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _path_list(paths: Iterable[str]) -> str:
    return "[" + ", ".join(_lit(p) for p in paths) + "]"


# ---------------------------------------------------------------- time bounds


def _parse_time(value: Any, name: str) -> dt.datetime | None:
    """A time bound as an aware UTC datetime; naive values are UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed: dt.datetime | dt.date = dt.datetime.fromisoformat(text)
        except ValueError:
            try:
                parsed = dt.date.fromisoformat(text)
            except ValueError:
                raise TimeBoundError(f"{name}={value!r} is not a time: pass {TIME_FORMS}") from None
        value = parsed
    if type(value).__name__ == "NaTType":
        raise TimeBoundError(f"{name}=NaT is not a time: pass {TIME_FORMS}")
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            value = value.replace(tzinfo=_UTC)
        out = value.astimezone(_UTC)
        # pandas Timestamps keep nanoseconds that datetime cannot: drop them (storage is µs)
        return dt.datetime(out.year, out.month, out.day, out.hour, out.minute, out.second, out.microsecond, tzinfo=_UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=_UTC)
    if type(value).__module__ == "numpy" and hasattr(value, "dtype") and "datetime64" in str(value.dtype):
        import pandas as pd

        return _parse_time(pd.Timestamp(value).to_pydatetime(), name)
    raise TimeBoundError(f"{name}={value!r} ({type(value).__name__}) is not a time: pass {TIME_FORMS}")


_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?|w|weeks?)\s*", re.I)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_duration(value: Any, name: str) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        delta = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise TimeBoundError(f"{name}={value!r} is not a duration: pass {DURATION_FORMS}")
        delta = dt.timedelta(seconds=value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        unit = m.group(2).lower()
        key = "m" if unit.startswith("m") else unit[0]
        delta = dt.timedelta(seconds=float(m.group(1)) * _UNIT_S[key])
    else:
        raise TimeBoundError(f"{name}={value!r} is not a duration: pass {DURATION_FORMS}")
    if delta <= dt.timedelta(0):
        raise TimeBoundError(f"{name}={value!r} must be a positive duration ({DURATION_FORMS})")
    return delta


def _window(start: Any, end: Any, last: Any = None, days: Any = None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``[start, end)`` as aware UTC datetimes (either may be None = unbounded)."""
    lo = _parse_time(start, "start")
    hi = _parse_time(end, "end")
    if last is not None or days is not None:
        if last is not None and days is not None:
            raise TimeBoundError("pass last=... or days=..., not both")
        if lo is not None:
            raise TimeBoundError("pass start=... or last=/days=..., not both")
        delta = _parse_duration(last, "last") if last is not None else _days(days)
        lo = (hi or dt.datetime.now(_UTC)) - delta
    if lo is not None and hi is not None and hi < lo:
        raise TimeBoundError(f"end ({hi.isoformat()}) is before start ({lo.isoformat()})")
    return lo, hi


def _days(value: Any) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise TimeBoundError(f"days={value!r} must be a positive number of days")
    return dt.timedelta(days=value)


def _date_range(lo: dt.datetime | None, hi: dt.datetime | None) -> tuple[dt.date | None, dt.date | None]:
    """UTC date partitions that can hold rows of ``[lo, hi)``."""
    return (
        None if lo is None else lo.date(),
        None if hi is None else (hi - dt.timedelta(microseconds=1)).date(),
    )


# ---------------------------------------------------------------- schema shapes
#
# A shape is a hashable summary of an Arrow type saying what DuckDB can unify:
#   ("null",) | ("scalar", family) | ("list", shape) | ("map", shape, shape)
#   | ("struct", ((name, shape), ...)) | ("json",)
# Scalars of one family unify; a string unifies with numbers and times (to a string). Other
# pairs (scalar vs list/struct, list vs struct, numbers vs times, ...) do not: such a value is
# read as JSON text ("json") when files that disagree are queried together.

Shape = tuple[Any, ...]
NULL: Shape = ("null",)
JSON: Shape = ("json",)
_TO_STR = frozenset({"num", "str", "time", "dur"})


def shape_of(t: pa.DataType) -> Shape:
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(t):
        return shape_of(t.value_type)
    if types.is_null(t):
        return NULL
    if types.is_boolean(t) or types.is_integer(t) or types.is_floating(t) or types.is_decimal(t):
        return ("scalar", "num")
    if types.is_string(t) or types.is_large_string(t) or getattr(types, "is_string_view", lambda _: False)(t):
        return ("scalar", "str")
    if types.is_binary(t) or types.is_large_binary(t) or types.is_fixed_size_binary(t):
        return ("scalar", "bin")
    if types.is_timestamp(t) or types.is_date(t):
        return ("scalar", "time")
    if types.is_time(t):
        return ("scalar", "clock")
    if types.is_duration(t):
        return ("scalar", "dur")
    if types.is_map(t):
        return ("map", shape_of(t.key_type), shape_of(t.item_type))
    if types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t):
        return ("list", shape_of(t.value_type))
    if types.is_struct(t):
        return ("struct", tuple((t.field(i).name, shape_of(t.field(i).type)) for i in range(t.num_fields)))
    return ("scalar", f"other:{t}")


def schema_shape(schema: pa.Schema) -> Shape:
    return ("struct", tuple((f.name, shape_of(f.type)) for f in schema))


def has_json(s: Shape) -> bool:
    kind = s[0]
    if kind == "json":
        return True
    if kind == "list":
        return has_json(s[1])
    if kind == "map":
        return has_json(s[1]) or has_json(s[2])
    if kind == "struct":
        return any(has_json(sub) for _, sub in s[1])
    return False


def merge(a: Shape, b: Shape) -> Shape:
    """The shape DuckDB reads ``a`` and ``b`` as together; ``JSON`` where they disagree."""
    if a == b:
        return a
    if a[0] == "null":
        return b
    if b[0] == "null":
        return a
    if a[0] == "json" or b[0] == "json":
        return JSON
    if a[0] == "scalar" and b[0] == "scalar":
        fa, fb = a[1], b[1]
        if "str" in (fa, fb) and fa in _TO_STR and fb in _TO_STR:
            return ("scalar", "str")
        return JSON
    if a[0] != b[0]:
        return JSON
    if a[0] == "list":
        child = merge(a[1], b[1])
        return JSON if has_json(child) else ("list", child)
    if a[0] == "map":
        key, item = merge(a[1], b[1]), merge(a[2], b[2])
        return JSON if has_json(key) or has_json(item) else ("map", key, item)
    fields = dict(a[1])
    for name, sub in b[1]:
        fields[name] = merge(fields[name], sub) if name in fields else sub
    return ("struct", tuple(fields.items()))


def _convert(ref: str, src: Shape, target: Shape) -> str:
    """SQL turning ``ref`` (of shape ``src``) into ``target``: JSON text where target says so."""
    if target[0] == "json":
        return f"CAST(to_json({ref}) AS VARCHAR)"
    if target[0] == "struct" and src[0] == "struct":
        fields = dict(target[1])
        parts = []
        changed = False
        for name, sub in src[1]:
            inner = f"struct_extract({ref}, {_lit(name)})"
            expr = _convert(inner, sub, fields.get(name, sub))
            changed = changed or expr != inner
            parts.append(f"{_lit(name)}: {expr}")
        if changed:
            return f"CASE WHEN {ref} IS NULL THEN NULL ELSE {{{', '.join(parts)}}} END"
    return ref


def fields_of(s: Shape) -> dict[str, Shape]:
    return dict(s[1]) if s[0] == "struct" else {}


def column_paths(s: Shape, prefix: str = "", depth: int = 0) -> list[str]:
    """Every addressable column: top-level names and dotted struct fields."""
    out = []
    for name, sub in fields_of(s).items():
        path = f"{prefix}{name}"
        out.append(path)
        if sub[0] == "struct" and depth < 3:
            out.extend(column_paths(sub, path + ".", depth + 1))
    return out


# ---------------------------------------------------------------- empty views

_EMPTY_PREDICTIONS = (
    "SELECT NULL::VARCHAR AS prediction_id, NULL::TIMESTAMPTZ AS ts, NULL::VARCHAR AS model, "
    "NULL::VARCHAR AS model_version, NULL::DOUBLE AS latency_ms, NULL::DOUBLE AS cpu_ms, NULL::VARCHAR AS status, "
    "NULL::VARCHAR AS error_type, NULL::VARCHAR AS error_message, NULL::VARCHAR AS request_id, "
    "NULL::VARCHAR AS user_id, NULL::VARCHAR AS batch_id, NULL::INTEGER AS batch_index, NULL::INTEGER AS batch_size, "
    "NULL::VARCHAR AS trace_id, NULL::VARCHAR AS span_id, NULL::VARCHAR AS prediction, NULL::DOUBLE AS confidence, "
    "NULL::DOUBLE AS sample_rate, NULL::VARCHAR[] AS flags WHERE false"
)
_EMPTY_PREDICTIONS_SHAPE: Shape = ("struct", tuple(
    (n, ("scalar", f)) for n, f in [
        ("prediction_id", "str"), ("ts", "time"), ("model", "str"), ("model_version", "str"),
        ("latency_ms", "num"), ("cpu_ms", "num"), ("status", "str"), ("error_type", "str"),
        ("error_message", "str"), ("request_id", "str"), ("user_id", "str"), ("batch_id", "str"),
        ("batch_index", "num"), ("batch_size", "num"), ("trace_id", "str"), ("span_id", "str"),
        ("prediction", "str"), ("confidence", "num"), ("sample_rate", "num"),
    ]
) + (("flags", ("list", ("scalar", "str"))),))
_EMPTY_LABELS = (
    "SELECT NULL::VARCHAR AS prediction_id, NULL::VARCHAR AS request_id, NULL::TIMESTAMPTZ AS ts, "
    "NULL::VARCHAR AS label, NULL::VARCHAR[] AS flags WHERE false"
)
_EMPTY_LABELS_SHAPE: Shape = ("struct", (
    ("prediction_id", ("scalar", "str")), ("request_id", ("scalar", "str")), ("ts", ("scalar", "time")),
    ("label", ("scalar", "str")), ("flags", ("list", ("scalar", "str"))),
))


# ---------------------------------------------------------------- sources and views


@dataclasses.dataclass
class _Source:
    """One thing a view reads: a group of Parquet files DuckDB unifies, or a live Arrow table."""

    shape: Shape
    files: list[str] = dataclasses.field(default_factory=list)
    hive_types: str = ""
    table: pa.Table | None = None
    name: str = ""
    empty: bool = False  # only lends its schema to an empty result

    def select(self, target: Shape) -> str:
        fields = fields_of(target)
        replace = []
        for name, sub in fields_of(self.shape).items():
            ref = _ident(name)
            expr = _convert(ref, sub, fields.get(name, sub))
            if expr != ref:
                replace.append(f"{expr} AS {ref}")
        # `date` is the UTC date partition (hive), kept so that grouping by day reads no
        # timestamps; live rows have no partition yet and get it from `ts`.
        extra = ""
        if self.table is not None:
            star, source = "*", self.name
            extra = ", CAST(timezone('UTC', ts) AS DATE) AS date" if "ts" in fields_of(self.shape) else ""
        else:
            star = "*"
            source = (
                f"read_parquet({_path_list(self.files)}, hive_partitioning=true, union_by_name=true, "
                f"hive_types={self.hive_types})"
            )
        if replace:
            star += f" REPLACE ({', '.join(replace)})"
        return f"SELECT {star}{extra} FROM {source}" + (" WHERE false" if self.empty else "")


@dataclasses.dataclass
class _View:
    name: str
    sources: list[_Source]
    shape: Shape
    empty_sql: str = ""

    def sql(self) -> str:
        if not self.sources:
            return self.empty_sql
        if len(self.sources) == 1:
            return self.sources[0].select(self.shape)
        return " UNION ALL BY NAME ".join(f"({s.select(self.shape)})" for s in self.sources)

    @property
    def files(self) -> list[str]:
        return [f for s in self.sources for f in s.files]


@dataclasses.dataclass
class _Snapshot:
    """The views of one query, built from one listing of the store."""

    views: dict[str, _View]

    @property
    def files(self) -> list[str]:
        return [f for v in self.views.values() for f in v.files]

    def install(self, cur: duckdb.DuckDBPyConnection, installed: dict[str, str] | None = None) -> None:
        """Create the views on ``cur``; ``installed`` (view → SQL already there) skips unchanged ones."""
        for view in self.views.values():
            for src in view.sources:
                if src.table is not None:
                    cur.register(src.name, src.table)
            sql = view.sql()
            if installed is not None and installed.get(view.name) == sql:
                continue
            cur.execute(f"CREATE OR REPLACE TEMP VIEW {_ident(view.name)} AS {sql}")
            if installed is not None:
                installed[view.name] = sql
        if installed is not None:
            for name in [n for n in installed if n not in self.views]:
                cur.execute(f"DROP VIEW IF EXISTS {_ident(name)}")
                del installed[name]

    def release(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Unregister the live tables (the cursor is reused by the next query of the thread)."""
        for view in self.views.values():
            for src in view.sources:
                if src.table is not None:
                    with contextlib.suppress(Exception):
                        cur.unregister(src.name)

    def shape(self, name: str) -> Shape:
        return self.views[name].shape

    def stale(self) -> bool:
        """True when a listed file has gone (maintenance swapped it): list and try again."""
        return any(not os.path.exists(f) for f in self.files)


def _group(items: list[tuple[str, Shape]]) -> list[tuple[Shape, list[str]]]:
    """Files into the fewest groups (greedy, in order) whose schemas DuckDB unifies."""
    by_shape: dict[Shape, list[str]] = {}
    for path, s in items:
        by_shape.setdefault(s, []).append(path)
    groups: list[tuple[Shape, list[Shape]]] = []
    for s in by_shape:
        for i, (merged, members) in enumerate(groups):
            candidate = merge(merged, s)
            if not has_json(candidate):
                groups[i] = (candidate, members + [s])
                break
        else:
            groups.append((s, [s]))
    return [(merged, sorted(f for m in members for f in by_shape[m])) for merged, members in groups]


# ---------------------------------------------------------------- filters


_COMPARE = {"=": "=", "==": "=", "!=": "<>", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_LIKE = {"like": "LIKE", "not like": "NOT LIKE", "ilike": "ILIKE", "not ilike": "NOT ILIKE"}
_OPERATORS = sorted([*_COMPARE, *_LIKE, "in", "not in", "between", "not between"])
_WHERE_FORMS = (
    "where= takes a dict such as {'features.age': 30, 'context.country': ['FR', 'DE'], "
    "'latency_ms': ('>', 100), 'error_type': None, 'ts': ('between', a, b)}: a value matches by "
    "equality, a list/set by membership, None by IS NULL, and a tuple is (operator, value) with "
    f"operator one of {', '.join(repr(o) for o in _OPERATORS)}; or a SQL condition string (your "
    "own SQL, as in Store.sql)"
)


class _Query:
    """Accumulates SQL conditions and their bound parameters, in order."""

    def __init__(self, shape: Shape, what: str = "the predictions") -> None:
        self.shape = shape
        self.what = what
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def resolve(self, key: str) -> tuple[str, Shape]:
        """SQL for a column or dotted struct field, checked against the schema."""
        if not isinstance(key, str) or not key:
            raise FilterError(f"column names are non-empty strings, got {key!r}")
        found = self._walk(None, self.shape, key)
        if found is None:
            raise UnknownColumnError(key, column_paths(self.shape), where=self.what)
        return found

    def _walk(self, ref: str | None, s: Shape, rest: str) -> tuple[str, Shape] | None:
        fields = fields_of(s)
        if not fields:
            return None

        def child(name: str) -> str:
            return _ident(name) if ref is None else f"struct_extract({ref}, {_lit(name)})"

        if rest in fields:
            return child(rest), fields[rest]
        for name in sorted((n for n in fields if rest.startswith(n + ".")), key=len, reverse=True):
            found = self._walk(child(name), fields[name], rest[len(name) + 1:])
            if found is not None:
                return found
        return None

    def equal(self, column: str, values: Any) -> None:
        """``column = value`` or ``column IN (values)`` for a string column (values as text)."""
        if values is None:
            return
        seq = [values] if isinstance(values, (str, int, float)) else list(values)
        if not seq:
            self.conditions.append("false")
            return
        for v in seq:
            if not isinstance(v, (str, int)) or isinstance(v, bool):
                raise FilterError(f"{column}= takes a string or a list of strings, got {v!r}")
        ref, _ = self.resolve(column)
        self.conditions.append(f"{ref} IN ({', '.join('?' for _ in seq)})" if len(seq) > 1 else f"{ref} = ?")
        self.params.extend(str(v) for v in seq)

    def time(self, lo: dt.datetime | None, hi: dt.datetime | None) -> None:
        if lo is not None:
            self.conditions.append('"ts" >= ?')
            self.params.append(lo)
        if hi is not None:
            self.conditions.append('"ts" < ?')
            self.params.append(hi)

    def where(self, where: Where) -> None:
        if where is None:
            return
        if isinstance(where, str):
            if where.strip():
                self.conditions.append(f"({where})")
            return
        if not isinstance(where, Mapping):
            raise FilterError(f"where={where!r} is not accepted: {_WHERE_FORMS}")
        for key, value in where.items():
            ref, leaf = self.resolve(key)
            self.conditions.append(self._condition(key, ref, leaf, value))

    def _value(self, leaf: Shape, value: Any, key: str) -> Any:
        """``value`` as a parameter comparable with a column of shape ``leaf``, or FilterError.

        DuckDB would otherwise cast the *column* to the value's type (a string column compared
        with 5 fails on the first non-numeric row), or fail on a value it cannot convert.
        """
        if hasattr(value, "item") and type(value).__module__ == "numpy":
            value = value.item()
        kind = leaf[1] if leaf[0] == "scalar" else leaf[0]
        if kind in ("str", "json"):
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
        elif kind == "num":
            if isinstance(value, (bool, int, float, decimal.Decimal)):
                return value
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    return int(value)
                with contextlib.suppress(ValueError):
                    return float(value)
                raise FilterError(f"where[{key!r}]: {value!r} is not a number, and {key!r} holds numbers")
        elif kind == "time":
            if isinstance(value, (str, dt.date)):
                try:
                    return _parse_time(value, key)
                except TimeBoundError as exc:
                    raise FilterError(str(exc)) from None
        elif kind == "bin":
            if isinstance(value, (bytes, bytearray)):
                return bytes(value)
        elif kind == "null":
            return value  # a column without a value in these files: nothing matches
        elif kind in ("list", "struct", "map"):
            raise FilterError(
                f"where[{key!r}]: {key!r} holds {kind}s, which where= does not compare; name a field "
                "(e.g. 'features.<name>') or use Store.sql with DuckDB's list/struct functions"
            )
        else:
            return value
        raise FilterError(f"where[{key!r}]: cannot compare {value!r} ({type(value).__name__}) with {key!r} ({kind})")

    def _members(self, ref: str, leaf: Shape, values: Iterable[Any], key: str, negate: bool = False) -> str:
        items = list(values)
        has_null = any(v is None for v in items)
        items = [self._value(leaf, v, key) for v in items if v is not None]
        parts = []
        if items:
            parts.append(f"{ref} {'NOT IN' if negate else 'IN'} ({', '.join('?' for _ in items)})")
            self.params.extend(items)
        if has_null:
            parts.append(f"{ref} IS {'NOT ' if negate else ''}NULL")
        if not parts:
            return "true" if negate else "false"
        return "(" + (" AND " if negate else " OR ").join(parts) + ")"

    def _condition(self, key: str, ref: str, leaf: Shape, value: Any) -> str:
        if value is None:
            return f"{ref} IS NULL"
        if isinstance(value, (list, set, frozenset)):
            return self._members(ref, leaf, value, key)
        if not isinstance(value, tuple):
            self.params.append(self._value(leaf, value, key))
            return f"{ref} = ?"
        if not value or not isinstance(value[0], str) or value[0].strip().lower() not in _OPERATORS:
            raise FilterError(
                f"where[{key!r}]={value!r}: a tuple is (operator, value); use a list for membership. {_WHERE_FORMS}"
            )
        op = " ".join(value[0].lower().split())
        args = value[1:]
        if op in ("between", "not between"):
            if len(args) != 2 or args[0] is None or args[1] is None:
                raise FilterError(f"where[{key!r}]: ({op!r}, low, high) takes two non-null bounds")
            self.params.extend(self._value(leaf, a, key) for a in args)
            return f"{ref} {op.upper()} ? AND ?"
        if len(args) != 1:
            raise FilterError(f"where[{key!r}]: ({op!r}, value) takes exactly one value")
        arg = args[0]
        if op in ("in", "not in"):
            if isinstance(arg, (str, bytes)) or not isinstance(arg, Iterable):
                raise FilterError(f"where[{key!r}]: ({op!r}, values) takes a list of values")
            return self._members(ref, leaf, arg, key, negate=op == "not in")
        if op in _LIKE:
            if not isinstance(arg, str):
                raise FilterError(f"where[{key!r}]: ({op!r}, pattern) takes a string pattern")
            self.params.append(arg)
            return f"{ref} {_LIKE[op]} ?"
        sql_op = _COMPARE[op]
        if arg is None:
            if sql_op in ("=", "<>"):
                return f"{ref} IS {'NOT ' if sql_op == '<>' else ''}NULL"
            raise FilterError(f"where[{key!r}]: cannot compare with None using {op!r}")
        self.params.append(self._value(leaf, arg, key))
        return f"{ref} {sql_op} ?"

    def clause(self) -> str:
        return (" WHERE " + " AND ".join(self.conditions)) if self.conditions else ""


def _limit(limit: Any, params: list[Any]) -> str:
    if limit is None:
        return ""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise FilterError(f"limit={limit!r} must be a non-negative integer or None")
    params.append(limit)
    return " LIMIT ?"


def _as_names(value: Names, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, (str, list, tuple, set, frozenset)):
        raise FilterError(f"{what}= takes a string or a list of strings, got {value!r}")
    items = [value] if isinstance(value, str) else list(value)
    for v in items:
        if not isinstance(v, str):
            raise FilterError(f"{what}= takes a string or a list of strings, got {v!r}")
    return items


def _utc_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as tz-aware UTC (DuckDB hands them over in its session time zone, UTC here)."""
    for col, dtype in df.dtypes.items():
        tz = getattr(dtype, "tz", None)
        if tz is not None and str(tz) != "UTC":
            df[col] = df[col].dt.tz_convert("UTC")
    return df


def _uuid7_date(prediction_id: str) -> dt.date | None:
    try:
        u = uuid.UUID(prediction_id)
    except (ValueError, AttributeError, TypeError):
        return None
    if u.version != 7:
        return None
    ms = u.int >> 80
    try:
        return dt.datetime.fromtimestamp(ms / 1000, _UTC).date()
    except (OverflowError, OSError, ValueError):
        return None


class _Slot:
    """A thread's reusable cursor and the views installed on it (temp views are per cursor)."""

    __slots__ = ("__weakref__", "busy", "cursor", "views")

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self.views: dict[str, str] = {}
        self.busy = False


@dataclasses.dataclass
class _Footer:
    mtime_ns: int
    size: int
    shape: Shape
    rows: int


# ---------------------------------------------------------------- the store


class Store:
    """A replay store opened for reading: DataFrames, lazy DuckDB relations and SQL.

    ::

        from predlog.replay import Store

        s = Store("predlog-store")
        s.predictions(model="fraud", start="2026-03-01", where={"features.age": ("<", 30)})
        s.user("u1")
        s.get(prediction_id)
        s.labeled(model="fraud", last="7d")
        s.sql("select model_version, avg(latency_ms) from predictions group by 1")

    Opening a store seals the write-ahead segments of writers that died (the rows they had
    written become Parquet) and finishes interrupted maintenance; a read-only store is read
    as it is, with a warning when there are such segments (``include_live=True`` shows them).

    Every query lists the files again, so rows sealed after opening are seen; a query that
    meets a file removed by maintenance between listing and reading lists again and retries.

    Time bounds: ``start`` is inclusive, ``end`` exclusive (``[start, end)``), both in UTC;
    each accepts a datetime (naive means UTC), a date (midnight UTC), a pandas Timestamp or an
    ISO 8601 string. ``last="1h"`` (or a timedelta) means ``[now - 1h, end)``.

    Threads: one Store may be used from many threads at once; each thread queries through
    its own cursor of the store's single DuckDB connection. ``close()`` (or ``with Store(...)``)
    releases the connection and its private spill directory.

    For predlog's own modules (maintenance, replay, analysis) the store offers
    :attr:`root`, :meth:`files`, :meth:`connection`, :meth:`run`, :meth:`schema`,
    :meth:`feature_names` and :meth:`models`.

    Args:
        path: Directory of the store. Only local paths are supported yet.
        recover: Seal orphaned segments and finish interrupted maintenance on open (default).
            Skipped, with a warning, when the directory is not writable.
        threads: DuckDB worker threads (default: DuckDB's, the number of cores).
        memory_limit: DuckDB memory limit such as ``"4GB"`` (default: DuckDB's, 80% of RAM).

    Raises:
        StoreNotFoundError: no store at ``path`` (a FileNotFoundError).
        UnsupportedStoreError: ``path`` is an object storage URI (a NotImplementedError).
    """

    root: str
    """Absolute, symlink-free path of the store directory."""

    def __init__(
        self,
        path: str | os.PathLike[str] = "predlog-store",
        *,
        recover: bool = True,
        threads: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        import duckdb

        self._closed = True
        location = os.fspath(path)
        if not isinstance(location, str):
            raise TypeError(f"store path must be a str or os.PathLike of str, got {path!r}")
        if location.startswith("file://"):
            location = location[len("file://"):]
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location):
            raise UnsupportedStoreError(location)
        root = os.path.realpath(os.path.expanduser(location))
        if not os.path.isdir(root):
            raise StoreNotFoundError(root, "no such directory" if not os.path.exists(root) else "not a directory")
        if not os.path.exists(os.path.join(root, "predlog.json")) and not os.path.isdir(os.path.join(root, _files.PREDICTIONS)):
            raise StoreNotFoundError(root, "the directory exists but holds no store")
        self.root = root
        self.read_only = not _writable(root)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()
        self._footers: dict[str, _Footer] = {}
        self._live_seq = 0
        if recover:
            self._recover()
        self._tmp = tempfile.mkdtemp(prefix="predlog-duckdb-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        con = duckdb.connect(":memory:")
        try:
            # GLOBAL: a plain SET would bind only this connection, not the per-query cursors.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            con.execute("SET GLOBAL parquet_metadata_cache = true")
            con.execute("SET GLOBAL autoinstall_known_extensions = false")
            con.execute("SET GLOBAL autoload_known_extensions = false")
            if threads is not None:
                con.execute(f"SET GLOBAL threads = {int(threads)}")
            if memory_limit is not None:
                con.execute(f"SET GLOBAL memory_limit = {_lit(str(memory_limit))}")
            con.execute(f"SET GLOBAL temp_directory = {_lit(self._tmp)}")
            # Trailing separators: allowing "/a/store" must not allow "/a/store-other".
            allowed = [os.path.join(root, ""), os.path.join(self._tmp, "")]
            con.execute(f"SET GLOBAL allowed_directories = {_path_list(allowed)}")
            con.execute("SET GLOBAL enable_external_access = false")
            con.execute("SET GLOBAL lock_configuration = true")
        except BaseException:
            con.close()
            self._cleanup()
            raise
        self._con = con
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    def _recover(self) -> None:
        if self.read_only:
            orphans = _orphan_segments(self.root)
            if orphans:
                warnings.warn(
                    f"predlog: store {self.root} is not writable, so the {orphans} segment(s) left by stopped "
                    "writers were not sealed into Parquet; their rows are readable with include_live=True. "
                    "Open the store once with write access to seal them",
                    RuntimeWarning, stacklevel=3,
                )
            return
        from predlog._store import recover_orphans

        try:
            recover_orphans(self.root)
        except OSError as exc:
            warnings.warn(
                f"predlog: could not seal the segments left by stopped writers in {self.root} ({exc}); "
                "their rows are readable with include_live=True and are sealed by the next writer",
                RuntimeWarning, stacklevel=3,
            )
        from ._maintenance import finish_interrupted

        try:
            finish_interrupted(self.root)
        except OSError as exc:
            warnings.warn(
                f"predlog: could not finish interrupted maintenance in {self.root} ({exc}); readers still "
                "see every row once, and the next maintenance operation finishes it",
                RuntimeWarning, stacklevel=3,
            )

    def close(self) -> None:
        """Close the DuckDB connection and remove its spill directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for slot in list(self._slots):
                with contextlib.suppress(Exception):
                    slot.cursor.close()
            self._con.close()
        self._cleanup()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.root!r}{', read_only' if self.read_only else ''}{', closed' if self._closed else ''})"

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._closed:
                raise StoreError(f"the store {self.root} was closed; open it again with Store(path)")
            return self._con.cursor()

    def _check_select(self, query: str) -> None:
        """Accept exactly one SELECT statement (no COPY, ATTACH, SET, PRAGMA, INSTALL, CREATE...).

        Raises duckdb.ParserException for text that does not parse.
        """
        import duckdb

        with self._lock:  # parsing only; the module-level parser would share a connection across threads
            if self._closed:
                raise StoreError(f"the store {self.root} was closed; open it again with Store(path)")
            statements = self._con.extract_statements(query)
        if len(statements) != 1:
            raise QueryNotAllowedError(
                f"Store.sql runs exactly one statement, got {len(statements)}; run them one by one"
            )
        kind = statements[0].type
        if kind != duckdb.StatementType.SELECT:
            raise QueryNotAllowedError(
                f"Store.sql runs SELECT statements only (got {kind.name}): the store is read through views "
                "'predictions' and 'labels'; to change it use Store.compact/retain/forget_user"
            )

    def _take_slot(self) -> _Slot | None:
        """This thread's cursor, or None when it is in use (a query run from inside another)."""
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = _Slot(self._cursor())
            self._local.slot = slot
            with self._lock:
                self._slots.add(slot)
        elif self._closed:
            raise StoreError(f"the store {self.root} was closed; open it again with Store(path)")
        if slot.busy:
            return None
        slot.busy = True
        return slot

    # ------------------------------------------------------------ files and schemas

    def models(self) -> list[str]:
        """Names of the models that have a partition in the store, sorted."""
        return _files.models(self.root)

    def files(self, model: Names = None, start: TimeBound = None, end: TimeBound = None) -> list[str]:
        """Absolute paths of the visible prediction files, pruned by model and UTC date partition."""
        models = self._models(model)
        lo, hi = _window(start, end)
        d0, d1 = _date_range(lo, hi)
        return _files.prediction_files(self.root, models, d0, d1)

    def _models(self, model: Names, include_live: bool = False) -> list[str] | None:
        names = _as_names(model, "model")
        if names is None:
            return None
        present = set(_files.models(self.root))
        if include_live and not present.issuperset(names):
            present |= _live_models(self.root)  # a model whose first rows are not sealed yet
        for name in names:
            if name not in present:
                raise UnknownModelError(name, present)
        return sorted(set(names))

    def _footer(self, path: str) -> _Footer:
        import pyarrow.parquet as pq

        st = os.stat(path)
        cached = self._footers.get(path)
        if cached is not None and cached.mtime_ns == st.st_mtime_ns and cached.size == st.st_size:
            return cached
        meta = pq.read_metadata(path)
        footer = _Footer(st.st_mtime_ns, st.st_size, schema_shape(meta.schema.to_arrow_schema()), meta.num_rows)
        self._footers[path] = footer
        return footer

    def _prune_footer_cache(self, keep: int) -> None:
        if len(self._footers) > 2 * keep + 1024:
            for path in list(self._footers):
                if not os.path.exists(path):
                    self._footers.pop(path, None)

    def _parquet_sources(self, files: list[str], hive_types: str) -> list[_Source]:
        items = [(f, self._footer(f).shape) for f in files]
        return [_Source(shape, paths, hive_types) for shape, paths in _group(items)]

    def _live_sources(self, tables: list[pa.Table]) -> list[_Source]:
        out = []
        for t in tables:
            with self._lock:
                self._live_seq += 1
                name = f"_predlog_live_{self._live_seq}"
            out.append(_Source(schema_shape(t.schema), table=t, name=name))
        return out

    def _snapshot(
        self,
        models: list[str] | None,
        lo: dt.datetime | None,
        hi: dt.datetime | None,
        *,
        include_live: bool,
        predictions: bool = True,
        labels: bool = False,
        label_lo: dt.datetime | None = None,
        dates: tuple[dt.date | None, dt.date | None] | None = None,
    ) -> _Snapshot:
        from ._live import live_tables, read_live

        # Live segments first, Parquet second: see _live for why this order loses no row.
        segments = read_live(self.root, models) if include_live else []
        d0, d1 = dates if dates is not None else _date_range(lo, hi)
        views: dict[str, _View] = {}
        pfiles = _files.prediction_files(self.root, models, d0, d1) if predictions else []
        lfiles = _files.label_files(self.root) if labels else []
        if labels and label_lo is not None:
            # Labels come after their predictions; a day of slack covers clocks of other hosts.
            first = (label_lo - dt.timedelta(days=1)).date()
            lfiles = [f for f in lfiles if (d := _partition_date(f)) is None or d >= first]
        live_p, live_l = live_tables(segments, pfiles, lfiles) if segments else ([], [])
        if predictions:
            sources = self._parquet_sources(pfiles, "{'model': 'VARCHAR', 'date': 'DATE'}") + self._live_sources(live_p)
            if not sources:
                # No rows in range: borrow a schema from the same models' other files, if any.
                others = _files.prediction_files(self.root, models) if (d0 or d1) else []
                if others:
                    sources = [dataclasses.replace(s, empty=True) for s in
                               self._parquet_sources(others[-1:], "{'model': 'VARCHAR', 'date': 'DATE'}")]
            views["predictions"] = _view("predictions", sources, _EMPTY_PREDICTIONS, _EMPTY_PREDICTIONS_SHAPE)
        if labels:
            sources = self._parquet_sources(lfiles, "{'date': 'DATE'}") + self._live_sources(live_l)
            views["labels"] = _view("labels", sources, _EMPTY_LABELS, _EMPTY_LABELS_SHAPE)
        self._prune_footer_cache(len(pfiles) + len(lfiles))
        return _Snapshot(views)

    # ------------------------------------------------------------ running SQL

    def run(
        self,
        fn: Callable[[duckdb.DuckDBPyConnection, _Snapshot], T],
        *,
        model: Names = None,
        start: TimeBound = None,
        end: TimeBound = None,
        last: Any = None,
        include_live: bool = False,
        predictions: bool = True,
        labels: bool = True,
        keep_open: bool = False,
    ) -> T:
        """Call ``fn(cursor, snapshot)`` with views ``predictions`` and ``labels`` installed.

        The building block of every query, for predlog's own modules: the store's files are
        listed (pruned by ``model`` and the ``[start, end)`` window's UTC date partitions —
        add your own ``ts`` conditions for the exact bounds), the views are (re)made on the
        calling thread's cursor of the locked connection, and ``fn`` runs. When ``fn`` raises
        because a listed file vanished (maintenance swapped it), the store lists again and
        calls ``fn`` again, so ``fn`` must not have side effects outside the cursor. ``fn``
        must not keep the cursor after it returns (the thread reuses it) unless
        ``keep_open``, which gives ``fn`` a cursor of its own (for lazy relations).
        ``snapshot.shape("predictions")`` summarises the view's columns (see ``shape_of``).
        """
        models = self._models(model, include_live)
        lo, hi = _window(start, end, last)
        return self._run(fn, models, lo, hi, include_live=include_live, predictions=predictions,
                         labels=labels, keep_open=keep_open)

    def _run(
        self,
        fn: Callable[[duckdb.DuckDBPyConnection, _Snapshot], T],
        models: list[str] | None,
        lo: dt.datetime | None,
        hi: dt.datetime | None,
        *,
        include_live: bool,
        predictions: bool = True,
        labels: bool = False,
        keep_open: bool = False,
        label_lo: dt.datetime | None = None,
        dates: tuple[dt.date | None, dt.date | None] | None = None,
    ) -> T:
        import duckdb

        for attempt in range(_RETRIES):
            snap: _Snapshot | None = None
            cur: duckdb.DuckDBPyConnection | None = None
            slot: _Slot | None = None
            keep = False
            ok = False
            try:
                snap = self._snapshot(models, lo, hi, include_live=include_live, predictions=predictions,
                                      labels=labels, label_lo=label_lo, dates=dates)
                # Lazy relations keep their cursor; everything else reuses the thread's cursor.
                slot = None if keep_open else self._take_slot()
                cur = slot.cursor if slot is not None else self._cursor()
                snap.install(cur, slot.views if slot is not None else None)
                result = fn(cur, snap)
                keep = keep_open
                ok = True
                return result
            except (duckdb.IOException, FileNotFoundError):
                if attempt + 1 < _RETRIES and (snap is None or snap.stale()):
                    logger.debug("predlog: a store file vanished during a query; listing again")
                    if attempt:
                        time.sleep(min(0.002 * 2 ** attempt, 0.1))  # let a burst of swaps settle
                    continue
                raise
            except duckdb.PermissionException as exc:
                raise QueryNotAllowedError(
                    f"{exc}. A store's SQL can read only files inside {self.root}"
                ) from exc
            finally:
                if slot is not None:
                    if snap is not None:
                        snap.release(slot.cursor)
                    if not ok:
                        slot.views.clear()  # a failure may have left views half made
                    slot.busy = False
                elif cur is not None and not keep:
                    cur.close()
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def connection(
        self,
        *,
        model: Names = None,
        start: TimeBound = None,
        end: TimeBound = None,
        include_live: bool = False,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of the locked connection with views ``predictions`` and ``labels``.

        For predlog's own modules and advanced use. The views reflect the files listed on
        entry; the cursor is closed on exit. It does not retry when maintenance removes a
        file under it (use :meth:`run` for that). Only files inside the store can be read or
        written through it, but inside the store it can write (``COPY ... TO``) and so forge or
        erase data: hand it only to code you trust as much as your own. Untrusted SQL goes
        through :meth:`sql`, which runs a single ``SELECT``.
        """
        models = self._models(model, include_live)
        lo, hi = _window(start, end)
        snap = self._snapshot(models, lo, hi, include_live=include_live, labels=True)
        cur = self._cursor()
        try:
            snap.install(cur)
            yield cur
        finally:
            cur.close()

    def schema(self, model: Names = None, *, labels: bool = False, include_live: bool = False) -> dict[str, str]:
        """Column name → DuckDB type of the ``predictions`` (or ``labels``) view.

        Nested types read like ``STRUCT(age BIGINT, country VARCHAR)``. Columns whose type
        differs between the files of several models are ``VARCHAR`` (JSON text) unless a
        single ``model`` is given.
        """
        view = "labels" if labels else "predictions"

        def describe(cur: duckdb.DuckDBPyConnection, _: _Snapshot) -> dict[str, str]:
            rows = cur.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
            return {str(r[0]): str(r[1]) for r in rows}

        return self.run(describe, model=model, include_live=include_live, predictions=not labels, labels=labels)

    def feature_names(self, model: Names = None, *, include_live: bool = False) -> list[str]:
        """Names of the fields of ``features`` over the model's files (all models if None)."""

        def names(_: duckdb.DuckDBPyConnection, snap: _Snapshot) -> list[str]:
            return list(fields_of(fields_of(snap.shape("predictions")).get("features", NULL)))

        return self.run(names, model=model, include_live=include_live, labels=False)

    # ------------------------------------------------------------ queries

    def _select(
        self,
        snap: _Snapshot,
        *,
        version: Names,
        user_id: Names,
        status: Names,
        request_id: Names,
        lo: dt.datetime | None,
        hi: dt.datetime | None,
        where: Where,
        limit: int | None,
        columns: Sequence[str] | None,
        source: str = "predictions",
        shape: Shape | None = None,
        extra: Sequence[str] = (),
    ) -> tuple[str, list[Any]]:
        q = _Query(shape or snap.shape("predictions"))
        select = "*"
        if columns is not None:
            if isinstance(columns, str):
                columns = [columns]
            exprs = []
            for c in columns:
                ref, _ = q.resolve(c)
                exprs.append(f"{ref} AS {_ident(c)}")
            if not exprs:
                raise FilterError("columns= must name at least one column")
            select = ", ".join(exprs)
        q.equal("model_version", _as_names(version, "version"))
        q.equal("user_id", _as_names(user_id, "user_id"))
        q.equal("status", _as_names(status, "status"))
        q.equal("request_id", _as_names(request_id, "request_id"))
        q.time(lo, hi)
        q.where(where)
        q.conditions.extend(extra)
        sql = f"SELECT {select} FROM {source}{q.clause()} ORDER BY \"ts\", \"prediction_id\""
        params = q.params
        sql += _limit(limit, params)
        if isinstance(where, str):
            self._check_select(sql)
        return sql, params

    def _prepare(
        self, model: Names, start: TimeBound, end: TimeBound, last: Any, include_live: bool,
    ) -> tuple[list[str] | None, dt.datetime | None, dt.datetime | None]:
        return (self._models(model, include_live), *_window(start, end, last))

    def predictions(
        self,
        model: Names = None,
        version: Names = None,
        start: TimeBound = None,
        end: TimeBound = None,
        user_id: Names = None,
        status: Names = None,
        where: Where = None,
        limit: int | None = None,
        *,
        last: Any = None,
        request_id: Names = None,
        columns: Sequence[str] | None = None,
        include_live: bool = False,
    ) -> pd.DataFrame:
        """Predictions matching every filter given, ordered by time, as a pandas DataFrame.

        Args:
            model: A model name or a list of them (unknown names raise UnknownModelError);
                prunes the files read.
            version: ``model_version`` value(s).
            start, end: ``[start, end)`` on ``ts``, UTC; prunes the date partitions read.
            user_id, status, request_id: value(s) of these columns.
            where: ``{"features.age": 30, "context.country": ["FR", "DE"],
                "latency_ms": (">", 100), "error_type": None}``: equality, membership (list or
                set), IS NULL (None), or ``(operator, value)`` with ``=, !=, <, <=, >, >=,
                like, not like, ilike, not ilike, in, not in, between, not between``. Column
                names are checked against the schema (UnknownColumnError lists close
                matches); values are bound parameters. A string is taken as your own SQL
                condition, as in :meth:`sql`.
            limit: At most this many rows (the earliest).
            last: ``"1h"``, ``"7d"``, a timedelta...: shorthand for ``start=now - last``.
            columns: Only these columns (dotted fields allowed, e.g. ``"features.age"``).
            include_live: Also rows still in live write-ahead segments (not yet sealed).

        ``ts`` is tz-aware UTC; ``features``, ``context`` and struct predictions are dicts.
        """
        return self._filtered(
            lambda cur, sql, params: _utc_frame(cur.execute(sql, params).df()), False,
            model, version, start, end, user_id, status, where, limit, last, request_id, columns, include_live,
        )

    def _filtered(
        self, finish: Callable[[duckdb.DuckDBPyConnection, str, list[Any]], Any], keep_open: bool,
        model: Names, version: Names, start: TimeBound, end: TimeBound, user_id: Names, status: Names,
        where: Where, limit: int | None, last: Any, request_id: Names, columns: Sequence[str] | None,
        include_live: bool,
    ) -> Any:
        """The query behind :meth:`predictions` and :meth:`relation`; ``finish`` runs its SQL."""
        models, lo, hi = self._prepare(model, start, end, last, include_live)

        def query(cur: duckdb.DuckDBPyConnection, snap: _Snapshot) -> Any:
            sql, params = self._select(snap, version=version, user_id=user_id, status=status, request_id=request_id,
                                       lo=lo, hi=hi, where=where, limit=limit, columns=columns)
            return finish(cur, sql, params)

        return self._run(query, models, lo, hi, include_live=include_live, keep_open=keep_open)

    def relation(
        self,
        model: Names = None,
        version: Names = None,
        start: TimeBound = None,
        end: TimeBound = None,
        user_id: Names = None,
        status: Names = None,
        where: Where = None,
        limit: int | None = None,
        *,
        last: Any = None,
        request_id: Names = None,
        columns: Sequence[str] | None = None,
        include_live: bool = False,
    ) -> duckdb.DuckDBPyRelation:
        """The same query as :meth:`predictions`, as a lazy DuckDB relation: nothing is read yet.

        Chain DuckDB's relational API (``.filter``, ``.aggregate``, ``.limit``, ``.arrow()``,
        ``.df()``...). Like :meth:`connection`, it runs on the store's connection, which can
        write inside the store (``.to_parquet``, ``.query("COPY ...")``): it is a tool for your
        own code, not for untrusted input. The relation reads the files listed when it was made; if maintenance
        removes one of them before the relation runs, DuckDB raises an IO error: make the
        relation again.
        """
        return self._filtered(
            lambda cur, sql, params: cur.sql(sql, params=params), True,
            model, version, start, end, user_id, status, where, limit, last, request_id, columns, include_live,
        )

    def user(
        self,
        user_id: str,
        *,
        model: Names = None,
        start: TimeBound = None,
        end: TimeBound = None,
        last: Any = None,
        where: Where = None,
        limit: int | None = None,
        include_live: bool = False,
    ) -> pd.DataFrame:
        """Every prediction made for ``user_id``, oldest first.

        A plain ``user_id = ?`` filter on the Parquet scan, so DuckDB skips the row groups
        whose min/max statistics exclude the user (compacted files are sorted by user).
        """
        if not isinstance(user_id, (str, int)) or isinstance(user_id, bool):
            raise FilterError(f"user() takes one user id (a string), got {user_id!r}")
        return self.predictions(model=model, start=start, end=end, last=last, user_id=str(user_id), where=where,
                                limit=limit, include_live=include_live)

    def get(self, prediction_id: str, *, include_live: bool = False) -> pd.Series:
        """One prediction as a pandas Series indexed by column name (``.name`` is its id).

        Only the date partition encoded in the UUIDv7 id is read first; the whole store is
        searched only when the row is not there.

        Raises:
            PredictionNotFoundError: no such prediction (a KeyError).
        """
        if not isinstance(prediction_id, str):
            raise PredictionNotFoundError(
                str(prediction_id), f"prediction ids are strings, got {prediction_id!r} ({type(prediction_id).__name__})"
            )

        def row(cur: duckdb.DuckDBPyConnection, snap: _Snapshot) -> pd.Series | None:
            df = cur.execute("SELECT * FROM predictions WHERE prediction_id = ? LIMIT 1", [prediction_id]).df()
            if not len(df):
                return None
            found = _utc_frame(df).iloc[0]
            found.name = prediction_id
            return found

        def first(cur: duckdb.DuckDBPyConnection, snap: _Snapshot) -> pd.Series | str | None:
            if has_json(snap.shape("predictions")):
                # Files here disagree on some column: find the row's model, then read it from
                # that model's files alone so every column keeps its natural type.
                hit = cur.execute("SELECT model FROM predictions WHERE prediction_id = ? LIMIT 1", [prediction_id]).fetchone()
                return None if hit is None else str(hit[0])
            return row(cur, snap)

        day = _uuid7_date(prediction_id)
        tries: list[tuple[dt.date | None, dt.date | None]] = ([(day, day)] if day is not None else []) + [(None, None)]
        for dates in tries:
            found = self._run(first, None, None, None, include_live=include_live, dates=dates)
            if isinstance(found, str):
                found = self._run(row, [found], None, None, include_live=include_live, dates=dates)
            if found is not None:
                return found
        live = "" if include_live else (
            " If it was recorded moments ago it may still be in a live segment: pass include_live=True, "
            "or flush the writer."
        )
        raise PredictionNotFoundError(
            prediction_id,
            f"no prediction with id {prediction_id!r} in store {self.root}.{live} "
            "Ids come from predlog.last_prediction_id() or the prediction_id column",
        )

    def labeled(
        self,
        model: Names = None,
        version: Names = None,
        start: TimeBound = None,
        end: TimeBound = None,
        user_id: Names = None,
        status: Names = None,
        where: Where = None,
        limit: int | None = None,
        *,
        last: Any = None,
        request_id: Names = None,
        columns: Sequence[str] | None = None,
        include_unlabeled: bool = False,
        include_live: bool = False,
    ) -> pd.DataFrame:
        """Predictions joined with their latest label, as a DataFrame.

        A label belongs to a prediction by ``prediction_id``; a prediction with no label of
        its own takes the latest label logged under its ``request_id`` (every row of a batch
        call shares it). The latest label (by its ``ts``) wins. Adds columns ``label``,
        ``label_ts`` and, when labels carry extra fields, ``label_extra``. Only labeled
        predictions unless ``include_unlabeled``. Filters are those of :meth:`predictions`;
        ``where`` may also name ``label``, ``label_ts`` and ``label_extra``.
        """
        models, lo, hi = self._prepare(model, start, end, last, include_live)

        def query(cur: duckdb.DuckDBPyConnection, snap: _Snapshot) -> pd.DataFrame:
            joined, shape = _labeled_sql(snap)
            extra = [] if include_unlabeled else ['"label_ts" IS NOT NULL']
            sql, params = self._select(snap, version=version, user_id=user_id, status=status, request_id=request_id,
                                       lo=lo, hi=hi, where=where, limit=limit, columns=columns,
                                       source=f"({joined}) AS j", shape=shape, extra=extra)
            return _utc_frame(cur.execute(sql, params).df())

        return self._run(query, models, lo, hi, include_live=include_live, labels=True, label_lo=lo)

    def training_data(
        self,
        model: Names = None,
        days: float | None = None,
        *,
        version: Names = None,
        start: TimeBound = None,
        end: TimeBound = None,
        last: Any = None,
        where: Where = None,
        limit: int | None = None,
        include_live: bool = False,
    ) -> pd.DataFrame:
        """Features and label of the labeled predictions of one model: one column per feature.

        The index is ``prediction_id``; the columns are the fields of ``features`` (a field
        named like the ``label`` column is renamed ``features.<name>``) and ``label``. Rows are
        in time order. ``days=30`` means the last 30 days. ``model`` may be omitted when the
        store holds a single model.
        """
        if model is None:
            present = self.models()
            if len(present) != 1:
                raise UnknownModelError("(none given)", present) if present else StoreError(
                    f"the store {self.root} holds no predictions yet; nothing to train on"
                )
            model = present[0]
        if not isinstance(model, str) and len(list(model)) != 1:
            raise FilterError("training_data() takes one model: features differ between models")
        models = self._models(model, include_live)
        lo, hi = _window(start, end, last, days)

        def query(cur: duckdb.DuckDBPyConnection, snap: _Snapshot) -> pd.DataFrame:
            joined, shape = _labeled_sql(snap)
            feats = fields_of(snap.shape("predictions")).get("features", NULL)
            cols = ['"prediction_id"']
            if feats[0] == "struct":
                for name, _ in feats[1]:
                    alias = name if name not in ("label", "prediction_id") else f"features.{name}"
                    cols.append(f"struct_extract(\"features\", {_lit(name)}) AS {_ident(alias)}")
            elif feats != NULL:
                cols.append('"features"')
            cols.append('"label"')
            inner, params = self._select(snap, version=version, user_id=None, status=None, request_id=None, lo=lo,
                                         hi=hi, where=where, limit=limit, columns=None,
                                         source=f"({joined}) AS j", shape=shape, extra=['"label_ts" IS NOT NULL'])
            sql = f"SELECT {', '.join(cols)} FROM ({inner}) AS t"
            df = cur.execute(sql, params).df()
            return _utc_frame(df.set_index("prediction_id"))

        return self._run(query, models, lo, hi, include_live=include_live, labels=True, label_lo=lo)

    def sql(
        self,
        query: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        model: Names = None,
        start: TimeBound = None,
        end: TimeBound = None,
        last: Any = None,
        include_live: bool = False,
    ) -> pd.DataFrame:
        """Run one SELECT over the views ``predictions`` and ``labels``; a DataFrame.

        Struct fields read naturally: ``features.age``, ``context.country``. Pass values as
        ``params`` (``?`` or ``$name`` placeholders), never by formatting them into the text.
        ``model``, ``start``/``end``/``last`` only prune which files the views read (add a
        ``ts`` condition for exact bounds). Only a single SELECT statement is accepted, and it
        can read only files inside the store.

        Raises:
            QueryNotAllowedError: not a single SELECT, or it reaches outside the store.
            duckdb.Error: DuckDB's own errors for SQL that does not parse or bind.
        """
        if not isinstance(query, str):
            raise TypeError(f"sql() takes the query as a string, got {type(query).__name__}")
        self._check_select(query)
        models, lo, hi = self._prepare(model, start, end, last, include_live)
        uses_p = re.search(r"predictions", query, re.I) is not None
        uses_l = re.search(r"labels", query, re.I) is not None

        def run(cur: duckdb.DuckDBPyConnection, snap: _Snapshot) -> pd.DataFrame:
            return _utc_frame(cur.execute(query, params if params is not None else []).df())

        return self._run(run, models, lo, hi, include_live=include_live, predictions=uses_p or not uses_l,
                         labels=uses_l)

    # ------------------------------------------------------------ overview

    def stats(self) -> dict[str, Any]:
        """What the store holds, as a JSON-friendly dict (``json.dumps(..., default=str)``).

        Keys: ``rows``, ``files``, ``bytes`` (sealed Parquet predictions); ``models``: per model
        ``rows``, ``files``, ``bytes``, ``versions`` (version → rows), ``first_ts``,
        ``last_ts``; ``versions``; ``first_ts``/``last_ts`` (UTC) over the store; ``labels``:
        ``rows``, ``files``, ``bytes``; ``live_segments``/``live_bytes`` (write-ahead segments,
        counted, not read); ``maintenance_in_progress`` (manifests); ``schema_groups`` (groups
        of prediction files DuckDB reads together; more than one means some column is read as
        JSON text across models); ``read_only``; ``root``. One aggregate query over ``model,
        model_version, ts``; the rest comes from file listings and Parquet footers.
        """
        pfiles = _files.prediction_files(self.root)
        lfiles = _files.label_files(self.root)

        def size(files: list[str]) -> int:
            total = 0
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.stat(f).st_size
            return total

        def footer_rows(files: list[str]) -> int:
            total = 0
            for f in files:
                with contextlib.suppress(OSError):
                    total += self._footer(f).rows
            return total

        def aggregate(cur: duckdb.DuckDBPyConnection, snap: _Snapshot) -> list[tuple[Any, ...]]:
            result = cur.execute(
                "SELECT model, model_version, count(*), min(ts), max(ts) FROM predictions GROUP BY ALL ORDER BY ALL"
            )
            return [tuple(r) for r in result.fetchall()]

        rows = self._run(aggregate, None, None, None, include_live=False)
        models: dict[str, dict[str, Any]] = {}

        def new_model() -> dict[str, Any]:
            return {"rows": 0, "files": 0, "bytes": 0, "versions": {}, "first_ts": None, "last_ts": None}

        for model, version, n, first, last in rows:
            m = models.setdefault(str(model), new_model())
            m["rows"] += n
            m["versions"][version] = n
            if first is not None:
                first = first.astimezone(_UTC)
                m["first_ts"] = first if m["first_ts"] is None else min(m["first_ts"], first)
            if last is not None:
                last = last.astimezone(_UTC)
                m["last_ts"] = last if m["last_ts"] is None else max(m["last_ts"], last)
        shapes = set()
        for f in pfiles:
            part = os.path.basename(os.path.dirname(os.path.dirname(f)))[len("model="):]
            m = models.setdefault(part, new_model())
            with contextlib.suppress(OSError):  # removed by maintenance since the listing
                m["bytes"] += os.stat(f).st_size
                shapes.add(self._footer(f).shape)
                m["files"] += 1
        firsts = [m["first_ts"] for m in models.values() if m["first_ts"] is not None]
        lasts = [m["last_ts"] for m in models.values() if m["last_ts"] is not None]
        wal = os.path.join(self.root, "_wal")
        try:
            segs = [os.path.join(wal, n) for n in os.listdir(wal) if n.endswith(".arrows")]
        except FileNotFoundError:
            segs = []
        return {
            "root": self.root,
            "rows": sum(m["rows"] for m in models.values()),
            "files": sum(m["files"] for m in models.values()),
            "bytes": sum(m["bytes"] for m in models.values()),
            "models": models,
            "versions": sorted({str(v) for m in models.values() for v in m["versions"] if v is not None}),
            "first_ts": min(firsts) if firsts else None,
            "last_ts": max(lasts) if lasts else None,
            "labels": {"rows": footer_rows(lfiles), "files": len(lfiles), "bytes": size(lfiles)},
            "live_segments": len(segs),
            "live_bytes": size(segs),
            "maintenance_in_progress": len(_files.manifests(self.root)),
            "schema_groups": len(_group([("", s) for s in shapes])) if shapes else 0,
            "read_only": self.read_only,
        }

    # ------------------------------------------------------------ delegated operations

    def compact(self, **kw: Any) -> Any:
        """Rewrite small files into large sorted ones; see :func:`predlog.replay._maintenance.compact`."""
        from ._maintenance import compact

        return compact(self, **kw)

    def retain(self, days: int, **kw: Any) -> Any:
        """Delete predictions older than ``days``; see :func:`predlog.replay._maintenance.retain`."""
        from ._maintenance import retain

        return retain(self, days=days, **kw)

    def forget_user(self, user_id: str, **kw: Any) -> Any:
        """Erase every row of one user; see :func:`predlog.replay._maintenance.forget_user`."""
        from ._maintenance import forget_user

        return forget_user(self, user_id, **kw)

    def replay(self, fn: Callable[..., Any], **kw: Any) -> Any:
        """Run recorded inputs through ``fn``; see :func:`predlog.replay._replay.replay`."""
        from ._replay import replay

        return replay(self, fn, **kw)


# ---------------------------------------------------------------- helpers


def _view(name: str, sources: list[_Source], empty_sql: str, empty_shape: Shape) -> _View:
    if not sources:
        return _View(name, [], empty_shape, empty_sql)
    merged = sources[0].shape
    for s in sources[1:]:
        merged = merge(merged, s.shape)
    return _View(name, sources, merged)


def _labeled_sql(snap: _Snapshot) -> tuple[str, Shape]:
    """Predictions LEFT JOIN their latest label (by prediction_id, else by request_id)."""
    lfields = fields_of(snap.shape("labels"))
    pfields = fields_of(snap.shape("predictions"))
    has_extra = "extra" in lfields
    pick = ", label, ts AS label_ts" + (", extra AS label_extra" if has_extra else "")

    def latest(key: str) -> str:
        if key not in lfields:
            return f"SELECT NULL::VARCHAR AS _k{pick} FROM labels WHERE false"
        return (f"SELECT {key} AS _k{pick} FROM labels WHERE {key} IS NOT NULL "
                f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY ts DESC) = 1")

    def either(col: str) -> str:
        return f"CASE WHEN lp._k IS NOT NULL THEN lp.{col} ELSE lr.{col} END AS {col}"

    cols = [either("label"), either("label_ts")] + ([either("label_extra")] if has_extra else [])
    request_join = "lr._k = p.request_id" if "request_id" in pfields else "false"
    sql = (f"SELECT p.*, {', '.join(cols)} FROM predictions AS p "
           f"LEFT JOIN ({latest('prediction_id')}) AS lp ON lp._k = p.prediction_id "
           f"LEFT JOIN ({latest('request_id')}) AS lr ON {request_join}")
    shape_fields = dict(pfields)
    shape_fields["label"] = lfields.get("label", NULL)
    shape_fields["label_ts"] = ("scalar", "time")
    if has_extra:
        shape_fields["label_extra"] = lfields["extra"]
    return sql, ("struct", tuple(shape_fields.items()))


def _partition_date(path: str) -> dt.date | None:
    part = os.path.basename(os.path.dirname(path))
    if not part.startswith("date="):
        return None
    try:
        return dt.date.fromisoformat(part[len("date="):])
    except ValueError:
        return None


def _writable(root: str) -> bool:
    wal = os.path.join(root, "_wal")
    return os.access(root, os.W_OK | os.X_OK) and (not os.path.isdir(wal) or os.access(wal, os.W_OK | os.X_OK))


def _orphan_segments(root: str) -> int:
    """Segments whose writer is gone (their lock is free), counted without touching them."""
    import fcntl

    wal = os.path.join(root, "_wal")
    try:
        names = [n for n in os.listdir(wal) if n.endswith(".arrows")]
    except OSError:
        return 0
    n = 0
    for name in names:
        try:
            fd = os.open(os.path.join(wal, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            n += 1
        except OSError:
            pass  # a live writer holds it
        finally:
            os.close(fd)
    return n


def _live_models(root: str) -> set[str]:
    """Models present only in live segments count as present for include_live queries."""
    from ._live import read_live

    found: set[str] = set()
    for seg in read_live(root):
        for t in seg.predictions:
            if "model" in t.column_names:
                found.update(str(m) for m in t.column("model").unique().to_pylist() if m is not None)
    return found
