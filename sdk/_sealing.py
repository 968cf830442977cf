"""Sealing write-ahead segments into Parquet, and recovering the segments of dead writers.

Used by the writer (seal its own segments, recover those of dead processes) and by the
reading side (recover on open). Sealing is idempotent: the Parquet names derive from the
segment's name, so sealing a segment twice (a crash between the rename and the unlink)
rewrites the same files with the same rows instead of duplicating them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._fsio import FILE_MODE, fsync_dir, mkdir_private, open_private
from ._layout import (
    DATE_KEY,
    FORMAT_VERSION,
    LABELS,
    MARKER,
    MODEL_KEY,
    PREDICTIONS,
    SEGMENT_SUFFIX,
    marker_format,
    sealed_name,
    segment_stem,
    wal_dir,
)
from ._processors import HASHED_KEY
from ._segment import KIND_LABELS, KIND_PREDICTIONS, SegmentContents, read_segment

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger("predlog")

__all__ = ["SealResult", "ensure_store", "recover_orphans", "same_kind", "seal_segment"]


def ensure_store(store: str) -> None:
    """Create the store's skeleton and its ``predlog.json`` marker if missing (or older)."""
    mkdir_private(wal_dir(store))
    if marker_format(store) < FORMAT_VERSION:
        marker = os.path.join(store, MARKER)
        tmp = f"{marker}.{os.getpid()}.{os.urandom(4).hex()}.tmp"  # unique: recorders in one process race here
        with open_private(tmp) as f:
            f.write(json.dumps({"format": FORMAT_VERSION}).encode())
        os.replace(tmp, marker)


@dataclasses.dataclass
class SealResult:
    files: list[str]
    prediction_rows: int
    label_rows: int
    corrupt_frames: int
    torn_tail_bytes: int


def _date_strings(ts: pa.ChunkedArray | pa.Array) -> pa.Array | str:
    """The UTC date of each timestamp, or one date string when they all share it (usual)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    days = pc.cast(ts, pa.timestamp("us")).cast(pa.date32())
    bounds = pc.min_max(days)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low == high:
        return low.isoformat()
    return pc.cast(days, pa.string())


def _schema_groups(tables: list[pa.Table], strict: tuple[str, ...] = ()) -> list[tuple[pa.Schema, list[pa.Table]]]:
    """Group tables, in order, into runs that unify into one schema (permissive promotion).

    Tables whose ``predlog.hashed`` metadata differ never share a file, nor do tables whose
    ``strict`` columns have different types (labels keep their type: an int label is not
    widened to a float because a float label was logged beside it).
    """
    import pyarrow as pa

    groups: list[tuple[pa.Schema, list[pa.Table]]] = []
    for table in tables:
        if groups:
            schema, members = groups[-1]
            if not same_kind(schema, table.schema, strict):
                groups.append((table.schema, [table]))
                continue
            if table.schema != schema:
                try:
                    schema = pa.unify_schemas([schema, table.schema], promote_options="permissive")
                except (pa.ArrowException, TypeError):
                    groups.append((table.schema, [table]))
                    continue
                schema = schema.with_metadata(members[0].schema.metadata)
            groups[-1] = (schema, members + [table])
            continue
        groups.append((table.schema, [table]))
    return groups


def same_kind(a: pa.Schema, b: pa.Schema, strict: tuple[str, ...] = ()) -> bool:
    """Whether tables of these schemas may share a file: same hashed paths, same ``strict`` column types."""
    import pyarrow as pa

    if (a.metadata or {}).get(HASHED_KEY) != (b.metadata or {}).get(HASHED_KEY):
        return False
    for name in strict:
        ta = a.field(name).type if name in a.names else pa.null()
        tb = b.field(name).type if name in b.names else pa.null()
        if ta != tb and not pa.types.is_null(ta) and not pa.types.is_null(tb):
            return False
    return True


def _write_parquet(path: str, schema: pa.Schema, tables: list[pa.Table], row_group_size: int) -> int:
    """Write tables (cast to ``schema``) to ``path`` via a hidden temp name, fsync, rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = os.path.dirname(path)
    mkdir_private(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    rows = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            with pq.ParquetWriter(f, schema, compression="zstd", write_statistics=True) as writer:
                # Frames are small (one per flush interval); regroup them into full row groups.
                pending: list[pa.Table] = []
                pending_rows = 0
                for table in tables:
                    if table.schema != schema:
                        table = table.cast(schema)
                    pending.append(table)
                    pending_rows += table.num_rows
                    if pending_rows >= row_group_size:
                        merged = pa.concat_tables(pending)
                        full = pending_rows - pending_rows % row_group_size
                        writer.write_table(merged.slice(0, full), row_group_size=row_group_size)
                        rows += full
                        rest = merged.slice(full)
                        pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
                if pending:
                    writer.write_table(pa.concat_tables(pending), row_group_size=row_group_size)
                    rows += pending_rows
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)
    return rows


