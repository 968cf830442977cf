"""Reading a test store back: DuckDB views over its Parquet files."""

from __future__ import annotations

import glob
import os

import duckdb

import predlog


def flush(rec: predlog.Recorder) -> None:
    """Flush and check the counting invariant."""
    assert rec.flush(timeout_s=10) is True
    s = rec.stats()
    assert s["captured"] == s["written"] + s["dropped_total"], s


def connect(store) -> duckdb.DuckDBPyConnection:
    """A connection with view ``p`` over predictions and ``l`` over labels (when present)."""
    con = duckdb.connect()
    if glob.glob(f"{store}/predictions/**/*.parquet", recursive=True):
        con.execute(
            f"create view p as select * from read_parquet('{store}/predictions/**/*.parquet', "
            "hive_partitioning=true, union_by_name=true)"
        )
    if glob.glob(f"{store}/labels/**/*.parquet", recursive=True):
        con.execute(
            f"create view l as select * from read_parquet('{store}/labels/**/*.parquet', "
            "hive_partitioning=true, union_by_name=true)"
        )
    return con


def query(store, sql: str, params: list | None = None) -> list[dict]:
    """Run ``sql`` against the store's views; rows as dicts."""
    cur = connect(store).execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def pred_files(store) -> list[str]:
    return sorted(glob.glob(os.path.join(str(store), "predictions", "**", "*.parquet"), recursive=True))
