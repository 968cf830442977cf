"""The query core: which predictions a query reads, compiled in one place to SQL.

A :class:`Selection` holds the filters every reading method takes (model, version, time
window, user, status, request, ``where``, live rows, replay rows). :func:`compile_selection`
turns it, against the schema of the files a query reads, into SQL conditions with bound
parameters: values are never formatted into the text, and column names are checked against
the schema. Everything on the reading side that filters predictions goes through here; no
other module writes a ``WHERE`` clause of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, TypedDict, Unpack, cast

from ._errors import FilterError, TimeBoundError, UnknownColumnError
from ._shapes import Shape, column_paths, fields_of, ident, lit
from ._timebounds import date_range, parse_time, window

__all__ = [
    "STATUSES",
    "Conditions",
    "Filters",
    "Names",
    "RowOptions",
    "Selection",
    "TimeBound",
    "Where",
    "compile_selection",
    "names",
]

Names = str | Sequence[str] | None
Where = Mapping[str, Any] | str | None
TimeBound = dt.datetime | dt.date | str | None

STATUSES = ("ok", "error")
"""The values of the ``status`` column."""

REPLAY_OF = "replay_of"
"""Context key marking a row written by ``Store.replay(record_as=...)``: the id it replays."""

_COMPARE = {"=": "=", "==": "=", "!=": "<>", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_LIKE = {"like": "LIKE", "not like": "NOT LIKE", "ilike": "ILIKE", "not ilike": "NOT ILIKE"}
_OPERATORS = sorted([*_COMPARE, *_LIKE, "in", "not in", "between", "not between"])
WHERE_FORMS = (
    "where= takes a dict such as {'features.age': 30, 'context.country': ['FR', 'DE'], "
    "'latency_ms': ('>', 100), 'error_type': None, 'ts': ('between', a, b)}: a value matches by "
    "equality, a list/set by membership, None by IS NULL, and a tuple is (operator, value) with "
    f"operator one of {', '.join(repr(o) for o in _OPERATORS)}; or a SQL condition string (your "
    "own SQL, as in Store.sql)"
)


def names(value: Names, what: str) -> tuple[str, ...] | None:
    """A filter of string values (``model=``, ``user_id=``...) as a tuple, or FilterError."""
    if value is None:
        return None
    if isinstance(value, (str, list, tuple, set, frozenset)):
        items = [value] if isinstance(value, str) else list(value)
    else:
        items = [value]
    for v in items:
        if not isinstance(v, str):
            hint = f": pass {str(v)!r}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            raise FilterError(
                f"{what}= takes a string or a list of strings, got {v!r} ({type(v).__name__}); "
                f"{what} values are stored as text{hint}"
            )
    return tuple(items)


class UserFilters(TypedDict, total=False):
    """The filters of :class:`Filters` but ``user_id`` (what :meth:`Store.user` takes)."""

    version: Names
    start: TimeBound
    end: TimeBound
    last: Any
    status: Names
    request_id: Names
    where: Where
    include_live: bool
    include_replays: bool | None


class Filters(UserFilters, total=False):
    """The filters every reading method of :class:`~predlog.replay.Store` takes (beside ``model``).

    Attributes:
        version, user_id, status, request_id: a string, or a list of strings, each matching
            that column (``status`` is ``"ok"`` or ``"error"``).
        start, end: ``[start, end)`` on ``ts``, in UTC: a datetime (naive means UTC), a date
            (midnight UTC), a pandas Timestamp or an ISO 8601 string. Prune the date partitions.
        last: ``"1h"``, ``"7d"``, a timedelta or a number of seconds: ``start = now - last``.
        where: ``{"features.age": (">", 30), "context.country": ["FR", "DE"], "error_type": None}``
            (see ``WHERE_FORMS``), or your own SQL condition.
        include_live: also rows still in live write-ahead segments.
        include_replays: also rows written by ``Store.replay(record_as=...)``; by default only
            when ``version`` is given.
    """

    user_id: Names


class Rows(TypedDict, total=False):
    """What to read of the selected rows.

    Attributes:
        columns: Only these columns (dotted fields allowed, e.g. ``"features.age"``).
        limit: At most this many rows (the earliest).
        ordered: Rows in time order (default). ``False`` lets the engine produce them in any
            order: the fast choice under an aggregate, which sorting first only slows down.
    """

    columns: Sequence[str] | None
    limit: int | None
    ordered: bool


FILTERS = frozenset(Filters.__optional_keys__)


class Read(Filters, Rows, total=False):
    """:class:`Filters` and :class:`Rows`: what the reading methods take."""


class UserRead(UserFilters, Rows, total=False):
    """What :meth:`Store.user` takes besides the user id."""


class LabeledRead(Read, total=False):
    """:class:`Read`, for predictions joined with their labels.

    Attributes:
        include_unlabeled: Also the predictions without a label (``label`` null).
    """

    include_unlabeled: bool


@dataclasses.dataclass(frozen=True)
class RowOptions:
    """What a :class:`Read` asks of the selected rows besides the filters."""

    columns: Sequence[str] | None = None
    limit: int | None = None
    include_unlabeled: bool = False
    ordered: bool = True


def split_read(read: Mapping[str, Any], accepted: type | None = None) -> tuple[Filters, RowOptions]:
    """The filters of ``read`` (a :class:`Read`, :class:`LabeledRead` or more) and its row options.

    With ``accepted`` (a TypedDict), a name it does not declare raises TypeError, as an
    unknown keyword argument does, with the nearest name it does declare.
    """
    if accepted is not None:
        names = accepted.__required_keys__ | accepted.__optional_keys__  # type: ignore[attr-defined]
        for name in read:
            if name not in names:
                import difflib

                near = difflib.get_close_matches(name, sorted(names), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else f"; it takes {', '.join(sorted(names))}"
                raise TypeError(f"unexpected keyword argument {name!r}{hint}")
    filters = cast(Filters, {k: v for k, v in read.items() if k in FILTERS})
    rows = RowOptions(
        read.get("columns"),
        read.get("limit"),
        bool(read.get("include_unlabeled", False)),
        bool(read.get("ordered", True)),
    )
    return filters, rows


@dataclasses.dataclass(frozen=True, kw_only=True)
class Selection:
    """Which predictions a query reads. Build it with :meth:`of`; every field is optional.

    Attributes:
        model: Model names (prunes the files read).
        version, user_id, status, request_id: Values of these columns (any of them matches).
        start, end: ``[start, end)`` on ``ts``, aware UTC datetimes (prune the date partitions).
        where: ``{"features.age": (">", 30), ...}`` or your own SQL condition (see WHERE_FORMS).
        include_live: Also rows still in live write-ahead segments.
        include_replays: Also rows written by ``Store.replay(record_as=...)``; None (default)
            means only when ``version`` is given (naming a replayed version shows it).
    """

    model: tuple[str, ...] | None = None
    version: tuple[str, ...] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    user_id: tuple[str, ...] | None = None
    status: tuple[str, ...] | None = None
    request_id: tuple[str, ...] | None = None
    where: Any = None
    include_live: bool = False
    include_replays: bool | None = None

    @classmethod
    def of(cls, *, model: Names = None, days: Any = None, **filters: Unpack[Filters]) -> Selection:
        """Check and normalise filter arguments as the reading methods take them.

        Raises:
            FilterError: a filter of the wrong type, or a status that is not ``ok``/``error``.
            TimeBoundError: a time bound that cannot be read.
        """
        f = filters
        lo, hi = window(f.get("start"), f.get("end"), f.get("last"), days)
        statuses = names(f.get("status"), "status")
        where = f.get("where")
        include_live, include_replays = f.get("include_live", False), f.get("include_replays")
        unknown = set(f) - set(Filters.__annotations__)
        if unknown:
            import difflib

            near = [m for u in sorted(unknown) for m in difflib.get_close_matches(u, list(Filters.__annotations__), 1)]
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise TypeError(
                f"unknown filter(s): {', '.join(sorted(unknown))}{hint} The filters are "
                f"{', '.join(Filters.__annotations__)}"
            )
        if statuses is not None:
            bad = [s for s in statuses if s not in STATUSES]
            if bad:
                raise FilterError(f"status={bad[0]!r} is not a status: predictions have status 'ok' or 'error'")
        if where is not None and not isinstance(where, (str, Mapping)):
            raise FilterError(f"where={where!r} is not accepted: {WHERE_FORMS}")
        for flag, value in (("include_live", include_live), ("include_replays", include_replays)):
            if value is not None and not isinstance(value, bool):
                raise FilterError(f"{flag}= takes True or False, got {value!r}")
        return cls(
            model=names(model, "model"),
            version=names(f.get("version"), "version"),
            start=lo,
            end=hi,
            user_id=names(f.get("user_id"), "user_id"),
            status=statuses,
            request_id=names(f.get("request_id"), "request_id"),
            where=where,
            include_live=bool(include_live),
            include_replays=include_replays,
        )

    @property
    def replays(self) -> bool:
        """Whether rows written by ``record_as`` replays are read."""
        return self.include_replays if self.include_replays is not None else self.version is not None

    @property
    def dates(self) -> tuple[dt.date | None, dt.date | None]:
        """The UTC date partitions that can hold rows of the window."""
        return date_range(self.start, self.end)

    def replace(self, **changes: Any) -> Selection:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """The filters given, as ``model='m', version='1.0'`` (for messages)."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value in (None, False) or f.name == "include_replays":
                continue
            if isinstance(value, tuple) and len(value) == 1:
                value = value[0]
            if isinstance(value, dt.datetime):
                value = value.isoformat()
            parts.append(f"{f.name}={value!r}")
        return ", ".join(parts) or "no filter"


