"""Round trips of the capture decorator: call -> Parquet in a real store -> DuckDB / pyarrow.

Every test writes a store in ``tmp_path`` with a real :class:`predlog.Recorder`, flushes it and
reads the Parquet files back. ``predlog.last_prediction_id(s)()`` read a contextvar that every
recorder sets on submit, so they work with a private recorder too.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import traceback
import typing
import uuid
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest
from store_helpers import connect, flush, pred_files, query  # noqa: F401

import predlog

# ---------------------------------------------------------------- helpers


def nonnull(d: dict) -> dict:
    """Drop null fields: union_by_name gives every file's struct the fields of all files."""
    return {k: v for k, v in d.items() if v is not None}


def arrow_rows(store) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in pred_files(store)], promote_options="permissive")


class ModelError(Exception):
    pass


ERROR_TYPE = f"{ModelError.__module__}.{ModelError.__qualname__}"


# ---------------------------------------------------------------- wrappers


def test_sync_function_row(rec, tmp_path):
    @rec.capture
    def predict(x: dict) -> float:
        return x["a"] * 0.5

    assert predict({"a": 3, "b": "DE"}) == 1.5
    flush(rec)
    rows = query(tmp_path, "select * from p")
    assert len(rows) == 1
    r = rows[0]
    assert r["features"] == {"a": 3, "b": "DE"}
    assert r["prediction"] == 1.5
    assert r["status"] == "ok"
    assert r["error_type"] is None and r["error_message"] is None
    assert r["model"] == "m" and r["model_version"] == "unversioned"
    assert r["batch_id"] is None and r["batch_index"] is None and r["batch_size"] is None
    assert r["sample_rate"] == 1.0
    assert r["capture_flags"] is None


def test_method_skips_self(rec, tmp_path):
    class Model:
        def __init__(self) -> None:
            self.w = 2

        @rec.capture
        def predict(self, x: dict) -> float:
            return self.w * x["a"]

        @rec.capture(model="scalars")
        def score(self, age: int, income: float) -> float:
            return age + income

    m = Model()
    assert m.predict({"a": 4}) == 8
    assert m.score(30, income=100.0) == 130.0
    flush(rec)
    rows = query(tmp_path, "select model, features::json::varchar as f, prediction from p order by model")
    assert [(r["model"], r["prediction"]) for r in rows] == [("m", 8.0), ("scalars", 130.0)]
    by_model = {r["model"]: r for r in query(tmp_path, "select model, features from p")}
    assert nonnull(by_model["m"]["features"]) == {"a": 4}
    assert nonnull(by_model["scalars"]["features"]) == {"age": 30, "income": 100.0}
    assert "self" not in rows[1]["f"]


def test_async_function(rec, tmp_path):
    out = {"score": 0.25}

    @rec.capture
    async def apredict(x: dict) -> dict:
        await asyncio.sleep(0.001)
        return out

    async def main():
        y = await apredict({"a": 1})
        return y, predlog.last_prediction_id()

    y, pid = asyncio.run(main())
    assert y is out
    flush(rec)
    rows = query(tmp_path, "select prediction_id, features, prediction, status from p")
    assert rows == [{"prediction_id": pid, "features": {"a": 1}, "prediction": {"score": 0.25}, "status": "ok"}]


def test_generator_prediction_is_yielded_items(rec, tmp_path):
    @rec.capture
    def stream(x: dict):
        for i in range(x["n"]):
            yield i * 10
        return "done"

    results = []

    def consumer():
        results.append((yield from stream({"n": 3})))

    assert list(consumer()) == [0, 10, 20]
    assert results == ["done"]
    flush(rec)
    rows = query(tmp_path, "select features, prediction, status from p")
    assert rows == [{"features": {"n": 3}, "prediction": [0, 10, 20], "status": "ok"}]


def test_generator_send_is_delegated(rec, tmp_path):
    @rec.capture
    def chat(x: dict):
        reply = yield 1
        yield reply * 2

    g = chat({"k": 1})
    assert next(g) == 1
    assert g.send(21) == 42
    with pytest.raises(StopIteration):
        next(g)
    flush(rec)
    assert query(tmp_path, "select prediction from p") == [{"prediction": [1, 42]}]


