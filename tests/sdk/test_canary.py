"""Canary routing: real recorders writing real stores, read back with predlog.replay.Store.

Routing counts over many keys use ``Canary.arm_for`` (the routing decision alone); rows
written by real captured calls check that what is stored agrees with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from store_helpers import flush

import predlog
from predlog._canary import _Slot
from predlog.replay import Store

V1, V2 = "1.4.0", "1.5.0"


def pair(rec: predlog.Recorder, candidate: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:
    """A baseline returning ("v1", x) and a candidate (by default returning ("v2", x))."""

    @rec.capture(version=V1)
    def predict_v1(x: Any) -> Any:
        return ("v1", x)

    @rec.capture(version=V2)
    def predict_v2(x: Any) -> Any:
        return ("v2", x) if candidate is None else candidate(x)

    return predict_v1, predict_v2


def rows(store: Any) -> Any:
    with Store(store) as s:
        df = s.predictions()
    df["arm"] = [c.get("canary_arm") if isinstance(c, dict) else None for c in df["context"]]
    return df


# ---------------------------------------------------------------- routing


def test_share_over_100k_keys_and_independent_of_sampling(rec):
    router = rec.canary(*pair(rec), share=0.05)
    users = [f"user-{i}" for i in range(100_000)]
    cand = [router.arm_for(u) == "candidate" for u in users]
    assert abs(sum(cand) / len(users) - 0.05) <= 0.003
    # Independent of predlog's per-user sampling bucket (crc32 of the bare user id): the
    # users kept at sample_rate=0.05 are a canary of 5% like the others. The routing hash
    # is a function of that CRC, so check other ranges of it too (a keyed CRC fails these).
    bucket = [zlib.crc32(u.encode()) / 4294967296.0 for u in users]
    for low, high in ((0.0, 0.05), (0.95, 1.0), (0.0, 0.5), (0.25, 0.3)):
        sampled = [low <= b < high for b in bucket]
        both = sum(c and s for c, s in zip(cand, sampled, strict=True))
        assert abs(both / sum(sampled) - 0.05) <= 0.015, (low, high)
    router.share = 0.5
    half = [router.arm_for(u) == "candidate" for u in users]
    for low, high in ((0.0, 0.05), (0.5, 1.0), (0.0, 0.5)):
        sampled = [low <= b < high for b in bucket]
        both = sum(c and s for c, s in zip(half, sampled, strict=True))
        assert abs(both / sum(sampled) - 0.5) <= 0.03, (low, high)


def test_buckets_follow_the_documented_formula(rec):
    """docs/canary.md gives the hash; other processes and versions rely on it."""
    router = rec.canary(*pair(rec), share=0.3)
    seed = int.from_bytes(hashlib.blake2b(f"predlog-canary\0m\0{V2}".encode(), digest_size=8).digest(), "big")
    mask = (1 << 64) - 1
    for value in ("u1", "user-42", "ü-7", ""):
        h = zlib.crc32(value.encode()) ^ seed
        h = (h ^ (h >> 33)) * 0xFF51AFD7ED558CCD & mask
        h = (h ^ (h >> 33)) * 0xC4CEB9FE1A85EC53 & mask
        bucket = (h ^ (h >> 33)) / 2**64
        assert router.arm_for(value) == ("candidate" if bucket < 0.3 else "baseline")
        router.share = bucket  # the boundary: a bucket equal to the share is the baseline's
        assert router.arm_for(value) == "baseline"
        router.share = min(1.0, bucket + 1e-9)
        assert router.arm_for(value) == "candidate"
        router.share = 0.3


def test_each_canary_picks_its_own_users(rec):
    v1, v2 = pair(rec)

    @rec.capture(version="1.6.0")
    def predict_v3(x: Any) -> Any:
        return ("v3", x)

    a = rec.canary(v1, v2, share=0.5)
    b = rec.canary(v1, predict_v3, share=0.5)
    users = [f"u{i}" for i in range(4000)]
    agree = sum(a.arm_for(u) == b.arm_for(u) for u in users) / len(users)
    assert 0.45 < agree < 0.55


def test_rows_carry_the_serving_version_and_arm(rec, tmp_path):
    router = rec.canary(*pair(rec), share=0.3)
    served = {}
    for i in range(300):
        with predlog.context(user_id=f"u{i}", request_id=f"r{i}"):
            version, _ = router({"i": i})
            served[f"u{i}"] = (version, predlog.last_prediction_id())
    flush(rec)
    df = rows(tmp_path)
    assert len(df) == 300
    for r in df.itertuples():
        arm = router.arm_for(r.user_id)
        assert r.arm == arm
        assert r.model_version == (V2 if arm == "candidate" else V1)
        version, pid = served[r.user_id]
        assert version == ("v2" if arm == "candidate" else "v1")
        assert pid == r.prediction_id  # last_prediction_id() names the row of the call
    n_cand = int((df["arm"] == "candidate").sum())
    assert router.stats()["candidate_calls"] == n_cand
    assert router.stats()["baseline_calls"] == 300 - n_cand


def test_outer_context_is_kept_and_last_prediction_id_without_context(rec, tmp_path):
    router = rec.canary(*pair(rec), share=1.0)
    with predlog.context(user_id="u1", request_id="r1", region="eu"):
        router({"i": 0})
        inside = predlog.last_prediction_id()
    router({"i": 1})
    outside = predlog.last_prediction_id()
    flush(rec)
    df = rows(tmp_path).set_index("prediction_id")
    assert df.loc[inside, "context"] == {"region": "eu", "canary_arm": "candidate"}
    assert (df.loc[inside, "user_id"], df.loc[inside, "request_id"]) == ("u1", "r1")
    assert df.loc[outside, "context"] == {"region": None, "canary_arm": "candidate"}
    assert df.loc[outside, "features"]["i"] == 1


def test_routing_by_an_extra_key(rec):
    router = rec.canary(*pair(rec), share=0.5, key="tenant")
    for tenant in ("a", "b", "c", "d", "e"):
        with predlog.context(tenant=tenant):
            served = {router(0)[0] for _ in range(20)}
        assert served == {"v2" if router.arm_for(tenant) == "candidate" else "v1"}


def test_key_absent_routes_at_random_within_share(rec):
    router = rec.canary(*pair(rec), share=0.2, key="session")
    with predlog.suppressed():  # routing only: nothing to record
        served = [router(0)[0] for _ in range(5000)]
    assert abs(served.count("v2") / 5000 - 0.2) < 0.03
    assert abs(sum(router.arm_for(None) == "candidate" for _ in range(5000)) / 5000 - 0.2) < 0.03


_CHILD = """
import json, sys, predlog
rec = predlog.Recorder(store=sys.argv[1], model="fraud", enabled=False)
v1 = rec.capture(version="1.4.0")(lambda x: x)
v2 = rec.capture(version="1.5.0")(lambda x: x)
router = rec.canary(v1, v2, share=0.3)
router.promote()
heavy = [m for m in ("pandas", "duckdb", "scipy") if m in sys.modules]
router.share = 0.3
print(json.dumps({"arms": [router.arm_for(f"user-{i}") for i in range(1000)], "heavy": heavy}))
"""


def test_same_user_same_arm_across_processes(make_rec, tmp_path):
    rec = make_rec(model="fraud", enabled=False)
    v1 = rec.capture(version="1.4.0")(lambda x: x)
    v2 = rec.capture(version="1.5.0")(lambda x: x)
    router = rec.canary(v1, v2, share=0.3)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash: must not matter
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "child")], env=env, capture_output=True, text=True, check=True
    )
    child = json.loads(out.stdout)
    assert child["arms"] == [router.arm_for(f"user-{i}") for i in range(1000)]
    assert 200 < child["arms"].count("candidate") < 400
    assert child["heavy"] == []  # routing and its events need none of the reading side


class _Input(dict):  # type: ignore[type-arg]
    """Features that can be weakly referenced: alive as long as a record of the call is."""


def _slots_alive() -> int:
    return sum(isinstance(o, _Slot) for o in gc.get_objects())


def _drain(rec: predlog.Recorder, direct: Callable[[Any], Any]) -> None:
    """Flush twice around one more call: the writer holds its last batch until its next one."""
    flush(rec)
    direct({"i": -1})
    flush(rec)
    gc.collect()


def test_short_lived_threads_leave_no_slots_or_records_behind(rec, tmp_path):
    v1, v2 = pair(rec)
    router = rec.canary(v1, v2, share=0.5)
    gc.collect()
    slots_before = _slots_alive()
    inputs: list[weakref.ref[_Input]] = []
    served: dict[str, str] = {}

    def call(i: int) -> None:
        x = _Input(i=i)
        inputs.append(weakref.ref(x))
        # Half the threads call inside a request context, half outside any.
        with predlog.context(user_id=f"u{i}") if i % 2 else contextlib.nullcontext():
            version = router(x)[0]
            pid = predlog.last_prediction_id()
        assert pid == predlog.last_prediction_id() is not None
        served[pid] = version

    for start in range(0, 2000, 50):
        threads = [threading.Thread(target=call, args=(i,)) for i in range(start, start + 50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    _drain(rec, v1)
    assert len(inputs) == len(served) == 2000
    # The threads are gone, and with them their slots and the records of their calls.
    assert _slots_alive() <= slots_before
    assert sum(r() is not None for r in inputs) == 0
    st = router.stats()
    assert st["baseline_calls"] + st["candidate_calls"] == 2000
    df = rows(tmp_path).set_index("prediction_id")
    assert len(df) == 2001 and st["candidate_calls"] == int((df["arm"] == "candidate").sum())
    # last_prediction_id() in each thread named the row of its call.
    assert {pid: ("v2" if df.loc[pid, "arm"] == "candidate" else "v1") for pid in served} == served


def test_the_router_keeps_no_record_once_the_caller_has_moved_on(rec):
    v1, v2 = pair(rec)
    router = rec.canary(v1, v2, share=0.5)
    x = _Input(i=0)
    ref = weakref.ref(x)
    router(x)  # outside any context: the thread's last prediction
    assert predlog.last_prediction_id() is not None
    del x
    _drain(rec, v1)  # a direct call: now the thread's last prediction
    assert ref() is None  # the router's cached context for this thread let go of it


# ---------------------------------------------------------------- promote, rollback, share


def test_promote_and_rollback_never_serve_a_stale_arm(make_rec):
    rec = make_rec(sample_rate=0.0)  # captured calls, not written: the arms are what is checked
    router = rec.canary(*pair(rec), share=0.5)
    # The main thread marks a change as under way before making it, and names the new state
    # once it has returned. A call that sees the same mark before and after ran wholly
    # after one change returned and before the next began: it must be served by that state.
    mark = [("canary", 0)]
    seen: list[list[tuple[tuple[str, int], str]]] = [[] for _ in range(8)]
    stop = threading.Event()

    def serve(out: list[tuple[tuple[str, int], str]], t: int) -> None:
        i = 0
        while not stop.is_set():
            before = mark[0]
            with predlog.context(user_id=f"t{t}-{i % 50}"):
                version = router(i)[0]
            if mark[0] is before:
                out.append((before, version))
            i += 1

    threads = [threading.Thread(target=serve, args=(seen[t], t)) for t in range(8)]
    for t in threads:
        t.start()
    gen = 0
    for _ in range(3):
        for change, state in ((router.promote, "promoted"), (router.rollback, "rolled_back"), (None, "canary")):
            time.sleep(0.02)
            gen += 1
            mark[0] = ("changing", gen)
            if change is None:
                router.share = 0.5
            else:
                change()
            mark[0] = (state, gen)
    stop.set()
    for t in threads:
        t.join()
    calls = [(m[0], v) for s in seen for m, v in s]
    assert {v for p, v in calls if p == "promoted"} == {"v2"}
    assert {v for p, v in calls if p == "rolled_back"} == {"v1"}
    assert {v for p, v in calls if p == "canary"} == {"v1", "v2"}
    assert sum(p == "promoted" for p, _ in calls) > 100


def test_share_is_validated_and_a_bad_value_changes_nothing(rec):
    router = rec.canary(*pair(rec), share=0.05)
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(predlog.ConfigError):
            router.share = bad  # type: ignore[assignment]
    assert router.share == 0.05 and router.state == "canary"
    assert [e["kind"] for e in router.events] == ["start"]
    router.promote()
    router.share = 0.25  # from any state, a share routes again
    assert (router.state, router.share) == ("canary", 0.25)


# ---------------------------------------------------------------- fallback


def _flaky(x: Any) -> Any:
    if x["i"] % 2:
        raise ValueError(f"bad input {x['i']}")
    return ("v2", x)


def test_a_raising_candidate_falls_back_to_the_baseline(rec, tmp_path):
    router = rec.canary(*pair(rec, _flaky), share=1.0)
    with predlog.context(request_id="r1"):
        assert router({"i": 1}) == ("v1", {"i": 1})
        served = predlog.last_prediction_id()
        assert router({"i": 2}) == ("v2", {"i": 2})
    flush(rec)
    df = rows(tmp_path).set_index("prediction_id")
    assert len(df) == 3
    error = df[df["status"] == "error"].iloc[0]
    assert (error["model_version"], error["arm"], error["error_type"]) == (V2, "candidate", "ValueError")
    assert df.loc[served, "model_version"] == V1
    assert df.loc[served, "context"]["canary_fallback"] is True
    assert df.loc[served, "request_id"] == error["request_id"] == "r1"
    assert router.stats()["fallbacks"] == 1
    assert router.stats()["candidate_calls"] == 2


def test_without_fallback_the_candidates_exception_propagates(rec, tmp_path):
    router = rec.canary(*pair(rec, _flaky), share=1.0, fallback=False)
    with pytest.raises(ValueError, match="bad input 1"):
        router({"i": 1})
    flush(rec)
    df = rows(tmp_path)
    assert list(df["status"]) == ["error"] and router.stats()["fallbacks"] == 0


# ---------------------------------------------------------------- shadow


def _slow(x: Any) -> Any:
    time.sleep(0.05)
    return ("v2", x)


def test_shadow_keeps_the_candidates_latency_off_the_caller(rec, tmp_path):
    router = rec.canary(*pair(rec, _slow), shadow=True)
    assert router.state == "shadow"
    times, served = [], []
    for i in range(10):
        with predlog.context(request_id=f"r{i}") if i % 2 else predlog.context(user_id=f"u{i}"):
            t0 = time.perf_counter()
            assert router({"i": i})[0] == "v1"
            times.append(time.perf_counter() - t0)
            served.append(predlog.last_prediction_id())
    assert sorted(times)[5] < 0.01  # the median call does not wait 50 ms for the candidate
    assert router.flush(timeout_s=10)
    flush(rec)
    df = rows(tmp_path)
    assert len(df) == 20
    for rid, group in df.groupby("request_id"):
        assert sorted(group["model_version"]) == [V1, V2], rid
        shadow = group[group["model_version"] == V2].iloc[0]
        assert shadow["context"]["canary_shadow"] is True and shadow["arm"] == "candidate"
    assert set(df["request_id"]) >= {"r1", "r3"}  # the caller's request id when there is one
    assert set(df.set_index("prediction_id").loc[served, "model_version"]) == {V1}
    st = router.stats()
    assert (st["baseline_calls"], st["candidate_calls"], st["shadow_runs"]) == (10, 0, 10)


def test_shadow_drops_on_a_full_queue_and_never_blocks(rec, tmp_path):
    release = threading.Event()

    def stuck(x: Any) -> Any:
        release.wait(10)
        return ("v2", x)

    router = rec.canary(*pair(rec, stuck), shadow=True, shadow_queue_size=2)
    t0 = time.perf_counter()
    for i in range(10):
        router({"i": i})
    assert time.perf_counter() - t0 < 5
    release.set()
    assert router.flush(timeout_s=10)
    st = router.stats()
    assert st["shadow_dropped"] >= 7
    assert st["shadow_runs"] + st["shadow_dropped"] == 10
    flush(rec)
    assert len(rows(tmp_path)) == 10 + st["shadow_runs"]


def test_shadow_errors_are_counted_and_recorded(rec, tmp_path):
    def broken(x: Any) -> Any:
        raise RuntimeError("candidate broke")

    router = rec.canary(*pair(rec, broken), shadow=True)
    assert router({"i": 0})[0] == "v1"
    assert router.flush(timeout_s=10)
    assert router.stats()["shadow_errors"] == 1
    flush(rec)
    df = rows(tmp_path)
    assert sorted(df["status"]) == ["error", "ok"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_shadow_worker_starts_afresh_in_a_forked_child(rec):
    router = rec.canary(*pair(rec), shadow=True)
    router({"i": 0})
    assert router.flush(timeout_s=10)
    pid = os.fork()
    if pid == 0:  # the child: an empty queue, zero counts, a new worker thread
        code = 1
        try:
            fresh = router.stats()["shadow_runs"] == 0
            router({"i": 1})
            code = 0 if fresh and router.flush(timeout_s=10) and router.stats()["shadow_runs"] == 1 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert router.stats()["shadow_runs"] == 1


# ---------------------------------------------------------------- events


def test_events_are_written_and_read_back_in_order(rec, tmp_path):
    router = rec.canary(*pair(rec), share=0.05)
    router.share = 0.25
    router.promote(reason="error rate within bounds")
    router.rollback(reason="latency p99 regressed")
    files = sorted((tmp_path / "events").rglob("*.json"))
    assert len(files) == 4 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    with Store(tmp_path) as s:
        ev = s.events()
        assert list(ev["kind"]) == ["start", "share", "promote", "rollback"]
        assert list(ev["state"]) == ["canary", "canary", "promoted", "rolled_back"]
        assert list(ev["share"]) == [0.05, 0.25, 0.25, 0.25]
        assert list(ev["reason"]) == [None, None, "error rate within bounds", "latency p99 regressed"]
        assert set(ev["model"]) == {"m"} and set(ev["baseline_version"]) == {V1}
        assert set(ev["candidate_version"]) == {V2} and set(ev["pid"]) == {os.getpid()}
        assert str(ev["ts"].dtype) == "datetime64[us, UTC]" and ev["ts"].is_monotonic_increasing
        assert list(s.events(kind=["promote", "rollback"])["kind"]) == ["promote", "rollback"]
        assert s.events(model="other").empty
    assert [e["kind"] for e in router.events] == ["start", "share", "promote", "rollback"]


def test_events_stay_in_memory_when_capture_is_disabled(make_rec, tmp_path):
    rec = make_rec(enabled=False)
    router = rec.canary(*pair(rec))
    router.promote()
    assert [e["kind"] for e in router.events] == ["start", "promote"]
    assert not (tmp_path / "events").exists()


def test_an_event_that_cannot_be_written_is_counted_not_raised(rec, tmp_path, caplog):
    (tmp_path / "events").write_text("not a directory")
    router = rec.canary(*pair(rec))
    router.promote()
    assert router.state == "promoted"
    assert router.stats()["events_failed"] == 2
    assert [e["kind"] for e in router.events] == ["start", "promote"]
    assert "could not write a canary event" in caplog.text


# ---------------------------------------------------------------- async


def test_async_canary_routes_falls_back_and_shadows(rec, tmp_path):
    @rec.capture(version=V1)
    async def predict_v1(x: Any) -> Any:
        return ("v1", x)

    @rec.capture(version=V2)
    async def predict_v2(x: Any) -> Any:
        await asyncio.sleep(0.2)
        if x["i"] < 0:
            raise ValueError("negative")
        return ("v2", x)

    router = rec.canary(predict_v1, predict_v2, share=1.0)
    shadow = rec.canary(predict_v1, predict_v2, shadow=True)

    async def main() -> tuple[Any, ...]:
        with predlog.context(request_id="a"):
            served = await router({"i": 1})
            fell_back = await router({"i": -1})
            pid = predlog.last_prediction_id()
        t0 = time.perf_counter()
        shadowed = await shadow({"i": 2})
        elapsed = time.perf_counter() - t0
        while shadow.stats()["shadow_runs"] < 1:
            await asyncio.sleep(0.01)
        return served, fell_back, pid, shadowed, elapsed

    served, fell_back, pid, shadowed, elapsed = asyncio.run(main())
    assert (served[0], fell_back[0], shadowed[0]) == ("v2", "v1", "v1")
    assert elapsed < 0.1  # the shadow candidate's 0.2 s is not the caller's
    flush(rec)
    df = rows(tmp_path).set_index("prediction_id")
    assert df.loc[pid, "context"]["canary_fallback"] is True
    assert router.stats()["fallbacks"] == 1
    shadow_rows = df[df["request_id"].isna() | (df["request_id"] != "a")]
    assert sorted(shadow_rows["model_version"]) == [V1, V2] and shadow_rows["request_id"].nunique() == 1


# ---------------------------------------------------------------- configuration


def test_configuration_errors_say_what_to_do(rec, make_rec):
    v1, v2 = pair(rec)
    with pytest.raises(predlog.ConfigError, match="decorated with @predlog.capture"):
        rec.canary(v1, lambda x: x)
    same = rec.capture(version=V1)(lambda x: x)
    with pytest.raises(predlog.ConfigError, match="both version"):
        rec.canary(v1, same)
    other = rec.capture(model="other", version="9")(lambda x: x)
    with pytest.raises(predlog.ConfigError, match="same @capture\\(model"):
        rec.canary(v1, other)
    with pytest.raises(predlog.ConfigError, match="recorder"):
        make_rec().canary(v1, v2)
    with pytest.raises(predlog.ConfigError, match="share"):
        rec.canary(v1, v2, share=2)

    @rec.capture(version="3")
    def gen(x: Any) -> Any:
        yield x

    with pytest.raises(predlog.ConfigError, match="generators"):
        rec.canary(v1, gen)
    assert isinstance(rec.canary(v1, v2), predlog.Canary)
