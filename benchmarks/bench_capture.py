"""Benchmarks of the capture SDK, each reported against a baseline measured in the same run.

Run one benchmark alone (``--quick`` for a short run)::

    python benchmarks/bench_capture.py overhead [--quick]
    python benchmarks/bench_capture.py throughput [--quick]
    python benchmarks/bench_capture.py batch [--quick]
    python benchmarks/bench_capture.py memory [--quick]

or all of them, each in its own process, with ``python benchmarks/run.py``. See
benchmarks/README.md for what each one measures, its baseline and its target.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from time import perf_counter, perf_counter_ns, time_ns
from typing import Any

import numpy as np

import predlog

US = 1_000.0  # ns per µs

# ---------------------------------------------------------------------------- helpers


class Row(dict[str, Any]):
    """One line of the result table (a dict, so it round-trips through JSON)."""

    def __init__(
        self,
        bench: str,
        metric: str,
        value: float | None,
        unit: str,
        *,
        baseline: float | None = None,
        ratio: float | None = None,
        target: str = "",
        met: bool | None = None,
        note: str = "",
    ) -> None:
        super().__init__(
            bench=bench,
            metric=metric,
            value=value,
            unit=unit,
            baseline=baseline,
            ratio=ratio,
            target=target,
            met=met,
            note=note,
        )


def fmt_num(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    a = abs(v)
    if a >= 100_000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ("benchmark", "metric", "predlog", "unit", "baseline", "ratio", "target", "met")
    lines = [head]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        ratio = (
            "-" if r["ratio"] is None else (f"{r['ratio']:.2f}x" if abs(r["ratio"]) >= 0.1 else f"{r['ratio']:.2g}x")
        )
        lines.append(
            (r["bench"], r["metric"], fmt_num(r["value"]), r["unit"], fmt_num(r["baseline"]), ratio, r["target"], met)
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = []
    for j, line in enumerate(lines):
        out.append(
            "  ".join(
                str(c).ljust(w) if i < 2 or i in (3, 6) else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(line, widths))
            ).rstrip()
        )
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  [{r['bench']}/{r['metric']}] {r['note']}" for r in rows if r.get("note")]
    if notes:
        out.append("")
        out.append("notes:")
        out.extend(notes)
    return "\n".join(out)


@contextlib.contextmanager
def temp_store(base: str | None, name: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=f"predlog-bench-{name}-", dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def wait_sealed(rec: predlog.Recorder, timeout_s: float = 300.0) -> tuple[bool, float]:
    """flush(), then make sure every written row is in Parquet. Returns (ok, extra wait in s).

    flush() waits at most ``shutdown_timeout_s`` for the sealer, and a large segment can take
    longer, so end-to-end timings also wait until the store's ``_wal/`` holds no segment (no
    new calls are made meanwhile, so there is no open segment either). The directory is the
    ground truth: the ``sealed_rows`` counter misses segments that the sealer's periodic
    orphan recovery seals instead of the sealer itself.
    """
    ok = rec.flush(timeout_s=timeout_s)
    wal = os.path.join(os.fspath(rec.config.store), "_wal")
    t = perf_counter()
    deadline = t + timeout_s
    while True:
        try:
            pending = [n for n in os.listdir(wal) if n.endswith(".arrows")]
        except FileNotFoundError:
            pending = []
        if not pending or perf_counter() > deadline:
            break
        time.sleep(0.005)
    return ok and not pending, perf_counter() - t


def writer_profiler(rec: predlog.Recorder) -> cProfile.Profile:
    """Profile the writer threads: every drained batch runs under one cProfile."""
    from predlog._writer import Writer

    prof = cProfile.Profile()
    inner = Writer.process

    def profiled(self: Writer, batch: list[Any]) -> None:
        prof.enable()
        try:
            inner(self, batch)
        finally:
            prof.disable()

    Writer.process = profiled  # type: ignore[method-assign]
    return prof


def dump_profile(prof: cProfile.Profile | None, label: str, limit: int = 25) -> None:
    if prof is None:
        return
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(limit)
    print(f"\n--- writer-thread profile: {label} (cumulative) ---", file=sys.stderr)
    print(buf.getvalue(), file=sys.stderr)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(limit)
    print(f"--- writer-thread profile: {label} (tottime) ---", file=sys.stderr)
    print(buf.getvalue(), file=sys.stderr)


def features(n: int) -> dict[str, Any]:
    """A feature dict of ``n`` mixed fields (floats, ints, a string, a bool), like a tabular model's input."""
    out: dict[str, Any] = {}
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out[f"f{i}"] = "DE" if i % 2 else "checkout"
        elif kind == 1:
            out[f"f{i}"] = 17 + i
        elif kind == 2:
            out[f"f{i}"] = i % 3 == 0
        else:
            out[f"f{i}"] = 0.25 * i + 0.125
    return out


