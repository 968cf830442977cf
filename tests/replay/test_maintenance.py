"""Maintenance of a real store: compaction, retention, erasure, crash recovery, concurrency.

Stores are written with the real SDK (one Parquet file per ``flush()``), read back with
DuckDB over the files ``predlog.replay._files`` lists, crashed with ``os._exit`` in a forked
child at each step of the manifest protocol, and maintained while a writer process and
reader threads run.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import predlog
from predlog.replay import MaintenanceBusyError, _compact, _forget, _retain
from predlog.replay import _maintenance as maint
from predlog.replay._files import label_files, manifests, prediction_files, visible

# ---------------------------------------------------------------------------- helpers


def store_of(root: Path | str) -> types.SimpleNamespace:
    """A stand-in for ``predlog.replay.Store``: maintenance only uses ``.root``."""
    return types.SimpleNamespace(root=str(root))


Row = tuple[str | None, str | None, dict[str, Any]]  # user_id, request_id, features


class Written:
    """What a test wrote: prediction ids per user, and the labels logged."""

    def __init__(self) -> None:
        self.ids: dict[str | None, list[str]] = collections.defaultdict(list)
        self.request_ids: dict[str | None, list[str]] = collections.defaultdict(list)
        self.labels_by_pid: dict[str, str | None] = {}  # prediction id -> user
        self.labels_by_rid: dict[str, str | None] = {}  # request id -> user

    def all_ids(self) -> list[str]:
        return sorted(i for ids in self.ids.values() for i in ids)


def write_batches(
    root: Path,
    batches: Iterable[list[Row]],
    *,
    model: str = "m",
    written: Written | None = None,
    label_pid_every: int = 0,
    label_rid_every: int = 0,
    **config: Any,
) -> Written:
    """Record each batch through a real recorder and flush it: one Parquet file per batch."""
    out = written or Written()
    rec = predlog.Recorder(store=str(root), model=model, version="1", flush_interval_s=0.05, **config)
    predict = rec.capture(lambda x: 1.0)
    n = 0
    try:
        for batch in batches:
            for user, request, features in batch:
                with predlog.context(user_id=user, request_id=request):
                    predict(features)
                    pid = predlog.last_prediction_id()
                assert pid is not None
                out.ids[user].append(pid)
                if request is not None:
                    out.request_ids[user].append(request)
                n += 1
                if label_pid_every and n % label_pid_every == 0:
                    rec.log_label(n % 2, prediction_id=pid)
                    out.labels_by_pid[pid] = user
                elif label_rid_every and request is not None and n % label_rid_every == 0:
                    rec.log_label(n % 3, request_id=request)
                    out.labels_by_rid[request] = user
            assert rec.flush(timeout_s=10)
    finally:
        rec.shutdown(timeout_s=10)
    return out


def rows_of(root: Path | str, what: str = "prediction_id", table: str = "predictions") -> list[tuple[Any, ...]]:
    """Rows of the visible files of ``table`` (via the manifest-aware listing), via DuckDB."""
    files = prediction_files(str(root)) if table == "predictions" else label_files(str(root))
    if not files:
        return []
    return duckdb.connect().execute(f"select {what} from read_parquet(?, union_by_name=true)", [files]).fetchall()


def multiset(root: Path | str, what: str = "prediction_id", table: str = "predictions") -> collections.Counter[Any]:
    return collections.Counter(rows_of(root, what, table))


def parquet_on_disk(root: Path | str, table: str = "predictions") -> list[str]:
    """Every ``*.parquet`` file under ``table`` as a plain glob sees it."""
    return sorted(str(p) for p in Path(root, table).rglob("*.parquet"))


def assert_settled(root: Path | str) -> None:
    """No operation in flight: no manifest, no staging area; the glob equals the listing."""
    assert manifests(str(root)) == []
    leftovers = (
        [n for n in os.listdir(Path(root, "_maintenance")) if n != ".lock"]
        if Path(root, "_maintenance").exists()
        else []
    )
    assert leftovers == []
    assert parquet_on_disk(root) == prediction_files(str(root))
    assert parquet_on_disk(root, "labels") == label_files(str(root))


def every_byte(root: Path | str) -> Iterable[tuple[str, bytes]]:
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                yield path, f.read()


def decoded_text(root: Path | str) -> str:
    """Every value of every Parquet file under the store, decompressed, as one text."""
    parts = []
    for path in Path(root).rglob("*.parquet"):
        parts.append(json.dumps(pq.ParquetFile(path).read().to_pylist(), default=str))
    return "\n".join(parts)


def rows(n: int, users: list[str | None], start: int = 0, **features: Any) -> list[Row]:
    return [(users[i % len(users)], f"req{start + i:05d}", {"i": start + i, **features}) for i in range(n)]


def move_to_date(root: Path, rel_file: str, days_back: int) -> str:
    """Rewrite one sealed file as if its rows were recorded ``days_back`` days earlier.

    The SDK takes ``ts`` from the clock (no injectable clock), so old partitions are made
    from real SDK files: ts shifted, the file moved to the matching ``date=`` partition.
    """
    src = root / rel_file
    table = pq.ParquetFile(src).read()
    shift = pa.scalar(dt.timedelta(days=days_back), pa.duration("us"))
    table = table.set_column(table.schema.get_field_index("ts"), "ts", pc.subtract(table.column("ts"), shift))
    old = dt.date.fromisoformat(src.parent.name.split("=", 1)[1]) - dt.timedelta(days=days_back)
    dst_dir = src.parent.parent / f"date={old.isoformat()}"
    dst_dir.mkdir(mode=0o700, exist_ok=True)
    dst = dst_dir / src.name
    pq.write_table(table, dst, compression="zstd")
    os.chmod(dst, 0o600)
    src.unlink()
    return str(dst.relative_to(root))


def fork_run(fn: Callable[[Callable[[str], None]], object], crash_at: str) -> int:
    """Run ``fn(hook)`` in a forked child that dies (``os._exit(17)``) at step ``crash_at``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:

            def hook(step: str) -> None:
                if step == crash_at:
                    os._exit(17)

            fn(hook)
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# ---------------------------------------------------------------------------- compact


