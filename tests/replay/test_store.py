"""The query layer, predlog.replay.Store, on stores written by the real SDK."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import predlog
from predlog._sealing import ensure_store, seal_segment
from predlog._segment import KIND_LABELS as L
from predlog._segment import KIND_PREDICTIONS as P
from predlog.replay import (
    FilterError,
    PredictionNotFoundError,
    QueryNotAllowedError,
    Store,
    StoreError,
    StoreNotFoundError,
    TimeBoundError,
    UnknownColumnError,
    UnknownModelError,
    UnsupportedStoreError,
)

UTC = dt.UTC


@pytest.fixture
def s(demo: Any) -> Any:
    with Store(demo.root) as store:
        yield store


# ---------------------------------------------------------------- opening


def test_missing_store_says_where_it_looked_and_how_stores_are_made(tmp_path: Path) -> None:
    for path in (tmp_path / "nope", tmp_path):  # no directory; a directory without a store
        with pytest.raises(StoreNotFoundError) as info:
            Store(path)
        assert isinstance(info.value, FileNotFoundError)
        msg = str(info.value)
        assert str(path) in msg and "predlog.json" in msg and "Recorder" in msg
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreNotFoundError, match="not a directory"):
        Store(tmp_path / "file")


@pytest.mark.parametrize("uri", ["s3://bucket/store", "gs://b/s", "az://c/s", "hdfs://nn/s"])
def test_object_storage_is_refused_clearly(uri: str) -> None:
    with pytest.raises(UnsupportedStoreError, match="only local paths are supported") as info:
        Store(uri)
    assert isinstance(info.value, NotImplementedError)


def test_file_uri_and_symlinks_open_the_local_store(demo: Any, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(demo.root)
    with Store(f"file://{demo.root}") as a, Store(link) as b:
        assert a.root == b.root == os.path.realpath(demo.root)
        assert len(a.predictions()) == len(b.predictions()) == 16


def test_an_empty_store_answers_every_query(store_dir: Path) -> None:
    ensure_store(str(store_dir))
    with Store(store_dir) as s:
        df = s.predictions()
        assert len(df) == 0 and {"prediction_id", "ts", "model", "user_id"} <= set(df.columns)
        assert s.sql("select count(*) as n from predictions")["n"].tolist() == [0]
        assert len(s.labeled(include_unlabeled=True)) == 0
        assert s.stats()["rows"] == 0 and s.stats()["files"] == 0
        assert s.models() == []
        with pytest.raises(PredictionNotFoundError):
            s.get(str(uuid.uuid4()))
        with pytest.raises(UnknownModelError, match="none yet"):
            s.predictions(model="fraud")


def test_closed_store_raises_store_error(demo: Any) -> None:
    s = Store(demo.root)
    s.predictions()
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.predictions()


# ---------------------------------------------------------------- predictions and filters


def test_predictions_returns_every_row_in_time_order_with_utc_timestamps(s: Store, demo: Any) -> None:
    df = s.predictions()
    assert len(df) == 16
    assert df["ts"].is_monotonic_increasing
    assert str(df["ts"].dt.tz) == "UTC"
    assert set(df["model"]) == {"fraud", "reco"}
    fraud = s.predictions(model="fraud")
    assert len(fraud) == 13 and set(fraud["model"]) == {"fraud"}
    assert fraud["prediction"].dtype.kind == "f"  # natural type when one model is read
    row = fraud.iloc[0]
    assert row["features"] == {"age": 20, "amount": 10.0, "country": "FR"}
    assert row["context"] == {"country": "FR", "plan": "free"}


def test_filters_on_columns(s: Store, demo: Any) -> None:
    assert s.predictions(user_id="u2")["prediction_id"].tolist() == demo.ids["u2"]
    assert set(s.predictions(user_id=["u2", "u3"])["user_id"]) == {"u2", "u3"}
    assert len(s.predictions(model="fraud", version="1.1")) == 1
    assert len(s.predictions(version=["1.0", "7"])) == 15
    err = s.predictions(status="error")
    assert err["prediction_id"].tolist() == [demo.error_id]
    assert err.iloc[0]["error_type"].endswith("ValueError")
    assert s.predictions(request_id="r5")["prediction_id"].tolist() == [demo.by_request["r5"]]
    assert len(s.predictions(limit=3)) == 3
    assert s.predictions(limit=0).empty
    assert s.predictions(model=["fraud", "reco"], user_id="u1", limit=100)["user_id"].eq("u1").all()
    assert s.predictions(user_id=[]).empty


def test_where_dict_forms(s: Store, demo: Any) -> None:
    def ids(**kw: Any) -> set[str]:
        return set(s.predictions(model="fraud", **kw)["prediction_id"])

    assert ids(where={"features.age": 25}) == {demo.by_request["r5"]}
    assert ids(where={"features.age": "25"}) == {demo.by_request["r5"]}  # text that is a number
    assert ids(where={"features.age": (">=", 30)}) == {demo.by_request["r10"], demo.by_request["r11"], demo.error_id}
    assert ids(where={"features.age": ("between", 21, 22)}) == {demo.by_request["r1"], demo.by_request["r2"]}
    assert ids(where={"context.country": ["DE", "US"]}) == set(demo.ids["u2"] + demo.ids["u4"])
    assert ids(where={"context.country": ("not in", ["FR", "DE", "US"])}) == set()
    assert ids(where={"context.plan": None}) == {demo.error_id}  # no plan in that call's context
    assert ids(where={"context.plan": ("!=", None)}) == set(demo.by_request.values())
    assert ids(where={"user_id": ("like", "u%"), "status": ("<>", "ok")}) == {demo.error_id}
    assert ids(where={"features.country": ("ilike", "fr")}) == set(demo.ids["u1"] + demo.ids["u3"]) | {demo.error_id}
    assert ids(where={"latency_ms": (">", -1), "model_version": "1.0"}) == set(demo.by_request.values())
    assert ids(where={"context.country": [None, "DE"]}) == set(demo.ids["u2"]) | {demo.error_id}
    assert ids(where={"features.age": 25, "context.country": "FR"}) == set()  # r5 is u2 (DE)
    lo = s.predictions(model="fraud")["ts"].iloc[3]
    assert ids(where={"ts": ("<", lo)}) == {demo.by_request[f"r{i}"] for i in range(3)}
    assert ids(where={"ts": ("<", lo.isoformat())}) == {demo.by_request[f"r{i}"] for i in range(3)}


def test_where_string_is_the_callers_own_sql(s: Store, demo: Any) -> None:
    df = s.predictions(model="fraud", where="features.age > 29 and context.country = 'FR'")
    assert set(df["prediction_id"]) == {demo.by_request["r10"]}
    with pytest.raises(QueryNotAllowedError):  # it cannot break out into a second statement
        s.predictions(where="true) order by ts; copy (select 1) to 'x.csv'; select * from predictions where (true")
    with pytest.raises(duckdb.ParserException):
        s.predictions(where="true; copy (select 1) to 'x.csv'")


def test_unknown_columns_list_close_matches(s: Store) -> None:
    with pytest.raises(UnknownColumnError) as info:
        s.predictions(model="fraud", where={"features.agee": 3})
    assert "features.age" in str(info.value) and info.value.close[0] == "features.age"
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownColumnError, match="latency_ms"):
        s.predictions(where={"latncy_ms": 3})
    with pytest.raises(UnknownColumnError, match="context.country"):
        s.predictions(where={"context.contry": "FR"})
    with pytest.raises(UnknownColumnError) as info:
        s.predictions(model="fraud", where={"context.age": 30})  # the same name under features
    assert info.value.close[0] == "features.age"
    with pytest.raises(UnknownColumnError):
        s.predictions(where={"features.age.x": 1})  # age is not a struct
    with pytest.raises(UnknownColumnError):
        s.predictions(columns=["prediction_id", "nope"])


@pytest.mark.parametrize(
    "where",
    [
        {"features.age": ("~", 3)},
        {"features.age": ("FR", "DE")},  # a tuple is (operator, value): use a list for membership
        {"features.age": ("between", 1)},
        {"features.age": (">", None)},
        {"features.age": ("in", "abc")},
        {"features.age": ("like", 3)},
        {"features.age": {"a": 1}},
        {"features.age": "thirty"},
        {"features": 3},
        {"ts": ("<", "yesterday")},
        {"": 1},
        ["features.age"],
    ],
)
def test_malformed_where_raises_filter_error(s: Store, where: Any) -> None:
    with pytest.raises(FilterError):
        s.predictions(model="fraud", where=where)


def test_bad_filter_arguments(s: Store) -> None:
    for kw in ({"user_id": 3.5}, {"version": [None]}, {"limit": -1}, {"limit": "5"}, {"model": 3}):
        with pytest.raises(FilterError):
            s.predictions(**kw)


def test_columns_selects_fields(s: Store) -> None:
    df = s.predictions(model="fraud", user_id="u1", columns=["prediction_id", "features.age", "context.country"])
    assert list(df.columns) == ["prediction_id", "features.age", "context.country"]
    assert df["features.age"].tolist() == [20, 24, 28, 50]


def test_unknown_model_lists_the_models_present(s: Store) -> None:
    with pytest.raises(UnknownModelError) as info:
        s.predictions(model="frau")
    msg = str(info.value)
    assert "'fraud'" in msg and "'reco'" in msg and "Did you mean 'fraud'" in msg
    assert info.value.present == ["fraud", "reco"]
    for call in (
        lambda: s.user("u1", model="x"),
        lambda: s.labeled(model="x"),
        lambda: s.sql("select 1", model="x"),
        lambda: s.relation(model="x"),
        lambda: s.training_data(model="x"),
        lambda: s.files(model="x"),
    ):
        with pytest.raises(UnknownModelError):
            call()


# ---------------------------------------------------------------- time bounds


def test_time_window_is_start_inclusive_end_exclusive(s: Store, demo: Any) -> None:
    df = s.predictions(model="fraud")
    t5 = df["ts"].iloc[5]
    assert len(s.predictions(model="fraud", start=t5)) == 13 - 5
    assert len(s.predictions(model="fraud", end=t5)) == 5
    assert len(s.predictions(model="fraud", start=t5, end=t5)) == 0
    py = t5.to_pydatetime()
    naive = py.astimezone(UTC).replace(tzinfo=None)  # naive means UTC
    paris = py.astimezone(dt.timezone(dt.timedelta(hours=2)))
    for bound in (t5, py, naive, paris, py.isoformat(), naive.isoformat(), naive.isoformat() + "Z"):
        assert len(s.predictions(model="fraud", start=bound)) == 8, bound
    today = df["ts"].iloc[0].date()
    assert len(s.predictions(model="fraud", start=today)) == 13
    assert len(s.predictions(model="fraud", start=str(today), end=str(today + dt.timedelta(days=1)))) == 13
    assert len(s.predictions(model="fraud", end=today)) == 0
    assert len(s.predictions(model="fraud", last="1h")) == 13
    assert len(s.predictions(model="fraud", last=dt.timedelta(days=1))) == 13
    assert len(s.predictions(model="fraud", last="2 minutes")) == 13


@pytest.mark.parametrize(
    "kw",
    [
        {"start": "yesterday"},
        {"end": "2026-13-01"},
        {"start": 1700000000},
        {"start": [2026, 1, 1]},
        {"last": "soon"},
        {"last": "-1h"},
        {"last": 0},
        {"start": "2026-01-02", "end": "2026-01-01"},
        {"start": "2026-01-01", "last": "1h"},
        {"start": pd.NaT},
    ],
)
def test_malformed_time_bounds_name_the_accepted_forms(s: Store, kw: dict[str, Any]) -> None:
    with pytest.raises(TimeBoundError) as info:
        s.predictions(**kw)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert any(word in msg for word in ("ISO 8601", "timedelta", "before", "not both"))


def test_date_partitions_prune_the_files_read(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="m")
    predict = rec.capture(lambda x: x["a"])
    for i in range(3):
        predict({"a": i})
    h.flush(rec)
    (base,) = [str(p) for p in store_dir.glob("predictions/model=m/date=*/*.parquet")]
    table = h.writer_frame(base)
    h.seal(store_dir, [(P, h.shifted(table, -2))], stem="h-1-aaaa")
    h.seal(store_dir, [(P, h.shifted(table, -1))], stem="h-1-bbbb")
    with Store(store_dir) as s:
        all_rows = s.predictions()
        assert len(all_rows) == 9
        today = pd.Timestamp(pq.read_table(base).column("ts")[0].as_py()).date()
        yesterday = today - dt.timedelta(days=1)
        files = s.files(start=yesterday, end=today)
        assert len(files) == 1 and f"date={yesterday}" in files[0]
        assert len(s.files()) == 3 and len(s.files(start=yesterday)) == 2
        assert s.predictions(start=yesterday, end=today)["ts"].dt.date.eq(yesterday).all()
        assert len(s.predictions(start=yesterday, end=today)) == 3
        # A window with no rows keeps the model's columns (borrowed from its other files).
        empty = s.predictions(model="m", start=today + dt.timedelta(days=5))
        assert empty.empty and "features" in empty.columns


# ---------------------------------------------------------------- user, get, relation


def test_user_returns_every_prediction_of_the_user_in_time_order(s: Store, demo: Any) -> None:
    df = s.user("u1")
    assert df["prediction_id"].tolist() == demo.ids["u1"] + [demo.error_id] + demo.reco_ids
    assert df["ts"].is_monotonic_increasing
    assert s.user("u1", model="reco")["prediction_id"].tolist() == demo.reco_ids
    assert s.user("nobody").empty
    assert len(s.user("u1", limit=2)) == 2


def test_get_returns_one_row_as_a_series(s: Store, demo: Any) -> None:
    pid = demo.ids["u3"][1]
    row = s.get(pid)
    assert isinstance(row, pd.Series) and row.name == pid
    assert row["prediction_id"] == pid and row["user_id"] == "u3" and row["model"] == "fraud"
    assert isinstance(row["prediction"], float)  # natural type although 'reco' disagrees
    reco = s.get(demo.reco_ids[0])
    assert list(reco["prediction"]) == [0.1, 0.2, 0.7]
    assert s.get(demo.error_id)["status"] == "error"


def test_get_of_a_missing_id_raises_a_clear_key_error(s: Store) -> None:
    for missing in (str(uuid.uuid4()), "01a21364-6cfb-76b1-b62f-980000000000", "nope", ""):
        with pytest.raises(KeyError) as info:
            s.get(missing)
        assert isinstance(info.value, PredictionNotFoundError)
        assert repr(missing) in str(info.value) and "include_live=True" in str(info.value)
    with pytest.raises(KeyError):
        s.get(12345)  # type: ignore[arg-type]


def test_get_finds_a_row_outside_the_date_its_id_encodes(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="m")
    rec.capture(lambda x: 1.0)({"a": 1})
    h.flush(rec)
    (base,) = store_dir.glob("predictions/model=m/date=*/*.parquet")
    table = h.writer_frame(base)
    pid = table.column("prediction_id")[0].as_py()
    base.unlink()
    h.seal(store_dir, [(P, h.shifted(table, -3))], stem="h-1-cccc")  # same id, three days earlier
    with Store(store_dir) as s:
        assert s.get(pid)["prediction_id"] == pid


def test_relation_is_lazy_and_composable(s: Store, demo: Any) -> None:
    rel = s.relation(model="fraud", where={"features.age": (">", 21)})
    assert isinstance(rel, duckdb.DuckDBPyRelation)
    counts = dict(rel.aggregate("user_id, count(*) AS n", "user_id").fetchall())
    assert counts == {"u1": 3, "u2": 2, "u3": 3, "u4": 3}
    assert rel.filter("user_id = 'u2'").df()["prediction_id"].tolist() == demo.ids["u2"][1:]
    assert len(s.relation(include_live=True).df()) == 16


# ---------------------------------------------------------------- labels


def test_labeled_joins_the_latest_label_by_prediction_then_request(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="m")
    predict = rec.capture(lambda x: x["a"] > 1)
    pids = {}
    for i in range(5):
        with predlog.context(user_id=f"u{i}", request_id=f"r{i}"):
            predict({"a": i})
            pids[i] = predlog.last_prediction_id()
    h.flush(rec)
    with Store(store_dir) as s:
        assert s.labeled().empty  # no label yet
        assert len(s.labeled(include_unlabeled=True)) == 5
    rec.log_label(True, prediction_id=pids[0], source="first")  # labels arrive later
    rec.log_label(False, request_id="r1")
    h.flush(rec)
    rec.log_label(False, prediction_id=pids[0], source="second")  # the latest wins
    rec.log_label(True, request_id="r2")
    rec.log_label(False, prediction_id=pids[2])  # by id beats by request, even when older
    rec.log_label(True, request_id="r2")
    h.flush(rec)
    with Store(store_dir) as s:
        df = s.labeled().set_index("prediction_id")
        assert df.loc[pids[0], "label"] == False  # noqa: E712
        assert df.loc[pids[0], "label_extra"] == {"source": "second"}
        assert df.loc[pids[1], "label"] == False  # noqa: E712
        assert df.loc[pids[2], "label"] == False  # noqa: E712
        assert set(df.index) == {pids[0], pids[1], pids[2]}
        assert str(df["label_ts"].dt.tz) == "UTC"
        both = s.labeled(include_unlabeled=True)
        assert len(both) == 5 and both["label"].isna().sum() == 2
        assert s.labeled(user_id="u1")["prediction_id"].tolist() == [pids[1]]
        assert s.labeled(where={"label": True}).empty
        assert len(s.labeled(where={"label": False})) == 3
        assert len(s.sql("select * from labels")) == 6


def test_training_data_has_one_column_per_feature_and_the_label(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="churn", version="3")
    predict = rec.capture(lambda x: 0.5)
    for i in range(6):
        predict({"tenure": i, "plan": "pro" if i % 2 else "free", "label": i})  # a feature named 'label'
        rec.log_label(i % 2, prediction_id=predlog.last_prediction_id())
    predict({"tenure": 99, "plan": "x", "label": 0})  # unlabeled: not training data
    h.flush(rec)
    other = make_rec(model="other")
    other.capture(lambda x: 1)({"z": 1})
    h.flush(other)
    with Store(store_dir) as s:
        df = s.training_data(model="churn", days=30)
        assert list(df.columns) == ["tenure", "plan", "features.label", "label"]
        assert df.index.name == "prediction_id" and len(df) == 6
        assert df["tenure"].tolist() == list(range(6)) and df["label"].tolist() == [0, 1, 0, 1, 0, 1]
        assert len(s.training_data("churn", where={"features.plan": "pro"})) == 3
        with pytest.raises(FilterError, match="needs a model.*'churn', 'other'"):
            s.training_data()  # two models: say that one is needed, and which there are
        with pytest.raises(FilterError):
            s.training_data(model=["churn", "other"])
        with pytest.raises(TimeBoundError):
            s.training_data(model="churn", days=-1)


# ---------------------------------------------------------------- SQL


def test_sql_sees_both_views_and_struct_fields(s: Store, demo: Any) -> None:
    df = s.sql("select model_version, count(*) as n, avg(latency_ms) as l from predictions group by 1 order by 1")
    assert df["model_version"].tolist() == ["1.0", "1.1", "7"] and df["n"].tolist() == [12, 1, 3]
    df = s.sql(
        "select features.age as age from predictions where context.country = ? and model = ? order by ts",
        ["DE", "fraud"],
    )
    assert df["age"].tolist() == [21, 25, 29]
    df = s.sql("select count(*) as n from predictions where user_id = $u", {"u": "u4"})
    assert df["n"].tolist() == [3]
    assert s.sql("select count(*) as n from labels")["n"].tolist() == [0]
    assert s.sql("select 42 as x")["x"].tolist() == [42]
    assert s.sql("select count(*) as n from predictions", model="reco")["n"].tolist() == [3]


@pytest.mark.parametrize(
    "query",
    [
        "copy (select 1) to 'x.csv'",
        "create table t as select 1",
        "drop view predictions",
        "set threads=1",
        "select 1; select 2",
        "attach ':memory:' as x",
        "pragma version",
        "install httpfs",
        "load httpfs",
        "explain analyze copy (select 1) to 'x.csv'",
        "insert into predictions select * from predictions",
    ],
)
def test_sql_runs_single_selects_only(s: Store, query: str) -> None:
    with pytest.raises(QueryNotAllowedError):
        s.sql(query)


def test_sql_errors_of_duckdb_pass_through(s: Store) -> None:
    with pytest.raises(duckdb.ParserException):
        s.sql("select (")
    with pytest.raises(duckdb.BinderException):
        s.sql("select no_such_column from predictions")


# ---------------------------------------------------------------- stats, schema


def test_stats_describe_the_store(store_dir: Path, demo: Any, make_rec: Any, h: Any) -> None:
    live = make_rec(model="fraud", segment_max_age_s=3600)
    live.capture(lambda x: 1.0)({"amount": 1})
    h.wait_written(live, 1)
    with Store(store_dir, recover=False) as s:
        st = s.stats()
    assert st["rows"] == 16
    assert st["models"]["fraud"]["rows"] == 13 and st["models"]["reco"]["rows"] == 3
    assert st["models"]["fraud"]["versions"] == {"1.0": 12, "1.1": 1}
    assert st["versions"] == ["1.0", "1.1", "7"]
    assert st["files"] == sum(m["files"] for m in st["models"].values()) >= 3
    assert st["bytes"] == sum(os.path.getsize(f) for f in store_dir.glob("predictions/**/*.parquet"))
    assert st["first_ts"] <= st["last_ts"]
    assert st["live_segments"] == 1 and st["live_bytes"] > 0
    assert st["labels"] == {"rows": 0, "files": 0, "bytes": 0}
    assert st["schema_groups"] == 2  # float vs list predictions
    json.dumps(st, default=str)


def test_schema_and_feature_names(s: Store) -> None:
    sch = s.schema(model="fraud")
    assert sch["prediction"] == "DOUBLE" and sch["ts"] == "TIMESTAMP WITH TIME ZONE"
    assert sch["features"].startswith("STRUCT(")
    assert s.schema()["prediction"] == "VARCHAR"  # JSON text across the two models
    assert s.feature_names("fraud") == ["age", "amount", "country"]
    assert s.feature_names("reco") == ["age", "items"]
    assert s.feature_names() == ["age", "amount", "country", "items"]
    assert "label" in s.schema(labels=True)


# ---------------------------------------------------------------- schema evolution


def test_a_feature_added_in_a_later_file(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="m")
    predict = rec.capture(lambda x: 1.0)
    predict({"a": 1})
    h.flush(rec)
    predict({"a": 2, "b": "new"})
    h.flush(rec)
    with Store(store_dir) as s:
        df = s.predictions()
        assert [f.get("b") for f in df["features"]] == [None, "new"]
        assert s.predictions(where={"features.b": "new"})["features"].tolist() == [{"a": 2, "b": "new"}]
        assert s.feature_names() == ["a", "b"]


def test_a_field_widened_from_int_to_string_across_files(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="m")
    predict = rec.capture(lambda x: 1.0)
    predict({"zip": 75001})
    h.flush(rec)
    predict({"zip": "SW1A"})
    h.flush(rec)
    with Store(store_dir) as s:
        assert s.predictions()["features"].tolist() == [{"zip": "75001"}, {"zip": "SW1A"}]
        assert len(s.predictions(where={"features.zip": 75001})) == 1  # number compared as text
        assert s.schema()["features"] == "STRUCT(zip VARCHAR)"


def test_models_with_incompatible_prediction_types_are_read_together(s: Store, demo: Any) -> None:
    both = s.predictions()
    assert both["prediction"].isna().sum() == 1  # the error row
    # Each row has its own model's value: numbers for fraud, vectors for reco (not JSON text).
    fraud = both[both["model"] == "fraud"]["prediction"].dropna().tolist()
    assert fraud == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    assert all(type(v) is float for v in fraud)
    assert both[both["model"] == "reco"]["prediction"].tolist() == [[0.1, 0.2, 0.7]] * 3
    # and its own model's features, not every model's.
    assert set(both[both["model"] == "reco"]["features"].iloc[0]) == {"age", "items"}
    assert set(both[both["model"] == "fraud"]["features"].iloc[0]) == {"age", "amount", "country"}
    assert len(s.predictions(model="reco")["prediction"].iloc[0]) == 3  # natural list type per model
    got = s.sql("select model, avg(latency_ms) > 0 as ok from predictions group by 1 order by 1")
    assert got["model"].tolist() == ["fraud", "reco"]
    assert s.sql("select count(*) as n from predictions where prediction = '[0.1,0.2,0.7]'")["n"].tolist() == [3]


def test_a_value_that_turns_from_scalar_to_struct_within_one_model(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="m")
    predict = rec.capture(lambda x: x["out"])
    predict({"geo": 1, "out": 0.5})
    h.flush(rec)
    predict({"geo": {"lat": 1.0, "lon": 2.0}, "out": {"label": "a", "p": 0.9}})
    h.flush(rec)
    with Store(store_dir) as s:
        df = s.predictions()
        # Read back as logged: the engine holds the disagreeing values as JSON, the rows do not.
        assert df["prediction"].tolist() == [0.5, {"label": "a", "p": 0.9}]
        assert [f["geo"] for f in df["features"]] == [1, {"lat": 1.0, "lon": 2.0}]
        assert len(s.predictions(where={"features.geo": "1"})) == 1  # filters compare the JSON text
        assert s.stats()["schema_groups"] == 2


# ---------------------------------------------------------------- live segments


def test_include_live_shows_unsealed_rows_once(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="m", segment_max_age_s=3600, flush_interval_s=0.05)
    predict = rec.capture(lambda x: x["a"])
    for i in range(5):
        predict({"a": i})
    h.flush(rec)
    for i in range(5, 12):
        with predlog.context(user_id="live-user"):
            predict({"a": i})
    rec.log_label(1, request_id="nothing")
    h.wait_written(rec, 12, labels=1)
    with Store(store_dir) as s:  # the writer is alive: its segment is not recovered
        assert len(s.predictions()) == 5
        live = s.predictions(include_live=True)
        assert sorted(f["a"] for f in live["features"]) == list(range(12))
        assert live["prediction_id"].is_unique and str(live["ts"].dt.tz) == "UTC"
        assert len(s.user("live-user", include_live=True)) == 7 and s.user("live-user").empty
        pid = live["prediction_id"].iloc[-1]
        with pytest.raises(PredictionNotFoundError):
            s.get(pid)
        assert s.get(pid, include_live=True)["features"] == {"a": 11}
        assert s.sql("select count(*) as n from predictions", include_live=True)["n"].tolist() == [12]
        assert s.sql("select count(*) as n from labels", include_live=True)["n"].tolist() == [1]
        assert len(s.relation(include_live=True).df()) == 12
        h.flush(rec)
        assert len(s.predictions()) == len(s.predictions(include_live=True)) == 12


def test_a_model_seen_only_in_live_segments(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="brand-new", segment_max_age_s=3600)
    rec.capture(lambda x: 1)({"a": 1})
    h.wait_written(rec, 1)
    ensure_store(str(store_dir))
    with Store(store_dir) as s:
        with pytest.raises(UnknownModelError):
            s.predictions(model="brand-new")
        assert len(s.predictions(model="brand-new", include_live=True)) == 1


def _two_model_frames(n: int) -> list[tuple[int, pa.Table]]:
    now = dt.datetime.now(UTC)
    frames = []
    for model in ("a", "b"):
        frames.append(
            (
                P,
                pa.table(
                    {
                        "prediction_id": [f"{model}-{i}" for i in range(n)],
                        "ts": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
                        "model": [model] * n,
                        "model_version": ["1"] * n,
                        "prediction": [float(i) for i in range(n)],
                    }
                ),
            )
        )
    frames.append(
        (
            L,
            pa.table(
                {
                    "prediction_id": ["a-0", "b-1"],
                    "request_id": pa.array([None, None], pa.string()),
                    "ts": pa.array([now, now], pa.timestamp("us", tz="UTC")),
                    "label": [1, 0],
                }
            ),
        )
    )
    return frames


def test_live_rows_of_a_segment_being_sealed_are_not_duplicated(store_dir: Path, h: Any) -> None:
    frames = _two_model_frames(4)
    path = h.write_segment(store_dir, frames, stem="h-9-feed")
    keep = path + ".copy"
    shutil.copy(path, keep)
    files = seal_segment(str(store_dir), path).files
    os.rename(keep, path)  # sealed files written, segment not deleted yet
    with Store(store_dir, recover=False) as s:
        assert len(s.predictions(include_live=True)) == 8
        assert len(s.sql("select * from labels", include_live=True)) == 2
        assert len(s.labeled(include_live=True)) == 2
        # Half sealed: the second model's file is not written yet; its rows come from the segment.
        b_file = next(f for f in files if "model=b" in f)
        os.unlink(b_file)
        df = s.predictions(include_live=True)
        assert sorted(df["prediction_id"]) == sorted([f"a-{i}" for i in range(4)] + [f"b-{i}" for i in range(4)])
        assert len(s.predictions()) == 4


# ---------------------------------------------------------------- recovery on open


WRITER = textwrap.dedent("""
    import sys, time, predlog
    rec = predlog.Recorder(store=sys.argv[1], model="crash", flush_interval_s=0.05, segment_max_age_s=3600)
    predict = rec.capture(lambda x: x["i"] * 2)
    n = int(sys.argv[2])
    for i in range(n):
        with predlog.context(user_id=f"u{i % 7}"):
            predict({"i": i})
    rec.log_label(1, request_id="r")
    while rec.stats()["written"] < n or rec.stats()["labels"] < 1:
        time.sleep(0.01)
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.mark.slow
def test_open_seals_the_segments_of_a_killed_writer(store_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store_dir), "500"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with Store(store_dir) as s:  # alive: its segment is left alone
            assert s.predictions().empty
            assert len(s.predictions(include_live=True)) == 500
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list((store_dir / "_wal").glob("*.arrows"))
    with Store(store_dir) as s:
        df = s.predictions(model="crash")
        assert sorted(f["i"] for f in df["features"]) == list(range(500))
        assert not list((store_dir / "_wal").glob("*.arrows"))
        assert len(s.sql("select * from labels")) == 1