def test_generator_consumer_stops_early(rec, tmp_path):
    closed = []

    @rec.capture
    def stream(x: dict):
        try:
            for i in range(100):  # noqa: UP028 - closed mid-loop by the consumer, on purpose
                yield i
        finally:
            closed.append(x["run"])

    g = stream({"run": "close"})
    assert next(g) == 0 and next(g) == 1
    g.close()

    def take_until_two():
        for item in stream({"run": "break"}):
            if item == 2:
                break

    take_until_two()
    assert closed == ["close", "break"]  # the inner generator's finally ran
    flush(rec)
    rows = query(tmp_path, "select features.run as run, prediction, status from p order by run")
    assert rows == [
        {"run": "break", "prediction": [0, 1, 2], "status": "ok"},
        {"run": "close", "prediction": [0, 1], "status": "ok"},
    ]


def test_generator_error_keeps_items_and_exception(rec, tmp_path):
    err = ModelError("stream broke")

    @rec.capture
    def stream(x: dict):
        yield 1
        raise err

    g = stream({"a": 1})
    assert next(g) == 1
    with pytest.raises(ModelError) as ei:
        next(g)
    assert ei.value is err
    assert traceback.extract_tb(ei.value.__traceback__)[-1].line == "raise err"
    flush(rec)
    rows = query(tmp_path, "select features, prediction, status, error_type, error_message from p")
    assert rows == [
        {
            "features": {"a": 1},
            "prediction": [1],
            "status": "error",
            "error_type": ERROR_TYPE,
            "error_message": "stream broke",
        }
    ]


def test_async_generator(rec, tmp_path):
    @rec.capture
    async def astream(x: dict):
        for i in range(x["n"]):
            await asyncio.sleep(0)
            yield f"tok{i}"

    async def main():
        full = [t async for t in astream({"n": 3, "run": "full"})]
        early = astream({"n": 10, "run": "early"})
        got = []
        async for t in early:
            got.append(t)
            if len(got) == 2:
                break
        await early.aclose()
        return full, got

    full, got = asyncio.run(main())
    assert full == ["tok0", "tok1", "tok2"]
    assert got == ["tok0", "tok1"]
    flush(rec)
    rows = query(tmp_path, "select features.run as run, prediction, status from p order by run")
    assert rows == [
        {"run": "early", "prediction": ["tok0", "tok1"], "status": "ok"},
        {"run": "full", "prediction": ["tok0", "tok1", "tok2"], "status": "ok"},
    ]


def test_async_generator_error(rec, tmp_path):
    err = ModelError("agen broke")

    @rec.capture
    async def astream(x: dict):
        yield 7
        raise err

    async def main():
        got = []
        with pytest.raises(ModelError) as ei:
            async for t in astream({"a": 2}):
                got.append(t)
        return got, ei.value

    got, exc = asyncio.run(main())
    assert got == [7] and exc is err
    flush(rec)
    rows = query(tmp_path, "select features, prediction, status, error_type, error_message from p")
    assert rows == [
        {
            "features": {"a": 2},
            "prediction": [7],
            "status": "error",
            "error_type": ERROR_TYPE,
            "error_message": "agen broke",
        }
    ]


def _sig_fn(x: dict, threshold: float = 0.5, *, mode: str = "fast") -> float:
    """Score one applicant."""
    return threshold


async def _sig_async(x: dict, n: int = 1) -> list[int]:
    """Async scorer."""
    return [n]


def _sig_gen(x: dict, n: int = 2) -> typing.Iterator[int]:
    """Generator scorer."""
    yield from range(n)


async def _sig_agen(x: dict, n: int = 2) -> typing.AsyncIterator[int]:
    """Async generator scorer."""
    for i in range(n):
        yield i


