"""Retention: whole date partitions older than a number of days deleted."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from typing import TYPE_CHECKING, Any, TypedDict

from predlog._layout import (
    LABELS,
    PREDICTIONS,
)

from . import _maintenance as protocol

if TYPE_CHECKING:
    pass

logger = logging.getLogger("predlog")

__all__ = ["RetainOptions", "RetainResult", "date_before", "retain"]


@dataclasses.dataclass(frozen=True)
class RetainResult:
    """What :func:`retain` removed (or, with ``dry_run``, would remove).

    Attributes:
        cutoff: Partitions dated before this UTC date were dropped.
        dates: The dates dropped, in any table.
        partitions: The partition directories dropped (relative to the store).
        files: Parquet files deleted.
        bytes: Their size.
        prediction_rows: Prediction rows removed.
        label_rows: Label rows removed.
        dry_run: Nothing was deleted.
    """

    cutoff: dt.date
    dates: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    files: int = 0
    bytes: int = 0
    prediction_rows: int = 0
    label_rows: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cutoff"] = self.cutoff.isoformat()
        return d


def date_before(date: str, limit: dt.date) -> bool:
    try:
        return dt.date.fromisoformat(date) < limit
    except ValueError:
        return False


class RetainOptions(TypedDict, total=False):
    """The options of :func:`retain` (and :meth:`Store.retain`), documented there."""

    now: dt.datetime | None
    dry_run: bool
    lock_timeout_s: float


def retain(
    store: protocol.HasRoot | str | os.PathLike[str],
    days: int,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    lock_timeout_s: float = protocol.DEFAULT_LOCK_TIMEOUT_S,
    _step_hook: protocol.StepHook | None = None,
) -> RetainResult:
    """Drop the date partitions older than ``days`` days, in predictions (every model) and labels.

    A partition is dropped when its UTC date is before ``today - days`` (``today`` from
    ``now``, default the current time, in UTC): ``days=0`` keeps today only, ``days=30``
    keeps today and the 30 days before. The current day is never dropped. Whole files are
    deleted, nothing is rewritten; readers stop seeing every dropped partition at the same
    instant (one manifest with no new files). A file that a late seal puts into an old
    partition while this runs is left for the next run.

    Args:
        store: The store (anything with a ``.root``), or its path.
        days: Days to keep before today (0 or more).
        now: The current time (naive: UTC), for tests and reproducible runs.
        dry_run: Report what would go without deleting anything.
        lock_timeout_s: How long to wait for another maintenance operation to finish.

    Raises:
        MaintenanceBusyError: another maintenance operation kept the lock too long.
        ValueError: ``days`` is negative or not an integer.
    """
    import pyarrow.parquet as pq

    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise ValueError(f"days must be an integer >= 0, got {days!r}")
    now = dt.datetime.now(dt.UTC) if now is None else now
    today = (now.astimezone(dt.UTC) if now.tzinfo else now).date()
    cutoff = today - dt.timedelta(days=days)
    hook = _step_hook or protocol.no_hook

    def plan() -> tuple[list[protocol.Partition], list[str], int, dict[str, int]]:
        parts = [p for p in protocol.partitions(root) if date_before(p.date, cutoff) and date_before(p.date, today)]
        files: list[str] = []
        size = 0
        rows = {PREDICTIONS: 0, LABELS: 0}
        for p in parts:
            for name in protocol.partition_files(root, p.rel):
                path = os.path.join(root, p.rel, name)
                try:
                    rows[p.table] += pq.ParquetFile(path).metadata.num_rows
                    size += os.path.getsize(path)
                except FileNotFoundError:
                    continue
                files.append(f"{p.rel}/{name}")
        return parts, files, size, rows

    root = protocol.root_of(store)
    if dry_run:
        parts, files, size, rows = plan()
    else:
        with protocol.locked(root, lock_timeout_s):
            parts, files, size, rows = plan()
            if files:
                _publish_removal(root, files, hook)
            for p in parts:
                protocol.remove_stale_temp(root, p.rel, protocol.STALE_TMP_S)
            protocol.remove_empty_dirs(root, [p.rel for p in parts])
    return RetainResult(
        cutoff=cutoff,
        dates=tuple(sorted({p.date for p in parts})),
        partitions=tuple(p.rel for p in parts),
        files=len(files),
        bytes=size,
        prediction_rows=rows[PREDICTIONS],
        label_rows=rows[LABELS],
        dry_run=dry_run,
    )


def _publish_removal(root: str, files: list[str], hook: protocol.StepHook) -> None:
    op_id = protocol.new_op_id()
    hook("staged")
    protocol.publish(root, "retain", op_id, [], files, hook)
