"""The two sides of a comparison: a selection of the store, a DataFrame, or a saved Profile.

Every side answers two questions: which fields it has (:meth:`Side.fields`, by dotted path:
``features.age``, ``context.country``, ``prediction``, ``confidence``) and what it holds of
some of them (:meth:`Side.summarize`, see :mod:`._summary`). A store side asks the reading
side's query core for a relation over its selection (``Store.relation``, unordered, only the
columns it needs) and aggregates it in DuckDB; a DataFrame side runs the same aggregates on
a private in-memory DuckDB connection.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from predlog.replay._shapes import ident, lit

from ._summary import Field, Summary, kind_of, summarize, vector_fields

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa
    from duckdb.sqltypes import DuckDBPyType

    from predlog.replay import Store

__all__ = [
    "FrameSide",
    "Side",
    "StoreSide",
    "describe_filters",
    "feature_path",
    "last_day",
    "resolve_model",
    "side_of",
]

WEIGHT = "1.0 / coalesce(sample_rate, 1.0)"
"""A row's weight: it stands for 1 / sample_rate calls (errors are always kept, at rate 1)."""

_ROOTS = ("features", "context", "prediction", "confidence", "latency_ms", "label")


@runtime_checkable
class Side(Protocol):
    """One side of a comparison."""

    @property
    def label(self) -> str:
        """A few words saying what the side is ("version 1.3", "training frame")."""
        ...

    @property
    def filters(self) -> dict[str, Any] | None:
        """The store filters that select this side's rows (None when not a store selection)."""
        ...

    def fields(self) -> dict[str, Field]:
        """Every field of the side, by dotted path."""
        ...

    def summarize(self, fields: Sequence[Field]) -> dict[str, Summary]:
        """Summaries of ``fields`` (those of a compared kind)."""
        ...


def feature_path(name: str) -> str:
    """``"age"`` → ``"features.age"``; paths under a known root (``context.country``,
    ``prediction[0]``) stay as they are."""
    root = re.split(r"[.\[]", name, maxsplit=1)[0]
    return name if root in _ROOTS else f"features.{name}"


def _with_vectors(fields: dict[str, Field], side: StoreSide | FrameSide) -> dict[str, Field]:
    """``fields`` and, for a prediction that is a list of numbers (probabilities), its argmax
    (``prediction.class``) and elements (``prediction[0]``, ...)."""
    out = dict(fields)
    for path, f in fields.items():
        if path.split(".", 1)[0] == "prediction" and f.kind is None and _numeric_list(f.dtype):
            col = ident(path)
            got = side.relation([path]).aggregate(f"max(len({col}))").fetchall()[0][0]
            for d in vector_fields(path, f.dtype.removesuffix("[]"), int(got or 0)):
                out[d.path] = d
    return out


def _numeric_list(dtype: str) -> bool:
    return dtype.endswith("[]") and dtype[:-2].lower() in ("double", "float", "decimal", "bigint", "integer")


def _flatten(prefix: str, dtype: DuckDBPyType, out: dict[str, Field]) -> None:
    if str(dtype.id).lower() == "struct":
        for name, child in dtype.children:
            _flatten(f"{prefix}.{name}", cast("DuckDBPyType", child), out)
        return
    kind, note = kind_of(dtype)
    out[prefix] = Field(prefix, kind, str(dtype), note)


def resolve_model(store: Store, model: str | None, filters: Mapping[str, Any] | None = None) -> str:
    """The model to analyse: ``model`` checked against the store, or the store's only model
    (with ``include_live=True`` among ``filters``, models with live rows only count too)."""
    live = bool((filters or {}).get("include_live"))
    if model is not None:
        store.selection(model, include_live=live)  # raises UnknownModelError, listing the models present
        return model
    models = store.models(include_live=live)
    if len(models) == 1:
        return models[0]
    if not models:
        from predlog.replay import UnknownModelError

        raise UnknownModelError(None, [], live_only=live)
    raise ValueError(
        f"the store holds {len(models)} models ({', '.join(models)}): name one with model=, e.g. model={models[0]!r}"
    )


def model_in_sides(model: str | None, *specs: Any) -> tuple[str | None, list[Any]]:
    """``model=``, or the ``"model"`` key of dict sides (``{"model": "fraud", "version": "1.3"}``,
    as ``Store.predictions`` takes it), and the sides without it."""
    named = {spec["model"] for spec in specs if isinstance(spec, Mapping) and spec.get("model") is not None}
    if model is not None:
        named.add(model)
    if len(named) > 1:
        raise ValueError(
            f"the sides name different models ({', '.join(sorted(map(str, named)))}): drift compares one model's "
            "rows; pass model= once (for two models, compare DataFrames or Profiles of each)"
        )
    out = [{k: v for k, v in spec.items() if k != "model"} if isinstance(spec, Mapping) else spec for spec in specs]
    return (next(iter(named)) if named else None), out


