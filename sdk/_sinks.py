"""Sinks receive processed Arrow tables from the writer thread.

A sink is anything with ``export(table, *, labels)``, ``force_flush(timeout_s)`` and
``shutdown()``. They run in the writer thread, must not block for long, and may raise (the
writer counts the failure and carries on).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from ._context import mute_thread
from ._health import Health
from ._layout import segment_name, wal_dir
from ._sealing import ensure_store, recover_orphans, seal_segment
from ._segment import KIND_LABELS, KIND_PREDICTIONS, SegmentWriter

if TYPE_CHECKING:
    import pyarrow as pa

    from ._config import Config

logger = logging.getLogger("predlog")

__all__ = ["InMemorySink", "ParquetSink", "Sink"]


class Sink(Protocol):
    """Receives tables of predictions (``labels=False``) or labels from the writer thread."""

    def export(self, table: pa.Table, *, labels: bool = False) -> None: ...

    def force_flush(self, timeout_s: float = 5.0) -> bool: ...

    def shutdown(self) -> None: ...


class InMemorySink:
    """Keeps every exported table in memory: for tests of instrumented code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.predictions: list[pa.Table] = []
        self.labels: list[pa.Table] = []

    def export(self, table: pa.Table, *, labels: bool = False) -> None:
        with self._lock:
            (self.labels if labels else self.predictions).append(table)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        return True

    def shutdown(self) -> None:
        pass

    def rows(self) -> list[dict[str, Any]]:
        """Every prediction row exported so far, as dicts."""
        with self._lock:
            return [row for t in self.predictions for row in t.to_pylist()]

    def label_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [row for t in self.labels for row in t.to_pylist()]

    def clear(self) -> None:
        with self._lock:
            self.predictions.clear()
            self.labels.clear()


