"""Round trips of the write-path processors and truncation: call -> processed Parquet -> DuckDB.

Checks what reaches the disk: hidden values must be absent from the decoded columns and from
the raw bytes of every file in the store (Parquet pages are zstd-compressed, so the raw-byte
check alone would prove little; both are done).
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import os
import uuid

import pyarrow.parquet as pq
import pytest
from store_helpers import connect, flush, pred_files, query  # noqa: F401

import predlog


def store_bytes(store) -> bytes:
    """The raw bytes of every file in the store (Parquet, markers, any segment left)."""
    out = []
    for path in glob.glob(f"{store}/**", recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out.append(f.read())
    return b"\n".join(out)


def decoded_text(store) -> str:
    """Every decoded value of every Parquet file in the store, as text."""
    parts = []
    for path in glob.glob(f"{store}/**/*.parquet", recursive=True):
        parts.append(repr(pq.read_table(path).to_pylist()))
        parts.append(str(pq.read_metadata(path).schema))
    return "\n".join(parts)


def hmac32(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


# ---------------------------------------------------------------- drop_fields


def test_drop_fields(make_rec, tmp_path):
    raw = b"\x89PNG-" + uuid.uuid4().hex.encode()
    rec = make_rec(drop_fields=["features.raw_image", "context"])
    predict = rec.capture(lambda x: 1)
    with predlog.context(user_id="u1", session="s-" + uuid.uuid4().hex):
        predict({"amount": 5.0, "raw_image": raw})
    flush(rec)
    files = glob.glob(f"{tmp_path}/predictions/**/*.parquet", recursive=True)
    assert len(files) == 1
    assert pq.read_schema(files[0]).field("features").type.names == ["amount"]
    rows = query(tmp_path, "select features, context, user_id from p")
    assert rows == [{"features": {"amount": 5.0}, "context": None, "user_id": "u1"}]
    blob = store_bytes(tmp_path)
    assert raw not in blob and raw.hex().encode() not in blob
    assert "PNG-" not in decoded_text(tmp_path)


# ---------------------------------------------------------------- hash_fields


def test_hash_fields_hmac_and_label_join(make_rec, tmp_path):
    key = b"k3y-" + uuid.uuid4().hex.encode()
    email = f"{uuid.uuid4().hex}@example.org"
    user = "user-" + uuid.uuid4().hex
    rec = make_rec(hash_fields=["user_id", "request_id", "features.email", "features.account"], hash_key=key)
    predict = rec.capture(lambda x: 0.5)
    with predlog.context(user_id=user, request_id="req-1"):
        predict({"email": email, "account": 12345, "amount": 3})
    with predlog.context(request_id="req-2"):
        predict({"email": None, "account": 7, "amount": 4})
    rec.log_label(1, request_id="req-1")
    rec.log_label(0, request_id="req-2")
    flush(rec)
    rows = query(tmp_path, "select user_id, request_id, features from p order by features.amount")
    assert rows == [
        {
            "user_id": hmac32(key, user),
            "request_id": hmac32(key, "req-1"),
            "features": {"email": hmac32(key, email), "account": hmac32(key, "12345"), "amount": 3},
        },
        {
            "user_id": None,
            "request_id": hmac32(key, "req-2"),
            "features": {"email": None, "account": hmac32(key, "7"), "amount": 4},
        },
    ]
    labels = query(tmp_path, "select request_id, label from l order by label desc")
    assert labels == [
        {"request_id": hmac32(key, "req-1"), "label": 1},
        {"request_id": hmac32(key, "req-2"), "label": 0},
    ]
    joined = query(
        tmp_path, "select p.features.amount as amount, l.label from p join l using (request_id) order by amount"
    )
    assert joined == [{"amount": 3, "label": 1}, {"amount": 4, "label": 0}]
    blob = store_bytes(tmp_path)
    for secret in (email, user):
        assert secret.encode() not in blob
        assert secret not in decoded_text(tmp_path)


def test_hash_key_from_env(make_rec, tmp_path, monkeypatch):
    monkeypatch.setenv("PREDLOG_HASH_KEY", "env-key")
    rec = make_rec(hash_fields=["user_id"])
    predict = rec.capture(lambda x: 1)
    with predlog.context(user_id="alice"):
        predict({"a": 1})
    flush(rec)
    assert query(tmp_path, "select user_id from p") == [{"user_id": hmac32(b"env-key", "alice")}]


# ---------------------------------------------------------------- redact


def test_redact_patterns_everywhere(make_rec, tmp_path):
    secrets = {name: f"{name}-{uuid.uuid4().hex}" for name in ("tok", "pw", "nested", "ctx", "pred", "label")}
    rec = make_rec(redact=["*token*", "password", "*secret*"])

    @rec.capture
    def predict(x: dict) -> dict:
        return {"score": 0.9, "debug_token": secrets["pred"]}

    with predlog.context(user_id="u1", session_secret=secrets["ctx"], region="eu"):
        predict(
            {
                "api_token": secrets["tok"],
                "PassWord": secrets["pw"],
                "auth": {"refresh_TOKEN": secrets["nested"], "scheme": "bearer"},
                "amount": 12.5,
                "no_token": None,
            }
        )
        pid = predlog.last_prediction_id()
    rec.log_label(1, prediction_id=pid, reviewer_secret=secrets["label"], source="review")
    flush(rec)
    rows = query(tmp_path, "select features, context, prediction from p")
    assert rows == [
        {
            "features": {
                "api_token": "[REDACTED]",
                "PassWord": "[REDACTED]",
                "auth": {"refresh_TOKEN": "[REDACTED]", "scheme": "bearer"},
                "amount": 12.5,
                "no_token": None,
            },
            "context": {"session_secret": "[REDACTED]", "region": "eu"},
            "prediction": {"score": 0.9, "debug_token": "[REDACTED]"},
        }
    ]
    assert query(tmp_path, "select extra from l") == [{"extra": {"reviewer_secret": "[REDACTED]", "source": "review"}}]
    blob = store_bytes(tmp_path)
    text = decoded_text(tmp_path)
    for value in secrets.values():
        assert value.encode() not in blob, value
        assert value not in text, value
    assert os.listdir(f"{tmp_path}/_wal") == []


def test_redact_non_string_values(make_rec, tmp_path):
    rec = make_rec(redact=["ssn"])
    predict = rec.capture(lambda x: 1)
    predict({"ssn": 123456789, "age": 3})
    predict({"ssn": 987654321, "age": 4})
    flush(rec)
    rows = query(tmp_path, "select features from p order by features.age")
    assert [r["features"] for r in rows] == [{"ssn": "[REDACTED]", "age": 3}, {"ssn": "[REDACTED]", "age": 4}]
    text = decoded_text(tmp_path)
    assert "123456789" not in text and "987654321" not in text


# ---------------------------------------------------------------- user processors


def test_user_processors_modify_and_drop(make_rec, tmp_path):
    seen = []

    def enrich(row):
        seen.append(row["features"]["x"])
        row["features"]["x"] = row["features"]["x"] * 10
        row["context"] = {"enriched": True}
        return row

    def drop_twenty(row):
        return None if row["features"]["x"] == 20 else row

    rec = make_rec(processors=[enrich, drop_twenty])
    predict = rec.capture(lambda x: x["x"])
    for x in (1, 2, 3):
        predict({"x": x})
    flush(rec)
    rows = query(tmp_path, "select features.x as x, prediction, context from p order by x")
    assert rows == [
        {"x": 10, "prediction": 1, "context": {"enriched": True}},
        {"x": 30, "prediction": 3, "context": {"enriched": True}},
    ]
    assert sorted(seen) == [1, 2, 3]
    s = rec.stats()
    assert {k: v for k, v in s["dropped"].items() if v} == {"processor": 1}
    assert (s["captured"], s["written"], s["dropped_total"]) == (3, 2, 1)


def test_user_processor_that_raises_drops_its_row(make_rec, tmp_path):
    def picky(row):
        if row["features"]["x"] == 2:
            raise RuntimeError("cannot process")
        return row

    rec = make_rec(processors=[picky])
    predict = rec.capture(lambda x: x["x"])
    for x in (1, 2, 3):
        predict({"x": x})
    flush(rec)
    assert query(tmp_path, "select features.x as x from p order by x") == [{"x": 1}, {"x": 3}]
    s = rec.stats()
    assert (s["captured"], s["written"], s["dropped_total"]) == (3, 2, 1)


def test_prediction_processor_does_not_drop_labels(make_rec, tmp_path):
    rec = make_rec(processors=[lambda row: row if row["features"]["x"] > 0 else None])
    predict = rec.capture(lambda x: 1)
    predict({"x": 1})
    rec.log_label(1, prediction_id=predlog.last_prediction_id())
    flush(rec)
    s = rec.stats()
    assert (s["labels"], s["labels_dropped"]) == (1, 0)
    assert query(tmp_path, "select l.label from l join p using (prediction_id)") == [{"label": 1}]


def test_processors_run_after_builtins(make_rec, tmp_path):
    seen = []

    def look(row):
        seen.append(dict(row["features"]))
        return row

    rec = make_rec(redact=["password"], drop_fields=["features.blob"], processors=[look])
    predict = rec.capture(lambda x: 1)
    predict({"password": "hunter2", "blob": "zzz", "a": 1})
    flush(rec)
    assert seen == [{"password": "[REDACTED]", "a": 1}]


# ---------------------------------------------------------------- truncation


def test_truncation_of_long_strings(make_rec, tmp_path):
    cap = 64
    rec = make_rec(max_value_bytes=cap)

    @rec.capture
    def predict(x: dict) -> str:
        if x.get("fail"):
            raise ValueError("m" * 1000)
        return "p" * 200

    long_ascii = "a" * 500
    long_utf8 = "é" * 100  # 200 bytes
    with predlog.context(note="n" * 300):
        predict({"x": long_ascii, "y": "short", "u": long_utf8})
    with pytest.raises(ValueError):
        predict({"fail": True, "y": "ok"})
    flush(rec)
    rows = query(
        tmp_path,
        "select status, features, prediction, error_message, context, capture_flags from p order by status desc",
    )
    ok, err = rows
    assert ok["features"]["y"] == "short"
    for value, original in (
        (ok["features"]["x"], long_ascii),
        (ok["features"]["u"], long_utf8),
        (ok["prediction"], "p" * 200),
        (ok["context"]["note"], "n" * 300),
        (err["error_message"], "m" * 1000),
    ):
        assert 0 < len(value.encode()) <= cap
        assert original.startswith(value)
    assert ok["features"]["x"] == "a" * cap
    assert sorted(ok["capture_flags"]) == sorted(
        ["truncated:features.x", "truncated:features.u", "truncated:prediction", "truncated:context.note"]
    )
    assert err["capture_flags"] == ["truncated:error_message"]


def test_truncation_flags_only_the_long_row(make_rec, tmp_path):
    rec = make_rec(max_value_bytes=16)
    predict = rec.capture(lambda x: 1)
    predict({"i": 0, "x": "short"})
    predict({"i": 1, "x": "x" * 17})
    predict({"i": 2, "x": "x" * 16})
    flush(rec)
    rows = query(tmp_path, "select features.i as i, features.x as x, capture_flags from p order by i")
    assert rows == [
        {"i": 0, "x": "short", "capture_flags": None},
        {"i": 1, "x": "x" * 16, "capture_flags": ["truncated:features.x"]},
        {"i": 2, "x": "x" * 16, "capture_flags": None},
    ]
