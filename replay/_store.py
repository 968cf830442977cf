"""The replay store opened for reading: DataFrames, lazy DuckDB relations and SQL.

Every query lists the store's files again, builds the views of :mod:`._views` on a cursor of
one locked DuckDB connection, and applies a :class:`~._selection.Selection` compiled in
:mod:`._selection`. :meth:`Store.relation` and :meth:`Store.labeled_relation` are the query
core: lazy relations over the selected predictions (joined with their latest label for the
second). The eager methods (:meth:`Store.predictions`, :meth:`Store.labeled`,
:meth:`Store.user`, :meth:`Store.training_data`), replay and the analysis layer are built on
them.

The connection can read only the store's directory (``allowed_directories``,
``enable_external_access=false``, ``lock_configuration=true``), and :meth:`Store.sql` runs
only single ``SELECT`` statements, so SQL given to a store cannot read or write other files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from predlog._layout import FORMAT_VERSION, MARKER, PREDICTIONS, marker_format, model_of, segment_paths, wal_dir

from . import _compact, _events, _files, _forget, _replay, _retain
from ._catalog import Catalog
from ._compact import CompactResult
from ._connection import LockedConnection, Slot
from ._errors import (
    FilterError,
    LiveRowsWarning,
    MixedLabelTypesWarning,
    PredictionNotFoundError,
    QueryNotAllowedError,
    StoreError,
    StoreNotFoundError,
    UnknownModelError,
    UnknownVersionError,
    UnsupportedStoreError,
)
from ._forget import ForgetResult
from ._frames import decode_labels, to_frame
from ._replay_result import ReplayResult
from ._retain import RetainResult
from ._selection import (
    Conditions,
    Filters,
    LabeledRead,
    Names,
    Read,
    RowOptions,
    Selection,
    TimeBound,
    UserRead,
    compile_selection,
    names,
    split_read,
)
from ._shapes import NULL, Shape, fields_of, has_json, ident, lit
from ._timebounds import UTC
from ._views import (
    LABEL_TYPE,
    Footer,
    Snapshot,
    group_files,
    json_fields,
    labeled_sql,
)

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

logger = logging.getLogger("predlog")

__all__ = ["Store"]

T = TypeVar("T")

_RETRIES = 10
_HIVE_PREDICTIONS = "{'model': 'VARCHAR', 'date': 'DATE'}"
_HIVE_LABELS = "{'date': 'DATE'}"
_HASH_KEY_ENV = "PREDLOG_HASH_KEY"


def _limit(limit: Any, params: list[Any]) -> str:
    if limit is None:
        return ""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise FilterError(f"limit={limit!r} must be a non-negative integer or None")
    params.append(limit)
    return " LIMIT ?"


def _uuid7_date(prediction_id: str) -> dt.date | None:
    try:
        u = uuid.UUID(prediction_id)
    except (ValueError, AttributeError, TypeError):
        return None
    if u.version != 7:
        return None
    ms = u.int >> 80
    try:
        return dt.datetime.fromtimestamp(ms / 1000, UTC).date()
    except (OverflowError, OSError, ValueError):
        return None


def _doc_of(fn: Callable[..., Any]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Give a Store method the docstring of the function it runs, without its ``store`` argument."""
    import inspect

    lines = (inspect.getdoc(fn) or "").splitlines()
    out: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("    store:"):
            skipping = True
            continue
        if skipping and line.startswith("        "):
            continue
        skipping = False
        out.append(line)

    def apply(method: Callable[..., T]) -> Callable[..., T]:
        method.__doc__ = "\n".join(out)
        return method

    return apply