def predict(x: Any) -> float:
    """The trivial model of the single-call benchmarks."""
    return 0.5


def hand_written(
    fn: Callable[..., Any], max_queue_size: int = 200_000
) -> tuple[Callable[..., Any], collections.deque[tuple[Any, ...]]]:
    """The baseline recorder: two time_ns() clocks, a 10-field tuple, a deque append with a len check.

    Returns the wrapper and its queue (which nothing drains: the benchmark clears it).
    """
    q: collections.deque[tuple[Any, ...]] = collections.deque()
    clock = time_ns

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        out = fn(*args, **kwargs)
        t1 = clock()
        if len(q) < max_queue_size:
            q.append((fn, args, kwargs, out, None, t0, t1, -1, None, 0))
        return out

    return wrapper, q


# ---------------------------------------------------------------------------- 1. overhead


def _timed_burst(fns: tuple[Callable[..., Any], ...], x: Any, n: int, sinks: tuple[Callable[[int], None], ...]) -> None:
    """n rounds of the three functions, back to back; each call timed with perf_counter_ns.

    Each interval holds exactly one call and one clock read, so the clock's own cost is the
    same in every series and cancels in the differences.
    """
    f0, f1, f2 = fns
    s0, s1, s2 = sinks
    pc = perf_counter_ns
    for _ in range(n):
        a = pc()
        f0(x)
        b = pc()
        f1(x)
        c = pc()
        f2(x)
        d = pc()
        s0(b - a)
        s1(c - b)
        s2(d - c)


