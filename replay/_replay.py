"""Replay: re-run logged features through a predict function and compare with what was logged.

::

    from predlog.replay import Store

    s = Store("predlog-store")
    r = s.replay(new_model.predict, model="fraud", start="2026-03-01")
    r.summary["agreement_rate"], r.by_version, r.by_context, r.accuracy
    r.df[r.df.changed]

How it works. The rows to replay are streamed from DuckDB as Arrow record batches of
``batch_size`` rows (filters pushed into the scan, no ORDER BY: the result is sorted by
``ts`` at the end, which costs far less than sorting the features in the engine). For each
batch the ``features`` struct is split into columns in Arrow and handed to the function as a
pandas DataFrame (or as dicts, one call per row), the outputs are normalised to one value per
row, and the comparison with the logged ``prediction`` runs on numpy arrays. No Python code
runs per row unless the function is called per row or the predictions are neither numbers nor
numeric vectors.

Replays are never recorded as live traffic: the function is called inside
:func:`predlog.suppressed`, so a ``@predlog.capture``-decorated function writes nothing (its
recorder's stats do not move). With ``record_as="2.0.0-shadow"`` the replayed predictions are
written to the store afterwards, through a :class:`predlog.Recorder` of their own, as real
rows of that ``model_version``: same features, ``user_id`` and ``request_id`` as the original
row, its context plus ``context.replay_of`` = the original ``prediction_id``. Rows carrying
``context.replay_of`` are left out of later replays unless ``version=`` names versions. Such a
row's ``ts`` is the time it was recorded and its ``latency_ms`` means nothing (the prediction
was computed in a batch before); it is written by one recorded call per row (about 10-20k
rows/s), after the replay, and afterwards ``predlog.last_prediction_id()`` in the calling
thread names the last of them.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import json
import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import FilterError, StoreError, UnknownColumnError
from ._selection import REPLAY_OF, Selection, compile_selection
from ._shapes import NULL, fields_of, ident

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from ._store import Store
    from ._views import Snapshot

__all__ = ["NothingToReplayError", "ReplayResult", "replay"]

DEFAULT_BATCH_SIZE = 100_000
MODES = ("auto", "batch", "array", "row")
METRICS = ("accuracy", "mae")

# In row mode, this many failures in a row before any success means the function cannot
# work on these inputs at all: stop and raise instead of failing on every remaining row.
_FAIL_FAST_ROWS = 100
_BY_PREFIX = "_by_"


class NothingToReplayError(StoreError, LookupError):
    """No logged prediction matches the filters given to :meth:`Store.replay`."""


# ---------------------------------------------------------------- the result


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
            "summary": _jsonable(self.summary),
            "accuracy": _jsonable(self.accuracy),
            "by_version": _jsonable(self.by_version.reset_index().to_dict("records")),
            "by_context": _jsonable(self.by_context.to_dict("records")),
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
            items.append((
                f"{acc['metric']} on {acc['labeled_rows']:,} labeled",
                f"{fmt(acc['logged'])} logged → {fmt(acc['replayed'])} replayed",
            ))
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
            cols = [c for c in ("prediction_id", "ts", "user_id", "model_version", "logged", "replayed",
                                "difference", "logged_class", "replayed_class", "error") if c in changed.columns]
            parts += [f"<h5>Changed rows (first 5 of {len(changed):,})</h5>",
                      changed[cols].head(5).to_html(index=False, float_format=_num, na_rep="")]
        errors = self.df[self.df["error"].notna()] if "error" in self.df.columns else self.df.iloc[:0]
        if len(errors):
            parts += [f"<h5>Errors (first 5 of {len(errors):,})</h5>",
                      errors[["prediction_id", "error"]].head(5).to_html(index=False)]
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is not None and type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# ---------------------------------------------------------------- calling the function


def _first_param_kind(fn: Callable[..., Any]) -> str | None:
    """``"batch"``, ``"array"`` or ``"row"`` from the annotation of the first parameter."""
    try:
        sig = inspect.signature(fn)  # follows __wrapped__: a decorated function shows the original
    except (TypeError, ValueError):
        return None
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if params and params[0].name in ("self", "cls") and not inspect.ismethod(fn):
        params = params[1:]
    if not params or params[0].annotation is inspect.Parameter.empty:
        return None
    ann = params[0].annotation
    text = ann if isinstance(ann, str) else f"{getattr(ann, '__module__', '')}.{getattr(ann, '__qualname__', '')} {ann!r}"
    if "DataFrame" in text:
        return "batch"
    if "ndarray" in text or "NDArray" in text or "ArrayLike" in text:
        return "array"
    if any(w in text for w in ("dict", "Dict", "Mapping")):
        return "row"
    return None


def _estimator_columns(fn: Callable[..., Any], names: list[str]) -> list[str] | None:
    """The column order a fitted scikit-learn estimator expects, when ``fn`` is its method."""
    owner = getattr(fn, "__self__", None)
    wanted = getattr(owner, "feature_names_in_", None)
    if wanted is None:
        return None
    wanted = [str(w) for w in wanted]
    return wanted if set(wanted) <= set(names) else None


def _describe(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _py(value: Any) -> Any:
    """One row's output as a plain Python value (as the SDK stores a single call's output)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.ndim >= 1 and value.shape[0] == 1 and value.ndim <= 2:
            value = value[0]  # a vectorised model called on one row returns a length-1 array
        return value.tolist() if isinstance(value, np.ndarray) else value.item() if hasattr(value, "item") else value
    if isinstance(value, np.generic):
        return value.item()
    t = type(value)
    if t.__module__.startswith("pandas") and t.__name__ in ("Series", "DataFrame"):
        arr = value.to_numpy()
        return _py(arr)
    if inspect.isgenerator(value):
        return [_py(v) for v in value]
    if isinstance(value, tuple):
        return [_py(v) for v in value]
    if isinstance(value, list):
        return [_py(v) if isinstance(v, (np.generic, np.ndarray, tuple, list)) else v for v in value]
    return value