def one_kind(store: Store, model: str, filters: Mapping[str, Any] | None, what: str = "performance") -> None:
    """Raise when the model's predictions are text because they are of two kinds: JSON arrays
    in some files and JSON numbers in others (a score, then a probability vector). The store
    then reads every prediction as JSON text, and compared or scored as text every number
    would be wrong: the error says to select one version.

    Looks at every row of the model's files for the versions selected (not only the selected
    rows: the files read decide the column's type). Text predictions that are not JSON (class
    names, "[unk]") are classes, not a mix.
    """
    keep = {k: v for k, v in (filters or {}).items() if k in ("version", "include_live", "include_replays")}
    rel = store.relation(model, columns=["model_version", "prediction"], ordered=False, **keep)
    kind = "CASE WHEN json_valid(prediction) THEN json_type(prediction) END"
    sql = (
        f"SELECT model_version, {kind} AS k, count(*) FROM r WHERE prediction IS NOT NULL "
        "AND k IN ('ARRAY', 'DOUBLE', 'BIGINT', 'UBIGINT') GROUP BY ALL"
    )
    kinds_rel = rel.query("r", sql)
    assert kinds_rel is not None  # a SELECT always gives a relation
    by_version: dict[str, set[str]] = {}
    for version, k, _ in kinds_rel.fetchall():
        by_version.setdefault(str(version), set()).add("lists" if k == "ARRAY" else "single values")
    if len(set().union(*by_version.values()) if by_version else set()) < 2:
        return
    said = ", ".join(f"{v}: {' and '.join(sorted(k))}" for v, k in sorted(by_version.items()))
    fix = (
        f"take one kind at a time, e.g. {what}(s, ..., version=...)"
        if all(len(k) == 1 for k in by_version.values())
        else "a version holds both kinds: select rows of one kind (where=, start=, end=) or log one kind per version"
    )
    raise ValueError(
        f"the predictions of model {model!r} are of two kinds (version {said}), so the store reads them as text: {fix}"
    )


def last_day(store: Store, model: str, filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Filters for the 24 hours that end with the model's newest row (the default ``current``)."""
    rel = store.relation(model, columns=["ts"], ordered=False, **dict(filters or {}))
    newest = rel.aggregate('max("ts")').fetchall()[0]
    if newest is None or newest[0] is None:
        raise ValueError(f"model {model!r} has no rows yet: nothing to compare")
    end = cast(dt.datetime, newest[0]) + dt.timedelta(microseconds=1)
    return {**dict(filters or {}), "start": end - dt.timedelta(days=1), "end": end}


def describe_filters(filters: Mapping[str, Any]) -> str:
    """A few words for a store selection: ``version 1.3, 2026-11-01 → 2026-11-08``."""
    parts = []
    if filters.get("version") is not None:
        v = filters["version"]
        parts.append(f"version {v}" if isinstance(v, str) else f"versions {', '.join(map(str, v))}")
    if filters.get("last") is not None:
        parts.append(f"last {filters['last']}")
    start, end = filters.get("start"), filters.get("end")
    if start is not None or end is not None:
        parts.append(f"{_when(start) if start is not None else '…'} → {_when(end) if end is not None else '…'}")
    for key in ("user_id", "status", "request_id"):
        if filters.get(key) is not None:
            parts.append(f"{key} {filters[key]}")
    if filters.get("where") is not None:
        parts.append(f"where {filters['where']}")
    return ", ".join(parts) or "all rows"


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC) if value.tzinfo else value
        if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
            return f"{value:%Y-%m-%d}"
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


class StoreSide:
    """The rows of one model that a dict of ``Store.predictions`` filters selects."""

    def __init__(self, store: Store, model: str, filters: Mapping[str, Any], label: str | None = None) -> None:
        self.store = store
        self.model = model
        self._filters = dict(filters)
        store.selection(model, **self._filters)  # bad filters fail here, before any work
        self._label = label or describe_filters(self._filters)
        self._fields: dict[str, Field] | None = None
        self._rows: tuple[int, bool] | None = None

    @property
    def label(self) -> str:
        return self._label

    @property
    def filters(self) -> dict[str, Any]:
        return {"model": self.model, **self._filters}

    def relation(self, columns: Sequence[str]) -> duckdb.DuckDBPyRelation:
        """The side's rows as an unordered relation of ``columns`` (named by path)."""
        return self.store.relation(self.model, columns=list(columns), ordered=False, **self._filters)

    def fields(self) -> dict[str, Field]:
        if self._fields is None:
            rel = self.store.relation(self.model, ordered=False, **self._filters)
            out: dict[str, Field] = {}
            for name, dtype in zip(rel.columns, rel.types, strict=True):
                if name in ("features", "context", "prediction", "confidence", "latency_ms"):
                    _flatten(name, dtype, out)
            self._fields = _with_vectors(out, self)
        return self._fields

    def rows(self) -> tuple[int, bool]:
        """The side's row count, and whether every row weighs the same (one sample rate)."""
        if self._rows is None:
            rel = self.relation(["sample_rate"])
            n, same = rel.aggregate("count(*), coalesce(min(sample_rate) = max(sample_rate), true)").fetchall()[0]
            self._rows = (int(n), bool(same))
        return self._rows

    def summarize(self, fields: Sequence[Field]) -> dict[str, Summary]:
        fields = [f for f in fields if f.kind is not None]
        if not fields:
            return {}
        n, same = self.rows()
        if same:  # equal weights: counts give the same shares, and nothing more to read
            return summarize(self.relation, fields, rows=n)
        return summarize(self.relation, fields, weight=WEIGHT, weight_columns=["sample_rate"], rows=n)


