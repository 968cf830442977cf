"""Stores written by the real SDK for the query-layer tests."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import predlog
from predlog._sealing import ensure_store, seal_segment
from predlog._segment import KIND_LABELS, KIND_PREDICTIONS, SegmentWriter, encode_frame


def flush(rec: predlog.Recorder) -> None:
    """Flush into Parquet and check the recorder's counting invariant."""
    assert rec.flush(timeout_s=30) is True
    s = rec.stats()
    assert s["captured"] == s["written"] + s["dropped_total"], s


def wait_written(rec: predlog.Recorder, calls: int, labels: int = 0, timeout_s: float = 20.0) -> None:
    """Wait until ``calls`` calls and ``labels`` labels reached the write-ahead segment (unsealed)."""
    deadline = time.monotonic() + timeout_s
    while rec.stats()["written"] < calls or rec.stats()["labels"] < labels:
        assert time.monotonic() < deadline, rec.stats()
        time.sleep(0.01)


def write_segment(store: str | Path, frames: list[tuple[int, pa.Table]], stem: str = "host-1-0123456789abcdef") -> str:
    """Write frames into a closed write-ahead segment with the SDK's writer; return its path."""
    ensure_store(str(store))
    path = os.path.join(str(store), "_wal", f"{stem}.arrows")
    w = SegmentWriter(path)
    for kind, table in frames:
        w.append(encode_frame(kind, table), table.num_rows)
    w.sync()
    w.close()
    return path


def seal(store: str | Path, frames: list[tuple[int, pa.Table]], stem: str = "host-1-0123456789abcdef") -> list[str]:
    """Write frames to a segment and seal it into Parquet with the SDK's sealer."""
    return seal_segment(str(store), write_segment(store, frames, stem)).files


def writer_frame(path: str | Path) -> pa.Table:
    """A sealed predictions file as the writer's frame it came from: ``model`` is a column there
    (the sealer moves it to the partition path)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path).replace_schema_metadata(None)
    model = Path(path).parent.parent.name.split("=", 1)[1]
    return table.append_column("model", pa.array([model] * table.num_rows, pa.string()))


def shifted(table: pa.Table, days: int) -> pa.Table:
    """The same rows ``days`` later (to place rows in other UTC date partitions)."""
    import pyarrow.compute as pc

    ts = table.column("ts")
    moved = pc.add(ts, pa.scalar(days * 86_400_000_000, pa.duration("us")))
    return table.set_column(table.schema.get_field_index("ts"), "ts", moved.cast(ts.type))


P, L = KIND_PREDICTIONS, KIND_LABELS


class Helpers:
    """The helpers above, for test modules (handed out by the ``h`` fixture)."""

    P = KIND_PREDICTIONS
    L = KIND_LABELS
    flush = staticmethod(flush)
    wait_written = staticmethod(wait_written)
    write_segment = staticmethod(write_segment)
    seal = staticmethod(seal)
    shifted = staticmethod(shifted)
    writer_frame = staticmethod(writer_frame)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@dataclasses.dataclass
class Demo:
    """A two-model store: ``fraud`` (float predictions, versions 1.0 and 1.1) and ``reco``
    (list predictions), with users, request ids, context, one error and labels."""

    root: str
    ids: dict[str, list[str]]  # user -> fraud prediction ids, in time order
    reco_ids: list[str]
    error_id: str
    by_request: dict[str, str]  # request id -> fraud prediction id


@pytest.fixture
def demo(make_rec: Any, store_dir: Path) -> Demo:
    fraud = make_rec(model="fraud", version="1.0")
    reco = make_rec(model="reco", version="7")

    @fraud.capture
    def score(x: dict[str, Any]) -> float:
        if x["amount"] < 0:
            raise ValueError("negative amount")
        return round(x["amount"] / 100, 3)

    @reco.capture
    def recommend(x: dict[str, Any]) -> list[float]:
        return [0.1, 0.2, 0.7]

    ids: dict[str, list[str]] = {}
    by_request: dict[str, str] = {}
    users = ["u1", "u2", "u3", "u4"]
    countries = {"u1": "FR", "u2": "DE", "u3": "FR", "u4": "US"}
    for i in range(12):
        user = users[i % 4]
        with predlog.context(
            user_id=user, request_id=f"r{i}", country=countries[user], plan="pro" if i % 3 else "free"
        ):
            score({"age": 20 + i, "amount": 10.0 * (i + 1), "country": countries[user]})
            pid = predlog.last_prediction_id()
            assert pid is not None
            ids.setdefault(user, []).append(pid)
            by_request[f"r{i}"] = pid
    flush(fraud)
    fraud.configure(store=str(store_dir), model="fraud", version="1.1")
    with predlog.context(user_id="u1", request_id="r-err"):
        with pytest.raises(ValueError):
            score({"age": 50, "amount": -1.0, "country": "FR"})
        error_id = predlog.last_prediction_id()
        assert error_id is not None
    reco_ids = []
    for i in range(3):
        with predlog.context(user_id="u1", request_id=f"reco{i}", country="FR"):
            recommend({"age": 30, "items": [i, i + 1]})
            pid = predlog.last_prediction_id()
            assert pid is not None
            reco_ids.append(pid)
    flush(fraud)
    flush(reco)
    return Demo(str(store_dir), ids, reco_ids, error_id, by_request)