class _Outputs:
    """A batch of outputs normalised to one value per row: numeric 1-D or 2-D, or objects."""

    __slots__ = ("values", "valid")

    def __init__(self, values: np.ndarray, valid: np.ndarray) -> None:
        self.values = values  # 1-D numeric, 2-D numeric (vectors), or 1-D object
        self.valid = valid  # False where the function failed on the row


def _normalise(out: Any, n: int, kind: str) -> np.ndarray | None:
    """The output of one batch call as n values, or None when it does not hold n rows."""
    import numpy as np

    t = type(out)
    if t.__module__.startswith("pandas") and t.__name__ in ("Series", "DataFrame", "Index"):
        out = out.to_numpy()
    elif t.__module__.startswith("pyarrow") and hasattr(out, "to_numpy"):
        out = out.to_numpy(zero_copy_only=False)
    if inspect.isgenerator(out):
        out = list(out)
    if isinstance(out, (list, tuple)):
        if len(out) != n:
            return None
        try:
            arr = np.asarray(out)
        except (ValueError, TypeError):  # ragged
            arr = None
        if arr is None or arr.dtype.kind not in "biuf" or arr.ndim > 2:
            obj = np.empty(n, dtype=object)
            obj[:] = [_py(v) for v in out]
            return obj
        out = arr
    if not isinstance(out, np.ndarray):
        if n != 1 or not (np.isscalar(out) or isinstance(out, Mapping) or out is None):
            return None
        value = _py(out)
        if isinstance(value, (int, float)):
            return np.asarray([value])
        obj = np.empty(1, dtype=object)
        obj[0] = value
        return obj
    if out.ndim == 0 or out.shape[0] != n:
        return None
    if out.ndim == 2 and out.shape[1] == 1 and kind != "vector":
        out = out[:, 0]
    if out.ndim > 2:
        obj = np.empty(n, dtype=object)
        obj[:] = [v.tolist() for v in out]
        return obj
    if out.dtype.kind not in "biuf":
        if out.ndim == 2:
            obj = np.empty(n, dtype=object)
            obj[:] = [v.tolist() for v in out]
            return obj
        return np.asarray(out.astype(object))
    return np.asarray(out)


def _row_values(values: list[Any], valid: np.ndarray, kind: str) -> np.ndarray:
    """Per-row outputs (row mode) as one array, numeric when they all are."""
    import numpy as np

    n = len(values)
    ok = [v for v, good in zip(values, valid) if good]
    if ok and all(isinstance(v, (int, float)) for v in ok):
        if all(isinstance(v, bool) for v in ok):
            return np.asarray([bool(v) if good else False for v, good in zip(values, valid)])
        if all(isinstance(v, int) and -(2**63) <= v < 2**63 for v in ok):
            return np.asarray([v if good else 0 for v, good in zip(values, valid)], dtype=np.int64)
        return np.asarray([v if good else math.nan for v, good in zip(values, valid)], dtype=np.float64)
    if kind == "vector" and ok and all(isinstance(v, list) for v in ok):
        width = len(ok[0])
        if width and all(len(v) == width and all(isinstance(x, (int, float)) for x in v) for v in ok):
            out = np.full((n, width), np.nan)
            for i, (v, good) in enumerate(zip(values, valid)):
                if good:
                    out[i] = v
            return out
    obj = np.empty(n, dtype=object)
    obj[:] = [v if good else None for v, good in zip(values, valid)]
    return obj


