"""The ``predlog`` command line, run as a real process against stores written by the real SDK."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import predlog
from predlog.replay import Store

SCRIPT = Path(sys.executable).with_name("predlog")


def cli(
    *args: str,
    store: str | Path | None = None,
    stdin: Any = subprocess.DEVNULL,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    script: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``predlog ARGS`` in a new process (``python -m predlog.replay._cli``, or the installed script)."""
    cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "predlog.replay._cli"]
    if store is not None:
        cmd += ["--store", str(store)]
    full_env = {k: v for k, v in os.environ.items() if k != "PREDLOG_STORE"}
    full_env.update(env or {})
    return subprocess.run(
        cmd + list(args),
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        stdin=None if input is not None else stdin,
        input=input,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    return proc


def error_line(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one error line of a failed run (and nothing on stdout, no traceback)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("predlog")]
    assert len(errors) == 1 and ": error: " in errors[0], proc.stderr
    if code == 1:
        assert lines == errors, proc.stderr  # exactly one line
    return errors[0]


def in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """``main(argv)`` in this process: the same code as the script, without a process start."""
    from predlog.replay._cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def write_store(root: Path) -> dict[str, Any]:
    """Two models (fraud: versions 1.0 and 1.1, an error, labels; reco: list predictions), four users."""
    fraud = predlog.Recorder(store=str(root), model="fraud", version="1.0")
    reco = predlog.Recorder(store=str(root), model="reco", version="7")

    @fraud.capture
    def score(x: dict[str, Any]) -> float:
        if x["amount"] < 0:
            raise ValueError("negative amount")
        return round(x["amount"] / 100, 3)

    @reco.capture
    def recommend(x: dict[str, Any]) -> list[float]:
        return [0.1, 0.2, 0.7]

    ids: dict[str, list[str]] = {}
    try:
        for i in range(12):
            user = f"u{i % 4 + 1}"
            with predlog.context(user_id=user, request_id=f"r{i}", plan="pro" if i % 3 else "free"):
                score({"age": 20 + i, "amount": 10.0 * (i + 1), "country": "FR" if i % 2 else "DE"})
                pid = predlog.last_prediction_id()
                assert pid is not None
                ids.setdefault(user, []).append(pid)
                fraud.log_label(i % 2, prediction_id=pid)
        assert fraud.flush(timeout_s=30)
        fraud.configure(store=str(root), model="fraud", version="1.1")
        with predlog.context(user_id="u1", request_id="r-err"):
            with pytest.raises(ValueError):
                score({"age": 50, "amount": -1.0, "country": "FR"})
            ids["u1"].append(predlog.last_prediction_id())  # type: ignore[arg-type]
        with predlog.context(user_id="u1", request_id="reco0"):
            recommend({"age": 30, "items": [1, 2]})
            ids.setdefault("reco", []).append(predlog.last_prediction_id())  # type: ignore[arg-type]
        assert fraud.flush(timeout_s=30) and reco.flush(timeout_s=30)
    finally:
        fraud.shutdown(timeout_s=10)
        reco.shutdown(timeout_s=10)
    return ids


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A store that read-only tests share (nothing may change it)."""
    root = tmp_path_factory.mktemp("cli") / "store"
    return root, write_store(root)


@pytest.fixture
def own(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A store of the test's own, for the commands that change it."""
    root = tmp_path / "store"
    return root, write_store(root)


def same(a: Any, b: Any) -> bool:
    """Values equal, with None/NaN/NaT all meaning null."""
    na = a is None or (not isinstance(a, (list, dict)) and bool(pd.isna(a)))
    nb = b is None or (not isinstance(b, (list, dict)) and bool(pd.isna(b)))
    if na or nb:
        return na and nb
    if isinstance(a, float) or isinstance(b, float):
        return float(a) == float(b)
    return bool(a == b)


def assert_records_match(records: list[dict[str, Any]], df: pd.DataFrame) -> None:
    """JSON or CSV records agree with the DataFrame the Store returns, cell by cell."""
    assert len(records) == len(df)
    for rec, (_, row) in zip(records, df.iterrows()):
        assert list(rec) == [str(c) for c in df.columns]
        for col in df.columns:
            want, got = row[col], rec[str(col)]
            if isinstance(want, pd.Timestamp):
                assert got is not None and pd.Timestamp(got) == want, (col, got, want)
            elif isinstance(want, dt.date):  # the UTC date partition, ISO 8601
                assert got == want.isoformat(), (col, got, want)
            elif isinstance(want, dict):
                assert got == json.loads(json.dumps(want, default=str)), (col, got, want)
            else:
                assert same(got, want), (col, got, want)


# ---------------------------------------------------------------- reading


def test_installed_script_prints_stats_as_a_table_and_as_json(shared: tuple[Path, Any]) -> None:
    root, _ = shared
    assert SCRIPT.exists(), "run: pip install -e . --no-deps (the [project.scripts] entry)"
    with Store(root) as s:
        st = s.stats()
    table = ok(cli("stats", store=root, script=True)).stdout
    assert str(root) in table and f"{st['rows']:,} rows" in table
    for model in ("fraud", "reco"):
        assert model in table
    doc = json.loads(ok(cli("stats", "--format", "json", store=root, script=True)).stdout)
    assert doc["rows"] == st["rows"] == 14
    assert doc["models"]["fraud"]["versions"] == {"1.0": 12, "1.1": 1}
    assert pd.Timestamp(doc["first_ts"]) == st["first_ts"] and pd.Timestamp(doc["last_ts"]) == st["last_ts"]
    rows = pd.read_csv(io.StringIO(ok(cli("stats", "-f", "csv", store=root)).stdout), dtype={"version": str})
    assert sorted(zip(rows.model, rows.version, rows.rows)) == [
        ("fraud", "1.0", 12),
        ("fraud", "1.1", 1),
        ("reco", "7", 1),
    ]


SUMMARY = (
    "select model, model_version, count(*) as n, avg(latency_ms) as latency, min(ts) as first, "
    "max(features.age) as oldest from predictions group by all order by all"
)


def test_query_in_every_format_reads_back_as_the_store_returns_it(shared: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = shared
    with Store(root) as s:
        want = s.sql(SUMMARY)
    assert len(want) == 3

    table = ok(cli("query", SUMMARY, store=root)).stdout.splitlines()
    assert table[0].split() == ["model", "model_version", "n", "latency", "first", "oldest"]
    assert set(table[1]) == {"-", " "} and table[-1] == "(3 rows)"
    assert table[2].split()[:3] == ["fraud", "1.0", "12"]

    got = json.loads(ok(cli("query", SUMMARY, "--format", "json", store=root)).stdout)
    assert_records_match(got, want)
    assert got[0]["first"].endswith("+00:00")  # ISO 8601, UTC

    csv = pd.read_csv(
        io.StringIO(ok(cli("query", SUMMARY, "-f", "csv", store=root)).stdout), dtype={"model_version": str}
    )
    assert list(csv.columns) == list(want.columns)
    assert list(csv.model_version) == list(want.model_version) and list(csv.n) == list(want.n)
    assert list(csv.latency) == list(want.latency)  # floats round-trip exactly
    assert list(pd.to_datetime(csv["first"], utc=True)) == list(want["first"])

    out = tmp_path / "summary.parquet"
    proc = ok(cli("query", SUMMARY, "-f", "parquet", "-o", str(out), store=root))
    assert proc.stdout == ""
    back = pq.read_table(out)
    assert back.column_names == list(want.columns)
    assert back.schema.field("first").type == pa.timestamp("us", tz="UTC")
    pd.testing.assert_frame_equal(back.to_pandas(), want, check_dtype=False)  # str vs object strings


def test_nested_values_go_out_as_json_in_csv_and_as_structs_in_parquet(
    shared: tuple[Path, Any], tmp_path: Path
) -> None:
    root, _ = shared
    sql = "select prediction_id, features, context, prediction from predictions where model = 'fraud' order by ts"
    with Store(root) as s:
        want = s.sql(sql, model="fraud")
    csv = pd.read_csv(io.StringIO(ok(cli("query", sql, "--model", "fraud", "-f", "csv", store=root)).stdout))
    assert [json.loads(v) for v in csv.features] == [json.loads(json.dumps(v)) for v in want.features]
    out = tmp_path / "rows.parquet"
    ok(cli("query", sql, "--model", "fraud", "-f", "parquet", "--output", str(out), store=root))
    back = pq.read_table(out)
    assert pa.types.is_struct(back.schema.field("features").type)
    assert back.column("features").to_pylist() == list(want.features)
    assert back.column("prediction_id").to_pylist() == list(want.prediction_id)


def test_query_reads_sql_from_stdin(shared: tuple[Path, Any]) -> None:
    root, _ = shared
    got = json.loads(
        ok(cli("query", "-", "-f", "json", store=root, input="select count(*) as n\nfrom predictions\n")).stdout
    )
    assert got == [{"n": 14}]


def test_user_with_filters_matches_store_user(shared: tuple[Path, Any]) -> None:
    root, ids = shared
    with Store(root) as s:
        every = s.user("u1")
        fraud = s.user("u1", model="fraud")
        window = s.user("u1", model="fraud", start=every.ts.iloc[1].isoformat(), end=every.ts.iloc[3].isoformat())
    assert list(every.prediction_id) == ids["u1"] + ids["reco"]
    assert len(window) == 2

    assert_records_match(json.loads(ok(cli("user", "u1", "-f", "json", store=root)).stdout), every)
    assert_records_match(json.loads(ok(cli("user", "u1", "--model", "fraud", "-f", "json", store=root)).stdout), fraud)
    got = json.loads(
        ok(
            cli(
                "user",
                "u1",
                "--model",
                "fraud",
                "--start",
                every.ts.iloc[1].isoformat(),
                "--end",
                every.ts.iloc[3].isoformat(),
                "-f",
                "json",
                store=root,
            )
        ).stdout
    )
    assert_records_match(got, window)

    csv = pd.read_csv(io.StringIO(ok(cli("user", "u1", "--model", "fraud", "-f", "csv", store=root)).stdout))
    assert list(csv.prediction_id) == list(fraud.prediction_id)
    assert list(pd.to_datetime(csv.ts, utc=True)) == list(fraud.ts)
    assert list(csv.latency_ms) == list(fraud.latency_ms)
    # the error was recorded without context: an empty CSV field
    assert [json.loads(v) if isinstance(v, str) else None for v in csv.context] == [
        v if isinstance(v, dict) else None for v in fraud.context
    ]
    assert not isinstance(fraud.context.iloc[-1], dict)

    table = ok(cli("user", "u1", store=root)).stdout
    assert table.count("\n") == 2 + len(every) + 1 and table.rstrip().endswith(f"({len(every)} rows)")
    assert "negative amount" in table and "NULL" in table


def test_table_limit_and_cell_width(shared: tuple[Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", str(shared[0])]
    lines = ok(
        in_process(capsys, *store, "query", "select prediction_id, features from predictions", "--limit", "2")
    ).stdout.splitlines()
    assert len(lines) == 2 + 2 + 1 and lines[-1] == "(2 of 14 rows shown; --limit 0 shows all)"
    assert all(len(cell) <= 40 for line in lines[2:4] for cell in line.split("  ") if cell)
    assert lines[2].rstrip().endswith("…")  # the features JSON is wider than 40
    wide = ok(
        in_process(capsys, *store, "query", "select features from predictions", "--limit", "1", "--max-width", "0")
    )
    assert json.loads(wide.stdout.splitlines()[2])["age"] >= 20
    # --limit caps csv/json too; without it they write every row
    got = in_process(capsys, *store, "query", "select * from predictions", "-f", "json", "--limit", "3")
    assert len(json.loads(ok(got).stdout)) == 3
    assert (
        len(json.loads(ok(in_process(capsys, *store, "query", "select * from predictions", "-f", "json")).stdout)) == 14
    )
    # a DuckDB DATE comes out as a date, a timestamp as an ISO 8601 time in UTC
    got = in_process(
        capsys, *store, "query", "select min(ts)::date as day, min(ts) as first from predictions", "-f", "csv"
    )
    day, first = ok(got).stdout.splitlines()[1].split(",")
    assert dt.date.fromisoformat(day) == dt.datetime.fromisoformat(first).date() and first.endswith("+00:00")


def test_get_shows_one_prediction(shared: tuple[Path, Any]) -> None:
    root, ids = shared
    pid = ids["u2"][0]
    with Store(root) as s:
        want = s.get(pid)
    table = ok(cli("get", pid, store=root)).stdout.splitlines()
    fields = dict(line.split(None, 1) if len(line.split(None, 1)) == 2 else (line.strip(), "") for line in table)
    assert list(fields) == list(want.index)
    assert fields["prediction_id"] == pid and fields["user_id"] == "u2" and fields["error_type"] == "NULL"
    assert json.loads(fields["features"]) == want["features"]  # not cut: one value per line
    got = json.loads(ok(cli("get", pid, "--format", "json", store=root)).stdout)
    assert isinstance(got, dict)
    assert_records_match([got], want.to_frame().T.infer_objects())


def test_output_file_and_store_from_the_environment(shared: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = shared
    out = tmp_path / "n.csv"
    proc = ok(
        cli(
            "query",
            "select count(*) as n from predictions",
            "-f",
            "csv",
            "-o",
            str(out),
            env={"PREDLOG_STORE": str(root)},
        )
    )
    assert proc.stdout == "" and out.read_text() == "n\n14\n"
    # --store also after the command; the default is ./predlog-store
    ok(cli("query", "select 1 as one", "--store", str(root)))
    shutil.copytree(root, tmp_path / "predlog-store")
    got = ok(cli("query", "select count(*) as n from predictions", "-f", "json", cwd=tmp_path)).stdout
    assert json.loads(got) == [{"n": 14}]


def test_stdout_closed_early_is_not_an_error_message(shared: tuple[Path, Any]) -> None:
    root, _ = shared
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "predlog.replay._cli",
            "--store",
            str(root),
            "query",
            "select range as i from range(300000)",
            "-f",
            "csv",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == "i\n"
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=60) != 0 and err == ""


# ---------------------------------------------------------------- errors


def test_errors_are_one_line_with_exit_code_1(
    shared: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = shared
    line = error_line(cli("stats", store=tmp_path / "nope"))
    assert "no predlog store" in line and str(tmp_path / "nope") in line
    line = error_line(cli("user", "u1", "--model", "frod", store=root))
    assert "'frod' is not in the store" in line and "'fraud'" in line
    line = error_line(cli("query", "selec * from predictions", store=root))
    assert "syntax error" in line
    line = error_line(cli("query", "select * from read_csv('/etc/passwd')", store=root))
    assert "/etc/passwd" in line and "inside" in line

    # The same contract in process (each case above costs a second of interpreter start).
    store = ["--store", str(root)]
    line = error_line(in_process(capsys, *store, "query", "select nope from predictions"))
    assert '"nope" not found' in line
    line = error_line(in_process(capsys, *store, "query", "select * from read_text('/etc/passwd')"))
    assert "/etc/passwd" in line
    line = error_line(in_process(capsys, *store, "query", f"copy (select 1) to '{tmp_path}/x.csv'"))
    assert "SELECT" in line and not (tmp_path / "x.csv").exists()
    line = error_line(in_process(capsys, *store, "get", "0190b7a4-0000-7000-8000-000000000000"))
    assert "no prediction with id" in line
    line = error_line(in_process(capsys, *store, "user", "u1", "--start", "yesterday"))
    assert "start='yesterday' is not a time" in line
    line = error_line(in_process(capsys, *store, "user", "u1", "--start", "2026-03-02", "--end", "2026-03-01"))
    assert "before start" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = cli("--debug", "stats", store=tmp_path / "nope")
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "StoreNotFoundError" in proc.stderr


def test_usage_errors_exit_with_code_2(
    shared: tuple[Path, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = shared
    line = error_line(cli("query", "select 1", "-f", "parquet", store=root), code=2)
    assert "--output" in line
    error_line(cli(store=root), code=2)  # no command
    store = ["--store", str(root)]
    error_line(in_process(capsys, *store, "retain"), code=2)  # --days missing
    error_line(in_process(capsys, *store, "retain", "--days", "-3"), code=2)
    error_line(in_process(capsys, *store, "query", "select 1", "--format", "xml"), code=2)
    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    line = error_line(in_process(capsys, *store, "query", "-"), code=2)
    assert "no SQL" in line
    line = error_line(in_process(capsys, *store, "compact", "--before", "2026-13-01"), code=2)
    assert "YYYY-MM-DD" in line
    helped = in_process(capsys, "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: predlog")


# ---------------------------------------------------------------- maintenance


def files_of(root: Path, table: str = "predictions") -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / table).rglob("*.parquet"))


def test_compact_reports_progress_on_stderr_and_the_result_on_stdout(own: tuple[Path, Any]) -> None:
    root, _ = own
    with Store(root) as s:
        before = s.sql("select * from predictions order by prediction_id")
    fraud_files = [f for f in files_of(root) if "model=fraud" in f]
    assert len(fraud_files) >= 2
    proc = ok(cli("compact", "-f", "json", store=root))
    result = json.loads(proc.stdout)
    assert result["files_before"] >= 2 and result["rows"] >= 13
    assert "predictions/model=fraud/date=" in " ".join(result["partitions"])
    err = proc.stderr.splitlines()
    assert err[0].startswith(f"compacting {root}") and "partition" in err[0]
    assert err[-1].startswith("compacted ") and err[-1].endswith(" s")
    assert len([f for f in files_of(root) if "model=fraud" in f]) == 1
    with Store(root) as s:
        after = s.sql("select * from predictions order by prediction_id")
    assert after.equals(before)
    again = ok(cli("compact", "--model", "fraud", "-q", store=root))
    assert again.stderr == "" and "files_before   0" in again.stdout
    error_line(cli("compact", "--model", "frod", store=root))


def move_back(root: Path, rel: str, days: int) -> None:
    """Rewrite one sealed file as if its rows were recorded ``days`` earlier (the SDK has no clock to inject)."""
    src = root / rel
    table = pq.read_table(src)
    shift = pa.scalar(dt.timedelta(days=days), pa.duration("us"))
    i = table.schema.get_field_index("ts")
    table = table.set_column(i, "ts", pc.subtract(table.column("ts"), shift))
    old = dt.date.fromisoformat(src.parent.name.split("=", 1)[1]) - dt.timedelta(days=days)
    dst = src.parent.parent / f"date={old.isoformat()}"
    dst.mkdir(mode=0o700)
    pq.write_table(table, dst / src.name, compression="zstd")
    src.unlink()


def test_retain_drops_old_partitions(own: tuple[Path, Any]) -> None:
    root, _ = own
    reco = [f for f in files_of(root) if "model=reco" in f]
    move_back(root, reco[0], 40)
    old = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=40)).isoformat()
    dry = ok(cli("retain", "--days", "7", "--dry-run", "-f", "json", store=root))
    assert json.loads(dry.stdout)["dates"] == [old] and json.loads(dry.stdout)["prediction_rows"] == 1
    assert "would drop 1 date" in dry.stderr
    with Store(root) as s:
        assert s.stats()["rows"] == 14
    proc = ok(cli("retain", "--days", "7", "-f", "json", store=root))
    assert json.loads(proc.stdout)["dates"] == [old] and "dropped 1 date" in proc.stderr
    with Store(root) as s:
        assert s.stats()["rows"] == 13 and len(s.predictions(model="reco")) == 0


def count_user(root: Path, user: str) -> tuple[int, int]:
    with Store(root) as s:
        preds = len(s.user(user))
        labels = int(
            s.sql(
                "select count(*) as n from labels l join predictions p using (prediction_id) where p.user_id = ?",
                [user],
            )["n"].iloc[0]
        )
    return preds, labels


def forget_on_a_terminal(root: Path, user: str, answer: bytes) -> subprocess.CompletedProcess[str]:
    """``predlog forget USER`` with a pseudo-terminal as stdin, answering the question."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "predlog.replay._cli", "--store", str(root), "forget", user],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(slave)
        os.write(master, answer)
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_forget_asks_on_a_terminal_and_refuses_without_one(own: tuple[Path, Any]) -> None:
    root, _ = own
    assert count_user(root, "u2") == (3, 3)

    line = error_line(cli("forget", "u2", store=root), code=2)  # stdin is not a terminal
    assert "--yes" in line
    assert count_user(root, "u2") == (3, 3)

    declined = forget_on_a_terminal(root, "u2", b"n\n")
    assert declined.returncode == 1 and declined.stdout == ""
    assert "Erase every row of user 'u2' (3 predictions" in declined.stderr and "[y/N]" in declined.stderr
    assert "nothing erased" in declined.stderr
    assert count_user(root, "u2") == (3, 3)

    empty = forget_on_a_terminal(root, "u2", b"\n")  # the default is No
    assert empty.returncode == 1 and count_user(root, "u2") == (3, 3)

    agreed = forget_on_a_terminal(root, "u2", b"y\n")
    assert agreed.returncode == 0, agreed.stderr
    assert "erased 3 predictions and 3 labels" in agreed.stderr
    assert "prediction_rows   3" in agreed.stdout
    assert count_user(root, "u2") == (0, 0)
    assert count_user(root, "u3") == (3, 3)


def test_forget_yes_erases_without_asking(own: tuple[Path, Any]) -> None:
    root, ids = own
    proc = ok(cli("forget", "u3", "--yes", "-f", "json", store=root))
    assert "Erase every row" not in proc.stderr
    got = json.loads(proc.stdout)
    assert got["prediction_rows"] == 3 and got["label_rows"] == 3 and got["pending_live"] == []
    assert "u3" not in proc.stdout  # the result does not repeat the user's id
    assert count_user(root, "u3") == (0, 0)
    line = error_line(cli("get", ids["u3"][0], store=root))
    assert "no prediction" in line
    line = error_line(cli("forget", "u3", "--hashed", "--yes", store=root, env={"PREDLOG_HASH_KEY": ""}), code=2)
    assert "PREDLOG_HASH_KEY" in line


# ---------------------------------------------------------------- replay


def test_replay_reports_functions_it_cannot_load(shared: tuple[Path, Any], tmp_path: Path) -> None:
    root, _ = shared
    (tmp_path / "models_here.py").write_text("answer = 42\n")
    (tmp_path / "broken_mod.py").write_text("def oops(:\n")
    line = error_line(cli("replay", "--module", "no_such_pkg.model:predict", store=root, cwd=tmp_path))
    assert "no_such_pkg" in line and str(tmp_path) in line
    line = error_line(cli("replay", "--module", "models_here:predict", store=root, cwd=tmp_path))
    assert "has no attribute 'predict'" in line
    line = error_line(cli("replay", "--module", "models_here:answer", store=root, cwd=tmp_path))
    assert "not a function" in line
    line = error_line(cli("replay", "--module", "broken_mod:oops", store=root, cwd=tmp_path))
    assert "SyntaxError" in line
    line = error_line(cli("replay", "--module", "models_here", store=root, cwd=tmp_path), code=2)
    assert "package.module:function" in line


def _replay_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("predlog.replay._replay") is not None


@pytest.mark.skipif(not _replay_available(), reason="predlog.replay._replay (Store.replay) is not written yet")
def test_replay_prints_the_summary(own: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = own
    pkg = tmp_path / "candidate_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model.py").write_text(
        textwrap.dedent("""
        def predict(x):
            return round(x["amount"] / 50, 3)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from candidate_pkg.model import predict  # type: ignore[import-not-found]

    with Store(root) as s:
        want = s.replay(predict, model="fraud")
    assert want.summary["rows"] == 12 and want.summary["changed"] == 12

    spec = ["replay", "--module", "candidate_pkg.model:predict", "--model", "fraud"]
    proc = ok(cli(*spec, "-f", "json", store=root, cwd=tmp_path))
    doc = json.loads(proc.stdout)
    for key in ("model", "rows", "compared", "changed", "agreement_rate", "mean_abs_change", "max_abs_change"):
        assert doc["summary"][key] == want.summary[key], key
    assert doc["accuracy"] == want.accuracy
    assert [r["model_version"] for r in doc["by_version"]] == ["1.0"]
    assert proc.stderr.splitlines()[0] == "replaying the recorded inputs through candidate_pkg.model:predict…"
    assert "replayed 12 rows of fraud" in proc.stderr and "12 changed" in proc.stderr

    table = ok(cli(*spec, store=root, cwd=tmp_path)).stdout
    assert "changed          12" in table and "by model version" in table

    rows = pd.read_csv(io.StringIO(ok(cli(*spec, "-f", "csv", store=root, cwd=tmp_path)).stdout))
    assert list(rows.prediction_id) == list(want.df.prediction_id)
    assert list(rows.replayed) == list(want.df.replayed) and rows.changed.all()

    recorded = ok(cli(*spec, "--version", "1.0", "--record-as", "2.0-cand", "-q", store=root, cwd=tmp_path))
    assert recorded.stderr == "" and "recorded         12" in recorded.stdout
    with Store(root) as s:  # the command has exited: its rows are in the store
        new = s.predictions(model="fraud", version="2.0-cand", include_live=True)
    assert len(new) == 12 and sorted(new.prediction) == sorted(want.df.replayed)
