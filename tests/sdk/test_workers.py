"""Serving with several worker processes, for real: gunicorn (with and without --preload) and
``uvicorn --workers`` run ``examples/workers_app.py`` on loopback; every request is one row,
written by the worker that served it, into its own files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from predlog._segment import read_segment
from predlog.replay import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
REQUESTS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(args: list[str], store: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server from the repository root until the block ends; then SIGTERM and wait."""
    env = {**os.environ, "PREDLOG_STORE": str(store)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and its workers
                proc.wait(timeout=10)
                raise AssertionError(f"the server did not stop on SIGTERM\n{log.read_text()}") from None


def _predict(port: int, i: int) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict",
        data=json.dumps({"x": float(i), "y": 2.0}).encode(),
        headers={"X-Request-Id": f"req-{i}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        answer: dict[str, Any] = json.load(r)
    answer["request_id"] = f"req-{i}"
    return answer


def send(port: int, start: int, n: int, *, rounds: int = 5) -> list[dict[str, Any]]:
    """``n`` requests, eight at a time; again (up to ``rounds`` times) while one worker has
    answered them all: the kernel decides which worker accepts, and a loaded machine may
    leave the others idle for a while."""
    answers: list[dict[str, Any]] = []
    with ThreadPoolExecutor(8) as pool:
        for r in range(rounds):
            first = start + r * n
            answers += pool.map(lambda i: _predict(port, i), range(first, first + n))
            if len({a["pid"] for a in answers}) > 1:
                break
    return answers


def writer_pids(store: Path) -> set[int]:
    """The pids in the names of the Parquet files: ``<host>-<pid>-<rand>-<n>.parquet``."""
    return {int(p.name.rsplit("-", 3)[1]) for p in (store / "predictions").glob("model=*/date=*/*.parquet")}


def check_store(store: Path, answers: list[dict[str, Any]]) -> None:
    """One row per request, with the id, value and worker the client was told."""
    rows = Store(str(store)).predictions(model="score")
    assert len(rows) == len(answers)
    assert rows["prediction_id"].is_unique
    by_request = {a["request_id"]: a for a in answers}
    assert set(rows["request_id"]) == set(by_request)
    for row in rows.itertuples():
        answer = by_request[row.request_id]
        assert row.prediction_id == answer["prediction_id"]
        assert row.prediction == answer["prediction"]
        assert row.features["x"] == float(row.request_id.removeprefix("req-"))
    # Each worker wrote its own files, and only the workers did.
    assert writer_pids(store) == {a["pid"] for a in answers}
    assert len(writer_pids(store)) > 1


def _gunicorn(port: int, *extra: str) -> list[str]:
    if shutil.which("gunicorn", path=str(BIN)) is None:
        pytest.skip("gunicorn is not installed")
    return [
        str(BIN / "gunicorn"),
        *extra,
        "--workers",
        "3",
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",
        "examples.workers_app:app",
    ]


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_workers_write_one_row_per_request(tmp_path: Path, preload: bool) -> None:
    store, port = tmp_path / "store", _free_port()
    args = _gunicorn(port, *(["--preload"] if preload else []))
    with serving(args, store, port, tmp_path / "server.log") as server:
        answers = send(port, 0, REQUESTS)
        assert server.pid not in {a["pid"] for a in answers}
    # Workers end on SIGTERM through the interpreter's exit: predlog sealed their segments.
    assert list((store / "_wal").glob("*.arrows")) == []
    check_store(store, answers)


def test_uvicorn_workers_write_one_row_per_request(tmp_path: Path) -> None:
    if shutil.which("uvicorn", path=str(BIN)) is None:
        pytest.skip("uvicorn is not installed")
    store, port = tmp_path / "store", _free_port()
    args = [
        str(BIN / "uvicorn"),
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "examples.workers_app:asgi_app",
    ]
    with serving(args, store, port, tmp_path / "server.log"):
        answers = send(port, 0, REQUESTS)
    # The app's lifespan shutdown called predlog.shutdown(): nothing left in segments.
    assert list((store / "_wal").glob("*.arrows")) == []
    check_store(store, answers)


def test_a_killed_workers_rows_are_sealed_by_the_next_writer_or_reader(tmp_path: Path) -> None:
    store, port = tmp_path / "store", _free_port()
    with serving(_gunicorn(port, "--preload"), store, port, tmp_path / "server.log"):
        answers = send(port, 0, REQUESTS // 2, rounds=1)
        victim = answers[0]["pid"]
        served = sum(a["pid"] == victim for a in answers)
        deadline = time.monotonic() + 20
        while sum(read_segment(str(p)).rows for p in (store / "_wal").glob(f"*-{victim}-*.arrows")) < served:
            assert time.monotonic() < deadline  # rows reach the segment within flush_interval_s (1 s)
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)  # gunicorn starts a new worker in its place
        first = len(answers)
        answers += send(port, first, REQUESTS // 2)
    assert victim not in {a["pid"] for a in answers[first:]}
    check_store(store, answers)  # opening the store sealed what the respawned worker had not
    assert list((store / "_wal").glob("*.arrows")) == []