@dataclasses.dataclass
class _Caller:
    """Calls the predict function on batches, deciding once how it takes its input."""

    fn: Callable[..., Any]
    mode: str
    kind: str
    columns: list[str] | None  # feature columns passed, in this order (None: all, logged order)
    decided: str | None = None
    batch_error: str | None = None
    failures_in_a_row: int = 0
    successes: int = 0
    first_failure: tuple[BaseException, str, Any] | None = None

    annotated: bool = False  # auto mode, and the annotation of the first parameter decided

    def __post_init__(self) -> None:
        if self.mode != "auto":
            self.decided = self.mode
        else:
            self.decided = _first_param_kind(self.fn)
            self.annotated = self.decided is not None

    def call(self, features: pa.Table, ids: pa.Array) -> tuple[_Outputs, list[str | None] | None]:
        import numpy as np

        n = features.num_rows
        if self.columns is not None:
            features = features.select(self.columns)
        decided = self.decided
        if decided in (None, "batch", "array"):
            frame = _frame(features)
            arg: Any = frame.to_numpy() if decided == "array" else frame
            try:
                out = self.fn(arg)
            except Exception as exc:
                if self.mode != "auto" or (self.annotated and decided in ("batch", "array")):
                    # It says it takes a batch: its own error is the answer, not a row-by-row retry
                    # with dicts it was never written for.
                    _note(exc, f"predlog replay: {_describe(self.fn)} raised on a batch of {n} rows "
                               f"(first prediction_id {ids[0].as_py()!r}); pass mode='row' to call it row by row "
                               "and collect the failing rows")
                    raise
                self.batch_error = f"{_error_text(exc)} (batch call; fell back to one call per row)"
                if decided is None:
                    self.decided = "row"
            else:
                _reject_async(out, self.fn)
                values = _normalise(out, n, self.kind)
                if values is not None:
                    if decided is None:
                        self.decided = "batch"
                    self.successes += n
                    self.failures_in_a_row = 0
                    return _Outputs(values, np.ones(n, dtype=bool)), None
                shape = getattr(out, "shape", None)
                problem = (f"{_describe(self.fn)} returned {type(out).__name__}"
                           f"{'' if shape is None else f' of shape {shape}'} for a batch of {n} rows; expected "
                           "one value per row")
                if self.mode != "auto":
                    raise ValueError(f"{problem}. Pass mode='row' to call it with one dict of features per row")
                self.batch_error = problem + " (fell back to one call per row)"
                if decided is None:
                    self.decided = "row"
        return self._rows(features, ids)

    def _rows(self, features: pa.Table, ids: pa.Array) -> tuple[_Outputs, list[str | None]]:
        import numpy as np

        n = features.num_rows
        dicts = features.to_pylist()
        values: list[Any] = [None] * n
        valid = np.zeros(n, dtype=bool)
        errors: list[str | None] = [None] * n
        fn = self.fn
        for i, x in enumerate(dicts):
            try:
                out = fn(x)
            except Exception as exc:
                errors[i] = _error_text(exc)
                self.failures_in_a_row += 1
                if self.first_failure is None:
                    self.first_failure = (exc, ids[i].as_py(), x)
                if self.successes == 0 and self.failures_in_a_row >= _FAIL_FAST_ROWS:
                    self.raise_all_failed()
                continue
            _reject_async(out, fn)
            values[i] = _py(out)
            valid[i] = True
            self.successes += 1
            self.failures_in_a_row = 0
        return _Outputs(_row_values(values, valid, self.kind), valid), errors

    def raise_all_failed(self) -> None:
        assert self.first_failure is not None
        exc, pid, x = self.first_failure
        text = repr(x)
        if len(text) > 500:
            text = text[:500] + "...}"
        extra = f"; the batch call failed too: {self.batch_error}" if self.batch_error else ""
        _note(exc, f"predlog replay: {_describe(self.fn)} raised on every row it was given "
                   f"({self.failures_in_a_row} tried, none succeeded){extra}. First failing row: "
                   f"prediction_id {pid!r}, features {text}")
        raise exc


def _frame(features: pa.Table) -> pd.DataFrame:
    """The features as a DataFrame; all-float features without nulls as one C-ordered block."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    cols = features.columns
    if cols and all(pa.types.is_float64(c.type) and c.null_count == 0 for c in cols):
        matrix = np.empty((features.num_rows, len(cols)))
        for j, c in enumerate(cols):
            matrix[:, j] = c.to_numpy()
        return pd.DataFrame(matrix, columns=features.column_names, copy=False)
    return features.to_pandas()


def _note(exc: BaseException, text: str) -> None:
    add = getattr(exc, "add_note", None)
    if add is not None:
        add(text)


def _error_text(exc: BaseException) -> str:
    try:
        msg = str(exc)
    except Exception:
        msg = "<str() raised>"
    if len(msg) > 300:
        msg = msg[:300] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _async_error(fn: Callable[..., Any]) -> TypeError:
    return TypeError(
        f"{_describe(fn)} is asynchronous; replay calls predict functions synchronously: pass a "
        "sync function, e.g. lambda x: asyncio.run(predict(x))"
    )


def _reject_async(out: Any, fn: Callable[..., Any]) -> None:
    if inspect.isawaitable(out) or inspect.isasyncgen(out):
        close = getattr(out, "close", None)
        if close is not None:
            close()  # no "never awaited" warning
        raise _async_error(fn)


# ---------------------------------------------------------------- logged predictions


def _kind_of(t: pa.DataType) -> str:
    """How predictions of this Arrow type are compared: number, vector or other."""
    import pyarrow as pa

    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return "number"
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and (
        pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type) or pa.types.is_boolean(t.value_type)
    ):
        return "vector"
    return "other"


def _logged(arr: pa.Array, kind: str, json_text: bool) -> tuple[np.ndarray, np.ndarray]:
    """Logged predictions as (values, valid): numeric 1-D/2-D where possible, else objects."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(arr)
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if kind == "number":
        t = arr.type
        if pa.types.is_decimal(t):
            arr = arr.cast(pa.float64())
        if pa.types.is_boolean(t):
            return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool), valid
        if pa.types.is_integer(t):
            return arr.fill_null(0).to_numpy(zero_copy_only=False), valid
        return arr.cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False), valid
    if kind == "vector":
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        good = lengths[valid] if valid.any() else np.zeros(0)
        if len(good) and good.min() == good.max() and good[0] > 0:
            width = int(good[0])
            flat = pc.list_flatten(arr).cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)
            out = np.full((n, width), np.nan)
            out[valid] = flat.reshape(-1, width)
            return out, valid
    values = arr.to_pylist()
    if json_text:
        values = [json.loads(v) if isinstance(v, str) else v for v in values]
    obj = np.empty(n, dtype=object)
    obj[:] = values
    return obj, valid


# ---------------------------------------------------------------- comparing


def _same(a: Any, b: Any, atol: float) -> bool:
    """Equality of two predictions, numbers within ``atol`` (NaN equals NaN)."""
    if hasattr(a, "tolist"):
        a = a.tolist()
    if hasattr(b, "tolist"):
        b = b.tolist()
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, bool) or isinstance(b, bool):
            return a == b
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return abs(a - b) <= atol
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k], atol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y, atol) for x, y in zip(a, b))
    return bool(a == b)


