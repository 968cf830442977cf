"""The README's Spark snippet reads back what the SDK logged; plain ``mergeSchema`` does not.

One small local Spark session (one core, 512 MiB) for the module; Spark needs Java.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import PREDICTION_COLUMNS, Logged, run_snippet

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)

from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[1]")
        .appName("predlog-readers")
        .config("spark.driver.memory", "512m")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_snippet_reads_every_row_field_and_label(spark: Any, logged: Logged) -> None:
    ns = run_snippet("spark", logged.root)
    assert ns["spark"] is spark  # the snippet's getOrCreate() found the test's small session
    fraud, reco = ns["fraud"], ns["reco"]

    assert PREDICTION_COLUMNS | {"label", "amount"} <= set(fraud.columns)
    assert PREDICTION_COLUMNS <= set(reco.columns)
    assert dict(fraud.dtypes)["date"] == "date"
    assert dict(reco.dtypes)["prediction"] == "array<double>"
    assert set(fraud.select("features.*").columns) == {"amount", "country", "age", "coupon"}

    for frame, expected, model in ((fraud, logged.fraud, "fraud"), (reco, logged.reco, "reco")):
        rows = [r.asDict(recursive=True) for r in frame.withColumn("ts_us", F.unix_micros("ts")).collect()]
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
            logged.check_ts(row["prediction_id"], row["ts_us"], row["date"].isoformat())
            if model == "fraud":
                assert row["label"] == want["label"]
                assert row["amount"] == want["features"]["amount"]


def test_merge_schema_fails_on_a_column_one_file_holds_only_nulls_of(spark: Any, logged: Logged) -> None:
    """Why the snippet reads file groups: Spark takes Arrow's null type for an int."""
    with pytest.raises(Exception, match="CANNOT_MERGE") as failed:
        spark.read.option("mergeSchema", "true").parquet(f"{logged.root}/predictions/model=fraud").collect()
    assert "INT" in str(failed.value)
