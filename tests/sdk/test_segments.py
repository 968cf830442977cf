"""The write-ahead segment format and its sealing: torn tails, bit flips, idempotent sealing,
and recovery that respects a live writer's lock.

Everything here works on real files; the lock test holds the segment's ``flock`` in a real
child process.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from predlog import _layout, _sealing, _segment
from predlog._sealing import recover_orphans, seal_segment
from predlog._segment import HEADER, KIND_PREDICTIONS, SegmentWriter, encode_frame, read_segment

FRAME_HEADER = 16  # magic 4 | kind 1 | pad 3 | length 4 | crc 4
LENGTH_AT = 8  # offset of the length field inside a frame header
DAY = 86_400_000_000  # microseconds


def _table(start: int, n: int, *, model: str = "m", day: int = 0) -> pa.Table:
    """A small predictions-like table: ids, ts, model and a feature ``i`` = start..start+n-1."""
    base = 1_750_000_000_000_000 + day * DAY  # 2025-06-15 (UTC) + day days, in µs
    return pa.table(
        {
            "prediction_id": pa.array([f"id-{start + k:08d}" for k in range(n)], type=pa.string()),
            "ts": pa.array([base + start + k for k in range(n)], type=pa.timestamp("us", tz="UTC")),
            "model": pa.array([model] * n, type=pa.string()),
            "features": pa.StructArray.from_arrays(
                [pa.array(range(start, start + n), type=pa.int64()), pa.array([f"v{start + k}" for k in range(n)])],
                names=["i", "s"],
            ),
        }
    )


def _write_segment(path: Path, tables: list[pa.Table]) -> list[tuple[int, int]]:
    """Write ``tables`` as frames through SegmentWriter; return each frame's (start, end) offset."""
    w = SegmentWriter(str(path))
    spans = []
    try:
        for t in tables:
            frame = encode_frame(KIND_PREDICTIONS, t)
            start = w.bytes
            w.append(frame, t.num_rows)
            spans.append((start, start + len(frame)))
        w.sync()
    finally:
        w.close()
    assert path.stat().st_size == spans[-1][1]
    return spans


def _values(contents: _segment.SegmentContents) -> list[int]:
    return [v for _, t in contents.tables for v in t.column("features").combine_chunks().field("i").to_pylist()]


FRAMES = [_table(i * 10, 10) for i in range(6)]  # frame k holds i = 10k .. 10k+9


def test_intact_segment_reads_back_every_frame(tmp_path: Path) -> None:
    seg = tmp_path / "a.arrows"
    spans = _write_segment(seg, FRAMES)
    assert spans[0][0] == len(HEADER)
    c = read_segment(str(seg))
    assert (c.good_frames, c.corrupt_frames, c.torn_tail_bytes, c.valid_header) == (6, 0, 0, True)
    assert _values(c) == list(range(60))
    assert [t for _, t in c.tables] == FRAMES


def test_truncation_inside_last_frame_is_a_torn_tail(tmp_path: Path) -> None:
    seg = tmp_path / "a.arrows"
    spans = _write_segment(seg, FRAMES)
    data = seg.read_bytes()
    last_start, last_end = spans[-1]
    cut = tmp_path / "cut.arrows"
    offsets = range(last_start + 1, last_end)  # every offset strictly inside the last frame
    assert len(offsets) > 100
    for off in offsets:
        cut.write_bytes(data[:off])
        c = read_segment(str(cut))
        assert c.corrupt_frames == 0, off
        assert c.torn_tail_bytes == off - last_start, off
        assert c.good_frames == 5, off
        assert _values(c) == list(range(50)), off


def test_truncation_at_every_frame_boundary_loses_nothing_before_it(tmp_path: Path) -> None:
    seg = tmp_path / "a.arrows"
    spans = _write_segment(seg, FRAMES)
    data = seg.read_bytes()
    cut = tmp_path / "cut.arrows"
    for k, (start, _end) in enumerate(spans):
        for off in (start, start + 1, start + FRAME_HEADER - 1, start + FRAME_HEADER, start + FRAME_HEADER + 1):
            cut.write_bytes(data[:off])
            c = read_segment(str(cut))
            assert c.corrupt_frames == 0, (k, off)
            assert c.torn_tail_bytes == off - start, (k, off)
            assert _values(c) == list(range(10 * k)), (k, off)


