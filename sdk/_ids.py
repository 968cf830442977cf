"""Prediction ids: UUIDv7 (RFC 9562) built from the call's clock reading and a counter.

The request thread only takes the next counter value; the id text is made later, by the
writer for whole batches at once (vectorised) or on demand by ``last_prediction_id()``.
Both paths use the same bit layout, so they agree:

    48 bits  unix time, milliseconds
     4 bits  version (7)
    12 bits  rand_a  = high 12 bits of a per-process random number
     2 bits  variant (0b10)
    62 bits  rand_b  = low 20 bits of that number | space (1 bit) | counter (41 bits)

``space`` 0 holds single calls (counter = call number); space 1 holds the rows of batch
calls (counter = call number mod 2**17, then row index mod 2**24), and the rows of imported
history (``log_frame``: one counter value per chunk of at most 2**24 rows, then the row's
index in its chunk; the time is the row's own ``ts``). Ids are unique within a process and
millisecond by construction and across processes by the 32 random bits, which are drawn
again in a forked child.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["next_seq", "reseed", "uuid7_str", "uuid7_array"]

_COUNTER_BITS = 41
_COUNTER_MASK = (1 << _COUNTER_BITS) - 1
_BATCH_ROW_BITS = 24
_BATCH_SEQ_MASK = (1 << (_COUNTER_BITS - _BATCH_ROW_BITS)) - 1
_BATCH_ROW_MASK = (1 << _BATCH_ROW_BITS) - 1

_proc_rand = int.from_bytes(os.urandom(4), "big")
_counter = itertools.count()
# Taking a counter value is one C call, atomic under the GIL.
next_seq = _counter.__next__


def reseed() -> None:
    """Draw new process randomness (call in a forked child)."""
    global _proc_rand
    _proc_rand = int.from_bytes(os.urandom(4), "big")


def _parts(ts_ns: int, seq: int, row: int | None) -> tuple[int, int]:
    if row is None:
        counter = seq & _COUNTER_MASK
        space = 0
    else:
        counter = ((seq & _BATCH_SEQ_MASK) << _BATCH_ROW_BITS) | (row & _BATCH_ROW_MASK)
        space = 1
    hi = ((ts_ns // 1_000_000) & 0xFFFFFFFFFFFF) << 16 | 0x7000 | (_proc_rand >> 20)
    lo = 0x8000000000000000 | (_proc_rand & 0xFFFFF) << 42 | space << 41 | counter
    return hi, lo


def uuid7_str(ts_ns: int, seq: int, row: int | None = None) -> str:
    """The id of one call (``row=None``) or of one row of a batch call."""
    hi, lo = _parts(ts_ns, seq, row)
    h = f"{hi:016x}{lo:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_HEX_WORDS: np.ndarray | None = None


def uuid7_array(
    ts_ns: np.ndarray, seq: np.ndarray, row: np.ndarray | None, *, per_ms: int = 1_000_000
) -> tuple[bytes, int]:
    """Ids for many rows at once, as the data buffer of a fixed-width (36 byte) string column.

    ``row`` is None for single calls, else the row index within its batch call (or within a
    chunk of imported rows, which take the batch layout). ``per_ms`` is how many units of
    ``ts_ns`` make a millisecond: 1000 for microseconds, whose range (unlike nanoseconds')
    reaches past the year 2262. Returns (data, count); the caller builds the Arrow string array.
    """
    import numpy as np

    global _HEX_WORDS
    if _HEX_WORDS is None:
        # The 4 hex digits of every 16-bit value as one 4-byte word: one word gathered per 2
        # bytes of id. Built by numpy, not a Python loop: the writer's first batch must not
        # hold the GIL for long.
        digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
        table = digits[(np.arange(65536)[:, None] >> np.array([12, 8, 4, 0])) & 0xF]
        _HEX_WORDS = np.ascontiguousarray(table).view(np.uint32).reshape(65536)
    n = len(ts_ns)
    ts_ms = (ts_ns.astype(np.int64) // per_ms).astype(np.uint64) & np.uint64(0xFFFFFFFFFFFF)
    seq = seq.astype(np.uint64)
    if row is None:
        counter = seq & np.uint64(_COUNTER_MASK)
        space = np.uint64(0)
    else:
        counter = ((seq & np.uint64(_BATCH_SEQ_MASK)) << np.uint64(_BATCH_ROW_BITS)) | (
            row.astype(np.uint64) & np.uint64(_BATCH_ROW_MASK)
        )
        space = np.uint64(1 << 41)
    hi = (ts_ms << np.uint64(16)) | np.uint64(0x7000 | (_proc_rand >> 20))
    lo = np.uint64(0x8000000000000000 | (_proc_rand & 0xFFFFF) << 42) | space | counter
    raw = np.empty((n, 2), dtype=">u8")
    raw[:, 0] = hi
    raw[:, 1] = lo
    hexed = _HEX_WORDS[raw.view(">u2").reshape(n, 8)].view(np.uint8).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, 0:8] = hexed[:, 0:8]
    out[:, 9:13] = hexed[:, 8:12]
    out[:, 14:18] = hexed[:, 12:16]
    out[:, 19:23] = hexed[:, 16:20]
    out[:, 24:36] = hexed[:, 20:32]
    return out.tobytes(), n