def _numeric_list(v: Any) -> list[float] | None:
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return [float(x) for x in v]
    return None


def _argmax(v: list[float]) -> int:
    best = 0
    for i, x in enumerate(v):
        if x > v[best] or (math.isnan(v[best]) and not math.isnan(x)):
            best = i
    return best


@dataclasses.dataclass
class _Compared:
    """Per-row comparison of one batch."""

    compared: np.ndarray  # bool
    changed: np.ndarray  # bool (meaningful where compared)
    difference: np.ndarray | None = None  # float, numbers
    abs_change: np.ndarray | None = None  # float, numbers and vectors
    logged_class: np.ndarray | None = None  # int64, -1 = none (vectors)
    replayed_class: np.ndarray | None = None


def _compare(kind: str, logged: np.ndarray, lvalid: np.ndarray, out: _Outputs, atol: float,
             with_difference: bool) -> _Compared:
    import numpy as np

    rep, rvalid = out.values, out.valid
    n = len(lvalid)
    compared = lvalid & rvalid
    if kind == "number" and logged.dtype != object and rep.dtype != object and rep.ndim == 1:
        if logged.dtype.kind in "iu" and rep.dtype.kind in "iu":
            same = logged == rep
            diff = (rep.astype(np.float64) - logged.astype(np.float64)) if with_difference else None
        elif logged.dtype.kind == "b" or rep.dtype.kind == "b":
            same = logged.astype(bool) == rep.astype(bool) if logged.dtype.kind == rep.dtype.kind else (
                logged.astype(np.float64) == rep.astype(np.float64))
            diff = None
        else:
            lf = logged.astype(np.float64, copy=False)
            rf = rep.astype(np.float64, copy=False)
            d = rf - lf
            with np.errstate(invalid="ignore"):
                same = (np.abs(d) <= atol) | (np.isnan(lf) & np.isnan(rf))
            diff = d if with_difference else None
        changed = ~same & compared
        res = _Compared(compared, changed)
        if diff is not None:
            diff = np.where(compared, diff, np.nan)
            res.difference = diff
            res.abs_change = np.abs(diff)
        return res
    if kind == "vector" and logged.ndim == 2 and rep.ndim == 2 and rep.dtype != object and rep.shape[1] == logged.shape[1]:
        lf = logged
        rf = rep.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            d = np.abs(rf - lf)
            both_nan = np.isnan(lf) & np.isnan(rf)
            d[both_nan] = 0.0
            d[np.isnan(d)] = np.inf
            abs_change = d.max(axis=1) if d.shape[1] else np.zeros(n)
        abs_change = np.where(compared, abs_change, np.nan)
        changed = compared & ~(abs_change <= atol)
        lc = np.where(lvalid, _nan_argmax(lf), -1)
        rc = np.where(rvalid, _nan_argmax(rf), -1)
        return _Compared(compared, changed, None, abs_change, lc, rc)
    # Per row: structs, strings, ragged vectors, or outputs whose shape differs from the logged one.
    changed = np.zeros(n, dtype=bool)
    abs_change = np.full(n, np.nan) if kind in ("vector", "number") else None
    lc = np.full(n, -1, dtype=np.int64)
    rc = np.full(n, -1, dtype=np.int64)
    diff = np.full(n, np.nan) if kind == "number" and with_difference else None
    lvals = logged.tolist() if logged.dtype != object else logged
    rvals = rep.tolist() if rep.dtype != object else rep
    for i in range(n):
        a = lvals[i]
        b = rvals[i]
        if kind == "vector":
            la, lb = _numeric_list(a), _numeric_list(b)
            if lvalid[i] and la is not None:
                lc[i] = _argmax(la)
            if rvalid[i] and lb is not None:
                rc[i] = _argmax(lb)
        if not compared[i]:
            continue
        changed[i] = not _same(a, b, atol)
        if kind == "vector":
            if la is not None and lb is not None and len(la) == len(lb):
                abs_change[i] = max((abs(x - y) for x, y in zip(la, lb)), default=0.0)  # type: ignore[index]
            elif changed[i]:
                abs_change[i] = math.inf  # type: ignore[index]
            else:
                abs_change[i] = 0.0  # type: ignore[index]
        elif kind == "number" and isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                and not isinstance(a, bool) and not isinstance(b, bool):
            abs_change[i] = abs(b - a)  # type: ignore[index]
            if diff is not None:
                diff[i] = b - a
    if kind != "vector":
        return _Compared(compared, changed, diff, abs_change)
    return _Compared(compared, changed, diff, abs_change, lc, rc)


def _nan_argmax(m: np.ndarray) -> np.ndarray:
    import numpy as np

    if m.shape[1] == 0:
        return np.full(m.shape[0], -1, dtype=np.int64)
    filled = np.where(np.isnan(m), -np.inf, m)
    return np.asarray(filled.argmax(axis=1), dtype=np.int64)


# ---------------------------------------------------------------- the query


@dataclasses.dataclass
class _Plan:
    model: str
    sql: str
    params: list[Any]
    feature_names: list[str]
    by: list[str]  # grouping columns, as the user names them
    by_default: bool
    kind: str
    json_text: bool
    has_labels: bool


