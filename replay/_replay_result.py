"""Replay, step three: collecting the compared batches into a :class:`ReplayResult`."""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._replay_call import Caller, Outputs
from ._replay_compare import Compared, check_kind, compare, label_scores, logged_values

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

__all__ = ["BY_PREFIX", "Collected", "Plan", "ReplayResult", "jsonable"]


BY_PREFIX = "_by_"


@dataclasses.dataclass(repr=False, eq=False)
class ReplayResult:
    """What a replay found: one row per replayed prediction, and summaries of the changes.

    Attributes:
        df: One row per replayed prediction, sorted by ``ts`` (rows of equal ``ts`` in store
            order): ``prediction_id``, ``ts``,
            ``user_id``, ``model_version``, ``logged`` and ``replayed`` predictions,
            ``changed`` (nullable boolean; NA where the row could not be compared: no
            logged prediction, or the function failed on it), ``error`` (``"Type: message"``
            where the function raised on the row, row mode only); for number predictions
            ``difference`` (replayed − logged) and ``abs_change``; for vector predictions
            ``abs_change`` (largest absolute difference of an element), ``logged_class`` and
            ``replayed_class`` (argmax) and ``class_changed``; ``label`` when the store holds
            labels (latest label of the row, else of its request); one column per grouping
            column of :attr:`by_context` (e.g. ``context.country``).
        summary: ``model``, ``kind`` (``"number"``, ``"vector"`` or ``"other"``),
            ``mode`` (how the function was called), ``rows``, ``compared``, ``changed``,
            ``agreement_rate`` (unchanged / compared), ``errors``, ``mean_abs_change`` and
            ``max_abs_change`` (numbers and vectors), ``class_changes`` and
            ``class_agreement_rate`` (vectors: the argmax kept / compared, the headline there),
            ``labeled_rows``, ``elapsed_s`` and ``rows_per_s`` (the replay, without
            ``record_as`` writing), ``record_as``, ``recorded`` (rows written), and
            ``batch_error`` when ``mode="auto"`` fell back to row calls.
        by_version: Per logged ``model_version``: ``rows``, ``compared``, ``changed``,
            ``agreement_rate``, ``mean_abs_change``, ``max_abs_change``, ``class_changes``
            (vectors), and with labels ``labeled_rows``, ``logged_<metric>``,
            ``replayed_<metric>``.
        by_context: The ``top_k`` most frequent values of each grouping column (``by=``, or
            by default every scalar context key that is not id-like): ``column``, ``value``
            and the counts of :attr:`by_version`.
        accuracy: None without labels for the replayed rows; else ``metric`` (``"accuracy"``
            for classes, ``"mae"`` for float predictions), ``labeled_rows``, ``logged``,
            ``replayed`` and ``difference`` (replayed − logged), computed on the same rows:
            those with a label and both a logged and a replayed prediction.
    """

    df: pd.DataFrame
    summary: dict[str, Any]
    by_version: pd.DataFrame
    by_context: pd.DataFrame
    accuracy: dict[str, Any] | None

    @property
    def changes(self) -> pd.DataFrame:
        """The rows whose prediction changed."""
        return self.df[self.df["changed"].fillna(False).astype(bool)]

    def to_dict(self) -> dict[str, Any]:
        """Summary, accuracy and the group tables as JSON-friendly values."""
        return {
            "summary": jsonable(self.summary),
            "accuracy": jsonable(self.accuracy),
            "by_version": jsonable(self.by_version.reset_index().to_dict("records")),
            "by_context": jsonable(self.by_context.to_dict("records")),
        }

    def _headline(self) -> list[tuple[str, str]]:
        s = self.summary
        items = [("model", str(s["model"])), ("rows", f"{s['rows']:,}"), ("compared", f"{s['compared']:,}")]
        if s.get("class_changes") is not None:
            # Probability vectors: whether the predicted class stayed is the headline; an exact
            # vector match is rare for any retrained model.
            items += [
                ("class agreement", _pct(s.get("class_agreement_rate"))),
                ("class changes", f"{s['class_changes']:,}"),
                ("exact agreement", _pct(s["agreement_rate"])),
            ]
        else:
            items += [("changed", f"{s['changed']:,}"), ("agreement", _pct(s["agreement_rate"]))]
        if s.get("mean_abs_change") is not None:
            items.append(("mean |change|", _num(s["mean_abs_change"])))
            items.append(("max |change|", _num(s["max_abs_change"])))
        if s["errors"]:
            items.append(("errors", f"{s['errors']:,}"))
        acc = self.accuracy
        if acc is not None:
            fmt = _pct if acc["metric"] == "accuracy" else _num
            items.append(
                (
                    f"{acc['metric']} on {acc['labeled_rows']:,} labeled",
                    f"{fmt(acc['logged'])} logged → {fmt(acc['replayed'])} replayed",
                )
            )
        if s.get("recorded") is not None:
            items.append(("recorded as", f"{s['record_as']} ({s['recorded']:,} rows)"))
        items.append(("mode", str(s["mode"])))
        return items

    def __repr__(self) -> str:
        head = ", ".join(f"{k}={v}" for k, v in self._headline())
        lines = [f"ReplayResult({head})"]
        if len(self.by_version) > 1:
            lines.append("by version:\n" + self.by_version.to_string())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in self._headline()
        )
        parts = [
            "<div class='predlog-replay'>",
            f"<h4>Replay of {html.escape(str(self.summary['model']))}</h4>",
            f"<table>{rows}</table>",
            "<h5>By model version</h5>",
            self.by_version.to_html(float_format=_num, na_rep=""),
        ]
        if len(self.by_context):
            parts += ["<h5>By context</h5>", self.by_context.to_html(index=False, float_format=_num, na_rep="")]
        changed = self.changes
        if len(changed):
            cols = [
                c
                for c in (
                    "prediction_id",
                    "ts",
                    "user_id",
                    "model_version",
                    "logged",
                    "replayed",
                    "difference",
                    "logged_class",
                    "replayed_class",
                    "error",
                )
                if c in changed.columns
            ]
            parts += [
                f"<h5>Changed rows (first 5 of {len(changed):,})</h5>",
                changed[cols].head(5).to_html(index=False, float_format=_num, na_rep=""),
            ]
        errors = self.df[self.df["error"].notna()] if "error" in self.df.columns else self.df.iloc[:0]
        if len(errors):
            parts += [
                f"<h5>Errors (first 5 of {len(errors):,})</h5>",
                errors[["prediction_id", "error"]].head(5).to_html(index=False),
            ]
        parts.append("</div>")
        return "".join(parts)


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _num(x: Any) -> str:
    if x is None:
        return "-"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "-"
    return f"{v:.6g}"


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is not None and type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@dataclasses.dataclass
class Plan:
    model: str
    sql: str
    params: list[Any]
    feature_names: list[str]
    by: list[str]  # grouping columns, as the user names them
    by_default: bool
    kind: str
    json_text: bool
    has_labels: bool