@pytest.mark.parametrize(
    ("fn", "kind_check"),
    [
        (_sig_fn, inspect.isfunction),
        (_sig_async, inspect.iscoroutinefunction),
        (_sig_gen, inspect.isgeneratorfunction),
        (_sig_agen, inspect.isasyncgenfunction),
    ],
)
def test_signature_and_metadata_preserved(rec, fn, kind_check):
    wrapped = rec.capture(fn)
    assert inspect.signature(wrapped) == inspect.signature(fn)
    assert wrapped.__name__ == fn.__name__
    assert wrapped.__qualname__ == fn.__qualname__
    assert wrapped.__doc__ == fn.__doc__
    assert wrapped.__module__ == fn.__module__
    assert wrapped.__wrapped__ is fn
    assert typing.get_type_hints(wrapped) == typing.get_type_hints(fn)
    assert kind_check(wrapped)


def test_return_value_and_exception_unchanged(rec, tmp_path):
    out = [1.0, 2.0]
    err = ModelError("model exploded")

    @rec.capture
    def predict(x: dict):
        if x.get("fail"):
            raise err
        return out

    assert predict({"fail": False}) is out
    with pytest.raises(ModelError) as ei:
        predict({"fail": True, "amount": 12.5})
    assert ei.value is err
    assert err.__context__ is None and err.__cause__ is None
    frames = traceback.extract_tb(ei.value.__traceback__)
    assert frames[-1].name == "predict" and frames[-1].line == "raise err"
    assert frames[0].name == "test_return_value_and_exception_unchanged"
    flush(rec)
    rows = query(tmp_path, "select status, error_type, error_message, features, prediction from p order by status desc")
    assert rows == [
        {
            "status": "ok",
            "error_type": None,
            "error_message": None,
            "features": {"fail": False, "amount": None},
            "prediction": [1.0, 2.0],
        },
        {
            "status": "error",
            "error_type": ERROR_TYPE,
            "error_message": "model exploded",
            "features": {"fail": True, "amount": 12.5},
            "prediction": None,
        },
    ]


def test_async_exception_unchanged(rec, tmp_path):
    err = KeyError("missing")

    @rec.capture
    async def apredict(x: dict):
        await asyncio.sleep(0)
        raise err

    async def main():
        with pytest.raises(KeyError) as ei:
            await apredict({"a": 1})
        return ei.value

    assert asyncio.run(main()) is err
    assert traceback.extract_tb(err.__traceback__)[-1].name == "apredict"
    flush(rec)
    rows = query(tmp_path, "select status, error_type, error_message, features from p")
    assert rows == [{"status": "error", "error_type": "KeyError", "error_message": "'missing'", "features": {"a": 1}}]


def test_errors_kept_with_sample_rate_zero(make_rec, tmp_path):
    rec = make_rec(sample_rate=0.0)

    @rec.capture
    def predict(x: dict) -> int:
        if x["i"] % 4 == 0:
            raise ValueError(f"bad row {x['i']}")
        return x["i"]

    for i in range(20):
        try:
            predict({"i": i})
        except ValueError:
            pass
    flush(rec)
    rows = query(tmp_path, "select features.i as i, status, error_type, error_message, sample_rate from p order by i")
    assert rows == [
        {"i": i, "status": "error", "error_type": "ValueError", "error_message": f"bad row {i}", "sample_rate": 1.0}
        for i in range(0, 20, 4)
    ]
    s = rec.stats()
    assert (s["captured"], s["written"], s["dropped_total"]) == (5, 5, 0)


def test_failed_batch_call_keeps_its_inputs(rec, tmp_path):
    df = pd.DataFrame({"a": np.arange(1000, 1200), "b": [f"s{i}" for i in range(200)]})

    @rec.capture
    def predict(x: pd.DataFrame) -> np.ndarray:
        raise ModelError("batch failed")

    with pytest.raises(ModelError):
        predict(df)
    flush(rec)
    rows = query(tmp_path, "select status, error_type, to_json(features)::varchar as f from p")
    assert rows and {r["status"] for r in rows} == {"error"}
    assert {r["error_type"] for r in rows} == {ERROR_TYPE}
    stored = " ".join(r["f"] for r in rows)
    missing = [v for v in df["a"].tolist() if str(v) not in stored]
    assert missing == []


