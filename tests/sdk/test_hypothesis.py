"""Property tests: whatever a predict function is called with, the call is unchanged, nothing
raises, no call is lost, and every value reads back from Parquet as it went in, or is flagged
(``json:<path>`` stored as JSON text, ``text:<path>`` a scalar among scalars of other types
stored as its text, ``truncated:<path>`` cut to the size cap).

Each example is a batch of calls through one Recorder and one flush, read back from the files.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import predlog

CAP = 256  # max_value_bytes: long strings and bytes are cut to this and flagged


class Opaque:
    """An object Arrow knows nothing about."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Opaque({self.n})"


class BadRepr:
    """Even repr() fails: the last resort must still store something."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # how hypothesis prints examples
        p.text("BadRepr()")


class BadLen:
    """Looks like a sequence to a converter, then raises."""

    def __len__(self) -> int:
        raise RuntimeError("no len")

    def __iter__(self) -> Any:
        raise RuntimeError("no iter")

    def __repr__(self) -> str:
        return "BadLen()"


# ---------------------------------------------------------------- strategies

# Any code point, control characters and lone surrogates included (joined from a list:
# st.text() would leave the surrogates out).
text = st.lists(
    st.characters(codec=None, categories=("L", "M", "N", "P", "S", "Z", "C"))
    | st.sampled_from(["\ud800", "\udc8e", "\udfff", "\x00", "\u200b", "\U0001d518"]),
    max_size=12,
).map("".join)
long_text = st.builds(
    lambda c, n: c * n, st.characters(codec=None, exclude_categories=("Cs",)), st.integers(CAP // 4, 3 * CAP)
)
long_bytes = st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=3), st.integers(CAP // 2, 3 * CAP))
np_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.integers(-128, 127).map(np.int8),
    st.integers(0, 2**64 - 1).map(np.uint64),
    st.floats(width=32).map(np.float32),
    st.floats().map(np.float64),
    st.booleans().map(np.bool_),
    st.text(max_size=5).map(np.str_),
)
np_arrays = hnp.arrays(
    dtype=st.sampled_from([np.int64, np.int32, np.uint8, np.float64, np.float32, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(2**64, 2**200) | st.integers(-(2**200), -(2**63) - 1),  # past 64 bits
    st.floats(),  # NaN and ±inf included
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
    text,
    long_text,
    st.binary(max_size=8),
    long_bytes,
    np_scalars,
    np_arrays,
    st.builds(Opaque, st.integers(0, 9)),
    st.just(BadRepr()),
    st.just(BadLen()),
    st.just(object()),
)
# A few keys recur across calls (so the same feature takes mixed types), plus keys that are
# not strings at all.
keys = st.one_of(
    st.sampled_from(["a", "b", "c", "x.y", ""]),
    text,
    st.integers(-3, 3),  # not booleans as well: True == 1 is one and the same dict key
    st.none(),
    st.sampled_from([1.5, (1, 2), b"a", b"\xff"]),
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)
feature_dicts = st.dictionaries(keys, values, max_size=6)


# ---------------------------------------------------------------- comparison


def _plain(v: Any) -> Any:
    """numpy → Python, as the store is expected to hold it."""
    if isinstance(v, (str, bytes)):  # np.str_ too: its str() drops trailing NULs, the data keeps them
        return v[:]
    if isinstance(v, (np.ndarray, np.generic)):
        return v.tolist()
    return v


def _r(v: Any) -> str:
    """repr for messages, short, never raising."""
    try:
        text = repr(v)
    except Exception:
        text = f"<{type(v).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _flagged(path: str, flags: list[str]) -> str | None:
    """The flag covering ``path`` (the path itself or one of its ancestors), if any."""
    for f in flags:
        kind, _, at = f.partition(":")
        if kind in ("json", "truncated", "text") and (
            path == at or path.startswith(at + ".") or path.startswith(at + "[]")
        ):
            return f
    return None


def _text_of(v: Any) -> str:
    """The documented text of a scalar stored among scalars of other types."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity") if math.isinf(v) else repr(v)
    return str(v)


def _all_null(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and all(_all_null(x) for x in v.values()))


def _field_name(key: Any) -> str:
    """The column name a dict key becomes: str as is, UTF-8 bytes decoded (Arrow's rule),
    anything else str(key)."""
    if isinstance(key, bytes):
        try:
            return key.decode()
        except UnicodeDecodeError:
            pass
    return key if isinstance(key, str) else str(key)


