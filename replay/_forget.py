"""Erasure of one user: every row of theirs, and the labels joined to them, rewritten away."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from predlog._fsio import mkdir_private
from predlog._layout import (
    LABELS,
    MAINTENANCE,
    SEGMENT_SUFFIX,
    segment_paths,
    stem_of,
    wal_dir,
)
from predlog._processors import hash_id
from predlog._sealing import recover_orphans

from . import _maintenance as protocol

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger("predlog")

__all__ = [
    "DEFAULT_WAIT_LIVE_S",
    "ForgetResult",
    "UserNotFoundWarning",
    "forget_user",
    "hash_user_id",
    "not_found_message",
]


#: How long :func:`forget_user` waits for live writers to seal segments holding the user.
#: Writers close a segment at the latest after ``segment_max_age_s`` (60 s by default) and
#: seal it within a second or two; 90 s covers that with a margin.
DEFAULT_WAIT_LIVE_S = 90.0


@dataclasses.dataclass(frozen=True)
class ForgetResult:
    """What :func:`forget_user` removed.

    Attributes:
        user_id: The stored value that was erased (after hashing, if a key was given); left
            out of the repr so results can be logged.
        prediction_rows: Prediction rows of the user removed.
        label_rows: Label rows removed (joined to the user's predictions by prediction id or
            request id).
        files_rewritten: Files rewritten without the user's rows.
        files_deleted: Files removed outright (every row was the user's).
        partitions: Partition directories touched (relative to the store).
        segments_sealed: Segments of dead writers sealed into Parquet first.
        stale_temp_files: Hidden temporary files of dead sealers deleted.
        pending_live: Live write-ahead segments that still hold rows of the user because
            their writer did not seal them within ``wait_live_s``; call again later.
        waited_s: Time spent waiting for live writers.
    """

    user_id: str = dataclasses.field(repr=False)
    prediction_rows: int = 0
    label_rows: int = 0
    files_rewritten: int = 0
    files_deleted: int = 0
    partitions: tuple[str, ...] = ()
    segments_sealed: int = 0
    stale_temp_files: int = 0
    pending_live: tuple[str, ...] = ()
    waited_s: float = 0.0

    @property
    def complete(self) -> bool:
        """True when no live segment still holds the user's rows."""
        return not self.pending_live

    @property
    def found(self) -> bool:
        """False when the store held no row of the user (nothing was erased, nothing is pending)."""
        return bool(self.prediction_rows or self.label_rows or self.pending_live)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["user_id"]
        return d


@dataclasses.dataclass
class _Hits:
    """Where a user's rows are: per file, and the ids that join labels to them."""

    files: dict[str, int] = dataclasses.field(default_factory=dict)  # rel path -> rows
    prediction_ids: set[str] = dataclasses.field(default_factory=set)
    request_ids: set[str] = dataclasses.field(default_factory=set)


def _string_column_index(pf: Any, name: str) -> int | None:
    schema = pf.metadata.schema
    for j in range(len(schema)):
        if schema.column(j).path == name:
            return j
    return None


def _scan_predictions(root: str, rel: str, user_ids: tuple[str, ...], hits: _Hits) -> None:
    """Find the user's rows in one file, reading only the id columns of row groups whose
    statistics admit the user."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(os.path.join(root, rel))
    except FileNotFoundError:
        return
    if "user_id" not in pf.schema_arrow.names:
        return
    j = _string_column_index(pf, "user_id")
    present = [c for c in ("prediction_id", "request_id") if c in pf.schema_arrow.names]
    n = 0
    for i in range(pf.metadata.num_row_groups):
        if j is not None:
            stats = pf.metadata.row_group(i).column(j).statistics
            if stats is not None and stats.has_min_max:
                with contextlib.suppress(TypeError):  # not a string column: read it
                    if not any(stats.min <= u <= stats.max for u in user_ids):
                        continue
        users = pf.read_row_group(i, columns=["user_id"]).column(0)
        mask = _is_user(users, user_ids)
        count = pc.sum(mask).as_py() or 0
        if not count:
            continue
        n += count
        if present:
            ids = pf.read_row_group(i, columns=present).filter(mask)
            for c, target in (("prediction_id", hits.prediction_ids), ("request_id", hits.request_ids)):
                if c in present:
                    target.update(v for v in ids.column(c).to_pylist() if v is not None)
    if n:
        hits.files[rel] = n


def _label_mask(table: pa.Table, prediction_ids: set[str], request_ids: set[str]) -> pa.ChunkedArray | None:
    """True for labels of the user's predictions; None when no column can match."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = None
    for col, ids in (("prediction_id", prediction_ids), ("request_id", request_ids)):
        if col not in table.column_names or not ids:
            continue
        values = table.column(col)
        if pa.types.is_null(values.type):
            continue  # no id at all in this file
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = pc.cast(values, pa.string())
        m = pc.fill_null(pc.is_in(values, value_set=pa.array(sorted(ids), values.type)), False)
        mask = m if mask is None else pc.or_(mask, m)
    return mask


def _scan_labels(root: str, rel: str, hits: _Hits, found: dict[str, int]) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(os.path.join(root, rel))
    except FileNotFoundError:
        return
    cols = [c for c in ("prediction_id", "request_id") if c in pf.schema_arrow.names]
    if not cols:
        return
    mask = _label_mask(pf.read(columns=cols), hits.prediction_ids, hits.request_ids)
    if mask is not None:
        n = pc.sum(mask).as_py() or 0
        if n:
            found[rel] = n


def _segment_holds(path: str, user_ids: tuple[str, ...], hits: _Hits) -> bool:
    """Whether a live segment holds the user's predictions or their labels (adds their ids)."""
    import pyarrow.compute as pc

    from predlog._segment import KIND_LABELS, KIND_PREDICTIONS, read_segment

    try:
        contents = read_segment(path)
    except FileNotFoundError:
        return False
    holds = False
    labels = []
    for kind, table in contents.tables:
        if kind == KIND_PREDICTIONS and "user_id" in table.column_names:
            mask = _is_user(table.column("user_id"), user_ids)
            if pc.any(mask).as_py():
                holds = True
                mine = table.filter(mask)
                for c, target in (("prediction_id", hits.prediction_ids), ("request_id", hits.request_ids)):
                    if c in mine.column_names:
                        target.update(v for v in mine.column(c).to_pylist() if v is not None)
        elif kind == KIND_LABELS:
            labels.append(table)
    for table in labels:
        mask = _label_mask(table, hits.prediction_ids, hits.request_ids)
        if mask is not None and pc.any(mask).as_py():
            holds = True
    return holds


def _rewrite_partition(
    root: str,
    rel: str,
    files: dict[str, int],
    keep: Callable[[pa.Table], pa.Table],
    hook: protocol.StepHook,
    row_group_rows: int,
) -> tuple[int, int, int]:
    """Rewrite ``files`` of one partition through ``keep``; return (rows removed, rewritten, deleted)."""
    import pyarrow.parquet as pq

    op_id = protocol.new_op_id()
    staging = protocol.staging_dir(root, op_id)
    mkdir_private(staging)
    staged: list[tuple[str, str]] = []
    replaces: list[str] = []
    removed = deleted = 0
    try:
        for path_rel in sorted(files):
            path = os.path.join(root, path_rel)
            pf = pq.ParquetFile(path)
            sorting = pf.metadata.row_group(0).sorting_columns if pf.metadata.num_row_groups else None
            table = pf.read()
            kept = keep(table)
            removed += table.num_rows - kept.num_rows
            replaces.append(path_rel)
            if kept.num_rows == 0:
                deleted += 1
                continue
            name = f"forget-{op_id}-{len(staged)}.parquet"
            src = os.path.join(staging, f".{name}.tmp")
            protocol.write_staged(src, kept, row_group_rows, sorting_columns=list(sorting) if sorting else None)
            staged.append((src, f"{rel}/{name}"))
        hook("staged")
        protocol.publish(root, "forget_user", op_id, staged, replaces, hook)
    except BaseException:
        if not os.path.exists(os.path.join(root, MAINTENANCE, op_id + ".json")):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return removed, len(staged), deleted


def _is_user(column: Any, user_ids: tuple[str, ...]) -> Any:
    """True where ``column`` (user ids) is one of ``user_ids``, false (not null) elsewhere."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(user_ids) == 1:
        return pc.fill_null(pc.equal(column, user_ids[0]), False)
    return pc.fill_null(pc.is_in(column, value_set=pa.array(list(user_ids), pa.string())), False)


def hash_user_id(user_id: str, hash_key: bytes | str) -> str:
    """The value the SDK stores for ``user_id`` under ``hash_fields=["user_id"]`` and ``hash_key``."""
    return hash_id(user_id, hash_key)


class ForgetOptions(TypedDict, total=False):
    """The options of :func:`forget_user` (and :meth:`Store.forget_user`), documented there."""

    hash_key: bytes | str | None
    wait_live_s: float
    row_group_rows: int
    lock_timeout_s: float


def forget_user(
    store: protocol.HasRoot | str | os.PathLike[str],
    user_id: str,
    *,
    hash_key: bytes | str | None = None,
    wait_live_s: float = DEFAULT_WAIT_LIVE_S,
    row_group_rows: int = protocol.DEFAULT_ROW_GROUP_ROWS,
    lock_timeout_s: float = protocol.DEFAULT_LOCK_TIMEOUT_S,
    _step_hook: protocol.StepHook | None = None,
) -> ForgetResult:
    """Erase every row of one user: predictions, the labels joined to them, live segments.

    1. Segments of dead writers are sealed into Parquet (``recover_orphans``).
    2. Live segments (held by running writers) that hold the user's rows cannot be
       rewritten under their writer: wait up to ``wait_live_s`` for them to be sealed (a
       writer closes a segment after ``segment_max_age_s``, 60 s by default, or on flush).
    3. Every prediction file holding ``user_id`` is found by a scan of the ``user_id``
       column (row groups whose statistics exclude the user are skipped) and rewritten
       without those rows; labels whose ``prediction_id`` is one of the user's predictions,
       or whose ``request_id`` is one of the user's request ids, go the same way. A file
       left empty is deleted. Each partition is swapped atomically for readers.

    Afterwards no file under the store holds the user's identifiers: rewritten files are new
    files, so their dictionary pages, statistics and page indexes hold only remaining
    values, and the replaced files are unlinked. The blocks those files occupied are freed,
    not overwritten: erasing them from the disk itself (or from snapshots and backups) is
    outside predlog's reach. Readers that had a replaced file open keep reading it until
    they close it. Labels joined by a request id that other users' predictions share are
    removed too. Rows recorded for the user while this runs may survive: stop recording
    the user first, or check ``pending_live`` and call again.

    Args:
        store: The store (anything with a ``.root``), or its path.
        user_id: The user, as given to ``predlog.context``.
        hash_key: The store's ``hash_key`` when it was written with
            ``hash_fields=["user_id"]``: rows holding the id hashed the same way are erased,
            and rows holding it as it is (written before hashing was on). A Store opened
            with ``hash_key=`` (or ``$PREDLOG_HASH_KEY``) passes its own.
        wait_live_s: How long to wait for live writers to seal segments holding the user;
            segments still live then are reported in ``pending_live``.
        row_group_rows: Rows per row group of rewritten files.
        lock_timeout_s: How long to wait for another maintenance operation to finish.

    Raises:
        MaintenanceBusyError: another maintenance operation kept the lock too long.
        ValueError: ``user_id`` is empty or not a string.
    """
    import pyarrow.compute as pc

    if not isinstance(user_id, str) or not user_id:
        raise ValueError(f"user_id must be a non-empty string, got {user_id!r}")
    # With a key, the stored hash goes, and the plain id too (rows written before hashing was on).
    targets = (user_id,) if hash_key is None else (hash_user_id(user_id, hash_key), user_id)
    target = targets[0]
    root = protocol.root_of(store)
    hook = _step_hook or protocol.no_hook
    with protocol.locked(root, lock_timeout_s):
        sealed = len(recover_orphans(root))
        hits = _Hits()
        scanned: set[str] = set()

        def scan_parquet() -> None:
            for part in protocol.partitions(root, labels=False):
                for name in protocol.partition_files(root, part.rel):
                    rel = f"{part.rel}/{name}"
                    if rel not in scanned:
                        scanned.add(rel)
                        _scan_predictions(root, rel, targets, hits)

        scan_parquet()  # first, so labels in live segments can be joined to sealed predictions
        live = [p for p in segment_paths(root) if _segment_holds(p, targets, hits)]
        started = time.monotonic()
        while live and time.monotonic() - started < wait_live_s:
            time.sleep(min(0.2, max(0.0, wait_live_s - (time.monotonic() - started))))
            sealed += len(recover_orphans(root))  # a writer that died meanwhile
            live = [p for p in live if os.path.exists(p)]
        waited = time.monotonic() - started
        # Segments sealed while we waited became Parquet files: scan those as well.
        scan_parquet()
        pending = {p for p in live if os.path.exists(p) and _segment_holds(p, targets, hits)}

        label_hits: dict[str, int] = {}
        for part in protocol.partitions(root, labels=True):
            if part.table == LABELS:
                for name in protocol.partition_files(root, part.rel):
                    _scan_labels(root, f"{part.rel}/{name}", hits, label_hits)

        # A file whose segment is still in _wal/ is being sealed (or would be sealed again by
        # recovery, bringing the rows back under the same name): leave it to the next call.
        wal = protocol.live_stems(root)
        for files in (hits.files, label_hits):
            for rel in list(files):
                name = os.path.basename(rel)
                if protocol.being_sealed(name, wal):
                    del files[rel]
                    pending.add(os.path.join(wal_dir(root), f"{stem_of(name)}{SEGMENT_SUFFIX}"))

        def keep_predictions(table: pa.Table) -> pa.Table:
            if "user_id" not in table.column_names:
                return table
            return table.filter(pc.invert(_is_user(table.column("user_id"), targets)))

        def keep_labels(table: pa.Table) -> pa.Table:
            mask = _label_mask(table, hits.prediction_ids, hits.request_ids)
            return table if mask is None else table.filter(pc.invert(mask))

        pred_rows = label_rows = rewritten = deleted = stale = 0
        parts: list[str] = []
        for files, keep, is_label in ((hits.files, keep_predictions, False), (label_hits, keep_labels, True)):
            by_dir: dict[str, dict[str, int]] = {}
            for rel, n in files.items():
                by_dir.setdefault(os.path.dirname(rel), {})[rel] = n
            for rel_dir, group in sorted(by_dir.items()):
                removed, w, d = _rewrite_partition(root, rel_dir, group, keep, hook, row_group_rows)
                if is_label:
                    label_rows += removed
                else:
                    pred_rows += removed
                rewritten += w
                deleted += d
                parts.append(rel_dir)
        for part in protocol.partitions(root):
            stale += protocol.remove_stale_temp(root, part.rel, protocol.STALE_TMP_S)
    result = ForgetResult(
        user_id=target,
        prediction_rows=pred_rows,
        label_rows=label_rows,
        files_rewritten=rewritten,
        files_deleted=deleted,
        partitions=tuple(parts),
        segments_sealed=sealed,
        stale_temp_files=stale,
        pending_live=tuple(sorted(pending)),
        waited_s=round(waited, 3),
    )
    if not result.found:
        warnings.warn(not_found_message(root, user_id, hashed=hash_key is not None), UserNotFoundWarning, stacklevel=2)
    return result


class UserNotFoundWarning(UserWarning):
    """``forget_user`` found no row of the user: nothing was erased."""


def not_found_message(root: str, user_id: str, *, hashed: bool) -> str:
    """Why erasing ``user_id`` erased nothing, and what to check."""
    text = f"no row of user {user_id!r} in the store {root}: nothing was erased"
    if not hashed and _hashes_user_ids(root):
        text += (
            ". The store's user ids are hashed (the writers' hash_fields): pass hash_key=... (or "
            "'predlog forget --hashed' with PREDLOG_HASH_KEY) to erase by the id given to predlog.context"
        )
    else:
        text += ". Check the id (ids are compared as stored, case and all)"
    return text


def _hashes_user_ids(root: str) -> bool:
    import pyarrow.parquet as pq

    from predlog._processors import HASHED_KEY

    for part in protocol.partitions(root, labels=False):
        for name in protocol.partition_files(root, part.rel):
            with contextlib.suppress(OSError, ValueError):
                raw = (pq.read_metadata(os.path.join(root, part.rel, name)).metadata or {}).get(HASHED_KEY)
                if raw and "user_id" in json.loads(raw):
                    return True
    return False