# ---------------------------------------------------------------- features


class Applicant(pydantic.BaseModel):
    age: int
    country: str
    income: float


def _features_of(rec, tmp_path, fn, *args, **kwargs):
    fn(*args, **kwargs)
    flush(rec)
    rows = query(tmp_path, "select features from p")
    assert len(rows) == 1
    return rows[0]["features"]


def test_features_dict(rec, tmp_path):
    predict = rec.capture(lambda x: 1)
    assert _features_of(rec, tmp_path, predict, {"age": 30, "country": "DE", "tags": [1, 2]}) == {
        "age": 30,
        "country": "DE",
        "tags": [1, 2],
    }


def test_features_mapping(rec, tmp_path):
    class Row(Mapping):
        def __init__(self, d):
            self._d = d

        def __getitem__(self, k):
            return self._d[k]

        def __iter__(self):
            return iter(self._d)

        def __len__(self):
            return len(self._d)

    predict = rec.capture(lambda x: 1)
    predict(MappingProxyType({"a": 1.5}))
    predict(Row({"a": 2.5}))
    flush(rec)
    assert sorted(r["features"]["a"] for r in query(tmp_path, "select features from p")) == [1.5, 2.5]


def test_features_pydantic(rec, tmp_path):
    @rec.capture
    def predict(x: Applicant) -> float:
        return 0.1

    assert _features_of(rec, tmp_path, predict, Applicant(age=41, country="FR", income=5.5)) == {
        "age": 41,
        "country": "FR",
        "income": 5.5,
    }


def test_features_one_row_dataframe(rec, tmp_path):
    @rec.capture
    def predict(df: pd.DataFrame) -> float:
        return 0.7

    df = pd.DataFrame({"age": [30], "income": [1234.5], "country": ["DE"]})
    assert predict(df) == 0.7
    flush(rec)
    rows = query(tmp_path, "select features, prediction, batch_id from p")
    assert rows == [{"features": {"age": 30, "income": 1234.5, "country": "DE"}, "prediction": 0.7, "batch_id": None}]


def test_features_numpy_1d_with_feature_names(rec, tmp_path):
    predict = rec.capture(feature_names=["age", "income", "score"])(lambda x: float(x.sum()))
    unnamed = rec.capture(model="unnamed")(lambda x: float(x.sum()))
    predict(np.array([30.0, 1000.0, 0.5]))
    unnamed(np.array([1, 2]))
    flush(rec)
    rows = {r["model"]: nonnull(r["features"]) for r in query(tmp_path, "select model, features from p")}
    assert rows == {"m": {"age": 30.0, "income": 1000.0, "score": 0.5}, "unnamed": {"f0": 1, "f1": 2}}


def test_features_bound_args_when_first_is_scalar(rec, tmp_path):
    @rec.capture
    def predict(age: int, country: str = "DE", *, income: float = 0.0) -> float:
        return 1.0

    predict(30, "FR", income=2.5)
    predict(31, country="US")
    flush(rec)
    rows = query(tmp_path, "select features from p order by features.age")
    assert [r["features"] for r in rows] == [
        {"age": 30, "country": "FR", "income": 2.5},
        {"age": 31, "country": "US", "income": None},
    ]


def test_features_first_mapping_argument_passed_by_keyword(rec, tmp_path):
    """The first argument is the features when it is a mapping, however it is passed."""

    @rec.capture
    def predict(x: dict, threshold: float = 0.5) -> bool:
        return x["score"] > threshold

    predict({"score": 0.9, "pos": "positional"}, 0.5)
    predict(x={"score": 0.8, "pos": "keyword"}, threshold=0.5)
    flush(rec)
    rows = query(tmp_path, "select features from p order by features.score desc")
    assert [r["features"] for r in rows] == [
        {"score": 0.9, "pos": "positional"},
        {"score": 0.8, "pos": "keyword"},
    ]


