"""Report benchmark: predlog.analysis.report against the sum of the analysis calls it makes, timed alone.

    python benchmarks/bench_report.py report [--quick] [--cache DIR]

On the investigation benchmarks' generated store (benchmarks/investigate_store.py: 10M
labeled predictions of a binary classifier over 30 days, 1M with --quick), one
``report(s, path, sensitive=["context.gender", "context.region"])``: the overview (one
aggregate per day and version), input and prediction drift (the first 7 days against the
last day), performance per day, error correlation, error slices, the fairness audit (with
its default 1,000 bootstrap replicates), versions, steps and the event log, each with its
figure as SVG, written to one HTML file.

Baseline, in the same run: the same analysis calls with the same arguments, each timed
alone, summed (``input_drift``, ``prediction_drift``, ``performance``,
``error_correlation``, ``error_slices``, ``fairness_audit``) — what a notebook would spend
to compute the numbers without drawing them. The ratio report / baseline is the cost of the
overview, the figures and the page. A floor is timed too: the labels join alone, a
``count(*)`` over ``Store.labeled_relation``.
"""

from __future__ import annotations

import argparse
import os
import sys
from time import perf_counter
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_capture import Row, run_cli, temp_store  # noqa: E402
from bench_replay import _replay_arguments  # noqa: E402
from investigate_store import MODEL, SENSITIVE, investigation_store, join_floor  # noqa: E402

TARGET_S = 30.0


def _calls(s: Any) -> dict[str, float]:
    """Seconds of each analysis call the report makes, alone, with the report's arguments."""
    from predlog.analysis import (
        error_correlation,
        error_slices,
        fairness_audit,
        input_drift,
        performance,
        prediction_drift,
    )
    from predlog.analysis._report import _COUNTED_METRICS, _SLICE_FIELDS, _Job

    job = _Job.start(s, MODEL, {}, None, None, SENSITIVE, None, None)
    ref, cur = job.default_reference(), job.current()
    ranked: list[str] = []

    def correlation() -> None:
        ranked[:] = [str(f) for f in error_correlation(s, model=MODEL).df["feature"].head(_SLICE_FIELDS)]

    calls = {
        "input_drift": lambda: input_drift(s, ref, cur, model=MODEL),
        "prediction_drift": lambda: prediction_drift(s, ref, cur, model=MODEL),
        "performance": lambda: performance(s, model=MODEL, window=job.windows.width, metrics=_COUNTED_METRICS),
        "error_correlation": correlation,
        "error_slices": lambda: error_slices(s, model=MODEL, features=ranked),
        "fairness_audit": lambda: fairness_audit(s, SENSITIVE, model=MODEL),
    }
    seconds = {}
    for name, call in calls.items():
        t0 = perf_counter()
        call()
        seconds[name] = perf_counter() - t0
    return seconds


def bench_report(args: argparse.Namespace) -> list[Row]:
    """report() on the labeled store against the sum of its analysis calls."""
    from predlog.analysis._report import build
    from predlog.replay import Store

    with temp_store(args.tmpdir, "report") as tmp:
        path, desc = investigation_store(args, tmp)
        out = os.path.join(tmp, "report.html")
        with Store(path) as s:
            join_floor(s)  # warm-up: file footers, imports
            calls = _calls(s)
            t0 = perf_counter()
            built = build(s, sensitive=SENSITIVE)
            with open(out, "w", encoding="utf-8") as f:
                f.write(built.html)
            ours = perf_counter() - t0
            floor = join_floor(s, ["prediction", "label", "sample_rate"])
        size = os.path.getsize(out)
    base = sum(calls.values())
    sections = ", ".join(f"{x.key} {x.seconds:.1f}" for x in built.sections)
    failed = [f"{x.key}: {x.error}" for x in built.failed]
    note = "; ".join(
        [
            f"{desc['rows']:,} rows ({desc.get('files', '?')} files), {len(built.sections)} sections, "
            f"{size / 1e6:.2f} MB of HTML",
            f"sections (s): {sections}",
            "baseline = the report's analysis calls, each alone: "
            + ", ".join(f"{k} {v:.1f}" for k, v in calls.items()),
            f"failed sections: {'; '.join(failed) if failed else 'none'}",
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus",
        ]
    )
    return [
        Row(
            "report",
            "report(sensitive=[gender, region]) to one HTML file",
            ours,
            "s",
            baseline=base,
            ratio=ours / base,
            target=f"<= {TARGET_S:.0f} s",
            met=ours <= TARGET_S and not failed,
            note=note + "; ratio = report / the sum of its analysis calls (the overview, figures and page on top)",
        ),
        Row(
            "report",
            "  floor: the labels join alone (count(*) over Store.labeled_relation)",
            floor,
            "s",
            baseline=ours,
            ratio=ours / floor,
            note="ratio = report / floor: how many label joins' worth of time the report takes",
        ),
    ]


BENCHMARKS = {"report": bench_report}


def main(argv: list[str] | None = None) -> int:
    return run_cli(BENCHMARKS, __doc__, argv, _replay_arguments)


if __name__ == "__main__":
    sys.exit(main())
