"""What is logged is what is stored: DataFrame and array arguments as data, mixed types under
one key by one documented rule, datetimes in UTC, labels with their own type, pd.NA as null.

Every check reads the Parquet files back with pyarrow (the store format itself), so these
hold for any engine that reads the store.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import flush

import predlog

UTC = dt.UTC


def rows(store: Path | str, kind: str = "predictions") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in sorted(Path(store, kind).rglob("*.parquet")):
        out.extend(pq.read_table(p).to_pylist())
    return sorted(out, key=lambda r: (r["ts"], r.get("prediction_id") or ""))


def tables(store: Path | str, kind: str = "predictions") -> list[pa.Table]:
    return [pq.read_table(p) for p in sorted(Path(store, kind).rglob("*.parquet"))]


# ---------------------------------------------------------------- DataFrame, Series and arrays


def test_a_frame_that_is_not_one_row_per_output_is_stored_as_its_columns(rec: predlog.Recorder, tmp_path: Path) -> None:
    @rec.capture
    def score(frame: pd.DataFrame) -> float:
        return float(frame["a"].sum())  # one number for the whole frame

    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "c": pd.array([1, None, 3], dtype="Int64")})
    assert score(frame) == 6.0
    flush(rec)
    (row,) = rows(tmp_path)
    assert row["features"] == {"a": [1, 2, 3], "b": ["x", "y", "z"], "c": [1, None, 3]}  # pd.NA is null
    assert row["batch_id"] is None and row["prediction"] == 6.0 and row["capture_flags"] is None
    (t,) = tables(tmp_path)
    assert t.schema.field("features").type == pa.struct(
        [("a", pa.list_(pa.int64())), ("b", pa.list_(pa.string())), ("c", pa.list_(pa.int64()))]
    )


def test_one_row_frames_series_and_arrays_are_data_in_and_out(rec: predlog.Recorder, tmp_path: Path) -> None:
    @rec.capture(model="one")
    def one(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"p": [0.3]})  # a vectorised model on one row

    @rec.capture(model="two")
    def two(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"label": ["spam"], "p": [0.9]})

    @rec.capture(model="series")
    def series(row: pd.Series) -> pd.Series:
        return pd.Series([0.25])

    @rec.capture(model="matrix")
    def matrix(x: np.ndarray) -> float:
        return float(x.sum())

    one(pd.DataFrame({"a": [1], "b": [pd.NA]}))
    two(pd.DataFrame({"a": [2]}))
    series(pd.Series({"age": 41, "plan": "pro", "note": pd.NA}))
    matrix(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    flush(rec)
    by_model = {}
    for p in Path(tmp_path, "predictions").rglob("*.parquet"):
        by_model[p.parent.parent.name] = pq.read_table(p).to_pylist()[0]
    assert by_model["model=one"]["features"] == {"a": 1, "b": None}
    assert by_model["model=one"]["prediction"] == 0.3
    assert by_model["model=two"]["prediction"] == {"label": "spam", "p": 0.9}
    assert by_model["model=series"]["features"] == {"age": 41, "plan": "pro", "note": None}
    assert by_model["model=series"]["prediction"] == 0.25
    assert by_model["model=matrix"]["features"] == {"f0": [1.0, 3.0, 5.0], "f1": [2.0, 4.0, 6.0]}
    assert all(r["capture_flags"] is None for r in by_model.values())
    assert not any("<NA>" in json.dumps(r, default=str) for r in by_model.values())


def test_a_frame_inside_other_arguments_is_data_not_a_repr(rec: predlog.Recorder, tmp_path: Path) -> None:
    @rec.capture
    def predict(user: str, frame: pd.DataFrame, weights: np.ndarray) -> int:
        return len(frame)

    predict("u1", pd.DataFrame({"a": [1.5, None]}), np.array([1, 2]))
    flush(rec)
    (row,) = rows(tmp_path)
    assert row["features"] == {"user": "u1", "frame": {"a": [1.5, None]}, "weights": [1, 2]}


def test_a_batch_whose_output_is_a_frame_of_several_columns(rec: predlog.Recorder, tmp_path: Path) -> None:
    @rec.capture
    def predict(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"label": ["a", "b"], "p": [0.1, 0.9]})

    predict(pd.DataFrame({"x": [1, 2]}))
    flush(rec)
    got = rows(tmp_path)
    assert [r["prediction"] for r in sorted(got, key=lambda r: r["batch_index"])] == [
        {"label": "a", "p": 0.1},
        {"label": "b", "p": 0.9},
    ]
    assert [r["features"] for r in sorted(got, key=lambda r: r["batch_index"])] == [{"x": 1}, {"x": 2}]


# ---------------------------------------------------------------- one rule for mixed types


def test_mixed_scalars_under_one_key_become_their_text_without_quotes(rec: predlog.Recorder, tmp_path: Path) -> None:
    predict = rec.capture(lambda x: 1)
    for zip_code in (75001, "75001", "SW1A", 2.5, True):
        predict({"zip": zip_code})
    flush(rec)
    got = [r["features"]["zip"] for r in rows(tmp_path)]
    assert got == ["75001", "75001", "SW1A", "2.5", "true"]
    flags = [r["capture_flags"] for r in rows(tmp_path)]
    assert flags == [["text:features.zip"], None, None, ["text:features.zip"], ["text:features.zip"]]


def test_datetimes_are_stored_in_utc_naive_ones_taken_as_utc(rec: predlog.Recorder, tmp_path: Path) -> None:
    predict = rec.capture(lambda x: 1)
    paris = dt.timezone(dt.timedelta(hours=1))
    predict({"at": dt.datetime(2026, 3, 1, 12, 0)})  # naive
    predict({"at": dt.datetime(2026, 3, 1, 13, 0, tzinfo=paris)})  # the same instant
    predict({"at": dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)})
    flush(rec)
    (t,) = tables(tmp_path)
    assert t.schema.field("features").type.field("at").type == pa.timestamp("us", tz="UTC")
    assert {r["features"]["at"] for r in rows(tmp_path)} == {dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)}


def test_dates_among_datetimes_are_not_cut_to_their_day(rec: predlog.Recorder, tmp_path: Path) -> None:
    predict = rec.capture(lambda x: 1)
    predict({"when": dt.date(2026, 3, 1)})
    predict({"when": dt.datetime(2026, 3, 1, 18, 30)})
    flush(rec)
    assert [r["features"]["when"] for r in rows(tmp_path)] == ["2026-03-01", "2026-03-01T18:30:00+00:00"]


# ---------------------------------------------------------------- labels


def test_labels_keep_their_type_in_a_batch_of_several_types(rec: predlog.Recorder, tmp_path: Path) -> None:
    for i, label in enumerate(["ham", 1, 0, 2.5, True, None, {"stars": 4}, [1, 2]]):
        rec.log_label(label, prediction_id=f"p{i}")
    flush(rec)
    got = {r["prediction_id"]: r["label"] for r in rows(tmp_path, "labels")}
    assert got == {"p0": "ham", "p1": 1, "p2": 0, "p3": 2.5, "p4": True, "p5": None, "p6": {"stars": 4}, "p7": [1, 2]}
    assert all(type(got[k]) is type(v) for k, v in {"p0": "", "p1": 0, "p3": 0.0, "p4": False}.items())
    types = {str(t.schema.field("label").type) for t in tables(tmp_path, "labels")}
    assert {"string", "int64", "double", "bool"} <= types  # one file per label type, none widened
    assert all(r["capture_flags"] is None for r in rows(tmp_path, "labels"))


labels = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(labels, min_size=1, max_size=10))
def test_any_mix_of_label_types_reads_back_exactly(tmp_path_factory: Any, values: list[Any]) -> None:
    store = tmp_path_factory.mktemp("labels")
    rec = predlog.Recorder(store=str(store), model="m", tracing=False, metrics=False)
    try:
        for i, v in enumerate(values):
            rec.log_label(v, prediction_id=f"p{i}")
        flush(rec)
    finally:
        rec.shutdown()
    got = {r["prediction_id"]: r["label"] for r in rows(store, "labels")}
    for i, v in enumerate(values):
        back = got[f"p{i}"]
        assert type(back) is type(v) and (back == v or (isinstance(v, float) and math.isnan(v))), (v, back)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.datetimes(
        min_value=dt.datetime(1971, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.one_of(st.none(), st.just(UTC), st.just(dt.timezone(dt.timedelta(hours=-5)))),
    ),
)


def expected_text(v: Any) -> str:
    """The documented text of a scalar stored among scalars of other types (an oracle written
    apart from the code: JSON's spelling for numbers and booleans, ISO 8601 in UTC)."""
    if isinstance(v, str):
        return v
    if isinstance(v, dt.datetime):
        return (v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)).isoformat()
    return json.dumps(v)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(st.lists(scalars, min_size=1, max_size=8))
def test_any_mix_of_scalars_under_one_key_follows_the_rule(tmp_path_factory: Any, values: list[Any]) -> None:
    store = tmp_path_factory.mktemp("mixed")
    rec = predlog.Recorder(store=str(store), model="m", tracing=False, metrics=False)
    try:
        predict = rec.capture(lambda x: 1)
        for v in values:
            predict({"k": v})
        flush(rec)
    finally:
        rec.shutdown()
    got = [r["features"]["k"] for r in rows(store)]
    kinds = {type(v) for v in values if v is not None}
    # ints widen to floats beside floats, as long as a float holds them exactly
    numbers_only = kinds <= {int, float} and (  # (bool is a type of its own)
        len(kinds) == 1 or all(abs(v) <= 2**53 for v in values if type(v) is int)
    )
    for v, back in zip(values, got):
        if v is None:
            assert back is None
        elif len(kinds) == 1 or numbers_only:  # one type, or ints widened to floats: the value itself
            if isinstance(v, dt.datetime):
                assert back == (v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC))
            else:
                assert back == v and (type(back) is type(v) or numbers_only), (v, back)
        else:  # several types: each value's text, strings as they are
            assert back == expected_text(v), (values, v, back)