def bench_overhead(args: argparse.Namespace) -> list[Row]:
    quick = args.quick
    burst = 1000
    n_bursts = 30 if quick else 200
    chunk_bursts = 20 if quick else 50  # sustained: calls between flushes (the writer runs meanwhile)
    n_chunks = 1 if quick else 4
    x = features(20)
    rows: list[Row] = []
    for mode in ("auto", "never", "always"):
        with temp_store(args.tmpdir, f"overhead-{mode}") as store:
            rec = predlog.Recorder(store=store, model="bench", cpu_time=mode)
            dec = rec.capture(predict)
            base, base_queue = hand_written(predict)
            prof = writer_profiler(rec) if args.profile_writer else None
            # Warm up: start the writer, import pyarrow, let cpu_time="auto" learn the latency.
            for _ in range(5000):
                dec(x)
                base(x)
                predict(x)
            rec.flush(timeout_s=120)
            base_queue.clear()
            s0 = rec.stats()
            results: dict[str, dict[str, np.ndarray]] = {}
            for phase in ("burst", "sustained"):
                series: dict[str, list[int]] = {"plain": [], "baseline": [], "predlog": []}
                order = [("plain", predict), ("baseline", base), ("predlog", dec)]
                gc.collect()
                if phase == "burst":
                    plan = [(1, burst)] * n_bursts
                else:
                    plan = [(chunk_bursts, burst)] * n_chunks
                for i, (reps, size) in enumerate(plan):
                    rot = order[i % 3 :] + order[: i % 3]  # rotate call order to remove position bias
                    fns = tuple(f for _, f in rot)
                    sinks = tuple(series[name].append for name, _ in rot)
                    for _ in range(reps):
                        _timed_burst(fns, x, size, sinks)
                    # Outside the timed region: drain and seal, empty the baseline's queue.
                    rec.flush(timeout_s=120)
                    base_queue.clear()
                results[phase] = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
            s1 = rec.stats()
            dropped = s1["dropped_total"] - s0["dropped_total"]
            cpu_every = getattr(getattr(dec, "__predlog_spec__", None), "cpu_every", "?")
            dump_profile(prof, f"overhead cpu_time={mode}")
            rec.shutdown(timeout_s=60)

        for phase in ("burst", "sustained"):
            r = results[phase]
            plain, bl, pl = r["plain"], r["baseline"], r["predlog"]
            p50_over = (pct(pl, 50) - pct(plain, 50)) / US
            p99_over = (pct(pl, 99) - pct(plain, 99)) / US
            b50_over = (pct(bl, 50) - pct(plain, 50)) / US
            b99_over = (pct(bl, 99) - pct(plain, 99)) / US
            stall = float((pl > 50_000).mean() * 100)
            stall_plain = float((plain > 50_000).mean() * 100)
            tag = f"cpu_time={mode} {phase}"
            default = mode == "auto"
            note_mode = "" if default else " (targets are for the default cpu_time='auto'; shown for comparison)"
            rows.append(
                Row(
                    "overhead",
                    f"{tag} p50 overhead",
                    p50_over,
                    "µs",
                    baseline=b50_over,
                    ratio=p50_over / b50_over if b50_over > 0 else None,
                    target="<=2 µs and <=1.5x",
                    met=(p50_over <= 2.0 and p50_over <= 1.5 * b50_over) if default else None,
                    note=(
                        f"{len(pl):,} calls; absolute p50/p99/p99.9/max: predlog {pct(pl, 50) / US:.2f}/{pct(pl, 99) / US:.2f}/"
                        f"{pct(pl, 99.9) / US:.1f}/{pl.max() / US:,.0f} µs, baseline {pct(bl, 50) / US:.2f}/{pct(bl, 99) / US:.2f}/"
                        f"{pct(bl, 99.9) / US:.1f}/{bl.max() / US:,.0f}, plain {pct(plain, 50) / US:.2f}/{pct(plain, 99) / US:.2f}/"
                        f"{pct(plain, 99.9) / US:.1f}/{plain.max() / US:,.0f}; "
                        f"calls >50 µs: predlog {stall:.3f}%, plain {stall_plain:.3f}%; cpu_every={cpu_every}; "
                        f"dropped={dropped}" + note_mode
                    ),
                )
            )
            rows.append(
                Row(
                    "overhead",
                    f"{tag} p99 overhead",
                    p99_over,
                    "µs",
                    baseline=b99_over,
                    ratio=p99_over / b99_over if b99_over > 0 else None,
                    target="<=20 µs",
                    met=(p99_over <= 20.0) if default else None,
                )
            )
    return rows


# ---------------------------------------------------------------------------- 2. throughput


def _call_loop(fn: Callable[..., Any], x: Any, duration_s: float) -> tuple[int, float, float]:
    """Call fn(x) in blocks of 1000 until duration_s has passed. Returns (calls, t_start, t_end)."""
    calls = 0
    t0 = perf_counter()
    deadline = t0 + duration_s
    block = range(1000)
    while True:
        for _ in block:
            fn(x)
        calls += 1000
        t = perf_counter()
        if t >= deadline:
            return calls, t0, t