def test_compact_merges_sorts_and_is_idempotent(tmp_path):
    users: list[str | None] = ["u3", "u1", None, "u2", "u0"]
    w = write_batches(tmp_path, [rows(40, users, start=40 * b) for b in range(8)], label_pid_every=5, label_rid_every=7)
    preds_before = multiset(tmp_path, "prediction_id, user_id, request_id, features.i")
    labels_before = multiset(tmp_path, "prediction_id, request_id, label", "labels")
    assert sum(preds_before.values()) == 320 and len(parquet_on_disk(tmp_path)) == 8
    label_files_before = len(parquet_on_disk(tmp_path, "labels"))
    assert label_files_before >= 2

    result = _compact.compact(store_of(tmp_path), row_group_rows=64)

    assert result.files_before == 8 + label_files_before and result.files_after == 2
    assert result.rows == 320 + sum(labels_before.values())
    assert len(result.partitions) == 2 and result.bytes_after > 0
    assert multiset(tmp_path, "prediction_id, user_id, request_id, features.i") == preds_before
    assert multiset(tmp_path, "prediction_id, request_id, label", "labels") == labels_before
    assert sorted(rows_of(tmp_path)) == sorted((i,) for i in w.all_ids())
    assert_settled(tmp_path)

    [path] = parquet_on_disk(tmp_path)
    assert os.path.basename(path).startswith("compact-")
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_row_groups == 5  # 320 rows / 64
    table = pf.read(columns=["user_id", "ts"]).to_pylist()
    key = [(r["user_id"] is None, r["user_id"] or "", r["ts"]) for r in table]
    assert key == sorted(key)  # user_id then ts, nulls last
    assert [(c.column_index, c.descending, c.nulls_first) for c in pf.metadata.row_group(0).sorting_columns][:1] == [
        (pf.schema_arrow.get_field_index("user_id"), False, False)
    ]
    j = [pf.metadata.schema.column(k).path for k in range(pf.metadata.num_columns)].index("user_id")
    stats = pf.metadata.row_group(0).column(j).statistics
    assert stats.has_min_max and stats.min == "u0"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "_maintenance").st_mode) == 0o700

    # A lookup of one user through DuckDB over the compacted file.
    con = duckdb.connect()
    n = con.execute(
        "select count(*) from read_parquet(?) where user_id = 'u2'", [prediction_files(str(tmp_path))]
    ).fetchone()
    assert n == (len(w.ids["u2"]),)

    # Idempotent: a second run changes nothing, not even the files' identity.
    before = {p: os.stat(p).st_ino for p in parquet_on_disk(tmp_path) + parquet_on_disk(tmp_path, "labels")}
    again = _compact.compact(store_of(tmp_path), row_group_rows=64)
    assert (again.files_before, again.files_after, again.partitions) == (0, 0, ())
    assert {p: os.stat(p).st_ino for p in parquet_on_disk(tmp_path) + parquet_on_disk(tmp_path, "labels")} == before


def test_compact_cuts_large_partitions_into_user_ranges(tmp_path):
    w = write_batches(tmp_path, [rows(40, ["a", "b", "c", None], start=40 * b) for b in range(8)])
    result = _compact.compact(tmp_path, target_rows=100, row_group_rows=16)
    # 320 rows, 100 per file at least: files of 80 rows per user are cut into ranges of
    # at least 320 / 3 rows.
    assert (result.files_before, result.files_after, result.rows) == (8, 2, 320)
    users = sorted(
        tuple(sorted({u or "~" for u in pq.ParquetFile(p).read(columns=["user_id"]).column(0).to_pylist()}))
        for p in parquet_on_disk(tmp_path)
    )
    assert users == [("a", "b"), ("c", "~")]  # nulls with the last range
    assert all(pq.ParquetFile(p).metadata.num_rows >= 100 for p in parquet_on_disk(tmp_path))
    assert pq.ParquetFile(parquet_on_disk(tmp_path)[0]).metadata.row_group(0).num_rows == 16
    assert multiset(tmp_path, "prediction_id, user_id") == collections.Counter(
        (i, u) for u, ids in w.ids.items() for i in ids
    )
    assert _compact.compact(tmp_path, target_rows=100).files_before == 0

    # New small files merge among themselves and with small compacted files, never with full ones.
    full = set(parquet_on_disk(tmp_path))
    w = write_batches(tmp_path, [rows(40, ["a"], start=1000 + 40 * b) for b in range(2)], written=w)
    result = _compact.compact(tmp_path, target_rows=100)
    assert (result.files_before, result.files_after, result.rows) == (2, 1, 80)
    assert _compact.compact(tmp_path, target_rows=100).files_before == 0  # one small compacted file: left
    w = write_batches(tmp_path, [rows(40, ["b"], start=2000)], written=w)
    result = _compact.compact(tmp_path, target_rows=100)
    assert (result.files_before, result.files_after, result.rows) == (2, 1, 120)
    assert full <= set(parquet_on_disk(tmp_path)) and len(parquet_on_disk(tmp_path)) == 3
    assert multiset(tmp_path) == collections.Counter((i,) for i in w.all_ids())


