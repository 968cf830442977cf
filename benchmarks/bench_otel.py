"""Benchmarks of predlog's OpenTelemetry spans, each against a baseline measured in the same run.

    python benchmarks/bench_otel.py spans [--quick]   # request-thread cost of a traced call
    python benchmarks/bench_otel.py otlp [--quick]    # spans/s exported over OTLP to a receiver

``python benchmarks/run.py`` runs them with the capture benchmarks. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from time import perf_counter, perf_counter_ns
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_capture import US, Row, features, pct, predict, run_cli, temp_store  # noqa: E402

import predlog  # noqa: E402

RECEIVER = os.path.join(os.path.dirname(HERE), "tests", "helpers", "otlp_receiver_main.py")


def _null_provider() -> Any:
    """An SDK TracerProvider whose batch processor hands spans to an exporter that drops them."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Null(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(Null(), max_queue_size=1 << 20))
    return tp


def _timed_round(fns: list[Callable[[Any], Any]], x: Any, n: int, series: list[list[int]]) -> None:
    """n rounds of every function back to back, each call timed alone (rotating order)."""
    pc = perf_counter_ns
    k = len(fns)
    for i in range(n):
        for j in range(k):
            f = fns[(i + j) % k]
            a = pc()
            f(x)
            series[(i + j) % k].append(pc() - a)


def bench_spans(args: argparse.Namespace) -> list[Row]:
    """Request-thread cost of a traced predict call: deferred span, nested span, bare SDK span."""
    quick = args.quick
    bursts = 20 if quick else 150
    burst = 1000
    x = features(20)
    tp = _null_provider()
    app = tp.get_tracer("app")
    attrs25 = {f"attr.{i}": (i if i % 2 else f"value-{i}") for i in range(25)}

    def bare_span(v: Any) -> Any:
        with app.start_as_current_span("predict", attributes=attrs25):
            return predict(v)

    series: dict[str, list[int]] = {}
    with temp_store(args.tmpdir, "spans") as store:
        recs = {
            "untraced": predlog.Recorder(store=os.path.join(store, "a"), model="bench", tracing=False),
            "deferred": predlog.Recorder(
                store=os.path.join(store, "b"), model="bench", tracer_provider=tp, max_spans_per_s=1e9
            ),
            "nested": predlog.Recorder(
                store=os.path.join(store, "c"), model="bench", tracer_provider=tp, nest_spans=True, max_spans_per_s=1e9
            ),
        }
        fns: dict[str, Callable[[Any], Any]] = {"plain": predict, "bare SDK span": bare_span}
        fns.update({k: r.capture(predict) for k, r in recs.items()})
        names = list(fns)
        lists: list[list[int]] = [[] for _ in names]
        with app.start_as_current_span("request"):  # predictions have a parent, as in a server
            for f in fns.values():
                for _ in range(3000):
                    f(x)
            for r in recs.values():
                r.flush(timeout_s=120)
            gc.collect()
            for _ in range(bursts):
                _timed_round(list(fns.values()), x, burst, lists)
                for r in recs.values():  # outside the timed region
                    r.flush(timeout_s=120)
        stats = {k: r.stats() for k, r in recs.items()}
        for r in recs.values():
            r.shutdown(timeout_s=60)
    tp.shutdown()
    series = {n: lst for n, lst in zip(names, lists)}
    arr = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
    plain50 = pct(arr["plain"], 50)
    bare = (pct(arr["bare SDK span"], 50) - plain50) / US
    rows = []
    for name in ("untraced", "deferred", "nested"):
        over = (pct(arr[name], 50) - plain50) / US
        p99 = (pct(arr[name], 99) - pct(arr["plain"], 99)) / US
        rows.append(
            Row(
                "spans",
                f"{name} p50 overhead",
                over,
                "µs",
                baseline=bare,
                ratio=over / bare if bare > 0 else None,
                target="<=3 µs" if name == "deferred" else "",
                met=(over <= 3.0) if name == "deferred" else None,
                note=f"p99 overhead {p99:.1f} µs; spans made {stats[name]['spans']:,}; "
                f"baseline: a bare SDK span with 25 attributes around predict ({bare:.1f} µs p50 overhead)",
            )
        )
    return rows


# ---------------------------------------------------------------------------- OTLP throughput


