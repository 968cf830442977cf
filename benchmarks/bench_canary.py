"""Benchmark of canary routing: what ``router(x)`` adds to calling the captured function directly.

    python benchmarks/bench_canary.py canary [--quick]

``python benchmarks/run.py`` runs it with the others. Both series call the same captured
``predict_v1`` in the same run, interleaved call by call (the order rotated per burst); the
router is at ``share=0`` so that every routed call is served by ``predict_v1`` too, while it
still hashes the key and derives the arm's context. The difference of the two series'
percentiles is the router's overhead. Scenarios:

* ``context reused``: calls inside one ``predlog.context(user_id=...)`` (the router's cached
  derived context and bucket);
* ``no context``: calls outside any context;
* ``new context per call``: each call in its own ``predlog.context(user_id=...)`` with a new
  user (a request per call: the key is hashed and a context derived on every call);
* ``capture disabled``: the recorder's ``enabled=False``, so the captured function is a bare
  call and the router's own cost stands alone.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Callable, Iterator
from time import perf_counter_ns
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_capture import Row, features, pct, run_cli, temp_store  # noqa: E402

import predlog  # noqa: E402

TARGET_NS = 1000.0


def _burst(
    direct: Callable[..., Any],
    router: Callable[..., Any],
    x: Any,
    n: int,
    flip: bool,
    out: tuple[list[int], list[int]],
    scope: Callable[[int], contextlib.AbstractContextManager[Any]],
) -> None:
    """n rounds of one direct call and one routed call, each timed alone."""
    pc = perf_counter_ns
    d_out, r_out = out
    first, second = (router, direct) if flip else (direct, router)
    f_out, s_out = (r_out, d_out) if flip else (d_out, r_out)
    for i in range(n):
        with scope(i):
            a = pc()
            first(x)
            b = pc()
            second(x)
            c = pc()
        f_out.append(b - a)
        s_out.append(c - b)


def _scopes(tag: str, base: int) -> Callable[[int], contextlib.AbstractContextManager[Any]]:
    if tag == "new context per call":
        return lambda i: predlog.context(user_id=f"user-{base + i}")
    return lambda i: contextlib.nullcontext()


@contextlib.contextmanager
def _outer(tag: str) -> Iterator[None]:
    if tag in ("context reused", "capture disabled"):
        with predlog.context(user_id="user-1", request_id="r-1"):
            yield
    else:
        yield


def bench_canary(args: argparse.Namespace) -> list[Row]:
    burst = 1000
    n_bursts = 20 if args.quick else 100
    x = features(20)
    rows: list[Row] = []
    for tag in ("context reused", "no context", "new context per call", "capture disabled"):
        with temp_store(args.tmpdir, "canary") as store:
            rec = predlog.Recorder(store=store, model="bench", enabled=tag != "capture disabled")

            @rec.capture(version="1")
            def predict_v1(x: Any) -> float:
                return 0.5

            @rec.capture(version="2")
            def predict_v2(x: Any) -> float:
                return 0.25

            router = rec.canary(predict_v1, predict_v2, share=0.0)
            direct: list[int] = []
            routed: list[int] = []
            with _outer(tag):
                for i in range(5000):  # warm up: the writer, pyarrow, cpu_time="auto"
                    predict_v1(x)
                    router(x)
                rec.flush(timeout_s=120)
                gc.collect()
                for j in range(n_bursts):
                    sink = (direct, routed)
                    _burst(predict_v1, router, x, burst, bool(j % 2), sink, _scopes(tag, j * burst))
                    rec.flush(timeout_s=120)  # outside the timed calls: the writer drains
            served = router.stats()
            rec.shutdown(timeout_s=60)
        d = np.asarray(direct, dtype=np.float64)
        r = np.asarray(routed, dtype=np.float64)
        assert served["candidate_calls"] == 0, served
        # A new context per call pays the per-request work (hashing the key, deriving a
        # context): shown, but the target is the router's cost per call once that is done.
        targeted = tag != "new context per call"
        for q in (50, 99):
            over = pct(r, q) - pct(d, q)
            rows.append(
                Row(
                    "canary",
                    f"{tag}: router p{q} overhead",
                    over,
                    "ns",
                    baseline=pct(d, q),
                    ratio=pct(r, q) / pct(d, q),
                    target=("<=1000 ns" if targeted else "informational") if q == 50 else "",
                    met=over <= TARGET_NS if q == 50 and targeted else None,
                    note=(
                        f"{len(r):,} calls each; baseline = the captured call alone (p{q}, ns); ratio = routed / "
                        f"direct; routed p50/p99 {pct(r, 50):.0f}/{pct(r, 99):.0f} ns, direct "
                        f"{pct(d, 50):.0f}/{pct(d, 99):.0f} ns"
                    )
                    if q == 50
                    else "",
                )
            )
    return rows


BENCHMARKS = {"canary": bench_canary}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
