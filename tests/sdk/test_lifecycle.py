"""Recorder life cycle: configure, shutdown and restart, re-entrancy, sinks, fork."""

from __future__ import annotations

import os
import time
from typing import Any

import duckdb
import pytest

import predlog
from predlog.testing import InMemorySink


def _rows(store: Any) -> int:
    return duckdb.sql(f"select count(*) from read_parquet('{store}/predictions/**/*.parquet')").fetchall()[0][0]


def _balanced(rec: predlog.Recorder) -> None:
    s = rec.stats()
    assert s["captured"] == s["written"] + s["dropped_total"], s


def test_configure_while_the_writer_is_behind_loses_nothing(tmp_path):
    def slow(row: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.05)
        return row

    rec = predlog.Recorder(store=str(tmp_path), processors=[slow], shutdown_timeout_s=0.2)
    predict = rec.capture(lambda x: 1)
    try:
        for i in range(40):  # about 2 s of writer work, ten times the shutdown timeout
            predict({"a": i})
        old_writer = rec._writer
        rec.configure(store=str(tmp_path), shutdown_timeout_s=5.0)
        predict({"a": 99})
        assert rec.flush(timeout_s=30)
        # The old writer finishes its queue into the old sink on its own; wait for it.
        deadline = time.monotonic() + 30
        while _rows(tmp_path) < 41 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _rows(tmp_path) == 41
        # Other recorders of the process may have writers too: this one has one, the new.
        assert old_writer is not None and old_writer is not rec._writer
        old_writer.thread.join(timeout=10)
        assert not old_writer.alive()
        _balanced(rec)
    finally:
        rec.shutdown()


def test_calls_after_shutdown_start_the_writer_again(tmp_path):
    rec = predlog.Recorder(store=str(tmp_path), flush_interval_s=0.1)
    predict = rec.capture(lambda x: 1)
    try:
        predict({"a": 0})
        assert rec.shutdown(timeout_s=10)
        for i in range(10):
            predict({"a": i})
        deadline = time.monotonic() + 10  # no flush(): the writer alone must pick them up
        while rec.stats()["written"] < 11 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rec.stats()["written"] == 11
    finally:
        rec.shutdown()


def test_flush_reports_rows_in_parquet_only_when_they_are(tmp_path):
    rec = predlog.Recorder(store=str(tmp_path), model="m")
    predict = rec.capture(lambda x: 1)
    try:
        for i in range(50_000):
            predict({"a": i})
        assert rec.flush(timeout_s=60)
        assert rec.stats()["sealed_rows"] == _rows(tmp_path) == 50_000
    finally:
        rec.shutdown()


def test_a_batch_whose_prediction_selector_fails_keeps_its_ids(tmp_path):
    rec = predlog.Recorder(store=str(tmp_path), model="m")
    predict = rec.capture(prediction=lambda out: out["label"])(lambda rows: [r["x"] * 2 for r in rows])
    try:
        predict([{"x": 1}, {"x": 2}, {"x": 3}])
        ids = predlog.last_prediction_ids()
        assert rec.flush(timeout_s=10)
        got = duckdb.sql(
            f"select prediction_id, batch_index, prediction, capture_flags from read_parquet('{tmp_path}/predictions/**/*.parquet') "
            "order by batch_index"
        ).fetchall()
        assert [r[0] for r in got] == ids and len(set(ids)) == 3
        assert [r[1] for r in got] == [0, 1, 2]
        assert [r[2] for r in got] == [2, 4, 6]  # the raw output, flagged
        assert all(r[3] == ["prediction_error:TypeError"] for r in got)
    finally:
        rec.shutdown()


def test_calls_made_by_the_writer_itself_are_not_recorded(tmp_path):
    rec = predlog.Recorder(store=str(tmp_path), model="m")
    helper = rec.capture(lambda x: x)

    def processor(row: dict[str, Any]) -> dict[str, Any]:
        helper({"inner": 1})  # runs in the writer thread
        return row

    rec2 = predlog.Recorder(store=str(tmp_path / "other"), model="m", processors=[processor])
    predict = rec2.capture(lambda x: 1)
    try:
        predict({"a": 1})
        assert rec2.flush(timeout_s=10) and rec.flush(timeout_s=10)
        assert rec2.stats()["captured"] == 1
        assert rec.stats()["captured"] == 0
    finally:
        rec.shutdown()
        rec2.shutdown()


class _CountingSink(InMemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.shutdowns = 0

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        self.flushes += 1
        return True

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_user_sinks_are_flushed_and_survive_configure(tmp_path):
    sink = _CountingSink()
    rec = predlog.Recorder(store=str(tmp_path), model="m", sinks=[sink])
    predict = rec.capture(lambda x: 1)
    try:
        predict({"a": 1})
        assert rec.flush(timeout_s=10)
        rec.configure(store=str(tmp_path), model="m")
        predict({"a": 2})
        assert rec.flush(timeout_s=10)
        assert sink.shutdowns == 0 and sink.flushes >= 2
        assert [r["features"]["a"] for r in sink.rows()] == [1, 2]
    finally:
        rec.shutdown()
    assert sink.shutdowns == 1


@pytest.mark.slow
def test_forked_workers_sample_independently(tmp_path):
    rec = predlog.Recorder(store=str(tmp_path), model="m")
    outs = []
    for _ in range(3):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report 32 random draws of the recorder's sampler
            os.close(r)
            os.write(w, "".join("1" if rec._queue.random() < 0.5 else "0" for _ in range(32)).encode())
            os._exit(0)
        os.close(w)
        outs.append(os.read(r, 64))
        os.close(r)
        os.waitpid(pid, 0)
    assert len(set(outs)) == 3


def test_queued_labels_are_not_counted_as_captured_calls(tmp_path):
    rec = predlog.Recorder(store=str(tmp_path), model="m", flush_interval_s=60)
    predict = rec.capture(lambda x: 1)
    try:
        predict({"a": 1})
        assert rec.flush(timeout_s=10)
        rec._queue.wake_at = 10**9  # keep the writer asleep: everything below stays queued
        predict({"a": 2})
        for i in range(5):
            rec.log_label(i, request_id=f"r{i}")
        assert rec.stats()["captured"] == 2
        assert rec.flush(timeout_s=10)
        s = rec.stats()
        assert (s["captured"], s["written"], s["labels"]) == (2, 2, 5)
    finally:
        rec.shutdown()