class Collected:
    """Per-batch pieces of the result, concatenated at the end."""

    def __init__(self, plan: Plan, keep_for_record: bool, by_pid: pa.Table | None, by_rid: pa.Table | None) -> None:
        self.plan = plan
        self.keep = keep_for_record
        self.by_pid = by_pid
        self.by_rid = by_rid
        self.caller: Caller | None = None
        self.arrow: dict[str, list[Any]] = {
            k: [] for k in ("prediction_id", "ts", "user_id", "model_version", "request_id")
        }
        self.by: list[list[Any]] = [[] for _ in plan.by]
        # Group codes, made batch by batch (while the next batch is read): model_version, then by.
        self.groups: list[_GroupCodes | None] = [_GroupCodes() for _ in range(1 + len(plan.by))]
        self.logged: list[Any] = []  # the Arrow arrays, for vectors and nested predictions
        self.logged_values: list[np.ndarray] = []
        self.valid_logged: list[np.ndarray] = []
        self.replayed: list[np.ndarray] = []
        self.valid_replayed: list[np.ndarray] = []
        self.cmp: list[Compared] = []
        self.errors: list[list[str | None] | None] = []
        self.record_batches: list[tuple[pa.RecordBatch, Outputs]] = []

    def add(self, batch: pa.RecordBatch, caller: Caller, atol: float) -> None:
        import pyarrow as pa

        plan = self.plan
        feats = batch.column("features")
        names = [feats.type.field(i).name for i in range(feats.type.num_fields)]
        table = pa.Table.from_arrays(feats.flatten(), names=names)
        out, errors = caller.call(table, batch.column("prediction_id"))
        check_kind(plan.kind, plan.model, out, caller.fn, batch.column("prediction"))
        pred = batch.column("prediction")
        logged, lvalid = logged_values(pred, plan.kind, plan.json_text)
        with_difference = plan.kind == "number" and not pa.types.is_boolean(pred.type)
        self.cmp.append(compare(plan.kind, logged, lvalid, out, atol, with_difference))
        for k, parts in self.arrow.items():
            parts.append(batch.column(k))
        for i, parts in enumerate(self.by):
            parts.append(batch.column(f"{BY_PREFIX}{i}"))
        for i, codes in enumerate(self.groups):
            if codes is None:
                continue
            col = batch.column("model_version" if i == 0 else f"{BY_PREFIX}{i - 1}")
            if i and plan.by_default and not self.cmp[1:] and _id_like(col):
                self.groups[i] = None  # an id, not a group
                continue
            codes.add(col)
        self.logged.append(pred)
        self.logged_values.append(logged)
        self.valid_logged.append(lvalid)
        self.replayed.append(out.values)
        self.valid_replayed.append(out.valid)
        self.errors.append(errors)
        if self.keep:
            self.record_batches.append((batch, out))

    # ------------------------------------------------------------ building the result

    def result(self, caller: Caller, *, metric: str | None, top_k: int) -> ReplayResult:
        """Concatenate the batches, summarise in read order, then sort the rows by time."""
        import numpy as np
        import pandas as pd
        import pyarrow as pa

        plan = self.plan
        kind = plan.kind
        cmp = self.cmp

        def cat(parts: list[Any]) -> Any:
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        compared = cat([c.compared for c in cmp])
        changed = cat([c.changed for c in cmp])
        n = len(compared)
        difference = (
            cat([c.difference for c in cmp])
            if kind == "number" and all(c.difference is not None for c in cmp)
            else None
        )
        abs_change = (
            cat([c.abs_change for c in cmp])
            if kind in ("number", "vector") and all(c.abs_change is not None for c in cmp)
            else None
        )
        lclass = cat([c.logged_class for c in cmp]) if kind == "vector" else None
        rclass = cat([c.replayed_class for c in cmp]) if kind == "vector" else None
        rep = _concat_values(self.replayed)
        rvalid = cat(self.valid_replayed)
        lvals = _concat_values(self.logged_values)
        lvalid = cat(self.valid_logged)
        if any(e is not None for e in self.errors):
            errs: list[str | None] = []
            for e, c in zip(self.errors, cmp):
                errs.extend(e if e is not None else [None] * len(c.compared))
            err_arr = pa.array(errs, pa.string())
        else:
            err_arr = pa.nulls(n, pa.string())
        pids = pa.chunked_array(self.arrow["prediction_id"])
        labels = (
            _labels_all(pids, pa.chunked_array(self.arrow["request_id"]), self.by_pid, self.by_rid)
            if plan.has_labels
            else None
        )
        if labels is not None and labels.null_count == len(labels):
            labels = None

        # Scores on labeled rows.
        chosen = metric or ("mae" if kind == "number" and _float_logged(self.logged) else "accuracy")
        accuracy = None
        stats: dict[str, np.ndarray] = {"compared": compared, "changed": changed & compared}
        if abs_change is not None:
            stats["abs_change"] = abs_change
        if kind == "vector":
            stats["class_changed"] = (lclass != rclass) & compared
        if labels is not None:
            labeled, score_l, score_r = label_scores(
                chosen, kind, labels, compared, lvals, lvalid, rep, rvalid, lclass, rclass
            )
            if labeled is not None and labeled.any():
                logged_score = float(score_l[labeled].mean())  # type: ignore[index]
                replayed_score = float(score_r[labeled].mean())  # type: ignore[index]
                accuracy = {
                    "metric": chosen,
                    "labeled_rows": int(labeled.sum()),
                    "logged": logged_score,
                    "replayed": replayed_score,
                    "difference": replayed_score - logged_score,
                }
                stats["_labeled"] = labeled
                stats["_score_l"] = score_l  # type: ignore[assignment]
                stats["_score_r"] = score_r  # type: ignore[assignment]

        summary = {
            "model": plan.model,
            "kind": kind,
            "mode": caller.decided or caller.mode,
            **_overall(stats, kind),
            "errors": n - err_arr.null_count,
            "labeled_rows": accuracy["labeled_rows"] if accuracy else 0,
        }
        if caller.batch_error:
            summary["batch_error"] = caller.batch_error
        by_version = _grouped(stats, self.groups[0], kind, chosen)  # type: ignore[arg-type]
        by_version.index.name = "model_version"
        by_cols = [pa.chunked_array(parts) for parts in self.by]
        tables = []
        for name, codes in zip(plan.by, self.groups[1:]):
            if codes is None:
                continue
            g = _grouped(stats, codes, kind, chosen)
            g = g.sort_values("rows", ascending=False, kind="stable").head(top_k)
            g.insert(0, "value", g.index.to_numpy(dtype=object))
            g.insert(0, "column", name)
            tables.append(g.reset_index(drop=True))
        by_context = (
            pd.concat(tables, ignore_index=True)
            if tables
            else pd.DataFrame(columns=["column", "value", "rows", "compared", "changed", "agreement_rate"])
        )

        # The rows, sorted by time (a stable sort: rows of one ts keep the store's order). Rows
        # usually come in time order already (one writer, or compacted files): then no sort.
        ts = pa.chunked_array(self.arrow["ts"])
        ts_us = ts.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
        order: Any = None
        if n > 1 and not bool((ts_us[1:] >= ts_us[:-1]).all()):
            order = np.argsort(ts_us, kind="stable")

        def take(values: Any) -> Any:
            if order is None:
                return values
            if isinstance(values, (pa.Array, pa.ChunkedArray, pa.Table)):
                return values.take(pa.array(order))
            return values[order]

        ident = take(
            pa.table({k: pa.chunked_array(self.arrow[k]) for k in ("prediction_id", "ts", "user_id", "model_version")})
        )
        cols: dict[str, Any] = dict(ident.to_pandas().items())
        if kind == "vector" or (kind == "other" and _any_nested(self.logged)):
            cols["logged"] = _arrow_series(take(pa.chunked_array(self.logged)))
        else:
            cols["logged"] = _masked(take(lvals), take(lvalid))
        cols["replayed"] = _replayed_series(take(rep), take(rvalid))
        cmp_o = take(compared)
        cols["changed"] = pd.arrays.BooleanArray(take(changed), ~cmp_o)
        if difference is not None:
            cols["difference"] = take(difference)
        if abs_change is not None:
            cols["abs_change"] = take(abs_change)
        if kind == "vector":
            lo, ro = take(lclass), take(rclass)
            cols["logged_class"] = pd.arrays.IntegerArray(lo, lo < 0)
            cols["replayed_class"] = pd.arrays.IntegerArray(ro, ro < 0)
            cols["class_changed"] = pd.arrays.BooleanArray((lo != ro) & cmp_o, ~cmp_o)
        cols["error"] = take(err_arr).to_pandas()
        if labels is not None:
            lab = take(labels)
            cols["label"] = _arrow_series(lab) if _nested(lab.type) else lab.to_pandas()
        for name, col in zip(plan.by, by_cols):
            if name not in cols:
                cols[name] = take(col).to_pandas()
        df = pd.DataFrame(cols, copy=False)
        return ReplayResult(df, summary, by_version, by_context, accuracy)