def test_features_argname(rec, tmp_path):
    @rec.capture(features="payload")
    def predict(model_cfg: dict, payload: dict, n: int = 1) -> int:
        return n

    predict({"cfg": 1}, {"amount": 5})
    predict({"cfg": 1}, payload={"amount": 6}, n=2)
    scalar = rec.capture(model="scalar", features="amount")(lambda cfg, amount: amount)
    scalar({"c": 1}, 9.5)
    flush(rec)
    rows = query(tmp_path, "select model, features from p order by model, features.amount")
    assert [(r["model"], nonnull(r["features"])) for r in rows] == [
        ("m", {"amount": 5}),
        ("m", {"amount": 6}),
        ("scalar", {"value": 9.5}),
    ]


def test_features_callable(rec, tmp_path):
    calls = []

    def select(request, threshold):
        calls.append((request, threshold))
        return {"amount": request["body"]["amount"], "threshold": threshold}

    @rec.capture(features=select)
    def predict(request: dict, threshold: float) -> bool:
        return request["body"]["amount"] > threshold

    req = {"body": {"amount": 10.0}, "headers": {"auth": "x"}}
    assert predict(req, threshold=3.0) is True
    flush(rec)
    rows = query(tmp_path, "select features, prediction from p")
    assert rows == [{"features": {"amount": 10.0, "threshold": 3.0}, "prediction": True}]
    assert calls == [(req, 3.0)]


# ---------------------------------------------------------------- batch


def _batch_rows(tmp_path, model="m"):
    return query(
        tmp_path,
        "select prediction_id, batch_id, batch_index, batch_size, features, prediction, confidence "
        "from p where model = ? order by batch_index",
        [model],
    )


def _check_batch(rows, n, ids):
    assert len(rows) == n
    assert [r["batch_index"] for r in rows] == list(range(n))
    assert {r["batch_size"] for r in rows} == {n}
    batch_ids = {r["batch_id"] for r in rows}
    assert len(batch_ids) == 1 and None not in batch_ids
    assert uuid.UUID(batch_ids.pop()).version == 7
    assert len({r["prediction_id"] for r in rows}) == n
    assert [r["prediction_id"] for r in rows] == ids


def test_batch_dataframe(rec, tmp_path):
    df = pd.DataFrame({"age": [20, 30, 40, 50], "income": [1.0, 2.0, 3.0, 4.5], "country": ["DE", "FR", "US", "JP"]})

    @rec.capture
    def predict(x: pd.DataFrame) -> np.ndarray:
        return (x["age"].to_numpy() > 25).astype(np.int64)

    out = predict(df)
    ids = predlog.last_prediction_ids()
    assert predlog.last_prediction_id() == ids[0]
    flush(rec)
    rows = _batch_rows(tmp_path)
    _check_batch(rows, 4, ids)
    assert [r["features"] for r in rows] == df.to_dict("records")
    assert [r["prediction"] for r in rows] == out.tolist() == [0, 1, 1, 1]
    assert all(r["confidence"] is None for r in rows)


def test_batch_numpy_2d_with_feature_names(rec, tmp_path):
    X = np.arange(12, dtype=np.float64).reshape(4, 3)

    @rec.capture(feature_names=("a", "b", "c"))
    def predict(x: np.ndarray) -> np.ndarray:
        return x.sum(axis=1)

    predict(X)
    ids = predlog.last_prediction_ids()
    flush(rec)
    rows = _batch_rows(tmp_path)
    _check_batch(rows, 4, ids)
    assert [r["features"] for r in rows] == [dict(zip("abc", row)) for row in X.tolist()]
    assert [r["prediction"] for r in rows] == [3.0, 12.0, 21.0, 30.0]


