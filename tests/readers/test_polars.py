"""The README's Polars snippet reads back what the SDK logged."""

from __future__ import annotations

import datetime as dt

import pytest

from .conftest import PREDICTION_COLUMNS, Logged, run_snippet

pl = pytest.importorskip("polars")


def test_polars_snippet_reads_every_row_field_and_label(logged: Logged) -> None:
    ns = run_snippet("polars", logged.root)
    fraud, reco = ns["fraud"], ns["reco"]

    assert PREDICTION_COLUMNS | {"label", "amount"} <= set(fraud.columns)
    assert PREDICTION_COLUMNS <= set(reco.columns)
    assert fraud.schema["date"] == pl.Date
    features = {f.name: f.dtype for f in fraud.schema["features"].fields}
    assert features == {"amount": pl.Float64, "country": pl.String, "age": pl.Int64, "coupon": pl.String}
    assert reco.schema["prediction"] == pl.List(pl.Float64)

    for frame, expected, model in ((fraud, logged.fraud, "fraud"), (reco, logged.reco, "reco")):
        rows = frame.with_columns(ts_us=pl.col("ts").dt.epoch("us")).to_dicts()
        assert sorted(r["prediction_id"] for r in rows) == sorted(expected)
        for row in rows:
            want = expected[row["prediction_id"]]
            assert row["features"] == want["features"]
            assert row["model"] == model
            assert row["model_version"] == want["model_version"]
            assert row["user_id"] == want["user_id"]
            assert (row["context"] or {}).get("region") == want["region"]
            assert row["prediction"] == want["prediction"]
            assert row["status"] == "ok" and row["latency_ms"] >= 0
            assert isinstance(row["date"], dt.date)
            logged.check_ts(row["prediction_id"], row["ts_us"], row["date"].isoformat())
            if model == "fraud":
                assert row["label"] == want["label"]
                assert row["amount"] == want["features"]["amount"]