@pytest.mark.slow
def test_a_read_only_store_is_read_without_recovery_and_with_a_warning(tmp_path: Path, h: Any) -> None:
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        store = mnt / "store"
        rec = predlog.Recorder(store=str(store), model="m")
        rec.capture(lambda x: 1)({"a": 1})
        h.flush(rec)
        rec.shutdown()
        h.write_segment(store, _two_model_frames(2), stem="h-8-dead")  # an orphan: nobody holds its lock
        assert subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode == 0
        with pytest.warns(RuntimeWarning, match="not writable"):
            s = Store(store)
        with s:
            assert s.read_only
            assert len(s.predictions()) == 1
            assert len(s.predictions(include_live=True)) == 5
            assert s.stats()["live_segments"] == 1
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ---------------------------------------------------------------- reading while the store changes


def _compact(root: Path, rels: list[str], n: int) -> None:
    """Merge files into one with the maintenance manifest protocol (what compaction does)."""
    parent = Path(rels[0]).parent
    new_rel = str(parent / f"compact-{n}-0.parquet")
    tmp = root / parent / f".compact-{n}.tmp"
    pq.write_table(pa.concat_tables([pq.read_table(root / r) for r in rels], promote_options="permissive"), tmp)
    (root / "_maintenance").mkdir(exist_ok=True)
    manifest = root / "_maintenance" / f"op-{n}.json"
    mtmp = root / "_maintenance" / f".op-{n}.tmp"
    mtmp.write_text(json.dumps({"op": "compact", "replaces": rels, "by": [new_rel], "created": time.time()}))
    os.rename(mtmp, manifest)
    os.rename(tmp, root / new_rel)
    for r in rels:
        os.unlink(root / r)
    os.unlink(manifest)


