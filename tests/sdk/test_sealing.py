"""Sealing write-ahead segments into Parquet: counts, row groups, date partitions."""

from __future__ import annotations

import datetime as dt
import glob
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import predlog
from predlog import _sinks
from predlog._sealing import seal_segment
from predlog._segment import KIND_PREDICTIONS, SegmentWriter, encode_frame


def test_recovery_never_takes_a_segment_waiting_for_our_own_sealer(tmp_path, monkeypatch):
    # Recovery runs very often here; closed segments still hold their lock until sealed.
    monkeypatch.setattr(_sinks.ParquetSink, "_RECOVER_EVERY_S", 0.02)
    rec = predlog.Recorder(store=str(tmp_path), model="m", segment_max_rows=2000)
    predict = rec.capture(lambda x: 0.5)
    try:
        for i in range(60_000):
            predict({"a": i})
        assert rec.flush(timeout_s=60)
        s = rec.stats()
        assert s["rows_written"] == s["sealed_rows"] == 60_000
        assert s["recovered_segments"] == 0
        n = duckdb.sql(f"select count(distinct features.a) from read_parquet('{tmp_path}/predictions/**/*.parquet')")
        assert n.fetchall()[0][0] == 60_000
        assert os.listdir(tmp_path / "_wal") == []
    finally:
        rec.shutdown()


def test_rows_are_split_by_utc_date_and_regrouped_into_full_row_groups(tmp_path):
    def table(day: int, start: int, n: int) -> pa.Table:
        ts = [dt.datetime(2026, 3, day, 23, 59, tzinfo=dt.UTC)] * n
        return pa.table(
            {
                "ts": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
                "model": pa.array(["m"] * n),
                "i": pa.array(range(start, start + n), type=pa.int64()),
            }
        )

    os.makedirs(tmp_path / "_wal")
    path = str(tmp_path / "_wal" / "h-1-abc.arrows")
    w = SegmentWriter(path)
    for k in range(10):  # ten small frames on one day, then two frames on the next
        w.append(encode_frame(KIND_PREDICTIONS, table(1, k * 300, 300)), 300)
    w.append(encode_frame(KIND_PREDICTIONS, table(2, 3000, 50)), 50)
    w.close()
    result = seal_segment(str(tmp_path), path, row_group_size=1000)
    assert result.prediction_rows == 3050 and not os.path.exists(path)
    (day1,) = glob.glob(str(tmp_path / "predictions/model=m/date=2026-03-01/*.parquet"))
    (day2,) = glob.glob(str(tmp_path / "predictions/model=m/date=2026-03-02/*.parquet"))
    meta = pq.ParquetFile(day1).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 1000]
    assert pq.read_table(day1).column("i").to_pylist() == list(range(3000))
    assert pq.read_table(day2).column("i").to_pylist() == list(range(3000, 3050))
    assert oct(os.stat(day1).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(day1)).st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("rows", [1, 5000])
def test_flush_makes_every_row_visible_in_parquet(tmp_path, rows):
    rec = predlog.Recorder(store=str(tmp_path), model="m")
    predict = rec.capture(lambda x: x["a"] * 2)
    try:
        for i in range(rows):
            predict({"a": i})
        assert rec.flush(timeout_s=30)
        got = duckdb.sql(
            f"select sum(prediction), count(*) from read_parquet('{tmp_path}/predictions/**/*.parquet')"
        ).fetchall()[0]
        assert got == (rows * (rows - 1), rows)
    finally:
        rec.shutdown()


def test_recovery_removes_stale_half_created_segments_only(tmp_path):
    from predlog._sealing import recover_orphans

    wal = tmp_path / "_wal"
    os.makedirs(wal)
    stale, young = wal / "h-1-a.arrows.new", wal / "h-2-b.arrows.new"
    for p in (stale, young):
        p.write_bytes(b"PLWAL\x00\x01\n")
    old = os.stat(stale).st_mtime - 3600
    os.utime(stale, (old, old))
    recover_orphans(str(tmp_path))
    assert not stale.exists() and young.exists()