def _labels_all(
    pids: pa.ChunkedArray, rids: pa.ChunkedArray, by_pid: pa.Table | None, by_rid: pa.Table | None
) -> pa.ChunkedArray | None:
    """The label of each row: the latest logged for its prediction_id, else for its request_id."""
    import pyarrow.compute as pc

    out = None
    for table, keys in ((by_pid, pids), (by_rid, rids)):
        if table is None:
            continue
        idx = pc.index_in(keys, value_set=table.column("k").combine_chunks())
        found = table.column("label").combine_chunks().take(idx)
        if out is None:
            out = found
        else:
            if found.type != out.type:
                found = found.cast(out.type)
            out = pc.if_else(out.is_valid(), out, found)
    return out


class _GroupCodes:
    """Integer codes of a grouping column, one global code per distinct value (None included)."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}
        self.values: list[Any] = []
        self.parts: list[np.ndarray] = []

    def code(self, value: Any) -> int:
        key = ("null",) if value is None else ("value", value)
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.values)
            self.values.append(value)
        return found

    def add(self, col: pa.Array) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_null(col.type):
            col = col.cast(pa.string())
        enc = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
        local = enc.dictionary.to_pylist()
        mapping = np.array([self.code(v) for v in local] + [self.code(None)], dtype=np.intp)
        idx = enc.indices.fill_null(len(local)).to_numpy(zero_copy_only=False)
        self.parts.append(mapping[idx])

    def codes(self) -> np.ndarray:
        import numpy as np

        return self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)


def _id_like(col: pa.ChunkedArray) -> bool:
    """Whether a grouping column looks like an id (most values distinct), judged on a sample."""
    import pyarrow.compute as pc

    sample = col.slice(0, 10_000)
    n = len(sample) - sample.null_count
    return bool(n >= 20 and int(pc.count_distinct(sample).as_py()) > n / 2)


def _nested(t: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_struct(t)
        or pa.types.is_map(t)
    )


def _any_nested(parts: list[Any]) -> bool:
    return bool(parts) and _nested(parts[0].type)


def _float_logged(parts: list[Any]) -> bool:
    import pyarrow as pa

    return bool(parts) and (pa.types.is_floating(parts[0].type) or pa.types.is_decimal(parts[0].type))


def _arrow_series(arr: pa.ChunkedArray | pa.Array) -> pd.Series:
    """An Arrow column as a pandas Series without a Python object per row."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(arr, pa.Array):
        arr = pa.chunked_array([arr])
    return pd.Series(pd.arrays.ArrowExtensionArray(arr))


