"""predlog's own OTLP pipeline against a collector that goes away, or does not take metrics.

* A collector down for longer than the exporters' reconnect back-off ceiling: spans made
  after it returns arrive within seconds (the metrics exporter, failing on the same address
  all along, must not hold the span exporter back), flush() does not wait out the outage,
  and shutdown() holds its timeout.
* A backend that takes traces but not metrics (gRPC UNIMPLEMENTED, HTTP 405): spans arrive,
  predlog says so once and stops sending metrics; no "Failed to export" lines on stderr.
* ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``: ``none`` sends nothing of that signal.
* The first calls after ``configure()`` do not wait for predlog's start-up work.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import predlog
from predlog._otlp import RECONNECT_BACKOFF_MAX_S

from .conftest import OtlpReceiver
from .test_spans import PROTOCOLS, flushed, is_predict, otlp_env, rows

# Longer than the reconnect back-off ceiling, so the exporters' back-off reaches it.
OUTAGE_S = 3 * RECONNECT_BACKOFF_MAX_S


class Serving:
    """Calls predict every 20 ms on a thread, as requests would; remembers when each call ran."""

    def __init__(self, predict: Any) -> None:
        self.predict = predict
        self.calls: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.predict({"i": i})
            pid = predlog.last_prediction_id()
            assert pid is not None
            with self._lock:
                self.calls.append((time.monotonic(), pid))
            i += 1
            self._stop.wait(0.02)

    def ids_between(self, start: float, end: float = float("inf")) -> set[str]:
        with self._lock:
            return {pid for t, pid in self.calls if start <= t < end}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def serving() -> Iterator[list[Serving]]:
    made: list[Serving] = []
    yield made
    for s in made:
        s.stop()


def received_ids(receiver: OtlpReceiver) -> set[str]:
    return {s["attributes"].get("predlog.prediction_id") for s in receiver.spans(predicate=is_predict)}


# ---------------------------------------------------------------- a long outage


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_spans_flow_again_within_seconds_of_the_collectors_return(
    transport: str,
    otlp_receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    make_rec: Any,
    serving: list[Serving],
    tmp_path: Path,
) -> None:
    otlp_env(monkeypatch, otlp_receiver, transport)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    # The metrics exporter keeps failing on the same address through the outage.
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "300")
    rec = make_rec(otlp=True, metrics=True, flush_interval_s=0.1)  # spans are made promptly
    load = Serving(rec.capture(lambda x: x["i"] % 3))
    serving.append(load)
    assert otlp_receiver.spans(min_count=5, predicate=is_predict), "spans arrive before the outage"
    assert otlp_receiver.metrics(min_count=1), "metrics arrive before the outage"

    otlp_receiver.stop()
    stopped = time.monotonic()
    time.sleep(OUTAGE_S / 2)
    started = time.monotonic()
    assert rec.flush(timeout_s=10) is True, "the rows' flush does not depend on the collector"
    flush_down_s = time.monotonic() - started
    assert flush_down_s < 2.0, f"flush(timeout_s=10) with the collector down took {flush_down_s:.2f}s"
    time.sleep(max(0.0, stopped + OUTAGE_S - time.monotonic()))

    otlp_receiver.start()
    back = time.monotonic()
    recovery_s = None
    while time.monotonic() < back + 15:
        if load.ids_between(back) & received_ids(otlp_receiver):
            recovery_s = time.monotonic() - back
            break
        time.sleep(0.05)
    figures = (
        f"outage {OUTAGE_S:.0f}s, ceiling {RECONNECT_BACKOFF_MAX_S}s, first span after the return in {recovery_s}s"
    )
    assert recovery_s is not None and recovery_s <= RECONNECT_BACKOFF_MAX_S + 1.5, figures

    time.sleep(1.0)
    load.stop()
    started = time.monotonic()
    assert rec.flush(timeout_s=10) is True
    flush_up_s = time.monotonic() - started
    assert flush_up_s < 3.0, f"flush(10) after the return took {flush_up_s:.2f}s; {figures}"
    lost_after = load.ids_between(back) - received_ids(otlp_receiver)
    assert not lost_after, f"{len(lost_after)} spans made after the return were lost; {rec.stats()}; {figures}"
    assert len(rows(tmp_path / "store")) == len(load.calls), "every row is in Parquet"

    # Down again: shutdown() holds its timeout.
    otlp_receiver.stop()
    predict = rec.capture(lambda x: x["i"])
    for i in range(50):
        predict({"i": i})
        time.sleep(0.01)
    timeout_s = 3.0
    started = time.monotonic()
    rec.shutdown(timeout_s=timeout_s)
    shutdown_s = time.monotonic() - started
    assert shutdown_s <= timeout_s + 1.0, f"shutdown(timeout_s={timeout_s}) took {shutdown_s:.2f}s"
    print(f"{transport}: {figures}; flush down {flush_down_s:.2f}s, up {flush_up_s:.2f}s; shutdown {shutdown_s:.2f}s")


# ---------------------------------------------------------------- a backend without metrics

SERVE = textwrap.dedent(
    """
    import sys, time
    import predlog

    predlog.configure(store=sys.argv[1], model="m", otlp=True)

    @predlog.capture
    def predict(x):
        return x * 2

    calls = 0
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        predict(calls)
        calls += 1
        if calls % 50 == 0:
            predlog.flush(timeout_s=5)
        time.sleep(0.01)
    ok = predlog.shutdown(timeout_s=5)
    print(f"RESULT calls={calls} ok={ok}", file=sys.stderr)
    """
)


@pytest.fixture
def refusing_receiver(tmp_path: Path) -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver(tmp_path / "refusing.jsonl", tmp_path / "refusing.log", refuse_metrics=True)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.kill()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_backend_without_metrics_is_told_once_and_left_alone(
    transport: str, refusing_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOLS[transport],
        "OTEL_EXPORTER_OTLP_ENDPOINT": (
            refusing_receiver.grpc_endpoint if transport == "grpc" else refusing_receiver.http_endpoint
        ),
        "OTEL_METRIC_EXPORT_INTERVAL": "200",  # about ten exports in the two seconds
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    out = subprocess.run(
        [sys.executable, "-c", SERVE, str(tmp_path / "store")], env=env, capture_output=True, text=True, timeout=60
    )
    stderr = out.stderr
    assert out.returncode == 0, stderr
    result = [line for line in stderr.splitlines() if line.startswith("RESULT ")]
    assert result, stderr
    calls = int(result[0].split("calls=")[1].split()[0])
    assert "ok=True" in result[0], stderr

    spans = refusing_receiver.spans(min_count=calls, predicate=is_predict)
    assert len(spans) == calls, "every span arrives"
    assert refusing_receiver.metrics() == []
    refused = refusing_receiver.refused()
    assert len(refused) == 1, f"metrics were sent {len(refused)} times; stderr:\n{stderr}"
    assert refused[0]["transport"] == transport
    told = [line for line in stderr.splitlines() if "does not accept metrics" in line]
    assert len(told) == 1, stderr
    assert ("UNIMPLEMENTED" if transport == "grpc" else "405") in told[0]
    assert "Failed to export" not in stderr, stderr
    assert "Traceback" not in stderr, stderr


# ---------------------------------------------------------------- OTEL_*_EXPORTER


@pytest.mark.parametrize(
    ("traces", "metrics", "spans_sent", "metrics_sent"),
    [
        ("", "none", True, False),
        ("none", "", False, True),
        ("otlp,console", "console,otlp", True, True),
        ("console", "none", False, False),
    ],
)
def test_otel_exporter_variables_choose_what_is_sent(
    traces: str,
    metrics: str,
    spans_sent: bool,
    metrics_sent: bool,
    otlp_receiver: OtlpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    make_rec: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    otlp_env(monkeypatch, otlp_receiver, "grpc")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", traces)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", metrics)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    rec = make_rec(otlp=True)
    predict = rec.capture(lambda x: x + 1)
    with caplog.at_level(logging.WARNING, logger="predlog"):
        for i in range(20):
            predict(i)
        flushed(rec)
        time.sleep(0.5)  # a few export intervals: what is off must stay off
        flushed(rec)

    spans = otlp_receiver.spans(min_count=20 if spans_sent else 0, timeout_s=5, predicate=is_predict)
    points = otlp_receiver.metrics(min_count=1 if metrics_sent else 0, timeout_s=5)
    assert len(spans) == (20 if spans_sent else 0)
    assert bool(points) == metrics_sent, [p["name"] for p in points][:5]
    own = rec._telemetry._own
    if not (spans_sent or metrics_sent):
        assert own is None, "nothing to export: no pipeline, no channel"
    warned = [r.getMessage() for r in caplog.records if "exports only over OTLP" in r.getMessage()]
    assert bool(warned) == (traces == "console"), warned


# ---------------------------------------------------------------- start-up

FIRST_CALLS = textwrap.dedent(
    """
    import hashlib, json, os, sys, time

    BLOB = os.urandom(256 * 1024)

    def plain(x):
        # Like a small model: some work that releases the GIL, some that holds it.
        hashlib.sha256(BLOB).digest()
        return sum(range(200)) + x

    def timed(fn, other=None, n=100):
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - t0)
            if other is not None:
                other(i)
            time.sleep(0.005)  # requests arrive
        return out

    quiet = timed(plain)  # before predlog has any thread
    import predlog

    predict = predlog.capture(plain)
    predlog.configure(store=sys.argv[1], model="m", otlp=True, flush_interval_s=0.2)
    first = timed(predict)
    # The baseline: plain calls beside predlog's threads at work (the writer, the exporters);
    # on a busy machine every call pays for the others' share of the CPU and the GIL. Three
    # times as many, so that the machine's own hiccups show in the baseline too.
    beside = timed(plain, other=predict, n=300)
    predlog.flush(timeout_s=5)
    print(json.dumps({"first": first, "beside": beside, "quiet": quiet, "stats": predlog.stats()}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(("transport", "collector"), [("grpc", "up"), ("http", "up"), ("grpc", "down")])
def test_first_calls_after_configure_do_not_wait_for_start_up(
    transport: str, collector: str, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    if collector == "down":
        otlp_receiver.stop()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOLS[transport],
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.grpc_endpoint
        if transport == "grpc"
        else otlp_receiver.http_endpoint,
        # Exports start while the calls are measured.
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "100",
    }
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALLS, str(tmp_path / "store")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    first, beside, quiet = result["first"], result["beside"], result["quiet"]
    slowest = sorted(range(len(first)), key=first.__getitem__)[-3:][::-1]

    def ms(values: list[float]) -> str:
        return f"max {max(values) * 1e3:.2f} ms, median {sorted(values)[len(values) // 2] * 1e3:.3f} ms"

    figures = (
        f"first 100 calls after configure(): {ms(first)} (slowest calls {slowest}); 300 plain calls beside "
        f"predlog's threads: {ms(beside)}; 100 plain calls before predlog: {ms(quiet)}"
    )
    assert result["stats"]["written"] == 400, result["stats"]
    assert max(first) <= max(beside) + 0.010, figures
    print(f"{transport}, collector {collector}: {figures}")
