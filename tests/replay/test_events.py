"""Store.events over event files written by real canaries, and the rest of the store beside them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import flush

import predlog
from predlog.replay import FilterError, Store, TimeBoundError

COLUMNS = [
    "ts",
    "model",
    "kind",
    "baseline_version",
    "candidate_version",
    "share",
    "state",
    "shadow",
    "host",
    "pid",
    "reason",
]


def canary(rec: predlog.Recorder, model: str = "m", **options: Any) -> predlog.Canary:
    v1 = rec.capture(model=model, version="1")(lambda x: ("v1", x))
    v2 = rec.capture(model=model, version="2")(lambda x: ("v2", x))
    return rec.canary(v1, v2, **options)


def move_event(store: Path, date: str, ts: str) -> None:
    """Give the newest event file another date (as if written on that day)."""
    path = max((store / "events").rglob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    event = json.loads(path.read_text())
    event["ts"] = ts
    target = store / "events" / f"date={date}"
    target.mkdir(exist_ok=True)
    (target / path.name).write_text(json.dumps(event))
    path.unlink()


def test_a_store_without_events_gives_an_empty_frame_with_the_columns(rec, store_dir):
    rec.capture(lambda x: 1)(0)
    flush(rec)
    with Store(store_dir) as s:
        ev = s.events()
    assert list(ev.columns) == COLUMNS and ev.empty
    assert str(ev["ts"].dtype) == "datetime64[us, UTC]"


def test_filters_by_model_kind_and_time(rec, store_dir):
    a = canary(rec, "a")
    move_event(store_dir, "2026-01-01", "2026-01-01T10:00:00.000001+00:00")
    b = canary(rec, "b", shadow=True)
    a.promote(reason="good")
    b.rollback()
    with Store(store_dir) as s:
        assert list(s.events()["model"]) == ["a", "b", "a", "b"]
        assert list(s.events("a")["kind"]) == ["start", "promote"]
        assert list(s.events(["a", "b"], kind="rollback")["model"]) == ["b"]
        assert s.events("b")["shadow"].tolist() == [True, False]
        old = s.events(end="2026-01-02")
        assert old["ts"].tolist() == [dt.datetime(2026, 1, 1, 10, 0, 0, 1, tzinfo=dt.UTC)]
        assert len(s.events(start="2026-01-02")) == 3
        with pytest.raises(FilterError, match="pass one or more of start, share, promote, rollback"):
            s.events(kind="promoted")
        with pytest.raises(FilterError):
            s.events(model=3)  # type: ignore[arg-type]
        with pytest.raises(TimeBoundError):
            s.events(start="yesterday")


def test_a_corrupt_event_file_is_skipped_with_a_warning(rec, store_dir):
    canary(rec).promote()
    day = next((store_dir / "events").iterdir())
    (day / "vm-1-bad-0.json").write_text("{not json")
    (day / "vm-1-bad-1.json").write_text(json.dumps({"ts": "2026-01-01T00:00:00+00:00", "model": "m"}))
    (day / ".vm-1-tmp-2.json.tmp").write_text("{")  # an unfinished write: not listed
    with Store(store_dir) as s, pytest.warns(RuntimeWarning, match="skipped the event file") as caught:
        ev = s.events()
    assert list(ev["kind"]) == ["start", "promote"]
    assert len(caught) == 2 and "remove it" in str(caught[0].message)


def test_the_rest_of_the_store_works_beside_events(rec, store_dir):
    router = canary(rec, share=0.5)
    for i in range(20):
        with predlog.context(user_id=f"u{i}"):
            router({"i": i})
    router.promote()
    flush(rec)
    with Store(store_dir) as s:
        assert len(s.predictions()) == 20
        assert s.stats()["models"]["m"]["rows"] == 20
        s.compact()
        s.retain(0)
        assert len(s.predictions()) == 20
        assert len(s.events()) == 2  # retention keeps the event log
    env = {k: v for k, v in os.environ.items() if k != "PREDLOG_STORE"}
    proc = subprocess.run(
        [sys.executable, "-m", "predlog.replay._cli", "--store", str(store_dir), "stats"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