def _concat_values(parts: list[np.ndarray]) -> np.ndarray:
    import numpy as np

    if len(parts) == 1:
        return parts[0]
    if all(p.dtype != object for p in parts) and len({p.shape[1:] for p in parts}) == 1:
        return np.concatenate(parts)
    out = np.empty(sum(len(p) for p in parts), dtype=object)
    i = 0
    for p in parts:
        out[i : i + len(p)] = list(p) if p.ndim == 1 else [r.tolist() for r in p]
        i += len(p)
    return out


def _masked(values: np.ndarray, valid: np.ndarray) -> Any:
    """A 1-D column with missing values where ``valid`` is false."""
    import numpy as np
    import pandas as pd

    if valid.all():
        return values
    if values.dtype.kind in "iu":
        return pd.arrays.IntegerArray(values.astype(np.int64), ~valid)
    if values.dtype.kind == "b":
        return pd.arrays.BooleanArray(values, ~valid)
    if values.dtype.kind == "f":
        return np.where(valid, values, np.nan)
    out = values.copy()
    out[~valid] = None
    return out


def _replayed_series(values: np.ndarray, valid: np.ndarray) -> Any:
    import numpy as np
    import pyarrow as pa

    if values.ndim == 2:
        width = values.shape[1]
        flat = pa.array(values.astype(np.float64, copy=False).ravel())
        lists = pa.FixedSizeListArray.from_arrays(flat, width).cast(pa.list_(pa.float64()))
        if not valid.all():
            lists = pa.ListArray.from_arrays(lists.offsets, lists.values, mask=pa.array(~valid))
        return _arrow_series(lists)
    return _masked(values, valid)


