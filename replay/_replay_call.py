"""Replay, step one: calling a predict function on logged features, however it takes them.

The function gets a pandas DataFrame batch (``"batch"``), its numpy array (``"array"``), or
one dict of features per row (``"row"``); ``"auto"`` decides from the annotation of its first
parameter, else tries a batch and falls back to rows. Outputs are normalised to one value per
row: numbers (1-D), vectors (2-D) or objects.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import UnknownColumnError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "MODES",
    "Caller",
    "Outputs",
    "async_error",
    "describe",
    "feature_columns",
    "feature_frame",
    "first_param_kind",
    "normalise",
    "note",
    "plain_value",
    "prefetch",
    "reject_async",
    "row_values",
]


MODES = ("auto", "batch", "array", "row")


_FAIL_FAST_ROWS = 100


def first_param_kind(fn: Callable[..., Any]) -> str | None:
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
    text = (
        ann if isinstance(ann, str) else f"{getattr(ann, '__module__', '')}.{getattr(ann, '__qualname__', '')} {ann!r}"
    )
    if "DataFrame" in text:
        return "batch"
    if "ndarray" in text or "NDArray" in text or "ArrayLike" in text:
        return "array"
    if any(w in text for w in ("dict", "Dict", "Mapping")):
        return "row"
    return None


def estimator_columns(fn: Callable[..., Any], names: list[str]) -> list[str] | None:
    """The column order a fitted scikit-learn estimator expects, when ``fn`` is its method."""
    owner = getattr(fn, "__self__", None)
    wanted = getattr(owner, "feature_names_in_", None)
    if wanted is None:
        return None
    wanted = [str(w) for w in wanted]
    return wanted if set(wanted) <= set(names) else None


def describe(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def plain_value(value: Any) -> Any:
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
        return plain_value(arr)
    if inspect.isgenerator(value):
        return [plain_value(v) for v in value]
    if isinstance(value, tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, list):
        return [plain_value(v) if isinstance(v, (np.generic, np.ndarray, tuple, list)) else v for v in value]
    return value


class Outputs:
    """A batch of outputs normalised to one value per row: numeric 1-D or 2-D, or objects."""

    __slots__ = ("values", "valid")

    def __init__(self, values: np.ndarray, valid: np.ndarray) -> None:
        self.values = values  # 1-D numeric, 2-D numeric (vectors), or 1-D object
        self.valid = valid  # False where the function failed on the row


def normalise(out: Any, n: int, kind: str) -> np.ndarray | None:
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
            obj[:] = [plain_value(v) for v in out]
            return obj
        out = arr
    if not isinstance(out, np.ndarray):
        if n != 1 or not (np.isscalar(out) or isinstance(out, Mapping) or out is None):
            return None
        value = plain_value(out)
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


def row_values(values: list[Any], valid: np.ndarray, kind: str) -> np.ndarray:
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
class Caller:
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
            self.decided = first_param_kind(self.fn)
            self.annotated = self.decided is not None

    def call(self, features: pa.Table, ids: pa.Array) -> tuple[Outputs, list[str | None] | None]:
        import numpy as np

        n = features.num_rows
        if self.columns is not None:
            features = features.select(self.columns)
        decided = self.decided
        if decided in (None, "batch", "array"):
            frame = feature_frame(features)
            arg: Any = frame.to_numpy() if decided == "array" else frame
            try:
                out = self.fn(arg)
            except Exception as exc:
                if self.mode != "auto" or (self.annotated and decided in ("batch", "array")):
                    # It says it takes a batch: its own error is the answer, not a row-by-row retry
                    # with dicts it was never written for.
                    note(
                        exc,
                        f"predlog replay: {describe(self.fn)} raised on a batch of {n} rows "
                        f"(first prediction_id {ids[0].as_py()!r}); pass mode='row' to call it row by row "
                        "and collect the failing rows",
                    )
                    raise
                self.batch_error = f"{error_text(exc)} (batch call; fell back to one call per row)"
                if decided is None:
                    self.decided = "row"
            else:
                reject_async(out, self.fn)
                values = normalise(out, n, self.kind)
                if values is not None:
                    if decided is None:
                        self.decided = "batch"
                    self.successes += n
                    self.failures_in_a_row = 0
                    return Outputs(values, np.ones(n, dtype=bool)), None
                shape = getattr(out, "shape", None)
                problem = (
                    f"{describe(self.fn)} returned {type(out).__name__}"
                    f"{'' if shape is None else f' of shape {shape}'} for a batch of {n} rows; expected "
                    "one value per row"
                )
                if self.mode != "auto":
                    raise ValueError(f"{problem}. Pass mode='row' to call it with one dict of features per row")
                self.batch_error = problem + " (fell back to one call per row)"
                if decided is None:
                    self.decided = "row"
        return self._rows(features, ids)

    def _rows(self, features: pa.Table, ids: pa.Array) -> tuple[Outputs, list[str | None]]:
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
                errors[i] = error_text(exc)
                self.failures_in_a_row += 1
                if self.first_failure is None:
                    self.first_failure = (exc, ids[i].as_py(), x)
                if self.successes == 0 and self.failures_in_a_row >= _FAIL_FAST_ROWS:
                    self.raise_all_failed()
                continue
            reject_async(out, fn)
            values[i] = plain_value(out)
            valid[i] = True
            self.successes += 1
            self.failures_in_a_row = 0
        return Outputs(row_values(values, valid, self.kind), valid), errors

    def raise_all_failed(self) -> None:
        assert self.first_failure is not None
        exc, pid, x = self.first_failure
        text = repr(x)
        if len(text) > 500:
            text = text[:500] + "...}"
        extra = f"; the batch call failed too: {self.batch_error}" if self.batch_error else ""
        note(
            exc,
            f"predlog replay: {describe(self.fn)} raised on every row it was given "
            f"({self.failures_in_a_row} tried, none succeeded){extra}. First failing row: "
            f"prediction_id {pid!r}, features {text}",
        )
        raise exc


def feature_frame(features: pa.Table) -> pd.DataFrame:
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


def note(exc: BaseException, text: str) -> None:
    add = getattr(exc, "add_note", None)
    if add is not None:
        add(text)


def error_text(exc: BaseException) -> str:
    try:
        msg = str(exc)
    except Exception:
        msg = "<str() raised>"
    if len(msg) > 300:
        msg = msg[:300] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def async_error(fn: Callable[..., Any]) -> TypeError:
    return TypeError(
        f"{describe(fn)} is asynchronous; replay calls predict functions synchronously: pass a "
        "sync function, e.g. lambda x: asyncio.run(predict(x))"
    )


def reject_async(out: Any, fn: Callable[..., Any]) -> None:
    if inspect.isawaitable(out) or inspect.isasyncgen(out):
        close = getattr(out, "close", None)
        if close is not None:
            close()  # no "never awaited" warning
        raise async_error(fn)


def prefetch(reader: pa.RecordBatchReader, depth: int = 2) -> Generator[pa.RecordBatch, None, None]:
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


def feature_columns(fn: Callable[..., Any], logged: list[str], wanted: Sequence[str] | None) -> list[str] | None:
    if wanted is not None:
        names = [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]
        missing = [w for w in names if w not in logged]
        if missing:
            raise UnknownColumnError(missing[0], logged, where="the logged features")
        return names
    target = getattr(getattr(fn, "__predlog_spec__", None), "fn", fn)
    return estimator_columns(target, logged) or estimator_columns(fn, logged)
