"""Write-ahead segments: CRC-framed Arrow IPC streams in ``<store>/_wal/``.

A segment is an 8-byte header followed by frames. Each frame is self-contained, so a batch
whose schema differs from the previous one (a new feature) needs no coordination, and a
damaged frame costs only itself::

    header  b"PLWAL\\x00\\x01\\n"
    frame   b"PLFR" | kind u8 | 3 zero bytes | length u32 LE | crc32 u32 LE | payload
    payload one Arrow IPC stream: schema, one record batch, end-of-stream

Reading scans frame by frame. A frame whose header or CRC is wrong is counted as corrupt
and the scan resumes at the next frame marker; an incomplete last frame (the process died
mid-write) is a torn tail and is cut off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import struct
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "KIND_LABELS",
    "KIND_PREDICTIONS",
    "SegmentContents",
    "SegmentWriter",
    "encode_frame",
    "encode_frame_parts",
    "read_segment",
]

HEADER = b"PLWAL\x00\x01\n"
FRAME_MAGIC = b"PLFR"
_FRAME = struct.Struct("<4sB3xII")  # magic, kind, pad, length, crc32
KIND_PREDICTIONS = 1
KIND_LABELS = 2
_KINDS = (KIND_PREDICTIONS, KIND_LABELS)


def _write_stream(sink: Any, table: pa.Table | pa.RecordBatch) -> None:
    """A frame's payload, written to ``sink``: one Arrow IPC stream (schema, one record batch,
    end-of-stream)."""
    import pyarrow as pa

    batch = table.combine_chunks().to_batches()[0] if isinstance(table, pa.Table) and table.num_rows else table
    with pa.ipc.new_stream(sink, table.schema) as writer:
        if isinstance(batch, pa.Table):
            writer.write_table(batch)
        else:
            writer.write_batch(batch)


def encode_frame_parts(kind: int, table: pa.Table | pa.RecordBatch) -> tuple[bytes, pa.Buffer]:
    """One frame holding ``table`` as a single record batch: (header, payload).

    The payload stays an Arrow buffer (no copy into Python bytes); the CRC reads it in place.
    """
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    _write_stream(sink, table)
    payload = sink.getvalue()
    return _FRAME.pack(FRAME_MAGIC, kind, payload.size, zlib.crc32(payload)), payload


class _Checksum:
    """A write-only file keeping the size and CRC-32 of what goes through it, and writing it
    on to ``out`` (a callable) if given. Arrow hands it its own buffers: nothing is copied."""

    closed = False

    def __init__(self, out: Any = None) -> None:
        self.out = out
        self.crc = 0
        self.size = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        if self.out is not None:
            self.out(data)
        else:
            self.crc = zlib.crc32(data, self.crc)
        self.size += n
        return n

    def flush(self) -> None:
        """Nothing is buffered here (a file-like object must have it)."""

    def close(self) -> None:
        """Nothing to release (a file-like object must have it)."""


def encode_frame(kind: int, table: pa.Table | pa.RecordBatch) -> bytes:
    """One frame holding ``table``, as bytes."""
    header, payload = encode_frame_parts(kind, table)
    data: bytes = payload.to_pybytes()
    return header + data


class SegmentWriter:
    """Appends frames to one segment file with plain ``os.write`` (no user-space buffer).

    A process killed at any point leaves a readable prefix: every frame written before the
    kill, and at most one torn frame at the end. The file stays locked (``flock``) while
    open, so recovery in other processes knows it is live.
    """

    def __init__(self, path: str) -> None:
        import fcntl

        self.path = path
        # Created under a name recovery ignores, and given its real name only once locked:
        # an unlocked *.arrows file, even for an instant, would be sealed (deleted) by another
        # process's recovery, and this writer would then append to an unlinked file.
        tmp = f"{path}.new"
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._write_all(HEADER)
            os.link(tmp, path)  # never replaces an existing segment (FileExistsError)
        except BaseException:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        self.bytes = len(HEADER)
        self.rows = 0

    def _write_all(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        return size

    def append(self, frame: bytes | tuple[bytes, Any], rows: int) -> None:
        """Write one frame (bytes, or the parts from ``encode_frame_parts``).

        On error the segment may end in a torn frame, which readers cut.
        """
        parts = (frame,) if isinstance(frame, bytes) else frame
        for part in parts:
            self.bytes += self._write_all(part)
        self.rows += rows

    def append_table(self, kind: int, table: pa.Table | pa.RecordBatch) -> None:
        """Write ``table`` as one frame, straight from Arrow's buffers.

        A first pass over the IPC stream takes its size and CRC without copying it, then the
        header and the stream are written to the file: the payload is never copied in memory
        (for a table of tens of MB that copy, and the fresh pages it takes, cost more than the
        write). On error the segment may end in a torn frame, which readers cut.
        """
        import pyarrow as pa

        check = _Checksum()
        _write_stream(pa.PythonFile(check, mode="w"), table)
        self.bytes += self._write_all(_FRAME.pack(FRAME_MAGIC, kind, check.size, check.crc))
        out = _Checksum(self._write_all)
        _write_stream(pa.PythonFile(out, mode="w"), table)
        self.bytes += out.size
        self.rows += table.num_rows
        if out.size != check.size:  # the stream came out different the second time: never seen
            raise OSError(f"predlog: frame of {check.size} bytes written as {out.size}")

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def abandon(self) -> None:
        """Close the descriptor without touching the file (a forked child's inherited copy)."""
        self.close()


@dataclasses.dataclass
class SegmentContents:
    """What a segment holds: good tables per kind, in write order, and what was lost."""

    tables: list[tuple[int, pa.Table]]
    good_frames: int = 0
    corrupt_frames: int = 0
    torn_tail_bytes: int = 0
    valid_header: bool = True

    @property
    def rows(self) -> int:
        return sum(t.num_rows for _, t in self.tables)


def read_segment(path: str) -> SegmentContents:
    """Read every intact frame of a segment; count corrupt frames and a torn tail."""
    import pyarrow as pa

    out = SegmentContents(tables=[])
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            out.valid_header = False
            return out
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    # Payloads are read in place from Arrow's own map of the file (no copy: the tables keep
    # the mapping alive); the Python map serves the scan for frame markers.
    mapped = pa.memory_map(path, "r")
    whole = mapped.read_buffer()
    mapped.close()
    try:
        pos = len(HEADER)
        if data[: len(HEADER)] != HEADER:
            out.valid_header = False
            pos = 0
        n = min(len(data), whole.size)  # a live writer may have appended between the two maps
        while pos < n:
            if n - pos < _FRAME.size:
                if data.find(FRAME_MAGIC, pos + 1) < 0:
                    out.torn_tail_bytes = n - pos
                    break
            magic, kind, length, crc = _FRAME.unpack_from(data, pos) if n - pos >= _FRAME.size else (b"", 0, 0, 0)
            if magic == FRAME_MAGIC and kind in _KINDS:
                end = pos + _FRAME.size + length
                if end > n:
                    # Either the last write was cut short or the length field is damaged.
                    nxt = data.find(FRAME_MAGIC, pos + 1)
                    if nxt < 0:
                        out.torn_tail_bytes = n - pos
                        break
                    out.corrupt_frames += 1
                    pos = nxt
                    continue
                payload = whole.slice(pos + _FRAME.size, length)
                if zlib.crc32(payload) == crc:
                    try:
                        table = pa.ipc.open_stream(payload).read_all()
                    except (pa.ArrowException, OSError, ValueError):
                        out.corrupt_frames += 1
                    else:
                        out.tables.append((kind, table))
                        out.good_frames += 1
                    pos = end
                    continue
            # Bad header or checksum: count it and resynchronise on the next frame marker.
            out.corrupt_frames += 1
            nxt = data.find(FRAME_MAGIC, pos + 1)
            if nxt < 0:
                break
            pos = nxt
    finally:
        data.close()
    return out