@dataclasses.dataclass(frozen=True)
class _Query:
    """One read: a selection, and what to read of it (columns, limit, with labels or not)."""

    sel: Selection
    rows: RowOptions
    labeled: bool

    @property
    def label_lo(self) -> dt.datetime | None:
        """Label files older than the window need not be read (labels come after predictions)."""
        return self.sel.start if self.labeled else None


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
        s.relation(model="fraud").aggregate("model_version, count(*)")   # lazy

    Opening a store seals the write-ahead segments of writers that died (the rows they had
    written become Parquet) and finishes interrupted maintenance; a read-only store is read
    as it is, with a warning when there are such segments (``include_live=True`` shows them).

    Every query lists the files again, so rows sealed after opening are seen; a query that
    meets a file removed by maintenance between listing and reading lists again and retries.

    Filters, the same in every method: ``model``, ``version``, ``user_id``, ``status``
    (``"ok"``/``"error"``), ``request_id`` (a string or a list of strings each), ``start`` /
    ``end`` (``[start, end)`` in UTC: a datetime, naive meaning UTC, a date, a pandas
    Timestamp or an ISO 8601 string) or ``last="1h"``, ``where=`` (see :meth:`predictions`),
    ``include_live`` (rows not sealed into Parquet yet) and ``include_replays`` (rows written
    by ``replay(record_as=...)``; by default only when ``version`` names versions). A model
    or version the store does not hold raises, listing those it holds.

    Threads: one Store may be used from many threads at once; each thread queries through
    its own cursor of the store's single DuckDB connection. ``close()`` (or ``with Store(...)``)
    releases the connection and its private spill directory.

    Args:
        path: Directory of the store. Only local paths are supported yet.
        recover: Seal orphaned segments and finish interrupted maintenance on open (default).
            Skipped, with a warning, when the directory is not writable.
        threads: DuckDB worker threads (default: DuckDB's, the number of cores).
        memory_limit: DuckDB memory limit such as ``"4GB"`` (default: DuckDB's, 80% of RAM).
        hash_key: The writers' ``hash_key`` (default: ``$PREDLOG_HASH_KEY``), for stores written
            with ``hash_fields``: filters on a hashed column (``user_id``, ``request_id``, a
            feature) then look for the hash of the value given, so ``s.user("alice")`` works.

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
        hash_key: bytes | str | None = None,
    ) -> None:
        location = os.fspath(path)
        if not isinstance(location, str):
            raise TypeError(f"store path must be a str or os.PathLike of str, got {path!r}")
        if location.startswith("file://"):
            location = location[len("file://") :]
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location):
            raise UnsupportedStoreError(location)
        root = os.path.realpath(os.path.expanduser(location))
        if not os.path.isdir(root):
            raise StoreNotFoundError(root, "no such directory" if not os.path.exists(root) else "not a directory")
        if not os.path.exists(os.path.join(root, MARKER)) and not os.path.isdir(os.path.join(root, PREDICTIONS)):
            raise StoreNotFoundError(root, "the directory exists but holds no store")
        found = marker_format(root)
        if found > FORMAT_VERSION:
            raise StoreError(
                f"the store {root} is in format {found}, newer than this predlog reads (up to {FORMAT_VERSION}): "
                "upgrade predlog (pip install -U predlog) to read it"
            )
        if hash_key is None:
            hash_key = os.environ.get(_HASH_KEY_ENV) or None
        self._hash_key = hash_key.encode() if isinstance(hash_key, str) else hash_key
        self.root = root
        self.read_only = not _writable(root)
        self._catalog = Catalog(root)
        if recover:
            self._recover()
        self._db = LockedConnection(root, threads=threads, memory_limit=memory_limit)

    # ------------------------------------------------------------ lifecycle

    def _recover(self) -> None:
        if self.read_only:
            orphans = _orphan_segments(self.root)
            if orphans:
                warnings.warn(
                    f"predlog: store {self.root} is not writable, so the {orphans} segment(s) left by stopped "
                    "writers were not sealed into Parquet; their rows are readable with include_live=True. "
                    "Open the store once with write access to seal them",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return
        from predlog._sealing import recover_orphans

        try:
            recover_orphans(self.root)
        except OSError as exc:
            warnings.warn(
                f"predlog: could not seal the segments left by stopped writers in {self.root} ({exc}); "
                "their rows are readable with include_live=True and are sealed by the next writer",
                RuntimeWarning,
                stacklevel=3,
            )
        from ._maintenance import finish_interrupted

        try:
            finish_interrupted(self.root)
        except OSError as exc:
            warnings.warn(
                f"predlog: could not finish interrupted maintenance in {self.root} ({exc}); readers still "
                "see every row once, and the next maintenance operation finishes it",
                RuntimeWarning,
                stacklevel=3,
            )

    def close(self) -> None:
        """Close the DuckDB connection and remove its spill directory. Idempotent."""
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        closed = getattr(self, "_db", None) is None or self._db.closed
        return f"Store({self.root!r}{', read_only' if self.read_only else ''}{', closed' if closed else ''})"

    def _check_select(self, query: str) -> None:
        self._db.check_select(query)

    # ------------------------------------------------------------ files and schemas

    def models(self, *, include_live: bool = False) -> list[str]:
        """Names of the models that have a partition in the store, sorted; with
        ``include_live``, also those whose rows are all still in live write-ahead segments."""
        found = set(_files.models(self.root))
        if include_live:
            found |= _live_models(self.root)
        return sorted(found)

    def files(self, model: Names = None, start: TimeBound = None, end: TimeBound = None) -> list[str]:
        """Absolute paths of the visible prediction files, pruned by model and UTC date partition."""
        sel = self.selection(model=model, start=start, end=end)
        d0, d1 = sel.dates
        return _files.prediction_files(self.root, list(sel.model) if sel.model else None, d0, d1)

    def _footer(self, path: str) -> Footer:
        return self._catalog.footer(path)

    # ------------------------------------------------------------ running SQL

    def run(
        self,
        fn: Callable[[duckdb.DuckDBPyConnection, Snapshot], T],
        selection: Selection | None = None,
        *,
        predictions: bool = True,
        labels: bool = True,
        keep_open: bool = False,
    ) -> T:
        """Call ``fn(cursor, snapshot)`` with views ``predictions`` and ``labels`` installed.

        The building block of every query, for predlog's own modules: the store's files are
        listed (pruned by the selection's models and UTC date partitions — compile the
        selection with :meth:`conditions` for the exact filters), the views are (re)made on
        the calling thread's cursor of the locked connection, and ``fn`` runs. When ``fn``
        raises because a listed file vanished (maintenance swapped it), the store lists again
        and calls ``fn`` again, so ``fn`` must not have side effects outside the cursor.
        ``fn`` must not keep the cursor after it returns (the thread reuses it) unless
        ``keep_open``, which gives ``fn`` a cursor of its own (for lazy relations).
        ``snapshot.shape("predictions")`` summarises the view's columns (see ``_shapes``).

        ``selection`` comes from :meth:`selection`; without one the views hold every row of
        the store, replays included. With a selection, the labels view holds the label types
        of its predictions.
        """
        if selection is None:
            return self._run(
                fn, Selection(include_replays=True), predictions=predictions, labels=labels, keep_open=keep_open
            )
        return self._run(
            fn, selection, predictions=predictions, labels=labels, keep_open=keep_open, narrow_labels=labels
        )

    def conditions(
        self, snap: Snapshot, sel: Selection, *, shape: Shape | None = None, what: str = "the predictions"
    ) -> Conditions:
        """The selection's SQL conditions over ``snap``'s predictions (or a relation of ``shape``),
        with hashed columns looked up by hash and your own ``where=`` SQL checked to be a
        condition, not another statement."""
        if isinstance(sel.where, str):
            self._db.check_select(f"SELECT * FROM predictions WHERE ({sel.where})")
        return compile_selection(
            sel, shape or snap.shape("predictions"), hashed=snap.hashed, hash_key=self._hash_key, what=what
        )

    def _run(
        self,
        fn: Callable[[duckdb.DuckDBPyConnection, Snapshot], T],
        sel: Selection,
        *,
        predictions: bool = True,
        labels: bool = False,
        keep_open: bool = False,
        label_lo: dt.datetime | None = None,
        dates: tuple[dt.date | None, dt.date | None] | None = None,
        narrow_labels: bool = False,
    ) -> T:
        import duckdb

        for attempt in range(_RETRIES):
            snap: Snapshot | None = None
            cur: duckdb.DuckDBPyConnection | None = None
            slot: Slot | None = None
            keep = False
            ok = False
            try:
                snap = self._catalog.snapshot(
                    sel, predictions=predictions, labels=labels, label_lo=label_lo, dates=dates
                )
                # Lazy relations keep their cursor; everything else reuses the thread's cursor.
                slot = None if keep_open else self._db.take_slot()
                cur = slot.cursor if slot is not None else self._db.cursor()
                snap.installed = slot.views if slot is not None else None
                snap.install(cur, snap.installed)
                if narrow_labels:
                    self._narrow_labels(cur, snap, sel)
                result = fn(cur, snap)
                keep = keep_open
                ok = True
                return result
            except (duckdb.IOException, FileNotFoundError):
                if attempt + 1 < _RETRIES and (snap is None or snap.stale()):
                    logger.debug("predlog: a store file vanished during a query; listing again")
                    if attempt:
                        time.sleep(min(0.002 * 2**attempt, 0.1))  # let a burst of swaps settle
                    continue
                raise
            except duckdb.PermissionException as exc:
                raise QueryNotAllowedError(f"{exc}. A store's SQL can read only files inside {self.root}") from exc
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
        include_replays: bool | None = None,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of the locked connection with views ``predictions`` and ``labels``.

        For predlog's own modules and advanced use. The views reflect the files listed on
        entry; the cursor is closed on exit. It does not retry when maintenance removes a
        file under it (use :meth:`run` for that). Only files inside the store can be read or
        written through it, but inside the store it can write (``COPY ... TO``) and so forge or
        erase data: hand it only to code you trust as much as your own. Untrusted SQL goes
        through :meth:`sql`, which runs a single ``SELECT``.
        """
        sel = self.selection(
            model=model, start=start, end=end, include_live=include_live, include_replays=include_replays
        )
        snap = self._catalog.snapshot(sel, labels=True)
        cur = self._db.cursor()
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

        def describe(cur: duckdb.DuckDBPyConnection, _: Snapshot) -> dict[str, str]:
            rows = cur.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()
            return {str(r[0]): str(r[1]) for r in rows}

        sel = self.selection(model, include_live=include_live, include_replays=True)
        return self.run(describe, sel, predictions=not labels, labels=labels)

    def feature_names(self, model: Names = None, *, include_live: bool = False) -> list[str]:
        """Names of the fields of ``features`` over the model's files (all models if None)."""

        def feature_fields(_: duckdb.DuckDBPyConnection, snap: Snapshot) -> list[str]:
            return list(fields_of(fields_of(snap.shape("predictions")).get("features", NULL)))

        return self.run(
            feature_fields, self.selection(model, include_live=include_live, include_replays=True), labels=False
        )

    # ------------------------------------------------------------ the query core

    def selection(self, model: Names = None, *, days: Any = None, **filters: Unpack[Filters]) -> Selection:
        """The filters given (see :class:`Filters`), checked against this store, as a :class:`Selection`.

        Raises:
            UnknownModelError: a model the store does not hold (the models present are listed).
            UnknownVersionError: a version none of the selected models has (likewise).
            FilterError, TimeBoundError: filters of the wrong form.
        """
        sel = Selection.of(model=model, days=days, **filters)
        if sel.model is not None:
            self._check_models(sel.model, sel.include_live)
            sel = sel.replace(model=tuple(sorted(set(sel.model))))
        if sel.version is not None:
            self._check_versions(sel)
        return sel

    def _check_models(self, wanted: Sequence[str], include_live: bool) -> None:
        present = set(_files.models(self.root))
        if present.issuperset(wanted):
            return
        live = _live_models(self.root)
        if include_live:
            present |= live  # a model whose first rows are not sealed yet
        for name in wanted:
            if name not in present:
                raise UnknownModelError(name, present, live_only=name in live)

    def _check_versions(self, sel: Selection) -> None:
        """Raise UnknownVersionError for a version that no file of the selected models holds."""
        assert sel.version is not None
        models = list(sel.model) if sel.model else None
        files = _files.prediction_files(self.root, models)
        present: set[str] = set()
        unknown: list[str] = []
        for f in files:
            with contextlib.suppress(OSError):
                found = self._footer(f).versions
                if found is None:
                    unknown.append(f)
                else:
                    present |= found
        if set(sel.version) <= present:
            return
        if unknown:
            present |= self._distinct_versions(unknown)
        if sel.include_live or not set(sel.version) <= present:
            present |= _live_versions(self.root, models)
        missing = [v for v in sel.version if v not in present]
        if missing:
            live = _live_versions(self.root, models)
            raise UnknownVersionError(
                missing[0],
                sorted(present - live) if not sel.include_live else sorted(present),
                models=models,
                live_only=missing[0] in live and not sel.include_live,
            )

    def _distinct_versions(self, files: list[str]) -> set[str]:
        def distinct(cur: duckdb.DuckDBPyConnection, _: Snapshot) -> set[str]:
            sql = (
                f"SELECT DISTINCT model_version FROM read_parquet([{', '.join(lit(f) for f in files)}], "
                "union_by_name=true)"
            )
            return {str(r[0]) for r in cur.execute(sql).fetchall() if r[0] is not None}

        with contextlib.suppress(Exception):
            return self._run(distinct, Selection(), predictions=False)
        return set()

    def relation(self, model: Names = None, **read: Unpack[Read]) -> duckdb.DuckDBPyRelation:
        """The selected predictions as a lazy DuckDB relation: nothing is read yet.

        The query core of the reading side: the same filters as :meth:`predictions`, compiled
        once to SQL with bound parameters. Chain DuckDB's relational API (``.filter``,
        ``.aggregate``, ``.limit``, ``.arrow()``, ``.df()``...) to aggregate in the engine.
        Rows are in time order. Like :meth:`connection`, it runs on the store's connection,
        which can write inside the store (``.to_parquet``, ``.query("COPY ...")``): it is a
        tool for your own code, not for untrusted input. The relation reads the files listed
        when it was made; if maintenance removes one of them before the relation runs, DuckDB
        raises an IO error: make the relation again.
        """
        return self._relation(self._query(model, read))

    def _query(self, model: Names, read: Mapping[str, Any], *, labeled: bool = False) -> _Query:
        filters, rows = split_read(read, LabeledRead if labeled else Read)
        return _Query(self.selection(model, **filters), rows, labeled)

    def _relation(self, q: _Query) -> duckdb.DuckDBPyRelation:
        def query(cur: duckdb.DuckDBPyConnection, snap: Snapshot) -> duckdb.DuckDBPyRelation:
            sql, params = self._select(cur, snap, q)
            return cur.sql(sql, params=params)

        return self._run(query, q.sel, keep_open=True, labels=q.labeled, label_lo=q.label_lo)

    def labeled_relation(self, model: Names = None, **read: Unpack[LabeledRead]) -> duckdb.DuckDBPyRelation:
        """The selected predictions joined with their latest label, as a lazy DuckDB relation.

        A label belongs to a prediction by ``prediction_id``; a prediction with no label of
        its own takes the latest label logged under its ``request_id`` (every row of a batch
        call shares it). The latest label (by its ``ts``) wins. Adds ``label`` (with the type
        it was logged with), ``label_ts`` and, when labels carry extra fields,
        ``label_extra``. Only labeled predictions unless ``include_unlabeled``; ``where`` may
        also name ``label``, ``label_ts`` and ``label_extra``.

        Where the selected predictions have labels of several types (a string here, a number
        there) the relation has ``label`` as JSON text and ``label_type`` naming each type,
        with a :class:`MixedLabelTypesWarning`; :meth:`labeled` turns them back into values.
        """
        return self._relation(self._query(model, read, labeled=True))

    def _select(
        self, cur: duckdb.DuckDBPyConnection, snap: Snapshot, query: _Query, *, order: bool = True
    ) -> tuple[str, list[Any]]:
        """The SQL of a relation over ``snap``'s views: selection, labels, columns, order, limit."""
        sel, columns, labeled = query.sel, query.rows.columns, query.labeled
        if labeled:
            self._narrow_labels(cur, snap, sel)
            joined, shape = labeled_sql(snap)
            source, what = f"({joined}) AS j", "the labeled predictions"
        else:
            shape = snap.shape("predictions")
            source, what = "predictions", "the predictions"
        q = self.conditions(snap, sel, shape=shape, what=what)
        if labeled and not query.rows.include_unlabeled:
            q.conditions.append('"label_ts" IS NOT NULL')
        select = "*"
        if columns is not None:
            if isinstance(columns, str):
                columns = [columns]
            exprs = []
            for c in columns:
                ref, _ = q.resolve(c)
                exprs.append(f"{ref} AS {ident(c)}")
            if not exprs:
                raise FilterError("columns= must name at least one column")
            select = ", ".join(exprs)
        params = q.params
        sql = f"SELECT {select} FROM {source}{q.clause()}"
        if order and query.rows.ordered:
            sql += ' ORDER BY "ts", "prediction_id"'
        sql += _limit(query.rows.limit, params)
        return sql, params

    def _narrow_labels(self, cur: duckdb.DuckDBPyConnection, snap: Snapshot, sel: Selection) -> None:
        """Read only the label types the selected predictions have, so labels keep their type."""
        families = snap.label_families
        if len(families) <= 1 or not snap.mixed_labels:
            return
        q = compile_selection(sel, snap.shape("predictions"), hashed=snap.hashed, hash_key=self._hash_key)
        keys = f"SELECT prediction_id, request_id FROM predictions{q.clause()}"
        lfields = fields_of(snap.shape("labels"))
        on = ["l.prediction_id = k.prediction_id"] if "prediction_id" in lfields else []
        if "request_id" in lfields:
            on.append("l.request_id = k.request_id")
        if not on:
            return
        sql = (
            f"SELECT DISTINCT l.{ident(LABEL_TYPE)} FROM labels AS l SEMI JOIN ({keys}) AS k "
            f"ON {' OR '.join(on)} WHERE l.label IS NOT NULL"
        )
        found = frozenset(str(r[0]) for r in cur.execute(sql, q.params).fetchall())
        snap.narrow_labels(cur, found or families)
        if snap.mixed_labels:
            warnings.warn(
                f"the labels of these predictions have several types ({', '.join(sorted(found))}): 'label' is "
                f"JSON text and '{LABEL_TYPE}' names each one's type (Store.labeled() turns them back into "
                "values). Select one model (model=...) if the types belong to different models, or log one "
                "label type per model",
                MixedLabelTypesWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------ eager reads

    def _frame(
        self,
        q: _Query,
        *,
        index: str | None = None,
        transform: Callable[[duckdb.DuckDBPyConnection, Snapshot, str, list[Any]], tuple[str, list[Any]]] | None = None,
    ) -> pd.DataFrame:
        """Run the query and return a DataFrame with the values as they were logged."""

        def query(cur: duckdb.DuckDBPyConnection, snap: Snapshot) -> pd.DataFrame:
            sql, params = self._select(cur, snap, q)
            if transform is not None:
                sql, params = transform(cur, snap, sql, params)
            table = cur.sql(sql, params=params).to_arrow_table()
            df = to_frame(table)
            if q.rows.columns is None:
                df = _natural(df, snap, self)
            if LABEL_TYPE in df.columns:
                df = decode_labels(df).drop(columns=[LABEL_TYPE])
            return df

        df = self._run(query, q.sel, labels=q.labeled, label_lo=q.label_lo)
        if index is not None:
            df = df.set_index(index)
        if df.empty and not q.sel.include_live:
            self._hint_live(q)
        return df

    def _hint_live(self, q: _Query) -> None:
        """An empty result while live segments hold matching rows: say so, with the fix."""
        if not _has_segments(self.root):
            return
        live = dataclasses.replace(
            q, sel=q.sel.replace(include_live=True), rows=dataclasses.replace(q.rows, limit=None)
        )

        def count(cur: duckdb.DuckDBPyConnection, snap: Snapshot) -> int:
            sql, params = self._select(cur, snap, live, order=False)
            rows = cur.execute(f"SELECT count(*) FROM ({sql})", params).fetchall()
            return int(rows[0][0]) if rows else 0

        try:
            n = self._run(count, live.sel, labels=live.labeled, label_lo=live.label_lo)
        except Exception:  # the hint must never turn an answer into an error
            logger.debug("predlog: could not count live rows", exc_info=True)
            return
        if n:
            warnings.warn(
                f"no sealed prediction matches, but {n:,} row(s) in live write-ahead segments do: they reach "
                "Parquet when the writer seals its segment (every segment_max_age_s, on predlog.flush() and at "
                "exit). Pass include_live=True (predlog ... --include-live) to read them now",
                LiveRowsWarning,
                stacklevel=4,
            )

    def predictions(self, model: Names = None, **read: Unpack[Read]) -> pd.DataFrame:
        """Predictions matching every filter given, ordered by time, as a pandas DataFrame.

        Args:
            model: A model name or a list of them (unknown names raise UnknownModelError);
                prunes the files read.
            version: ``model_version`` value(s) (unknown ones raise UnknownVersionError).
            start, end: ``[start, end)`` on ``ts``, UTC; prunes the date partitions read.
            user_id, status, request_id: value(s) of these columns (strings; ``status`` is
                ``"ok"`` or ``"error"``).
            where: ``{"features.age": 30, "context.country": ["FR", "DE"],
                "latency_ms": (">", 100), "error_type": None}``: equality, membership (list or
                set), IS NULL (None), or ``(operator, value)`` with ``=, !=, <, <=, >, >=,
                like, not like, ilike, not ilike, in, not in, between, not between``. Column
                names are checked against the schema (UnknownColumnError lists close
                matches); values are bound parameters and must be of the column's type (a
                number never matches a text column: FilterError says so). A string is taken
                as your own SQL condition, as in :meth:`sql`.
            limit: At most this many rows (the earliest).
            last: ``"1h"``, ``"7d"``, a timedelta...: shorthand for ``start=now - last``.
            columns: Only these columns (dotted fields allowed, e.g. ``"features.age"``).
            include_live: Also rows still in live write-ahead segments (not yet sealed). An
                empty result warns (LiveRowsWarning) when live segments hold matching rows.
            include_replays: Also rows written by ``replay(record_as=...)``; default: only
                when ``version`` is given.

        Values read back as they were logged (see :mod:`predlog.replay._frames` for the
        dtypes): ``ts`` is tz-aware UTC, ``date`` a ``datetime.date``, ``features``,
        ``context`` and struct predictions are dicts. Across several models, a column whose
        type differs between them (``prediction``: a number here, a vector there) holds each
        row's own value, and ``features`` each row's own model's features.
        """
        return self._frame(self._query(model, read))

    def user(self, user_id: str, model: Names = None, **read: Unpack[UserRead]) -> pd.DataFrame:
        """Every prediction made for ``user_id``, oldest first, across models.

        A plain ``user_id = ?`` filter on the Parquet scan, so DuckDB skips the row groups
        whose min/max statistics exclude the user (compacted files are sorted by user). In a
        store written with ``hash_fields=["user_id"]``, open it with ``hash_key=``.
        """
        if not isinstance(user_id, str):
            raise FilterError(
                f"user() takes one user id, a string, got {user_id!r} ({type(user_id).__name__}); "
                f"ids are stored as text{f': pass {str(user_id)!r}' if isinstance(user_id, int) else ''}"
            )
        return self.predictions(model, **read, user_id=user_id)

    def get(self, prediction_id: str, *, include_live: bool = False) -> pd.Series:
        """One prediction as a pandas Series indexed by column name (``.name`` is its id).

        Only the date partition encoded in the UUIDv7 id is read first; the whole store is
        searched only when the row is not there. Replay rows are found too.

        Raises:
            PredictionNotFoundError: no such prediction (a KeyError).
        """
        if not isinstance(prediction_id, str):
            raise PredictionNotFoundError(
                str(prediction_id),
                f"prediction ids are strings, got {prediction_id!r} ({type(prediction_id).__name__})",
            )

        def row(cur: duckdb.DuckDBPyConnection, snap: Snapshot) -> pd.Series | None:
            table = cur.sql(
                "SELECT * FROM predictions WHERE prediction_id = ? LIMIT 1", params=[prediction_id]
            ).to_arrow_table()
            if not table.num_rows:
                return None
            found = _natural(to_frame(table), snap, self).iloc[0]
            found.name = prediction_id
            return found

        def first(cur: duckdb.DuckDBPyConnection, snap: Snapshot) -> pd.Series | str | None:
            if has_json(snap.shape("predictions")):
                # Files here disagree on some column: find the row's model, then read it from
                # that model's files alone so every column keeps its natural type.
                hits = cur.execute(
                    "SELECT model FROM predictions WHERE prediction_id = ? LIMIT 1", [prediction_id]
                ).fetchall()
                return str(hits[0][0]) if hits else None
            return row(cur, snap)

        day = _uuid7_date(prediction_id)
        tries: list[tuple[dt.date | None, dt.date | None]] = ([(day, day)] if day is not None else []) + [(None, None)]
        everything = Selection(include_live=include_live, include_replays=True)
        for dates in tries:
            found = self._run(first, everything, dates=dates)
            if isinstance(found, str):
                found = self._run(row, everything.replace(model=(found,)), dates=dates)
            if found is not None:
                return found
        live = (
            ""
            if include_live
            else (
                " If it was recorded moments ago it may still be in a live segment: pass include_live=True, "
                "or flush the writer."
            )
        )
        raise PredictionNotFoundError(
            prediction_id,
            f"no prediction with id {prediction_id!r} in store {self.root}.{live} "
            "Ids come from predlog.last_prediction_id() or the prediction_id column",
        )

    def labeled(self, model: Names = None, **read: Unpack[LabeledRead]) -> pd.DataFrame:
        """Predictions joined with their latest label, as a DataFrame (see :meth:`labeled_relation`).

        ``label`` holds each label with the type it was logged with: ints as ints, strings as
        strings, floats as floats (ints and floats of one model's labels read as floats).
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MixedLabelTypesWarning)  # values come back exact here
            return self._frame(self._query(model, read, labeled=True))

    def training_data(
        self,
        model: Names = None,
        days: float | None = None,
        *,
        limit: int | None = None,
        **filters: Unpack[Filters],
    ) -> pd.DataFrame:
        """Features and label of the labeled predictions of one model: one column per feature.

        The index is ``prediction_id``; the columns are the fields of ``features`` (a field
        named like the ``label`` column is renamed ``features.<name>``) and ``label``. Rows are
        in time order. ``days=30`` means the last 30 days. ``model`` may be omitted when the
        store holds a single model.
        """
        wanted = names(model, "model")
        if wanted is None:
            present = self.models()
            if not present:
                raise StoreError(f"the store {self.root} holds no predictions yet; nothing to train on")
            if len(present) != 1:
                raise FilterError(
                    f"training_data() needs a model: the store holds {len(present)} "
                    f"({', '.join(repr(m) for m in present)}) and their features differ. Pass model=..."
                )
            wanted = (present[0],)
        if len(wanted) != 1:
            raise FilterError("training_data() takes one model: features differ between models")
        sel = self.selection(wanted, days=days, **filters)

        def features_and_label(
            cur: duckdb.DuckDBPyConnection, snap: Snapshot, inner: str, params: list[Any]
        ) -> tuple[str, list[Any]]:
            feats = fields_of(snap.shape("predictions")).get("features", NULL)
            cols = ['"prediction_id"']
            if feats[0] == "struct":
                for name, _ in feats[1]:
                    alias = name if name not in ("label", "prediction_id", LABEL_TYPE) else f"features.{name}"
                    cols.append(f'struct_extract("features", {lit(name)}) AS {ident(alias)}')
            elif feats != NULL:
                cols.append('"features"')
            cols.append('"label"')
            if snap.mixed_labels:
                cols.append(ident(LABEL_TYPE))
            return f"SELECT {', '.join(cols)} FROM ({inner}) AS t", params

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MixedLabelTypesWarning)
            q = _Query(sel, RowOptions(limit=limit), labeled=True)
            return self._frame(q, index="prediction_id", transform=features_and_label)

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
        include_replays: bool = False,
    ) -> pd.DataFrame:
        """Run one SELECT over the views ``predictions`` and ``labels``; a DataFrame.

        Struct fields read naturally: ``features.age``, ``context.country``. Pass values as
        ``params`` (``?`` or ``$name`` placeholders), never by formatting them into the text.
        ``model``, ``start``/``end``/``last`` only prune which files the views read (add a
        ``ts`` condition for exact bounds). The ``predictions`` view leaves out the rows of
        replays unless ``include_replays``. Only a single SELECT statement is accepted, and it
        can read only files inside the store.

        Raises:
            QueryNotAllowedError: not a single SELECT, or it reaches outside the store.
            duckdb.Error: DuckDB's own errors for SQL that does not parse or bind (with a hint
                when a column is JSON text because the models read disagree on its type).
        """
        import duckdb

        if not isinstance(query, str):
            raise TypeError(f"sql() takes the query as a string, got {type(query).__name__}")
        self._check_select(query)
        sel = self.selection(
            model=model, start=start, end=end, last=last, include_live=include_live, include_replays=include_replays
        )
        uses_p = re.search(r"predictions", query, re.I) is not None
        uses_l = re.search(r"labels", query, re.I) is not None

        def run(cur: duckdb.DuckDBPyConnection, snap: Snapshot) -> pd.DataFrame:
            try:
                return to_frame(cur.sql(query, params=params if params else None).to_arrow_table())
            except (duckdb.BinderException, duckdb.ConversionException) as exc:
                mixed = json_fields(snap.shape("predictions")) if "predictions" in snap.views else []
                if not mixed:
                    raise
                models = sorted(_files.models(self.root)) if sel.model is None else list(sel.model)
                raise type(exc)(
                    f"{exc}\nHint: in these files {', '.join(repr(c) for c in mixed)} differ in type between models "
                    f"({', '.join(models)}), so the view holds them as JSON text; pass model=... (or filter files "
                    "by model) to read them with their natural types"
                ) from exc

        return self._run(run, sel, predictions=uses_p or not uses_l, labels=uses_l)

    # ------------------------------------------------------------ overview

    def stats(self) -> dict[str, Any]:
        """What the store holds, as a JSON-friendly dict (``json.dumps(..., default=str)``).

        Keys: ``rows``, ``files``, ``bytes`` (sealed Parquet predictions); ``models``: per model
        ``rows``, ``files``, ``bytes``, ``versions`` (version → rows), ``first_ts``,
        ``last_ts``; ``versions``; ``first_ts``/``last_ts`` (UTC) over the store; ``labels``:
        ``rows``, ``files``, ``bytes``; ``live_segments``/``live_bytes`` (write-ahead segments,
        counted, not read); ``maintenance_in_progress`` (manifests); ``schema_groups`` (groups
        of prediction files DuckDB reads together; more than one means some column is read as
        JSON text across models); ``replay_rows`` (rows written by replays); ``read_only``;
        ``root``. One aggregate query over ``model, model_version, ts``; the rest comes from
        file listings and Parquet footers.
        """
        pfiles = _files.prediction_files(self.root)
        lfiles = _files.label_files(self.root)

        def total(files: list[str], measure: Callable[[str], int]) -> int:
            found = 0
            for f in files:
                with contextlib.suppress(OSError):  # removed by maintenance since the listing
                    found += measure(f)
            return found

        def size(files: list[str]) -> int:
            return total(files, lambda f: os.stat(f).st_size)

        def footer_rows(files: list[str]) -> int:
            return total(files, lambda f: self._footer(f).rows)

        def aggregate(cur: duckdb.DuckDBPyConnection, snap: Snapshot) -> tuple[list[tuple[Any, ...]], int]:
            result = cur.execute(
                "SELECT model, model_version, count(*), min(ts), max(ts) FROM predictions GROUP BY ALL ORDER BY ALL"
            )
            rows = [tuple(r) for r in result.fetchall()]
            replays = 0
            if "replay_of" in fields_of(fields_of(snap.shape("predictions")).get("context", NULL)):
                got = cur.execute("SELECT count(*) FROM predictions WHERE context.replay_of IS NOT NULL").fetchall()
                replays = int(got[0][0]) if got else 0
            return rows, replays

        rows, replay_rows = self._run(aggregate, Selection(include_replays=True))
        models: dict[str, dict[str, Any]] = {}

        def new_model() -> dict[str, Any]:
            return {"rows": 0, "files": 0, "bytes": 0, "versions": {}, "first_ts": None, "last_ts": None}

        for model, version, n, first, last in rows:
            m = models.setdefault(str(model), new_model())
            m["rows"] += n
            m["versions"][version] = n
            if first is not None:
                first = first.astimezone(UTC)
                m["first_ts"] = first if m["first_ts"] is None else min(m["first_ts"], first)
            if last is not None:
                last = last.astimezone(UTC)
                m["last_ts"] = last if m["last_ts"] is None else max(m["last_ts"], last)
        shapes = set()
        for f in pfiles:
            part = model_of(f) or ""
            m = models.setdefault(part, new_model())
            with contextlib.suppress(OSError):  # removed by maintenance since the listing
                m["bytes"] += os.stat(f).st_size
                shapes.add(self._footer(f).shape)
                m["files"] += 1
        firsts = [m["first_ts"] for m in models.values() if m["first_ts"] is not None]
        lasts = [m["last_ts"] for m in models.values() if m["last_ts"] is not None]
        segs = segment_paths(self.root)
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
            "schema_groups": len(group_files([("", s) for s in shapes])) if shapes else 0,
            "replay_rows": replay_rows,
            "read_only": self.read_only,
        }

    def events(
        self, model: Names = None, *, kind: Names = None, start: TimeBound = None, end: TimeBound = None
    ) -> pd.DataFrame:
        """The canary events of the store (start, share, promote, rollback), oldest first.

        One row per event written by ``predlog.canary``, with columns ``ts`` (UTC),
        ``model``, ``kind``, ``baseline_version``, ``candidate_version``, ``share``,
        ``state``, ``shadow``, ``host``, ``pid`` and ``reason``; an empty frame with these
        columns when there are none. A file in ``events/`` that is not a valid event is
        skipped with a warning naming it.

        Example::

            s.events("fraud", kind=["promote", "rollback"], start="2026-12-01")

        Args:
            model: A model name or a list of them (default: every model).
            kind: ``"start"``, ``"share"``, ``"promote"``, ``"rollback"``, or a list of them.
            start, end: ``[start, end)`` in UTC, as for :meth:`predictions`.

        Raises:
            FilterError: ``model`` or ``kind`` is not a string or a list of them, or ``kind``
                names no event kind.
            TimeBoundError: ``start`` or ``end`` is not a time.
        """
        return _events.read_events(self.root, model, kind=kind, start=start, end=end)

    # ------------------------------------------------------------ delegated operations

    @_doc_of(_compact.compact)
    def compact(self, **options: Unpack[_compact.CompactOptions]) -> CompactResult:
        return _compact.compact(self, **options)

    @_doc_of(_retain.retain)
    def retain(self, days: int, **options: Unpack[_retain.RetainOptions]) -> RetainResult:
        return _retain.retain(self, days, **options)

    @_doc_of(_forget.forget_user)
    def forget_user(self, user_id: str, **options: Unpack[_forget.ForgetOptions]) -> ForgetResult:
        # The store's own hash_key (or PREDLOG_HASH_KEY) when none is given.
        if options.get("hash_key") is None:
            options["hash_key"] = self._hash_key
        return _forget.forget_user(self, user_id, **options)

    @_doc_of(_replay.replay)
    def replay(
        self, fn: Callable[..., Any], model: str | None = None, **options: Unpack[_replay.ReplayOptions]
    ) -> ReplayResult:
        return _replay.replay(self, fn, model, **options)


# ---------------------------------------------------------------- helpers


def _natural(df: pd.DataFrame, snap: Snapshot, store: Store) -> pd.DataFrame:
    """Rows of several models read together, each with its own values.

    Where the models' files disagree on a column's type the view holds it as JSON text:
    turn it back into each row's value. ``features`` and ``context`` of a row keep only the
    fields its own model has (the view's struct has every model's fields).
    """
    import json

    shape = snap.shape("predictions")
    fields = fields_of(shape)
    if df.empty:
        return df
    for name in json_fields(shape):
        if name in df.columns and name in fields:
            df[name] = _decode_json(df[name].tolist(), fields[name], json.loads)
    if "model" in df.columns and "features" in df.columns and df["model"].nunique() > 1:
        own = store._catalog.model_features(snap)
        if own:
            df["features"] = [
                {k: v for k, v in f.items() if k in own.get(m, f)} if isinstance(f, dict) else f
                for f, m in zip(df["features"].tolist(), df["model"].tolist())
            ]
    return df


def _decode_json(values: list[Any], shape: Shape, loads: Callable[[str], Any]) -> list[Any]:
    kind = shape[0]
    if kind == "json":
        return [loads(v) if isinstance(v, str) else v for v in values]
    if kind == "struct":
        subs = {n: s for n, s in shape[1] if has_json(s)}
        out = []
        for v in values:
            if isinstance(v, dict) and subs:
                v = dict(v)
                for n, s in subs.items():
                    if n in v:
                        v[n] = _decode_json([v[n]], s, loads)[0]
            out.append(v)
        return out
    return values


def _writable(root: str) -> bool:
    wal = wal_dir(root)
    return os.access(root, os.W_OK | os.X_OK) and (not os.path.isdir(wal) or os.access(wal, os.W_OK | os.X_OK))


def _has_segments(root: str) -> bool:
    return bool(segment_paths(root))


def _orphan_segments(root: str) -> int:
    """Segments whose writer is gone (their lock is free), counted without touching them."""
    import fcntl

    n = 0
    for path in segment_paths(root):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
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
    """Models with rows in live segments (a read of every segment: only when a model is not
    found sealed, or when asked with ``include_live``)."""
    if not _has_segments(root):
        return set()
    from ._live import read_live

    found: set[str] = set()
    for seg in read_live(root):
        for t in seg.predictions:
            if "model" in t.column_names:
                found.update(str(m) for m in t.column("model").unique().to_pylist() if m is not None)
    return found


def _live_versions(root: str, models: list[str] | None) -> set[str]:
    if not _has_segments(root):
        return set()
    from ._live import read_live

    found: set[str] = set()
    for seg in read_live(root, models):
        for t in seg.predictions:
            if "model_version" in t.column_names:
                found.update(str(v) for v in t.column("model_version").unique().to_pylist() if v is not None)
    return found