def test_compact_ranges_keep_schema_evolution_and_skewed_users(tmp_path):
    early = [rows(30, ["big", "big", "big", "x", None], start=30 * b) for b in range(3)]
    late = [rows(30, ["big", "y", "z"], start=100 + 30 * b, extra=1.5) for b in range(3)]
    w = write_batches(tmp_path, early + late)
    result = _compact.compact(tmp_path, target_rows=40)
    assert result.rows == 180 and result.files_after >= 2
    assert multiset(tmp_path, "prediction_id, user_id") == collections.Counter(
        (i, u) for u, ids in w.ids.items() for i in ids
    )
    got = dict(rows_of(tmp_path, "features.i, features.extra"))
    assert all(got[i] is None for i in range(90)) and all(got[i] == 1.5 for i in range(100, 190))
    # One user's rows are never split across files.
    holders = [
        p
        for p in parquet_on_disk(tmp_path)
        if "big" in pq.ParquetFile(p).read(columns=["user_id"]).column(0).to_pylist()
    ]
    assert len(holders) == 1


def test_compact_keeps_schema_evolution_and_separates_incompatible_files(tmp_path):
    early = [rows(10, ["a", "b"], start=10 * b, score=1) for b in range(3)]
    late = [rows(10, ["a", "b"], start=100 + 10 * b, score=2, extra="x") for b in range(3)]
    w = write_batches(tmp_path, early + late)
    # The same feature as a string: Arrow cannot unify int64 and string, so its own group.
    w = write_batches(tmp_path, [rows(10, ["c"], start=200 + 10 * b, score="high") for b in range(2)], written=w)
    assert len(parquet_on_disk(tmp_path)) == 8

    result = _compact.compact(tmp_path)

    assert result.files_before == 8 and result.files_after == 2
    files = parquet_on_disk(tmp_path)
    schemas = [pq.read_schema(p) for p in files]
    feature_types = sorted(str(s.field("features").type.field("score").type) for s in schemas)
    assert feature_types == ["int64", "string"]
    evolved = next(s for s in schemas if s.field("features").type.field("score").type == pa.int64())
    assert evolved.field("features").type.get_field_index("extra") >= 0
    got = dict(rows_of(tmp_path, "features.i, features.extra"))
    assert all(got[i] is None for i in range(30)) and all(got[i] == "x" for i in range(100, 130))
    assert multiset(tmp_path) == collections.Counter((i,) for i in w.all_ids())
    assert _compact.compact(tmp_path).files_before == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(
        st.lists(st.sampled_from(["a", "b", "bb", "c", "é", "z", None]), min_size=1, max_size=40),
        min_size=2,
        max_size=8,
    ),
    target=st.integers(1, 60),
)
def test_compact_ranges_partition_every_distribution(tmp_path_factory, files, target):
    """Any mix of users and nulls: rows kept exactly, files sorted, user ranges disjoint,
    and every output holds at least ``target_rows`` rows when the partition does."""
    root = tmp_path_factory.mktemp("ranges")
    part = root / "predictions" / "model=m" / "date=2026-01-02"
    part.mkdir(parents=True)
    n = 0
    for k, users in enumerate(files):
        pq.write_table(
            pa.table(
                {
                    "prediction_id": [f"p{n + i:05d}" for i in range(len(users))],
                    "ts": pa.array(
                        [1_767_312_000_000_000 + (n + i) * 7 % 50 for i in range(len(users))], pa.timestamp("us", "UTC")
                    ),
                    "user_id": pa.array(users, pa.string()),
                    "features": [{"i": n + i} for i in range(len(users))],
                }
            ),
            part / f"host-1-{k:04x}-0.parquet",
        )
        n += len(users)
    expected = multiset(root, "prediction_id, user_id")
    _compact.compact(root, target_rows=target, row_group_rows=4)
    assert multiset(root, "prediction_id, user_id") == expected
    spans = []
    for path in parquet_on_disk(root):
        t = pq.ParquetFile(path).read(columns=["user_id", "ts"]).to_pylist()
        key = [(r["user_id"] is None, r["user_id"] or "", r["ts"]) for r in t]
        assert key == sorted(key)
        if n >= target:
            assert len(t) >= target
        spans.append((key[0][:2], key[-1][:2]))
    spans.sort()
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # disjoint, so one user is in one file


def test_compact_leaves_files_whose_segment_is_still_in_the_wal(tmp_path):
    write_batches(tmp_path, [rows(5, ["a"], start=5 * b) for b in range(4)])
    files = parquet_on_disk(tmp_path)
    # A crash between a seal's rename and the segment's unlink: recovery would write this
    # file again, so a compacted copy of its rows would count twice.
    stem = os.path.basename(files[0])[: -len(".parquet")].rsplit("-", 1)[0]
    segment = tmp_path / "_wal" / f"{stem}.arrows"
    segment.write_bytes(b"PLWAL\x00\x01\n")
    result = _compact.compact(tmp_path)
    assert result.skipped_files == 1 and result.files_before == 3
    assert files[0] in parquet_on_disk(tmp_path)
    segment.unlink()
    assert _compact.compact(tmp_path).files_before == 2
    assert len(parquet_on_disk(tmp_path)) == 1 and len(rows_of(tmp_path)) == 20