def _resolve_model(store: Store, fn: Callable[..., Any], model: Any) -> str:
    present = store.models()
    if model is None:
        spec = getattr(fn, "__predlog_spec__", None)
        own = getattr(spec, "model", None)
        if own is not None and own in present:
            return str(own)
        if len(present) == 1:
            return str(present[0])
        if not present:
            raise NothingToReplayError(f"the store {store.root} holds no predictions yet; nothing to replay")
        raise FilterError(
            f"the store holds several models ({', '.join(repr(m) for m in present)}): pass model=... to say "
            "whose logged features to replay"
        )
    if not isinstance(model, str):
        listed = list(model) if isinstance(model, (list, tuple, set, frozenset)) else [model]
        if len(listed) != 1 or not isinstance(listed[0], str):
            raise FilterError(f"replay() takes one model (features differ between models), got model={model!r}")
        model = listed[0]
    store.selection(model=model)  # raises UnknownModelError with close matches
    return str(model)


def _plan(store: Store, snap: Snapshot, sel: Selection, *, by: Sequence[str] | None, has_labels: bool,
          need_request: bool, need_context: bool) -> _Plan:
    """The query reading the rows to replay: only the columns the replay needs, no ORDER BY."""
    assert sel.model is not None
    model = sel.model[0]
    shape = snap.shape("predictions")
    fields = fields_of(shape)
    feats = fields.get("features", NULL)
    if feats[0] != "struct":
        raise StoreError(
            f"the rows of model {model!r} have no feature columns to replay (features is "
            f"{'empty' if feats == NULL else 'not a struct of named features'})"
        )
    q = compile_selection(sel, shape, hashed=snap.hashed, hash_key=store._hash_key)
    context = fields_of(fields.get("context", NULL))
    pred = fields.get("prediction", NULL)
    json_text = pred[0] == "json"
    cols = ['"prediction_id"', '"ts"', '"user_id"', '"model_version"',
            '"request_id"' if need_request and "request_id" in fields else 'NULL::VARCHAR AS "request_id"',
            '"prediction"', '"features"',
            '"context"' if need_context and "context" in fields else 'NULL AS "context"']
    if by is None:
        by_names = [f"context.{k}" for k, s in context.items() if k != REPLAY_OF and s[0] == "scalar"]
        by_default = True
    else:
        by_names = [by] if isinstance(by, str) else list(by)
        by_default = False
    for i, name in enumerate(by_names):
        ref, leaf = q.resolve(name)
        expr = ref if leaf[0] in ("scalar", "null") else f"CAST(to_json({ref}) AS VARCHAR)"
        cols.append(f"{expr} AS {ident(f'{_BY_PREFIX}{i}')}")
    sql = f"SELECT {', '.join(cols)} FROM predictions{q.clause()}"
    if isinstance(sel.where, str):
        store._check_select(sql)
    return _Plan(model, sql, list(q.params), list(fields_of(feats)), by_names, by_default, "", json_text, has_labels)


def _latest_labels(store: Store, cur: duckdb.DuckDBPyConnection, snap: Snapshot,
                   sel: Selection) -> tuple[pa.Table | None, pa.Table | None]:
    """Latest label per prediction_id and per request_id (as Store.labeled joins them)."""
    store._narrow_labels(cur, snap, sel)
    lfields = fields_of(snap.shape("labels"))
    if "label" not in lfields:
        return None, None

    def latest(key: str) -> pa.Table | None:
        if key not in lfields:
            return None
        t = cur.sql(
            f"SELECT {key} AS k, label FROM labels WHERE {key} IS NOT NULL "
            f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY ts DESC) = 1"
        ).to_arrow_table()
        return t if t.num_rows else None

    return latest("prediction_id"), latest("request_id")


# ---------------------------------------------------------------- replay


