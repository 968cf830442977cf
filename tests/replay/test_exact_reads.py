"""What is logged is what is read, through Store, pandas and pyarrow; and a query that cannot
match says why instead of returning nothing.

Each test writes a real store with the SDK and reads it back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import predlog
from predlog.replay import (
    FilterError,
    LiveRowsWarning,
    MixedLabelTypesWarning,
    Store,
    UnknownModelError,
    UnknownVersionError,
    UserNotFoundWarning,
)

PREDLOG = str(Path(sys.executable).with_name("predlog"))  # the installed command line


def last_id() -> str:
    pid = predlog.last_prediction_id()
    assert pid is not None
    return pid


# ---------------------------------------------------------------- 1. labels keep their type


@pytest.fixture
def three_models(make_rec: Any, store_dir: Path, h: Any) -> dict[str, list[str]]:
    """spam (string labels), churn (int classes) and reg (float targets), one process."""
    rec = make_rec(model="spam")
    spam = rec.capture(model="spam")(lambda x: "ham")
    churn = rec.capture(model="churn")(lambda x: 1)
    reg = rec.capture(model="reg")(lambda x: 0.5)
    ids: dict[str, list[str]] = {"spam": [], "churn": [], "reg": []}
    for i in range(4):
        spam({"words": i})
        ids["spam"].append(last_id())
        churn({"tenure": i})
        ids["churn"].append(last_id())
        reg({"x": float(i)})
        ids["reg"].append(last_id())
    for i in range(3):  # the last prediction of each model stays unlabeled
        rec.log_label(["ham", "spam"][i % 2], prediction_id=ids["spam"][i])
        rec.log_label(i % 2, prediction_id=ids["churn"][i])
        rec.log_label(float(i) + 0.5, prediction_id=ids["reg"][i])
    h.flush(rec)
    return ids


def test_labels_read_back_with_their_type_per_model(store_dir: Path, three_models: Any) -> None:
    with Store(store_dir) as s, warnings.catch_warnings():
        warnings.simplefilter("error")  # one type per model: no warning
        spam = s.labeled(model="spam")
        assert spam["label"].tolist() == ["ham", "spam", "ham"]
        assert (spam["label"] == "ham").mean() == pytest.approx(2 / 3)
        churn = s.labeled(model="churn")
        assert churn["label"].tolist() == [0, 1, 0] and churn["label"].dtype == np.int64
        assert s.labeled(model="reg")["label"].tolist() == [0.5, 1.5, 2.5]
        # Unlabeled rows: ints stay ints, missing is <NA>
        churn_all = s.labeled(model="churn", include_unlabeled=True)
        assert str(churn_all["label"].dtype) == "Int64" and churn_all["label"].isna().sum() == 1
        # The lazy relation has the natural type too.
        rel = s.labeled_relation(model="churn")
        assert rel.types[rel.columns.index("label")] == "BIGINT"
        assert s.training_data(model="churn")["label"].tolist() == [0, 1, 0]


def test_labels_of_several_types_in_one_selection(store_dir: Path, three_models: Any) -> None:
    with Store(store_dir) as s:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            both = s.labeled()  # eager: each label as logged, no warning
        assert sorted(map(repr, both["label"].tolist())) == sorted(
            map(repr, ["ham", "spam", "ham", 0, 1, 0, 0.5, 1.5, 2.5])
        )
        by_model = {m: g["label"].tolist() for m, g in both.groupby("model")}
        assert by_model == {"spam": ["ham", "spam", "ham"], "churn": [0, 1, 0], "reg": [0.5, 1.5, 2.5]}
        with pytest.warns(MixedLabelTypesWarning, match="several types"):
            rel = s.labeled_relation()
        got = rel.aggregate("label_type, count(*) AS n").fetchall()
        assert dict(got) == {"str": 3, "int": 3, "float": 3}
        # ints and floats of one model read as floats (no warning: numbers of one kind of use)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ints_and_floats = s.labeled(model=["churn", "reg"])
        assert sorted(ints_and_floats["label"].tolist()) == [0.0, 0.0, 0.5, 1.0, 1.5, 2.5]


def test_labels_keep_their_type_after_compaction(store_dir: Path, three_models: Any) -> None:
    with Store(store_dir) as s:
        s.compact()
        assert s.labeled(model="churn")["label"].tolist() == [0, 1, 0]
        assert s.labeled(model="spam")["label"].tolist() == ["ham", "spam", "ham"]
        assert s.labeled(model="reg")["label"].tolist() == [0.5, 1.5, 2.5]


# ---------------------------------------------------------------- 2. replay rows stay apart


def test_replay_rows_are_left_out_unless_their_version_is_named(make_rec: Any, store_dir: Path, h: Any) -> None:
    rec = make_rec(model="m", version="0.3")
    predict = rec.capture(lambda x: x["a"] * 2.0)
    for i in range(10):
        with predlog.context(user_id="u1", request_id=f"r{i}"):
            predict({"a": float(i)})
            rec.log_label(float(i), prediction_id=last_id())
    h.flush(rec)
    with Store(store_dir) as s:
        before = {
            "p": len(s.predictions()),
            "t": len(s.training_data(model="m")),
            "l": len(s.labeled()),
            "u": len(s.user("u1")),
            "q": int(s.sql("select count(*) n from predictions")["n"].iloc[0]),
        }
        r = s.replay(lambda x: x["a"] * 3.0, model="m", record_as="0.4-shadow")
        assert r.summary["recorded"] == 10
        after = {
            "p": len(s.predictions()),
            "t": len(s.training_data(model="m")),
            "l": len(s.labeled()),
            "u": len(s.user("u1")),
            "q": int(s.sql("select count(*) n from predictions")["n"].iloc[0]),
        }
        assert after == before == {"p": 10, "t": 10, "l": 10, "u": 10, "q": 10}
        shadow = s.predictions(version="0.4-shadow")
        assert len(shadow) == 10 and shadow["prediction"].tolist() == [3.0 * i for i in range(10)]
        assert len(s.predictions(include_replays=True)) == 20
        assert int(s.sql("select count(*) n from predictions", include_replays=True)["n"].iloc[0]) == 20
        assert s.stats()["replay_rows"] == 10 and s.stats()["rows"] == 20


# ---------------------------------------------------------------- 3. live rows are easy to see


def test_rows_still_in_live_segments_are_pointed_at(make_rec: Any, store_dir: Path, h: Any) -> None:
    rec = make_rec(model="live", segment_max_age_s=3600)
    predict = rec.capture(lambda x: 1.0)
    with predlog.context(user_id="u1"):
        for i in range(5):
            predict({"i": i})
    h.wait_written(rec, 5)  # in the write-ahead segment, not sealed
    rec2 = make_rec(model="sealed")
    rec2.capture(lambda x: 1.0)({"i": 0})
    h.flush(rec2)
    with Store(store_dir) as s:
        with pytest.raises(UnknownModelError, match="only in live write-ahead segments.*include_live=True"):
            s.predictions(model="live")
        with pytest.warns(LiveRowsWarning, match="5 row"):
            assert s.user("u1").empty
        assert len(s.user("u1", include_live=True)) == 5
        assert len(s.predictions(model="live", include_live=True)) == 5
    out = subprocess.run(
        [PREDLOG, "--store", str(store_dir), "user", "u1", "--include-live", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 5


# ---------------------------------------------------------------- 6. typos raise


@pytest.fixture
def versions(make_rec: Any, store_dir: Path, h: Any) -> str:
    rec = make_rec(model="m", version="1.0.0")
    predict = rec.capture(lambda x: 1.0)
    for i in range(3):
        with predlog.context(user_id=f"user-{i}", country="FR"):
            predict({"i": i})
    h.flush(rec)
    return str(store_dir)


def test_a_version_or_status_the_store_does_not_hold_raises(versions: str) -> None:
    with Store(versions) as s:
        with pytest.raises(UnknownVersionError, match=r"'1\.0'.*versions present: '1\.0\.0'.*Did you mean '1\.0\.0'"):
            s.predictions(version="1.0")
        with pytest.raises(UnknownVersionError):
            s.relation(version=["1.0.0", "2"])
        # the version the one given abbreviates, alone
        assert "Did you mean '1.3.0'? " in str(UnknownVersionError("1.3", ["1.3.0", "1.4.0", "1.30"]))
        assert len(s.predictions(version="1.0.0")) == 3
        with pytest.raises(FilterError, match="'failed' is not a status.*'ok' or 'error'"):
            s.predictions(status="failed")
        assert s.predictions(status="error").empty  # a real status with no rows: empty, no error


def test_values_of_the_wrong_type_raise_instead_of_matching_nothing(versions: str) -> None:
    with Store(versions) as s:
        with pytest.raises(FilterError, match="stored as text: pass '7'"):
            s.user(7)  # type: ignore[arg-type]
        with pytest.raises(FilterError, match=r"'context.country' holds text.*'1'"):
            s.predictions(where={"context.country": 1})
        with pytest.raises(FilterError):
            s.predictions(user_id=3)  # type: ignore[arg-type]
        assert len(s.predictions(where={"context.country": "FR"})) == 3


def test_forgetting_a_user_who_is_not_there_says_so(versions: str) -> None:
    with Store(versions) as s:
        with pytest.warns(UserNotFoundWarning, match="no row of user 'user-9'"):
            res = s.forget_user("user-9", wait_live_s=0)
        assert not res.found and res.prediction_rows == 0
        assert s.forget_user("user-1", wait_live_s=0).found
    out = subprocess.run(
        [PREDLOG, "--store", versions, "forget", "user-9", "--yes", "--wait-live-s", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "no row of user 'user-9'" in out.stderr


def test_hashed_user_ids_are_found_with_the_key(
    make_rec: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch, h: Any
) -> None:
    monkeypatch.delenv("PREDLOG_HASH_KEY", raising=False)
    rec = make_rec(model="m", hash_fields=["user_id", "features.email"], hash_key="k1")
    predict = rec.capture(lambda x: 1.0)
    for user in ("alice", "bob", "alice"):
        with predlog.context(user_id=user):
            predict({"email": f"{user}@example.com", "n": 1})
    h.flush(rec)
    stored = pq.read_table(next(store_dir.glob("predictions/**/*.parquet"))).column("user_id").to_pylist()
    assert predlog.hash_id("alice", "k1") in stored and "alice" not in stored
    with Store(store_dir) as s:
        with pytest.raises(FilterError, match="hashed values.*hash_key"):
            s.user("alice")
    with Store(store_dir, hash_key="k1") as s:
        assert len(s.user("alice")) == 2
        assert len(s.predictions(where={"features.email": "bob@example.com"})) == 1
        with pytest.raises(FilterError, match="only equality and membership"):
            s.predictions(where={"features.email": ("like", "%@example.com")})
    monkeypatch.setenv("PREDLOG_HASH_KEY", "k1")
    with Store(store_dir) as s:
        assert len(s.user("bob")) == 1
        assert s.forget_user("alice", wait_live_s=0).prediction_rows == 2


# ---------------------------------------------------------------- 7. replay comparisons


@pytest.fixture
def classifier(make_rec: Any, store_dir: Path, h: Any) -> Any:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    data = load_breast_cancer(as_frame=True)
    X = data.data.iloc[:, :5]
    model = LogisticRegression(max_iter=2000).fit(X.iloc[:300], data.target.iloc[:300])
    rec = make_rec(model="cancer")

    @rec.capture(confidence="max")
    def predict(x: dict[str, float]) -> list[float]:
        return model.predict_proba(pd.DataFrame([x]))[0].tolist()

    for _, row in X.iloc[300:400].iterrows():
        predict(row.to_dict())
    h.flush(rec)
    retrained = LogisticRegression(max_iter=2000, C=0.01).fit(X.iloc[100:400], data.target.iloc[100:400])
    return model, retrained


def test_replaying_classes_against_logged_probabilities_is_refused(store_dir: Path, classifier: Any) -> None:
    _, retrained = classifier
    with Store(store_dir) as s:
        with pytest.raises(ValueError, match="one number per row.*vectors.*predict_proba"):
            s.replay(retrained.predict, model="cancer")
        r = s.replay(retrained.predict_proba, model="cancer")
    assert r.summary["agreement_rate"] == 0.0  # a retrained model never repeats a vector exactly
    assert 0.5 < r.summary["class_agreement_rate"] <= 1.0
    assert r.summary["class_agreement_rate"] == pytest.approx(1 - r.summary["class_changes"] / r.summary["compared"])
    head = repr(r)
    assert head.index("class agreement") < head.index("exact agreement")


def test_a_function_that_takes_a_frame_raises_its_own_error(store_dir: Path, classifier: Any) -> None:
    def broken(frame: pd.DataFrame) -> np.ndarray:
        raise KeyError("column 'missing' not in frame")

    with Store(store_dir) as s, pytest.raises(KeyError, match="column 'missing'"):
        s.replay(broken, model="cancer")


# ---------------------------------------------------------------- 8. several models at once


def test_several_models_read_together_keep_their_own_values(make_rec: Any, store_dir: Path, h: Any) -> None:
    rec = make_rec(model="fraud")
    fraud = rec.capture(model="fraud")(lambda x: 0.25)
    reco = rec.capture(model="reco")(lambda x: [0.1, 0.9])
    with predlog.context(user_id="u1"):
        fraud({"amount": 10.0, "country": "DE"})
        reco({"items": [1, 2]})
    h.flush(rec)
    with Store(store_dir) as s:
        df = s.user("u1")
        assert df["prediction"].tolist() == [0.25, [0.1, 0.9]]
        assert df["features"].tolist() == [{"amount": 10.0, "country": "DE"}, {"items": [1, 2]}]
        import duckdb

        with pytest.raises(duckdb.Error, match="Hint:.*'prediction'.*pass model="):
            s.sql("select avg(prediction) from predictions")
        assert s.sql("select avg(prediction) a from predictions", model="fraud")["a"].tolist() == [0.25]


def test_pandas_and_pyarrow_read_the_whole_predictions_tree(make_rec: Any, store_dir: Path, h: Any) -> None:
    rec = make_rec(model="a")
    a = rec.capture(model="a")(lambda x: 0.5)
    b = rec.capture(model="b")(lambda x: 0.75)
    a({"x": 1})
    b({"x": 2})
    h.flush(rec)
    df = pd.read_parquet(store_dir / "predictions")  # the partition column does not clash with a stored one
    assert sorted(zip(df["model"].astype(str), df["prediction"])) == [("a", 0.5), ("b", 0.75)]
    table = pq.read_table(store_dir / "predictions")
    assert sorted(table.column("model").to_pylist()) == ["a", "b"]
    for f in store_dir.glob("predictions/**/*.parquet"):
        assert "model" not in pq.read_schema(f).names


# ---------------------------------------------------------------- 9. pandas friction


def test_columns_dtypes_and_missing_values_follow_one_rule(make_rec: Any, store_dir: Path, h: Any) -> None:
    rec = make_rec(model="m")
    predict = rec.capture(lambda x: x["k"])
    predict({"k": 1})
    with predlog.context(user_id="u1", request_id="r1"):
        predict({"k": 2})
    h.flush(rec)
    with Store(store_dir) as s:
        df = s.predictions()
    assert "capture_flags" in df.columns and "flags" not in df.columns
    assert df["date"].map(type).eq(dt.date).all()
    assert df["user_id"].dtype == object and df["user_id"].tolist() == [None, "u1"]
    assert df["prediction"].dtype == np.int64
    assert df["cpu_ms"].dtype == np.float64
    assert df["batch_index"].isna().all() and str(df["batch_index"].dtype) == "Int32"


def test_files_of_earlier_versions_read_flags_as_capture_flags(make_rec: Any, store_dir: Path, h: Any) -> None:
    rec = make_rec(model="m")
    rec.capture(lambda x: 1)({"a": 1})
    h.flush(rec)
    (path,) = store_dir.glob("predictions/**/*.parquet")
    old = h.writer_frame(path).rename_columns(
        ["flags" if c == "capture_flags" else c for c in h.writer_frame(path).column_names]
    )
    old = old.set_column(old.column_names.index("flags"), "flags", pa.array([["json:features.a"]]))
    old = old.set_column(0, "prediction_id", pa.array(["old-1"]))
    pq.write_table(old, path.with_name("old-format.parquet"))  # model column inside, flags named flags
    with Store(store_dir) as s:
        df = s.predictions()
        assert sorted(map(str, df["capture_flags"].tolist())) == ["None", "['json:features.a']"]
        assert set(df["model"]) == {"m"}
        s.compact()
        assert sorted(map(str, s.predictions()["capture_flags"].tolist())) == ["None", "['json:features.a']"]
    for f in store_dir.glob("predictions/**/*.parquet"):
        assert {"model", "flags"}.isdisjoint(pq.read_schema(f).names)


def test_csv_of_vectors_is_json_in_every_command(store_dir: Path, classifier: Any, tmp_path: Path) -> None:
    module = tmp_path / "newmodel.py"
    module.write_text("def predict(x: dict) -> list:\n    return [0.3, 0.7]\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for argv in (
        ["replay", "--module", "newmodel:predict", "--model", "cancer", "--last", "7d", "-f", "csv"],
        ["query", "select prediction from predictions limit 3", "-f", "csv"],
    ):
        out = subprocess.run(
            [PREDLOG, "--store", str(store_dir), *argv], capture_output=True, text=True, timeout=120, env=env
        )
        assert out.returncode == 0, out.stderr
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        assert rows
        for name in ("prediction", "logged", "replayed"):
            for r in rows:
                if name in r and r[name]:
                    assert isinstance(json.loads(r[name]), list), (name, r[name])


def test_store_format_marker_is_upgraded_and_a_newer_format_refused(make_rec: Any, store_dir: Path, h: Any) -> None:
    store_dir.mkdir(parents=True)
    (store_dir / "predlog.json").write_text('{"format": 1}')  # a store of predlog 0.1
    rec = make_rec(model="m")
    rec.capture(lambda x: 1)({"a": 1})
    h.flush(rec)
    assert json.loads((store_dir / "predlog.json").read_text()) == {"format": 2}
    (store_dir / "predlog.json").write_text('{"format": 3}')
    from predlog.replay import StoreError

    with pytest.raises(StoreError, match="format 3, newer than this predlog reads"):
        Store(store_dir)