def _split(table: pa.Table, keys: list[str]) -> Iterator[tuple[tuple[str, ...], pa.Table]]:
    """Split a table by the distinct values of string key columns, keeping row order."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return
    combos = table.select(keys).group_by(keys, use_threads=False).aggregate([])
    if combos.num_rows == 1:
        yield tuple(combos.column(k)[0].as_py() for k in keys), table
        return
    for i in range(combos.num_rows):
        mask = None
        values = []
        for k in keys:
            v = combos.column(k)[i].as_py()
            values.append(v)
            m = pc.equal(table.column(k), v)
            mask = m if mask is None else pc.and_(mask, m)
        yield tuple(values), table.filter(mask)


def seal_segment(store: str, segment_path: str, *, row_group_size: int = 131_072) -> SealResult:
    """Turn a closed segment into Parquet files under predictions/ and labels/, then delete it.

    Rows are split by model and UTC date; runs of frames whose schemas unify share a file.
    Raises OSError (e.g. disk full) leaving the segment in place, so it can be retried.
    """

    contents: SegmentContents = read_segment(segment_path)
    stem = segment_stem(segment_path)
    by_part: dict[tuple[str, ...], list[pa.Table]] = {}
    for kind, table in contents.tables:
        if table.num_rows == 0:
            continue
        dates = _date_strings(table.column("ts"))
        # `model` and `date` are the partition (Hive style): they are in the path, not the file.
        if isinstance(dates, str):  # one day: no per-row date column, no split by date
            if kind == KIND_PREDICTIONS:
                for (model,), part in _split(table, ["model"]):
                    by_part.setdefault((PREDICTIONS, f"{MODEL_KEY}={model}", f"{DATE_KEY}={dates}"), []).append(
                        part.drop_columns(["model"])
                    )
            elif kind == KIND_LABELS:
                by_part.setdefault((LABELS, f"{DATE_KEY}={dates}"), []).append(table)
            continue
        table = table.append_column("_date", dates)
        if kind == KIND_PREDICTIONS:
            for (model, date), part in _split(table, ["model", "_date"]):
                by_part.setdefault((PREDICTIONS, f"{MODEL_KEY}={model}", f"{DATE_KEY}={date}"), []).append(
                    part.drop_columns(["_date", "model"])
                )
        elif kind == KIND_LABELS:
            for (date,), part in _split(table, ["_date"]):
                by_part.setdefault((LABELS, f"{DATE_KEY}={date}"), []).append(part.drop_columns(["_date"]))
    files = []
    rows = {PREDICTIONS: 0, LABELS: 0}
    for part, tables in sorted(by_part.items()):
        directory = os.path.join(store, *part)
        strict = ("label",) if part[0] == LABELS else ()
        for i, (schema, members) in enumerate(_schema_groups(tables, strict)):
            path = os.path.join(directory, sealed_name(stem, i))
            rows[part[0]] += _write_parquet(path, schema, members, row_group_size)
            files.append(path)
    os.unlink(segment_path)
    with contextlib.suppress(OSError):
        fsync_dir(os.path.dirname(segment_path))
    if contents.corrupt_frames or contents.torn_tail_bytes:
        logger.warning(
            "predlog: segment %s had %d corrupt frame(s) and a torn tail of %d bytes; intact frames were kept",
            segment_path,
            contents.corrupt_frames,
            contents.torn_tail_bytes,
        )
    return SealResult(files, rows[PREDICTIONS], rows[LABELS], contents.corrupt_frames, contents.torn_tail_bytes)


_STALE_NEW_S = 60.0


def _remove_stale_new(path: str) -> None:
    """Delete a segment a writer died creating (``*.arrows.new``: a header at most).

    Only when old and unlocked: a young one may be a live writer between create and lock.
    """
    import fcntl

    try:
        if time.time() - os.stat(path).st_mtime < _STALE_NEW_S:
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        pass  # locked by a live writer, or already gone
    finally:
        os.close(fd)


def recover_orphans(store: str, *, row_group_size: int = 131_072, skip: set[str] | None = None) -> list[SealResult]:
    """Seal the segments of writers that are gone (their file lock is free).

    A live writer holds an exclusive ``flock`` on its open segment; the lock dies with the
    process, however it died. Segments that cannot be sealed now (disk full) stay for a
    later try.
    """
    import fcntl

    directory = wal_dir(store)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    results = []
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(SEGMENT_SUFFIX + ".new"):
            _remove_stale_new(path)
            continue
        if not name.endswith(SEGMENT_SUFFIX) or (skip and path in skip):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue  # a live writer owns it
                raise
            if not os.path.exists(path):
                continue  # sealed by someone else between listdir and lock
            try:
                results.append(seal_segment(store, path, row_group_size=row_group_size))
            except OSError:
                raise  # disk full or unwritable: the caller retries the whole pass later
            except Exception:
                # One unreadable segment must not hold back the others; it stays for a look.
                logger.exception("predlog: cannot recover segment %s; left in place", path)
        finally:
            os.close(fd)
    return results