class Receiver:
    """tests/helpers/otlp_receiver_main.py in a process of its own, counting what arrives."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, RECEIVER, "--out", out, "--grpc-port", "0", "--http-port", "0", "--count-only"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        self.grpc = f"http://127.0.0.1:{ready['grpc_port']}"
        self.http = f"http://127.0.0.1:{ready['http_port']}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _paced(fn: Callable[[Any], Any], x: Any, rate: float, duration_s: float) -> int:
    """Call fn at ``rate`` calls/s (in blocks of 100) for duration_s. Returns calls made."""
    block = 100
    t0 = perf_counter()
    n = 0
    while True:
        now = perf_counter()
        if now - t0 >= duration_s:
            return n
        due = int((now - t0) * rate)
        if n >= due:
            time.sleep(min(0.002, block / rate))
            continue
        for _ in range(block):
            fn(x)
        n += block


def bench_otlp(args: argparse.Namespace) -> list[Row]:
    """Spans per second exported over OTLP, with predlog's own pipeline, at and above the limit."""
    duration = 3.0 if args.quick else 10.0
    rows: list[Row] = []
    x = features(20)
    with temp_store(args.tmpdir, "otlp") as store:
        for protocol in ("grpc", "http/protobuf"):
            recv = Receiver(os.path.join(store, f"recv-{protocol.replace('/', '-')}.jsonl"))
            try:
                os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
                os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = recv.grpc if protocol == "grpc" else recv.http
                for offered in (9_500.0, 20_000.0):
                    sub = os.path.join(store, f"{protocol.replace('/', '-')}-{int(offered)}")
                    rec = predlog.Recorder(store=sub, model="bench", otlp=True, metrics=False)
                    fn = rec.capture(predict)
                    fn(x)
                    rec.flush(timeout_s=60)
                    before = _received(recv)
                    s0 = rec.stats()["spans"]
                    # Steady state: spans that arrive between the end of a warm-up (the
                    # pipeline delays spans by up to a writer cycle and an export batch) and
                    # the end of the load, per second.
                    warm = duration / 5
                    calls = _paced(fn, x, offered, warm)
                    t1, c1 = perf_counter(), _received(recv)
                    calls += _paced(fn, x, offered, duration - warm)
                    load_s = perf_counter() - t1
                    during = _received(recv) - c1
                    rec.flush(timeout_s=120)
                    st = rec.stats()
                    made = st["spans"] - s0
                    got = _wait_received(recv, before, made, 30.0) - before
                    rec.shutdown(timeout_s=60)
                    import duckdb

                    rows_pq = (
                        duckdb.sql(f"select count(*) from read_parquet('{sub}/predictions/**/*.parquet')").fetchall()[
                            0
                        ][0]
                        - 1
                    )
                    dropped = st["spans_dropped"]
                    accounted = got + sum(dropped.values()) >= calls  # every span received or counted
                    under = offered < 10_000
                    rows.append(
                        Row(
                            "otlp",
                            f"{protocol}, {offered:,.0f} calls/s offered: spans received/s",
                            during / load_s,
                            "spans/s",
                            target=">=9k/s, none lost" if under else "drops counted, every row in Parquet",
                            met=(during / load_s >= 9_000 and got == calls if under else True)
                            and rows_pq == calls
                            and accounted,
                            note=f"{calls:,} calls in {duration:.0f} s; received in the last {load_s:.1f} s of the load {during:,}, "
                            f"in all after flush {got:,}; "
                            f"Parquet rows {rows_pq:,}; counted as dropped {dropped}",
                        )
                    )
            finally:
                recv.stop()
                os.environ.pop("OTEL_EXPORTER_OTLP_PROTOCOL", None)
                os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return rows


def _received(recv: Receiver) -> int:
    try:
        with open(recv.out + ".count") as f:
            return int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _wait_received(recv: Receiver, before: int, expected: int, timeout_s: float) -> int:
    deadline = perf_counter() + timeout_s
    last, still = -1, 0
    while perf_counter() < deadline:
        n = _received(recv)
        if n - before >= expected:
            return n
        still = still + 1 if n == last else 0
        if still >= 20:  # nothing new for a second: the rest is not coming
            return n
        last = n
        time.sleep(0.05)
    return _received(recv)


BENCHMARKS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {"spans": bench_spans, "otlp": bench_otlp}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