def bench_throughput(args: argparse.Namespace) -> list[Row]:
    duration = 2.0 if args.quick else 10.0
    base_duration = min(duration, 3.0)
    rows: list[Row] = []
    for n_feat in (20, 5):
        x = features(n_feat)
        with temp_store(args.tmpdir, f"throughput-{n_feat}") as store:
            rec = predlog.Recorder(store=store, model="bench")
            dec = rec.capture(predict)
            prof = writer_profiler(rec) if args.profile_writer else None
            for _ in range(20_000):
                dec(x)
            wait_sealed(rec)
            s0 = rec.stats()
            # Baseline first (no writer backlog yet), then the decorated loop.
            gc.collect()
            b_calls, b0, b1 = _call_loop(predict, x, base_duration)
            base_rate = b_calls / (b1 - b0)
            gc.collect()
            calls, t0, t_loop = _call_loop(dec, x, duration)
            depth_at_end = rec.stats()["queue_depth"]
            ok, extra = wait_sealed(rec)
            t_end = perf_counter()
            s1 = rec.stats()
            dump_profile(prof, f"throughput {n_feat} features")
            rec.shutdown(timeout_s=60)
        dropped = s1["dropped_total"] - s0["dropped_total"]
        written = s1["written"] - s0["written"]
        sealed = s1["sealed_rows"] - s0["sealed_rows"]
        e2e = calls / (t_end - t0)
        loop_rate = calls / (t_loop - t0)
        writer_rate = written / (t_end - t0)
        rows.append(
            Row(
                "throughput",
                f"{n_feat} features: calls/s end to end",
                e2e,
                "calls/s",
                baseline=base_rate,
                ratio=e2e / base_rate,
                target=">=150k/s, 0 drops",
                met=e2e >= 150_000 and dropped == 0,
                note=(
                    f"{calls:,} calls in {t_loop - t0:.1f} s (loop {loop_rate:,.0f}/s), flush+seal {t_end - t_loop:.1f} s "
                    f"(queue depth at loop end {depth_at_end:,}); written {written:,} ({writer_rate:,.0f}/s), "
                    f"sealed {sealed:,}, dropped {dropped:,} {s1['dropped']}, failed {s1['failed'] - s0['failed']}, "
                    f"flush ok={ok}, waited {extra:.2f} s for sealing after flush() returned"
                ),
            )
        )
        rows.append(
            Row(
                "throughput",
                f"{n_feat} features: dropped calls",
                dropped,
                "calls",
                target="0",
                met=dropped == 0,
            )
        )
    return rows


# ---------------------------------------------------------------------------- 3. batch