def test_compact_filters_by_model_and_date(tmp_path):
    for model in ("m1", "m2"):
        write_batches(tmp_path, [rows(5, ["a"]) for _ in range(3)], model=model, label_pid_every=2)
    today = dt.datetime.now(dt.UTC).date()
    assert _compact.compact(tmp_path, before=today).files_before == 0
    result = _compact.compact(tmp_path, model="m1")
    assert result.partitions == (f"predictions/model=m1/date={today}",)
    assert len(list((tmp_path / "predictions" / "model=m2").rglob("*.parquet"))) == 3
    assert len(parquet_on_disk(tmp_path, "labels")) == 6
    result = _compact.compact(tmp_path, before=today + dt.timedelta(days=1))
    assert len(result.partitions) == 2  # m2 and the labels
    with pytest.raises(ValueError):
        _compact.compact(tmp_path, min_files=0)


def test_second_operation_waits_then_raises_a_clear_error(tmp_path):
    write_batches(tmp_path, [rows(3, ["a"]) for _ in range(2)])
    with maint.locked(str(tmp_path), 0):
        t0 = time.monotonic()
        with pytest.raises(MaintenanceBusyError, match=rf"pid {os.getpid()}.*lock_timeout_s"):
            _compact.compact(tmp_path, lock_timeout_s=0.3)
        assert time.monotonic() - t0 >= 0.3
        # Store open during a live operation: its manifest is in flight, not interrupted.
        (tmp_path / "_maintenance" / "x.json").write_text(
            json.dumps({"op": "compact", "replaces": [], "by": ["predictions/model=m/date=2026-01-01/nope.parquet"]})
        )
        assert maint.finish_interrupted(str(tmp_path)) == []
        assert (tmp_path / "_maintenance" / "x.json").exists()
    assert maint.finish_interrupted(str(tmp_path)) == ["compact x: rolled back (0 new file(s) deleted)"]
    assert _compact.compact(tmp_path).files_before == 2


def test_finish_interrupted_leaves_a_store_without_maintenance_untouched(tmp_path):
    write_batches(tmp_path, [rows(3, ["a"])])
    assert maint.finish_interrupted(str(tmp_path)) == []
    assert not (tmp_path / "_maintenance").exists()
    # A manifest that names files outside the tables is not ours: nothing is deleted on its word.
    (tmp_path / "_maintenance").mkdir()
    (tmp_path / "_maintenance" / "y.json").write_text(
        json.dumps({"op": "compact", "replaces": ["predlog.json"], "by": []})
    )
    assert maint.finish_interrupted(str(tmp_path)) == []
    assert (tmp_path / "predlog.json").exists() and (tmp_path / "_maintenance" / "y.json").exists()


# ---------------------------------------------------------------------------- readers vs the protocol


def test_a_listing_taken_before_the_swap_never_loses_rows(tmp_path):
    """A reader lists a partition, then maintenance swaps files, then the reader reads the
    manifests: it must see every row once, or a file that is gone (and retry)."""
    write_batches(tmp_path, [rows(10, ["a", "b"], start=10 * b) for b in range(4)])
    part = os.path.dirname(parquet_on_disk(tmp_path)[0])
    rel_dir = os.path.relpath(part, tmp_path)

    def listing() -> list[str]:
        return [f"{rel_dir}/{n}" for n in os.listdir(part) if n.endswith(".parquet") and not n.startswith(".")]

    before = listing()
    seen: list[tuple[str, str, int | None]] = []

    def hook(step: str) -> None:
        for name, rel in (("before", before), ("now", listing())):
            files = visible(str(tmp_path), rel)
            if all(os.path.exists(f) for f in files):
                seen.append((step, name, sum(pq.ParquetFile(f).metadata.num_rows for f in files)))
            else:
                seen.append((step, name, None))  # a vanished file: the reader re-lists and retries

    _compact.compact(tmp_path, target_rows=15, _step_hook=hook)
    assert {s for s, _, _ in seen} >= {"staged", "manifest", "rename:0", "renamed", "delete:0", "deleted", "done"}
    wrong = [s for s in seen if s[2] not in (None, 40)]
    assert wrong == []
    assert any(s[2] is None for s in seen)  # the retry case does happen


# ---------------------------------------------------------------------------- crashes


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Written]:
    """A store with several files per partition, labels, and an old date partition."""
    root = tmp_path_factory.mktemp("template")
    batches = [rows(12, ["alice", "bob", "carol"], start=12 * b) for b in range(4)]
    batches.append([("alice", f"only{i}", {"i": 900 + i}) for i in range(6)])  # an alice-only file
    w = write_batches(root, batches, label_pid_every=4, label_rid_every=5)
    old = write_batches(root, [rows(7, ["dave"], start=500 + 7 * b) for b in range(2)], label_pid_every=3)
    for path in parquet_on_disk(root) + parquet_on_disk(root, "labels"):
        if _holds_any(path, set(old.ids["dave"])):
            move_to_date(root, os.path.relpath(path, root), 40)
    return root, w


def _holds_any(path: str, ids: set[str]) -> bool:
    t = pq.ParquetFile(path).read(columns=["prediction_id"])
    return bool(set(t.column(0).to_pylist()) & ids)


def _copy(template: tuple[Path, Written], dst: Path) -> Path:
    root = dst / "store"
    shutil.copytree(template[0], root)
    return root


COMPACT_STEPS = ["staged", "manifest", "rename:0", "rename:1", "renamed", "delete:0", "deleted", "done"]
FORGET_STEPS = ["staged", "manifest", "rename:0", "renamed", "delete:0", "delete:2", "deleted", "done"]
RETAIN_STEPS = ["staged", "manifest", "delete:0", "deleted", "done"]