def test_reading_while_a_writer_seals_and_maintenance_swaps_files(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="m", flush_interval_s=0.02)
    predict = rec.capture(lambda x: x["i"])
    predict({"i": -1})
    h.flush(rec)
    stop = threading.Event()
    errors: list[BaseException] = []
    written = [1]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            for _ in range(50):
                predict({"i": i})
                i += 1
            h.flush(rec)
            written[0] = i + 1

    def compactor() -> None:
        n = 0
        while not stop.is_set():
            files = sorted(
                f for f in store_dir.glob("predictions/model=m/date=*/*.parquet") if not f.name.startswith("compact-")
            )
            if len(files) >= 4:
                _compact(store_dir, [str(f.relative_to(store_dir)) for f in files[:4]], n)
                n += 1
            time.sleep(0.1)

    with Store(store_dir) as s:

        def reader(kind: str) -> None:
            last = 0
            try:
                while not stop.is_set():
                    if kind == "sql":
                        n = int(s.sql("select count(*) as n from predictions")["n"].iloc[0])
                    else:
                        n = len(s.predictions(columns=["prediction_id"]))
                    assert n >= last, (n, last)  # never goes back, never double counts a swapped file
                    assert n <= written[0] + 50
                    last = n
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=f, args=a)
            for f, a in [(writer, ()), (compactor, ()), (reader, ("sql",)), (reader, ("df",)), (reader, ("df",))]
        ]
        for t in threads:
            t.start()
        time.sleep(2.0)  # let the load run
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors[0]
        h.flush(rec)
        df = s.predictions()
        assert len(df) == written[0] and df["prediction_id"].is_unique
        assert list(store_dir.glob("predictions/model=m/date=*/compact-*.parquet"))


