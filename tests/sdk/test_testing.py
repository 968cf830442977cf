"""The pytest fixture sees code decorated with the module-level ``@predlog.capture``."""

from __future__ import annotations

import predlog


@predlog.capture(model="fixture-demo")
def predict(x: dict) -> float:
    return x["a"] * 2.0


def test_fixture_records_globally_decorated_code(predlog_recorder, tmp_path):
    with predlog.context(user_id="u1"):
        predict({"a": 1.5})
    predlog.log_label(3.0, prediction_id=predlog.last_prediction_id())
    rows = predlog_recorder.rows()
    assert [(r["model"], r["features"], r["prediction"], r["user_id"]) for r in rows] == [
        ("fixture-demo", {"a": 1.5}, 3.0, "u1")
    ]
    assert predlog_recorder.label_rows()[0]["prediction_id"] == rows[0]["prediction_id"]
    assert predlog_recorder.store.startswith(str(tmp_path))


def test_fixture_restores_the_default_configuration(predlog_recorder):
    assert predlog._default.config.store == predlog_recorder.store


def test_default_store_is_back_after_the_fixture():
    assert predlog._default.config.store != "" and "pytest" not in predlog._default.config.store


def test_recover_seals_segments_of_dead_writers(tmp_path):
    import os

    from predlog._segment import KIND_PREDICTIONS, SegmentWriter, encode_frame

    rec = predlog.Recorder(store=str(tmp_path), model="m")
    rec.capture(lambda x: 1)({"a": 1})
    assert rec.flush()
    rec.shutdown()
    # A segment left behind by a process that died: no lock held on it.
    import glob

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(glob.glob(f"{tmp_path}/predictions/**/*.parquet", recursive=True)[0])
    table = table.append_column("model", pa.array(["m"] * table.num_rows))  # the partition column, as a writer has it
    w = SegmentWriter(os.path.join(tmp_path, "_wal", "deadhost-1-x.arrows"))
    w.append(encode_frame(KIND_PREDICTIONS, table), table.num_rows)
    w.close()
    assert predlog.recover(str(tmp_path)) == 1
    assert os.listdir(tmp_path / "_wal") == []
