"""The verdict of a version comparison: the decision, its reasons and the table behind them."""

from __future__ import annotations

import dataclasses
import html
import math
from typing import TYPE_CHECKING, Any

from ._result import Result, figure, fmt, jsonable
from ._sides import describe_filters

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["COLUMNS", "DECISIONS", "METRICS", "Metric", "Verdict", "check_tolerance", "reason"]


@dataclasses.dataclass(frozen=True)
class Metric:
    """How one metric is compared.

    ``kind`` says what ``effect`` and ``tolerance`` are: ``"ratio"`` (candidate / baseline;
    a tolerance of 1.2 lets the candidate be 20 % worse), ``"difference"`` (candidate −
    baseline; a signed limit: error rate +0.01 may rise one point, accuracy −0.01 may drop
    one) or ``"distance"`` (a distance between the two distributions, 0 = same).
    """

    name: str
    label: str
    kind: str
    worse_when: str
    tolerance: float
    critical: bool
    tested: bool = True  # False: compared by value only (no significance test)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("latency_p50_ms", "p50 latency", "ratio", "higher", 1.2, True),
        Metric("latency_p95_ms", "p95 latency", "ratio", "higher", 1.2, True),
        Metric("latency_p99_ms", "p99 latency", "ratio", "higher", 1.2, True),
        Metric("error_rate", "error rate", "difference", "higher", 0.01, True),
        Metric("prediction_distribution", "prediction distribution", "distance", "higher", 0.1, False),
        Metric("confidence_mean", "mean confidence", "difference", "lower", -0.05, False),
        Metric("accuracy", "accuracy", "difference", "lower", -0.01, True),
        Metric("mae", "MAE", "ratio", "higher", 1.05, True),
        Metric("precision", "precision", "difference", "lower", -0.01, False, tested=False),
        Metric("recall", "recall", "difference", "lower", -0.01, False, tested=False),
        Metric("f1", "F1", "difference", "lower", -0.01, False, tested=False),
        Metric("roc_auc", "ROC AUC", "difference", "lower", -0.01, False, tested=False),
        Metric("log_loss", "log loss", "ratio", "higher", 1.05, False, tested=False),
        Metric("rmse", "RMSE", "ratio", "higher", 1.05, False, tested=False),
        Metric("r2", "R²", "difference", "lower", -0.01, False, tested=False),
    )
}
"""Every metric :func:`compare_versions` knows, with its default tolerance and whether it is critical."""

DECISIONS = ("promote", "hold", "rollback")

COLUMNS = [
    "metric",
    "baseline",
    "candidate",
    "effect",
    "kind",
    "tolerance",
    "test",
    "statistic",
    "p_value",
    "p_bound",
    "worse_when",
    "critical",
    "status",
    "n_baseline",
    "n_candidate",
    "reason",
]

_COLORS = {"promote": "#1a7f37", "hold": "#9a6700", "rollback": "#cf222e"}
_FIX = {
    "accuracy": "; log labels with predlog.log_label(label, prediction_id=...)",
    "mae": "; log labels with predlog.log_label(label, prediction_id=...)",
}


