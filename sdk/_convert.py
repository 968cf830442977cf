"""Records → Arrow tables in the store's predictions and labels schemas, in the writer thread.

How a call becomes rows (one row, or a batch of N rows with a shared ``batch_id``), where its
features are, its prediction and confidence. Single calls of one function with dict features
take a column-wise fast path; every value goes through :mod:`._columns`, so conversion never
fails: a batch Arrow refuses column-wise is rebuilt row by row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from . import _ids
from ._columns import (
    FLAGS,
    Flags,
    clean,
    column,
    flags_column,
    float_column,
    frame_columns,
    has_empty_struct,
    is_dataframe,
    is_missing,
    is_ndarray,
    is_series,
    plain,
    series_value,
    str_column,
    to_json,
    to_utc,
    truncate,
    utf8_ok,
)
from ._record import L_EXTRA, L_LABEL, L_PREDICTION_ID, L_REQUEST_ID, L_TS, Spec

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "finish_labels",
    "finish_predictions",
    "fixed_strings",
    "ids_for",
    "label_kind",
    "labels_to_tables",
    "records_to_table",
    "shape_of",
]


def _length(x: Any) -> int | None:
    if x is None or isinstance(x, (str, bytes, dict)):
        return None
    try:
        return len(x)
    except Exception:
        return None


class _Shape:
    """How one call becomes rows: a single row, or a batch of n rows."""

    __slots__ = ("batch", "n", "features", "outputs")

    def __init__(self, batch: bool, n: int, features: Any, outputs: Any) -> None:
        self.batch = batch
        self.n = n
        self.features = features
        self.outputs = outputs


def _bound_args(spec: Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    sig = spec.signature
    if sig is not None:
        try:
            bound = sig.bind_partial(*args, **kwargs)
        except TypeError:
            pass
        else:
            out = dict(bound.arguments)
            if spec.skip_self and out:
                out.pop(next(iter(out)))
            for name, p in sig.parameters.items():
                if p.kind is p.VAR_KEYWORD and name in out:
                    out.update(out.pop(name))
            return out
    out = {f"arg{i}": a for i, a in enumerate(args[spec.skip_self :])}
    out.update(kwargs)
    return out


def shape_of(
    spec: Spec, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any, exc: BaseException | None
) -> _Shape:
    """Decide single row or batch, and find the features. Same answer every time it is asked."""
    sel = spec.features
    if callable(sel):
        x = sel(*args, **kwargs)
        auto = False
    elif isinstance(sel, str):
        x = kwargs[sel] if sel in kwargs else _bound_args(spec, args, kwargs).get(sel)
        auto = False
    else:
        i = spec.skip_self
        if len(args) > i:
            x = args[i]
        elif kwargs and spec.signature is not None:
            # The first argument in signature order, as if it had been passed positionally:
            # a mapping / model / frame / array is the features, a scalar falls back below.
            bound = _bound_args(spec, args, kwargs)
            x = next(iter(bound.values())) if bound else None
        else:
            x = None
        auto = True
    t = type(x)
    if t is dict:
        return _Shape(False, 1, x, output)
    if isinstance(x, Mapping):
        return _Shape(False, 1, dict(x), output)
    if hasattr(x, "model_dump") and callable(x.model_dump) and not isinstance(x, type):
        return _Shape(False, 1, x.model_dump(), output)
    # A batch: N input rows and N outputs. A call that raised has no outputs; its N input
    # rows are still a batch, so the inputs are kept row by row, each row marked as an error.
    n_out = _length(output) if exc is None else -1
    if is_dataframe(x):
        n = len(x)
        if n >= 1 and (n_out == n or (n_out == -1 and n > 1)):
            return _Shape(True, n, x, output)
        if n == 1:
            return _Shape(False, 1, {str(k): v for k, v in x.iloc[0].to_dict().items()}, output)
        # Not one output per row: one row whose features are the frame's columns, as lists.
        return _Shape(False, 1, frame_columns(x), output)
    elif is_series(x):
        value = series_value(x)
        return _Shape(False, 1, value if isinstance(value, dict) else {str(x.name or "value"): value}, output)
    elif is_ndarray(x):
        if x.ndim == 1:
            names = spec.feature_names or tuple(f"f{i}" for i in range(x.shape[0]))
            if len(names) == x.shape[0]:
                return _Shape(False, 1, dict(zip(names, x.tolist())), output)
        elif x.ndim == 2 and x.shape[0] >= 1 and n_out in (x.shape[0], -1):
            return _Shape(True, x.shape[0], x, output)
        elif x.ndim == 2:
            # Not one output per row: one row whose features are the array's columns, as lists.
            given = spec.feature_names
            names = given if given and len(given) == x.shape[1] else tuple(f"f{i}" for i in range(x.shape[1]))
            return _Shape(False, 1, {name: x[:, j].tolist() for j, name in enumerate(names)}, output)
    elif isinstance(x, (list, tuple)) and x and n_out in (len(x), -1) and all(isinstance(r, Mapping) for r in x):
        return _Shape(True, len(x), x, output)
    elif auto and x is None and not args[spec.skip_self :] and not kwargs:
        return _Shape(False, 1, None, output)
    if auto:
        return _Shape(False, 1, _bound_args(spec, args, kwargs), output)
    return _Shape(False, 1, {"value": x} if x is not None else None, output)


def ids_for(rec: tuple[Any, ...]) -> list[str]:
    """Prediction ids of one record (one id, or one per batch row), on demand."""
    spec, args, kwargs, output, exc, t0, _t1, _cpu, _ctx, seq = rec[:10]
    try:
        shape = shape_of(spec, args, kwargs, output, exc)
    except Exception:
        return [_ids.uuid7_str(t0, seq)]
    if shape.batch:
        return [_ids.uuid7_str(t0, seq, i) for i in range(shape.n)]
    return [_ids.uuid7_str(t0, seq)]


def _error_fields(exc: BaseException) -> tuple[str, str]:
    t = type(exc)
    name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
    try:
        msg = str(exc)
    except Exception:
        msg = f"<str() of {name} raised>"
    return name, msg


def _confidence(spec: Spec | _SpecView, pred: Any) -> float | None:
    conf = spec.confidence
    if conf is None or pred is None:
        return None
    if conf == "max":
        value = pred
        if hasattr(value, "tolist"):
            value = value.tolist()
        while isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
            value = value[0]
        if isinstance(value, Mapping):
            value = list(value.values())
        value = max(value)
    elif callable(conf):
        value = conf(pred)
    else:
        return None
    if hasattr(value, "item"):
        value = value.item()
    value = float(value)
    return value


def _confidence_column(spec: Spec | _SpecView, predictions: list[Any], flags: Flags) -> pa.Array:
    """Confidence of each prediction; a row whose confidence cannot be computed is flagged."""
    import pyarrow as pa

    if spec.confidence is None:
        return pa.nulls(len(predictions), pa.float64())
    out: list[float | None] = []
    for i, pred in enumerate(predictions):
        try:
            out.append(_confidence(spec, pred))
        except Exception:
            out.append(None)
            flags.add(i, "confidence_error")
    return float_column(out, flags, "confidence")


def _unwrap_single(pred: Any) -> Any:
    """The prediction of a single call as data.

    A vectorised model called on one row returns a length-1 array (or a one-row DataFrame,
    or a length-1 Series): store the element. A one-row DataFrame with several columns is a
    dict; other frames are their columns as lists, other Series a list (or a dict by name).
    """
    if is_ndarray(pred) and pred.ndim >= 1 and pred.shape[0] == 1:
        return pred[0].tolist() if hasattr(pred[0], "tolist") else pred[0]
    if is_dataframe(pred):
        if len(pred) == 1:
            row = {str(k): clean(v) for k, v in pred.iloc[0].to_dict().items()}
            return next(iter(row.values())) if len(row) == 1 else row
        return frame_columns(pred)
    if is_series(pred):
        return clean(pred.iloc[0]) if len(pred) == 1 else series_value(pred)
    if hasattr(pred, "tolist") and hasattr(pred, "ndim"):
        return pred.tolist()
    return pred


def records_to_table(
    records: list[tuple[Any, ...]],
    flags: Flags,
    max_value_bytes: int,
) -> Iterator[tuple[pa.Table, list[tuple[Any, ...]]]]:
    """Convert prediction records to tables in the store's predictions schema.

    Yields (table, records) pairs: one table for the single calls (one row per record, in
    order), then one per batch call (its rows, one record), each as soon as it is built (a
    drain of large batch calls never sits in memory whole).
    """
    import numpy as np
    import pyarrow as pa

    fast = _fast_singles(records, flags, max_value_bytes)
    if fast is not None:
        yield fast, records
        return

    ts: list[int] = []
    seqs: list[int] = []
    model: list[str] = []
    version: list[str] = []
    latency: list[float] = []
    cpu: list[float | None] = []
    status: list[str] = []
    etype: list[str | None] = []
    emsg: list[str | None] = []
    req: list[str | None] = []
    user: list[str | None] = []
    features: list[Any] = []
    prediction: list[Any] = []
    confidence: list[float | None] = []
    context: list[Any] = []
    rate: list[float] = []
    batches: list[tuple[int, _Shape, tuple[Any, ...]]] = []
    singles: list[tuple[Any, ...]] = []

    for rec in records:
        spec, args, kwargs, output, exc, t0, t1, cpu_ns, ctx, seq = rec[:10]
        try:
            shape = shape_of(spec, args, kwargs, output, exc)
        except Exception as e:  # the features selector raised: keep the call, flag it
            shape = _Shape(False, 1, {"_features_error": to_json(f"{type(e).__name__}: {e}")}, output)
            flags.add(len(ts), "features_error")
        if shape.batch:
            batches.append((len(batches), shape, rec))
            continue
        row = len(ts)
        singles.append(rec)
        ts.append(t0)
        seqs.append(seq)
        model.append(spec.model)
        version.append(spec.version)
        latency.append((t1 - t0) / 1e6)
        cpu.append(min(cpu_ns, t1 - t0) / 1e6 if cpu_ns >= 0 else None)
        if ctx is not None:
            req.append(ctx.request_id)
            user.append(ctx.user_id)
            context.append(ctx.extra or None)
        else:
            req.append(None)
            user.append(None)
            context.append(None)
        features.append(shape.features)
        rate.append(spec.sample_rate if exc is None else 1.0)
        if exc is not None:
            name, msg = _error_fields(exc)
            status.append("error")
            etype.append(name)
            emsg.append(msg)
            prediction.append(None if spec.kind in ("sync", "async") else output or None)
            confidence.append(None)
            continue
        status.append("ok")
        etype.append(None)
        emsg.append(None)
        try:
            pred = spec.prediction(output) if spec.prediction is not None else _unwrap_single(output)
        except Exception as e:
            pred = output
            flags.add(row, f"prediction_error:{type(e).__name__}")
        prediction.append(pred)
        try:
            conf = _confidence(spec, pred)
            confidence.append(conf)
        except Exception:
            confidence.append(None)
            flags.add(row, "confidence_error")

    if ts:
        ts_arr = np.asarray(ts, dtype=np.int64)
        data, n = _ids.uuid7_array(ts_arr, np.asarray(seqs, dtype=np.uint64), None)
        ids = fixed_strings(data, n, 36)
        cols = {
            "prediction_id": ids,
            "ts": pa.array(ts_arr // 1000, type=pa.timestamp("us", tz="UTC")),
            "model": pa.array(model, type=pa.string()),
            "model_version": pa.array(version, type=pa.string()),
            "latency_ms": pa.array(latency, type=pa.float64()),
            "cpu_ms": pa.array(cpu, type=pa.float64()),
            "status": pa.array(status, type=pa.string()),
            "error_type": pa.array(etype, type=pa.string()),
            "error_message": str_column(emsg, "error_message", flags),
            "request_id": str_column(req, "request_id", flags),
            "user_id": str_column(user, "user_id", flags),
            "features": column(features, "features", flags),
            "prediction": column(prediction, "prediction", flags),
            "confidence": float_column(confidence, flags, "confidence"),
            "context": column(context, "context", flags),
            "sample_rate": pa.array(rate, type=pa.float64()),
        }
        yield finish_predictions(cols, flags, max_value_bytes), singles
    for _, shape, rec in batches:
        bflags = Flags()
        try:
            table = _batch_table(shape, rec, bflags, max_value_bytes)
        except Exception:  # Arrow (or a user object inside it) refused
            # Could not build the batch column-wise: keep every row as JSON rather than lose it.
            table = _batch_fallback(shape, rec, bflags, max_value_bytes)
        yield table, [rec]


_SCALAR_TYPES = frozenset({float, int, str, bool, type(None)})


def _dict_rows(rows: list[dict[Any, Any]], path: str, flags: Flags) -> pa.Array:
    """A struct column from dicts; fast when every row has the same keys (the usual case).

    The rows are transposed with C-level ``itemgetter`` and ``zip`` and each field becomes
    one Arrow array, which is several times faster than Arrow's row-wise dict converter.
    """
    import pyarrow as pa

    first = rows[0]
    keys = tuple(first)
    k = len(keys)
    if not k or set(map(len, rows)) != {k} or not all(type(key) is str and utf8_ok(key) for key in keys):
        return column(rows, path, flags)
    try:
        values = list(map(itemgetter(*keys), rows))
    except Exception:  # a row with other keys (KeyError), or a user Mapping acting up
        return column(rows, path, flags)
    fields = [values] if k == 1 else zip(*values)
    children = [column(list(c), f"{path}.{key}", flags) for key, c in zip(keys, fields)]
    return pa.StructArray.from_arrays(children, names=list(keys))


def _fast_singles(records: list[tuple[Any, ...]], flags: Flags, max_value_bytes: int) -> pa.Table | None:
    """Column-wise conversion of the common case, or None to take the general path.

    The common case: single calls of one function, none raised, features are the first
    argument and a plain dict. Every per-row step is a C-level map, zip or numpy operation.
    """
    import numpy as np
    import pyarrow as pa

    n = len(records)
    specs, args, _kwargs, outputs, excs, t0s, t1s, cpus, ctxs, seqs, _otel = zip(*records)
    spec = specs[0]
    if spec.features is not None or specs.count(spec) != n or excs.count(None) != n:
        return None
    try:
        firsts = list(map(itemgetter(spec.skip_self), args))
    except IndexError:
        return None
    if set(map(type, firsts)) != {dict}:
        return None

    if spec.prediction is None and set(map(type, outputs)) <= _SCALAR_TYPES:
        predictions: list[Any] = list(outputs)
    else:
        predictions = []
        for i, out in enumerate(outputs):
            try:
                predictions.append(spec.prediction(out) if spec.prediction is not None else _unwrap_single(out))
            except Exception as e:
                predictions.append(out)
                flags.add(i, f"prediction_error:{type(e).__name__}")
    confidence = _confidence_column(spec, predictions, flags)

    if ctxs.count(None) == n:
        request_id = user_id = pa.nulls(n, pa.string())
        context = pa.nulls(n, pa.null())
    else:
        request_id = str_column([c.request_id if c is not None else None for c in ctxs], "request_id", flags)
        user_id = str_column([c.user_id if c is not None else None for c in ctxs], "user_id", flags)
        context = column([c.extra or None if c is not None else None for c in ctxs], "context", flags)

    t0 = np.array(t0s, dtype=np.int64)
    cpu = np.array(cpus, dtype=np.float64)
    data, _ = _ids.uuid7_array(t0, np.array(seqs, dtype=np.uint64), None)
    cols = {
        "prediction_id": fixed_strings(data, n, 36),
        "ts": pa.array(t0 // 1000, type=pa.timestamp("us", tz="UTC")),
        "model": pa.repeat(pa.scalar(spec.model, pa.string()), n),
        "model_version": pa.repeat(pa.scalar(spec.version, pa.string()), n),
        "latency_ms": pa.array((np.array(t1s, dtype=np.int64) - t0) / 1e6),
        # The thread CPU clock can run a hair ahead of the wall clock: CPU time never exceeds
        # the call's wall time for one thread, so clamp.
        "cpu_ms": pa.array(np.minimum(cpu, np.array(t1s, dtype=np.int64) - t0) / 1e6, mask=cpu < 0),
        "status": pa.repeat(pa.scalar("ok", pa.string()), n),
        "request_id": request_id,
        "user_id": user_id,
        "features": _dict_rows(firsts, "features", flags),
        "prediction": column(predictions, "prediction", flags),
        "confidence": confidence,
        "context": context,
        "sample_rate": pa.array(np.full(n, spec.sample_rate, dtype=np.float64)),
    }
    return finish_predictions(cols, flags, max_value_bytes)


def fixed_strings(data: bytes, n: int, width: int) -> pa.Array:
    import numpy as np
    import pyarrow as pa

    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


# The predictions columns in store order, with the type a column gets when it is absent
# (ts, features and prediction are always given).
_PREDICTION_COLUMNS = (
    ("prediction_id", "string"),
    ("ts", "null"),
    ("model", "string"),
    ("model_version", "string"),
    ("latency_ms", "float64"),
    ("cpu_ms", "float64"),
    ("status", "string"),
    ("error_type", "string"),
    ("error_message", "string"),
    ("request_id", "string"),
    ("user_id", "string"),
    ("batch_id", "string"),
    ("batch_index", "int32"),
    ("batch_size", "int32"),
    ("trace_id", "string"),
    ("span_id", "string"),
    ("features", "null"),
    ("prediction", "null"),
    ("confidence", "float64"),
    ("context", "null"),
    ("sample_rate", "float64"),
)


def finish_predictions(cols: dict[str, pa.Array], flags: Flags, max_value_bytes: int) -> pa.Table:
    """Order the columns as the store format does, fill absent ones with nulls, store
    datetimes in UTC, truncate long values and add the ``capture_flags`` column."""
    import pyarrow as pa

    n = len(cols["prediction_id"])
    ordered = {
        name: cols[name] if name in cols else pa.nulls(n, getattr(pa, typ)()) for name, typ in _PREDICTION_COLUMNS
    }
    for name in ("features", "prediction", "context"):
        ordered[name] = to_utc(ordered[name])
    for name in ("error_message", "request_id", "user_id", "features", "prediction", "context"):
        ordered[name] = truncate(ordered[name], name, max_value_bytes, flags)
    ordered[FLAGS] = flags_column(flags, n)
    return pa.table(ordered)


def _batch_features(spec: Spec, shape: _Shape, flags: Flags) -> pa.Array:
    import pyarrow as pa

    x = shape.features
    if is_dataframe(x):
        try:
            table = pa.Table.from_pandas(x, preserve_index=False, nthreads=1)
            names = [str(c) for c in table.column_names]
            arrays = [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in table.columns]
            if not arrays:
                return pa.nulls(shape.n)
            if not any(has_empty_struct(a.type) for a in arrays):
                return pa.StructArray.from_arrays(arrays, names=names)
        except Exception:  # Arrow (or a user object inside it) refused
            pass
        return column([{str(k): v for k, v in r.items()} for r in x.to_dict("records")], "features", flags)
    if is_ndarray(x):
        ncols = x.shape[1]
        given = spec.feature_names
        names = list(given) if given and len(given) == ncols else [f"f{i}" for i in range(ncols)]
        try:
            if x.dtype.kind in "biuf":
                arrays = [pa.array(x[:, j]) for j in range(ncols)]
                return pa.StructArray.from_arrays(arrays, names=names)
        except Exception:  # Arrow (or a user object inside it) refused
            pass
        return column([dict(zip(names, row)) for row in x.tolist()], "features", flags)
    return column([plain(r) for r in x], "features", flags)


def _batch_predictions(spec: Spec | _SpecView, output: Any, n: int, flags: Flags) -> tuple[pa.Array, pa.Array]:
    import numpy as np
    import pyarrow as pa

    conf = None
    if spec.prediction is not None:
        try:
            output = spec.prediction(output)
        except Exception as e:  # keep the raw output, as for single calls
            for i in range(n):
                flags.add(i, f"prediction_error:{type(e).__name__}")
    if is_ndarray(output):
        if output.ndim == 1:
            pred = pa.array(output) if output.dtype.kind in "biufUSM?" else column(output.tolist(), "prediction", flags)
        else:
            rows = output.reshape(n, -1)
            pred = (
                pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), rows.shape[1])
                if rows.dtype.kind in "biuf"
                else column(rows.tolist(), "prediction", flags)
            )
            if pa.types.is_fixed_size_list(pred.type):
                pred = pred.cast(pa.list_(pred.type.value_type))
            if spec.confidence == "max" and rows.dtype.kind in "biuf":
                conf = pa.array(rows.max(axis=1).astype(np.float64))
    elif is_dataframe(output) and output.shape[1] > 1:
        # Several output columns (e.g. a class and a score): one struct per row, by name.
        pred = column(
            [dict(zip(map(str, output.columns), row)) for row in output.itertuples(index=False)], "prediction", flags
        )
    elif is_dataframe(output):
        return _batch_predictions(_SpecView(spec), output.iloc[:, 0].to_numpy(), n, flags)
    elif is_series(output):
        return _batch_predictions(_SpecView(spec), output.to_numpy(), n, flags)
    else:
        pred = column([plain(o) for o in output], "prediction", flags)
    if conf is None:
        if spec.confidence is None:
            conf = pa.nulls(n, pa.float64())
        else:
            conf = _confidence_column(spec, pred.to_pylist(), flags)
    return pred, conf


class _SpecView:
    """The spec without its ``prediction`` extractor (already applied)."""

    __slots__ = ("_spec",)
    prediction = None

    def __init__(self, spec: Spec | _SpecView) -> None:
        self._spec = spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)


def _batch_table(shape: _Shape, rec: tuple[Any, ...], flags: Flags, max_value_bytes: int) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    spec, args, kwargs, output, exc, t0, t1, cpu_ns, ctx, seq = rec[:10]
    n = shape.n
    data, _ = _ids.uuid7_array(
        np.full(n, t0, dtype=np.int64), np.full(n, seq, dtype=np.uint64), np.arange(n, dtype=np.uint64)
    )
    ids = fixed_strings(data, n, 36)
    if exc is None:
        pred, conf = _batch_predictions(spec, output, n, flags)
        status, etype, emsg = "ok", None, None
    else:
        pred, conf = pa.nulls(n, pa.null()), pa.nulls(n, pa.float64())
        status = "error"
        etype, emsg = _error_fields(exc)
    call_latency = (t1 - t0) / 1e6  # every row of a batch carries the whole call's latency
    ctx_extra = ctx.extra if ctx is not None and ctx.extra else None
    context = column([ctx_extra] * n, "context", flags) if ctx_extra else pa.nulls(n, pa.null())

    def rep(value: Any, typ: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, typ), n) if value is not None else pa.nulls(n, typ)

    cols = {
        "prediction_id": ids,
        "ts": pa.array(np.full(n, t0 // 1000, dtype=np.int64), type=pa.timestamp("us", tz="UTC")),
        "model": rep(spec.model, pa.string()),
        "model_version": rep(spec.version, pa.string()),
        "latency_ms": rep(call_latency, pa.float64()),
        "cpu_ms": rep(min(cpu_ns, t1 - t0) / 1e6 if cpu_ns >= 0 else None, pa.float64()),
        "status": rep(status, pa.string()),
        "error_type": rep(etype, pa.string()),
        "error_message": rep(emsg, pa.string()),
        "request_id": rep(ctx.request_id if ctx else None, pa.string()),
        "user_id": rep(ctx.user_id if ctx else None, pa.string()),
        "batch_id": rep(_ids.uuid7_str(t0, seq), pa.string()),
        "batch_index": pa.array(np.arange(n, dtype=np.int32)),
        "batch_size": rep(n, pa.int32()),
        "features": _batch_features(spec, shape, flags),
        "prediction": pred,
        "confidence": conf,
        "context": context,
        "sample_rate": rep(spec.sample_rate if exc is None else 1.0, pa.float64()),
    }
    return finish_predictions(cols, flags, max_value_bytes)


def _batch_fallback(shape: _Shape, rec: tuple[Any, ...], flags: Flags, max_value_bytes: int) -> pa.Table:
    """Last resort for a batch Arrow would not take column-wise: one JSON value per row."""
    spec, args, kwargs, output, exc, t0, t1, cpu_ns, ctx, seq = rec[:10]
    n = shape.n
    x = shape.features
    if is_dataframe(x):
        feats = x.to_dict("records")
    elif is_ndarray(x):
        feats = x.tolist()
    else:
        feats = list(x)
    try:
        outs = list(output)
    except Exception:
        outs = [output] * n
    singles = Flags()
    sub: list[tuple[Any, ...]] = [
        (_RowSpec(spec), (feats[i],), {}, outs[i] if i < len(outs) else None, None, t0, t1, cpu_ns, ctx, seq, None)
        for i in range(n)
    ]
    import numpy as np
    import pyarrow as pa

    tables = [t for t, _ in records_to_table(sub, singles, max_value_bytes)]
    table = pa.concat_tables(tables, promote_options="permissive")
    # Rows keep the identity of the batch call they came from.
    data, _ = _ids.uuid7_array(
        np.full(n, t0, dtype=np.int64), np.full(n, seq, dtype=np.uint64), np.arange(n, dtype=np.uint64)
    )
    fixes = {
        "prediction_id": fixed_strings(data, n, 36),
        "batch_id": pa.repeat(pa.scalar(_ids.uuid7_str(t0, seq), pa.string()), n),
        "batch_index": pa.array(np.arange(n, dtype=np.int32)),
        "batch_size": pa.repeat(pa.scalar(n, pa.int32()), n),
    }
    if exc is not None:
        etype, emsg = _error_fields(exc)
        fixes["status"] = pa.repeat(pa.scalar("error", pa.string()), n)
        fixes["error_type"] = pa.repeat(pa.scalar(etype, pa.string()), n)
        fixes["error_message"] = pa.repeat(pa.scalar(emsg, pa.string()), n)
    for name, arr in fixes.items():
        table = table.set_column(table.schema.get_field_index(name), name, arr)
    return table


class _RowSpec:
    """A spec view that treats one row of a failed batch as a single call."""

    __slots__ = ("_spec",)
    features = None
    prediction = None
    skip_self = 0
    signature = None
    kind = "sync"

    def __init__(self, spec: Spec) -> None:
        self._spec = spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)


def label_kind(value: Any) -> str:
    """The family of a label value: labels of one family share a file and a column type.

    A batch of labels of several families (a spam model's ``"ham"`` beside a churn model's
    ``1``) becomes one table per family, so that no label is widened to another's type.
    """
    if value is None or is_missing(value):
        return "null"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "bool"
    if isinstance(value, int) or (
        type(value).__module__ == "numpy"
        and getattr(value, "dtype", None) is not None
        and value.dtype.kind in "iu"
        and getattr(value, "ndim", 1) == 0
    ):
        return "int"
    if isinstance(value, float) or (
        type(value).__module__ == "numpy"
        and getattr(value, "dtype", None) is not None
        and value.dtype.kind == "f"
        and getattr(value, "ndim", 1) == 0
    ):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(value, dt.datetime):
        return "datetime"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, Mapping) or (hasattr(value, "model_dump") and not isinstance(value, type)):
        return "struct"
    if isinstance(value, (list, tuple)) or is_ndarray(value) or is_series(value):
        return "list"
    return f"other:{type(value).__qualname__}"


def labels_to_tables(records: list[tuple[Any, ...]], max_value_bytes: int) -> list[pa.Table]:
    """Label records ``(LABEL, prediction_id, request_id, label, extra, ts_ns)`` → labels tables,
    one per :func:`label_kind` family (in order of first appearance)."""
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for r in records:
        groups.setdefault(label_kind(r[L_LABEL]), []).append(r)
    return [_labels_table(group, max_value_bytes) for group in groups.values()]


def _labels_table(records: list[tuple[Any, ...]], max_value_bytes: int) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    flags = Flags()
    ts = np.asarray([r[L_TS] for r in records], dtype=np.int64)
    cols = {
        "prediction_id": str_column([r[L_PREDICTION_ID] for r in records], "prediction_id", flags),
        "request_id": str_column([r[L_REQUEST_ID] for r in records], "request_id", flags),
        "ts": pa.array(ts // 1000, type=pa.timestamp("us", tz="UTC")),
        "label": column([plain(r[L_LABEL]) for r in records], "label", flags),
        "extra": column([r[L_EXTRA] or None for r in records], "extra", flags),
    }
    return finish_labels(cols, flags, max_value_bytes)


def finish_labels(cols: dict[str, pa.Array], flags: Flags, max_value_bytes: int) -> pa.Table:
    """A labels table from its columns (``prediction_id``, ``request_id``, ``ts``, ``label``,
    ``extra``): datetimes in UTC, long values truncated, the ``capture_flags`` column added."""
    import pyarrow as pa

    cols = dict(cols)
    for name in ("label", "extra"):
        cols[name] = truncate(to_utc(cols[name]), name, max_value_bytes, flags)
    cols[FLAGS] = flags_column(flags, len(cols["ts"]))
    return pa.table(cols)
