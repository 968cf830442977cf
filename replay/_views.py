"""The views a query reads: ``predictions`` and ``labels`` over one listing of the store.

Each query lists the store's files (writers seal new ones, maintenance swaps them) and builds
a :class:`Snapshot`: for each view, the groups of Parquet files DuckDB can read together
(``read_parquet([...], hive_partitioning=true, union_by_name=true)``) and the live Arrow
tables of ``include_live``, combined with ``UNION ALL BY NAME``. Where files disagree on a
column's type (a number in one model's files, a vector in another's) the column is read as
JSON text; give ``model=`` to get its natural type.

The ``predictions`` view has the store format's columns in their documented order, ``model``
and the UTC ``date`` taken from the partition (Hive style), ``capture_flags`` also from
files of earlier versions (``flags``), and without the rows of replays (``context.replay_of``)
unless asked for.

Labels keep the type they were logged with. Label files hold one label type each, so the
``labels`` view reads natural types as long as the labels it covers share a type (or are
numbers: ints and floats together read as floats). Where a query's predictions have labels
of several types (a spam model's ``"ham"`` beside a churn model's ``1``), the view is narrowed
to the types those predictions have; only a selection whose labels really mix types gets
``label`` as JSON text plus ``label_type``, and the eager methods turn it back into values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from predlog._processors import HASHED_KEY

from ._selection import REPLAY_OF
from ._shapes import JSON, NULL, Shape, convert_sql, fields_of, has_json, ident, lit, merge, schema_shape

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = [
    "KEYS",
    "LABEL_TYPE",
    "PREDICTION_COLUMNS",
    "Footer",
    "Snapshot",
    "Source",
    "View",
    "group_files",
    "label_family",
    "labeled_sql",
    "latest_labels_sql",
    "read_footer",
]

PREDICTION_COLUMNS = (
    "prediction_id",
    "ts",
    "model",
    "model_version",
    "latency_ms",
    "cpu_ms",
    "status",
    "error_type",
    "error_message",
    "request_id",
    "user_id",
    "batch_id",
    "batch_index",
    "batch_size",
    "trace_id",
    "span_id",
    "features",
    "prediction",
    "confidence",
    "context",
    "sample_rate",
    "capture_flags",
    "date",
)
"""The columns of the ``predictions`` view, in order (other columns, if any, follow)."""

LABEL_COLUMNS = ("prediction_id", "request_id", "ts", "label", "extra", "capture_flags", "date")
LABEL_TYPE = "label_type"
"""The column that names each label's type when a selection's labels mix types."""

_OLD_FLAGS = "flags"  # the name of capture_flags in files written by predlog < 0.2
_FLAGS = "capture_flags"
_HIVE_PREDICTIONS = "{'model': 'VARCHAR', 'date': 'DATE'}"
_HIVE_LABELS = "{'date': 'DATE'}"
_NUMERIC = frozenset({"bool", "int", "float"})


# ---------------------------------------------------------------- file footers


KEYS = frozenset({"prediction_id", "request_id"})
"""The columns a label is joined to its prediction by."""


@dataclasses.dataclass(frozen=True)
class Footer:
    """What a query needs to know of one Parquet file, from its footer alone."""

    mtime_ns: int
    size: int
    shape: Shape
    rows: int
    versions: frozenset[str] | None  # model_version values, from statistics (None: unknown)
    hashed: frozenset[str]  # dotted paths the writer hashed (``hash_fields``)
    label_family: str  # labels files: the family of the ``label`` column (see label_family)
    keys: frozenset[str] = KEYS  # labels files: the key columns (prediction_id, request_id) holding a value


def label_family(t: pa.DataType | None) -> str:
    """The family of a label column type: labels of different families are not widened."""
    import pyarrow as pa

    if t is None or pa.types.is_null(t):
        return "null"
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytes"
    if pa.types.is_timestamp(t):
        return "datetime"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_struct(t):
        return "struct"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "list"
    return str(t)


def read_footer(path: str, st: os.stat_result) -> Footer:
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    schema = meta.schema.to_arrow_schema()
    hashed: frozenset[str] = frozenset()
    raw = (meta.metadata or {}).get(HASHED_KEY)
    if raw:
        with contextlib.suppress(ValueError, TypeError):
            hashed = frozenset(str(p) for p in json.loads(raw))
    label = schema.field("label").type if "label" in schema.names else None
    return Footer(
        st.st_mtime_ns,
        st.st_size,
        schema_shape(schema),
        meta.num_rows,
        _versions(meta),
        hashed,
        label_family(label),
        _keys(meta) if label is not None else KEYS,
    )


def _keys(meta: Any) -> frozenset[str]:
    """The key columns of a label file that hold a value, from its row-group statistics
    (a column whose statistics are missing counts as holding one)."""
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    out = set()
    for key in KEYS:
        if key not in names:
            continue
        j = names.index(key)
        for g in range(meta.num_row_groups):
            col = meta.row_group(g).column(j)
            stats = col.statistics
            if stats is None or not stats.has_null_count or stats.null_count < col.num_values:
                out.add(key)
                break
    return frozenset(out)


def _versions(meta: Any) -> frozenset[str] | None:
    """The model_version values of a file from its row-group statistics, when they say."""
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    if "model_version" not in names:
        return None
    j = names.index("model_version")
    found: set[str] = set()
    for g in range(meta.num_row_groups):
        col = meta.row_group(g).column(j)
        stats = col.statistics
        if stats is None:
            return None
        if stats.null_count == col.num_values:
            continue
        if not stats.has_min_max or stats.min != stats.max:
            return None
        found.add(stats.min if isinstance(stats.min, str) else bytes(stats.min).decode("utf-8", "replace"))
    return frozenset(found)


# ---------------------------------------------------------------- sources and views


@dataclasses.dataclass
class Source:
    """One thing a view reads: a group of Parquet files DuckDB unifies, or a live Arrow table."""

    shape: Shape  # as the view shows it: hive columns added, flags renamed
    files: list[str] = dataclasses.field(default_factory=list)
    hive_types: str = ""
    table: pa.Table | None = None
    name: str = ""
    empty: bool = False  # only lends its schema to an empty result
    family: str = ""  # labels: the label family of its files
    keys: frozenset[str] = KEYS  # labels: the key columns holding a value in some row
    raw: Shape = NULL  # the files' own shape

    def select(self, target: Shape, *, json_labels: bool = False) -> str:
        fields = fields_of(target)
        raw = fields_of(self.raw)
        replace = []
        for name, sub in raw.items():
            if name in (_OLD_FLAGS,) or (json_labels and name == "label"):
                continue
            ref = ident(name)
            expr = convert_sql(ref, sub, fields.get(name, sub))
            if expr != ref:
                replace.append(f"{expr} AS {ref}")
        extra = []
        exclude = []
        if _OLD_FLAGS in raw:
            exclude.append(ident(_OLD_FLAGS))
            if _FLAGS in raw:
                exclude.append(ident(_FLAGS))
                extra.append(f"coalesce({ident(_FLAGS)}, {ident(_OLD_FLAGS)}) AS {ident(_FLAGS)}")
            else:
                extra.append(f"{ident(_OLD_FLAGS)} AS {ident(_FLAGS)}")
        if json_labels and "label" in raw:
            exclude.append(ident("label"))
            extra.append(f"CAST(to_json({ident('label')}) AS VARCHAR) AS {ident('label')}")
            extra.append(f"{lit(self.family)} AS {ident(LABEL_TYPE)}")
        if self.table is not None:
            source = self.name
            # Live rows have no partition yet: `date` comes from ts.
            if "ts" in raw:
                extra.append("CAST(timezone('UTC', ts) AS DATE) AS date")
        else:
            source = (
                f"read_parquet({_path_list(self.files)}, hive_partitioning=true, union_by_name=true, "
                f"hive_types={self.hive_types})"
            )
        star = "*"
        if exclude:
            star += f" EXCLUDE ({', '.join(exclude)})"
        if replace:
            star += f" REPLACE ({', '.join(replace)})"
        cols = ", ".join([star, *extra])
        return f"SELECT {cols} FROM {source}" + (" WHERE false" if self.empty else "")


@dataclasses.dataclass
class View:
    name: str
    sources: list[Source]
    shape: Shape
    empty_sql: str = ""
    order: tuple[str, ...] = ()
    condition: str = ""  # applied to the combined rows (e.g. no replay rows)
    json_labels: bool = False  # labels of several types: label as JSON text, plus label_type
    cast_label: str = ""  # labels that are numbers of several kinds: one SQL type for all

    def sql(self) -> str:
        if not self.sources:
            return self.empty_sql
        parts = [s.select(self.shape, json_labels=self.json_labels) for s in self.sources]
        inner = parts[0] if len(parts) == 1 else " UNION ALL BY NAME ".join(f"({p})" for p in parts)
        names = list(fields_of(self.shape))
        ordered = [c for c in self.order if c in names] + [c for c in names if c not in self.order]
        cols = ", ".join(
            f"CAST({ident(c)} AS {self.cast_label}) AS {ident(c)}" if c == "label" and self.cast_label else ident(c)
            for c in ordered
        )
        where = f" WHERE {self.condition}" if self.condition else ""
        return f"SELECT {cols} FROM ({inner}){where}"

    @property
    def files(self) -> list[str]:
        return [f for s in self.sources for f in s.files]


def _path_list(paths: Iterable[str]) -> str:
    return "[" + ", ".join(lit(p) for p in paths) + "]"


def view_shape(raw: Shape, *, hive: tuple[tuple[str, Shape], ...] = (), live: bool = False) -> Shape:
    """The shape a view shows for files of shape ``raw``: flags renamed, partition columns added."""
    fields = dict(fields_of(raw))
    if _OLD_FLAGS in fields:
        old = fields.pop(_OLD_FLAGS)
        fields[_FLAGS] = merge(fields[_FLAGS], old) if _FLAGS in fields else old
    for name, sub in hive:
        fields.setdefault(name, sub)
    if live and "ts" in fields:
        fields.setdefault("date", ("scalar", "time"))
    return ("struct", tuple(fields.items()))


PREDICTION_HIVE: tuple[tuple[str, Shape], ...] = (("model", ("scalar", "str")), ("date", ("scalar", "time")))
LABEL_HIVE: tuple[tuple[str, Shape], ...] = (("date", ("scalar", "time")),)


def group_files(items: list[tuple[str, Shape]]) -> list[tuple[Shape, list[str]]]:
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


def _merged(sources: list[Source]) -> Shape:
    shape = sources[0].shape
    for s in sources[1:]:
        shape = merge(shape, s.shape)
    return shape


_EMPTY_PREDICTION_TYPES = (
    ("prediction_id", "VARCHAR", "str"),
    ("ts", "TIMESTAMPTZ", "time"),
    ("model", "VARCHAR", "str"),
    ("model_version", "VARCHAR", "str"),
    ("latency_ms", "DOUBLE", "num"),
    ("cpu_ms", "DOUBLE", "num"),
    ("status", "VARCHAR", "str"),
    ("error_type", "VARCHAR", "str"),
    ("error_message", "VARCHAR", "str"),
    ("request_id", "VARCHAR", "str"),
    ("user_id", "VARCHAR", "str"),
    ("batch_id", "VARCHAR", "str"),
    ("batch_index", "INTEGER", "num"),
    ("batch_size", "INTEGER", "num"),
    ("trace_id", "VARCHAR", "str"),
    ("span_id", "VARCHAR", "str"),
    ("prediction", "VARCHAR", "str"),
    ("confidence", "DOUBLE", "num"),
    ("sample_rate", "DOUBLE", "num"),
)
EMPTY_PREDICTIONS = (
    "SELECT "
    + ", ".join(f"NULL::{t} AS {n}" for n, t, _ in _EMPTY_PREDICTION_TYPES)
    + ", NULL::VARCHAR[] AS capture_flags, NULL::DATE AS date WHERE false"
)
EMPTY_PREDICTIONS_SHAPE: Shape = (
    "struct",
    tuple((n, ("scalar", f)) for n, _, f in _EMPTY_PREDICTION_TYPES)
    + (("capture_flags", ("list", ("scalar", "str"))), ("date", ("scalar", "time"))),
)
EMPTY_LABELS = (
    "SELECT NULL::VARCHAR AS prediction_id, NULL::VARCHAR AS request_id, NULL::TIMESTAMPTZ AS ts, "
    "NULL::VARCHAR AS label, NULL::VARCHAR[] AS capture_flags WHERE false"
)
EMPTY_LABELS_SHAPE: Shape = (
    "struct",
    (
        ("prediction_id", ("scalar", "str")),
        ("request_id", ("scalar", "str")),
        ("ts", ("scalar", "time")),
        ("label", ("scalar", "str")),
        ("capture_flags", ("list", ("scalar", "str"))),
    ),
)


def predictions_view(sources: list[Source], *, replays: bool) -> View:
    if not sources:
        return View("predictions", [], EMPTY_PREDICTIONS_SHAPE, EMPTY_PREDICTIONS)
    shape = _merged(sources)
    condition = ""
    context = fields_of(fields_of(shape).get("context", NULL))
    if not replays and REPLAY_OF in context:
        condition = f"struct_extract({ident('context')}, {lit(REPLAY_OF)}) IS NULL"
    return View("predictions", sources, shape, order=PREDICTION_COLUMNS, condition=condition)


def labels_view(sources: list[Source], families: frozenset[str] | None = None) -> View:
    """The labels view over the label files of ``families`` (None: all of them).

    Null labels (``log_label(None)``) are always read: the latest label wins, even a null one.
    """
    if families is not None:
        sources = [s for s in sources if s.family in families or s.family == "null"]
    if not sources:
        return View("labels", [], EMPTY_LABELS_SHAPE, EMPTY_LABELS)
    present = {s.family for s in sources} - {"null"}
    shape = _merged(sources)
    fields = dict(fields_of(shape))
    json_labels = False
    if len(present) > 1 and not present <= _NUMERIC:
        json_labels = True
        fields["label"] = ("scalar", "str")
        fields[LABEL_TYPE] = ("scalar", "str")
    cast = ""
    if len(present) > 1 and present <= _NUMERIC:
        # ints and floats (and booleans) of one selection read as one numeric type.
        cast = "DOUBLE" if "float" in present else "BIGINT"
    return View(
        "labels",
        sources,
        ("struct", tuple(fields.items())),
        order=LABEL_COLUMNS,
        json_labels=json_labels,
        cast_label=cast,
    )


@dataclasses.dataclass
class Snapshot:
    """The views of one query, built from one listing of the store."""

    views: dict[str, View]
    label_sources: list[Source] = dataclasses.field(default_factory=list)
    hashed: frozenset[str] = frozenset()  # dotted prediction paths some file hashed
    installed: dict[str, str] | None = None  # the cursor's views (view -> SQL), when it is reused

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
            cur.execute(f"CREATE OR REPLACE TEMP VIEW {ident(view.name)} AS {sql}")
            if installed is not None:
                installed[view.name] = sql
        if installed is not None:
            for name in [n for n in installed if n not in self.views]:
                cur.execute(f"DROP VIEW IF EXISTS {ident(name)}")
                del installed[name]

    def narrow_labels(self, cur: duckdb.DuckDBPyConnection, families: frozenset[str]) -> None:
        """Read only the label files of ``families`` from now on (natural types where they agree)."""
        self.views["labels"] = labels_view(self.label_sources, families)
        self.install(cur, self.installed)

    def release(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Unregister the live tables (the cursor is reused by the next query of the thread)."""
        for view in self.views.values():
            for src in view.sources:
                if src.table is not None:
                    with contextlib.suppress(Exception):
                        cur.unregister(src.name)

    def shape(self, name: str) -> Shape:
        return self.views[name].shape

    @property
    def label_families(self) -> frozenset[str]:
        """The label families of the files the labels view reads (null labels left out)."""
        return frozenset(s.family for s in self.label_sources) - {"null"}

    @property
    def label_keys(self) -> frozenset[str]:
        """The key columns (``prediction_id``, ``request_id``) that some label the labels
        view reads is logged under: a key no label has needs no join."""
        view = self.views.get("labels")
        sources = view.sources if view is not None else []
        return frozenset().union(*(s.keys for s in sources)) if sources else frozenset()

    @property
    def mixed_labels(self) -> bool:
        """Whether the labels view reads labels as JSON text (their types disagree)."""
        view = self.views.get("labels")
        return bool(view is not None and view.json_labels)

    def stale(self) -> bool:
        """True when a listed file has gone (maintenance swapped it): list and try again."""
        return any(not os.path.exists(f) for f in self.files)