def _flip(data: bytes, pos: int, bit: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


@pytest.mark.parametrize("k", range(6))
def test_bit_flip_in_payload_costs_only_that_frame(tmp_path: Path, k: int) -> None:
    seg = tmp_path / "a.arrows"
    spans = _write_segment(seg, FRAMES)
    data = seg.read_bytes()
    start, end = spans[k]
    payload = range(start + FRAME_HEADER, end)
    bad = tmp_path / "bad.arrows"
    expected = [i for i in range(60) if i // 10 != k]
    # First, last and a spread of payload bytes, every bit position across them.
    positions = sorted({payload[0], payload[-1], *payload[:: max(1, len(payload) // 23)]})
    for n, pos in enumerate(positions):
        bit = n % 8
        bad.write_bytes(_flip(data, pos, bit))
        c = read_segment(str(bad))
        assert c.corrupt_frames == 1, (pos, bit)
        assert c.torn_tail_bytes == 0, (pos, bit)
        assert c.good_frames == 5, (pos, bit)
        assert _values(c) == expected, (pos, bit)


@pytest.mark.parametrize("k", range(5))  # every frame but the last: see the next test
def test_bit_flip_in_length_field_costs_only_that_frame(tmp_path: Path, k: int) -> None:
    seg = tmp_path / "a.arrows"
    spans = _write_segment(seg, FRAMES)
    data = seg.read_bytes()
    start, _ = spans[k]
    bad = tmp_path / "bad.arrows"
    expected = [i for i in range(60) if i // 10 != k]
    for bit in range(32):
        bad.write_bytes(_flip(data, start + LENGTH_AT + bit // 8, bit % 8))
        c = read_segment(str(bad))
        assert c.corrupt_frames == 1, bit
        assert c.torn_tail_bytes == 0, bit
        assert _values(c) == expected, bit


def test_bit_flip_in_last_frames_length_field(tmp_path: Path) -> None:
    """The last frame's length pointing past the end of file looks exactly like a torn write
    (nothing follows to tell them apart), so it is reported as a torn tail; a length that
    still fits fails the CRC and is a corrupt frame. Either way the frame alone is lost."""
    seg = tmp_path / "a.arrows"
    spans = _write_segment(seg, FRAMES)
    data = seg.read_bytes()
    start, end = spans[-1]
    length = end - start - FRAME_HEADER
    bad = tmp_path / "bad.arrows"
    for bit in range(32):
        bad.write_bytes(_flip(data, start + LENGTH_AT + bit // 8, bit % 8))
        c = read_segment(str(bad))
        assert _values(c) == list(range(50)), bit
        if length ^ (1 << bit) > length:
            assert (c.corrupt_frames, c.torn_tail_bytes) == (0, end - start), bit
        else:
            assert (c.corrupt_frames, c.torn_tail_bytes) == (1, 0), bit


def test_bit_flip_in_crc_or_magic_costs_only_that_frame(tmp_path: Path) -> None:
    seg = tmp_path / "a.arrows"
    spans = _write_segment(seg, FRAMES)
    data = seg.read_bytes()
    bad = tmp_path / "bad.arrows"
    for k, (start, _) in enumerate(spans):
        for pos in (start, start + 3, start + 4, start + 12, start + 15):  # magic, kind, crc
            bad.write_bytes(_flip(data, pos, (pos * 5) % 8))
            c = read_segment(str(bad))
            assert c.corrupt_frames == 1, (k, pos)
            assert _values(c) == [i for i in range(60) if i // 10 != k], (k, pos)


# ---------------------------------------------------------------- sealing


def _parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


def _store_rows(store: Path) -> list[dict]:
    rows = []
    for p in _parquet_files(store / "predictions"):
        rows.extend(pq.read_table(p).to_pylist())
    return rows


def _snapshot(store: Path) -> dict[str, pa.Table]:
    return {str(p.relative_to(store)): pq.read_table(p) for p in _parquet_files(store)}


def _damaged_segment(store: Path) -> tuple[Path, list[int]]:
    """A segment in the store's WAL: two models, two dates, frame 2 damaged, a torn tail."""
    _sealing.ensure_store(str(store))
    seg = Path(_layout.wal_dir(str(store))) / _layout.segment_name()
    tables = [
        _table(0, 10),
        _table(10, 10, model="other"),
        _table(20, 10),  # damaged below
        _table(30, 10, day=1),
        _table(40, 10, model="other", day=1),
        _table(50, 10),  # torn below
    ]
    spans = _write_segment(seg, tables)
    data = seg.read_bytes()
    start, end = spans[2]
    data = _flip(data, (start + end) // 2, 3)
    data = data[: spans[5][0] + 40]
    seg.write_bytes(data)
    good = [i for i in range(50) if i // 10 != 2]
    return seg, good


def test_seal_writes_exactly_the_good_rows_and_deletes_the_segment(tmp_path: Path) -> None:
    store = tmp_path / "store"
    seg, good = _damaged_segment(store)
    result = seal_segment(str(store), str(seg))
    assert not seg.exists()
    assert result.corrupt_frames == 1
    assert result.torn_tail_bytes == 40
    assert result.prediction_rows == len(good)
    rows = _store_rows(store)
    assert sorted(r["features"]["i"] for r in rows) == good
    assert len({r["prediction_id"] for r in rows}) == len(good)
    # Split by model and date; every file sits in its own partition and holds only its rows.
    dirs = {p.parent.relative_to(store).as_posix() for p in _parquet_files(store)}
    assert dirs == {
        "predictions/model=m/date=2025-06-15",
        "predictions/model=other/date=2025-06-15",
        "predictions/model=m/date=2025-06-16",
        "predictions/model=other/date=2025-06-16",
    }
    for p in _parquet_files(store):
        t = pq.read_table(p)
        model = p.parent.parent.name.split("=", 1)[1]
        assert "model" not in t.column_names  # the partition says it (Hive style), the file does not
        assert model in {"m", "other"}
        assert p.name.startswith(seg.name[: -len(".arrows")])
    assert {Path(f) for f in result.files} == set(_parquet_files(store))
    # No temporary files are left behind.
    assert [p for p in store.rglob("*") if p.is_file() and p.suffix not in (".parquet", ".json")] == []


def test_sealing_the_same_segment_twice_is_idempotent(tmp_path: Path) -> None:
    store = tmp_path / "store"
    seg, good = _damaged_segment(store)
    copy = tmp_path / "copy.arrows"
    shutil.copyfile(seg, copy)
    first_result = seal_segment(str(store), str(seg))
    first = _snapshot(store)
    # A crash between the Parquet rename and the unlink: the segment is back, seal again.
    shutil.copyfile(copy, seg)
    second_result = seal_segment(str(store), str(seg))
    second = _snapshot(store)
    assert not seg.exists()
    assert sorted(first_result.files) == sorted(second_result.files)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].equals(second[name]), name
    rows = _store_rows(store)
    assert len(rows) == len(good)
    assert sorted(r["features"]["i"] for r in rows) == good


def test_recover_orphans_seals_a_dead_writers_segment_and_skips_nothing_else(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _sealing.ensure_store(str(store))
    seg = Path(_layout.wal_dir(str(store))) / _layout.segment_name()
    _write_segment(seg, FRAMES[:3])
    (Path(_layout.wal_dir(str(store))) / "notes.txt").write_text("not a segment")
    results = recover_orphans(str(store))
    assert len(results) == 1 and results[0].prediction_rows == 30
    assert not seg.exists()
    assert (Path(_layout.wal_dir(str(store))) / "notes.txt").exists()
    assert sorted(r["features"]["i"] for r in _store_rows(store)) == list(range(30))
    assert recover_orphans(str(store)) == []


_HOLDER = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from predlog._segment import SegmentWriter, encode_frame, KIND_PREDICTIONS

    path = sys.argv[1]
    w = SegmentWriter(path)  # holds the flock until this process dies
    t = pa.table({
        "prediction_id": pa.array(["a", "b"]),
        "ts": pa.array([1_750_000_000_000_000] * 2, type=pa.timestamp("us", tz="UTC")),
        "model": pa.array(["m", "m"]),
        "features": pa.array([{"i": 0}, {"i": 1}]),
    })
    w.append(encode_frame(KIND_PREDICTIONS, t), 2)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    time.sleep(600)
    """
)


@pytest.mark.slow
def test_recover_orphans_skips_a_segment_locked_by_a_live_process(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _sealing.ensure_store(str(store))
    seg = Path(_layout.wal_dir(str(store))) / _layout.segment_name()
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    child = subprocess.Popen([sys.executable, str(script), str(seg)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        assert recover_orphans(str(store)) == []
        assert seg.exists()
        assert _parquet_files(store) == []
        assert read_segment(str(seg)).rows == 2  # readable while live, but not sealed
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    results = recover_orphans(str(store))
    assert len(results) == 1 and results[0].prediction_rows == 2 and results[0].torn_tail_bytes == 0
    assert not seg.exists()
    assert sorted(r["features"]["i"] for r in _store_rows(store)) == [0, 1]


def test_segment_writer_refuses_a_segment_locked_elsewhere(tmp_path: Path) -> None:
    """A second writer never opens an existing segment (O_EXCL): each segment has one writer."""
    seg = tmp_path / "a.arrows"
    w = SegmentWriter(str(seg))
    try:
        with pytest.raises(FileExistsError):
            SegmentWriter(str(seg))
    finally:
        w.close()
    assert seg.read_bytes() == HEADER


_RECOVERER = textwrap.dedent(
    """
    import sys
    from predlog._sealing import recover_orphans

    store = sys.argv[1]
    recover_orphans(store)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    while True:  # until killed: another process recovering the same store, as fast as it can
        recover_orphans(store)
    """
)


@pytest.mark.slow
def test_a_new_segment_is_never_taken_by_a_concurrent_recovery(tmp_path: Path) -> None:
    """Another process recovers the store in a tight loop while this one opens segments. A
    segment must be locked before recovery can see it: otherwise recovery seals (deletes) it
    between its creation and its lock, and the writer fails or appends to a deleted file."""
    store = tmp_path / "store"
    _sealing.ensure_store(str(store))
    wal = Path(_layout.wal_dir(str(store)))
    script = tmp_path / "recoverer.py"
    script.write_text(_RECOVERER)
    child = subprocess.Popen([sys.executable, str(script), str(store)], stdout=subprocess.PIPE, text=True)
    filler = encode_frame(KIND_PREDICTIONS, _table(-1, 1))
    n = 0
    kept = []
    failures = []
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            seg = wal / _layout.segment_name()
            try:
                w = SegmentWriter(str(seg))
            except OSError as exc:
                failures.append(f"segment {n}: {exc!r}")
                n += 1
                continue
            try:
                w.append(encode_frame(KIND_PREDICTIONS, _table(n, 1)) if n % 100 == 0 else filler, 1)
                if not seg.exists():
                    failures.append(f"segment {n}: deleted while its writer had it open")
                elif n % 100 == 0:
                    kept.append(n)  # closed below: an orphan for the other process to seal
                else:
                    seg.unlink()  # keep the directory small so the other loop runs fast
            finally:
                w.close()
            n += 1
    finally:
        child.kill()
        child.wait()
    recover_orphans(str(store))
    assert failures == []
    assert n > 1000, n
    assert sorted(r["features"]["i"] for r in _store_rows(store)) == kept
    assert list(wal.iterdir()) == []