class ParquetSink:
    """Write-ahead segment now, Parquet later: the store's own sink.

    ``export`` appends a frame to the open segment; the writer's ``tick`` fdatasyncs it
    once per flush interval and when the segment is closed. A segment is closed when it reaches its row, byte or age limit, or on flush,
    and handed to the sealer thread, which writes the Parquet files and deletes it. The
    sealer also recovers segments of dead processes, at start and every minute.
    """

    _RECOVER_EVERY_S = 60.0

    def __init__(self, config: Config, health: Health) -> None:
        self.cfg = config
        self.health = health
        self.store = os.fspath(config.store)
        self.segment: SegmentWriter | None = None
        self.opened_at = 0.0
        self.synced_at = 0.0
        self.dirty = False
        self._handed = 0
        self._attempted = 0
        self._sealq: queue.Queue[tuple[int, str] | tuple[()] | None] = queue.Queue()
        self._seal_cv = threading.Condition()
        self._retry: list[str] = []
        # Closed segments waiting for the sealer keep their descriptor, and so their flock:
        # recovery (ours or another process's) must not take a segment we are about to seal.
        self._held: dict[str, SegmentWriter] = {}
        self._sealer: threading.Thread | None = None
        # Held while the sealer runs Arrow; the recorder's before-fork hook waits for it.
        self.busy = threading.Lock()

    # -- writer thread

    def _open(self) -> SegmentWriter:
        ensure_store(self.store)
        seg = SegmentWriter(os.path.join(wal_dir(self.store), segment_name()))
        self.opened_at = time.monotonic()
        self._start_sealer()
        return seg

    def export(self, table: pa.Table, *, labels: bool = False) -> None:
        if self.segment is None:
            self.segment = self._open()
        try:
            self.segment.append_table(KIND_LABELS if labels else KIND_PREDICTIONS, table)
        except OSError:
            # The segment may now end in a torn frame; readers cut it. Start a new one.
            self._rotate()
            raise
        self.dirty = True
        seg = self.segment
        if seg.rows >= self.cfg.segment_max_rows or seg.bytes >= self.cfg.segment_max_bytes:
            self._rotate()

    def tick(self, *, rotate_now: bool = False) -> None:
        """Called by the writer after each drain: sync, and close the segment on age or on
        request (a flush). Never waits for the sealer."""
        now = time.monotonic()
        seg = self.segment
        if seg is None:
            return
        if rotate_now or now - self.opened_at >= self.cfg.segment_max_age_s:
            self._rotate()  # syncs
        elif self.dirty and now - self.synced_at >= self.cfg.flush_interval_s:
            with contextlib.suppress(OSError):
                seg.sync()
            self.synced_at = now
            self.dirty = False

    def seal_from(self, rows: int) -> None:
        """Close the open segment for the sealer if it holds ``rows`` rows or more (an import
        is sealed while it goes on, not all at its end).

        Without an fdatasync: the sealer makes the rows durable in Parquet sooner than the
        next sync was due (``flush_interval_s``), and a segment it cannot seal is synced
        then. Syncing here would stall the writer on the disk for every few hundred MB.
        """
        seg = self.segment
        if seg is not None and seg.rows >= rows:
            self._rotate(sync=False)

    @property
    def handed(self) -> int:
        """How many segments were handed to the sealer so far."""
        return self._handed

    def _rotate(self, *, sync: bool = True) -> None:
        seg, self.segment = self.segment, None
        if seg is None:
            return
        if sync:
            with contextlib.suppress(OSError):
                seg.sync()
        self.dirty = False
        if seg.rows == 0:
            with contextlib.suppress(OSError):
                os.unlink(seg.path)
            seg.close()
            return
        self._held[seg.path] = seg
        self._handed += 1
        self._sealq.put((self._handed, seg.path))

    def wait_sealed(self, target: int, timeout_s: float) -> bool:
        """Wait until the first ``target`` handed segments were sealed; False on timeout or
        when one of them could not be sealed (it stays in ``_wal/`` for a retry)."""
        deadline = time.monotonic() + timeout_s
        with self._seal_cv:
            while self._attempted < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._seal_cv.wait(left)
        if self._retry:
            self._sealq.put(())  # retry the failed seals now rather than on the back-off timer
            with self._seal_cv:
                while self._retry:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._seal_cv.wait(min(left, 0.5))
        return not self._retry

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        self._rotate()
        return self.wait_sealed(self._handed, timeout_s)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self.force_flush(timeout_s)
        if self._sealer is not None and self._sealer.is_alive():
            self._sealq.put(None)
            self._sealer.join(timeout_s)
        if self._sealer is None or not self._sealer.is_alive():
            # Segments that could not be sealed (disk full) stay for recovery: unlock them.
            for path in list(self._held):
                self._release(path)

    def abandon(self) -> None:
        """In a forked child: drop the parent's segments without touching them."""
        if self.segment is not None:
            self.segment.abandon()
            self.segment = None
        for seg in list(self._held.values()):
            seg.abandon()
        self._held.clear()

    def _release(self, path: str) -> None:
        held = self._held.pop(path, None)
        if held is not None:
            held.close()

    # -- sealer thread

    def _start_sealer(self) -> None:
        if self._sealer is None or not self._sealer.is_alive():
            self._sealer = threading.Thread(target=self._run_sealer, name="predlog-sealer", daemon=True)
            self._sealer.start()

    def _seal(self, path: str) -> bool:
        health = self.health
        try:
            with self.busy:
                result = seal_segment(self.store, path, row_group_size=self.cfg.row_group_size)
        except FileNotFoundError:
            self._release(path)
            return True
        except OSError as exc:
            held = self._held.get(path)
            if held is not None:  # it waits for a retry: on disk, as a segment should be
                with contextlib.suppress(OSError):
                    held.sync()
            health.error_once(
                f"seal:{exc.errno}", "predlog: cannot seal %s (%s); will retry, rows are safe in the segment", path, exc
            )
            return False
        except Exception:
            health.internal_error("seal_segment")
            return False
        self._release(path)
        health.count("sealed_rows", result.prediction_rows)
        health.count("files", len(result.files))
        if result.corrupt_frames:
            health.count("corrupt_frames", result.corrupt_frames)
        return True

    def _recover(self) -> None:
        try:
            own = {self.segment.path} if self.segment is not None else set()
            with self.busy:
                results = recover_orphans(
                    self.store, row_group_size=self.cfg.row_group_size, skip=own | set(self._retry)
                )
        except OSError:
            return
        except Exception:
            self.health.internal_error("recover")
            return
        if results:
            self.health.count("recovered_segments", len(results))
            self.health.count("corrupt_frames", sum(r.corrupt_frames for r in results))

    def _run_sealer(self) -> None:
        mute_thread()  # nothing this thread calls is recorded
        self._recover()
        last_recover = time.monotonic()
        backoff = 1.0
        while True:
            item: tuple[int, str] | None | tuple[()]
            try:
                item = self._sealq.get(timeout=backoff if self._retry else self._RECOVER_EVERY_S)
            except queue.Empty:
                item = ()
            if item is None:
                return
            if item:
                n, path = item
                if not self._seal(path):
                    self._retry.append(path)
                with self._seal_cv:
                    self._attempted = max(self._attempted, n)
                    self._seal_cv.notify_all()
            if self._retry and not item:
                still = [p for p in self._retry if not self._seal(p)]
                with self._seal_cv:
                    self._retry = still
                    self._seal_cv.notify_all()
                backoff = min(backoff * 2, 30.0) if still else 1.0
            if time.monotonic() - last_recover >= self._RECOVER_EVERY_S:
                self._recover()
                last_recover = time.monotonic()
