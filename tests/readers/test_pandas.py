"""The README's pandas snippet reads back what the SDK logged; a plain read of the directory does not."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pyarrow as pa

from .conftest import PREDICTION_COLUMNS, Logged, run_snippet

FLAT = {"features", "context"}  # flatten() replaces these by their fields


def _value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    if hasattr(v, "tolist"):  # numpy arrays of list columns
        return v.tolist()
    return v


def test_pandas_snippet_reads_every_row_field_and_label(logged: Logged) -> None:
    ns = run_snippet("pandas", logged.root)
    fraud, reco = ns["fraud"], ns["reco"]

    assert PREDICTION_COLUMNS - FLAT <= set(fraud.columns)
    assert {"features.amount", "features.country", "features.age", "features.coupon", "context.region", "label"} <= set(
        fraud.columns
    )
    assert {"features.age", "features.items", "context.region"} <= set(reco.columns)
    assert "features.amount" not in reco.columns  # one model at a time: its own features only

    for frame, expected, model in ((fraud, logged.fraud, "fraud"), (reco, logged.reco, "reco")):
        assert sorted(frame["prediction_id"]) == sorted(expected)
        for row in frame.to_dict("records"):
            want = expected[row["prediction_id"]]
            features = {k.removeprefix("features."): _value(v) for k, v in row.items() if k.startswith("features.")}
            assert features == want["features"]
            assert row["model"] == model
            assert row["model_version"] == want["model_version"]
            assert _value(row["user_id"]) == want["user_id"]
            assert _value(row["context.region"]) == want["region"]
            assert _value(row["prediction"]) == want["prediction"]
            assert row["status"] == "ok" and row["latency_ms"] >= 0
            logged.check_ts(row["prediction_id"], row["ts"].value // 1000, row["date"])
            if model == "fraud":
                assert _value(row["label"]) == want["label"]


def test_read_parquet_on_a_directory_loses_fields_or_fails(logged: Logged) -> None:
    """Why the snippet unifies schemas: the first file's schema is taken for all."""
    try:
        naive = pd.read_parquet(f"{logged.root}/predictions/model=fraud")
    except pa.ArrowNotImplementedError as exc:  # a later file's value cast to the first file's null type
        assert "to null" in str(exc)
        return
    seen = {k for features in naive["features"] for k in features}
    assert seen < {"amount", "country", "age", "coupon"}, seen  # a feature logged in the other file is gone
