"""The Recorder: the façade that wires capture, the queue, the writer and telemetry together.

::

    @recorder.capture ─► FunctionSpec + wrapper ─► RecordQueue (bounded) ─► Writer thread
                                                                              ├─► Pipeline (processors)
                                                                              ├─► Telemetry (spans, metrics)
                                                                              └─► ParquetSink ─► sealer thread ─► Parquet

Threading contract:

* request threads only put records on the queue (:mod:`._queue`): never blocking (unless
  ``on_full="block"``), never raising, no I/O;
* the writer thread (:mod:`._writer`) drains the queue, converts records to Arrow, runs the
  processors and spans, and appends one frame per batch to the current write-ahead segment;
* the sealer thread (:mod:`._sinks`) turns closed segments into Parquet and recovers the
  segments of dead processes. Parquet encoding releases the GIL, so sealing overlaps serving.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _ids
from ._canary import Canary, EventLog, make_canary
from ._capture import FunctionSpec, wrap
from ._config import Config, ConfigError, resolve_config
from ._context import CURRENT
from ._health import Health
from ._otel import Telemetry
from ._queue import RecordQueue
from ._record import LABEL, TABLE, Record
from ._recorder_state import last
from ._writer import Writer, preimport_fork_handlers, preimport_writer_modules

if TYPE_CHECKING:
    from ._sinks import Sink

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["DROP_REASONS", "Recorder", "last_record"]

# Why a captured call was not written (keys of stats()["dropped"], always present).
DROP_REASONS = ("queue_full", "write_error", "processor", "processor_error", "convert_error")

# Longest a fork waits for the worker threads to leave Arrow (one batch or one seal).
_FORK_WAIT_S = 30.0


class Recorder:
    """Records every call of the functions it decorates into one replay store.

    Module-level ``predlog.capture``, ``predlog.configure`` and friends act on a default
    recorder; build your own for tests or for servers that write several stores.

    Example::

        rec = predlog.Recorder(store="/var/lib/predlog", model="fraud", version="1.4.0")

        @rec.capture
        def predict(x: dict) -> float: ...
    """

    def __init__(self, *, sinks: list[Sink] | None = None, **config: Any) -> None:
        self.config: Config = resolve_config(config)
        self._extra_sinks: list[Sink] = list(sinks or [])
        self._specs: weakref.WeakSet[FunctionSpec] = weakref.WeakSet()
        self._label_ts = 0  # the last label's time, ns (see log_label)
        self._label_lock = threading.Lock()
        self._health = Health()
        self._telemetry = Telemetry(self._health, self.stats, self.config)
        # PREDLOG_OTLP=1 at import: the exporters are built later, not by `import predlog`.
        self._telemetry.configure(self.config, build=False)
        self._queue = RecordQueue(
            self._health, self._telemetry, start_writer=self._ensure_writer, after_fork=self._after_fork_in_child
        )
        self._busy = threading.Lock()  # held while a thread of ours runs Arrow or imports
        self._writer_lock = threading.Lock()
        self._writer: Writer | None = None
        self._fork_held: list[threading.Lock] = []
        self._pid = os.getpid()
        self._apply_limits()
        # The fork hooks hold the recorder weakly: a recorder that is dropped is not kept alive.
        before, parent, child = (
            weakref.WeakMethod(m) for m in (self._before_fork, self._after_fork_in_parent, self._after_fork_in_child)
        )
        os.register_at_fork(
            before=lambda: _call(before), after_in_parent=lambda: _call(parent), after_in_child=lambda: _call(child)
        )
        # Flush while threads still run (before interpreter teardown) where possible.
        ref = weakref.ref(self)
        register = getattr(threading, "_register_atexit", None)
        try:
            if register is None:
                raise AttributeError
            register(_atexit_flush, ref)
        except (AttributeError, RuntimeError):
            atexit.register(_atexit_flush, ref)

    # ------------------------------------------------------------------ state

    def _apply_limits(self) -> None:
        cfg = self.config
        self._queue.configure(cfg.max_queue_size, cfg.on_full, cfg.block_timeout_s)
        self._queue.wake_at = 0  # the next record starts a writer

    def _before_fork(self) -> None:
        """Wait until the writer and sealer threads are outside Arrow and imports.

        A fork while another thread is inside an import, or inside Arrow's lazy set-up (a C++
        static initialiser, pyarrow's pandas shim lock), leaves that lock held in the child
        for good: the child's writer hangs on its first batch. Holding the threads' busy locks
        across the fork keeps them out of it; a batch or a seal in progress delays the fork.
        """
        writer = self._writer
        sink = writer.sink if writer is not None else None
        workers = (writer.thread if writer is not None else None, getattr(sink, "_sealer", None))
        if threading.current_thread() in workers:
            return  # forked from a processor in the writer: waiting would deadlock
        for lock in (self._busy, getattr(sink, "busy", None)):
            if lock is not None and lock.acquire(timeout=_FORK_WAIT_S):
                self._fork_held.append(lock)

    def _after_fork_in_parent(self) -> None:
        held, self._fork_held = self._fork_held, []
        for lock in held:
            lock.release()

    def _after_fork_in_child(self) -> None:
        """A forked child starts afresh: empty queue, new locks, counters and randomness, no
        threads; the parent's open segment is left to the parent."""
        _ids.reseed()
        writer, self._writer = self._writer, None
        self._queue.writer = None
        self._pid = os.getpid()
        self._fork_held = []
        self._busy = threading.Lock()
        self._writer_lock = threading.Lock()
        self._label_lock = threading.Lock()
        self._health.reset()
        self._queue.reset()
        self._apply_limits()
        if writer is not None:
            writer.sink.abandon()
        self._telemetry.after_fork_in_child(self.config)

    def _refresh_specs(self) -> None:
        for spec in list(self._specs):
            spec.refresh(self.config)

    # ------------------------------------------------------------------ public API

    @overload
    def capture(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def capture(
        self,
        fn: None = None,
        /,
        *,
        model: str | None = ...,
        version: str | None = ...,
        features: str | Callable[..., Any] | None = ...,
        feature_names: list[str] | tuple[str, ...] | None = ...,
        prediction: Callable[[Any], Any] | None = ...,
        confidence: Callable[[Any], Any] | str | None = ...,
        sample_rate: float | None = ...,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def capture(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        model: str | None = None,
        version: str | None = None,
        features: str | Callable[..., Any] | None = None,
        feature_names: list[str] | tuple[str, ...] | None = None,
        prediction: Callable[[Any], Any] | None = None,
        confidence: Callable[[Any], Any] | str | None = None,
        sample_rate: float | None = None,
    ) -> Any:
        """Decorate a predict function so every call is recorded.

        Works on functions and methods, sync or async, plain or generators; the signature,
        return value and exceptions are unchanged.

        Args:
            model: Model name (defaults to the recorder's, then the function's name).
            version: Model version (defaults to the recorder's).
            features: Argument name holding the features, or a callable taking the call's
                arguments and returning them. By default: the first argument when it is a
                mapping, pydantic model, DataFrame or array, else all arguments by name.
            feature_names: Names for the columns of array inputs (default ``f0, f1, ...``).
            prediction: Callable extracting the prediction from the return value.
            confidence: Callable on the prediction, or ``"max"`` for the largest class
                probability of a probability vector.
            sample_rate: Fraction of successful calls kept (errors are always kept).

        Raises:
            ConfigError: at decoration time, for invalid arguments.
        """

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            if not callable(func):
                raise ConfigError(f"@capture decorates a function, got {func!r}")
            spec = FunctionSpec(
                self._queue,
                self._telemetry,
                self.config,
                func,
                model=model,
                version=version,
                features=features,
                feature_names=tuple(feature_names) if feature_names is not None else None,
                prediction=prediction,
                confidence=confidence,
                sample_rate=sample_rate,
            )
            self._specs.add(spec)
            preimport_fork_handlers()
            self._prepare()
            return wrap(spec)

        if fn is not None:
            return decorate(fn)
        return decorate

    def canary(
        self,
        baseline: Callable[..., Any],
        candidate: Callable[..., Any],
        *,
        share: float = 0.05,
        key: str | None = "user_id",
        shadow: bool = False,
        fallback: bool = True,
        shadow_queue_size: int = 1000,
    ) -> Canary:
        """Route calls between two versions of a model, both decorated with this recorder's capture.

        Each call goes to one of the two; its row names the version that served it and carries
        ``context.canary_arm`` (``"baseline"`` or ``"candidate"``). ``promote()``,
        ``rollback()`` and share changes are recorded as events in the store's ``events/``
        (read them with ``Store.events()``). See docs/canary.md.

        Example::

            router = rec.canary(baseline=predict_v1, candidate=predict_v2, share=0.05)
            y = router(x)

        Args:
            baseline: The version serving now (``@capture(version=...)``).
            candidate: The version under test (same model, another version).
            share: Share of keys routed to the candidate, in [0, 1].
            key: The context field routing is deterministic by: ``"user_id"``,
                ``"request_id"`` or an extra set with ``predlog.context(...)``. Calls without
                it (and every call with ``key=None``) are routed at random.
            shadow: Serve every call with the baseline and run the candidate on the same
                input off the request thread, its row under the same request id.
            fallback: When the candidate raises, serve the call with the baseline (its row
                carries ``context.canary_fallback``); with False the exception propagates.
            shadow_queue_size: Shadow calls waiting at most; more are dropped and counted.

        Raises:
            ConfigError: a function is not captured by this recorder, both are the same
                version or of different models, or an argument is invalid.
        """
        return make_canary(
            baseline,
            candidate,
            queue=self._queue,
            events=EventLog(self._event_store, self._health),
            share=share,
            key=key,
            shadow=shadow,
            fallback=fallback,
            shadow_queue_size=shadow_queue_size,
        )

    def _event_store(self) -> str | None:
        """Where events are written: the store, while capture is enabled."""
        return os.fspath(self.config.store) if self.config.enabled else None

    def configure(self, **config: Any) -> Config:
        """Replace this recorder's configuration (pending records are flushed first).

        Decorated functions pick up the new defaults. Raises ConfigError for bad arguments.
        """
        new = resolve_config(config)
        self.flush(timeout_s=new.shutdown_timeout_s)
        # The old writer drains what is left into the old store and closes it, even if that
        # takes longer than the join below; records are never thrown away here.
        self._stop_writer(timeout_s=new.shutdown_timeout_s)
        self.config = new
        self._telemetry.configure(new)
        self._apply_limits()
        self._refresh_specs()
        self._prepare(start=True)
        return new

    def _prepare(self, *, start: bool = False) -> None:
        """Do the writer's start-up work here, on the thread that configures or decorates.

        Importing Arrow (and the pandas shim it loads on first use) and building the OTLP
        pipeline take a few hundred milliseconds, much of it in extension-module set-up that
        holds the GIL: left to the writer, it stalls the first calls it overlaps. With
        ``start`` (configure()), the writer is started too: starting a thread waits for it
        to run, which takes long on a busy machine. A decorated function alone starts no
        thread until it is called.
        """
        writer = self._writer
        if not self.config.enabled or (writer is not None and threading.current_thread() is writer.thread):
            return
        try:
            with self._busy:  # imports: a fork must not land in the middle (see _before_fork)
                preimport_writer_modules()
                self._telemetry.prepare()
            if start:
                self._ensure_writer()
        except Exception:
            self._health.internal_error("prepare")

    def log_label(
        self,
        label: Any = None,
        *,
        prediction_id: str | None = None,
        request_id: str | None = None,
        **extra: Any,
    ) -> None:
        """Record the true outcome of an earlier prediction, joined at query time.

        Give the ``prediction_id`` (from :func:`last_prediction_id`) or the ``request_id``
        the prediction was made under. Extra keyword arguments are stored alongside.
        Never raises: a label with neither id is dropped and counted in ``labels_dropped``.
        """
        if prediction_id is None and request_id is None:
            # Serving code must not break over a label: count it and say so once.
            self._health.drop("labels_dropped", 1)
            self._health.error_once(
                "label:no_id",
                "predlog: log_label() needs prediction_id=... or request_id=... to join the label; "
                "labels without either are dropped (counted in stats()['labels_dropped'])",
            )
            return
        self._health.count("labels_submitted")
        ts = self._label_clock(1)
        self._queue.put(
            (
                LABEL,
                None if prediction_id is None else str(prediction_id),
                None if request_id is None else str(request_id),
                label,
                extra or None,
                ts,
            )
        )

    def _label_clock(self, n: int) -> int:
        """The time, in ns, of the first of ``n`` labels logged now, the next ones 1 µs apart.

        Stored in microseconds: a correction logged right after a label must still be later
        (the latest label wins), so the clock is made strictly increasing per process.
        """
        with self._label_lock:
            ts = time.time_ns() // 1000 * 1000
            if ts <= self._label_ts:
                ts = self._label_ts + 1000
            self._label_ts = ts + (n - 1) * 1000
        return ts

    def log_frame(
        self,
        df: Any,
        *,
        model: str | None = None,
        version: str | None = None,
        ts: str = "ts",
        prediction: str = "prediction",
        confidence: str | None = None,
        features: str | Sequence[str] | None = None,
        user_id: str | None = None,
        request_id: str | None = None,
        context: str | Sequence[str] | None = None,
        latency_ms: str | None = None,
        timeout_s: float = 60.0,
    ) -> list[str]:
        """Import past predictions: one row per row of ``df``, at the time of its ``ts`` column.

        For prediction logs from before predlog and batch-scoring outputs. ``df`` is a pandas
        DataFrame, a pyarrow Table or a dict of equal-length columns; the arguments name its
        columns. The rows go through this recorder's processors (``drop_fields``, ``redact``,
        ``hash_fields``, yours) into the store like captured calls and are stored as capture
        stores the same values; each counts as one call in :meth:`stats`.

        Imported rows are history, not live calls: they make no span and no latency metric;
        ``status`` is ``"ok"``, ``sample_rate`` 1.0, ``cpu_ms`` null, ``latency_ms`` the
        ``latency_ms`` column or null; ``batch_*``, ``trace_id`` and ``span_id`` are null.
        They are written whatever ``enabled`` says (it is for decorated functions), as with
        :meth:`log_label`, and never dropped for room: a full queue makes this call wait.
        They are in Parquet, and durable, once :meth:`flush` returns True.

        Args:
            df: The rows.
            model: The model name for every row, or the name of a column holding each row's
                (a string that names a column of ``df`` is that column). Default: the
                recorder's ``model``.
            version: The model version, or a column of versions, likewise. Default: the
                recorder's ``version``.
            ts: Column of each prediction's time: datetimes (aware ones converted to UTC,
                naive ones taken as UTC), Arrow timestamps or ISO 8601 text, from 1970 on.
                Rows land in the date partitions of their own UTC dates.
            prediction: Column of predictions (scalars, or vectors as lists or arrays).
            confidence: Column of confidences (numbers), if any.
            features: Column name(s) whose values make the ``features`` struct. Default:
                every column that no other argument names.
            user_id, request_id: Columns of ids (stored as text, as ``predlog.context`` does).
            context: Column name(s) whose values become fields of the ``context`` struct,
                one per column, as ``predlog.context(name=value)`` would give.
            latency_ms: Column of latencies in milliseconds, if any.
            timeout_s: Longest wait for the writer to take the next chunk of rows when its
                queue is full (an import waits for room, it never drops rows).

        Returns:
            The prediction ids of the rows, in row order: UUIDv7 whose time is the row's ``ts``.

        Raises:
            ValueError: ``df`` is not a frame, or a column is missing, of the wrong kind, or
                has missing times or ids; nothing was queued.
            TimeoutError: the writer took no chunk for ``timeout_s``. The rows queued before
                will be written; their positions in ``df`` are in the error's ``queued_rows``.
        """
        from ._history import frame_import

        cfg = self.config
        plan = frame_import(
            df,
            default_model=cfg.model,
            default_version=cfg.version,
            max_value_bytes=cfg.max_value_bytes,
            model=model,
            version=version,
            ts=ts,
            prediction=prediction,
            confidence=confidence,
            features=features,
            user_id=user_id,
            request_id=request_id,
            context=context,
            latency_ms=latency_ms,
        )
        self._prepare()
        done = 0
        for table in plan.tables():
            self._put_table(table, labels=False, timeout_s=timeout_s, done=done, total=plan.n, rows_of=plan.rows_of)
            done += table.num_rows
        return plan.ids()

    def log_labels(
        self,
        df: Any,
        *,
        label: str = "label",
        prediction_id: str | None = "prediction_id",
        request_id: str | None = None,
        ts: str | None = None,
        timeout_s: float = 60.0,
    ) -> int:
        """Import labels in bulk: one label per row of ``df``, joined at query time.

        Each label keeps its type, as with :meth:`log_label` (an int column stays ints, a
        string column strings; an object column of mixed values keeps each value's own type).
        Missing values of a typed column (NaN, ``pd.NA``, None) are null labels, and a null
        label is its prediction's latest label like ``log_label(None)``: drop such rows
        first if they mean "not labelled yet".

        Args:
            df: A pandas DataFrame, a pyarrow Table or a dict of equal-length columns.
            label: Column of labels.
            prediction_id: Column of the prediction ids the labels are for (the ids
                :meth:`log_frame` returned, or ``predlog.last_prediction_id()`` gave).
                May be absent (or None) when ``request_id`` is given.
            request_id: Column of the request ids the predictions were made under.
            ts: Column of the times the labels were made (as ``log_frame``'s ``ts``); the
                latest label of a prediction wins. Without it, the labels are logged now,
                row i 1 µs after row i-1 and before any label logged later in this process.
            timeout_s: Longest wait for the writer to take the next chunk of labels.

        Returns:
            The number of labels queued (every row of ``df``).

        Raises:
            ValueError: ``df`` is not a frame, a column is missing, or an id column has
                missing values (with both id columns: a row has neither); nothing was queued.
            TimeoutError: as for :meth:`log_frame`.
        """
        from ._history import labels_import

        plan = labels_import(
            df,
            max_value_bytes=self.config.max_value_bytes,
            label=label,
            prediction_id=prediction_id,
            request_id=request_id,
            ts=ts,
        )
        self._prepare()
        first = self._label_clock(plan.n) // 1000 if plan.ts_us is None and plan.n else 0
        done = 0
        for table in plan.tables(first):
            self._put_table(table, labels=True, timeout_s=timeout_s, done=done, total=plan.n, rows_of=range)
            done += table.num_rows
        return plan.n

    def _put_table(
        self,
        table: Any,
        *,
        labels: bool,
        timeout_s: float,
        done: int,
        total: int,
        rows_of: Callable[[int], Sequence[int]],
    ) -> None:
        """Queue one table of imported rows for the writer, waiting for room (never dropped).

        On timeout, raise TimeoutError with ``queued_rows``: the positions in the frame of
        the ``done`` rows queued before (``rows_of(done)``).
        """
        # Counted before the put: the writer may take the table before this thread goes on.
        rows = 0 if labels else table.num_rows
        self._health.count("tables_submitted")
        self._health.count("table_rows_submitted", rows)
        if not self._queue.put_table((TABLE, table, labels), timeout_s):
            self._health.count("tables_submitted", -1)
            self._health.count("table_rows_submitted", -rows)
            what = "labels" if labels else "rows"
            err = TimeoutError(
                f"predlog: the writer took no {what} for {timeout_s} s (is the store writable? see stats()); "
                f"{done} of the {total} {what} were queued and will be written, the others were not: log "
                f"those again (this error's queued_rows holds the positions in the frame of the queued ones)"
            )
            err.queued_rows = list(rows_of(done))  # type: ignore[attr-defined]
            raise err

    def stats(self) -> dict[str, Any]:
        """Counters of this process.

        Calls are counted, not rows: ``captured`` calls passed sampling; each ends up
        ``written`` (its rows reached the write-ahead segment) or in ``dropped`` by reason
        (``queue_full``, ``write_error``, ``processor``, ``processor_error``,
        ``convert_error``). After :meth:`flush`, captured == written + dropped_total. A row
        imported by :meth:`log_frame` counts as one call; a label of :meth:`log_labels` as
        one label.
        ``rows_written`` counts rows (a batch call writes one row per input row),
        ``sealed_rows`` the rows now in Parquet, ``labels`` the label rows written.
        """
        counts, dropped = self._health.snapshot()
        depth = len(self._queue)
        labels_dropped = dropped.pop("labels_dropped", 0)
        labels_taken = counts.get("labels_taken", 0)
        calls_taken = counts.get("taken", 0) - labels_taken
        labels_queued = counts.get("labels_submitted", 0) - labels_taken - counts.get("labels_queue_full", 0)
        # The queue also holds labels and calls that are only traced (sampled out of Parquet).
        spans_taken = counts.get("span_only_taken", 0)
        spans_queued = counts.get("span_only_submitted", 0) - spans_taken - counts.get("span_only_queue_full", 0)
        # And tables of imported rows: one record each, whose rows were captured when queued.
        tables_taken = counts.get("tables_taken", 0)
        tables_queued = counts.get("tables_submitted", 0) - tables_taken
        calls_taken -= spans_taken + tables_taken
        calls_queued = max(0, depth - labels_queued - spans_queued - tables_queued)
        telemetry = self._telemetry.stats()
        span_drops = telemetry["spans_dropped"]
        span_drops["queue_full"] += counts.get("span_only_queue_full", 0)
        return {
            "captured": calls_taken
            + calls_queued
            + dropped.get("queue_full", 0)
            + counts.get("table_rows_submitted", 0),
            "written": counts.get("written", 0),
            "dropped": {**dict.fromkeys(DROP_REASONS, 0), **dropped},
            "dropped_total": sum(dropped.values()),
            "rows_written": counts.get("rows_written", 0),
            "sealed_rows": counts.get("sealed_rows", 0),
            "files": counts.get("files", 0),
            "labels": counts.get("labels", 0),
            "labels_dropped": labels_dropped,
            "failed": counts.get("failed", 0),
            "recovered_segments": counts.get("recovered_segments", 0),
            "corrupt_frames": counts.get("corrupt_frames", 0),
            "queue_depth": depth,
            "spans": telemetry["spans"],
            "spans_dropped": span_drops,
        }

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Write everything captured so far and seal it into Parquet.

        Returns True when every call captured before it is in Parquet within ``timeout_s``;
        False on timeout or when a seal failed (the rows then wait, safe, in the write-ahead
        segment for a retry). Never raises.
        """
        if self._writer is None and not len(self._queue):
            return True
        try:
            deadline = time.monotonic() + timeout_s
            writer = self._ensure_writer()
            ok = writer.flush(deadline)
            # Spans and metrics go out too, but a collector that is down does not make the
            # rows' flush fail (its losses are counted in spans_dropped).
            self._telemetry.force_flush(max(0.0, deadline - time.monotonic()))
            for extra in self._extra_sinks:
                try:
                    ok = bool(extra.force_flush(max(0.0, deadline - time.monotonic()))) and ok
                except Exception:
                    self._health.internal_error(f"sink:{type(extra).__name__}")
                    ok = False
            return bool(ok)
        except Exception:
            self._health.internal_error("flush")
            return False

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Flush, then stop the threads and the sinks.

        A call recorded after this starts the writer again. Returns what :meth:`flush` did.
        """
        timeout = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        ok = self.flush(timeout_s=timeout)
        self._stop_writer(timeout_s=timeout)
        for sink in self._extra_sinks:
            with contextlib.suppress(Exception):
                sink.shutdown()
        with contextlib.suppress(Exception):
            self._telemetry.shutdown(max(0.1, deadline - time.monotonic()))
        return ok

    # ------------------------------------------------------------------ the writer

    def _ensure_writer(self) -> Writer:
        """The running writer; a new one (and its sink) when none runs."""
        if self._pid != os.getpid():
            self._after_fork_in_child()
        writer = self._writer
        if writer is not None and writer.alive():
            return writer
        with self._writer_lock:
            writer = self._writer
            if writer is not None and writer.alive():
                return writer
            preimport_fork_handlers()
            if writer is not None:  # the last writer died: its sink goes with it
                with contextlib.suppress(Exception):
                    writer.sink.shutdown(self.config.shutdown_timeout_s)
            writer = Writer(self.config, self._queue, self._health, self._telemetry, self._extra_sinks, self._busy)
            self._writer = writer
            writer.start()
            self._queue.writer = writer.thread
            self._queue.wake_at = self._queue.batch
            return writer

    def _stop_writer(self, timeout_s: float) -> None:
        """Ask the writer to drain the queue, close its sink and exit; wait up to timeout_s.

        The next recorded call starts a new writer (and sink).
        """
        writer, self._writer = self._writer, None
        self._queue.writer = None
        self._queue.wake_at = 0
        if writer is not None:
            writer.stop(timeout_s)


def _call(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    fn = method()
    if fn is not None:
        fn()


def _atexit_flush(ref: weakref.ReferenceType[Recorder]) -> None:
    rec = ref()
    if rec is None or rec._pid != os.getpid():
        return
    with contextlib.suppress(Exception):
        rec.shutdown(timeout_s=rec.config.shutdown_timeout_s)


def last_record() -> Record | None:
    """The last prediction record of this thread, task or request context (see _recorder_state)."""
    return last(CURRENT.get())
