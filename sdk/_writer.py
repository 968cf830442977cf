"""The writer: one background thread that drains the queue into the store.

Each cycle (every ``flush_interval_s``, sooner when the queue wakes it) it takes what is
queued, converts records to Arrow (:mod:`._convert`), runs the processor pipeline once (drop,
redact, hash, then the user's processors), makes the spans of the calls (:mod:`._otel`), and
hands the same processed table to every sink: the Parquet sink (a frame of the write-ahead
segment) and any extra sink. Every call ends up counted as written or dropped by reason.
Tables of imported history arrive already converted: they go through the same processors
and sinks, without spans, each row counted as a call.

Threading: the writer runs Arrow under ``busy``, a lock a fork waits for (a fork in the
middle of Arrow's lazy set-up would leave the child's writer hung).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ._context import mute_thread
from ._health import Health
from ._otel import Telemetry, is_batch_table
from ._processors import Pipeline
from ._queue import RecordQueue
from ._record import LABEL, SPAN_ONLY, SPEC, T0, T1, TABLE, TB_LABELS, TB_TABLE, Record, Spec
from ._sinks import ParquetSink, Sink

if TYPE_CHECKING:
    import pyarrow as pa

    from ._config import Config

__all__ = ["DRAIN_MAX", "IMPORT_SEGMENT_ROWS", "Writer", "preimport_fork_handlers", "preimport_writer_modules"]

# Records converted per step: small enough that the writer gives the GIL back to request
# threads often, large enough that Arrow's per-call costs vanish.
DRAIN_MAX = 8192

# Rows of imported history after which the segment goes to the sealer: sealing overlaps the
# rest of the import, and an import (sent in date order) still makes few files per day.
IMPORT_SEGMENT_ROWS = 131_072


class Writer:
    """One writer thread and the Parquet sink it writes to; started once, stopped once."""

    def __init__(
        self,
        config: Config,
        queue: RecordQueue,
        health: Health,
        telemetry: Telemetry,
        extra_sinks: list[Sink],
        busy: threading.Lock,
    ) -> None:
        self.config = config
        self.queue = queue
        self.health = health
        self.telemetry = telemetry
        self.extra_sinks = extra_sinks  # the recorder's list: sinks added later are seen
        self.busy = busy
        # The pipeline belongs to the writer: every sink gets the table it produced.
        self.pipeline = Pipeline(
            drop_fields=config.drop_fields,
            redact=config.redact,
            hash_fields=config.hash_fields,
            hash_key=config.hash_key,
            processors=config.processors,
        )
        self.sink = ParquetSink(config, health)
        self.stopping = threading.Event()
        self.flush_cv = threading.Condition(threading.Lock())
        self.flush_requested = 0
        self.flush_done = 0
        self.flush_handed = 0  # segments handed to the sealer when the last flush was served
        self.thread = threading.Thread(target=self._run, name="predlog-writer", daemon=True)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout_s: float) -> None:
        """Drain the queue, close the sink and end the thread; wait up to ``timeout_s``."""
        if self.thread.is_alive():
            self.stopping.set()
            self.queue.wakeup.set()
            self.thread.join(timeout_s)
        else:
            with contextlib.suppress(Exception):
                self.sink.shutdown(timeout_s)

    def flush(self, deadline: float) -> bool:
        """Write what is queued now and seal it into Parquet by ``deadline`` (monotonic)."""
        with self.flush_cv:
            self.flush_requested += 1
            ticket = self.flush_requested
        self.queue.wakeup.set()
        with self.flush_cv:
            while self.flush_done < ticket:
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    return False
                self.flush_cv.wait(min(left, 0.1))
            handed = self.flush_handed
        return self.sink.wait_sealed(handed, max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        mute_thread()
        cfg = self.config
        q = self.queue
        try:
            with self.busy:  # imports: a fork must not land in the middle
                preimport_writer_modules()  # done already when configure() or a decorator ran
                self.telemetry.ensure()
                self.telemetry.setup_metrics()
        except Exception:
            self.health.internal_error("telemetry")
        cycle = time.monotonic()
        while True:
            # Cycles start every flush_interval_s (sooner when woken), however long the last
            # one took: a record waits at most about one interval before it is written.
            if len(q) < q.batch and not self.stopping.is_set():
                q.wakeup.wait(max(0.0, cycle + cfg.flush_interval_s - time.monotonic()))
            cycle = time.monotonic()
            q.wakeup.clear()
            self.telemetry.refresh()
            with self.flush_cv:
                ticket = self.flush_requested
            stopping = self.stopping.is_set()
            # Drain what is queued now, no more: under sustained load the writer must still
            # reach tick() (fsync, age-based seal) and serve flushes.
            pending = len(q)
            while pending > 0:
                n = min(pending, len(q), DRAIN_MAX)
                if n <= 0:
                    break
                batch = q.take(n)
                pending -= n
                with self.busy:
                    self.process(batch)
                del batch  # the calls' arguments and results are not kept until the next drain
            try:
                self.sink.tick(rotate_now=ticket > self.flush_done or stopping)
            except Exception:
                self.health.internal_error("seal")
            if ticket > self.flush_done:
                with self.flush_cv:
                    self.flush_done = ticket
                    self.flush_handed = self.sink.handed
                    self.flush_cv.notify_all()
            if stopping and not len(q):
                with contextlib.suppress(Exception):
                    self.sink.shutdown(cfg.shutdown_timeout_s)
                return

    def process(self, batch: list[Record]) -> None:
        """Convert, process and export one drained batch of records."""
        from ._columns import Flags
        from ._convert import labels_to_tables, records_to_table

        heads = set(map(itemgetter(0), batch))  # C-level: usually one spec, no labels
        imported: list[Record] = []
        if LABEL in heads or SPAN_ONLY in heads or TABLE in heads:
            preds = [r for r in batch if r[0] is not LABEL and r[0] is not SPAN_ONLY and r[0] is not TABLE]
            labels = [r for r in batch if r[0] is LABEL]
            traced = [r[1] for r in batch if r[0] is SPAN_ONLY]
            imported = [r for r in batch if r[0] is TABLE]
            self.health.count("labels_taken", len(labels))
            if imported:
                self.health.count("tables_taken", len(imported))
            if traced:
                self.health.count("span_only_taken", len(traced))
                self.telemetry.span_only(traced, self.pipeline)
                self.telemetry.record_latency(traced)
            heads.discard(LABEL)
            heads.discard(SPAN_ONLY)
            heads.discard(TABLE)
        else:
            preds, labels = batch, []
        cfg = self.config
        if preds:
            self._observe_latency(preds)
            try:
                self.telemetry.record_latency(preds)
            except Exception:
                self.health.internal_error("metrics")
            # One function's outputs share a type; mixing functions in one column would not.
            if len(heads) == 1:
                groups: Iterable[list[Record]] = [preds]
            else:
                by_spec: dict[int, list[Record]] = {}
                for r in preds:
                    by_spec.setdefault(id(r[SPEC]), []).append(r)
                groups = by_spec.values()
            for group in groups:
                done = 0
                try:
                    for table, recs in records_to_table(group, Flags(), cfg.max_value_bytes):
                        self._export(table, labels=False, calls=len(recs), recs=recs)
                        done += len(recs)
                except Exception:
                    self.health.drop("convert_error", len(group) - done)
                    self.telemetry.abandon(group)
                    self.health.internal_error("convert")
        if labels:
            try:
                tables = labels_to_tables(labels, cfg.max_value_bytes)
            except Exception:
                self.health.internal_error("convert_labels")
                self.health.drop("labels_dropped", len(labels))
            else:
                for table in tables:
                    self._export(table, labels=True, calls=table.num_rows)
        for rec in imported:
            # History: no spans, no latency; each row counts as one call (or one label).
            try:
                self._export(rec[TB_TABLE], labels=rec[TB_LABELS], calls=rec[TB_TABLE].num_rows)
                self.sink.seal_from(IMPORT_SEGMENT_ROWS)
            finally:
                self.queue.table_done()

    def _observe_latency(self, preds: list[Record]) -> None:
        if self.config.cpu_time != "auto":
            return
        by_spec: dict[int, tuple[Spec, list[int]]] = {}
        for r in preds[:512]:
            by_spec.setdefault(id(r[SPEC]), (r[SPEC], []))[1].append(r[T1] - r[T0])
        for spec, lat in by_spec.values():
            if len(lat) >= 8:
                spec.observe_latency(statistics.median(lat))

    def _export(self, table: pa.Table, *, labels: bool, calls: int, recs: list[Record] | None = None) -> None:
        """Run processors, spans and sinks on one table; count every call as written or dropped.

        ``calls`` is how many recorded calls the table holds: its rows for single calls,
        1 for a batch call. A batch call counts as written if any of its rows is. Spans are
        made after the built-in processors (a span carries the hashed user id) and before
        the user's (which may drop rows: a call sampled out of Parquet may still be traced).
        """
        health = self.health
        single = calls == table.num_rows
        dropped_key = "labels_dropped" if labels else None
        try:
            if labels:
                processed, _ = self.pipeline.apply(table, label_table=True)
            elif recs is None:
                processed, _ = self.pipeline.apply(table)
            else:
                processed = self._process_predictions(table, recs)
        except Exception:
            if recs is not None:
                self.telemetry.abandon(recs)
            health.internal_error("processors")
            health.drop(dropped_key or "processor_error", calls)
            return
        rows = 0 if processed is None else processed.num_rows
        survived = rows if single else (calls if rows else 0)
        if calls - survived:
            health.drop(dropped_key or "processor", calls - survived)
        if processed is None or not rows:
            return
        processed = self.pipeline.mark(processed, label_table=labels)
        try:
            self.sink.export(processed, labels=labels)
        except OSError as exc:
            health.drop(dropped_key or "write_error", survived)
            health.error_once(
                f"write:{exc.errno}",
                "predlog: cannot write to store %s (%s); dropping and counting until it is writable",
                self.config.store,
                exc,
            )
            return
        except Exception:
            health.internal_error("export")
            health.drop(dropped_key or "write_error", survived)
            return
        if labels:
            health.count("labels", rows)
        else:
            health.count("written", survived)
            health.count("rows_written", rows)
        for sink in list(self.extra_sinks):
            try:
                sink.export(processed, labels=labels)
            except Exception:
                health.internal_error(f"sink:{type(sink).__name__}")

    def _process_predictions(self, table: pa.Table, recs: list[Record]) -> Any:
        """Built-in processors, then the user's, then spans for what is left.

        Spans carry the hashed user id, so they come after the built-ins; they point at
        rows, so they come after the user's processors, which may drop rows: a dropped call
        still gets its span (traced independently of what Parquet keeps), without a
        prediction id. User processors keep the order of the rows they keep.
        """
        pipeline, telemetry = self.pipeline, self.telemetry
        table = pipeline.apply_builtin(table)
        if not pipeline.processors:
            return telemetry.annotate(table, recs)
        before = table.column("prediction_id").to_pylist()
        processed, _ = pipeline.apply_user(table)
        kept = set(processed.column("prediction_id").to_pylist()) if processed is not None else set()
        if len(recs) == 1 and is_batch_table(table):
            # One batch call: its span goes with whatever rows of it survive.
            if processed is not None and processed.num_rows:
                return telemetry.annotate(processed, recs)
            telemetry.span_only(recs, None, table=table)
            return processed
        gone = [i for i, pid in enumerate(before) if pid not in kept]
        if gone:
            telemetry.span_only([recs[i] for i in gone], None, table=table.take(gone))
        if processed is None or not processed.num_rows:
            return processed
        survivors = [rec for pid, rec in zip(before, recs) if pid in kept]
        if len(survivors) != processed.num_rows:  # a processor changed prediction ids: no spans then
            telemetry.abandon(survivors)
            return processed
        return telemetry.annotate(processed, survivors)


def preimport_fork_handlers() -> None:
    """Import, on the caller's thread, the stdlib module pandas brings in that registers an
    at-fork pair (acquire before, release after). Imported by the writer while a fork waits
    for it, its "before" half would be missed and its "after" half release an unheld lock."""
    if "concurrent.futures.thread" not in sys.modules:
        import concurrent.futures.thread  # noqa: F401


def preimport_writer_modules() -> None:
    """Import what the writer and the sealer import, once per process (on the thread that
    configures or decorates: left to the writer, this holds the GIL for a few hundred ms
    while the first calls are served)."""
    if "pyarrow.parquet" in sys.modules and "predlog._convert" in sys.modules:
        return
    import pyarrow as pa
    import pyarrow.compute
    import pyarrow.dataset  # the Parquet writer imports it on first use
    import pyarrow.ipc
    import pyarrow.parquet  # noqa: F401

    from . import _convert, _sealing  # noqa: F401

    pa.array([0])  # Arrow imports its pandas shim on first use