@pytest.mark.slow
def test_reading_while_another_process_writes(store_dir: Path) -> None:
    code = textwrap.dedent("""
        import sys, predlog
        rec = predlog.Recorder(store=sys.argv[1], model="p", flush_interval_s=0.02, segment_max_rows=300)
        predict = rec.capture(lambda x: 0.5)
        for i in range(3000):
            predict({"i": i})
            if i % 250 == 0:
                rec.flush(timeout_s=30)
        assert rec.shutdown(timeout_s=30)
    """)
    ensure_store(str(store_dir))
    with Store(store_dir) as s:
        proc = subprocess.Popen([sys.executable, "-c", code, str(store_dir)])
        last = 0
        seen_live = 0
        while proc.poll() is None:
            n = len(s.predictions(columns=["prediction_id"]))
            live = s.predictions(columns=["prediction_id"], include_live=True)
            assert live["prediction_id"].is_unique
            assert n >= last
            last = n
            seen_live = max(seen_live, len(live) - n)
        assert proc.returncode == 0
        assert len(s.predictions()) == len(s.predictions(include_live=True)) == 3000


# ---------------------------------------------------------------- delegation


def test_maintenance_and_replay_are_delegated(s: Store, demo: Any) -> None:
    maintenance = pytest.importorskip("predlog.replay._maintenance")
    before = s.predictions()
    s.compact()
    after = s.predictions()
    assert sorted(after["prediction_id"]) == sorted(before["prediction_id"])
    assert s.user("u2")["prediction_id"].tolist() == demo.ids["u2"]
    assert callable(maintenance.finish_interrupted)


def test_user_lookup_is_pushed_into_the_parquet_scan(store_dir: Path, make_rec: Any, h: Any) -> None:
    rec = make_rec(model="m")
    predict = rec.capture(lambda x: 0.5)
    for i in range(2000):
        with predlog.context(user_id=f"user-{i % 50:03d}"):
            predict({"i": i})
    h.flush(rec)
    (path,) = store_dir.glob("predictions/model=m/date=*/*.parquet")
    # What compaction does: rows sorted by user and time, small row groups with statistics.
    table = pq.read_table(path).sort_by([("user_id", "ascending"), ("ts", "ascending")])
    tmp = path.with_name(".sorted.tmp")
    pq.write_table(table, tmp, row_group_size=100)
    os.replace(tmp, path)
    with Store(store_dir) as s:
        assert len(s.user("user-007")) == 40

        rel = s.relation(user_id="user-007")
        text = "\n".join(str(r[1]) for r in rel.query("r", "EXPLAIN ANALYZE SELECT * FROM r").fetchall())
    scanned = [line for line in text.splitlines() if "Row Groups Scanned" in line]
    assert scanned, text
    read, total = (int(x) for x in scanned[0].split(":")[1].strip(" │").split("/"))
    assert total == 20 and read <= 2, scanned[0]