@pytest.mark.slow
@pytest.mark.parametrize("step", COMPACT_STEPS)
def test_compaction_killed_at_each_step(template, tmp_path, step):
    root = _copy(template, tmp_path)
    preds = multiset(root, "prediction_id, user_id, features.i")
    labels = multiset(root, "prediction_id, request_id", "labels")
    code = fork_run(lambda hook: _compact.compact(root, target_rows=15, _step_hook=hook), step)
    assert code == 17
    # Readers, before anyone cleans up: every row exactly once.
    assert multiset(root, "prediction_id, user_id, features.i") == preds
    assert multiset(root, "prediction_id, request_id", "labels") == labels
    lines = maint.finish_interrupted(str(root))
    assert len(lines) == (0 if step == "done" else 1)
    assert_settled(root)
    assert multiset(root, "prediction_id, user_id, features.i") == preds
    assert multiset(root, "prediction_id, request_id", "labels") == labels
    _compact.compact(root, target_rows=15)
    assert multiset(root, "prediction_id, user_id, features.i") == preds
    assert multiset(root, "prediction_id, request_id", "labels") == labels
    assert _compact.compact(root, target_rows=15).files_before == 0


@pytest.mark.slow
@pytest.mark.parametrize("step", FORGET_STEPS)
def test_forget_user_killed_at_each_step(template, tmp_path, step):
    root = _copy(template, tmp_path)
    others = collections.Counter(r for r in rows_of(root, "prediction_id, user_id") if r[1] != "alice")
    alice = len(template[1].ids["alice"])
    assert alice == 22

    def check() -> None:
        users = collections.Counter(u for _, u in rows_of(root, "prediction_id, user_id"))
        assert users["alice"] in (0, alice)  # one partition: all of alice's rows or none
        assert collections.Counter(r for r in rows_of(root, "prediction_id, user_id") if r[1] != "alice") == others
        assert sum(multiset(root, "prediction_id").values()) == len(multiset(root, "prediction_id"))

    code = fork_run(lambda hook: _forget.forget_user(root, "alice", wait_live_s=0, _step_hook=hook), step)
    assert code == 17
    check()
    maint.finish_interrupted(str(root))
    assert_settled(root)
    check()
    result = _forget.forget_user(root, "alice", wait_live_s=0)
    check()
    assert "alice" not in decoded_text(root)
    assert result.prediction_rows in (0, alice)


@pytest.mark.slow
@pytest.mark.parametrize("step", RETAIN_STEPS)
def test_retention_killed_at_each_step(template, tmp_path, step):
    root = _copy(template, tmp_path)
    old = collections.Counter(u for (u,) in rows_of(root, "user_id"))["dave"]
    assert old == 14
    code = fork_run(lambda hook: _retain.retain(root, 7, _step_hook=hook), step)
    assert code == 17
    for _ in range(2):
        users = collections.Counter(u for (u,) in rows_of(root, "user_id"))
        assert users["dave"] == (old if step == "staged" else 0)
        assert users["alice"] == 22
        maint.finish_interrupted(str(root))
    assert_settled(root)
    _retain.retain(root, 7)
    assert collections.Counter(u for (u,) in rows_of(root, "user_id"))["dave"] == 0
    week_ago = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=7)
    assert all(dt.date.fromisoformat(p.split("date=")[1][:10]) >= week_ago for p in parquet_on_disk(root))


@pytest.mark.slow
def test_compaction_killed_at_random_moments(tmp_path):
    """kill -9 of a compacting process at arbitrary instants, then finish_interrupted."""
    root = tmp_path / "store"
    for model in ("m1", "m2", "m3", "m4"):
        write_batches(root, [rows(20, ["a", "b", "c", None], start=20 * b) for b in range(6)], model=model)
    expected = multiset(root, "prediction_id, user_id")
    script = textwrap.dedent("""
        import sys, time
        import pyarrow.parquet
        from predlog.replay import _compact
        print("go", flush=True)
        t0 = time.monotonic()
        _compact.compact(sys.argv[1], target_rows=int(sys.argv[2]), row_group_rows=8)
        print("done", time.monotonic() - t0, flush=True)
    """)

    def run(store: Path, target: int, kill_after: float | None) -> str:
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(store), str(target)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "go"
        if kill_after is not None:
            time.sleep(kill_after)
            child.send_signal(signal.SIGKILL)
        return child.communicate()[0]

    # How long a whole run takes here, on a copy, so the kills land inside it.
    shutil.copytree(root, tmp_path / "probe")
    seconds = float(run(tmp_path / "probe", 7, None).split()[1])
    rng = random.Random(7)
    finished: list[str] = []
    for target in (7, 11, 13, 17):
        run(root, target, rng.uniform(0.1, 0.9) * seconds)
        assert multiset(root, "prediction_id, user_id") == expected
        finished += maint.finish_interrupted(str(root))
        assert_settled(root)
        assert multiset(root, "prediction_id, user_id") == expected
    _compact.compact(root)
    assert multiset(root, "prediction_id, user_id") == expected
    assert len(parquet_on_disk(root)) == 4
    print(f"run={seconds:.3f}s finished={finished}")


# ---------------------------------------------------------------------------- retain