def replay(
    store: Store,
    fn: Callable[..., Any],
    model: str | None = None,
    version: str | Sequence[str] | None = None,
    start: Any = None,
    end: Any = None,
    where: Mapping[str, Any] | str | None = None,
    batch_size: int | None = None,
    *,
    last: Any = None,
    user_id: str | Sequence[str] | None = None,
    status: str | Sequence[str] | None = "ok",
    mode: str = "auto",
    features: Sequence[str] | None = None,
    atol: float = 1e-9,
    by: str | Sequence[str] | None = None,
    top_k: int = 10,
    metric: str | None = None,
    record_as: str | None = None,
    include_replays: bool | None = None,
) -> ReplayResult:
    """Re-run logged features through ``fn`` and compare with the logged predictions.

    Args:
        fn: The predict function: the ``@predlog.capture``-decorated original (nothing is
            recorded: calls run inside :func:`predlog.suppressed`), a new version, an
            estimator's ``predict``/``predict_proba``, a function of a DataFrame batch...
        model: The logged model whose rows are replayed (one model: features differ between
            models). Default: the decorated function's model, else the store's only model.
        version, start, end, last, user_id, where: Filters, as in :meth:`Store.predictions`
            (``[start, end)`` in UTC; ``where`` a dict or your own SQL condition).
        status: Only rows with this status (default ``"ok"``, the rows with a logged
            prediction); ``None`` replays the rows that failed too.
        batch_size: Rows per batch read and predicted (default 100,000).
        mode: How ``fn`` is called. ``"batch"``: with a pandas DataFrame of the batch's
            features (columns = feature names, in logged order); ``"array"``: with
            ``frame.to_numpy()``; ``"row"``: once per row with a dict of features (the form
            in which single calls were logged). ``"auto"`` (default): from the annotation of
            the first parameter (``DataFrame`` → batch, ``ndarray`` → array, ``dict`` /
            ``Mapping`` → row), else a DataFrame is tried on the first batch, and if the call
            raises or does not return one value per row, the function is called per row
            from then on (``summary["batch_error"]`` says why). A batch that raises in
            auto mode is retried per row, so the failing rows are found.
        features: Feature names to pass, in this order (default: all, in logged order; for a
            bound method of a fitted scikit-learn estimator, its ``feature_names_in_``).
        atol: Absolute tolerance under which two numbers are equal (NaN equals NaN).
        by: Columns to break changes down by in :attr:`ReplayResult.by_context`
            (``"context.country"``, ``"features.plan"``, ``"user_id"``...). Default: every
            scalar context key, except id-like ones (more distinct values than half the rows).
        top_k: Values per grouping column kept in ``by_context`` (the most frequent).
        metric: With labels: ``"accuracy"`` or ``"mae"``. Default: ``"mae"`` for float
            predictions, ``"accuracy"`` otherwise (vectors: argmax compared with the label).
        record_as: Write the replayed predictions to the store as this model version (see
            the module docs); the version must not be one that holds live traffic.
        include_replays: Replay rows written by ``record_as`` too. Default: only when
            ``version=`` is given.

    Outputs are normalised to one value per row: a scalar, a vector (probabilities; a
    2-D array of shape (rows, k)), a pandas Series or DataFrame, or per-row dicts/lists.
    Logged and replayed values are compared element-wise: numbers within ``atol``
    (``difference`` = replayed − logged), vectors by their largest absolute element
    difference and by argmax, anything else (strings, dicts, ragged lists) by equality.

    Labels are joined as :meth:`Store.labeled` joins them: the latest label logged for the
    row's ``prediction_id``, else the latest for its ``request_id``.

    Errors: a function that raises on every row it is given (row mode: the first 100 rows,
    or all of them) re-raises its first exception with a note naming the row (id and
    features); a forced ``mode="batch"`` re-raises the batch's exception; rows that fail
    among others that succeed are kept, with the message in the ``error`` column, and
    counted in ``summary["errors"]``.

    If maintenance swaps files while the replay reads them, the store retries the query and
    the replay starts again, so ``fn`` may see some rows twice; ``record_as`` writes only
    once, after the replay.

    Raises:
        NothingToReplayError: no row matches the filters.
        UnknownModelError, UnknownColumnError, FilterError, TimeBoundError: bad filters.
    """
    import predlog

    if not callable(fn):
        raise TypeError(f"replay() takes a predict function, got {fn!r}")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: pass one of {', '.join(repr(m) for m in MODES)}")
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise ValueError(f"atol={atol!r} must be a non-negative number")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric={metric!r}: pass one of {', '.join(repr(m) for m in METRICS)} or None")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be a positive integer")
    if inspect.iscoroutinefunction(getattr(getattr(fn, "__predlog_spec__", None), "fn", fn)) or \
            inspect.iscoroutinefunction(fn):
        raise _async_error(fn)
    if record_as is not None:
        if not isinstance(record_as, str) or not record_as:
            raise ValueError(f"record_as={record_as!r} must be a non-empty version string")
        if store.read_only:
            raise StoreError(f"record_as needs write access to the store {store.root}, which is read-only here")
    model_name = _resolve_model(store, fn, model)
    sel = store.selection(model=model_name, version=version, start=start, end=end, last=last, user_id=user_id,
                          status=status, where=where, include_replays=include_replays)
    if record_as is not None:
        _check_record_as(store, model_name, record_as)
    from . import _files

    has_labels = bool(_files.label_files(store.root))
    t0 = time.perf_counter()

    def work(cur: duckdb.DuckDBPyConnection, snap: Snapshot) -> _Collected:
        by_pid, by_rid = _latest_labels(store, cur, snap, sel) if has_labels else (None, None)
        recording = record_as is not None
        plan = _plan(store, snap, sel, by=by, has_labels=has_labels,
                     need_request=recording or by_rid is not None, need_context=recording)
        columns = _columns(fn, plan.feature_names, features)
        reader = cur.sql(plan.sql, params=plan.params).to_arrow_reader(batch_size)
        collected = _Collected(plan, record_as is not None, by_pid, by_rid)
        caller: _Caller | None = None
        batches = _prefetch(reader)
        try:
            with predlog.suppressed():
                for batch in batches:
                    if batch.num_rows == 0:
                        continue
                    if caller is None:
                        plan.kind = _kind_of(batch.schema.field("prediction").type) if not plan.json_text else "other"
                        caller = _Caller(fn, mode, plan.kind, columns)
                    collected.add(batch, caller, atol)
        finally:
            batches.close()  # stops and joins the reading thread
            reader.close()  # an abandoned stream would keep the store's cursor busy for its next query
        collected.caller = caller
        return collected

    collected = store._run(work, sel, labels=has_labels)
    caller = collected.caller
    if caller is None:
        raise NothingToReplayError(_nothing_message(store, model_name, version, start, end, last, user_id, status, where))
    if caller.successes == 0 and caller.first_failure is not None:
        caller.raise_all_failed()
    result = collected.result(caller, metric=metric, top_k=top_k)
    elapsed = time.perf_counter() - t0
    result.summary["elapsed_s"] = elapsed
    result.summary["rows_per_s"] = result.summary["rows"] / elapsed if elapsed > 0 else None
    result.summary["record_as"] = record_as
    result.summary["recorded"] = None
    if record_as is not None:
        result.summary["recorded"] = _record(store, model_name, record_as, collected)
    return result


