"""The reading side refuses paths that lead out of the store, and cleans up after dead sealers."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

import predlog
from predlog.replay import Store, UnknownModelError


def write_store(root: pathlib.Path, users: list[str], model: str = "m") -> None:
    rec = predlog.Recorder(store=str(root), model=model, tracing=False, metrics=False)
    f = rec.capture(lambda x: x["a"] * 2)
    for i, user in enumerate(users):
        with predlog.context(user_id=user):
            f({"a": i})
        assert rec.flush(timeout_s=30)  # one file per call
    rec.shutdown()


def test_compact_model_cannot_name_another_store(tmp_path: pathlib.Path) -> None:
    write_store(tmp_path / "a", ["u1", "u2"])
    write_store(tmp_path / "victim", ["v1", "v2", "v3"])
    before = sorted(p.name for p in (tmp_path / "victim").rglob("*.parquet"))
    with Store(tmp_path / "a") as s:
        for bad in ("../../../victim/predictions/model=m", "m/../m", "", "nope"):
            with pytest.raises((ValueError, UnknownModelError)):
                s.compact(model=bad)
    assert sorted(p.name for p in (tmp_path / "victim").rglob("*.parquet")) == before


def test_symlinked_files_are_not_read(tmp_path: pathlib.Path) -> None:
    write_store(tmp_path / "a", ["u1"])
    write_store(tmp_path / "outside", ["secret"])
    outside = next((tmp_path / "outside").rglob("*.parquet"))
    partition = next((tmp_path / "a").rglob("*.parquet")).parent
    os.symlink(outside, partition / "planted.parquet")
    with Store(tmp_path / "a") as s:
        assert list(s.predictions()["user_id"]) == ["u1"]


def test_forget_user_removes_a_dead_sealers_temp_file(tmp_path: pathlib.Path) -> None:
    write_store(tmp_path / "a", ["erase-me", "keep"])
    some = next((tmp_path / "a").rglob("*.parquet"))
    # What a writer killed mid-seal leaves: a hidden partial copy of a file it was sealing.
    # Its segment is gone (sealed again since), so the copy can never be finished.
    stale = some.parent / f".{some.stem.rsplit('-', 1)[0]}-0.parquet.999999.tmp"
    shutil.copy(some, stale)
    with Store(tmp_path / "a") as s:
        result = s.forget_user("erase-me")
        assert result.prediction_rows == 1
        assert list(s.predictions()["user_id"]) == ["keep"]
    assert not stale.exists()
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            assert b"erase-me" not in path.read_bytes(), path
