"""Sealing write-ahead segments into Parquet, and recovering the segments of dead writers.

Used by the writer (seal its own segments, recover those of dead processes) and by the
reading side (recover on open). Sealing is idempotent: the Parquet names derive from the
segment's name, so sealing a segment twice (a crash between the rename and the unlink)
rewrites the same files with the same rows instead of duplicating them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
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


_US_PER_DAY = 86_400_000_000
# Rows in a segment of several partitions above which they are written two at a time.
_PARALLEL_ROWS = 32_768


def _partitions(table: pa.Table, by_model: bool) -> Iterator[tuple[str | None, str, pa.Table]]:
    """Split a table by UTC date of ``ts`` (and by ``model``): (model, date, rows), each
    part's rows in table order.

    One integer key per row (day number, model index); parts are slices of the table when
    it is in key order (one day, or an import, which is sent in that order), else of one
    stable sort of it: no pass over the rows per part and no per-row text.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    ts = table.column("ts")
    if ts.type.unit != "us":
        ts = ts.cast(pa.timestamp("us", tz=ts.type.tz))
    days = np.floor_divide(ts.cast(pa.int64()).to_numpy(), _US_PER_DAY)
    first_day = int(days.min())
    key = days - first_day
    span = int(key.max()) + 1
    models: list[str | None] = [None]
    if by_model:
        encoded = pc.dictionary_encode(table.column("model").combine_chunks())
        models = encoded.dictionary.to_pylist()
        if len(models) > 1:
            key = key + encoded.indices.to_numpy().astype(np.int64) * span

    def name(k: int) -> tuple[str | None, str]:
        day = dt.date.fromordinal(_EPOCH_ORDINAL + first_day + k % span)
        return models[k // span], day.isoformat()

    if int(key.min()) == int(key.max()):  # the usual case: one model, one day
        yield *name(int(key[0])), table
        return
    steps = np.diff(key)
    if bool((steps >= 0).all()):  # in order already (an import is sorted so): slices only
        ordered, taken = key, table
    else:
        order = np.argsort(key, kind="stable")
        ordered, taken = key[order], table.take(pa.array(order))
        steps = np.diff(ordered)
    starts = np.concatenate(([0], np.flatnonzero(steps) + 1))
    ends = np.concatenate((starts[1:], [len(ordered)]))
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        yield *name(int(ordered[lo])), taken.slice(lo, hi - lo)


_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


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


def _dictionary_columns(table: pa.Table, sample_rows: int = 4096) -> list[str]:
    """The leaf columns worth a dictionary: those whose values repeat in a sample of rows.

    Parquet's writer otherwise tries a dictionary for every column and gives up only past
    1 MB of it, so columns of distinct values (ids, measurements, scores) pay for one they
    never use; in files of 10^4-10^5 rows that about doubles the time to write them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    out: list[str] = []

    def walk(arr: pa.Array, path: str) -> None:
        t = arr.type
        if pa.types.is_struct(t):
            for i in range(t.num_fields):
                walk(arr.field(i), f"{path}.{t.field(i).name}")
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            walk(arr.flatten(), f"{path}.list.element")
        elif pa.types.is_dictionary(t):
            out.append(path)
        elif not (pa.types.is_nested(t) or pa.types.is_null(t) or pa.types.is_boolean(t)):
            values = len(arr) - arr.null_count
            if values and pc.count_distinct(arr).as_py() * 2 <= values:
                out.append(path)

    sample = table.slice(0, sample_rows)
    for name, col in zip(sample.column_names, sample.columns):
        walk(col.combine_chunks(), name)
    return out


def _write_parquet(
    path: str, schema: pa.Schema, tables: list[pa.Table], row_group_size: int, dictionary: list[str] | None = None
) -> int:
    """Write tables (cast to ``schema``) to ``path`` via a hidden temp name, fsync, rename.

    ``dictionary``: the columns to dictionary-encode (default: see :func:`_dictionary_columns`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = os.path.dirname(path)
    mkdir_private(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    rows = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            with pq.ParquetWriter(
                f,
                schema,
                compression="zstd",
                write_statistics=True,
                use_dictionary=_dictionary_columns(tables[0]) if dictionary is None else dictionary,
            ) as writer:
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


def seal_segment(store: str, segment_path: str, *, row_group_size: int = 131_072) -> SealResult:
    """Turn a closed segment into Parquet files under predictions/ and labels/, then delete it.

    Rows are split by model and UTC date; runs of frames whose schemas unify share a file.
    Raises OSError (e.g. disk full) leaving the segment in place, so it can be retried.
    """

    contents: SegmentContents = read_segment(segment_path)
    stem = segment_stem(segment_path)
    by_part: dict[tuple[str, ...], list[pa.Table]] = {}
    for kind, table in contents.tables:
        if table.num_rows == 0 or kind not in (KIND_PREDICTIONS, KIND_LABELS):
            continue
        # `model` and `date` are the partition (Hive style): they are in the path, not the file.
        predictions = kind == KIND_PREDICTIONS
        for model, date, part in _partitions(table, by_model=predictions):
            if predictions:
                key: tuple[str, ...] = (PREDICTIONS, f"{MODEL_KEY}={model}", f"{DATE_KEY}={date}")
                part = part.drop_columns(["model"])
            else:
                key = (LABELS, f"{DATE_KEY}={date}")
            by_part.setdefault(key, []).append(part)
    files = []
    rows = {PREDICTIONS: 0, LABELS: 0}
    dictionaries: dict[pa.Schema, list[str]] = {}  # one choice per schema, not per file
    jobs: list[tuple[str, str, pa.Schema, list[pa.Table]]] = []
    for part, tables in sorted(by_part.items()):
        directory = os.path.join(store, *part)
        strict = ("label",) if part[0] == LABELS else ()
        for i, (schema, members) in enumerate(_schema_groups(tables, strict)):
            jobs.append((part[0], os.path.join(directory, sealed_name(stem, i)), schema, members))
            if schema not in dictionaries:
                dictionaries[schema] = _dictionary_columns(members[0])

    def write(job: tuple[str, str, pa.Schema, list[pa.Table]]) -> int:
        _, path, schema, members = job
        return _write_parquet(path, schema, members, row_group_size, dictionaries[schema])

    total = sum(t.num_rows for job in jobs for t in job[3])
    if len(jobs) > 1 and total >= _PARALLEL_ROWS:
        # Many partitions (an import over many days): two files at a time. Parquet encoding
        # releases the GIL, so the second one uses a second core.
        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="predlog-sealer") as pool:
            counts = list(pool.map(write, jobs))
    else:
        counts = [write(job) for job in jobs]
    for (root, path, _, _), count in zip(jobs, counts):
        rows[root] += count
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