class Conditions:
    """SQL conditions over one relation's columns and their bound parameters, in order."""

    def __init__(
        self,
        shape: Shape,
        what: str = "the predictions",
        *,
        hashed: Collection[str] = (),
        hash_key: bytes | None = None,
    ) -> None:
        self.shape = shape
        self.what = what
        self.hashed = frozenset(hashed)
        self.hash_key = hash_key
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
            return ident(name) if ref is None else f"struct_extract({ref}, {lit(name)})"

        if rest in fields:
            return child(rest), fields[rest]
        for name in sorted((n for n in fields if rest.startswith(n + ".")), key=len, reverse=True):
            found = self._walk(child(name), fields[name], rest[len(name) + 1 :])
            if found is not None:
                return found
        return None

    def _lookup(self, key: str, values: list[Any]) -> list[Any]:
        """The values to look for: where the store hashes ``key``, each value and its hash."""
        if key not in self.hashed:
            return values
        if self.hash_key is None:
            raise FilterError(
                f"{key} holds hashed values in this store (the writer's hash_fields), so {values[0]!r} never "
                "matches as it is: open the store with Store(path, hash_key=...) or set PREDLOG_HASH_KEY to the "
                "writer's key, and predlog hashes the values you filter by"
            )
        from predlog import hash_id

        return values + [hash_id(v, self.hash_key) for v in values if isinstance(v, str)]

    def equal(self, column: str, values: tuple[str, ...] | None) -> None:
        """``column = value`` or ``column IN (values)`` for a string column."""
        if values is None:
            return
        if not values:
            self.conditions.append("false")
            return
        ref, _ = self.resolve(column)
        wanted = self._lookup(column, list(values))
        self.conditions.append(f"{ref} IN ({', '.join('?' for _ in wanted)})" if len(wanted) > 1 else f"{ref} = ?")
        self.params.extend(wanted)

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
            raise FilterError(f"where={where!r} is not accepted: {WHERE_FORMS}")
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
        if kind == "str":
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                raise FilterError(
                    f"where[{key!r}]: {value!r} is a {type(value).__name__} and {key!r} holds text, so it "
                    f"never matches: compare with the text, e.g. {str(value)!r}"
                )
        elif kind in ("json", "text"):
            # Text that files of other models or times hold as numbers: numbers match as text.
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
                    return parse_time(value, key)
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
        items = self._lookup(key, [self._value(leaf, v, key) for v in items if v is not None])
        parts = []
        if len(items) == 1:
            parts.append(f"{ref} {'<>' if negate else '='} ?")
            self.params.extend(items)
        elif items:
            parts.append(f"{ref} {'NOT IN' if negate else 'IN'} ({', '.join('?' for _ in items)})")
            self.params.extend(items)
        if has_null:
            parts.append(f"{ref} IS {'NOT ' if negate else ''}NULL")
        if not parts:
            return "true" if negate else "false"
        return parts[0] if len(parts) == 1 else "(" + (" AND " if negate else " OR ").join(parts) + ")"

    def _condition(self, key: str, ref: str, leaf: Shape, value: Any) -> str:
        if value is None:
            return f"{ref} IS NULL"
        if isinstance(value, (list, set, frozenset)):
            return self._members(ref, leaf, value, key)
        if not isinstance(value, tuple):
            return self._members(ref, leaf, [value], key)
        if not value or not isinstance(value[0], str) or value[0].strip().lower() not in _OPERATORS:
            raise FilterError(
                f"where[{key!r}]={value!r}: a tuple is (operator, value); use a list for membership. {WHERE_FORMS}"
            )
        op = " ".join(value[0].lower().split())
        args = value[1:]
        if op in ("in", "not in"):
            if len(args) != 1 or isinstance(args[0], (str, bytes)) or not isinstance(args[0], Iterable):
                raise FilterError(f"where[{key!r}]: ({op!r}, values) takes a list of values")
            return self._members(ref, leaf, args[0], key, negate=op == "not in")
        if op in ("=", "==", "!=", "<>") and len(args) == 1 and args[0] is not None:
            return self._members(ref, leaf, [args[0]], key, negate=op in ("!=", "<>"))
        self._unhashed(key, op)
        if op in ("between", "not between"):
            if len(args) != 2 or args[0] is None or args[1] is None:
                raise FilterError(f"where[{key!r}]: ({op!r}, low, high) takes two non-null bounds")
            self.params.extend(self._value(leaf, a, key) for a in args)
            return f"{ref} {op.upper()} ? AND ?"
        if len(args) != 1:
            raise FilterError(f"where[{key!r}]: ({op!r}, value) takes exactly one value")
        arg = args[0]
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

    def _unhashed(self, key: str, op: str) -> None:
        """Order and pattern comparisons mean nothing on hashed values."""
        if key in self.hashed:
            raise FilterError(
                f"where[{key!r}]: {key!r} holds hashed values (the writer's hash_fields) in this store; only "
                f"equality and membership work on it, not {op!r}"
            )

    def clause(self) -> str:
        return (" WHERE " + " AND ".join(self.conditions)) if self.conditions else ""


def compile_selection(
    sel: Selection,
    shape: Shape,
    *,
    hashed: Collection[str] = (),
    hash_key: bytes | None = None,
    what: str = "the predictions",
) -> Conditions:
    """The conditions of ``sel`` over a relation of shape ``shape`` (time bounds exact).

    The model filter is not among them: the files read are already those of the models.
    Replay rows are left out by the views themselves (see ``Selection.replays``).
    """
    q = Conditions(shape, what, hashed=hashed, hash_key=hash_key)
    q.equal("model_version", sel.version)
    q.equal("user_id", sel.user_id)
    q.equal("status", sel.status)
    q.equal("request_id", sel.request_id)
    q.time(sel.start, sel.end)
    q.where(sel.where)
    return q