class FrameSide:
    """A pandas DataFrame (or pyarrow Table): one column per field, e.g. a training set.

    A column named ``age`` is the feature ``features.age``; columns named ``prediction``,
    ``confidence``, ``label`` or with a dotted path (``context.country``) are those fields.
    """

    def __init__(self, frame: pd.DataFrame | pa.Table, label: str | None = None) -> None:  # noqa: D107
        import duckdb
        import pyarrow as pa

        table = frame if isinstance(frame, pa.Table) else _arrow(frame)
        seen: dict[str, str] = {}
        for name in table.column_names:
            other = seen.setdefault(name.lower(), name)
            if other != name:
                raise ValueError(
                    f"columns {other!r} and {name!r} differ only in case, which DuckDB (and SQL) cannot tell "
                    "apart: rename one of them"
                )
        self._table = table
        self._con = duckdb.connect()
        self._lock = threading.Lock()
        self._rel = self._con.from_arrow(table)
        self._label = label or f"a frame of {table.num_rows:,} rows"
        self._columns: dict[str, str] = {}  # path -> column
        for name in table.column_names:
            path = name if name.split(".", 1)[0] in _ROOTS else f"features.{name}"
            self._columns[path] = name
        self._fields: dict[str, Field] | None = None

    @property
    def label(self) -> str:
        return self._label

    @property
    def filters(self) -> None:
        return None

    def fields(self) -> dict[str, Field]:
        if self._fields is None:
            out: dict[str, Field] = {}
            types = dict(zip(self._rel.columns, self._rel.types, strict=True))
            for path, column in self._columns.items():
                _flatten(path, types[column], out)
            self._fields = _with_vectors(out, self)
        return self._fields

    def relation(self, columns: Sequence[str]) -> duckdb.DuckDBPyRelation:
        exprs = []
        for path in columns:
            column = self._columns.get(path)
            if column is not None:
                exprs.append(f"{ident(column)} AS {ident(path)}")
                continue
            # A field inside a struct column: features.address.city.
            for p, col in self._columns.items():
                if path.startswith(p + "."):
                    inner = path[len(p) + 1 :].split(".")
                    expr = ident(col) + "".join(f"[{lit(part)}]" for part in inner)
                    exprs.append(f"{expr} AS {ident(path)}")
                    break
            else:
                raise KeyError(path)
        with self._lock:  # a cursor per relation: fields are summarised from several threads
            cursor = self._con.cursor()
        return cursor.from_arrow(self._table).project(", ".join(exprs))

    def summarize(self, fields: Sequence[Field]) -> dict[str, Summary]:
        fields = [f for f in fields if f.kind is not None]
        if not fields:
            return {}
        return summarize(self.relation, fields, rows=self._table.num_rows)


def _arrow(frame: Any) -> pa.Table:
    import pandas as pd
    import pyarrow as pa

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"expected a pandas DataFrame or a pyarrow Table, got {type(frame).__name__}: pass the rows "
            "as a DataFrame with one column per feature"
        )
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TypeError(f"the DataFrame has a column Arrow cannot type ({exc}); give each column one type") from exc


def side_of(store: Store | None, model: str | None, spec: Any, what: str) -> Side:
    """A side from what the user passed: store filters (a dict), a DataFrame or a Profile."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(spec, Side):  # a Profile, or any object with fields() and summarize()
        return spec
    if isinstance(spec, (pd.DataFrame, pa.Table)):
        return FrameSide(spec, label=f"{what} frame ({len(spec):,} rows)")
    if isinstance(spec, Mapping):
        if store is None or model is None:
            raise TypeError(f"{what} is a dict of store filters, but no Store was given")
        return StoreSide(store, model, spec)
    raise TypeError(
        f"{what} must be a dict of Store.predictions filters (e.g. {{'version': '1.3'}} or "
        f"{{'last': '7d'}}), a pandas DataFrame or a Profile; got {type(spec).__name__}"
    )