def test_retain_drops_whole_old_partitions(tmp_path):
    write_batches(tmp_path, [rows(10, ["a", "b"], start=10 * b) for b in range(6)], label_pid_every=2)
    preds, labels = parquet_on_disk(tmp_path), parquet_on_disk(tmp_path, "labels")
    ages = [40, 40, 10, 1]
    for path, days_back in zip(preds, ages):
        move_to_date(tmp_path, os.path.relpath(path, tmp_path), days_back)
    for path, days_back in zip(labels, ages):
        move_to_date(tmp_path, os.path.relpath(path, tmp_path), days_back)
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    d40, d10, d1 = (str(today - dt.timedelta(days=k)) for k in (40, 10, 1))

    dry = _retain.retain(store_of(tmp_path), 7, now=now, dry_run=True)
    assert dry.dates == (d40, d10) and dry.dry_run
    assert dry.prediction_rows == 30 and dry.label_rows == 15 and dry.files == 6
    assert len(rows_of(tmp_path)) == 60

    result = _retain.retain(store_of(tmp_path), 7, now=now)
    assert (result.dates, result.prediction_rows, result.label_rows, result.files) == ((d40, d10), 30, 15, 6)
    assert result.cutoff == today - dt.timedelta(days=7) and result.bytes == dry.bytes > 0
    assert sorted(result.partitions) == sorted(
        [f"predictions/model=m/date={d}" for d in (d40, d10)] + [f"labels/date={d}" for d in (d40, d10)]
    )
    assert len(rows_of(tmp_path)) == 30 and len(rows_of(tmp_path, "label", "labels")) == 15
    assert not (tmp_path / "predictions" / "model=m" / f"date={d40}").exists()
    assert_settled(tmp_path)

    # days=0 keeps today only; today itself is never dropped.
    assert _retain.retain(tmp_path, 0, now=now).dates == (d1,)
    assert _retain.retain(tmp_path, 0, now=now).dates == ()
    assert len(rows_of(tmp_path)) == 20
    # A naive ``now`` is UTC; relative to a later day, today's partition is old.
    later = _retain.retain(tmp_path, 3, now=(now + dt.timedelta(days=5)).replace(tzinfo=None))
    assert later.dates == (str(today),) and rows_of(tmp_path) == []
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError):
            _retain.retain(tmp_path, bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- forget_user


def _forget_store(root: Path) -> Written:
    mixed = [rows(15, ["alice", "bob", "carol"], start=15 * b) for b in range(4)]
    w = write_batches(root, mixed[:2], label_pid_every=3, label_rid_every=4)
    _compact.compact(root)  # alice in a compacted, sorted file ...
    w = write_batches(root, mixed[2:], written=w, label_pid_every=3, label_rid_every=4)  # ... and in sealed ones
    w = write_batches(
        root, [[("alice", f"solo{i:03d}", {"i": 700 + i}) for i in range(5)]], written=w, label_pid_every=2
    )
    return w


def test_forget_user_leaves_no_byte_of_the_user(tmp_path):
    w = _forget_store(tmp_path)
    alice_ids = set(w.ids["alice"])
    secrets = [b"alice", *(r.encode() for r in w.request_ids["alice"]), *(p.encode() for p in alice_ids)]
    others = multiset(tmp_path, "prediction_id, user_id, request_id, features.i")
    others = collections.Counter({k: v for k, v in others.items() if k[1] != "alice"})
    alice_labels = sum(1 for u in w.labels_by_pid.values() if u == "alice") + sum(
        1 for u in w.labels_by_rid.values() if u == "alice"
    )
    labels_kept = multiset(tmp_path, "prediction_id, request_id, label", "labels")
    labels_kept = collections.Counter(
        {k: v for k, v in labels_kept.items() if k[0] not in alice_ids and k[1] not in w.request_ids["alice"]}
    )
    assert alice_labels > 0 and sum(labels_kept.values()) > 0
    # The raw bytes do show alice before (statistics are stored uncompressed).
    assert any(b"alice" in data for _, data in every_byte(tmp_path))

    result = _forget.forget_user(store_of(tmp_path), "alice", wait_live_s=0)

    assert result.prediction_rows == len(alice_ids) == 25
    assert result.label_rows == alice_labels
    assert result.files_deleted >= 2  # the alice-only predictions file and its labels file
    assert result.files_rewritten >= 3 and result.pending_live == () and result.complete
    assert "alice" not in repr(result)
    leaks = [(path, s) for path, data in every_byte(tmp_path) for s in secrets if s in data]
    assert leaks == []
    text = decoded_text(tmp_path)
    assert not [s for s in secrets if s.decode() in text]
    rest = multiset(tmp_path, "prediction_id, user_id, request_id, features.i")
    assert rest == others
    assert multiset(tmp_path, "prediction_id, request_id, label", "labels") == labels_kept
    assert_settled(tmp_path)
    for path in parquet_on_disk(tmp_path) + parquet_on_disk(tmp_path, "labels"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    again = _forget.forget_user(tmp_path, "alice", wait_live_s=0)
    assert (again.prediction_rows, again.label_rows, again.files_rewritten, again.files_deleted) == (0, 0, 0, 0)
    with pytest.raises(ValueError):
        _forget.forget_user(tmp_path, "")


def test_forget_user_with_hashed_ids(tmp_path):
    w = write_batches(tmp_path, [rows(12, ["alice", "bob"]) for _ in range(2)], hash_fields=["user_id"], hash_key="k1")
    stored = _forget.hash_user_id("alice", "k1")
    assert w.ids["alice"] and collections.Counter(u for (u,) in rows_of(tmp_path, "user_id"))[stored] == 12
    assert _forget.forget_user(tmp_path, "alice", wait_live_s=0).prediction_rows == 0  # the clear id is not stored
    result = _forget.forget_user(tmp_path, "alice", hash_key=b"k1", wait_live_s=0)
    assert result.prediction_rows == 12 and result.user_id == stored
    assert not [p for p, data in every_byte(tmp_path) if stored.encode() in data]
    assert collections.Counter(u for (u,) in rows_of(tmp_path, "user_id")) == {_forget.hash_user_id("bob", "k1"): 12}


LIVE_WRITER = textwrap.dedent("""
    import sys, time
    import predlog

    store, max_age = sys.argv[1], float(sys.argv[2])
    rec = predlog.Recorder(store=store, model="m", version="1", flush_interval_s=0.05, segment_max_age_s=max_age)
    predict = rec.capture(lambda x: 1.0)

    def call(user, i):
        with predlog.context(user_id=user, request_id=f"live{i:04d}"):
            predict({"i": i})
        return predlog.last_prediction_id()

    for i in range(5):
        call("alice", i)
    call("bob", 5)
    assert rec.flush(timeout_s=10)              # sealed: Parquet
    pid = call("alice", 10)                       # live: only in the open segment
    call("alice", 11)
    call("bob", 12)
    rec.log_label(1, prediction_id=pid)
    # Not flush(): that would seal the segment. Wait until the rows are in it instead.
    while rec.stats()["written"] < 9 or rec.stats()["labels"] < 1:
        time.sleep(0.01)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "flush":
            assert rec.flush(timeout_s=10)
            print("flushed", flush=True)
    rec.shutdown()
""")


@pytest.mark.slow
def test_forget_user_reports_rows_in_a_live_segment_then_erases_them(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(tmp_path), "3600"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        first = _forget.forget_user(tmp_path, "alice", wait_live_s=0.3)
        assert first.prediction_rows == 5 and not first.complete
        [segment] = first.pending_live
        assert segment.startswith(str(tmp_path / "_wal")) and os.path.exists(segment)
        assert first.waited_s >= 0.3

        child.stdin.write("flush\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "flushed"
        second = _forget.forget_user(tmp_path, "alice", wait_live_s=0.3)
        assert (second.prediction_rows, second.label_rows, second.pending_live) == (2, 1, ())
    finally:
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    assert collections.Counter(u for (u,) in rows_of(tmp_path, "user_id")) == {"bob": 2}
    assert rows_of(tmp_path, "label", "labels") == []
    assert not [p for p, data in every_byte(tmp_path) if b"alice" in data]


@pytest.mark.slow
def test_forget_user_waits_for_a_live_writer_to_seal(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(tmp_path), "1.5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        result = _forget.forget_user(tmp_path, "alice", wait_live_s=20)
        assert (result.prediction_rows, result.label_rows, result.pending_live) == (7, 1, ())
        assert 0.2 < result.waited_s < 20
    finally:
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    assert collections.Counter(u for (u,) in rows_of(tmp_path, "user_id")) == {"bob": 2}
    assert not [p for p, data in every_byte(tmp_path) if b"alice" in data]


def test_forget_user_seals_segments_of_dead_writers_first(tmp_path):
    write_batches(tmp_path, [rows(4, ["alice", "bob"])])
    # A dead writer's segment: rows that reached the WAL but were never sealed.
    from predlog._segment import KIND_PREDICTIONS, SegmentWriter, encode_frame

    table = pq.ParquetFile(parquet_on_disk(tmp_path)[0]).read()
    table = table.set_column(0, "prediction_id", pa.array([f"dead-{i}" for i in range(table.num_rows)]))
    table = table.append_column("model", pa.array(["m"] * table.num_rows))  # frames carry it; files do not
    seg = SegmentWriter(str(tmp_path / "_wal" / "host-1-dead.arrows"))
    seg.append(encode_frame(KIND_PREDICTIONS, table), table.num_rows)
    seg.close()  # lock released: the writer is gone
    result = _forget.forget_user(tmp_path, "alice", wait_live_s=0)
    assert result.segments_sealed == 1 and result.prediction_rows == 4 and result.complete
    assert sorted(u for (u,) in rows_of(tmp_path, "user_id")) == ["bob"] * 4


def test_forget_user_leaves_a_file_whose_segment_is_being_sealed(tmp_path):
    import fcntl

    write_batches(tmp_path, [rows(4, ["alice", "bob"], start=4 * b) for b in range(2)])
    first = parquet_on_disk(tmp_path)[0]
    stem = os.path.basename(first)[: -len(".parquet")].rsplit("-", 1)[0]
    segment = tmp_path / "_wal" / f"{stem}.arrows"
    segment.write_bytes(b"PLWAL\x00\x01\n")
    fd = os.open(segment, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live sealer between its rename and its unlink
    try:
        result = _forget.forget_user(tmp_path, "alice", wait_live_s=0)
        assert result.pending_live == (str(segment),) and result.prediction_rows == 2
        assert first in parquet_on_disk(tmp_path)
    finally:
        os.close(fd)
    result = _forget.forget_user(tmp_path, "alice", wait_live_s=0)  # the segment's writer is gone
    assert result.complete and result.prediction_rows == 2 and result.segments_sealed == 1
    assert sorted(u for (u,) in rows_of(tmp_path, "user_id")) == ["bob"] * 4


# ---------------------------------------------------------------------------- under load

WRITER = textwrap.dedent("""
    import json, sys, time
    import predlog

    store, seconds = sys.argv[1], float(sys.argv[2])
    rec = predlog.Recorder(store=store, model="m", version="1", flush_interval_s=0.05)
    predict = rec.capture(lambda x: x["i"] * 2)
    print("started", flush=True)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        with predlog.context(user_id=f"u{i % 7}", request_id=f"w{i}"):
            predict({"i": i, "f": i * 0.5})
        i += 1
        if i % 40 == 0:
            rec.flush(timeout_s=10)   # many small files, as many processes would make
    assert rec.shutdown(timeout_s=30)
    print(json.dumps(rec.stats()), flush=True)
""")


class Readers:
    """Threads that count rows over the listed files in a loop, as a notebook would."""

    def __init__(self, root: Path, n: int = 2, old_before: dt.datetime | None = None) -> None:
        self.root = str(root)
        self.old_before = old_before
        self.stop = threading.Event()
        self.reads: list[list[tuple[int, int, int]]] = [[] for _ in range(n)]
        self.retries = 0
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(n)]

    def __enter__(self) -> Readers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, k: int) -> None:
        con = duckdb.connect()
        cutoff = self.old_before or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        while not self.stop.is_set():
            files = prediction_files(self.root)
            if not files:
                continue
            try:
                row = con.execute(
                    "select count(*), count(distinct prediction_id), count(*) filter (where ts < ?) "
                    "from read_parquet(?, union_by_name=true)",
                    [cutoff, files],
                ).fetchone()
            except duckdb.IOException as exc:
                if "No files found" in str(exc) or "No such file" in str(exc):
                    self.retries += 1  # a file swapped away after we listed it: list again
                    continue
                self.errors.append(exc)
                return
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                return
            assert row is not None
            self.reads[k].append((int(row[0]), int(row[1]), int(row[2])))


def _start_writer(root: Path, seconds: float) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "started"
    return child


def _writer_stats(child: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.slow
def test_compaction_during_writes_and_reads(tmp_path):
    child = _start_writer(tmp_path, 3.0)
    compactions = []
    with Readers(tmp_path) as readers:
        while child.poll() is None:
            result = _compact.compact(tmp_path, row_group_rows=256)
            if result.files_before:
                compactions.append(result)
            time.sleep(0.05)
        stats = _writer_stats(child)
        time.sleep(0.2)  # let the readers see the final state too
    assert readers.errors == []
    for reads in readers.reads:
        assert len(reads) >= 5
        assert all(n == distinct for n, distinct, _ in reads)  # never a row twice
        counts = [n for n, _, _ in reads]
        assert counts == sorted(counts)  # never a row missing that was seen before
    assert len(compactions) >= 2
    assert stats["captured"] == stats["written"] == stats["rows_written"]
    assert len(rows_of(tmp_path)) == len(multiset(tmp_path)) == stats["rows_written"]
    _compact.compact(tmp_path)
    assert len(parquet_on_disk(tmp_path)) == 1
    assert len(multiset(tmp_path)) == stats["rows_written"]
    print(f"compactions={len(compactions)} reads={[len(r) for r in readers.reads]} retries={readers.retries}")


@pytest.mark.slow
def test_retention_during_writes_and_reads(tmp_path):
    old = write_batches(tmp_path, [rows(25, ["x", "y"], start=25 * b) for b in range(4)])
    for path in parquet_on_disk(tmp_path):
        move_to_date(tmp_path, os.path.relpath(path, tmp_path), 30 + len(path) % 3)
    n_old = len(old.all_ids())
    today = dt.datetime.now(dt.UTC)
    child = _start_writer(tmp_path, 2.5)
    removed = None
    with Readers(tmp_path, old_before=today - dt.timedelta(days=10)) as readers:
        deadline = time.monotonic() + 1.0
        while child.poll() is None:
            if removed is None and time.monotonic() > deadline:
                removed = _retain.retain(tmp_path, 7)
            _compact.compact(tmp_path)
            time.sleep(0.05)
        stats = _writer_stats(child)
        time.sleep(0.2)
    assert removed is not None and removed.prediction_rows == n_old
    assert readers.errors == []
    for reads in readers.reads:
        assert all(n == distinct for n, distinct, _ in reads)
        olds = [o for _, _, o in reads]
        assert set(olds) <= {0, n_old}  # old partitions vanish all at once
        assert olds == sorted(olds, reverse=True)  # and never come back
        fresh = [n - o for n, _, o in reads]
        assert fresh == sorted(fresh)
    assert any(o == n_old for r in readers.reads for _, _, o in r)
    assert len(multiset(tmp_path)) == stats["rows_written"] == len(rows_of(tmp_path))


# ---------------------------------------------------------------------------- through Store


def test_store_delegates_and_finishes_interrupted_operations_on_open(tmp_path):
    from predlog.replay import Store

    w = write_batches(tmp_path, [rows(10, ["alice", "bob"], start=10 * b) for b in range(4)], label_pid_every=3)
    assert fork_run(lambda hook: _compact.compact(tmp_path, target_rows=15, _step_hook=hook), "rename:0") == 17
    assert len(manifests(str(tmp_path))) == 1
    with Store(tmp_path) as s:
        assert manifests(str(tmp_path)) == []  # rolled back when the store opened
        assert_settled(tmp_path)
        result = s.compact()
        assert isinstance(result, _compact.CompactResult) and result.files_before == 8
        assert len(s.predictions(user_id="bob")) == 20
        forgot = s.forget_user("alice", wait_live_s=0)
        assert isinstance(forgot, _forget.ForgetResult) and forgot.prediction_rows == 20
        assert len(s.predictions(user_id="alice")) == 0 and len(s.predictions()) == 20
        kept = s.retain(days=30)
        assert isinstance(kept, _retain.RetainResult) and kept.files == 0
    assert sorted(i for (i,) in rows_of(tmp_path)) == sorted(w.ids["bob"])