def _prefetch(reader: pa.RecordBatchReader, depth: int = 2) -> Generator[pa.RecordBatch, None, None]:
    """The reader's batches; the next ones are read by a thread while the caller works on this one.

    DuckDB releases the GIL while it scans, so reading overlaps predicting and comparing. The
    reader is used by the thread alone until it ends; on an early exit the thread is stopped
    (at most one more batch is read) and joined before the caller closes the reader.
    """
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for b in reader:
                if stop.is_set():
                    return
                q.put(b)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put((done, exc))
            return
        q.put((done, None))

    thread = threading.Thread(target=produce, name="predlog-replay-read", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, tuple) and item and item[0] is done:
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _columns(fn: Callable[..., Any], logged: list[str], wanted: Sequence[str] | None) -> list[str] | None:
    if wanted is not None:
        names = [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]
        missing = [w for w in names if w not in logged]
        if missing:
            raise UnknownColumnError(missing[0], logged, where="the logged features")
        return names
    target = getattr(getattr(fn, "__predlog_spec__", None), "fn", fn)
    return _estimator_columns(target, logged) or _estimator_columns(fn, logged)


def _nothing_message(store: Store, model: str, version: Any, start: Any, end: Any, last: Any, user_id: Any,
                     status: Any, where: Any) -> str:
    given = {"version": version, "start": start, "end": end, "last": last, "user_id": user_id, "status": status,
             "where": where}
    filters = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
    return (
        f"no logged prediction of model {model!r} matches {filters or 'no filter'} in store {store.root}; "
        "widen the filters (Store.predictions(...) with the same arguments shows what matches, "
        "Store.stats() what the store holds)"
    )


def _check_record_as(store: Store, model: str, version: str) -> None:
    def live_rows(cur: duckdb.DuckDBPyConnection, snap: Any) -> int:
        context = fields_of(fields_of(snap.shape("predictions")).get("context", NULL))
        cond = f" AND struct_extract(\"context\", '{REPLAY_OF}') IS NULL" if REPLAY_OF in context else ""
        row = cur.execute(f"SELECT count(*) FROM predictions WHERE model_version = ?{cond}", [version]).fetchone()
        return int(row[0]) if row else 0

    n = store.run(live_rows, model=model, labels=False)
    if n:
        raise ValueError(
            f"record_as={version!r} is a version of model {model!r} that holds {n:,} rows of live traffic; "
            f"replays recorded under it would mix with them: pick a new name such as {version + '-shadow'!r}"
        )


# ---------------------------------------------------------------- collecting batches


class _Collected:
    """Per-batch pieces of the result, concatenated at the end."""

    def __init__(self, plan: _Plan, keep_for_record: bool, by_pid: pa.Table | None, by_rid: pa.Table | None) -> None:
        self.plan = plan
        self.keep = keep_for_record
        self.by_pid = by_pid
        self.by_rid = by_rid
        self.caller: _Caller | None = None
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
        self.cmp: list[_Compared] = []
        self.errors: list[list[str | None] | None] = []
        self.record_batches: list[tuple[pa.RecordBatch, _Outputs]] = []

    def add(self, batch: pa.RecordBatch, caller: _Caller, atol: float) -> None:
        import pyarrow as pa

        plan = self.plan
        feats = batch.column("features")
        names = [feats.type.field(i).name for i in range(feats.type.num_fields)]
        table = pa.Table.from_arrays(feats.flatten(), names=names)
        out, errors = caller.call(table, batch.column("prediction_id"))
        _check_kind(plan, out, caller, batch.column("prediction"))
        pred = batch.column("prediction")
        logged, lvalid = _logged(pred, plan.kind, plan.json_text)
        with_difference = plan.kind == "number" and not pa.types.is_boolean(pred.type)
        self.cmp.append(_compare(plan.kind, logged, lvalid, out, atol, with_difference))
        for k, parts in self.arrow.items():
            parts.append(batch.column(k))
        for i, parts in enumerate(self.by):
            parts.append(batch.column(f"{_BY_PREFIX}{i}"))
        for i, codes in enumerate(self.groups):
            if codes is None:
                continue
            col = batch.column("model_version" if i == 0 else f"{_BY_PREFIX}{i - 1}")
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

    def result(self, caller: _Caller, *, metric: str | None, top_k: int) -> ReplayResult:
        """Concatenate the batches, summarise in read order, then sort the rows by time."""
        import numpy as np
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        plan = self.plan
        kind = plan.kind
        cmp = self.cmp

        def cat(parts: list[Any]) -> Any:
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        compared = cat([c.compared for c in cmp])
        changed = cat([c.changed for c in cmp])
        n = len(compared)
        difference = cat([c.difference for c in cmp]) if kind == "number" and all(
            c.difference is not None for c in cmp) else None
        abs_change = cat([c.abs_change for c in cmp]) if kind in ("number", "vector") and all(
            c.abs_change is not None for c in cmp) else None
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
        labels = _labels_all(pids, pa.chunked_array(self.arrow["request_id"]), self.by_pid, self.by_rid) \
            if plan.has_labels else None
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
            labeled, score_l, score_r = _label_scores(chosen, kind, labels, compared, lvals, lvalid, rep, rvalid,
                                                      lclass, rclass)
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
        by_context = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
            columns=["column", "value", "rows", "compared", "changed", "agreement_rate"])

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

        ident = take(pa.table({k: pa.chunked_array(self.arrow[k])
                               for k in ("prediction_id", "ts", "user_id", "model_version")}))
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