def check(got: Any, want: Any, path: str, flags: list[str], problems: list[str]) -> None:
    """Record in ``problems`` every place where ``got`` differs from ``want`` without a flag."""
    flag = _flagged(path, flags)
    if flag is not None:
        if flag == f"text:{path}":
            # Scalars of several types under one path: stored as their text, strings as they are.
            want = _plain(want)
            if not isinstance(got, str) or got != _text_of(want):
                problems.append(f"{path}: {_r(want)} stored as text {_r(got)}, expected {_r(_text_of(want))}")
            return
        if flag == f"truncated:{path}":
            want = _plain(want)
            if want is None or got is None:
                if want is not got:
                    problems.append(f"{path}: {_r(want)} read back as {_r(got)}")
                return
            # The flag names a row and a path: values there are either cut or left whole.
            if not (isinstance(got, type(want)) and want[: len(got)] == got):
                problems.append(f"{path}: truncated to {_r(got)}, not a prefix of the input")
            size = len(got.encode("utf-8", "surrogatepass")) if isinstance(got, str) else len(got)
            if size > CAP:
                problems.append(f"{path}: truncated value has {size} bytes > {CAP}")
        return
    want = _plain(want)
    if want is None:
        if got is not None:
            problems.append(f"{path}: None read back as {_r(got)}")
    elif isinstance(want, dict):
        if not isinstance(got, dict):
            problems.append(f"{path}: dict {_r(want)} read back as {_r(got)}")
            return
        names = [_field_name(k) for k in want]
        if len(set(names)) < len(names):
            problems.append(f"{path}: keys {_r(list(want))} collide as column names {_r(names)}")
        for k, name in zip(want, names):
            check(got.get(name), want[k], f"{path}.{name}", flags, problems)
        for name in set(got) - set(names):
            if not _all_null(got[name]):
                problems.append(f"{path}.{name}: absent from the input, read back as {_r(got[name])}")
    elif isinstance(want, (list, tuple)):
        if not isinstance(got, list) or len(got) != len(want):
            problems.append(f"{path}: sequence {_r(want)} read back as {_r(got)}")
            return
        for g, w in zip(got, want):
            check(g, w, f"{path}[]", flags, problems)
    elif isinstance(got, bool) and not isinstance(want, bool):
        problems.append(f"{path}: {_r(want)} read back as {_r(got)}")
    elif isinstance(want, float) and math.isnan(want):
        if not (isinstance(got, float) and math.isnan(got)):
            problems.append(f"{path}: NaN read back as {_r(got)}")
    elif isinstance(want, (int, float)):  # bool included
        # Numbers sharing a column widen to the column's type (bool -> int -> double, as
        # Arrow's inference does); the value must still be equal.
        if not isinstance(got, (int, float)) or got != want or (isinstance(want, float) and isinstance(got, int)):
            problems.append(f"{path}: {_r(want)} read back as {_r(got)}")
    elif isinstance(want, (str, bytes)):
        if type(got) is not type(want) or got != want:
            problems.append(f"{path}: {_r(want)} read back as {_r(got)}")
    else:
        problems.append(f"{path}: {type(want).__name__} stored without a json: flag, read back as {_r(got)}")


# ---------------------------------------------------------------- the property


def _identity(x: dict[Any, Any]) -> dict[Any, Any]:
    return x


def _read_rows(store: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in sorted(Path(store, "predictions").rglob("*.parquet")):
        rows.extend(pq.read_table(p).to_pylist())
    return rows


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(feature_dicts, min_size=1, max_size=12))
def test_any_features_round_trip_or_are_flagged(batch: list[dict[Any, Any]]) -> None:
    with tempfile.TemporaryDirectory(prefix="predlog-hyp-") as store:
        rec = predlog.Recorder(store=store, model="m", max_value_bytes=CAP)
        predict = rec.capture(_identity)
        try:
            for j, x in enumerate(batch):
                with predlog.context(request_id=str(j)):
                    assert predict(x) is x
        finally:
            assert rec.shutdown(timeout_s=30)
        s = rec.stats()
        assert s["captured"] == s["written"] == s["rows_written"] == len(batch), s
        assert s["dropped_total"] == 0 and s["failed"] == 0, s
        rows = _read_rows(store)
    assert len(rows) == len(batch)
    by_request = {r["request_id"]: r for r in rows}
    assert sorted(by_request) == sorted(str(j) for j in range(len(batch)))
    problems: list[str] = []
    for j, x in enumerate(batch):
        row = by_request[str(j)]
        flags = row.get("capture_flags") or []
        check(row["features"], x, "features", flags, problems)
        check(row["prediction"], x, "prediction", flags, problems)
    assert problems == []


def _escaped(s: str) -> str:
    """How text that is not valid UTF-8 (lone surrogates) is kept in a string column."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(text, text), min_size=1, max_size=8))
def test_any_text_in_errors_and_context_is_kept(calls: list[tuple[str, str]]) -> None:
    """Exception messages and context ids are free text too: one that is not valid UTF-8
    must not cost the calls converted with it."""
    with tempfile.TemporaryDirectory(prefix="predlog-hyp-") as store:
        rec = predlog.Recorder(store=store, model="m", max_value_bytes=CAP)

        @rec.capture
        def predict(x: dict[str, str]) -> None:
            raise ValueError(x["msg"])

        try:
            for j, (msg, user) in enumerate(calls):
                with predlog.context(user_id=user, request_id=str(j)):
                    with pytest.raises(ValueError) as info:
                        predict({"msg": msg})
                assert info.value.args == (msg,)
        finally:
            assert rec.shutdown(timeout_s=30)
        s = rec.stats()
        assert s["captured"] == s["written"] == len(calls) and s["dropped_total"] == 0, s
        rows = _read_rows(store)
    assert len(rows) == len(calls)
    by_request = {r["request_id"]: r for r in rows}
    for j, (msg, user) in enumerate(calls):
        row = by_request[str(j)]
        assert (row["status"], row["error_type"]) == ("error", "ValueError")
        assert row["error_message"] == _escaped(msg)
        assert row["user_id"] == _escaped(user)
        problems: list[str] = []
        check(row["features"], {"msg": msg}, "features", row.get("capture_flags") or [], problems)
        assert problems == []
