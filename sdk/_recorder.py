"""The Recorder: bounded queue on the request side, one writer thread, one sealer thread.

Threading contract:

* ``_submit`` runs on request threads: it never blocks (unless ``on_full="block"``), never
  raises, and does no I/O.
* The writer thread drains the queue, converts records to Arrow, runs processors, and
  appends one frame per batch to the current write-ahead segment.
* The sealer thread turns closed segments into Parquet and recovers segments of dead
  processes. Parquet encoding releases the GIL, so sealing overlaps with serving.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import random
import statistics
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _ids
from ._capture import FunctionSpec, wrap
from ._config import Config, ConfigError, resolve_config
from ._context import _CURRENT, Ctx
from ._otel import Telemetry, is_batch_table
from ._recorder_state import last, remember

if TYPE_CHECKING:
    from ._sinks import Sink

logger = logging.getLogger("predlog")

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["DROP_REASONS", "LABEL", "Recorder"]

# Why a captured call was not written (keys of stats()["dropped"], always present).
DROP_REASONS = ("queue_full", "write_error", "processor", "processor_error", "convert_error")


class _LabelMarker:
    kind = "label"

    def __repr__(self) -> str:
        return "LABEL"


# Label records are tuples (LABEL, prediction_id, request_id, label, extra, ts_ns).
LABEL = _LabelMarker()


class _SpanOnlyMarker:
    kind = "span_only"

    def __repr__(self) -> str:
        return "SPAN_ONLY"


# A call sampled out of Parquet but still traced: (SPAN_ONLY, record).
SPAN_ONLY = _SpanOnlyMarker()


# Under pytest, internal errors fail the test instead of being swallowed.
_RAISE_INTERNAL = os.environ.get("PREDLOG_RAISE_INTERNAL_ERRORS") == "1"


class _OnceLogger:
    """Logs each distinct failure once per process (a duplicate filter)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def error(self, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        if key not in self.seen:
            self.seen.add(key)
            logger.error(msg, *args, exc_info=exc_info)


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
        self._extra_sinks = list(sinks or [])
        self._specs: weakref.WeakSet[FunctionSpec] = weakref.WeakSet()
        self._random = random.Random().random
        self._label_ts = 0  # the last label's time, ns (see log_label)
        self._telemetry = Telemetry(self)
        # PREDLOG_OTLP=1 at import: the exporters are built by the writer, not by `import predlog`.
        self._telemetry.configure(self.config, build=False)
        self._init_runtime()
        ref = weakref.ref(self)
        os.register_at_fork(
            before=lambda: _before_fork(ref),
            after_in_parent=lambda: _after_fork_in_parent(ref),
            after_in_child=lambda: _after_fork(ref),
        )
        # Flush while threads still run (before interpreter teardown) where possible.
        register = getattr(threading, "_register_atexit", None)
        try:
            if register is None:
                raise AttributeError
            register(_atexit_flush, ref)
        except (AttributeError, RuntimeError):
            atexit.register(_atexit_flush, ref)

    # ------------------------------------------------------------------ state

    def _init_runtime(self) -> None:
        """Fresh queue, locks, counters and no threads (at start and in a forked child)."""
        self._pid = os.getpid()
        # Wrappers hold this deque directly: clear it, never replace it.
        if not hasattr(self, "_queue"):
            self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._queue.clear()
        self._lock = threading.Lock()
        # Held by the writer while it runs Arrow (or imports); a fork waits for it, see _before_fork.
        self._busy = threading.Lock()
        self._fork_held: list[threading.Lock] = []
        self._wakeup = threading.Event()
        self._space = threading.Condition(threading.Lock())
        self._flush_cv = threading.Condition(threading.Lock())
        self._flush_requested = 0
        self._flush_done = 0
        self._flush_handed = 0  # segments handed to the sealer when the last flush was served
        self._writer: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._counts: collections.Counter[str] = collections.Counter()
        self._dropped: collections.Counter[str] = collections.Counter()
        self._errors = _OnceLogger()
        self._sink: Any = None
        self._apply_limits()

    def _apply_limits(self) -> None:
        cfg = self.config
        self._max = cfg.max_queue_size
        self._batch = max(1, min(cfg.max_queue_size // 4, 8192))
        self._wake_at = 0  # the next record starts a writer

    def _before_fork(self) -> None:
        """Wait until the writer and sealer threads are outside Arrow and imports.

        A fork while another thread is inside an import, or inside Arrow's lazy set-up (a C++
        static initialiser, pyarrow's pandas shim lock), leaves that lock held in the child
        for good: the child's writer hangs on its first batch. Holding the threads' busy locks
        across the fork keeps them out of it; a batch or a seal in progress delays the fork.
        """
        sink = self._sink
        workers = (self._writer, getattr(sink, "_sealer", None))
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
        _ids.reseed()
        self._random = random.Random().random  # each worker samples on its own
        sink = self._sink
        self._init_runtime()
        if sink is not None:
            sink.abandon()  # the parent owns the open segment; the child starts its own
        self._telemetry.after_fork_in_child(self.config)

    def _refresh_specs(self) -> None:
        for spec in list(self._specs):
            spec.refresh()

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
                self, func, model=model, version=version, features=features,
                feature_names=tuple(feature_names) if feature_names is not None else None,
                prediction=prediction, confidence=confidence, sample_rate=sample_rate,
            )
            self._specs.add(spec)
            _preimport_fork_handlers()
            self._prepare()
            return wrap(spec)

        if fn is not None:
            return decorate(fn)
        return decorate

    def configure(self, **config: Any) -> Config:
        """Replace this recorder's configuration (pending records are flushed first).

        Decorated functions pick up the new defaults. Raises ConfigError for bad arguments.
        """
        new = resolve_config(config)
        self.flush(timeout_s=new.shutdown_timeout_s)
        # The old writer drains what is left into the old store and closes it, even if that
        # takes longer than the join below; records are never thrown away here.
        self._stop_threads(timeout_s=new.shutdown_timeout_s)
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
        if not self.config.enabled or threading.current_thread() is self._writer:
            return
        try:
            with self._busy:  # imports: a fork must not land in the middle (see _before_fork)
                _preimport_writer_modules()
                self._telemetry.prepare()
            if start:
                self._ensure_writer()
        except Exception:
            self._internal_error("prepare")

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
            self._drop("labels_dropped", 1)
            self._errors.error(
                "label:no_id",
                "predlog: log_label() needs prediction_id=... or request_id=... to join the label; "
                "labels without either are dropped (counted in stats()['labels_dropped'])",
            )
            return
        self._count("labels_submitted")
        # Stored in microseconds: a correction logged right after a label must still be later
        # (the latest label wins), so the clock is made strictly increasing per process.
        ts = time.time_ns() // 1000 * 1000
        if ts <= self._label_ts:
            ts = self._label_ts + 1000
        self._label_ts = ts
        self._submit_label(
            (LABEL, None if prediction_id is None else str(prediction_id),
             None if request_id is None else str(request_id), label, extra or None, ts)
        )

    def stats(self) -> dict[str, Any]:
        """Counters of this process.

        Calls are counted, not rows: ``captured`` calls passed sampling; each ends up
        ``written`` (its rows reached the write-ahead segment) or in ``dropped`` by reason
        (``queue_full``, ``write_error``, ``processor``, ``processor_error``,
        ``convert_error``). After :meth:`flush`, captured == written + dropped_total.
        ``rows_written`` counts rows (a batch call writes one row per input row),
        ``sealed_rows`` the rows now in Parquet, ``labels`` the label rows written.
        """
        with self._lock:
            counts = dict(self._counts)
            dropped = dict(self._dropped)
        depth = len(self._queue)
        labels_dropped = dropped.pop("labels_dropped", 0)
        labels_taken = counts.get("labels_taken", 0)
        calls_taken = counts.get("taken", 0) - labels_taken
        labels_queued = counts.get("labels_submitted", 0) - labels_taken - counts.get("labels_queue_full", 0)
        # The queue also holds labels and calls that are only traced (sampled out of Parquet).
        spans_taken = counts.get("span_only_taken", 0)
        spans_queued = counts.get("span_only_submitted", 0) - spans_taken - counts.get("span_only_queue_full", 0)
        calls_taken -= spans_taken
        calls_queued = max(0, depth - labels_queued - spans_queued)
        telemetry = self._telemetry.stats()
        span_drops = telemetry["spans_dropped"]
        span_drops["queue_full"] += counts.get("span_only_queue_full", 0)
        return {
            "captured": calls_taken + calls_queued + dropped.get("queue_full", 0),
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
        if self._writer is None and not self._queue and self._sink is None:
            return True
        try:
            deadline = time.monotonic() + timeout_s
            self._ensure_writer()
            sink = self._sink
            with self._flush_cv:
                self._flush_requested += 1
                ticket = self._flush_requested
            self._wakeup.set()
            with self._flush_cv:
                while self._flush_done < ticket:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._writer is None or not self._writer.is_alive():
                        return False
                    self._flush_cv.wait(min(left, 0.1))
                handed = self._flush_handed
            ok = sink.wait_sealed(handed, max(0.0, deadline - time.monotonic()))
            # Spans and metrics go out too, but a collector that is down does not make the
            # rows' flush fail (its losses are counted in spans_dropped).
            self._telemetry.force_flush(max(0.0, deadline - time.monotonic()))
            for extra in self._extra_sinks:
                try:
                    ok = bool(extra.force_flush(max(0.0, deadline - time.monotonic()))) and ok
                except Exception:
                    self._internal_error(f"sink:{type(extra).__name__}")
                    ok = False
            return bool(ok)
        except Exception:
            self._internal_error("flush")
            return False

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """Flush, then stop the threads and the sinks.

        A call recorded after this starts the writer again. Returns what :meth:`flush` did.
        """
        timeout = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        ok = self.flush(timeout_s=timeout)
        self._stop_threads(timeout_s=timeout)
        for sink in self._extra_sinks:
            with contextlib.suppress(Exception):
                sink.shutdown()
        with contextlib.suppress(Exception):
            self._telemetry.shutdown(max(0.1, deadline - time.monotonic()))
        return ok

    # ------------------------------------------------------------------ request side

    def _submit(self, rec: tuple[Any, ...]) -> None:
        """Enqueue one prediction record. Must not block (unless asked to) or raise.

        The sync wrapper inlines this (and ``remember``) for speed.
        """
        remember(rec, task=rec[0].kind in _ASYNC_KINDS)
        self._submit_label(rec)

    def _submit_span_only(self, rec: tuple[Any, ...]) -> None:
        """Enqueue a call sampled out of Parquet, for its span only. Must not block or raise.

        Only while spans have somewhere to go, and only into the lower half of the queue:
        a traced-only call never waits, and never takes the place of a row Parquet keeps.
        """
        try:
            telemetry = self._telemetry
            if not telemetry.active:
                telemetry.abandon((rec,))
                return
            q = self._queue
            n = len(q)
            if n >= self._max // 2:
                self._count("span_only_queue_full")
                telemetry.abandon((rec,))
                return
            self._count("span_only_submitted")
            q.append((SPAN_ONLY, rec))
            if n >= self._wake_at:
                self._wake()
        except Exception:
            self._internal_error("span_only")

    def _submit_label(self, rec: tuple[Any, ...]) -> None:
        """Enqueue one record without remembering it as the last prediction."""
        q = self._queue
        n = len(q)
        if n < self._max:
            q.append(rec)
            if n >= self._wake_at:
                self._wake()
            return
        self._full(rec)

    def _wake(self) -> None:
        try:
            writer = self._writer
            if writer is None or not writer.is_alive():
                self._ensure_writer()
            if not self._wakeup.is_set():  # Event.set() takes a lock: skip it when already up
                self._wakeup.set()
        except Exception:
            self._internal_error("wake")

    def _full(self, rec: tuple[Any, ...]) -> None:
        try:
            if self._pid != os.getpid():  # forked without the at-fork hook running
                self._after_fork_in_child()
                (self._submit_label if rec[0] is LABEL or rec[0] is SPAN_ONLY else self._submit)(rec)
                return
            # The writer is behind: start it if it died, wake it if it sleeps. While it is
            # busy the flag stays up, so a dropped call skips Event.set() (a lock round trip).
            writer = self._writer
            if writer is None or not writer.is_alive():
                self._ensure_writer()
            if not self._wakeup.is_set():
                self._wakeup.set()
            if self.config.on_full == "block":
                deadline = time.monotonic() + self.config.block_timeout_s
                with self._space:
                    while len(self._queue) >= self._max:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._space.wait(left)
                if len(self._queue) < self._max:
                    self._queue.append(rec)
                    return
            if rec[0] is LABEL:
                self._drop("labels_dropped", 1)
                self._count("labels_queue_full")
            elif rec[0] is SPAN_ONLY:
                self._count("span_only_queue_full")
            else:
                self._drop("queue_full", 1)
                self._telemetry.abandon((rec,))
        except Exception:
            self._internal_error("full")

    def _internal_error(self, where: str) -> None:
        with self._lock:
            self._counts["failed"] += 1
        self._errors.error(where, "predlog: internal error in %s (counted, serving continues)", where, exc_info=True)
        if _RAISE_INTERNAL:
            raise

    # ------------------------------------------------------------------ writer

    def _ensure_writer(self) -> None:
        if self._pid != os.getpid():
            self._after_fork_in_child()
        if self._writer is not None and self._writer.is_alive():
            return
        with self._lock:
            if self._writer is not None and self._writer.is_alive():
                return
            _preimport_fork_handlers()
            old = self._sink
            if old is not None:  # the last writer died: its sink goes with it
                with contextlib.suppress(Exception):
                    old.shutdown(self.config.shutdown_timeout_s)
            from ._sinks import ParquetSink

            self._sink = ParquetSink(self)
            self._stop = threading.Event()
            self._writer = threading.Thread(
                target=self._run_writer, args=(self._stop, self._sink), name="predlog-writer", daemon=True
            )
            self._writer.start()
            self._wake_at = self._batch

    def _stop_threads(self, timeout_s: float) -> None:
        """Ask the writer to drain the queue, close its sink and exit; wait up to timeout_s.

        The next recorded call starts a new writer (and sink).
        """
        writer, stop, sink = self._writer, self._stop, self._sink
        self._writer, self._stop, self._sink = None, None, None
        self._wake_at = 0
        if writer is not None and writer.is_alive() and stop is not None:
            stop.set()
            self._wakeup.set()
            writer.join(timeout_s)
        elif sink is not None:
            with contextlib.suppress(Exception):
                sink.shutdown(timeout_s)

    def _run_writer(self, stop: threading.Event, sink: Any) -> None:
        # Calls made from this thread (a processor, a features= callable) are not recorded.
        _CURRENT.set(Ctx(suppress=True))
        cfg = self.config
        q = self._queue
        try:
            with self._busy:
                # Arrow imports its pandas shim on first use; do it now, not during interpreter exit.
                import pyarrow as pa

                pa.array([0])
        except Exception:
            pass
        try:
            with self._busy:  # imports: a fork must not land in the middle (see _before_fork)
                self._telemetry.ensure()
                self._telemetry.setup_metrics()
        except Exception:
            self._internal_error("telemetry")
        cycle = time.monotonic()
        while True:
            # Cycles start every flush_interval_s (sooner when woken), however long the last
            # one took: a record waits at most about one interval before it is written.
            if len(q) < self._batch and not stop.is_set():
                self._wakeup.wait(max(0.0, cycle + cfg.flush_interval_s - time.monotonic()))
            cycle = time.monotonic()
            self._wakeup.clear()
            self._telemetry.refresh()
            with self._flush_cv:
                ticket = self._flush_requested
            stopping = stop.is_set()
            # Drain what is queued now, no more: under sustained load the writer must still
            # reach tick() (fsync, age-based seal) and serve flushes.
            pending = len(q)
            while pending > 0:
                n = min(pending, len(q), _DRAIN_MAX)
                if n <= 0:
                    break
                batch = [q.popleft() for _ in range(n)]
                pending -= n
                with self._lock:
                    self._counts["taken"] += n
                if cfg.on_full == "block":
                    with self._space:
                        self._space.notify_all()
                with self._busy:
                    self._process(batch, sink)
            try:
                sink.tick(rotate_now=ticket > self._flush_done or stopping)
            except Exception:
                self._internal_error("seal")
            if ticket > self._flush_done:
                with self._flush_cv:
                    self._flush_done = ticket
                    self._flush_handed = sink.handed
                    self._flush_cv.notify_all()
            if stopping and not q:
                with contextlib.suppress(Exception):
                    sink.shutdown(cfg.shutdown_timeout_s)
                return

    def _process(self, batch: list[tuple[Any, ...]], sink: Any) -> None:
        from ._convert import Flags, labels_to_tables, records_to_table

        heads = set(map(itemgetter(0), batch))  # C-level: usually one spec, no labels
        if LABEL in heads or SPAN_ONLY in heads:
            preds = [r for r in batch if r[0] is not LABEL and r[0] is not SPAN_ONLY]
            labels = [r for r in batch if r[0] is LABEL]
            traced = [r[1] for r in batch if r[0] is SPAN_ONLY]
            self._count("labels_taken", len(labels))
            if traced:
                self._count("span_only_taken", len(traced))
                self._telemetry.span_only(traced, sink.pipeline)
                self._telemetry.record_latency(traced)
            heads.discard(LABEL)
            heads.discard(SPAN_ONLY)
        else:
            preds, labels = batch, []
        cfg = self.config
        if preds:
            self._observe_latency(preds)
            try:
                self._telemetry.record_latency(preds)
            except Exception:
                self._internal_error("metrics")
            # One function's outputs share a type; mixing functions in one column would not.
            if len(heads) == 1:
                groups: Iterable[list[tuple[Any, ...]]] = [preds]
            else:
                by_spec: dict[int, list[tuple[Any, ...]]] = {}
                for r in preds:
                    by_spec.setdefault(id(r[0]), []).append(r)
                groups = by_spec.values()
            for group in groups:
                done = 0
                try:
                    for table, recs in records_to_table(group, Flags(), cfg.max_value_bytes):
                        self._export(sink, table, labels=False, calls=len(recs), recs=recs)
                        done += len(recs)
                except Exception:
                    self._drop("convert_error", len(group) - done)
                    self._telemetry.abandon(group)
                    self._internal_error("convert")
        if labels:
            try:
                tables = labels_to_tables(labels, cfg.max_value_bytes)
            except Exception:
                self._internal_error("convert_labels")
                self._drop("labels_dropped", len(labels))
            else:
                for table in tables:
                    self._export(sink, table, labels=True, calls=table.num_rows)

    def _observe_latency(self, preds: list[tuple[Any, ...]]) -> None:
        if self.config.cpu_time != "auto":
            return
        by_spec: dict[int, tuple[FunctionSpec, list[int]]] = {}
        for r in preds[:512]:
            by_spec.setdefault(id(r[0]), (r[0], []))[1].append(r[6] - r[5])
        for spec, lat in by_spec.values():
            if len(lat) >= 8:
                spec.observe_latency(statistics.median(lat))

    def _export(
        self, sink: Any, table: Any, *, labels: bool, calls: int, recs: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """Run processors, spans and sinks on one table; count every call as written or dropped.

        ``calls`` is how many recorded calls the table holds: its rows for single calls,
        1 for a batch call. A batch call counts as written if any of its rows is. Spans are
        made after the built-in processors (a span carries the hashed user id) and before
        the user's (which may drop rows: a call sampled out of Parquet may still be traced).
        """
        single = calls == table.num_rows
        dropped_key = "labels_dropped" if labels else None
        try:
            if labels:
                processed, removed = sink.pipeline.apply(table, label_table=True)
            elif recs is None:
                processed, removed = sink.pipeline.apply(table)
            else:
                processed = self._process_predictions(sink.pipeline, table, recs)
        except Exception:
            if recs is not None:
                self._telemetry.abandon(recs)
            self._internal_error("processors")
            self._drop(dropped_key or "processor_error", calls)
            return
        rows = 0 if processed is None else processed.num_rows
        survived = rows if single else (calls if rows else 0)
        if calls - survived:
            self._drop(dropped_key or "processor", calls - survived)
        if not rows:
            return
        processed = sink.pipeline.mark(processed, label_table=labels)
        try:
            sink.export(processed, labels=labels)
        except OSError as exc:
            self._drop(dropped_key or "write_error", survived)
            self._errors.error(
                f"write:{exc.errno}",
                "predlog: cannot write to store %s (%s); dropping and counting until it is writable",
                self.config.store, exc,
            )
            return
        except Exception:
            self._internal_error("export")
            self._drop(dropped_key or "write_error", survived)
            return
        with self._lock:
            if labels:
                self._counts["labels"] += rows
            else:
                self._counts["written"] += survived
                self._counts["rows_written"] += rows
        for sink in self._extra_sinks:
            try:
                sink.export(processed, labels=labels)
            except Exception:
                self._internal_error(f"sink:{type(sink).__name__}")

    def _process_predictions(self, pipeline: Any, table: Any, recs: list[tuple[Any, ...]]) -> Any:
        """Built-in processors, then the user's, then spans for what is left.

        Spans carry the hashed user id, so they come after the built-ins; they point at
        rows, so they come after the user's processors, which may drop rows: a dropped call
        still gets its span (traced independently of what Parquet keeps), without a
        prediction id. User processors keep the order of the rows they keep.
        """
        table = pipeline.apply_builtin(table)
        if not pipeline.processors:
            return self._telemetry.annotate(table, recs)
        before = table.column("prediction_id").to_pylist()
        processed, _ = pipeline.apply_user(table)
        kept = set(processed.column("prediction_id").to_pylist()) if processed is not None else set()
        if len(recs) == 1 and is_batch_table(table):
            # One batch call: its span goes with whatever rows of it survive.
            if processed is not None and processed.num_rows:
                return self._telemetry.annotate(processed, recs)
            self._telemetry.span_only(recs, None, table=table)
            return processed
        gone = [i for i, pid in enumerate(before) if pid not in kept]
        if gone:
            self._telemetry.span_only([recs[i] for i in gone], None, table=table.take(gone))
        if processed is None or not processed.num_rows:
            return processed
        survivors = [rec for pid, rec in zip(before, recs) if pid in kept]
        if len(survivors) != processed.num_rows:  # a processor changed prediction ids: no spans then
            self._telemetry.abandon(survivors)
            return processed
        return self._telemetry.annotate(processed, survivors)

    def _drop(self, reason: str, n: int) -> None:
        with self._lock:
            self._dropped[reason] += n

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n


# Records converted per step: small enough that the writer gives the GIL back to request
# threads often, large enough that Arrow's per-call costs vanish.
_DRAIN_MAX = 8192

# Longest a fork waits for the worker threads to leave Arrow (one batch or one seal).
_FORK_WAIT_S = 30.0


def _preimport_fork_handlers() -> None:
    """Import, on the caller's thread, the stdlib module pandas brings in that registers an
    at-fork pair (acquire before, release after). Imported by the writer while a fork waits
    for it, its "before" half would be missed and its "after" half release an unheld lock."""
    if "concurrent.futures.thread" not in sys.modules:
        import concurrent.futures.thread  # noqa: F401


def _preimport_writer_modules() -> None:
    """Import what the writer and the sealer import, once per process."""
    if "pyarrow.parquet" in sys.modules and "predlog._convert" in sys.modules:
        return
    import pyarrow as pa
    import pyarrow.compute
    import pyarrow.dataset  # the Parquet writer imports it on first use
    import pyarrow.ipc
    import pyarrow.parquet  # noqa: F401

    from . import _convert, _sealing  # noqa: F401

    pa.array([0])  # Arrow imports its pandas shim on first use


def _before_fork(ref: weakref.ReferenceType[Recorder]) -> None:
    rec = ref()
    if rec is not None:
        rec._before_fork()


def _after_fork_in_parent(ref: weakref.ReferenceType[Recorder]) -> None:
    rec = ref()
    if rec is not None:
        rec._after_fork_in_parent()


def _after_fork(ref: weakref.ReferenceType[Recorder]) -> None:
    rec = ref()
    if rec is not None:
        rec._after_fork_in_child()


def _atexit_flush(ref: weakref.ReferenceType[Recorder]) -> None:
    rec = ref()
    if rec is None or rec._pid != os.getpid():
        return
    with contextlib.suppress(Exception):
        rec.shutdown(timeout_s=rec.config.shutdown_timeout_s)


_ASYNC_KINDS = frozenset({"async", "asyncgen"})


def last_record() -> tuple[Any, ...] | None:
    return last(_CURRENT.get())