def make_frames(k: int, n_rows: int, seed: int = 0) -> list[Any]:
    """k distinct DataFrames of n_rows x 20 columns: 16 float64 and 4 small-range int64."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(k):
        cols: dict[str, Any] = {}
        for j in range(16):
            cols[f"x{j}"] = rng.normal(size=n_rows)
        for j in range(4):
            cols[f"c{j}"] = rng.integers(0, 50, size=n_rows)
        frames.append(pd.DataFrame(cols))
    return frames


def vectorised_model(df: Any) -> Any:
    return df.sum(axis=1).to_numpy()


def _baseline_write(frames: list[Any], n_calls: int, path: str) -> float:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = perf_counter()
    tables = [pa.Table.from_pandas(frames[i % len(frames)], preserve_index=False) for i in range(n_calls)]
    pq.write_table(pa.concat_tables(tables), path, compression="zstd")
    return perf_counter() - t0


def bench_batch(args: argparse.Namespace) -> list[Row]:
    n_rows = 10_000
    n_calls = 30 if args.quick else 100
    repeats = 1 if args.quick else 3
    frames = make_frames(4, n_rows)
    total = n_calls * n_rows
    pl_times: list[float] = []
    bl_times: list[float] = []
    plain_times: list[float] = []
    details = []
    with temp_store(args.tmpdir, "batch") as store:
        rec = predlog.Recorder(store=os.path.join(store, "store"), model="bench")
        dec = rec.capture(vectorised_model)
        prof = writer_profiler(rec) if args.profile_writer else None
        for i in range(20):  # warm up
            dec(frames[i % 4])
        wait_sealed(rec)
        _baseline_write(frames, 20, os.path.join(store, "warm.parquet"))
        for r in range(repeats):  # interleave baseline and predlog
            gc.collect()
            bl_times.append(_baseline_write(frames, n_calls, os.path.join(store, f"baseline-{r}.parquet")))
            gc.collect()
            t0 = perf_counter()
            for i in range(n_calls):
                vectorised_model(frames[i % 4])
            plain_times.append(perf_counter() - t0)
            gc.collect()
            s0 = rec.stats()
            t0 = perf_counter()
            for i in range(n_calls):
                dec(frames[i % 4])
            t_loop = perf_counter()
            ok, extra = wait_sealed(rec)
            t_end = perf_counter()
            s1 = rec.stats()
            pl_times.append(t_end - t0)
            details.append(
                (
                    t_loop - t0,
                    t_end - t_loop,
                    s1["rows_written"] - s0["rows_written"],
                    s1["sealed_rows"] - s0["sealed_rows"],
                    s1["dropped_total"] - s0["dropped_total"],
                    ok,
                    extra,
                )
            )
        dump_profile(prof, "batch")
        rec.shutdown(timeout_s=60)
    pl = total / float(np.median(pl_times))
    bl = total / float(np.median(bl_times))
    plain = total / float(np.median(plain_times))
    d = details[int(np.argsort(pl_times)[len(pl_times) // 2])]
    return [
        Row(
            "batch",
            "10k-row DataFrame x20: rows/s end to end",
            pl,
            "rows/s",
            baseline=bl,
            ratio=pl / bl,
            target=">=2M rows/s",
            met=pl >= 2_000_000,
            note=(
                f"{n_calls} calls x {n_rows:,} rows, median of {repeats}: loop {d[0]:.2f} s + flush/seal {d[1]:.2f} s; "
                f"rows written {d[2]:,}, sealed {d[3]:,}, dropped {d[4]}, flush ok={d[5]}; "
                f"undecorated model alone {plain:,.0f} rows/s; baseline = from_pandas + one pq.write_table (zstd, no fsync)"
            ),
        )
    ]


# ---------------------------------------------------------------------------- 4. memory


def _rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _malloc_trim() -> bool:
    """Give freed C heap back to the OS (glibc), to tell retained-but-free memory from live memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def bench_memory(args: argparse.Namespace) -> list[Row]:
    import pyarrow as pa

    total_rows = 3_000_000 if args.quick else 10_000_000
    step_rows = 1_000_000
    rows: list[Row] = []
    mib = 2**20
    for n_rows in args.batch_rows:
        frames = make_frames(4, n_rows, seed=1)
        step = max(1, step_rows // n_rows)  # calls per 1M rows
        calls = total_rows // n_rows

        # Baseline: the same loop, undecorated.
        for i in range(2 * step):
            vectorised_model(frames[i % 4])
        b_warm = _rss()
        can_peak = _reset_peak()
        for i in range(2 * step, calls):
            vectorised_model(frames[i % 4])
        b_peak = _peak() if can_peak else None
        b_end = _rss()

        with temp_store(args.tmpdir, f"memory-{n_rows}") as store:
            rec = predlog.Recorder(store=store, model="bench")
            dec = rec.capture(vectorised_model)
            cold = _rss()
            _reset_peak()
            t0 = perf_counter()
            # Each 1M rows is called at full speed (the model is far faster than the writer, so
            # the whole 1M rows queue up), then flushed: the backlog never exceeds 1M rows.
            # The first 2M rows are the warm-up: glibc raises its mmap threshold after the first
            # large frees, at a moment that shifts with allocation order, so RSS settles in the
            # first or the second million without any object being kept alive.
            first_m = None
            for i in range(2 * step):
                dec(frames[i % 4])
                if (i + 1) % step == 0:
                    wait_sealed(rec)
                    first_m = first_m or _rss()
            warm_peak = _peak() if can_peak else None
            d_warm = _rss()
            _reset_peak()
            curve = []
            for i in range(2 * step, calls):
                dec(frames[i % 4])
                if (i + 1) % step == 0:
                    wait_sealed(rec)
                    curve.append(_rss())
            wait_sealed(rec)
            elapsed = perf_counter() - t0
            d_peak = _peak() if can_peak else None
            d_end = _rss()
            s = rec.stats()
            arrow_bytes = pa.total_allocated_bytes()
            trimmed = _rss() if _malloc_trim() else None
            rec.shutdown(timeout_s=60)
        growth = (d_end - d_warm) / mib
        b_growth = (b_end - b_warm) / mib
        label = f"{total_rows // 1_000_000}M rows, batches of {n_rows:,}"
        rows.append(
            Row(
                "memory",
                f"RSS growth 2M->{label}",
                growth,
                "MiB",
                baseline=b_growth,
                ratio=None,
                target="<=50 MiB",
                met=growth <= 50,
                note=(
                    f"RSS before the first call {cold / mib:.0f} MiB, after 1M rows {first_m / mib:.0f} MiB, after 2M "
                    f"rows {d_warm / mib:.0f} MiB, after {total_rows:,} rows {d_end / mib:.0f} MiB, after malloc_trim(0) "
                    f"{'-' if trimmed is None else f'{trimmed / mib:.0f}'} MiB; RSS after each further 1M rows (MiB): "
                    f"{[round(c / mib) for c in curve]}; rows written {s['rows_written']:,}, dropped {s['dropped_total']}; "
                    f"arrow pool allocated after flush {arrow_bytes / mib:.1f} MiB ({pa.default_memory_pool().backend_name}); "
                    f"{s['rows_written'] / elapsed:,.0f} rows/s end to end; baseline = the same loop undecorated"
                ),
            )
        )
        rows.append(
            Row(
                "memory",
                f"peak RSS, {label}",
                None if d_peak is None else d_peak / mib,
                "MiB",
                baseline=None if b_peak is None else b_peak / mib,
                note=(
                    "informational: the kernel's high-water mark (VmHWM) after warm-up; during warm-up it was "
                    f"{'-' if warm_peak is None else f'{warm_peak / mib:.0f}'} MiB (RSS before the first call "
                    f"{cold / mib:.0f} MiB), for {step} calls queued at once"
                ),
            )
        )
    return rows


# ---------------------------------------------------------------------------- main

BENCHMARKS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "overhead": bench_overhead,
    "throughput": bench_throughput,
    "batch": bench_batch,
    "memory": bench_memory,
}


def run_cli(
    benchmarks: Mapping[str, Callable[[argparse.Namespace], list[Row]]],
    doc: str | None,
    argv: list[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The command line every benchmark script shares: run some benchmarks, print one table."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=[*benchmarks, "all"], help="which benchmark to run")
    parser.add_argument("--quick", action="store_true", help="short run (seconds, not minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the result rows as JSON")
    parser.add_argument("--tmpdir", metavar="DIR", help="where temporary stores go (default: the system temp dir)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    names = list(benchmarks) if args.benchmark == "all" else [args.benchmark]
    rows: list[Row] = []
    for name in names:
        t0 = perf_counter()
        rows.extend(benchmarks[name](args))
        print(f"[{name}: {perf_counter() - t0:.1f} s]", file=sys.stderr)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def _capture_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile-writer", action="store_true", help="cProfile the writer thread; stats go to stderr")
    parser.add_argument(
        "--batch-rows",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[10_000],
        help="memory: rows per batch call, comma-separated (default 10000; e.g. 10000,1000)",
    )


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv, _capture_arguments)


if __name__ == "__main__":
    sys.exit(main())
