"""Round trips of request context and labels: context(...) / log_label(...) -> Parquet -> DuckDB.

``predlog.context`` and ``predlog.suppressed`` are contextvars shared by every recorder;
``predlog.last_prediction_id()`` reads a contextvar that every recorder sets on submit, so
they all work with the private recorders built here.
"""

from __future__ import annotations

import asyncio
import glob
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from store_helpers import connect, flush, pred_files, query  # noqa: F401

import predlog

# ---------------------------------------------------------------- context


def test_context_columns_and_struct(rec, tmp_path):
    predict = rec.capture(lambda x: 1)
    with predlog.context(user_id="u1", request_id="r1", region="eu", tier=2):
        predict({"i": 0})
    predict({"i": 1})
    flush(rec)
    rows = query(tmp_path, "select features.i as i, user_id, request_id, context from p order by i")
    assert rows == [
        {"i": 0, "user_id": "u1", "request_id": "r1", "context": {"region": "eu", "tier": 2}},
        {"i": 1, "user_id": None, "request_id": None, "context": None},
    ]


def test_context_ids_stored_as_strings(rec, tmp_path):
    predict = rec.capture(lambda x: 1)
    with predlog.context(user_id=42, request_id=7):
        predict({"i": 0})
    flush(rec)
    assert query(tmp_path, "select user_id, request_id from p") == [{"user_id": "42", "request_id": "7"}]


def test_context_nesting(rec, tmp_path):
    predict = rec.capture(lambda x: 1)
    with predlog.context(user_id="u1", request_id="r-outer", region="eu", tier=1):
        predict({"i": 0})
        with predlog.context(request_id="r-inner", tier=3, channel="app"):
            predict({"i": 1})
            with predlog.context(user_id="u2"):
                predict({"i": 2})
        predict({"i": 3})
    flush(rec)
    rows = query(tmp_path, "select features.i as i, user_id, request_id, context from p order by i")
    assert [(r["user_id"], r["request_id"]) for r in rows] == [
        ("u1", "r-outer"),
        ("u1", "r-inner"),
        ("u2", "r-inner"),
        ("u1", "r-outer"),
    ]
    ctx = [{k: v for k, v in r["context"].items() if v is not None} for r in rows]
    assert ctx == [
        {"region": "eu", "tier": 1},
        {"region": "eu", "tier": 3, "channel": "app"},
        {"region": "eu", "tier": 3, "channel": "app"},
        {"region": "eu", "tier": 1},
    ]


def test_context_propagates_into_asyncio_tasks(rec, tmp_path):
    @rec.capture
    async def apredict(x: dict) -> int:
        await asyncio.sleep(0)
        return 1

    def sync_predict_impl(x: dict) -> int:
        return 2

    sync_predict = rec.capture(model="threaded")(sync_predict_impl)

    async def handle(user: str):
        with predlog.context(user_id=user, request_id=f"req-{user}"):
            await asyncio.sleep(0)  # interleave with the other requests
            await apredict({"who": user, "how": "await"})
            await asyncio.gather(*(asyncio.create_task(apredict({"who": user, "how": f"task{i}"})) for i in range(2)))
            await asyncio.to_thread(sync_predict, {"who": user, "how": "thread"})
            late = asyncio.create_task(apredict({"who": user, "how": "late"}))
        await late  # created inside the context, runs after it closed: keeps its copy

    async def main():
        await asyncio.gather(*(handle(u) for u in ("ua", "ub", "uc")))

    asyncio.run(main())
    flush(rec)
    rows = query(tmp_path, "select features.who as who, features.how as how, user_id, request_id from p")
    assert len(rows) == 15
    for r in rows:
        assert (r["user_id"], r["request_id"]) == (r["who"], f"req-{r['who']}"), r
    assert sorted({r["how"] for r in rows}) == ["await", "late", "task0", "task1", "thread"]


def test_suppressed_records_nothing(rec, tmp_path):
    out = object()
    predict = rec.capture(lambda x: out)

    @rec.capture
    async def apredict(x):
        return out

    @rec.capture
    def gen(x):
        yield out

    @rec.capture
    async def agen(x):
        yield out

    async def run_async():
        assert await apredict({"a": 1}) is out
        assert [y async for y in agen({"a": 1})] == [out]

    with predlog.suppressed():
        assert predict({"a": 1}) is out
        with predlog.context(user_id="u1"):  # a context inside keeps the suppression
            assert predict({"a": 2}) is out
        assert list(gen({"a": 1})) == [out]
        asyncio.run(run_async())
    assert rec.flush(timeout_s=10)
    assert pred_files(tmp_path) == []
    assert rec.stats()["captured"] == 0
    with predlog.context(user_id="u1"):
        predict({"a": 3})  # recorded again outside
    flush(rec)
    assert query(tmp_path, "select features.a as a, user_id from p") == [{"a": 3, "user_id": "u1"}]


# ---------------------------------------------------------------- labels


def label_files(store) -> list[str]:
    return sorted(glob.glob(os.path.join(str(store), "labels", "date=*", "*.parquet")))