def test_batch_list_of_dicts(rec, tmp_path):
    xs = [{"a": 1, "s": "x"}, {"a": 2, "s": "y"}, {"a": 3, "s": "z"}]

    @rec.capture
    def predict(rows: list[dict]) -> list[float]:
        return [r["a"] / 10 for r in rows]

    predict(xs)
    ids = predlog.last_prediction_ids()
    predict(xs[:2])
    second = predlog.last_prediction_ids()
    flush(rec)
    rows = query(tmp_path, "select * from p order by batch_id, batch_index")
    assert len(rows) == 5
    first_rows = [r for r in rows if r["batch_size"] == 3]
    _check_batch(first_rows, 3, ids)
    assert [r["features"] for r in first_rows] == xs
    assert [r["prediction"] for r in first_rows] == [0.1, 0.2, 0.3]
    second_rows = [r for r in rows if r["batch_size"] == 2]
    assert [r["prediction_id"] for r in second_rows] == second
    assert second_rows[0]["batch_id"] != first_rows[0]["batch_id"]
    assert not set(ids) & set(second)


def test_batch_predict_proba_confidence_max(rec, tmp_path):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(6, 3))

    @rec.capture(confidence="max", feature_names=["x0", "x1", "x2"])
    def predict_proba(x: np.ndarray) -> np.ndarray:
        p = 1 / (1 + np.exp(-x[:, 0]))
        return np.column_stack([1 - p, p])

    probs = predict_proba(X)
    ids = predlog.last_prediction_ids()
    flush(rec)
    rows = _batch_rows(tmp_path)
    _check_batch(rows, 6, ids)
    assert [r["prediction"] for r in rows] == probs.tolist()
    assert [r["confidence"] for r in rows] == probs.max(axis=1).tolist()


def test_single_call_proba_confidence_max(rec, tmp_path):
    @rec.capture(confidence="max", feature_names=["a", "b"])
    def predict_proba(x: np.ndarray) -> np.ndarray:
        return np.array([[0.2, 0.8]])  # a vectorised model called with one row

    predict_proba(np.array([1.0, 2.0]))
    flush(rec)
    rows = query(tmp_path, "select features, prediction, confidence, batch_id from p")
    assert rows == [{"features": {"a": 1.0, "b": 2.0}, "prediction": [0.2, 0.8], "confidence": 0.8, "batch_id": None}]


# ---------------------------------------------------------------- ids, time


def test_prediction_ids_uuid7_unique_and_match_last_prediction_id(rec, tmp_path):
    @rec.capture
    def predict(x: dict) -> int:
        return x["i"]

    ids = []
    for i in range(300):
        predict({"i": i})
        ids.append(predlog.last_prediction_id())
    flush(rec)
    rows = query(tmp_path, "select features.i as i, prediction_id from p order by i")
    stored = [r["prediction_id"] for r in rows]
    assert [r["i"] for r in rows] == list(range(300))
    assert stored == ids
    assert len(set(stored)) == 300
    for pid in stored:
        u = uuid.UUID(pid)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == pid
    assert sorted(stored) == stored  # time-ordered within one process


def test_ts_is_utc_within_call_window(rec, tmp_path):
    @rec.capture
    def predict(x: dict) -> int:
        time.sleep(0.002)
        return 1

    windows = []
    for i in range(3):
        before = time.time_ns()
        predict({"i": i})
        windows.append((before, time.time_ns()))
    flush(rec)
    table = arrow_rows(tmp_path)
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    feats = table.column("features").to_pylist()
    ts_us = table.column("ts").cast(pa.int64()).to_pylist()
    by_i = {f["i"]: t for f, t in zip(feats, ts_us)}
    for i, (before, after) in enumerate(windows):
        assert before // 1000 <= by_i[i] <= after // 1000
    # The date partition is the UTC date of ts.
    dates = {r["date"].isoformat() for r in query(tmp_path, "select date from p")}
    expected = {time.strftime("%Y-%m-%d", time.gmtime(t / 1e6)) for t in by_i.values()}
    assert dates == expected
    for f in pred_files(tmp_path):
        assert os.path.basename(os.path.dirname(f)) in {f"date={d}" for d in expected}