class Verdict(Result):
    """Whether to promote a candidate version, with the numbers behind the decision.

    Attributes:
        decision: ``"promote"``, ``"hold"`` or ``"rollback"``.
        reasons: Sentences with the numbers: first what decided (the critical metrics that
            failed, or why there is not enough data), then the other failures, the metrics
            not checked, the pairing, and the metrics that passed.
        df: One row per metric: ``metric``, ``baseline`` and ``candidate`` (the values),
            ``effect`` (candidate / baseline for a ``kind`` of ``"ratio"``, candidate −
            baseline for ``"difference"``, a distance for ``"distance"``), ``tolerance``,
            ``test``, ``statistic``, ``p_value`` (one-sided, the candidate worse; two-sided
            for the distribution), ``p_bound`` (how far ``p_value`` may be from the exact
            one: 0 unless the values were binned), ``worse_when``, ``critical``, ``status``
            (``"pass"``, ``"fail"``, ``"no-data"``), ``n_baseline``, ``n_candidate`` and
            ``reason``.
        summary: ``text`` (the decision in one sentence), ``decision``, ``model``,
            ``baseline``, ``candidate``, ``rows_baseline``, ``rows_candidate``, ``paired``,
            ``pairs``, ``agreement`` (the share of pairs with equal predictions), ``alpha``,
            ``min_rows``, ``failed``, ``not_checked``, ``filters``.
    """

    _title = "Version verdict"

    def __init__(self, df: pd.DataFrame, summary: dict[str, Any], reasons: list[str]) -> None:
        self.df = df
        self.summary = summary
        self.reasons = reasons

    @property
    def decision(self) -> str:
        """``"promote"``, ``"hold"`` or ``"rollback"``."""
        return str(self.summary["decision"])

    @classmethod
    def build(cls, df: pd.DataFrame, missing: pd.Series, **ctx: Any) -> Verdict:
        """The decision and its reasons from the judged rows (see ``compare_versions``)."""
        rows = df.to_dict("records")
        gaps = dict(zip(df["metric"], missing, strict=True)) if len(df) else {}
        b, c = ctx["sides"]
        min_rows, named = ctx["min_rows"], ctx["named"]
        few = [
            f"{what} {version} has {side['n']:,} rows, fewer than min_rows={min_rows:,}: wait for more traffic"
            for what, version, side in (("baseline", ctx["baseline"], b), ("candidate", ctx["candidate"], c))
            if side["n"] < min_rows
        ]
        critical = [r for r in rows if r["status"] == "fail" and r["critical"]]
        other = [r for r in rows if r["status"] == "fail" and not r["critical"]]
        required = [r for r in rows if r["status"] == "no-data" and r["metric"] in named]
        unchecked = [r for r in rows if r["status"] == "no-data" and r["metric"] not in named]
        if critical:
            decision = "rollback"
        elif few or required:
            decision = "hold"
        else:
            decision = "promote"
        reasons = [r["reason"] for r in critical]
        reasons += [s + "." for s in few]
        reasons += [r["reason"] + " (named in metrics=, so the verdict waits for it)" for r in required]
        reasons += [r["reason"] + " (not critical)" for r in other]
        reasons += [r["reason"] for r in unchecked]
        if ctx["paired"]:
            agree = ctx["agreement"]
            said = "" if agree is None or math.isnan(agree) else f"; the predictions agree on {agree:.1%} of them"
            reasons.append(f"Paired on {ctx['pairs']:,} requests served by both versions (request_id){said}.")
        reasons += [r["reason"] for r in rows if r["status"] == "pass"]
        checked = [r for r in rows if r["status"] != "no-data"]
        if decision == "promote":
            text = (
                f"promote {ctx['candidate']}: {len(checked)} metrics checked against {ctx['baseline']}, "
                "none significantly worse beyond its tolerance"
                + (f" ({len(other)} non-critical failed)" if other else "")
                + "."
            )
        else:
            text = f"{decision} {ctx['candidate']}: {reasons[0]}"
        summary = {
            "text": text,
            "decision": decision,
            "model": ctx["model"],
            "baseline": ctx["baseline"],
            "candidate": ctx["candidate"],
            "rows_baseline": b["n"],
            "rows_candidate": c["n"],
            "paired": ctx["paired"],
            "pairs": ctx["pairs"],
            "agreement": ctx["agreement"],
            "alpha": ctx["alpha"],
            "min_rows": min_rows,
            "failed": [r["metric"] for r in [*critical, *other]],
            "not_checked": {r["metric"]: gaps.get(r["metric"], "") for r in [*required, *unchecked]},
            "filters": describe_filters(ctx["filters"]),
        }
        return cls(df, summary, reasons)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["decision"] = self.decision
        out["reasons"] = list(self.reasons)
        return jsonable(out)  # type: ignore[no-any-return]

    def _table(self) -> pd.DataFrame:
        cols = ["metric", "baseline", "candidate", "effect", "tolerance", "p_value", "critical", "status"]
        return self.df[cols]

    def _repr_html_(self) -> str:
        color = _COLORS[self.decision]
        items = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons)
        banner = (
            f"<div style='background:{color};color:white;padding:6px 10px;border-radius:4px;font-weight:bold'>"
            f"{html.escape(self.decision.upper())}: {html.escape(self.summary['candidate'])} against "
            f"{html.escape(self.summary['baseline'])} ({html.escape(str(self.summary['model']))})</div>"
        )
        table = self._table().to_html(index=False, float_format=fmt, na_rep="")
        return f"<div class='predlog-verdict'>{banner}<ul>{items}</ul>{table}</div>"

    def plot(self) -> Figure:
        """One panel per metric: baseline and candidate, with the tolerance the candidate may
        reach (a dashed line); a distribution's panel shows its distance and the limit."""
        rows = [r for r in self.df.to_dict("records") if r["status"] != "no-data"]
        if not rows:
            raise ValueError("nothing to plot: no metric could be checked")
        cols = min(4, len(rows))
        n_rows = math.ceil(len(rows) / cols)
        fig = figure(figsize=(2.6 * cols, 2.6 * n_rows), layout="constrained")
        axes = fig.subplots(n_rows, cols, squeeze=False)
        for ax, r in zip(axes.flat, rows, strict=False):
            bad = r["status"] == "fail"
            color = _COLORS["rollback"] if bad else _COLORS["promote"]
            if r["kind"] == "distance":
                ax.bar(["distance"], [r["effect"]], color=color)
                limit = r["tolerance"]
            else:
                ax.bar(["baseline", "candidate"], [r["baseline"], r["candidate"]], color=["#888888", color])
                limit = r["baseline"] * r["tolerance"] if r["kind"] == "ratio" else r["baseline"] + r["tolerance"]
            ax.axhline(limit, color="black", linestyle="--", linewidth=1)
            ax.set_title(f"{r['metric']} ({r['status']})", fontsize=9)
        for ax in list(axes.flat)[len(rows) :]:
            ax.set_visible(False)
        fig.suptitle(str(self.summary["text"])[:120], fontsize=9)
        return fig


