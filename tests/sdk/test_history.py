"""Imported history: log_frame and log_labels → write-ahead segment → Parquet → predlog.replay.

Real Parquet files, real DuckDB. What is imported reads back exactly as it was logged, and as
capture would have stored the same values; processors and counters behave as for captured
calls; bad frames are refused before anything is written.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from store_helpers import flush

import predlog
from predlog import _history
from predlog.replay import Store

UTC = dt.UTC
START = pd.Timestamp("2026-01-01", tz="UTC")
DAY_US = 86_400_000_000


def parquet(store: Path | str, kind: str = "predictions") -> list[str]:
    return sorted(glob.glob(os.path.join(str(store), kind, "**", "*.parquet"), recursive=True))


def id_ms(prediction_id: str) -> int:
    """The time part of a UUIDv7, in ms since the epoch."""
    u = uuid.UUID(prediction_id)
    assert u.version == 7
    return u.int >> 80


def history(n: int, seed: int = 0, days: int = 30) -> pd.DataFrame:
    """n past predictions, 20 columns of mixed types with missing values; ts over ``days`` days
    in random order, to the microsecond."""
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {
        "ts": START + pd.to_timedelta(rng.integers(0, days * DAY_US, n), unit="us"),
        "prediction": rng.random(n),
        "user": np.array([f"u{k}" for k in range(1000)], dtype=object)[rng.integers(0, 1000, n)],
    }
    for j in range(4):
        cols[f"x{j}"] = rng.normal(size=n)
    cols["x_missing"] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))
    for j in range(3):
        cols[f"i{j}"] = rng.integers(-1000, 1000, size=n)
    cols["hour"] = rng.integers(0, 24, size=n).astype(np.int32)
    cols["i_missing"] = pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 9, n)), dtype="Int64")
    cols["flag"] = rng.random(n) < 0.5
    cols["opt_in"] = pd.array(np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.5), dtype="boolean")
    cols["country"] = np.array(["DE", "FR", "US"], dtype=object)[rng.integers(0, 3, n)]
    cols["page"] = pd.array(
        np.where(rng.random(n) < 0.05, None, np.array(["home", "cart"], dtype=object)[rng.integers(0, 2, n)]),
        dtype="str",
    )
    cols["plan"] = pd.Categorical(np.array(["free", "pro", "team"])[rng.integers(0, 3, n)])
    cols["device"] = pd.Categorical(
        np.where(rng.random(n) < 0.05, None, np.array(["ios", "web"])[rng.integers(0, 2, n)])
    )
    cols["signup"] = pd.Timestamp("2025-06-01") + pd.to_timedelta(rng.integers(0, 10**12, n), unit="us")
    return pd.DataFrame(cols)


def text(s: pd.Series) -> pd.Series:
    """A column of strings as predlog.replay reads it back: objects, None where missing."""
    return s.astype(object).where(s.notna(), None)


FEATURES = [c for c in history(1).columns if c not in ("ts", "prediction", "user")]


# ---------------------------------------------------------------- a million rows


def test_a_million_rows_over_30_days_read_back_exactly(make_rec: Any, tmp_path: Path) -> None:
    n = 1_000_000
    df = history(n)
    assert df.shape[1] == 20
    rec = make_rec(shutdown_timeout_s=120)
    ids = rec.log_frame(df, user_id="user")
    assert rec.flush(timeout_s=120)

    # Ids: one per row, in row order, unique, each a UUIDv7 whose time is the row's ts.
    assert len(ids) == n and len(set(ids)) == n
    ts_ms = df["ts"].array.as_unit("us").asi8 // 1000
    sample = np.random.default_rng(1).integers(0, n, 2000)
    assert [id_ms(ids[i]) for i in sample] == ts_ms[sample].tolist()

    # One partition per UTC date, each holding that date's rows.
    days = sorted({d.isoformat() for d in df["ts"].dt.date})
    assert len(days) == 30
    parts = sorted({os.path.basename(os.path.dirname(p)) for p in parquet(tmp_path)})
    assert parts == [f"date={d}" for d in days]
    assert not glob.glob(os.path.join(str(tmp_path), "_wal", "*.arrows"))

    store = Store(str(tmp_path))
    got = store.predictions(
        model="m",
        columns=["prediction_id", "ts", "prediction", "user_id", "status", "sample_rate", "latency_ms", "cpu_ms"]
        + [f"features.{c}" for c in FEATURES],
    )
    assert len(got) == n
    got = got.set_index("prediction_id").loc[ids].reset_index(drop=True)  # back in row order
    pd.testing.assert_series_equal(got["ts"], df["ts"].astype("datetime64[us, UTC]"), check_names=False)
    pd.testing.assert_series_equal(got["prediction"], df["prediction"], check_names=False)
    assert got["user_id"].tolist() == df["user"].tolist()
    assert set(got["status"]) == {"ok"} and set(got["sample_rate"]) == {1.0}
    assert got["latency_ms"].isna().all() and got["cpu_ms"].isna().all()
    expected = {
        "x0": df["x0"],
        "x_missing": df["x_missing"],  # NaN of a float column: null, read as NaN
        "i0": df["i0"],  # int64 stays int64
        "hour": df["hour"],  # and int32 int32
        "i_missing": df["i_missing"],  # ints with missing values: Int64 with pd.NA
        "flag": df["flag"],
        "opt_in": df["opt_in"],  # booleans with missing values: boolean with pd.NA
        "country": text(df["country"]),  # strings read as objects, missing ones None
        "page": text(df["page"]),
        "plan": text(df["plan"]),  # categoricals: their values
        "device": text(df["device"]),
        "signup": df["signup"].astype("datetime64[us]").dt.tz_localize("UTC"),  # naive: taken as UTC
    }
    for name, want in expected.items():
        col = got[f"features.{name}"]
        pd.testing.assert_series_equal(col, want.reset_index(drop=True), check_names=False, obj=name)
    assert str(got["features.i_missing"].dtype) == "Int64" and str(got["features.opt_in"].dtype) == "boolean"
    assert got["features.page"].dtype == object and got["features.page"].isna().sum() == df["page"].isna().sum()

    # A window of days reads the rows of those days, and Store.get finds single rows.
    lo, hi = START + pd.Timedelta(days=3), START + pd.Timedelta(days=5)
    window = store.predictions(model="m", start=lo.to_pydatetime(), end=hi.to_pydatetime(), columns=["ts"])
    assert len(window) == int(((df["ts"] >= lo) & (df["ts"] < hi)).sum())
    for i in sample[:3]:
        row = store.get(ids[i])
        assert row["prediction"] == df["prediction"][i] and row["features"]["i0"] == df["i0"][i]
    s = rec.stats()
    assert (s["captured"], s["written"], s["rows_written"], s["sealed_rows"]) == (n, n, n, n)


# ---------------------------------------------------------------- as capture stores it


def test_values_are_stored_as_capture_stores_them(make_rec: Any, tmp_path: Path) -> None:
    naive = dt.datetime(2026, 1, 2, 3, 4, 5, 678901)
    rows = [
        {"n": 1, "f": 1.5, "b": True, "s": "DE", "t": naive, "v": [0.1, 0.9], "o": 7},
        {"n": 2, "f": None, "b": False, "s": None, "t": naive.replace(tzinfo=UTC), "v": [0.5, 0.5], "o": "seven"},
    ]
    captured = make_rec(store=str(tmp_path / "captured"))

    @captured.capture(prediction=lambda out: out)
    def predict(x: dict[str, Any]) -> list[float]:
        return list(x["v"])

    for r in rows:
        with predlog.context(region="eu", tier=2):
            predict({k: v for k, v in r.items() if k != "v"} | {"v": r["v"]})
    flush(captured)

    imported = make_rec(store=str(tmp_path / "imported"))
    frame = pd.DataFrame(rows)
    frame["ts"] = [dt.datetime(2026, 1, 1, tzinfo=UTC)] * 2
    frame["prediction"] = frame["v"]
    frame["region"] = "eu"
    frame["tier"] = 2
    imported.log_frame(frame, features=["n", "f", "b", "s", "t", "o", "v"], context=["region", "tier"])
    flush(imported)

    (a,) = [pq.read_table(p) for p in parquet(tmp_path / "captured")]
    (b,) = [pq.read_table(p) for p in parquet(tmp_path / "imported")]
    for name in ("features", "prediction", "context"):
        assert b.schema.field(name).type == a.schema.field(name).type, name
        assert b.column(name).to_pylist() == a.column(name).to_pylist(), name
    # Mixed scalars under one name become text, flagged, by the same rule.
    assert (
        b.column("capture_flags").to_pylist()
        == a.column("capture_flags").to_pylist()
        == [
            ["text:features.o"],
            None,
        ]
    )


def test_a_pyarrow_table_and_a_dict_of_columns_import_alike(make_rec: Any, tmp_path: Path) -> None:
    ts = [dt.datetime(2026, 3, 1, 12, tzinfo=UTC), dt.datetime(2026, 3, 2, 12, tzinfo=UTC)]
    table = pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("ns", tz="Europe/Paris")),
            "prediction": pa.array(["spam", "ham"], pa.large_string()),
            "plan": pa.array(["pro", "free"]).dictionary_encode(),
            "n": pa.array([1, None], pa.int32()),
        }
    )
    columns = {
        "ts": ["2026-03-01T13:00:00+01:00", "2026-03-02T12:00:00Z"],
        "prediction": np.array(["spam", "ham"], dtype=object),
        "plan": ["pro", "free"],
        "n": pa.array([1, None], pa.int32()),
    }
    a = make_rec(store=str(tmp_path / "a"))
    b = make_rec(store=str(tmp_path / "b"))
    ids_a = a.log_frame(table)
    ids_b = b.log_frame(columns)
    flush(a)
    flush(b)
    ta = pa.concat_tables(pq.read_table(p) for p in parquet(tmp_path / "a"))
    tb = pa.concat_tables(pq.read_table(p) for p in parquet(tmp_path / "b"))
    assert ta.schema.field("prediction").type == pa.string() == tb.schema.field("prediction").type
    assert ta.schema.field("features").type == pa.struct([("plan", pa.string()), ("n", pa.int32())])
    assert ta.schema.field("features").type == tb.schema.field("features").type
    assert ta.column("ts").to_pylist() == tb.column("ts").to_pylist() == ts
    assert [id_ms(i) for i in ids_a] == [id_ms(i) for i in ids_b] == [int(t.timestamp() * 1000) for t in ts]


def test_concatenated_frames_with_arrow_backed_columns(make_rec: Any, tmp_path: Path) -> None:
    """pandas' string columns are Arrow-backed: after ``pd.concat`` they convert to chunked
    arrays, which import as any other column."""
    days = [
        pd.DataFrame({"ts": [START + pd.Timedelta(days=d)] * 2, "prediction": [0.1, 0.9], "country": ["DE", "FR"]})
        for d in range(3)
    ]
    frame = pd.concat(days, ignore_index=True)
    assert isinstance(pa.array(frame["country"], from_pandas=True), pa.ChunkedArray)
    rec = make_rec()
    ids = rec.log_frame(frame)
    flush(rec)
    with Store(tmp_path) as s:
        got = (
            s.predictions(model="m", columns=["prediction_id", "features.country"]).set_index("prediction_id").loc[ids]
        )
    assert got["features.country"].tolist() == ["DE", "FR"] * 3


def test_an_empty_frame_writes_nothing(make_rec: Any, tmp_path: Path) -> None:
    rec = make_rec()
    assert rec.log_frame(pd.DataFrame({"ts": pd.to_datetime([], utc=True), "prediction": []})) == []
    assert rec.log_frame({"ts": [], "prediction": []}) == []
    assert rec.log_labels({"prediction_id": [], "label": []}) == 0
    flush(rec)
    assert rec.stats()["captured"] == 0 and not parquet(tmp_path)


def test_model_and_version_from_columns_and_vector_predictions(make_rec: Any, tmp_path: Path) -> None:
    rec = make_rec()
    frame = pd.DataFrame(
        {
            "when": ["2026-02-01 10:00", "2026-02-01 11:00", "2026-02-02 10:00"],
            "model": ["churn", "fraud", "churn"],
            "release": ["1.0", "2.0", "1.1"],
            "probs": [np.array([0.2, 0.8]), np.array([0.6, 0.4]), np.array([0.5, 0.5])],
            "p": [0.8, 0.6, 0.5],
            "ms": [12, 3, 40],
            "x": [1, 2, 3],
        }
    )
    rec.log_frame(
        frame, ts="when", model="model", version="release", prediction="probs", confidence="p", latency_ms="ms"
    )
    flush(rec)
    store = Store(str(tmp_path))
    assert store.models() == ["churn", "fraud"]
    got = store.predictions(model="churn", version=["1.0", "1.1"])
    assert got["model_version"].tolist() == ["1.0", "1.1"]
    assert got["prediction"].tolist() == [[0.2, 0.8], [0.5, 0.5]]
    assert got["confidence"].tolist() == [0.8, 0.5] and got["latency_ms"].tolist() == [12.0, 40.0]
    assert got["features"].tolist() == [{"x": 1}, {"x": 3}]  # columns named by arguments are not features
    assert sorted(os.path.basename(os.path.dirname(p)) for p in parquet(tmp_path)) == [
        "date=2026-02-01",
        "date=2026-02-01",
        "date=2026-02-02",
    ]


# ---------------------------------------------------------------- processors and counters


def test_processors_apply_as_for_captured_rows(make_rec: Any, tmp_path: Path) -> None:
    def tag(row: dict[str, Any]) -> dict[str, Any] | None:
        if row["features"]["amount"] < 0:
            return None  # dropped, counted as "processor"
        row["context"] = {**(row["context"] or {}), "checked": True}
        return row

    rec = make_rec(
        hash_fields=["user_id", "features.email"],
        hash_key="k",
        redact=["*secret*"],
        drop_fields=["features.raw"],
        processors=[tag],
    )

    @rec.capture
    def predict(x: dict[str, Any]) -> float:
        return 0.5

    with predlog.context(user_id="u1"):
        predict({"amount": 1.0, "email": "a@x.io", "api_secret": "s3", "raw": "blob"})
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2026-01-05", "2026-01-06", "2026-01-07"], utc=True),
            "prediction": [0.1, 0.2, 0.3],
            "uid": ["u1", "u2", "u3"],
            "amount": [2.0, -1.0, 3.0],
            "email": ["b@x.io", "c@x.io", "d@x.io"],
            "api_secret": ["s1", "s2", "s3"],
            "raw": ["r1", "r2", "r3"],
        }
    )
    rec.log_frame(frame, user_id="uid")
    flush(rec)
    rows = Store(str(tmp_path), hash_key="k").predictions(model="m").sort_values("ts")
    rows = rows[rows["prediction"] != 0.5].to_dict("records") + rows[rows["prediction"] == 0.5].to_dict("records")
    assert [r["prediction"] for r in rows] == [0.1, 0.3, 0.5]
    for r, uid, email in zip(rows, ["u1", "u3", "u1"], ["b@x.io", "d@x.io", "a@x.io"]):
        assert r["user_id"] == predlog.hash_id(uid, "k")
        assert r["features"]["email"] == predlog.hash_id(email, "k")
        assert r["features"]["api_secret"] == "[REDACTED]"
        assert "raw" not in r["features"]
        assert r["context"] == {"checked": True}
    assert rec.stats()["dropped"]["processor"] == 1
    # Hashed ids are looked up with the key, as for captured rows.
    assert len(Store(str(tmp_path), hash_key="k").predictions(model="m", user_id="u3")) == 1


def test_counters_move_as_for_captured_calls_and_no_spans(make_rec: Any, tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    rec = make_rec(tracer_provider=provider)
    predict = rec.capture(lambda x: 1)
    predict({"a": 1})
    ids = rec.log_frame(history(5000, days=3), user_id="user")
    assert rec.log_labels({"prediction_id": ids[:100], "label": [1] * 100}) == 100
    flush(rec)
    s = rec.stats()
    assert (s["captured"], s["written"], s["rows_written"], s["sealed_rows"]) == (5001, 5001, 5001, 5001)
    assert (s["labels"], s["labels_dropped"], s["dropped_total"], s["queue_depth"]) == (100, 0, 0, 0)
    provider.force_flush()
    assert s["spans"] == 1 and len(spans.get_finished_spans()) == 1  # the captured call only


# ---------------------------------------------------------------- labels


def test_labels_keep_their_type_and_join_imported_predictions(make_rec: Any, tmp_path: Path) -> None:
    rec = make_rec()
    when = pd.to_datetime(["2026-01-10 09:00", "2026-01-11 09:00", "2026-01-12 09:00"], utc=True)
    ids = {
        model: rec.log_frame(pd.DataFrame({"ts": when, "prediction": [0.1, 0.7, 0.9], "x": [1, 2, 3]}), model=model)
        for model in ("ints", "strs", "floats")
    }
    assert rec.log_labels(pd.DataFrame({"prediction_id": ids["ints"], "label": [0, 1, 1]})) == 3
    rec.log_labels(pd.DataFrame({"prediction_id": ids["strs"], "label": ["ham", "spam", None]}))
    rec.log_labels(pa.table({"pid": ids["floats"], "y": [0.5, 1.0, 2.25]}), prediction_id="pid", label="y")
    flush(rec)
    store = Store(str(tmp_path))
    ints = store.labeled(model="ints")
    assert str(ints["label"].dtype) == "int64" and ints["label"].tolist() == [0, 1, 1]
    strs = store.labeled(model="strs")
    assert strs["label"].tolist() == ["ham", "spam", None]
    floats = store.labeled(model="floats")
    assert floats["label"].dtype == np.float64 and floats["label"].tolist() == [0.5, 1.0, 2.25]
    families = {pq.read_schema(p).field("label").type for p in parquet(tmp_path, "labels")}
    assert families == {pa.int64(), pa.string(), pa.float64()}


def test_mixed_labels_keep_each_value_type_as_log_label_does(make_rec: Any, tmp_path: Path) -> None:
    one, bulk = make_rec(store=str(tmp_path / "one")), make_rec(store=str(tmp_path / "bulk"))
    values = [1, "spam", 2.5, True, None, 3]
    for i, v in enumerate(values):
        one.log_label(v, prediction_id=f"p{i}")
    bulk.log_labels(pd.DataFrame({"prediction_id": [f"p{i}" for i in range(6)], "label": values}))
    flush(one)
    flush(bulk)

    def by_family(store: Path) -> dict[str, list[tuple[str, Any]]]:
        out: dict[str, list[tuple[str, Any]]] = {}
        for p in parquet(store, "labels"):
            t = pq.read_table(p)
            out[str(t.schema.field("label").type)] = sorted(
                zip(t.column("prediction_id").to_pylist(), t.column("label").to_pylist())
            )
        return out

    assert by_family(tmp_path / "bulk") == by_family(tmp_path / "one")
    assert set(by_family(tmp_path / "bulk")) == {"int64", "string", "double", "bool"}  # None joins one of them


def test_the_latest_label_wins(make_rec: Any, tmp_path: Path) -> None:
    rec = make_rec()
    ids = rec.log_frame({"ts": ["2026-01-01T00:00:00Z"] * 3, "prediction": [1, 0, 1], "x": [1, 2, 3]})
    later = pd.to_datetime(["2026-02-02"] * 3, utc=True)
    earlier = pd.to_datetime(["2026-02-01"] * 3, utc=True)
    # With their own times: the later one wins, whatever the order they are logged in.
    rec.log_labels(pd.DataFrame({"prediction_id": ids, "label": [1, 1, 1], "at": later}), ts="at")
    rec.log_labels(pd.DataFrame({"prediction_id": ids, "label": [0, 0, 0], "at": earlier}), ts="at")
    flush(rec)
    assert Store(str(tmp_path)).labeled(model="m")["label"].tolist() == [1, 1, 1]
    # Logged now: each call after the last, each row after the one before it.
    rec.log_labels(pd.DataFrame({"prediction_id": ids, "label": [5, 5, 5]}))
    rec.log_labels(pd.DataFrame({"prediction_id": [ids[0], ids[1], ids[0]], "label": [6, 7, 8]}))
    rec.log_label(9, prediction_id=ids[2])
    flush(rec)
    assert Store(str(tmp_path)).labeled(model="m")["label"].tolist() == [8, 7, 9]


def test_labels_by_request_id(make_rec: Any, tmp_path: Path) -> None:
    rec = make_rec(hash_fields=["request_id"], hash_key="k")
    rec.log_frame(
        pd.DataFrame({"ts": pd.to_datetime(["2026-01-03"] * 2, utc=True), "prediction": [1, 2], "rid": [10, 11]}),
        request_id="rid",
    )
    rec.log_labels(pd.DataFrame({"req": ["10", "11"], "outcome": ["a", "b"]}), request_id="req", label="outcome")
    flush(rec)
    got = Store(str(tmp_path), hash_key="k").labeled(model="m")
    assert got["label"].tolist() == ["a", "b"]
    assert got["request_id"].tolist() == [predlog.hash_id("10", "k"), predlog.hash_id("11", "k")]


def test_labels_in_bulk_are_all_written_with_their_type(make_rec: Any, tmp_path: Path) -> None:
    n = 200_000
    rec = make_rec(shutdown_timeout_s=60)
    ids = [f"p{i}" for i in range(n)]
    assert rec.log_labels({"prediction_id": ids, "label": np.arange(n) % 3}) == n
    assert rec.flush(timeout_s=60)
    assert rec.stats()["labels"] == n
    assert pq.read_table(parquet(tmp_path, "labels")[0]).schema.field("label").type == pa.int64()


# ---------------------------------------------------------------- bad input


def _bad_input() -> list[tuple[str, str, Any, dict[str, Any], str]]:
    """(case, the function, the frame, its arguments, the column the error must name)."""
    ok = {"ts": ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"], "prediction": [1.0, 2.0], "x": [1, 2]}
    frames = [
        ("not a frame", [1, 2, 3], {}, "DataFrame"),
        ("no ts column", {"when": ok["ts"], "prediction": [1, 2]}, {}, "'ts'"),
        ("no prediction column", {"ts": ok["ts"], "score": [1, 2]}, {}, "'prediction'"),
        ("a missing feature column", ok, {"features": ["x", "y"]}, "'y'"),
        ("unparseable ts", {**ok, "ts": ["2026-01-01T00:00:00Z", "yesterday"]}, {}, "'ts'"),
        ("a missing ts", pd.DataFrame({**ok, "ts": pd.to_datetime(["2026-01-01", None])}), {}, "'ts'"),
        ("numbers as ts", {**ok, "ts": [1.7e9, 1.7e9]}, {}, "'ts'"),
        ("ts before 1970", {**ok, "ts": ["1969-12-31T00:00:00Z", "2026-01-01T00:00:00Z"]}, {}, "'ts'"),
        ("columns of unequal length", {**ok, "x": [1, 2, 3]}, {}, "'x'"),
        ("confidence not numbers", {**ok, "c": ["high", "low"]}, {"confidence": "c"}, "'c'"),
        ("an invalid model name", {**ok, "mdl": ["ok", "no/slash"]}, {"model": "mdl"}, "'mdl'"),
        ("a missing model", {**ok, "mdl": ["ok", None]}, {"model": "mdl"}, "'mdl'"),
        ("a missing context column", ok, {"context": ["region"]}, "'region'"),
        ("two columns of one name", pd.DataFrame([[1, 2]], columns=["x", "x"]), {}, "'x'"),
    ]
    labels = [
        ("not a frame", "p1,1", {}, "DataFrame"),
        ("no label column", {"prediction_id": ["p1"], "y": [1]}, {}, "'label'"),
        ("no prediction_id column", {"pid": ["p1"], "label": [1]}, {}, "'prediction_id'"),
        (
            "a missing prediction_id",
            pd.DataFrame({"prediction_id": ["p1", None], "label": [1, 0]}),
            {},
            "'prediction_id'",
        ),
        ("a missing request_id", {"req": ["r1", None], "label": [1, 0]}, {"request_id": "req"}, "'req'"),
        ("unparseable ts", {"prediction_id": ["p1"], "label": [1], "at": ["soon"]}, {"ts": "at"}, "'at'"),
        ("columns of unequal length", {"prediction_id": ["p1", "p2"], "label": [1]}, {}, "'label'"),
    ]
    return [(case, "log_frame", *rest) for case, *rest in frames] + [
        (case, "log_labels", *rest) for case, *rest in labels
    ]


@pytest.mark.parametrize(
    ("case", "fn", "frame", "kwargs", "names"), _bad_input(), ids=[f"{c[1]}: {c[0]}" for c in _bad_input()]
)
def test_bad_input_is_refused_before_anything_is_written(
    make_rec: Any, tmp_path: Path, case: str, fn: str, frame: Any, kwargs: dict[str, Any], names: str
) -> None:
    rec = make_rec()
    with pytest.raises(ValueError, match=fn) as err:
        getattr(rec, fn)(frame, **kwargs)
    assert names in str(err.value), str(err.value)
    assert rec.flush(timeout_s=10)
    s = rec.stats()
    assert (s["captured"], s["written"], s["labels"], s["queue_depth"]) == (0, 0, 0, 0)
    assert not parquet(tmp_path) and not parquet(tmp_path, "labels")


def test_times_in_every_form_are_utc(make_rec: Any, tmp_path: Path) -> None:
    want = [dt.datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=UTC), dt.datetime(2026, 5, 2, 23, 30, tzinfo=UTC)]
    forms: list[Any] = [
        ["2026-05-01T10:00:00.123456Z", "2026-05-03T01:30:00+02:00"],  # offsets
        ["2026-05-01 10:00:00.123456", "2026-05-02 23:30:00"],  # naive text: UTC
        ["2026-05-01T10:00:00.123456", "2026-05-02T18:30:00-05:00"],  # mixed
        pd.Series(want).dt.tz_convert("Asia/Tokyo"),
        np.array(["2026-05-01T10:00:00.123456", "2026-05-02T23:30:00"], dtype="datetime64[us]"),
        [want[0].replace(tzinfo=None), want[1].astimezone(dt.timezone(dt.timedelta(hours=-3)))],
        pa.array(want, pa.timestamp("us", tz="UTC")),
    ]
    for i, form in enumerate(forms):
        assert _history.timestamps(form, f"form {i}").tolist() == [
            int(w.timestamp()) * 1_000_000 + w.microsecond for w in want
        ], i
    rec = make_rec()
    rec.log_frame({"ts": forms[2], "prediction": [1, 2]})
    flush(rec)
    assert pq.read_table(parquet(tmp_path)[0]).column("ts").to_pylist() == want[:1]


# ---------------------------------------------------------------- alongside live traffic, forks, full queues


def test_an_import_alongside_live_calls(make_rec: Any, tmp_path: Path) -> None:
    rec = make_rec()

    @rec.capture
    def predict(x: dict[str, int]) -> int:
        return x["i"]

    stop = threading.Event()
    calls = 0

    def serve() -> None:
        nonlocal calls
        while not stop.is_set() or calls < 1000:
            predict({"i": calls})
            calls += 1

    server = threading.Thread(target=serve)
    server.start()
    try:
        ids = rec.log_frame(history(50_000, days=5))
    finally:
        stop.set()
        server.join()
    flush(rec)
    store = Store(str(tmp_path))
    imported = store.predictions(model="m", columns=["prediction_id"], where={"latency_ms": None})
    live = store.predictions(model="m", columns=["prediction_id"], where={"latency_ms": (">=", 0)})
    assert sorted(imported["prediction_id"]) == sorted(ids)  # every imported row
    s = rec.stats()
    assert len(live) > 0 and len(live) + s["dropped"]["queue_full"] == calls  # live calls: written or counted
    assert s["written"] == 50_000 + len(live) and s["captured"] == 50_000 + calls


@pytest.mark.slow
def test_an_import_in_a_forked_worker(tmp_path: Path) -> None:
    rec = predlog.Recorder(store=str(tmp_path), model="m")
    parent_ids = rec.log_frame(history(1000, seed=1, days=2))
    assert rec._writer is not None and rec._writer.alive()  # forked with a live writer thread
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: import, flush, report the ids
        code = 1
        try:
            os.close(r)
            ids = rec.log_frame(history(2000, seed=2, days=2))
            if rec.flush(timeout_s=60) and rec.stats()["written"] == 2000:
                os.write(w, "\n".join(ids).encode())
                code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child_ids = f.read().decode().split("\n")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert rec.flush(timeout_s=60)
    rec.shutdown(timeout_s=30)
    got = Store(str(tmp_path)).predictions(model="m", columns=["prediction_id"])["prediction_id"]
    assert sorted(got) == sorted(parent_ids + child_ids)


def test_a_full_queue_waits_then_raises_and_keeps_what_it_took(
    make_rec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_history, "CHUNK_ROWS", 100)
    release = threading.Event()
    taken = threading.Event()

    def stall(row: dict[str, Any]) -> dict[str, Any]:
        taken.set()
        release.wait()
        return row

    rec = make_rec(processors=[stall], max_queue_size=1)
    frame = pd.DataFrame({"ts": pd.date_range("2026-01-01", periods=1000, freq="min", tz="UTC"), "prediction": 1.0})
    try:
        with pytest.raises(TimeoutError) as err:
            rec.log_frame(frame, timeout_s=0.5)
        assert taken.is_set()
    finally:
        release.set()
    queued = err.value.queued_rows  # type: ignore[attr-defined]
    assert 0 < len(queued) < 1000 and queued == list(range(len(queued)))
    flush(rec)
    got = Store(str(tmp_path)).predictions(model="m", columns=["ts"])
    assert got["ts"].tolist() == frame["ts"][queued].tolist()  # what was queued is written, no more
    assert rec.stats()["dropped_total"] == 0


def test_a_small_queue_slows_an_import_down_but_drops_nothing(
    make_rec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_history, "CHUNK_ROWS", 500)
    rec = make_rec(max_queue_size=1)
    ids = rec.log_frame(history(20_000, days=4))
    rec.log_labels({"prediction_id": ids, "label": [1] * len(ids)})
    flush(rec)
    s = rec.stats()
    assert (s["written"], s["labels"], s["dropped_total"], s["labels_dropped"]) == (20_000, 20_000, 0, 0)