def test_latency_close_to_sleep(rec, tmp_path):
    @rec.capture
    def predict(x: dict) -> int:
        time.sleep(x["s"])
        return 1

    predict({"s": 0.05})
    predict({"s": 0.0})
    flush(rec)
    rows = {r["s"]: r["latency_ms"] for r in query(tmp_path, "select features.s as s, latency_ms from p")}
    assert 50.0 <= rows[0.05] < 250.0
    assert 0.0 < rows[0.0] < 50.0


def _busy_cpu(ms: float) -> float:
    """Spin for ``ms`` of thread CPU time; return the CPU time actually spent, in ms."""
    c0 = time.thread_time_ns()
    x = 0
    while time.thread_time_ns() - c0 < ms * 1e6:
        x += 1
    return (time.thread_time_ns() - c0) / 1e6


def test_cpu_time_always_measures_busy_loop_not_sleep(make_rec, tmp_path):
    rec = make_rec(cpu_time="always")
    spent = {}

    @rec.capture
    def predict(x: dict) -> int:
        spent[x["i"]] = _busy_cpu(30)
        time.sleep(0.1)
        return 1

    predict({"i": 0})
    flush(rec)
    [row] = query(tmp_path, "select cpu_ms, latency_ms from p")
    assert row["cpu_ms"] is not None
    assert abs(row["cpu_ms"] - spent[0]) < 5.0
    assert row["latency_ms"] >= 100.0 + spent[0] * 0.9
    assert row["cpu_ms"] < row["latency_ms"] - 90.0


def test_cpu_time_async_counts_only_own_steps(make_rec, tmp_path):
    rec = make_rec(cpu_time="always")
    spent = {}

    @rec.capture
    async def apredict(x: dict) -> int:
        spent["own"] = _busy_cpu(20)
        await asyncio.sleep(0.05)
        return 1

    async def neighbour():
        await asyncio.sleep(0.01)
        spent["other"] = _busy_cpu(40)  # runs on the loop while apredict sleeps

    async def main():
        await asyncio.gather(apredict({"i": 0}), neighbour())

    asyncio.run(main())
    flush(rec)
    [row] = query(tmp_path, "select cpu_ms from p")
    assert abs(row["cpu_ms"] - spent["own"]) < 5.0, (row, spent)


def test_cpu_time_never_is_null(make_rec, tmp_path):
    rec = make_rec(cpu_time="never")

    @rec.capture
    def predict(x: dict) -> int:
        _busy_cpu(2)
        return 1

    for i in range(3):
        predict({"i": i})
    flush(rec)
    rows = query(tmp_path, "select cpu_ms, latency_ms from p")
    assert len(rows) == 3
    assert all(r["cpu_ms"] is None and r["latency_ms"] > 0 for r in rows)


# ---------------------------------------------------------------- schema evolution


def test_new_feature_becomes_new_struct_field(rec, tmp_path):
    predict = rec.capture(lambda x: 1)
    predict({"a": 1})
    flush(rec)
    predict({"a": 2, "b": "new"})
    predict({"a": 3})
    flush(rec)
    files = pred_files(tmp_path)
    assert len(files) == 2
    types = [pq.read_schema(f).field("features").type for f in files]
    assert sorted(str(t) for t in types) == ["struct<a: int64, b: string>", "struct<a: int64>"]
    rows = query(tmp_path, "select features.a as a, features.b as b from p order by a")
    assert rows == [{"a": 1, "b": None}, {"a": 2, "b": "new"}, {"a": 3, "b": None}]


def test_feature_type_change_across_files_reads_with_union_by_name(rec, tmp_path):
    predict = rec.capture(lambda x: 1)
    predict({"x": 1, "k": 0})
    flush(rec)
    predict({"x": "abc", "k": 1})
    flush(rec)
    files = pred_files(tmp_path)
    assert len(files) == 2
    xtypes = sorted(str(pq.read_schema(f).field("features").type.field("x").type) for f in files)
    assert xtypes == ["int64", "string"]
    rows = query(tmp_path, "select features.k as k, features.x::varchar as x from p order by k")
    assert rows == [{"k": 0, "x": "1"}, {"k": 1, "x": "abc"}]
