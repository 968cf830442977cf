"""The bounded buffer between request threads and the writer.

Request threads put records; the writer takes them. A put never blocks (unless
``on_full="block"``, and then for at most ``block_timeout_s``), never raises and does no I/O:
when the buffer is full the record is dropped and counted. Crossing the batch threshold
wakes the writer; otherwise it wakes on its timer. Tables of imported history are the
exception: their caller is not serving, so it waits for room instead (:meth:`RecordQueue.put_table`). The sync wrapper in :mod:`._capture`
inlines :meth:`RecordQueue.put` for speed (``items``, ``max``, ``wake_at``, ``wake``, ``full``).
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ._health import Health
from ._record import LABEL, SPAN_ONLY, SPEC, Record
from ._recorder_state import remember

__all__ = ["TABLES_IN_FLIGHT", "RecordQueue", "SpanTarget"]

# Tables of imported history queued or being written at once: the caller builds the next
# while the writer writes these, and memory stays bounded (a table is at most a few tens of MB).
TABLES_IN_FLIGHT = 4


class SpanTarget(Protocol):
    """What the queue needs of telemetry: whether spans go anywhere, and ending dropped ones."""

    active: bool

    def abandon(self, recs: Sequence[Record]) -> None: ...


class RecordQueue:
    """A bounded deque of records, with the writer's wake-up and the drop accounting.

    ``items`` is one deque for the queue's whole life (cleared, never replaced): wrappers
    hold it directly. ``start_writer`` is called when a record finds no writer thread
    (``writer``) running;
    ``after_fork`` when a put notices it runs in a forked child whose at-fork hook did not
    run.
    """

    __slots__ = (
        "items",
        "max",
        "batch",
        "wake_at",
        "on_full",
        "block_timeout_s",
        "wakeup",
        "space",
        "health",
        "spans",
        "start_writer",
        "writer",
        "after_fork",
        "random",
        "pid",
        "tables",
        "waiting",
    )

    def __init__(
        self, health: Health, spans: SpanTarget, *, start_writer: Callable[[], object], after_fork: Callable[[], None]
    ) -> None:
        self.items: collections.deque[Record] = collections.deque()
        self.health = health
        self.spans = spans
        self.start_writer = start_writer
        self.writer: threading.Thread | None = None  # the writer's thread, set by the recorder
        self.after_fork = after_fork
        self.max = 1
        self.batch = 1
        self.wake_at = 0  # 0: the next record starts a writer
        self.on_full = "drop"
        self.block_timeout_s = 0.1
        self.reset()

    def reset(self) -> None:
        """Empty, with new locks and randomness (at start, and in a forked child)."""
        self.items.clear()
        self.tables = 0  # table records put and not yet written (see put_table)
        self.waiting = 0  # callers of put_table waiting for room
        self.wakeup = threading.Event()
        self.space = threading.Condition(threading.Lock())
        self.random = random.Random().random  # each process samples on its own
        self.pid = os.getpid()

    def configure(self, max_size: int, on_full: str, block_timeout_s: float) -> None:
        self.max = max_size
        self.batch = max(1, min(max_size // 4, 8192))
        self.on_full = on_full
        self.block_timeout_s = block_timeout_s

    # ------------------------------------------------------------------ request side

    def submit(self, rec: Record) -> None:
        """Put one prediction record and remember it as the caller's last prediction."""
        remember(rec, task=rec[SPEC].kind in ("async", "asyncgen"))
        self.put(rec)

    def put(self, rec: Record) -> None:
        """Put one record (of any kind) without remembering it."""
        q = self.items
        n = len(q)
        if n < self.max:
            q.append(rec)
            if n >= self.wake_at:
                self.wake()
            return
        self.full(rec)

    def submit_span_only(self, rec: Record) -> None:
        """Put a call sampled out of Parquet, for its span only.

        Only while spans have somewhere to go, and only into the lower half of the queue:
        a traced-only call never waits, and never takes the place of a row Parquet keeps.
        """
        try:
            spans = self.spans
            if not spans.active:
                spans.abandon((rec,))
                return
            q = self.items
            n = len(q)
            if n >= self.max // 2:
                self.health.count("span_only_queue_full")
                spans.abandon((rec,))
                return
            self.health.count("span_only_submitted")
            q.append((SPAN_ONLY, rec))
            if n >= self.wake_at:
                self.wake()
        except Exception:
            self.health.internal_error("span_only")

    def wake(self) -> None:
        """Start the writer if none runs, and wake it (a sleeping one) up."""
        try:
            writer = self.writer
            if writer is None or not writer.is_alive():
                self.start_writer()
            if not self.wakeup.is_set():  # Event.set() takes a lock: skip it when already up
                self.wakeup.set()
        except Exception:
            self.health.internal_error("wake")

    def full(self, rec: Record) -> None:
        """The queue is full: wait (``on_full="block"``), or drop and count by kind."""
        try:
            if self.pid != os.getpid():  # forked without the at-fork hook running
                self.after_fork()
                if rec[0] is LABEL or rec[0] is SPAN_ONLY:
                    self.put(rec)
                else:
                    self.submit(rec)
                return
            # The writer is behind: start it if it died, wake it if it sleeps. While it is
            # busy the flag stays up, so a dropped call skips Event.set() (a lock round trip).
            writer = self.writer
            if writer is None or not writer.is_alive():
                self.start_writer()
            if not self.wakeup.is_set():
                self.wakeup.set()
            if self.on_full == "block":
                deadline = time.monotonic() + self.block_timeout_s
                with self.space:
                    while len(self.items) >= self.max:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self.space.wait(left)
                if len(self.items) < self.max:
                    self.items.append(rec)
                    return
            if rec[0] is LABEL:
                self.health.drop("labels_dropped", 1)
                self.health.count("labels_queue_full")
            elif rec[0] is SPAN_ONLY:
                self.health.count("span_only_queue_full")
            else:
                self.health.drop("queue_full", 1)
                self.spans.abandon((rec,))
        except Exception:
            self.health.internal_error("full")

    def put_table(self, rec: Record, timeout_s: float) -> bool:
        """Put a table record of imported history, waiting for room; never drops it.

        Room: fewer than ``TABLES_IN_FLIGHT`` tables not yet written, and the queue below
        its bound. The writer is started and woken meanwhile. Returns False when no room
        came within ``timeout_s`` (the record was not put). Not for request threads: it blocks.
        """
        if self.pid != os.getpid():  # forked without the at-fork hook running
            self.after_fork()
        deadline = time.monotonic() + timeout_s
        with self.space:
            self.waiting += 1
            try:
                while self.tables >= TABLES_IN_FLIGHT or len(self.items) >= self.max:
                    self.wake()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    # Woken by table_done() or take(); the poll covers a writer that died.
                    self.space.wait(min(left, 0.5))
                self.tables += 1
                self.items.append(rec)
            finally:
                self.waiting -= 1
        self.wake()  # a table is a whole batch: no reason to wait for the timer
        return True

    def table_done(self) -> None:
        """The writer is done with one table record (written, or dropped and counted)."""
        with self.space:
            self.tables = max(0, self.tables - 1)
            self.space.notify_all()

    # ------------------------------------------------------------------ writer side

    def take(self, n: int) -> list[Record]:
        """The ``n`` oldest records (the writer's drain); blocked putters may go on."""
        batch = [self.items.popleft() for _ in range(n)]
        self.health.count("taken", len(batch))
        if self.on_full == "block" or self.waiting:
            with self.space:
                self.space.notify_all()
        return batch

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"<RecordQueue {len(self.items)}/{self.max}>"
