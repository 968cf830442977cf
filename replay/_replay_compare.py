"""Replay, step two: comparing replayed predictions with the logged ones, on numpy arrays.

Numbers are equal within ``atol`` (NaN equals NaN); vectors are compared by their largest
element difference and by argmax (the class); anything else by equality, row by row.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._replay_call import Outputs, describe

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["Compared", "check_kind", "compare", "kind_of", "label_scores", "logged_values", "nan_argmax", "same"]


def kind_of(t: pa.DataType) -> str:
    """How predictions of this Arrow type are compared: number, vector or other."""
    import pyarrow as pa

    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return "number"
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and (
        pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type) or pa.types.is_boolean(t.value_type)
    ):
        return "vector"
    return "other"


def logged_values(arr: pa.Array, kind: str, json_text: bool) -> tuple[np.ndarray, np.ndarray]:
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


def same(a: Any, b: Any, atol: float) -> bool:
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
        return a.keys() == b.keys() and all(same(a[k], b[k], atol) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, atol) for x, y in zip(a, b))
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
class Compared:
    """Per-row comparison of one batch."""

    compared: np.ndarray  # bool
    changed: np.ndarray  # bool (meaningful where compared)
    difference: np.ndarray | None = None  # float, numbers
    abs_change: np.ndarray | None = None  # float, numbers and vectors
    logged_class: np.ndarray | None = None  # int64, -1 = none (vectors)
    replayed_class: np.ndarray | None = None


def compare(
    kind: str, logged: np.ndarray, lvalid: np.ndarray, out: Outputs, atol: float, with_difference: bool
) -> Compared:
    import numpy as np

    rep, rvalid = out.values, out.valid
    n = len(lvalid)
    compared = lvalid & rvalid
    if kind == "number" and logged.dtype != object and rep.dtype != object and rep.ndim == 1:
        if logged.dtype.kind in "iu" and rep.dtype.kind in "iu":
            same = logged == rep
            diff = (rep.astype(np.float64) - logged.astype(np.float64)) if with_difference else None
        elif logged.dtype.kind == "b" or rep.dtype.kind == "b":
            same = (
                logged.astype(bool) == rep.astype(bool)
                if logged.dtype.kind == rep.dtype.kind
                else (logged.astype(np.float64) == rep.astype(np.float64))
            )
            diff = None
        else:
            lf = logged.astype(np.float64, copy=False)
            rf = rep.astype(np.float64, copy=False)
            d = rf - lf
            with np.errstate(invalid="ignore"):
                same = (np.abs(d) <= atol) | (np.isnan(lf) & np.isnan(rf))
            diff = d if with_difference else None
        changed = ~same & compared
        res = Compared(compared, changed)
        if diff is not None:
            diff = np.where(compared, diff, np.nan)
            res.difference = diff
            res.abs_change = np.abs(diff)
        return res
    if (
        kind == "vector"
        and logged.ndim == 2
        and rep.ndim == 2
        and rep.dtype != object
        and rep.shape[1] == logged.shape[1]
    ):
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
        lc = np.where(lvalid, nan_argmax(lf), -1)
        rc = np.where(rvalid, nan_argmax(rf), -1)
        return Compared(compared, changed, None, abs_change, lc, rc)
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
        changed[i] = not same(a, b, atol)
        if kind == "vector":
            if la is not None and lb is not None and len(la) == len(lb):
                abs_change[i] = max((abs(x - y) for x, y in zip(la, lb)), default=0.0)  # type: ignore[index]
            elif changed[i]:
                abs_change[i] = math.inf  # type: ignore[index]
            else:
                abs_change[i] = 0.0  # type: ignore[index]
        elif (
            kind == "number"
            and isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and not isinstance(a, bool)
            and not isinstance(b, bool)
        ):
            abs_change[i] = abs(b - a)  # type: ignore[index]
            if diff is not None:
                diff[i] = b - a
    if kind != "vector":
        return Compared(compared, changed, diff, abs_change)
    return Compared(compared, changed, diff, abs_change, lc, rc)


def nan_argmax(m: np.ndarray) -> np.ndarray:
    import numpy as np

    if m.shape[1] == 0:
        return np.full(m.shape[0], -1, dtype=np.int64)
    filled = np.where(np.isnan(m), -np.inf, m)
    return np.asarray(filled.argmax(axis=1), dtype=np.int64)


def check_kind(kind: str, model: str, out: Outputs, fn: Callable[..., Any], logged: pa.Array) -> None:
    """Refuse to compare outputs of another kind than the logged ones (classes with
    probability vectors, vectors with numbers): every row would count as changed."""
    values = out.values
    numeric = values.dtype != object
    if kind == "vector" and numeric and values.ndim == 1 and out.valid.any():
        width = len(logged[0].as_py() or []) if len(logged) else 0
        raise ValueError(
            f"{describe(fn)} returns one number per row, but the logged predictions of model "
            f"{model!r} are vectors (probabilities, length {width}): comparing them would count every row as "
            "changed. Replay the function that returns the same kind (e.g. the estimator's predict_proba), or "
            "compare classes yourself from ReplayResult.df.logged_class"
        )
    if kind == "number" and numeric and values.ndim == 2 and out.valid.any():
        raise ValueError(
            f"{describe(fn)} returns a vector of {values.shape[1]} numbers per row, but the logged "
            f"predictions of model {model!r} are single numbers: comparing them would mean nothing. Replay "
            "the function that returns the same kind (e.g. the estimator's predict)"
        )


def label_scores(
    metric: str,
    kind: str,
    labels: pa.ChunkedArray,
    compared: np.ndarray,
    lvals: np.ndarray,
    lvalid: np.ndarray,
    rep: np.ndarray,
    rvalid: np.ndarray,
    lclass: np.ndarray | None,
    rclass: np.ndarray | None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
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
    cl = np.array([h and same(a, b, 0.0) for a, b, h in zip(lv, lab_list, has)], dtype=float)
    cr = np.array([h and same(a, b, 0.0) for a, b, h in zip(rv, lab_list, has)], dtype=float)
    return has, cl, cr
