"""The ``predlog`` command line: the store's commands (``predlog.replay``), ``monitor`` and ``report``.

The console script points here, at the top of the import graph, so that the reading side's
command line never imports the analysis package: this module adds its commands to it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from predlog.replay import _cli as store_cli

if TYPE_CHECKING:
    from predlog.replay._cli import Output, Progress

__all__ = ["main"]

EXIT_ALERT = 1
EXIT_CANNOT_CHECK = 2


def cmd_monitor(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """Check alert rules; exit 1 when an alert fires.

    Rules come from a TOML file: optional settings, then one [[rules]] table per rule, named
    by ``rule`` with the arguments of predlog.analysis.rules as the other keys:

        model = "fraud"                       # optional when the store holds one model
        [reference]                           # what drift rules compare against:
        version = "1.3"                       #   store filters, or profile = "train.json"

        [[rules]]
        rule = "metric_below"
        metric = "accuracy"
        min = 0.85
        window = "1D"
        consecutive = 3                       # must hold on 3 windows in a row

        [[rules]]
        rule = "error_rate_above"
        max = 0.01
        window = "1h"

    Exit codes: 0 no alert, 1 an alert fired (for cron and CI), 2 the check could not run (a
    bad rules file, a store, model, version or profile that is not there, or a rule that
    cannot be checked and no alert from the others). The alerts are printed (``--format json``
    for machines), a rule that could not be checked on stderr; ``--all`` prints every
    reading, fired or not.
    """
    try:
        return _monitor(args, out, progress)
    except (store_cli.UsageError, KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as exc:  # an alert is exit 1: anything that stops the check must not look like one
        if getattr(args, "debug", False):
            raise
        print(f"{store_cli.PROG} monitor: error: {store_cli._one_line(exc)}", file=sys.stderr)
        return EXIT_CANNOT_CHECK


def _monitor(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    from ._monitor import Monitor, RuleCheckError, load_rules
    from ._profile import Profile

    if args.store_path:
        args.store = args.store_path
    try:
        rules, settings = load_rules(args.rules)
    except (OSError, ValueError) as exc:
        raise store_cli.UsageError(str(exc)) from exc
    model = args.model or settings.pop("model", None)
    reference = settings.pop("reference", None)
    if isinstance(reference, dict) and "profile" in reference:
        path = os.path.join(os.path.dirname(os.path.abspath(args.rules)), str(reference["profile"]))
        try:
            reference = Profile.load(path)
        except (OSError, ValueError) as exc:
            raise store_cli.UsageError(f"{args.rules}: [reference] profile = {reference['profile']!r}: {exc}") from exc
    filters = settings.pop("filters", {})
    if settings:
        raise store_cli.UsageError(
            f"{args.rules}: unknown settings {', '.join(sorted(settings))}; the file takes model, reference, "
            "filters and [[rules]]"
        )
    failed: list[tuple[str, Exception]] = []
    with store_cli._open(args) as s, progress.task("checking…", quiet=True):
        monitor = Monitor(s, rules, model=model, reference=reference, **filters)
        try:
            alerts = monitor.check(at=args.at)
        except RuleCheckError as exc:  # the other rules' alerts are still reported
            alerts, failed = exc.alerts, exc.failed
    for rule, error in failed:
        print(f"{store_cli.PROG} monitor: error: rule {rule!r} could not be checked: {error}", file=sys.stderr)
    if args.all:
        assert monitor.last is not None
        out.frame(monitor.last)
    elif out.format == "table":
        with out._text() as f:
            if not alerts:
                checked = len(rules) - len(failed)
                note = f"; {len(failed)} could not be checked" if failed else ""
                f.write(f"no alert: {checked} rule{'s' if checked != 1 else ''} checked for {monitor.model}{note}\n")
            for a in alerts:
                f.write(f"ALERT {a.rule}: {a.reason}\n")
    else:
        import pandas as pd

        out.frame(
            pd.DataFrame(
                [
                    {
                        "rule": a.rule,
                        "condition": a.condition,
                        "model": a.model,
                        "reason": a.reason,
                        "value": a.value,
                        "start": a.start,
                        "end": a.end,
                    }
                    for a in alerts
                ],
                columns=["rule", "condition", "model", "reason", "value", "start", "end"],
            )
        )
    if alerts:
        return EXIT_ALERT
    return EXIT_CANNOT_CHECK if failed else store_cli.EXIT_OK


def cmd_report(args: argparse.Namespace, out: Output, progress: Progress) -> int:
    """Write one self-contained HTML report of a model.

    Sections: overview (traffic, latency, errors per version), input drift, prediction drift,
    performance over time, error correlation and slices, fairness (with --sensitive),
    versions and canary verdicts, retraining steps, and the event log. The file opens
    offline: CSS, figures (SVG) and its few lines of script are inside it.

        predlog report predlog-store -o incident.html --model fraud --last 30d \\
            --reference-version 1.3 --sensitive context.region

    Progress goes to stderr: a bar on a terminal, a line per section elsewhere (--quiet: none).
    Exit codes: 0 the report was written (a section that failed shows its error in the file
    and is named on stderr), 1 nothing could be built (no such store or model, no rows, or
    every section failed; in that last case the file is still written, with the errors).
    """
    from ._report import build

    if args.store_path:
        args.store = args.store_path
    reference: dict[str, object] | None = None
    if args.reference_version:
        versions = args.reference_version
        reference = {"version": versions[0] if len(versions) == 1 else versions}
    filters = {
        k: v
        for k, v in {
            "start": args.start,
            "end": args.end,
            "last": args.last,
            "version": args.version,
            "include_live": args.include_live or None,
        }.items()
        if v is not None
    }
    bar = _ReportBar(progress)
    with store_cli._open(args) as s:
        built = build(
            s,
            model=args.model,
            reference=reference,
            sensitive=args.sensitive,
            title=args.title,
            window=args.window,
            progress=bar,
            **filters,
        )
    path = built.write(args.output)
    for section in built.failed:
        print(f"{store_cli.PROG} report: section {section.title!r} failed: {section.error}", file=sys.stderr)
    progress.say(
        f"report written to {path} ({len(built.sections) - len(built.failed)} of {len(built.sections)} sections built)"
    )
    return store_cli.EXIT_ERROR if len(built.failed) == len(built.sections) else store_cli.EXIT_OK


class _ReportBar:
    """The report's progress on stderr: a ``\\r`` bar on a terminal (naming the section being
    built), else one line per finished section."""

    WIDTH = 24

    def __init__(self, progress: Progress) -> None:
        from ._report import SECTIONS

        self.progress = progress
        self.titles = list(SECTIONS.values())
        self.t0 = self.tick = time.monotonic()
        if progress.enabled and progress.tty:
            self._draw(0, len(self.titles), self.t0)

    def __call__(self, done: int, total: int, title: str) -> None:
        if not self.progress.enabled:
            return
        now = time.monotonic()
        took, self.tick = now - self.tick, now
        if self.progress.tty:
            self._draw(done, total, now)
        else:
            print(f"report: {done}/{total} {title} ({took:.1f} s)", file=sys.stderr, flush=True)

    def _draw(self, done: int, total: int, now: float) -> None:
        filled = round(self.WIDTH * done / total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        doing = f"{self.titles[done]}…" if done < total else "done"
        sys.stderr.write(f"\r[{bar}] {done}/{total} {doing[:40]:<40} {now - self.t0:5.0f} s")
        sys.stderr.write("\n" if done == total else "")
        sys.stderr.flush()


def _extend(
    command: Callable[[str, store_cli.Command, list[argparse.ArgumentParser]], argparse.ArgumentParser],
    groups: dict[str, argparse.ArgumentParser],
) -> None:
    p = command("monitor", cmd_monitor, [groups["common"], groups["fmt"]])
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("store_path", nargs="?", metavar="STORE", help="the store directory (or --store)")
    p.add_argument("--rules", required=True, metavar="FILE", help="the rules file (TOML)")
    p.add_argument("--model", metavar="NAME", help="the model (default: the file's, else the store's only model)")
    p.add_argument("--at", metavar="TIME", help="the windows end at TIME (ISO 8601, UTC unless it says; default now)")
    p.add_argument("--all", action="store_true", help="print every rule's reading on every window")

    p = command("report", cmd_report, [groups["common"], groups["window"]])
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("store_path", nargs="?", metavar="STORE", help="the store directory (or --store)")
    p.add_argument("--output", "-o", default="report.html", metavar="FILE", help="the HTML file (default report.html)")
    p.add_argument("--version", metavar="VERSION", help="only rows of this model version")
    p.add_argument(
        "--reference-version",
        action="append",
        metavar="VERSION",
        help="drift compares against this version's rows (repeat for several; default: the range's first days)",
    )
    p.add_argument(
        "--sensitive",
        action="append",
        metavar="FIELD",
        help="audit fairness over this field, e.g. context.region (repeat: intersectional groups)",
    )
    p.add_argument("--window", metavar="WIDTH", help="time windows, e.g. 1h, 1D (default from the time range)")
    p.add_argument("--title", metavar="TEXT", help="the report's heading")
    p.set_defaults(format="table", limit=None, max_width=None)  # the output options the store's commands share


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``predlog`` command line; returns the exit code."""
    return store_cli.main(argv, extend=_extend)


if __name__ == "__main__":  # python -m predlog.analysis._cli
    import sys

    sys.exit(main())