# ---------------------------------------------------------------- sentences


def _value(metric: str, x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if metric.startswith("latency_"):
        return f"{x:.1f} ms" if abs(x) >= 10 else f"{x:.3g} ms"
    if metric == "error_rate":
        return f"{x:.2%}"
    if metric in ("mae", "rmse", "log_loss"):
        return f"{x:.4g}"
    return f"{x:.3f}"


def _change(m: Metric, x: float) -> str:
    if m.kind == "ratio":
        return f"×{x:.2f}"
    if m.kind == "distance":
        return f"{x:.3f}"
    if m.name == "error_rate" or m.name == "accuracy":
        return f"{x * 100:+.2f} points"
    return f"{x:+.3f}"


def _p(p: float, bound: float) -> str:
    if p is None or math.isnan(p):
        return "no p-value"
    said = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    if bound and bound > 0.0005:
        said += f" ± {bound:.3f}"
    return said


def check_tolerance(m: Metric, tol: Any, name: str, hint: str = "") -> None:
    """A ValueError unless ``tol`` is a tolerance of ``m``'s kind and direction: a factor of at
    least 1 for a ratio, a drop (negative) or a rise (positive) for a difference. ``name``
    says where it was given (``"tolerances['accuracy']"``)."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol):
        raise ValueError(f"{name} must be a finite number, got {tol!r}")
    default = METRICS[m.name].tolerance
    if m.kind == "ratio" and tol < 1:
        raise ValueError(
            f"{name}={tol!r}: {m.name} is compared as a ratio (candidate / baseline), so its tolerance is the "
            f"largest factor allowed, at least 1: e.g. {default} lets it be {default - 1:.0%} worse"
        )
    if m.kind == "difference" and m.worse_when == "lower" and tol > 0:
        raise ValueError(
            f"{name}={tol!r}: {m.name} is worse when lower, so its tolerance is the largest drop allowed, "
            f"a negative difference{hint}: e.g. {-tol!r}"
        )
    if m.kind != "ratio" and m.worse_when == "higher" and tol < 0:
        raise ValueError(
            f"{name}={tol!r}: {m.name} is worse when higher, so its tolerance is the largest rise allowed, "
            f"a positive number{hint}: e.g. {-tol!r}"
        )


def reason(rec: dict[str, Any], m: Metric, alpha: float) -> str:
    """The sentence of one metric, with its numbers."""
    status = rec["status"]
    if status == "no-data":
        return f"{m.label} not checked: {rec['_missing'] or 'no values'}{_FIX.get(m.name, '')}."
    numbers = f"{_change(m, rec['effect'])}, tolerance {_change(m, rec['tolerance'])}"
    if m.tested:
        numbers += f", {_p(rec['p_value'], rec['p_bound'])}"
        if "paired" in rec["test"]:
            numbers += f", paired on {rec['n_candidate']:,}"
    else:
        numbers += ", no significance test"
    if m.kind == "distance":
        stat = rec["test"].split(" ")[0] if rec["test"] else "distance"
        head = f"{m.label} differs by {rec['effect']:.3f} ({stat}; tolerance {rec['tolerance']:.3f}"
        head += f", {_p(rec['p_value'], rec['p_bound'])})"
    else:
        head = f"{m.label} {_value(m.name, rec['candidate'])} vs {_value(m.name, rec['baseline'])} ({numbers})"
    if status == "fail":
        return f"{head}: worse beyond tolerance."
    beyond = (
        (rec["effect"] < rec["tolerance"])
        if (m.kind == "difference" and m.worse_when == "lower")
        else (rec["effect"] > rec["tolerance"])
    )
    if beyond:
        return f"{head}: beyond tolerance but not significant at alpha={alpha:g}."
    return f"{head}: within tolerance."