# ---------------------------------------------------------------- predictions with labels


def latest_labels_sql(snap: Snapshot, key: str, carried: list[tuple[str, str]]) -> str:
    """The latest label (by its ``ts``) of each ``key`` value (``prediction_id`` or
    ``request_id``) as ``_k`` and the ``carried`` (label column, alias) pairs."""
    lfields = fields_of(snap.shape("labels"))
    pick = "".join(f", {ident(src)} AS {ident(dst)}" for src, dst in carried)
    if key not in lfields:
        return f"SELECT NULL::VARCHAR AS _k{pick} FROM labels WHERE false"
    return (
        f"SELECT {ident(key)} AS _k{pick} FROM labels WHERE {ident(key)} IS NOT NULL "
        f"QUALIFY row_number() OVER (PARTITION BY {ident(key)} ORDER BY ts DESC) = 1"
    )


def labeled_sql(snap: Snapshot, predictions: str = "predictions") -> tuple[str, Shape]:
    """Predictions LEFT JOIN their latest label (by prediction_id, else by request_id).

    A label belongs to a prediction by ``prediction_id``; a prediction with no label of its
    own takes the latest label logged under its ``request_id``. The latest label (by its
    ``ts``) wins. Adds ``label``, ``label_ts``, ``label_extra`` when labels carry extra fields,
    and ``label_type`` when the labels mix types.
    """
    lfields = fields_of(snap.shape("labels"))
    pfields = fields_of(snap.shape("predictions"))
    carried = [("label", "label"), ("ts", "label_ts")]
    if "extra" in lfields:
        carried.append(("extra", "label_extra"))
    if LABEL_TYPE in lfields:
        carried.append((LABEL_TYPE, LABEL_TYPE))
    # A label logged under a request id needs a second join; none is, in most stores (the
    # statistics of the label files say so), and the join would cost a pass over the labels.
    by_request = "request_id" in pfields and "request_id" in snap.label_keys
    cols = [
        f"CASE WHEN lp._k IS NOT NULL THEN lp.{ident(dst)}{f' ELSE lr.{ident(dst)}' if by_request else ''} END "
        f"AS {ident(dst)}"
        for _, dst in carried
    ]
    sql = (
        f"SELECT p.*, {', '.join(cols)} FROM {predictions} AS p "
        f"LEFT JOIN ({latest_labels_sql(snap, 'prediction_id', carried)}) AS lp ON lp._k = p.prediction_id"
    )
    if by_request:
        sql += f" LEFT JOIN ({latest_labels_sql(snap, 'request_id', carried)}) AS lr ON lr._k = p.request_id"
    shape_fields = dict(pfields)
    for src, dst in carried:
        shape_fields[dst] = lfields.get(src, NULL) if src != "ts" else ("scalar", "time")
    return sql, ("struct", tuple(shape_fields.items()))


def json_fields(shape: Shape) -> list[str]:
    """Top-level columns read as JSON text (their type differs between the files read)."""
    return [name for name, sub in fields_of(shape).items() if has_json(sub) or sub == JSON]
