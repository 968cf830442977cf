"""One HTML file that tells what happened to a model: :func:`report`.

The report reads the store through the same functions a notebook would call
(:func:`~predlog.analysis.input_drift`, :func:`~predlog.analysis.performance`, ...) and shows
each result as it shows itself: its summary sentence, its ``plot()`` as inline SVG and its
``_repr_html_()`` table. Only the overview aggregates on its own: one DuckDB query over
the store's query core (``Store.relation``) counts rows, calls, errors and latency
quantiles per window and version. The page itself is :mod:`._report_html`.

A section without data (no labels, no ``sensitive=``) says what would fill it; a section
that raises shows its error and the others are still built.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._report_html import (
    ERROR,
    Section,
    error_block,
    figure_block,
    heading_block,
    note_block,
    page,
    table_block,
)
from ._sides import WEIGHT, describe_filters, resolve_model
from ._summary import _query
from ._windows import Windows, utc_times

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from predlog.replay import Store

__all__ = ["SECTIONS", "Built", "ProgressFn", "build", "report"]

ProgressFn = Callable[[int, int, str], None]
"""Called after each section with ``(sections done, sections in all, the section's title)``."""

SECTIONS = {
    "overview": "Overview: traffic, latency, errors",
    "input-drift": "Input drift",
    "prediction-drift": "Prediction drift",
    "performance": "Performance over time",
    "errors": "Error correlation and error slices",
    "fairness": "Fairness",
    "versions": "Versions and canary verdicts",
    "retraining": "Retraining steps",
    "events": "Event log",
}
"""The sections, in order: anchor → title."""

_LABELS_MISSING = (
    "No labels yet: log them with predlog.log_label(label, prediction_id=...) or Recorder.log_labels(frame), "
    "and this section fills in."
)
_COUNTED_METRICS = ("accuracy", "precision", "recall", "f1")
"""The classification metrics performance over time shows: those counted from a confusion
matrix per window (a fifth of the cost of also ranking the scores for ROC AUC)."""
_SLICE_FIELDS = 8
"""Error slices search this many fields: those error correlation ranks first (pairs of 8
fields are 28 groupings; of 23 fields, 253)."""
_EVENT_LINES = {"promote": ("#1a7f37", "promote"), "rollback": ("#cf222e", "rollback")}
_DAY = dt.timedelta(days=1)
_US = dt.timedelta(microseconds=1)


def report(
    s: Store,
    path: str | os.PathLike[str] = "report.html",
    *,
    model: str | None = None,
    reference: Any = None,
    sensitive: str | Sequence[str] | None = None,
    verdicts: Sequence[Any] | None = None,
    steps: Sequence[Any] | None = None,
    title: str | None = None,
    window: str | dt.timedelta | None = None,
    progress: ProgressFn | None = None,
    **filters: Any,
) -> pathlib.Path:
    """Write one self-contained HTML report of a model's predictions to ``path``.

    ::

        from predlog.replay import Store
        from predlog.analysis import report

        s = Store("predlog-store")
        report(s, "incident.html", model="fraud", sensitive="context.region", last="30d")

    The file holds everything it shows (CSS, figures as SVG, a few lines of script to fold
    sections): it opens offline, from an e-mail or a ticket. Sections, each a sentence, a
    figure and a table: overview (traffic, latency p50/p95 and errors per version over
    time, with promotions and rollbacks marked), input drift, prediction drift, performance
    over time, error correlation and error slices, fairness, versions and canary verdicts,
    retraining steps, and the event log. A section without data says what would fill it; a
    section that raises shows the error, and the others are built all the same. Without
    matplotlib (``pip install 'predlog[plot]'``) the report has tables only, and says so.

    Args:
        s: The store.
        path: Where to write the file (its directory must exist).
        model: The model; may be omitted when the store holds one.
        reference: What drift compares with: store filters (``{"version": "1.3"}``), a
            training DataFrame or a :class:`~predlog.analysis.Profile`. Default: the first
            part of the selected time range (its first 7 days, at most half of it) against
            the last day (the report says so). The current side is always the last day.
        sensitive: The field(s) of the fairness audit (``"context.region"``); none: the
            section says how to ask for one.
        verdicts: Canary verdicts to show (objects with ``.decision`` and ``_repr_html_()``,
            as ``compare_versions`` returns). Default: one computed with
            ``compare_versions`` for the latest canary ``start`` in the event log.
        steps: Retraining step results (objects with ``.summary`` and ``_repr_html_()``), in
            order.
        title: The page's heading (default: "predlog report: <model>").
        window: The width of the time windows (``"1h"``, ``"1D"``); default from the time
            range: hourly up to 3 days, daily up to 120 days, weekly beyond.
        progress: Called after each section with (done, total, title), e.g. for a progress
            bar.
        **filters: ``Store.predictions`` filters selecting the rows (``last="30d"``,
            ``start``, ``end``, ``version``, ``where``...).

    Returns:
        The path of the file written.

    Raises:
        UnknownModelError, ValueError: no such model, several models and no ``model=``, or
            no predictions in the selection: nothing to report on.
    """
    built = build(
        s,
        model=model,
        reference=reference,
        sensitive=sensitive,
        verdicts=verdicts,
        steps=steps,
        title=title,
        window=window,
        progress=progress,
        **filters,
    )
    return built.write(path)


@dataclasses.dataclass
class Built:
    """A report before it is written: the page and its sections (for the command line's exit code)."""

    html: str
    sections: list[Section]

    @property
    def failed(self) -> list[Section]:
        """The sections that raised."""
        return [x for x in self.sections if x.state == ERROR]

    def write(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write the page to ``path``, whole or not at all (a temporary file beside it, renamed)."""
        out = pathlib.Path(path)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(self.html, encoding="utf-8")
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return out


def build(
    s: Store,
    *,
    model: str | None = None,
    reference: Any = None,
    sensitive: str | Sequence[str] | None = None,
    verdicts: Sequence[Any] | None = None,
    steps: Sequence[Any] | None = None,
    title: str | None = None,
    window: str | dt.timedelta | None = None,
    progress: ProgressFn | None = None,
    **filters: Any,
) -> Built:
    """The report's page and sections, not written anywhere: :func:`report`'s arguments."""
    job = _Job.start(s, model, filters, window, reference, sensitive, verdicts, steps)
    sections = []
    for done, key in enumerate(SECTIONS, 1):
        section = _section(job, key, _MAKERS[key])
        sections.append(section)
        if progress is not None:
            progress(done, len(SECTIONS), section.title)
    notes = [] if job.plots else ["Tables only: figures need matplotlib (pip install 'predlog[plot]')."]
    head = title or f"predlog report: {job.model}"
    text = page(head, job.meta(), sections, notes=notes, footer=f"predlog {_version()}")
    return Built(text, sections)


def _version() -> str:
    from predlog import __version__

    return str(__version__)


def _section(job: _Job, key: str, make: Callable[[_Job, Section], None]) -> Section:
    """Build one section; an exception becomes the section's error, never the report's."""
    section = Section(key, SECTIONS[key])
    t0 = time.perf_counter()
    try:
        make(job, section)
    except Exception as exc:  # a section that fails must not take the report with it
        section.error = _one_line(exc)
    section.seconds = time.perf_counter() - t0
    return section


class _Unavailable(Exception):
    """A section's input could not be read; the message already names the cause."""


def _one_line(exc: BaseException) -> str:
    """The error as the section shows it: its type and its message on one line."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    text = " ".join(text.split()) or "(no message)"
    return text if isinstance(exc, _Unavailable) else f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------- the job


@dataclasses.dataclass
class _Job:
    """What every section reads: the store, the model, the rows' filters, time range and windows."""

    store: Store
    model: str
    filters: dict[str, Any]
    first: dt.datetime
    last: dt.datetime
    rows: int
    windows: Windows
    reference: Any
    sensitive: str | Sequence[str] | None
    verdicts: Sequence[Any] | None
    steps: Sequence[Any] | None
    plots: bool
    generated: dt.datetime
    labeled_rows: int | None = None
    events_df: pd.DataFrame | None = None
    events_error: str = ""

    @classmethod
    def start(
        cls,
        s: Store,
        model: str | None,
        filters: dict[str, Any],
        window: str | dt.timedelta | None,
        reference: Any,
        sensitive: str | Sequence[str] | None,
        verdicts: Sequence[Any] | None,
        steps: Sequence[Any] | None,
    ) -> _Job:
        name = resolve_model(s, model, filters)
        rel = s.relation(name, columns=["ts"], ordered=False, **filters)
        first, last, rows = rel.aggregate('min("ts"), max("ts"), count(*)').fetchall()[0]
        if not rows:
            raise ValueError(
                f"no predictions of model {name!r} in this selection ({describe_filters(filters)}): nothing to report; "
                "widen the time range or check the filters"
            )
        chosen = Windows.of(window) if window is not None else _default_window(last - first)
        job = cls(
            store=s,
            model=name,
            filters=dict(filters),
            first=first,
            last=last,
            rows=int(rows),
            windows=chosen,
            reference=reference,
            sensitive=sensitive,
            verdicts=verdicts,
            steps=steps,
            plots=_plots_available(),
            generated=dt.datetime.now(dt.UTC),
        )
        job._read_events()
        return job

    def _read_events(self) -> None:
        """The model's event log (canary start, share, promote, rollback), read once for two sections."""
        try:
            self.events_df = self.store.events(self.model)
        except Exception as exc:  # shown in the event log section; the overview draws no event
            self.events_error = _one_line(exc)

    @property
    def base(self) -> dict[str, Any]:
        """The filters without their time bounds: a side's own bounds go with them."""
        return {k: v for k, v in self.filters.items() if k not in ("start", "end", "last")}

    def current(self) -> dict[str, Any]:
        """The current side of drift: the last day of the selected rows (at most half the range)."""
        length = min(_DAY, (self.last - self.first) / 2)
        return {**self.base, "start": self.last - length, "end": self.last + _US}

    def default_reference(self) -> dict[str, Any]:
        """The first part of the range: 7 days, or what is left before the current side."""
        cur = self.current()["start"]
        end = min(self.first + 7 * _DAY, cur)
        if end <= self.first:
            end = cur + _US  # a range of one instant: both sides are it
        return {**self.base, "start": self.first, "end": end}

    def meta(self) -> list[tuple[str, str]]:
        return [
            ("store", str(self.store.root)),
            ("model", self.model),
            ("time range", f"{_t(self.first)} → {_t(self.last)} ({self.rows:,} predictions)"),
            ("rows", describe_filters(self.filters)),
            ("windows", self.windows.text),
            ("generated", _t(self.generated)),
        ]


def _default_window(span: dt.timedelta) -> Windows:
    if span <= 3 * _DAY:
        return Windows.of("1h")
    if span <= 120 * _DAY:
        return Windows.of("1D")
    return Windows.of("7D")


def _plots_available() -> bool:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def _t(value: Any) -> str:
    """A time in UTC, to the minute."""
    import pandas as pd

    t = pd.Timestamp(value)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return f"{t:%Y-%m-%d %H:%M} UTC"


def _add_figure(job: _Job, section: Section, draw: Callable[[], Figure]) -> None:
    """Draw a figure into the section. Nothing to draw leaves a note; a figure that fails
    marks the section as failed (its table is still shown: it tells the story)."""
    if not job.plots:
        return
    try:
        fig = draw()
    except ValueError as exc:
        if not str(exc).startswith("nothing to plot"):
            _partial_failure(section, f"The figure failed: {_one_line(exc)}")
        else:
            section.blocks.append(note_block(f"No figure: {exc}."))
        return
    except Exception as exc:
        _partial_failure(section, f"The figure failed: {_one_line(exc)}")
        return
    section.blocks.append(figure_block(fig))


def _partial_failure(section: Section, message: str) -> None:
    """A part of a section failed: shown in place, and the section counts as failed."""
    section.blocks.append(error_block(message))
    section.error = f"{section.error} {message}".strip()


def _add_result(job: _Job, section: Section, result: Any, draw: Callable[[], Figure] | None = None) -> None:
    """A result as the report shows it: its figure, then its own HTML table."""
    _add_figure(job, section, draw or result.plot)
    section.blocks.append(table_block(result._repr_html_()))


def _sentence(text: str) -> str:
    """``text`` ending with a full stop, to be joined with others."""
    text = text.strip()
    return text if not text or text.endswith((".", "!", "?")) else f"{text}."


def _text_of(result: Any) -> str:
    """A result's one sentence: ``summary["text"]``, a string summary, or ``str()``."""
    summary = getattr(result, "summary", None)
    if isinstance(summary, Mapping) and summary.get("text"):
        return str(summary["text"])
    if isinstance(summary, str) and summary:
        return summary
    return str(result)


# ---------------------------------------------------------------------------- 1. overview


def _overview(job: _Job, section: Section) -> None:
    import pandas as pd

    got = _overview_cells(job)
    cells = got[(got["gw"] == 0) & (got["gv"] == 0)].copy()
    cells["window_start"] = utc_times(cells["_w"].to_numpy(dtype=np.int64))
    cells = cells.sort_values(["window_start", "v"])
    versions = got[(got["gw"] == 1) & (got["gv"] == 0)].sort_values("first")
    total = got[(got["gw"] == 1) & (got["gv"] == 1)].iloc[0]
    section.summary = _overview_text(job, versions, total)
    section.details.append(
        "Calls are rows weighted by 1 / sample_rate; latency quantiles are over successful calls "
        f"(status ok); windows of {job.windows.text} in UTC."
    )
    _add_figure(job, section, lambda: _overview_figure(job, cells, versions["v"].tolist()))
    table = pd.DataFrame(
        {
            "version": versions["v"],
            "rows": versions["rows"].astype("int64"),
            "calls": versions["calls"],
            "errors": versions["errors"],
            "error_rate": versions["error_rate"],
            "latency_p50_ms": versions["p50"],
            "latency_p95_ms": versions["p95"],
            "first": [_t(x) for x in versions["first"]],
            "last": [_t(x) for x in versions["last"]],
        }
    )
    section.blocks.append(table_block(table.to_html(index=False, float_format=_fmt, na_rep="-"), result=False))
    if float(total["errors"]) > 0:
        section.blocks.append(heading_block("Most frequent errors"))
        section.blocks.append(table_block(_top_errors(job).to_html(index=False, na_rep="-"), result=False))


def _overview_cells(job: _Job) -> pd.DataFrame:
    """Rows, calls, errors and latency p50/p95 per window × version, per version and overall:
    one DuckDB query over the selected rows (``gw``/``gv`` say which level a row is)."""
    rel = job.store.relation(
        job.model,
        columns=["ts", "model_version", "status", "latency_ms", "sample_rate"],
        ordered=False,
        **job.filters,
    )
    ok_latency = "CASE WHEN status = 'ok' THEN latency_ms END"
    sql = f"""
        SELECT _w, v, grouping(_w) AS gw, grouping(v) AS gv, count(*) AS rows, fsum(_wt) AS calls,
               fsum(CASE WHEN status = 'error' THEN _wt ELSE 0 END) AS errors,
               quantile_cont({ok_latency}, 0.5) AS p50, quantile_cont({ok_latency}, 0.95) AS p95,
               min(ts) AS first, max(ts) AS last
        FROM (SELECT *, {job.windows.sql()} AS _w, coalesce(model_version, '(none)') AS v, {WEIGHT} AS _wt FROM side)
        GROUP BY GROUPING SETS ((_w, v), (v), ())
    """
    got = _query(rel, sql).df()
    got["error_rate"] = got["errors"] / got["calls"]
    return got


def _top_errors(job: _Job, top: int = 10) -> pd.DataFrame:
    """The most frequent error types and messages of the selected rows, with versions and last time."""
    filters = {**job.filters, "status": "error"}
    rel = job.store.relation(
        job.model, columns=["ts", "model_version", "error_type", "error_message"], ordered=False, **filters
    )
    sql = f"""
        SELECT error_type, error_message, count(*) AS rows, string_agg(DISTINCT model_version, ', ') AS versions,
               max(ts) AS last
        FROM side GROUP BY error_type, error_message ORDER BY rows DESC, last DESC LIMIT {int(top)}
    """
    got = _query(rel, sql).df()
    got["last"] = [_t(x) for x in got["last"]]
    return got


def _fmt(x: float) -> str:
    from ._result import fmt

    return fmt(float(x))


def _overview_text(job: _Job, versions: pd.DataFrame, total: pd.Series) -> str:
    count = len(versions)
    listed = ", ".join(f"{v} ({int(n):,})" for v, n in zip(versions["v"], versions["rows"], strict=True))
    text = (
        f"{int(total['rows']):,} predictions of {job.model} from {_t(job.first)} to {_t(job.last)}; "
        f"{count} version{'s' if count != 1 else ''}: {listed}; error rate {_percent(total['error_rate'])}"
    )
    if not _missing(total["p50"]):
        text += f"; latency p50 {total['p50']:.3g} ms, p95 {total['p95']:.3g} ms"
    return text + "."


def _percent(x: Any) -> str:
    return "-" if _missing(x) else f"{100 * float(x):.2g} %"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def _overview_figure(job: _Job, cells: pd.DataFrame, versions: list[str]) -> Figure:
    from ._result import figure

    fig = figure(figsize=(11.0, 7.0), layout="constrained")
    traffic, latency, errors = fig.subplots(3, 1, sharex=True)
    for i, v in enumerate(versions):
        part = _every_window(job, cells[cells["v"] == v])
        x, color = part["window_start"], f"C{i % 10}"
        traffic.plot(x, part["calls"], color=color, marker=".", label=f"version {v}")
        latency.plot(x, part["p50"], color=color, marker=".", label=f"{v} p50")
        latency.plot(x, part["p95"], color=color, linestyle="--", label=f"{v} p95")
        errors.plot(x, part["error_rate"], color=color, marker=".", label=f"version {v}")
    traffic.set_ylabel(f"calls per {job.windows.text}")
    latency.set_ylabel("latency (ms)")
    errors.set_ylabel("error rate")
    traffic.set_title(f"{job.model}: traffic, latency and errors per version", fontsize=10)
    for ax in (traffic, latency, errors):
        ax.grid(alpha=0.3)
        _event_lines(job, ax)
    traffic.legend(fontsize=7, loc="upper left")
    latency.legend(fontsize=7, loc="upper left", ncols=2)
    return fig


def _every_window(job: _Job, part: pd.DataFrame) -> pd.DataFrame:
    """One version's windows from its first to its last, those without rows added: no call, and
    no latency or error rate (a gap in the line, not a line drawn across it)."""
    span = job.windows.span(part["_w"].astype("int64").tolist())
    full = part.set_index("_w").reindex(span)
    full["calls"] = full["calls"].fillna(0.0)
    full["window_start"] = utc_times(span)
    return full.reset_index(drop=True)


def _event_lines(job: _Job, ax: Any) -> None:
    """Promotions and rollbacks in the selected range, as vertical lines."""
    import pandas as pd

    events = job.events_df
    if events is None or events.empty:
        return
    first, last = pd.Timestamp(job.first), pd.Timestamp(job.last)
    for row in events.itertuples(index=False):
        kind = str(getattr(row, "kind", ""))
        if kind not in _EVENT_LINES:
            continue
        ts = pd.Timestamp(row.ts)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
        if first <= ts <= last:
            color, label = _EVENT_LINES[kind]
            ax.axvline(ts, color=color, linewidth=1.2, linestyle=":")
            ax.annotate(
                f"{label} {getattr(row, 'candidate_version', '') or ''}".strip(),
                (ts, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color=color,
                rotation=90,
                va="top",
                ha="right",
            )


# ---------------------------------------------------------------------------- 2, 3. drift


def _sides(job: _Job) -> tuple[Any, dict[str, Any], list[str]]:
    """The reference, the current side and the lines that say what they are."""
    current = job.current()
    cur_text = f"current: the last day of the range ({_t(current['start'])} → {_t(job.last)})"
    if job.reference is not None:
        return job.reference, current, [f"Against the reference given; {cur_text}."]
    ref = job.default_reference()
    return (
        ref,
        current,
        [
            f"No reference given: the first part of the range ({_t(ref['start'])} → {_t(ref['end'])}) is the "
            f"reference; {cur_text}. Pass reference= (store filters, a training DataFrame or a Profile) to choose."
        ],
    )


def _input_drift(job: _Job, section: Section) -> None:
    from ._drift import input_drift

    reference, current, said = _sides(job)
    result = input_drift(job.store, reference, current, model=job.model)
    section.summary = _text_of(result)
    section.details += said
    _add_result(job, section, result, lambda: result.plot(_tested(result)))


def _tested(result: Any, top: int = 6) -> list[str] | None:
    """The strongest fields a drift result tested (drawn; the others are in its table), or None for its default."""
    tested = result.df[result.df["p_value"].notna() | result.df["statistic"].notna()]["feature"].tolist()
    return [str(f) for f in tested[:top]] or None


def _prediction_drift(job: _Job, section: Section) -> None:
    from ._drift import prediction_drift

    reference, current, said = _sides(job)
    result = prediction_drift(job.store, reference, current, model=job.model)
    if job.reference is not None and not result.summary.get("tested"):
        # A training set has labels, not predictions: compare with the first part of the range instead.
        ref = job.default_reference()
        result = prediction_drift(job.store, ref, current, model=job.model)
        said = [
            f"The reference given has no predictions to compare (a training set?): the first part of the range "
            f"({_t(ref['start'])} → {_t(ref['end'])}) is the reference instead; current: the last day of the "
            f"range ({_t(current['start'])} → {_t(job.last)})."
        ]
    section.summary = _text_of(result)
    section.details += said
    _add_result(job, section, result, lambda: result.plot(_tested(result)))
    if len(result.means):
        section.blocks.append(heading_block("Mean shift (Welch's 95 % interval)"))
        section.blocks.append(
            table_block(result.means.to_html(index=False, float_format=_fmt, na_rep="-"), result=False)
        )


# ---------------------------------------------------------------------------- 4, 5, 6. against labels


def _performance(job: _Job, section: Section) -> None:
    from ._performance import performance

    args = {"model": job.model, "window": job.windows.width, **job.filters}
    try:
        result = performance(job.store, metrics=_COUNTED_METRICS, **args)
    except ValueError as exc:  # not a classification: the task's own metrics
        if "does not apply" not in str(exc):
            raise
        result = performance(job.store, **args)
    else:
        section.details.append(
            "ROC AUC and log loss are left out here (each ranks every window's scores); "
            "performance(s, window=...) gives them."
        )
    job.labeled_rows = int(result.summary.get("labeled_rows") or 0)
    section.summary = _text_of(result)
    if job.labeled_rows == 0:
        section.note = _LABELS_MISSING
        return
    _add_result(job, section, result)


def _errors(job: _Job, section: Section) -> None:
    from ._errors import error_correlation
    from ._slices import error_slices

    if job.labeled_rows == 0:
        section.summary = "No labeled predictions: nothing to correlate with errors."
        section.note = _LABELS_MISSING
        return
    texts, failures = [], []
    fields: list[str] | None = None  # error slices search the fields error correlation ranks first
    for name, run in (("Error correlation", error_correlation), ("Error slices", error_slices)):
        section.blocks.append(heading_block(name))
        try:
            result = run(job.store, model=job.model, features=fields, **job.filters)
        except Exception as exc:  # the other investigation may still answer
            failures.append(f"{name} failed: {_one_line(exc)}")
            section.blocks.append(error_block(failures[-1]))
            continue
        if run is error_correlation:
            fields = [str(f) for f in result.df["feature"].head(_SLICE_FIELDS)] or None
            if fields is not None and len(result.df) > len(fields):
                section.details.append(
                    f"Error slices search the {len(fields)} fields most associated with errors (of "
                    f"{len(result.df)}): {', '.join(fields)}."
                )
        texts.append(_text_of(result))
        _add_result(job, section, result)
    if not texts:
        raise _Unavailable("; ".join(failures))
    section.summary = " ".join(texts)
    section.error = " ".join(failures)


def _fairness(job: _Job, section: Section) -> None:
    from ._fairness import fairness_audit

    if not job.sensitive:
        section.summary = "No fairness audit: no sensitive field was named."
        section.note = (
            "Name the groups to compare: report(..., sensitive='context.region') or "
            "predlog report STORE --sensitive context.region."
        )
        return
    result = fairness_audit(job.store, job.sensitive, model=job.model, **job.filters)
    section.summary = _text_of(result)
    _add_result(job, section, result)


# ---------------------------------------------------------------------------- 7, 8, 9. versions, steps, events


def _versions(job: _Job, section: Section) -> None:
    verdicts = list(job.verdicts) if job.verdicts is not None else _canary_verdicts(job, section)
    if not verdicts:
        if not section.note:
            section.note = "No verdict given (verdicts=[...]) and no canary in the event log."
        return
    section.summary = " ".join(_sentence(_verdict_text(v)) for v in verdicts)
    for v in verdicts:
        section.blocks.append(table_block(v._repr_html_(), result=False))


def _verdict_text(verdict: Any) -> str:
    """``"rollback: <its sentence>"``: the decision first, as a person scans for it."""
    decision, text = getattr(verdict, "decision", None), _text_of(verdict)
    if not decision or text.lower().startswith(str(decision).lower()):
        return text
    return f"{decision}: {text}"


def _canary_verdicts(job: _Job, section: Section) -> list[Any]:
    """The verdict of the latest canary ``start`` in the event log (``compare_versions``)."""
    if job.events_df is None:
        raise _Unavailable(f"The event log could not be read ({job.events_error}); pass verdicts= to show verdicts.")
    starts = job.events_df[job.events_df["kind"] == "start"]
    if starts.empty:
        section.summary = "No canary in the event log."
        section.note = (
            "A canary's start event names its baseline and candidate versions; or pass "
            "verdicts=[compare_versions(s, baseline=..., candidate=...)]."
        )
        return []
    from ._compare import compare_versions

    latest = starts.sort_values("ts").iloc[-1]
    events = job.events_df
    decided = events[
        (events["ts"] > latest["ts"])
        & events["kind"].isin(["promote", "rollback"])
        & (events["candidate_version"] == latest["candidate_version"])
    ]
    since = {k: v for k, v in job.base.items() if k != "version"}  # the verdict selects both versions itself
    until = ""
    if len(decided):
        decision = decided.sort_values("ts").iloc[0]
        since["end"] = decision["ts"]
        until = f" until its {decision['kind']} at {_t(decision['ts'])}"
    section.details.append(
        f"The latest canary in the event log: {latest['candidate_version']} against {latest['baseline_version']}, "
        f"started {_t(latest['ts'])}; compared on its rows{until or ' since it started'}."
    )
    return [
        compare_versions(
            job.store,
            baseline=str(latest["baseline_version"]),
            candidate=str(latest["candidate_version"]),
            model=job.model,
            start=latest["ts"],
            **since,
        )
    ]


def _retraining(job: _Job, section: Section) -> None:
    steps = list(job.steps or [])
    if not steps:
        section.summary = "No retraining steps."
        section.note = "Pass steps=[...] (the results of predlog.analysis.retrain) to show them here, in order."
        return
    section.summary = f"{len(steps)} step{'s' if len(steps) != 1 else ''}. " + " ".join(
        _sentence(_text_of(x)) for x in steps
    )
    for i, step in enumerate(steps, 1):
        section.blocks.append(heading_block(f"Step {i}"))
        section.blocks.append(table_block(step._repr_html_(), result=False))


def _events(job: _Job, section: Section) -> None:
    if job.events_df is None:
        raise _Unavailable(f"The event log could not be read: {job.events_error}")
    events = job.events_df.sort_values("ts")
    if events.empty:
        section.summary = f"No event for {job.model}: no canary was started, promoted or rolled back."
        section.note = "Canary rollouts write their start, share, promote and rollback events to the store."
        return
    counts = events["kind"].value_counts()
    last = events.iloc[-1]
    section.summary = (
        f"{len(events):,} events ("
        + ", ".join(f"{int(n)} {k}" for k, n in counts.items())
        + f"); the last: {last['kind']} of {last['candidate_version']} at {_t(last['ts'])}."
    )
    shown = events.drop(columns=["model"]).astype(object)
    shown["ts"] = [_t(x) for x in events["ts"]]
    shown = shown.where(events.drop(columns=["model"]).notna(), "-")
    section.blocks.append(table_block(shown.to_html(index=False), result=False))


_MAKERS: dict[str, Callable[[_Job, Section], None]] = {
    "overview": _overview,
    "input-drift": _input_drift,
    "prediction-drift": _prediction_drift,
    "performance": _performance,
    "errors": _errors,
    "fairness": _fairness,
    "versions": _versions,
    "retraining": _retraining,
    "events": _events,
}
"""What builds each section of :data:`SECTIONS`."""