def _overall(stats: dict[str, np.ndarray], kind: str) -> dict[str, Any]:
    import numpy as np

    compared = stats["compared"]
    n_compared = int(compared.sum())
    changed = int(stats["changed"].sum())
    out: dict[str, Any] = {
        "rows": len(compared),
        "compared": n_compared,
        "changed": changed,
        "agreement_rate": (1.0 - changed / n_compared) if n_compared else None,
        "mean_abs_change": None,
        "max_abs_change": None,
        "class_changes": None,
    }
    if "abs_change" in stats:
        a = stats["abs_change"][compared]
        a = a[~np.isnan(a)]
        if len(a):
            out["mean_abs_change"] = float(a.mean())
            out["max_abs_change"] = float(a.max())
    if kind == "vector":
        out["class_changes"] = int(stats["class_changed"].sum())
        out["class_agreement_rate"] = (1.0 - out["class_changes"] / n_compared) if n_compared else None
    return out


def _grouped(stats: dict[str, np.ndarray], groups: _GroupCodes, kind: str, metric: str) -> pd.DataFrame:
    """The counts of :func:`_overall` per group (null is a group of its own)."""
    import numpy as np
    import pandas as pd

    names = groups.values
    m = len(names)
    codes = groups.codes()
    compared = stats["compared"]

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=mask.astype(np.float64), minlength=m)

    rows = np.bincount(codes, minlength=m)
    n_compared = count(compared)
    n_changed = count(stats["changed"])
    with np.errstate(invalid="ignore", divide="ignore"):
        cols: dict[str, Any] = {
            "rows": rows,
            "compared": n_compared.astype(np.int64),
            "changed": n_changed.astype(np.int64),
            "agreement_rate": np.where(n_compared > 0, 1.0 - n_changed / np.maximum(n_compared, 1), np.nan),
        }
        if "abs_change" in stats:
            a = stats["abs_change"]
            use = compared & ~np.isnan(a)
            total = np.bincount(codes[use], weights=a[use], minlength=m)
            k = np.bincount(codes[use], minlength=m)
            cols["mean_abs_change"] = np.where(k > 0, total / np.maximum(k, 1), np.nan)
            top = np.full(m, -np.inf)
            np.maximum.at(top, codes[use], a[use])
            cols["max_abs_change"] = np.where(k > 0, top, np.nan)
        if kind == "vector":
            cols["class_changes"] = count(stats["class_changed"]).astype(np.int64)
        if "_labeled" in stats:
            lab = stats["_labeled"]
            k = np.bincount(codes[lab], minlength=m)
            cols["labeled_rows"] = k
            for side, key in (("logged", "_score_l"), ("replayed", "_score_r")):
                total = np.bincount(codes[lab], weights=stats[key][lab], minlength=m)
                cols[f"{side}_{metric}"] = np.where(k > 0, total / np.maximum(k, 1), np.nan)
    keep = rows > 0
    index = pd.Index([v for v, kept in zip(names, keep) if kept], dtype=object)
    return pd.DataFrame({c: v[keep] for c, v in cols.items()}, index=index)
