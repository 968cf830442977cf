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

import dataclasses
import mmap
import os
import struct
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["KIND_LABELS", "KIND_PREDICTIONS", "SegmentContents", "SegmentWriter", "encode_frame", "read_segment"]

HEADER = b"PLWAL\x00\x01\n"
FRAME_MAGIC = b"PLFR"
_FRAME = struct.Struct("<4sB3xII")  # magic, kind, pad, length, crc32
KIND_PREDICTIONS = 1
KIND_LABELS = 2
_KINDS = (KIND_PREDICTIONS, KIND_LABELS)


def encode_frame(kind: int, table: pa.Table | pa.RecordBatch) -> bytes:
    """One frame holding ``table`` as a single record batch."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    batch = table.combine_chunks().to_batches()[0] if isinstance(table, pa.Table) and table.num_rows else table
    with pa.ipc.new_stream(sink, table.schema) as writer:
        if isinstance(batch, pa.Table):
            writer.write_table(batch)
        else:
            writer.write_batch(batch)
    payload: bytes = sink.getvalue().to_pybytes()
    return _FRAME.pack(FRAME_MAGIC, kind, len(payload), zlib.crc32(payload)) + payload


class SegmentWriter:
    """Appends frames to one segment file with plain ``os.write`` (no user-space buffer).

    A process killed at any point leaves a readable prefix: every frame written before the
    kill, and at most one torn frame at the end. The file stays locked (``flock``) while
    open, so recovery in other processes knows it is live.
    """

    def __init__(self, path: str) -> None:
        import fcntl

        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._write_all(HEADER)
        except BaseException:
            os.close(self.fd)
            raise
        self.bytes = len(HEADER)
        self.rows = 0

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def append(self, frame: bytes, rows: int) -> None:
        """Write one encoded frame. On error the segment may hold a torn tail, which readers cut."""
        self._write_all(frame)
        self.bytes += len(frame)
        self.rows += rows

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
    try:
        pos = len(HEADER)
        if data[: len(HEADER)] != HEADER:
            out.valid_header = False
            pos = 0
        n = len(data)
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
                payload = data[pos + _FRAME.size : end]
                if zlib.crc32(payload) == crc:
                    try:
                        table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
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
