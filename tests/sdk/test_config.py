"""Configuration, sampling, enabling and counters, checked on what reaches a real store."""

from __future__ import annotations

import asyncio
import glob
import logging
import os

import pytest
from store_helpers import connect, flush, pred_files, query  # noqa: F401

import predlog


@pytest.fixture
def rec_defaults():
    return {}  # these tests check the defaults themselves


from predlog._config import ENV_VARS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No PREDLOG_* setting leaks in from the environment running the tests."""
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------- precedence


def test_precedence_argument_over_env_over_default(make_rec, tmp_path, monkeypatch):
    monkeypatch.setenv("PREDLOG_MODEL", "env-model")
    monkeypatch.setenv("PREDLOG_VERSION", "9.9")
    monkeypatch.setenv("PREDLOG_MAX_VALUE_BYTES", "32")
    rec = make_rec(version="1.0")
    assert rec.config.model == "env-model"  # env over default
    assert rec.config.version == "1.0"  # argument over env
    assert rec.config.max_value_bytes == 32
    assert rec.config.sample_rate == 1.0  # default
    predict = rec.capture(lambda x: 1)
    predict({"s": "x" * 100})
    flush(rec)
    [f] = pred_files(tmp_path)
    assert f"{os.sep}model=env-model{os.sep}" in f
    rows = query(tmp_path, "select model, model_version, length(features.s) as n, capture_flags from p")
    assert rows == [{"model": "env-model", "model_version": "1.0", "n": 32, "capture_flags": ["truncated:features.s"]}]


def test_env_store_and_sample_rate(tmp_path, monkeypatch):
    store = tmp_path / "from-env"
    monkeypatch.setenv("PREDLOG_STORE", str(store))
    monkeypatch.setenv("PREDLOG_SAMPLE_RATE", "0.0")
    rec = predlog.Recorder(model="m")
    try:
        assert rec.config.store == str(store) and rec.config.sample_rate == 0.0
        predict = rec.capture(lambda x: 1)
        for i in range(10):
            predict({"i": i})
        keep = rec.capture(model="kept", sample_rate=1.0)(lambda x: 2)  # decorator argument wins
        keep({"i": 99})
        flush(rec)
        assert query(store, "select model, features.i as i, sample_rate from p") == [
            {"model": "kept", "i": 99, "sample_rate": 1.0}
        ]
    finally:
        rec.shutdown(timeout_s=10)


def test_defaults_without_env(make_rec, tmp_path):
    rec = make_rec()
    cfg = rec.config
    assert (cfg.model, cfg.version, cfg.sample_rate, cfg.enabled, cfg.cpu_time) == (
        None,
        "unversioned",
        1.0,
        True,
        "auto",
    )

    def score_applicant(x):
        return 1

    rec.capture(score_applicant)({"a": 1})
    flush(rec)
    assert query(tmp_path, "select model, model_version from p") == [
        {"model": "score_applicant", "model_version": "unversioned"}
    ]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "team/model"},
        {"model": "../escape"},
        {"model": ""},
        {"sample_rate": 2},
        {"sample_rate": -0.1},
        {"sample_rate": True},
        {"max_queue_size": -1},
        {"max_queue_size": 0},
        {"flush_interval_s": 0},
        {"hash_fields": ["features.email"]},
        {"hash_fields": ["email"], "hash_key": "k"},
        {"on_full": "explode"},
        {"cpu_time": "sometimes"},
        {"version": ""},
        {"no_such_setting": 1},
        {"processors": [42]},
    ],
)
def test_bad_recorder_arguments_raise(tmp_path, kwargs):
    with pytest.raises(predlog.ConfigError):
        predlog.Recorder(store=str(tmp_path), **kwargs)


def test_config_error_is_value_error():
    assert issubclass(predlog.ConfigError, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "a/b"},
        {"features": "nonexistent_param"},
        {"features": 3},
        {"sample_rate": 2},
        {"confidence": "min"},
        {"prediction": "label"},
        {"version": ""},
    ],
)
def test_bad_decorator_arguments_raise(make_rec, kwargs):
    rec = make_rec(model="m")

    def predict(x, threshold=0.5):
        return 1

    with pytest.raises(predlog.ConfigError):
        rec.capture(**kwargs)(predict)


def test_configure_with_bad_argument_keeps_old_config(make_rec, tmp_path):
    rec = make_rec(model="m", version="1")
    predict = rec.capture(lambda x: 1)
    with pytest.raises(predlog.ConfigError):
        rec.configure(store=str(tmp_path), sample_rate=2)
    assert rec.config.version == "1"
    predict({"a": 1})
    flush(rec)
    assert query(tmp_path, "select model_version from p") == [{"model_version": "1"}]


@pytest.mark.parametrize(
    ("var", "value", "field", "default"),
    [
        ("PREDLOG_SAMPLE_RATE", "lots", "sample_rate", 1.0),
        ("PREDLOG_SAMPLE_RATE", "2.5", "sample_rate", 1.0),
        ("PREDLOG_MAX_QUEUE_SIZE", "-5", "max_queue_size", 200_000),
        ("PREDLOG_ENABLED", "maybe", "enabled", True),
        ("PREDLOG_MODEL", "a/b", "model", None),
        ("PREDLOG_CPU_TIME", "sometimes", "cpu_time", "auto"),
        ("PREDLOG_FLUSH_INTERVAL_S", "soon", "flush_interval_s", 1.0),
    ],
)
def test_bad_env_value_warns_and_falls_back(make_rec, monkeypatch, caplog, var, value, field, default):
    monkeypatch.setenv(var, value)
    with caplog.at_level(logging.WARNING, logger="predlog"):
        rec = make_rec()
    assert getattr(rec.config, field) == default
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "predlog"]
    assert len(warnings) == 1 and var in warnings[0].getMessage()


def test_bad_env_value_does_not_stop_recording(make_rec, tmp_path, monkeypatch):
    monkeypatch.setenv("PREDLOG_SAMPLE_RATE", "lots")
    monkeypatch.setenv("PREDLOG_MODEL", "bad/name")
    rec = make_rec()

    def fraud_score(x):
        return 1

    rec.capture(fraud_score)({"a": 1})
    flush(rec)
    assert query(tmp_path, "select model, sample_rate from p") == [{"model": "fraud_score", "sample_rate": 1.0}]


# ---------------------------------------------------------------- enabled


def test_disabled_records_nothing_and_calls_work(make_rec, tmp_path):
    rec = make_rec(model="m", enabled=False)
    out = object()
    err = ValueError("still raised")

    @rec.capture
    def predict(x):
        if x.get("fail"):
            raise err
        return out

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
        return await apredict({}), [y async for y in agen({})]

    assert predict({}) is out
    with pytest.raises(ValueError) as ei:
        predict({"fail": True})
    assert ei.value is err
    assert list(gen({})) == [out]
    assert asyncio.run(run_async()) == (out, [out])
    assert rec.flush(timeout_s=10) is True
    assert pred_files(tmp_path) == []
    s = rec.stats()
    assert (s["captured"], s["written"], s["dropped_total"]) == (0, 0, 0)


def test_disabled_by_env_then_enabled_by_configure(make_rec, tmp_path, monkeypatch):
    monkeypatch.setenv("PREDLOG_ENABLED", "0")
    rec = make_rec(model="m")
    predict = rec.capture(lambda x: x["i"])
    predict({"i": 0})
    monkeypatch.delenv("PREDLOG_ENABLED")
    rec.configure(store=str(tmp_path), model="m")  # functions already decorated follow
    predict({"i": 1})
    flush(rec)
    assert query(tmp_path, "select features.i as i from p") == [{"i": 1}]


def test_module_level_api_on_reconfigured_default_recorder(tmp_path):
    store = tmp_path / "default"
    predlog.configure(store=str(store), model="default-m", version="2")
    try:

        @predlog.capture
        def predict(x: dict) -> float:
            return 0.5

        with predlog.context(request_id="r1"):
            predict({"a": 1})
            pid = predlog.last_prediction_id()
        predlog.log_label(1, prediction_id=pid)
        assert predlog.flush(timeout_s=10) is True
        s = predlog.stats()
        assert (s["captured"], s["written"], s["dropped_total"], s["labels"]) == (1, 1, 0, 1)
        rows = query(store, "select prediction_id, model, model_version, request_id from p")
        assert rows == [{"prediction_id": pid, "model": "default-m", "model_version": "2", "request_id": "r1"}]
        assert glob.glob(f"{store}/labels/date=*/*.parquet")
    finally:
        predlog.shutdown(timeout_s=10)
        predlog.configure()  # back to the import-time settings (environment and defaults)


# ---------------------------------------------------------------- sampling


def test_sample_rate_keeps_its_fraction(make_rec, tmp_path):
    rec = make_rec(model="m", sample_rate=0.3)
    predict = rec.capture(lambda x: 1)
    for i in range(5000):
        predict({"i": i})
    flush(rec)
    [row] = query(tmp_path, "select count(*) as n, min(sample_rate) as lo, max(sample_rate) as hi from p")
    assert 1350 <= row["n"] <= 1650, row  # 30% +- 3% (about 4.6 standard deviations)
    assert row["lo"] == row["hi"] == 0.3
    s = rec.stats()
    assert s["captured"] == s["written"] == row["n"]


def test_sampling_is_deterministic_per_user(tmp_path):
    users = [f"user-{i}" for i in range(400)]
    kept = []
    for run in range(2):
        store = tmp_path / f"run{run}"
        rec = predlog.Recorder(store=str(store), model="m", sample_rate=0.3)
        try:
            predict = rec.capture(lambda x: 1)
            for rep in range(3):
                for u in users:
                    with predlog.context(user_id=u):
                        predict({"rep": rep})
            flush(rec)
            rows = query(store, "select user_id, count(*) as n from p group by user_id")
        finally:
            rec.shutdown(timeout_s=10)
        assert {r["n"] for r in rows} == {3}  # a user is always kept or always dropped
        kept.append({r["user_id"] for r in rows})
    assert kept[0] == kept[1]  # the same users across recorders (and processes)
    assert 0.2 <= len(kept[0]) / len(users) <= 0.4


def test_last_prediction_id_after_sampled_out_call_names_no_other_prediction(make_rec, tmp_path):
    import zlib

    def bucket(u):
        return zlib.crc32(u.encode()) / 2**32

    kept_user = next(u for u in (f"u{i}" for i in range(1000)) if bucket(u) < 0.5)
    dropped_user = next(u for u in (f"u{i}" for i in range(1000)) if bucket(u) >= 0.5)
    rec = make_rec(model="m", sample_rate=0.5)
    predict = rec.capture(lambda x: 1)
    with predlog.context(request_id="req"):
        with predlog.context(user_id=kept_user):
            predict({"i": 0})
        with predlog.context(user_id=dropped_user):
            predict({"i": 1})
        pid = predlog.last_prediction_id()
    flush(rec)
    stored = query(tmp_path, "select prediction_id, user_id from p")
    assert [r["user_id"] for r in stored] == [kept_user]
    assert pid is None or pid not in {r["prediction_id"] for r in stored}


def test_errors_always_kept_when_sampled(make_rec, tmp_path):
    rec = make_rec(model="m", sample_rate=0.0)

    @rec.capture
    def predict(x):
        if x["i"] == 3:
            raise RuntimeError("boom")
        return 1

    for i in range(5):
        try:
            predict({"i": i})
        except RuntimeError:
            pass
    flush(rec)
    assert query(tmp_path, "select features.i as i, status from p") == [{"i": 3, "status": "error"}]


# ---------------------------------------------------------------- stats


def test_stats_balance_under_queue_pressure(make_rec, tmp_path):
    rec = make_rec(model="m", max_queue_size=8)
    predict = rec.capture(lambda x: 1)
    for i in range(3000):
        predict({"i": i})
    flush(rec)
    s = rec.stats()
    assert s["captured"] == 3000
    assert s["captured"] == s["written"] + s["dropped_total"]
    assert {k for k, v in s["dropped"].items() if v} <= {"queue_full"}
    [row] = query(tmp_path, "select count(*) as n, count(distinct prediction_id) as ids from p")
    assert row["n"] == row["ids"] == s["written"] == s["rows_written"] == s["sealed_rows"]
    assert s["queue_depth"] == 0


def test_stats_count_calls_and_rows(make_rec, tmp_path):
    def drop_odd(row):
        if "features" not in row:  # a label row
            return row
        return None if row["features"]["i"] % 2 else row

    rec = make_rec(model="m", processors=[drop_odd])
    predict = rec.capture(lambda x: [1] * len(x) if isinstance(x, list) else 1)
    for i in range(4):
        predict({"i": i})
    predict([{"i": 0}, {"i": 2}, {"i": 4}])  # one batch call, three rows
    rec.log_label(1, request_id="r")
    flush(rec)
    s = rec.stats()
    assert (s["captured"], s["written"], s["dropped_total"]) == (5, 3, 2)
    assert s["dropped"] == {**dict.fromkeys(s["dropped"], 0), "processor": 2}
    assert set(s["dropped"]) == {"queue_full", "write_error", "processor", "processor_error", "convert_error"}
    assert s["rows_written"] == s["sealed_rows"] == 5
    assert s["labels"] == 1
    [row] = query(tmp_path, "select count(*) as n from p")
    assert row["n"] == 5
