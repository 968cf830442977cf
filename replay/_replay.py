"""Replay: re-run logged features through a predict function and compare with what was logged.

::

    from predlog.replay import Store

    s = Store("predlog-store")
    r = s.replay(new_model.predict, model="fraud", start="2026-03-01")
    r.summary["agreement_rate"], r.by_version, r.by_context, r.accuracy
    r.df[r.df.changed]

How it works. The rows to replay are streamed from DuckDB as Arrow record batches of
``batch_size`` rows (filters pushed into the scan, no ORDER BY: the result is sorted by
``ts`` at the end, which costs far less than sorting the features in the engine). For each
batch the ``features`` struct is split into columns in Arrow and handed to the function as a
pandas DataFrame (or as dicts, one call per row), the outputs are normalised to one value per
row, and the comparison with the logged ``prediction`` runs on numpy arrays. No Python code
runs per row unless the function is called per row or the predictions are neither numbers nor
numeric vectors.

Replays are never recorded as live traffic: the function is called inside
:func:`predlog.suppressed`, so a ``@predlog.capture``-decorated function writes nothing (its
recorder's stats do not move). With ``record_as="2.0.0-shadow"`` the replayed predictions are
written to the store afterwards, through a :class:`predlog.Recorder` of their own, as real
rows of that ``model_version``: same features, ``user_id`` and ``request_id`` as the original
row, its context plus ``context.replay_of`` = the original ``prediction_id``. Rows carrying
``context.replay_of`` are left out of later replays unless ``version=`` names versions. Such a
row's ``ts`` is the time it was recorded and its ``latency_ms`` means nothing (the prediction
was computed in a batch before); it is written by one recorded call per row (about 10-20k
rows/s), after the replay, and afterwards ``predlog.last_prediction_id()`` in the calling
thread names the last of them.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Unpack

from ._errors import FilterError, NothingToReplayError, StoreError
from ._replay_call import MODES, Caller, async_error, feature_columns, prefetch
from ._replay_compare import kind_of
from ._replay_result import BY_PREFIX, Collected, Plan, ReplayResult
from ._selection import REPLAY_OF, Conditions, Filters, Selection, split_read
from ._shapes import NULL, fields_of, ident
from ._views import latest_labels_sql

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from ._views import Snapshot


__all__ = ["NothingToReplayError", "ReplayOptions", "ReplayResult", "replay"]

T = TypeVar("T")


class Store(Protocol):
    """What replay needs of :class:`predlog.replay.Store` (imported the other way round)."""

    root: str
    read_only: bool

    def models(self) -> list[str]: ...

    def selection(self, model: Any = ..., *, days: Any = ..., **filters: Unpack[Filters]) -> Selection: ...

    def run(
        self, fn: Callable[[duckdb.DuckDBPyConnection, Snapshot], T], *, selection: Selection, labels: bool
    ) -> T: ...

    def conditions(self, snap: Snapshot, sel: Selection) -> Conditions: ...


DEFAULT_BATCH_SIZE = 100_000


METRICS = ("accuracy", "mae")

# In row mode, this many failures in a row before any success means the function cannot
# work on these inputs at all: stop and raise instead of failing on every remaining row.


def _resolve_model(store: Store, fn: Callable[..., Any], model: Any) -> str:
    present = store.models()
    if model is None:
        spec = getattr(fn, "__predlog_spec__", None)
        own = getattr(spec, "model", None)
        if own is not None and own in present:
            return str(own)
        if len(present) == 1:
            return str(present[0])
        if not present:
            raise NothingToReplayError(f"the store {store.root} holds no predictions yet; nothing to replay")
        raise FilterError(
            f"the store holds several models ({', '.join(repr(m) for m in present)}): pass model=... to say "
            "whose logged features to replay"
        )
    if not isinstance(model, str):
        listed = list(model) if isinstance(model, (list, tuple, set, frozenset)) else [model]
        if len(listed) != 1 or not isinstance(listed[0], str):
            raise FilterError(f"replay() takes one model (features differ between models), got model={model!r}")
        model = listed[0]
    store.selection(model=model)  # raises UnknownModelError with close matches
    return str(model)


def _plan(
    store: Store,
    snap: Snapshot,
    sel: Selection,
    *,
    by: Sequence[str] | None,
    has_labels: bool,
    need_request: bool,
    need_context: bool,
) -> Plan:
    """The query reading the rows to replay: only the columns the replay needs, no ORDER BY."""
    assert sel.model is not None
    model = sel.model[0]
    shape = snap.shape("predictions")
    fields = fields_of(shape)
    feats = fields.get("features", NULL)
    if feats[0] != "struct":
        raise StoreError(
            f"the rows of model {model!r} have no feature columns to replay (features is "
            f"{'empty' if feats == NULL else 'not a struct of named features'})"
        )
    q = store.conditions(snap, sel)
    context = fields_of(fields.get("context", NULL))
    pred = fields.get("prediction", NULL)
    json_text = pred[0] == "json"
    cols = [
        '"prediction_id"',
        '"ts"',
        '"user_id"',
        '"model_version"',
        '"request_id"' if need_request and "request_id" in fields else 'NULL::VARCHAR AS "request_id"',
        '"prediction"',
        '"features"',
        '"context"' if need_context and "context" in fields else 'NULL AS "context"',
    ]
    if by is None:
        by_names = [f"context.{k}" for k, s in context.items() if k != REPLAY_OF and s[0] == "scalar"]
        by_default = True
    else:
        by_names = [by] if isinstance(by, str) else list(by)
        by_default = False
    for i, name in enumerate(by_names):
        ref, leaf = q.resolve(name)
        expr = ref if leaf[0] in ("scalar", "null") else f"CAST(to_json({ref}) AS VARCHAR)"
        cols.append(f"{expr} AS {ident(f'{BY_PREFIX}{i}')}")
    sql = f"SELECT {', '.join(cols)} FROM predictions{q.clause()}"
    return Plan(model, sql, list(q.params), list(fields_of(feats)), by_names, by_default, "", json_text, has_labels)


def _latest_labels(
    store: Store, cur: duckdb.DuckDBPyConnection, snap: Snapshot, sel: Selection
) -> tuple[pa.Table | None, pa.Table | None]:
    """Latest label per prediction_id and per request_id (as Store.labeled joins them)."""
    lfields = fields_of(snap.shape("labels"))
    if "label" not in lfields:
        return None, None

    def latest(key: str) -> pa.Table | None:
        if key not in lfields:
            return None
        t = cur.sql(
            f"SELECT _k AS k, label FROM ({latest_labels_sql(snap, key, [('label', 'label')])})"
        ).to_arrow_table()
        return t if t.num_rows else None

    return latest("prediction_id"), latest("request_id")


class ReplayOptions(Filters, total=False):
    """The keyword arguments of :func:`replay` (and :meth:`Store.replay`): the filters, and how
    to replay. Documented in :func:`replay`."""

    batch_size: int | None
    mode: str
    features: Sequence[str] | None
    atol: float
    by: str | Sequence[str] | None
    top_k: int
    metric: str | None
    record_as: str | None


def replay(
    store: Store, fn: Callable[..., Any], model: str | None = None, **options: Unpack[ReplayOptions]
) -> ReplayResult:
    """Re-run logged features through ``fn`` and compare with the logged predictions.

    Args:
        fn: The predict function: the ``@predlog.capture``-decorated original (nothing is
            recorded: calls run inside :func:`predlog.suppressed`), a new version, an
            estimator's ``predict``/``predict_proba``, a function of a DataFrame batch...
        model: The logged model whose rows are replayed (one model: features differ between
            models). Default: the decorated function's model, else the store's only model.
        version, start, end, last, user_id, where: Filters, as in :meth:`Store.predictions`
            (``[start, end)`` in UTC; ``where`` a dict or your own SQL condition).
        status: Only rows with this status (default ``"ok"``, the rows with a logged
            prediction); ``None`` replays the rows that failed too.
        batch_size: Rows per batch read and predicted (default 100,000).
        mode: How ``fn`` is called. ``"batch"``: with a pandas DataFrame of the batch's
            features (columns = feature names, in logged order); ``"array"``: with
            ``frame.to_numpy()``; ``"row"``: once per row with a dict of features (the form
            in which single calls were logged). ``"auto"`` (default): from the annotation of
            the first parameter (``DataFrame`` → batch, ``ndarray`` → array, ``dict`` /
            ``Mapping`` → row), else a DataFrame is tried on the first batch, and if the call
            raises or does not return one value per row, the function is called per row
            from then on (``summary["batch_error"]`` says why). A batch that raises in
            auto mode is retried per row, so the failing rows are found.
        features: Feature names to pass, in this order (default: all, in logged order; for a
            bound method of a fitted scikit-learn estimator, its ``feature_names_in_``).
        atol: Absolute tolerance under which two numbers are equal (NaN equals NaN).
        by: Columns to break changes down by in :attr:`ReplayResult.by_context`
            (``"context.country"``, ``"features.plan"``, ``"user_id"``...). Default: every
            scalar context key, except id-like ones (more distinct values than half the rows).
        top_k: Values per grouping column kept in ``by_context`` (the most frequent).
        metric: With labels: ``"accuracy"`` or ``"mae"``. Default: ``"mae"`` for float
            predictions, ``"accuracy"`` otherwise (vectors: argmax compared with the label).
        record_as: Write the replayed predictions to the store as this model version (see
            the module docs); the version must not be one that holds live traffic.
        include_replays: Replay rows written by ``record_as`` too. Default: only when
            ``version=`` is given.

    Outputs are normalised to one value per row: a scalar, a vector (probabilities; a
    2-D array of shape (rows, k)), a pandas Series or DataFrame, or per-row dicts/lists.
    Logged and replayed values are compared element-wise: numbers within ``atol``
    (``difference`` = replayed − logged), vectors by their largest absolute element
    difference and by argmax, anything else (strings, dicts, ragged lists) by equality.

    Labels are joined as :meth:`Store.labeled` joins them: the latest label logged for the
    row's ``prediction_id``, else the latest for its ``request_id``.

    Errors: a function that raises on every row it is given (row mode: the first 100 rows,
    or all of them) re-raises its first exception with a note naming the row (id and
    features); a forced ``mode="batch"`` re-raises the batch's exception; rows that fail
    among others that succeed are kept, with the message in the ``error`` column, and
    counted in ``summary["errors"]``.

    If maintenance swaps files while the replay reads them, the store retries the query and
    the replay starts again, so ``fn`` may see some rows twice; ``record_as`` writes only
    once, after the replay.

    Raises:
        NothingToReplayError: no row matches the filters.
        UnknownModelError, UnknownColumnError, FilterError, TimeBoundError: bad filters.
    """
    import predlog

    filters, _ = split_read(options, ReplayOptions)
    filters.setdefault("status", "ok")  # the rows with a logged prediction
    batch_size = options.get("batch_size")
    mode = options.get("mode", "auto")
    features = options.get("features")
    atol = options.get("atol", 1e-9)
    by = options.get("by")
    top_k = options.get("top_k", 10)
    metric = options.get("metric")
    record_as = options.get("record_as")
    unknown = set(options) - set(ReplayOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"replay() got unknown argument(s): {', '.join(sorted(unknown))}")
    if not callable(fn):
        raise TypeError(f"replay() takes a predict function, got {fn!r}")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: pass one of {', '.join(repr(m) for m in MODES)}")
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise ValueError(f"atol={atol!r} must be a non-negative number")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric={metric!r}: pass one of {', '.join(repr(m) for m in METRICS)} or None")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be a positive integer")
    if inspect.iscoroutinefunction(
        getattr(getattr(fn, "__predlog_spec__", None), "fn", fn)
    ) or inspect.iscoroutinefunction(fn):
        raise async_error(fn)
    if record_as is not None:
        if not isinstance(record_as, str) or not record_as:
            raise ValueError(f"record_as={record_as!r} must be a non-empty version string")
        if store.read_only:
            raise StoreError(f"record_as needs write access to the store {store.root}, which is read-only here")
    model_name = _resolve_model(store, fn, model)
    sel = store.selection(model_name, **filters)
    if record_as is not None:
        _check_record_as(store, model_name, record_as)
    from . import _files

    has_labels = bool(_files.label_files(store.root))
    t0 = time.perf_counter()

    def work(cur: duckdb.DuckDBPyConnection, snap: Snapshot) -> Collected:
        by_pid, by_rid = _latest_labels(store, cur, snap, sel) if has_labels else (None, None)
        recording = record_as is not None
        plan = _plan(
            store,
            snap,
            sel,
            by=by,
            has_labels=has_labels,
            need_request=recording or by_rid is not None,
            need_context=recording,
        )
        columns = feature_columns(fn, plan.feature_names, features)
        reader = cur.sql(plan.sql, params=plan.params).to_arrow_reader(batch_size)
        collected = Collected(plan, record_as is not None, by_pid, by_rid)
        caller: Caller | None = None
        batches = prefetch(reader)
        try:
            with predlog.suppressed():
                for batch in batches:
                    if batch.num_rows == 0:
                        continue
                    if caller is None:
                        plan.kind = kind_of(batch.schema.field("prediction").type) if not plan.json_text else "other"
                        caller = Caller(fn, mode, plan.kind, columns)
                    collected.add(batch, caller, atol)
        finally:
            batches.close()  # stops and joins the reading thread
            reader.close()  # an abandoned stream would keep the store's cursor busy for its next query
        collected.caller = caller
        return collected

    collected = store.run(work, selection=sel, labels=has_labels)
    caller = collected.caller
    if caller is None:
        raise NothingToReplayError(_nothing_message(store, model_name, sel))
    if caller.successes == 0 and caller.first_failure is not None:
        caller.raise_all_failed()
    result = collected.result(caller, metric=metric, top_k=top_k)
    elapsed = time.perf_counter() - t0
    result.summary["elapsed_s"] = elapsed
    result.summary["rows_per_s"] = result.summary["rows"] / elapsed if elapsed > 0 else None
    result.summary["record_as"] = record_as
    result.summary["recorded"] = None
    if record_as is not None:
        result.summary["recorded"] = _record(store, model_name, record_as, collected)
    return result


def _nothing_message(store: Store, model: str, sel: Selection) -> str:
    return (
        f"no logged prediction of model {model!r} matches {sel.describe()} in store {store.root}; "
        "widen the filters (Store.predictions(...) with the same arguments shows what matches, "
        "Store.stats() what the store holds)"
    )


def _check_record_as(store: Store, model: str, version: str) -> None:
    def live_rows(cur: duckdb.DuckDBPyConnection, snap: Any) -> int:
        context = fields_of(fields_of(snap.shape("predictions")).get("context", NULL))
        cond = f" AND struct_extract(\"context\", '{REPLAY_OF}') IS NULL" if REPLAY_OF in context else ""
        row = cur.execute(f"SELECT count(*) FROM predictions WHERE model_version = ?{cond}", [version]).fetchone()
        return int(row[0]) if row else 0

    n = store.run(live_rows, selection=store.selection(model), labels=False)
    if n:
        raise ValueError(
            f"record_as={version!r} is a version of model {model!r} that holds {n:,} rows of live traffic; "
            f"replays recorded under it would mix with them: pick a new name such as {version + '-shadow'!r}"
        )


def _record(store: Store, model: str, version: str, collected: Collected) -> int:
    """Write the replayed predictions as rows of ``version``; return how many were written."""
    import predlog

    rec = predlog.Recorder(
        store=store.root,
        model=model,
        version=version,
        enabled=True,
        sample_rate=1.0,
        on_full="block",
        block_timeout_s=60.0,
        tracing=False,
        otlp=False,
        metrics=False,
        drop_fields=(),
        hash_fields=(),
        redact=(),
        processors=(),
    )

    # The features and prediction of the original row are stored as they are (already
    # processed when they were first written: not hashed or redacted again).
    @rec.capture(model=model, version=version)
    def replayed(features: dict[str, Any], prediction: Any) -> Any:
        return prediction

    written = 0
    try:
        for batch, out in collected.record_batches:
            feats = batch.column("features").to_pylist()
            pids = batch.column("prediction_id").to_pylist()
            users = batch.column("user_id").to_pylist()
            requests = batch.column("request_id").to_pylist()
            contexts = batch.column("context").to_pylist()
            values = out.values.tolist()
            valid = out.valid.tolist()
            for i, ok in enumerate(valid):
                if not ok:
                    continue
                extra = {k: v for k, v in (contexts[i] or {}).items() if v is not None and k != REPLAY_OF}
                extra[REPLAY_OF] = pids[i]
                with predlog.context(user_id=users[i], request_id=requests[i], **extra):
                    replayed(feats[i] if feats[i] is not None else {}, values[i])
                written += 1
        ok_flush = rec.flush(timeout_s=max(30.0, written / 2000))
        stats = rec.stats()
    finally:
        rec.shutdown(timeout_s=10.0)
    if not ok_flush or stats["dropped_total"] or stats["captured"] != written:
        raise StoreError(
            f"record_as={version!r}: {written} replayed rows were to be written but the recorder reports "
            f"captured={stats['captured']}, written={stats['written']}, dropped={stats['dropped']}; "
            "rows not written stay in its write-ahead segment and are sealed by the next writer"
        )
    return written