def test_log_label_by_prediction_id_and_request_id(rec, tmp_path):
    @rec.capture
    def predict(x: dict) -> float:
        return x["amount"] / 100

    with predlog.context(request_id="req-1"):
        predict({"amount": 10})
        pid1 = predlog.last_prediction_id()
    with predlog.context(request_id="req-2"):
        predict({"amount": 20})
        pid2 = predlog.last_prediction_id()
    with predlog.context(request_id="req-3"):
        predict({"amount": 30})  # no label
    before = time.time_ns()
    rec.log_label(1, prediction_id=pid1)
    rec.log_label(label=0, request_id="req-2")
    after = time.time_ns()
    flush(rec)
    assert rec.stats()["labels"] == 2
    files = label_files(tmp_path)
    assert files, glob.glob(f"{tmp_path}/**", recursive=True)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    for t in table.column("ts").cast(pa.int64()).to_pylist():
        assert before // 1000 <= t <= after // 1000
    for f in files:
        d = os.path.basename(os.path.dirname(f))
        assert d == "date=" + time.strftime("%Y-%m-%d", time.gmtime(before / 1e9)) or d == "date=" + time.strftime(
            "%Y-%m-%d", time.gmtime(after / 1e9)
        )
    labels = query(tmp_path, "select prediction_id, request_id, label from l order by label desc")
    assert labels == [
        {"prediction_id": pid1, "request_id": None, "label": 1},
        {"prediction_id": None, "request_id": "req-2", "label": 0},
    ]
    joined = query(
        tmp_path,
        "select p.prediction_id, p.request_id, p.prediction, l.label from p "
        "join l on l.prediction_id = p.prediction_id or l.request_id = p.request_id order by p.request_id",
    )
    assert joined == [
        {"prediction_id": pid1, "request_id": "req-1", "prediction": 0.1, "label": 1},
        {"prediction_id": pid2, "request_id": "req-2", "prediction": 0.2, "label": 0},
    ]


def test_log_label_extra_kwargs(rec, tmp_path):
    predict = rec.capture(lambda x: "fraud")
    predict({"a": 1})
    pid = predlog.last_prediction_id()
    rec.log_label("legit", prediction_id=pid, source="chargeback", delay_days=3)
    rec.log_label("fraud", prediction_id=pid, source="manual")
    flush(rec)
    rows = query(
        tmp_path,
        "select l.label, l.extra, p.prediction from l join p using (prediction_id) order by l.label",
    )
    assert rows == [
        {"label": "fraud", "extra": {"source": "manual", "delay_days": None}, "prediction": "fraud"},
        {"label": "legit", "extra": {"source": "chargeback", "delay_days": 3}, "prediction": "fraud"},
    ]


def test_log_label_joins_every_row_of_a_batch(rec, tmp_path):
    predict = rec.capture(lambda rows: [r["a"] * 2 for r in rows])
    predict([{"a": 1}, {"a": 2}, {"a": 3}])
    ids = predlog.last_prediction_ids()
    for i, pid in enumerate(ids):
        rec.log_label(i * 2 + 2, prediction_id=pid)
    flush(rec)
    rows = query(tmp_path, "select p.batch_index, p.prediction, l.label from p join l using (prediction_id) order by 1")
    assert rows == [
        {"batch_index": 0, "prediction": 2, "label": 2},
        {"batch_index": 1, "prediction": 4, "label": 4},
        {"batch_index": 2, "prediction": 6, "label": 6},
    ]


def test_log_label_without_a_key_is_counted_not_raised(rec, caplog):
    rec.log_label(1)  # serving code must not break over a label
    rec.log_label(2)
    flush(rec)
    s = rec.stats()
    assert s["labels_dropped"] == 2 and s["labels"] == 0
    assert sum("needs prediction_id" in r.getMessage() for r in caplog.records) == 1  # logged once


# ---------------------------------------------------------------- last_prediction_id


def _stored_ids(store) -> dict:
    return {r["i"]: r["prediction_id"] for r in query(store, "select features.i as i, prediction_id from p")}


def test_last_prediction_id_inside_and_after_context(rec, tmp_path):
    predict = rec.capture(lambda x: 1)
    got = {}
    predict({"i": 0})
    got[0] = predlog.last_prediction_id()
    with predlog.context(request_id="r1"):
        predict({"i": 1})
        got[1] = predlog.last_prediction_id()
        with predlog.context(user_id="u1"):
            predict({"i": 2})
            got[2] = predlog.last_prediction_id()
        after_inner = predlog.last_prediction_id()
    after_outer = predlog.last_prediction_id()
    flush(rec)
    stored = _stored_ids(tmp_path)
    assert got == stored
    # The last prediction of this thread is still the one made in the inner block.
    assert after_inner == stored[2]
    assert after_outer == stored[2]


@pytest.mark.parametrize("with_context", [True, False])
def test_last_prediction_id_is_per_asyncio_task(rec, tmp_path, with_context):
    @rec.capture
    async def apredict(x: dict) -> int:
        return x["i"]

    async def handle(i: int):
        await apredict({"i": i})
        await asyncio.sleep(0.005 * (4 - i))  # the other tasks predict meanwhile
        return i, predlog.last_prediction_id()

    async def main():
        if with_context:
            with predlog.context(request_id="shared"):
                return await asyncio.gather(*(handle(i) for i in range(4)))
        return await asyncio.gather(*(handle(i) for i in range(4)))

    got = dict(asyncio.run(main()))
    flush(rec)
    assert got == _stored_ids(tmp_path)


def test_a_correction_logged_right_after_a_label_is_later(rec, tmp_path):
    # The latest label wins at query time: labels of one process never share a timestamp.
    for _ in range(200):
        rec.log_label(0, prediction_id="p")
        rec.log_label(1, prediction_id="p")
    flush(rec)
    ts = [r["ts"] for r in query(tmp_path, "select ts from l order by ts")]
    assert len(ts) == 400 and len(set(ts)) == 400
