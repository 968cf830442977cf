"""Prediction ids: the vectorised writer path and the on-demand path agree, and are UUIDv7."""

from __future__ import annotations

import uuid

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from predlog import _ids


def _vector(ts: list[int], seq: list[int], row: list[int] | None) -> list[str]:
    data, n = _ids.uuid7_array(
        np.asarray(ts, dtype=np.int64),
        np.asarray(seq, dtype=np.uint64),
        None if row is None else np.asarray(row, dtype=np.uint64),
    )
    return [data[i * 36 : (i + 1) * 36].decode() for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(
    ts=st.integers(min_value=0, max_value=2**63 - 1),  # time_ns() fits int64 until 2262
    seq=st.integers(min_value=0, max_value=2**62),
    row=st.one_of(st.none(), st.integers(min_value=0, max_value=2**30)),
)
def test_vectorised_ids_equal_scalar_ids(ts: int, seq: int, row: int | None) -> None:
    scalar = _ids.uuid7_str(ts, seq, row)
    assert _vector([ts], [seq], None if row is None else [row]) == [scalar]
    u = uuid.UUID(scalar)
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert int(scalar.replace("-", "")[:12], 16) == (ts // 1_000_000) & 0xFFFFFFFFFFFF


def test_ids_unique_across_calls_rows_and_spaces() -> None:
    ts = 1_795_000_000_000_000_000
    singles = {_ids.uuid7_str(ts, s) for s in range(5000)}
    batch = set(_vector([ts] * 5000, [7] * 5000, list(range(5000))))
    other_batch = set(_vector([ts] * 5000, [8] * 5000, list(range(5000))))
    assert len(singles) == len(batch) == len(other_batch) == 5000
    assert not (singles & batch) and not (batch & other_batch)


def test_ids_sort_by_time_then_call_within_a_process() -> None:
    ids = [_ids.uuid7_str(1_795_000_000_000_000_000 + i * 1_000_000, i) for i in range(100)]
    assert ids == sorted(ids)


def test_reseed_changes_the_process_bits() -> None:
    before = _ids.uuid7_str(1, 1)
    _ids.reseed()
    assert _ids.uuid7_str(1, 1) != before
