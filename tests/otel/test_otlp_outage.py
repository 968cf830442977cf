"""The collector goes away (stopped, or hung with SIGSTOP): serving and Parquet do not notice.

predict() never waits for the exporter, every row still reaches Parquet, the spans that
could not be delivered are counted, and export resumes when the collector is back.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import predlog

from .conftest import OtlpReceiver
from .test_spans import flushed, is_predict, otlp_env, rows

EXPORT_TIMEOUT_S = 1.0


class GcPauses:
    """Intervals during which the cyclic garbage collector ran (it stops every thread)."""

    def __init__(self) -> None:
        self.intervals: list[tuple[int, int]] = []
        self._start: int | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
        elif self._start is not None:
            self.intervals.append((self._start, time.perf_counter_ns()))
            self._start = None

    def overlaps(self, a: int, b: int) -> bool:
        return any(s < b and e > a for s, e in self.intervals)


@pytest.fixture
def gc_pauses() -> Iterator[GcPauses]:
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(pauses)


def run_load(predict: Callable[[dict[str, int]], Any], seconds: float, first: int = 0) -> list[tuple[int, int]]:
    """Call predict for ``seconds`` (a short sleep between calls, as between requests);
    the (start, end) perf-counter times of every call."""
    times = []
    end = time.monotonic() + seconds
    i = first
    while time.monotonic() < end:
        a = time.perf_counter_ns()
        predict({"i": i})
        times.append((a, time.perf_counter_ns()))
        i += 1
        time.sleep(0.0005)
    return times


def latency_report(
    up: list[tuple[int, int]], down: list[tuple[int, int]], gc_pauses: GcPauses
) -> tuple[float, float, float, float, str]:
    """Median while up, median while down, max while down (all), max while down outside GC, in seconds."""
    lat_up = [(b - a) / 1e9 for a, b in up]
    lat_down = [(b - a) / 1e9 for a, b in down]
    clean = [(b - a) / 1e9 for a, b in down if not gc_pauses.overlaps(a, b)]
    gcs = sorted(((e - s) / 1e6 for s, e in gc_pauses.intervals), reverse=True)[:3]
    text = (
        f"calls up={len(up)} down={len(down)}; median up={statistics.median(lat_up) * 1e6:.1f}us "
        f"down={statistics.median(lat_down) * 1e6:.1f}us; max down={max(lat_down) * 1e3:.2f}ms, "
        f"outside GC={max(clean) * 1e3:.2f}ms; longest GC passes (ms)={[round(g, 1) for g in gcs]}"
    )
    return statistics.median(lat_up), statistics.median(lat_down), max(lat_down), max(clean), text


def assert_never_blocked(up: list[tuple[int, int]], down: list[tuple[int, int]], gc_pauses: GcPauses) -> None:
    med_up, med_down, worst, worst_clean, text = latency_report(up, down, gc_pauses)
    # A call that waited for an export would take the exporter's timeout (1 s) or longer.
    # A collection of the cyclic GC stops every thread whatever predlog does, so the tight
    # bound is on the calls it did not overlap.
    assert worst < EXPORT_TIMEOUT_S / 2, text
    assert worst_clean < 0.05, text
    assert med_down <= 5 * med_up + 50e-6, text


def outage_env(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver, transport: str) -> None:
    otlp_env(monkeypatch, receiver, transport)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", str(int(EXPORT_TIMEOUT_S)))  # seconds: short retries
    # Export every 100 ms, and a small queue: while an export hangs, the queue overflows.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "512")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512")


def assert_spans_accounted(rec: predlog.Recorder, receiver: OtlpReceiver) -> dict[str, Any]:
    """Every span made was received or counted as lost (after a flush)."""
    s = rec.stats()
    dropped = s["spans_dropped"]
    received = len(receiver.spans(predicate=is_predict))
    assert dropped["rate"] == 0 and dropped["error"] == 0, s
    assert s["spans"] == received + dropped["export_failed"] + dropped["queue_full"], (received, s)
    return s


def wait_for_new_spans(
    rec: predlog.Recorder, predict: Callable[[dict[str, int]], Any], receiver: OtlpReceiver
) -> list[str]:
    """Call predict and flush until one of the new calls' spans arrives (the exporter may
    need an attempt or two to reconnect); the new calls' prediction ids."""
    ids: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        predict({"i": -1 - len(ids)})
        pid = predlog.last_prediction_id()
        assert pid is not None
        ids.append(pid)
        flushed(rec)
        wanted = set(ids)
        if receiver.spans(predicate=lambda s: s["attributes"].get("predlog.prediction_id") in wanted):
            break
    return ids


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_collector_down_predict_never_blocks_and_losses_are_counted(
    transport: str,
    otlp_receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    make_rec: Any,
    tmp_path: Path,
    gc_pauses: GcPauses,
) -> None:
    outage_env(monkeypatch, otlp_receiver, transport)
    rec = make_rec(otlp=True, metrics=False)
    predict = rec.capture(lambda x: x["i"] % 3)

    up = run_load(predict, 0.3)
    flushed(rec)
    assert len(otlp_receiver.spans(min_count=len(up), predicate=is_predict)) == len(up)
    assert sum(rec.stats()["spans_dropped"].values()) == 0

    otlp_receiver.stop()  # at a quiet moment: nothing is in flight
    down = run_load(predict, 2.0, first=len(up))
    assert_never_blocked(up, down, gc_pauses)
    assert len(otlp_receiver.spans(predicate=is_predict)) == len(up)

    started = time.monotonic()
    assert rec.flush(timeout_s=15) is True
    flush_s = time.monotonic() - started
    calls = len(up) + len(down)
    assert len(rows(tmp_path / "store")) == calls, "every row is in Parquet"
    s = assert_spans_accounted(rec, otlp_receiver)
    assert s["captured"] == s["written"] == s["spans"] == calls
    lost = s["spans_dropped"]["export_failed"] + s["spans_dropped"]["queue_full"]
    assert lost > 0, s
    # The spans made while the collector was down are the lost ones, no more.
    assert lost == len(down), (s, flush_s)

    otlp_receiver.start()
    new_ids = wait_for_new_spans(rec, predict, otlp_receiver)
    flushed(rec)
    arrived = {s["attributes"]["predlog.prediction_id"] for s in otlp_receiver.spans(predicate=is_predict)}
    assert new_ids[-1] in arrived, "spans flow again once the collector is back"
    assert_spans_accounted(rec, otlp_receiver)
    assert len(rows(tmp_path / "store")) == calls + len(new_ids)