def _check_kind(plan: _Plan, out: _Outputs, caller: _Caller, logged: pa.Array) -> None:
    """Refuse to compare outputs of another kind than the logged ones (classes with
    probability vectors, vectors with numbers): every row would count as changed."""
    values = out.values
    numeric = values.dtype != object
    if plan.kind == "vector" and numeric and values.ndim == 1 and out.valid.any():
        width = len(logged[0].as_py() or []) if len(logged) else 0
        raise ValueError(
            f"{_describe(caller.fn)} returns one number per row, but the logged predictions of model "
            f"{plan.model!r} are vectors (probabilities, length {width}): comparing them would count every row as "
            "changed. Replay the function that returns the same kind (e.g. the estimator's predict_proba), or "
            "compare classes yourself from ReplayResult.df.logged_class"
        )
    if plan.kind == "number" and numeric and values.ndim == 2 and out.valid.any():
        raise ValueError(
            f"{_describe(caller.fn)} returns a vector of {values.shape[1]} numbers per row, but the logged "
            f"predictions of model {plan.model!r} are single numbers: comparing them would mean nothing. Replay "
            "the function that returns the same kind (e.g. the estimator's predict)"
        )


def _labels_all(pids: pa.ChunkedArray, rids: pa.ChunkedArray, by_pid: pa.Table | None,
                by_rid: pa.Table | None) -> pa.ChunkedArray | None:
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

    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
                or pa.types.is_struct(t) or pa.types.is_map(t))


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
        out[i:i + len(p)] = list(p) if p.ndim == 1 else [r.tolist() for r in p]
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


def _label_scores(metric: str, kind: str, labels: pa.ChunkedArray, compared: np.ndarray, lvals: np.ndarray,
                  lvalid: np.ndarray, rep: np.ndarray, rvalid: np.ndarray, lclass: np.ndarray | None,
                  rclass: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Which rows are scored, and the score of the logged and replayed prediction on each.

    Scores are 1.0/0.0 (correct or not) for ``"accuracy"``, the absolute error for ``"mae"``.
    """
    import numpy as np
    import pyarrow as pa

    has = np.asarray(labels.is_valid().to_numpy(zero_copy_only=False), dtype=bool) & compared
    t = labels.type
    numeric_label = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
    if metric == "mae" or kind == "vector":
        if not numeric_label:
            return None, None, None
        lab = labels.cast(pa.float64()).fill_null(math.nan).to_numpy()
        if kind == "vector":
            ok = has & (lclass >= 0) & (rclass >= 0)  # type: ignore[operator]
            return ok, (lclass == lab).astype(float), (rclass == lab).astype(float)
        if lvals.dtype == object or rep.dtype == object or rep.ndim != 1:
            return None, None, None
        lf = lvals.astype(np.float64)
        rf = rep.astype(np.float64)
        with np.errstate(invalid="ignore"):
            return has & ~np.isnan(lf) & ~np.isnan(rf), np.abs(lf - lab), np.abs(rf - lab)
    if numeric_label and lvals.dtype != object and rep.dtype != object and rep.ndim == 1:
        lab = labels.cast(pa.float64()).fill_null(math.nan).to_numpy()
        return has, (lvals.astype(np.float64) == lab).astype(float), (rep.astype(np.float64) == lab).astype(float)
    lab_list = labels.to_pylist()
    lv = lvals.tolist()
    rv = rep.tolist()
    cl = np.array([h and _same(a, b, 0.0) for a, b, h in zip(lv, lab_list, has)], dtype=float)
    cr = np.array([h and _same(a, b, 0.0) for a, b, h in zip(rv, lab_list, has)], dtype=float)
    return has, cl, cr


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


# ---------------------------------------------------------------- record_as


def _record(store: Store, model: str, version: str, collected: _Collected) -> int:
    """Write the replayed predictions as rows of ``version``; return how many were written."""
    import predlog

    rec = predlog.Recorder(
        store=store.root, model=model, version=version, enabled=True, sample_rate=1.0,
        on_full="block", block_timeout_s=60.0, tracing=False, otlp=False, metrics=False,
        drop_fields=(), hash_fields=(), redact=(), processors=(),
    )

    # The features and prediction of the original row are stored as they are (already
    # processed when they were first written: not hashed or redacted again).
    @rec.capture(model=model, version=version)
    def replayed(features: dict[str, Any], prediction: Any) -> Any:
        return prediction

    written = 0
    try:
        for batch, out in collected.record_batches:
            feats = batch.column("features").to_pylist()
            pids = batch.column("prediction_id").to_pylist()
            users = batch.column("user_id").to_pylist()
            requests = batch.column("request_id").to_pylist()
            contexts = batch.column("context").to_pylist()
            values = out.values.tolist()
            valid = out.valid.tolist()
            for i, ok in enumerate(valid):
                if not ok:
                    continue
                extra = {k: v for k, v in (contexts[i] or {}).items() if v is not None and k != REPLAY_OF}
                extra[REPLAY_OF] = pids[i]
                with predlog.context(user_id=users[i], request_id=requests[i], **extra):
                    replayed(feats[i] if feats[i] is not None else {}, values[i])
                written += 1
        ok_flush = rec.flush(timeout_s=max(30.0, written / 2000))
        stats = rec.stats()
    finally:
        rec.shutdown(timeout_s=10.0)
    if not ok_flush or stats["dropped_total"] or stats["captured"] != written:
        raise StoreError(
            f"record_as={version!r}: {written} replayed rows were to be written but the recorder reports "
            f"captured={stats['captured']}, written={stats['written']}, dropped={stats['dropped']}; "
            "rows not written stay in its write-ahead segment and are sealed by the next writer"
        )
    return written
