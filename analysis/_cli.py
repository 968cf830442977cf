"""The ``predlog`` command line: the store's commands (``predlog.replay``) and ``monitor``.

The console script points here, at the top of the import graph, so that the reading side's
command line never imports the analysis package: this module adds its commands to it.
"""

from __future__ import annotations

import argparse
import os
import sys
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``predlog`` command line; returns the exit code."""
    return store_cli.main(argv, extend=_extend)


if __name__ == "__main__":  # python -m predlog.analysis._cli
    import sys

    sys.exit(main())