def test_hung_collector_does_not_block_predict(
    otlp_receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    make_rec: Any,
    tmp_path: Path,
    gc_pauses: GcPauses,
) -> None:
    outage_env(monkeypatch, otlp_receiver, "grpc")
    rec = make_rec(otlp=True, metrics=False)
    predict = rec.capture(lambda x: x["i"] % 3)

    up = run_load(predict, 0.3)
    flushed(rec)
    assert len(otlp_receiver.spans(min_count=len(up), predicate=is_predict)) == len(up)

    # SIGSTOP: the kernel still accepts connections and requests, nobody answers them.
    otlp_receiver.pause()
    down = run_load(predict, 1.2, first=len(up))
    assert_never_blocked(up, down, gc_pauses)
    assert rec.flush(timeout_s=15) is True
    calls = len(up) + len(down)
    assert len(rows(tmp_path / "store")) == calls, "every row is in Parquet"
    s = rec.stats()
    assert s["spans"] == calls
    assert s["spans_dropped"]["export_failed"] > 0, s  # exports timed out
    assert len(otlp_receiver.spans(predicate=is_predict)) == len(up)

    otlp_receiver.stop()  # SIGTERM + SIGCONT
    # A request that timed out at the client may still be served by the waking receiver,
    # so received can exceed made - lost, never made.
    received = len(otlp_receiver.spans(predicate=is_predict))
    lost = s["spans_dropped"]["export_failed"] + s["spans_dropped"]["queue_full"]
    assert s["spans"] - lost <= received <= s["spans"], (received, s)

    otlp_receiver.start()
    new_ids = wait_for_new_spans(rec, predict, otlp_receiver)
    arrived = {s["attributes"]["predlog.prediction_id"] for s in otlp_receiver.spans(predicate=is_predict)}
    assert new_ids[-1] in arrived, "spans flow again once the collector is back"
    assert len(rows(tmp_path / "store")) == calls + len(new_ids)
