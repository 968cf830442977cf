"""End-to-end demo: record a real scikit-learn model's predictions, then read them back.

    python examples/quickstart.py [STORE_DIR]

A gradient-boosting classifier is trained on scikit-learn's bundled breast-cancer data set.
A few thousand requests from 200 users in three regions are served through a decorated
``predict`` (single calls and a batch call), some requests fail, labels arrive late for a
part of them; then DuckDB answers the questions one asks after an incident.
"""

from __future__ import annotations

import os

# One OpenMP thread: a model answering one request at a time gains nothing from more, and on
# a small shared machine the threads only fight each other (and inflate latency_ms).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import predlog  # noqa: E402
from predlog.replay import Store  # noqa: E402


def main(store: Path) -> None:
    data = load_breast_cancer(as_frame=True)
    X = data.data.rename(columns=lambda c: c.replace(" ", "_"))
    y = data.target
    X_train, X_serve, y_train, y_serve = train_test_split(X, y, test_size=0.5, random_state=0)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(X_train, y_train)
    feature_names = list(X.columns)

    predlog.configure(store=str(store), model="cancer", version="1.0.0")

    @predlog.capture(confidence="max", prediction=lambda proba: proba.tolist())
    def predict(features: dict) -> np.ndarray:
        if any(v != v for v in features.values()):  # NaN from a broken upstream
            raise ValueError("missing feature value")
        row = pd.DataFrame([features], columns=feature_names)
        return model.predict_proba(row)[0]

    @predlog.capture(model="cancer-batch", version="1.0.0", confidence="max")
    def predict_batch(frame: pd.DataFrame) -> np.ndarray:
        return model.predict_proba(frame)

    rng = random.Random(0)
    rows = X_serve.to_dict("records")
    truth = y_serve.tolist()
    regions = ["eu", "us", "apac"]
    started = time.perf_counter()
    served, failed, labelled = 0, 0, 0
    for i in range(2000):
        j = rng.randrange(len(rows))
        features = dict(rows[j])
        if rng.random() < 0.01:
            features["mean_radius"] = float("nan")
        with predlog.context(user_id=f"user-{rng.randrange(200)}", request_id=f"req-{i}", region=rng.choice(regions)):
            try:
                predict(features)
                served += 1
            except ValueError:
                failed += 1
                continue
            pid = predlog.last_prediction_id()
        if rng.random() < 0.3:  # the true outcome arrives later for some requests
            predlog.log_label(truth[j], prediction_id=pid)
            labelled += 1
    predict_batch(X_serve)
    predlog.flush(timeout_s=30)
    elapsed = time.perf_counter() - started
    stats = predlog.stats()
    print(
        f"served {served} predictions ({failed} failed) + a batch of {len(X_serve)} rows in {elapsed:.2f}s; "
        f"{labelled} labels logged"
    )
    print(
        f"stats: captured={stats['captured']} written={stats['written']} dropped={stats['dropped_total']} "
        f"rows in Parquet={stats['sealed_rows']} files={stats['files']}"
    )
    predlog.shutdown()

    preds = f"read_parquet('{store}/predictions/**/*.parquet', hive_partitioning=true, union_by_name=true)"
    labels = f"read_parquet('{store}/labels/**/*.parquet', union_by_name=true)"
    con = duckdb.connect()
    print("\nPer model and status:")
    print(
        con.sql(f"""
        select model, model_version, status, count(*) as n,
               round(avg(latency_ms), 3) as avg_latency_ms, round(avg(confidence), 3) as avg_confidence
        from {preds} group by all order by all""")
        .df()
        .to_string(index=False)
    )
    print("\nAll predictions for user-7 (newest first):")
    print(
        con.sql(f"""
        select ts, request_id, context.region as region, round(features.mean_radius, 2) as mean_radius,
               round(confidence, 3) as confidence, status
        from {preds} where user_id = 'user-7' order by ts desc limit 5""")
        .df()
        .to_string(index=False)
    )
    print("\nAccuracy by region, on the predictions whose labels arrived:")
    print(
        con.sql(f"""
        select p.context.region as region, count(*) as labelled,
               round(avg(case when (p.prediction[2] > 0.5)::int = l.label then 1 else 0 end), 3) as accuracy
        from {preds} p join {labels} l using (prediction_id)
        where p.model = 'cancer' group by 1 order by 1""")
        .df()
        .to_string(index=False)
    )
    print("\nErrors:")
    print(
        con.sql(f"""
        select error_type, error_message, count(*) as n from {preds}
        where status = 'error' group by all""")
        .df()
        .to_string(index=False)
    )
    monitor(store, X_train, X_serve, y_serve, model)
    print(f"\nstore: {store}")


def monitor(
    store: Path, X_train: pd.DataFrame, X_serve: pd.DataFrame, y_serve: pd.Series, model: HistGradientBoostingClassifier
) -> None:
    """predlog.analysis: drift against the training set, accuracy by region, and when a shift began.

    Two weeks of the model's past predictions are imported with ``log_frame`` (batch scoring
    from before predlog, say), their labels with ``log_labels``; from day 9 on an upstream
    change scales ``mean_texture`` by 1.3. The analysis finds the day.
    """
    from predlog.analysis import input_drift, performance, when_shifted

    rng = np.random.default_rng(0)
    days = 14
    per_day = 400
    rows = rng.integers(0, len(X_serve), days * per_day)
    past = X_serve.iloc[rows].reset_index(drop=True)
    day = np.repeat(np.arange(days), per_day)
    past.loc[day >= 9, "mean_texture"] *= 1.3  # the upstream change
    start = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=days)
    past.insert(0, "ts", start + pd.to_timedelta(day * 86_400 + rng.integers(0, 86_400, len(day)), unit="s"))
    past["prediction"] = model.predict_proba(past[X_serve.columns])[:, 1]
    past["region"] = rng.choice(["eu", "us", "apac"], len(past))
    past["device"] = rng.choice(["desktop", "mobile", "kiosk"], len(past), p=[0.55, 0.37, 0.08])
    labels = y_serve.to_numpy()[rows]
    # Kiosk scans come from an older scanner: the model is wrong on about a third of them.
    flip = (past["device"] == "kiosk").to_numpy() & (rng.random(len(past)) < 0.3)
    labels = np.where(flip, 1 - labels, labels)

    rec = predlog.Recorder(store=str(store), model="cancer-history", version="1.0.0")
    ids = rec.log_frame(past, features=list(X_serve.columns), context=["region", "device"])
    rec.log_labels(pd.DataFrame({"prediction_id": ids, "label": labels}))
    rec.shutdown()

    with Store(store) as s:
        print("\nInput drift, the last day against the training set:")
        drift = input_drift(s, X_train, model="cancer-history")
        print(drift)
        print(drift.df[["feature", "ks", "ks_p_value", "psi", "drifted"]].head(4).to_string(index=False))
        print("\nAccuracy by region over the two weeks:")
        perf = performance(s, model="cancer-history", by="context.region")
        print(perf)
        print(
            perf.by_group[["context.region", "labeled_rows", "accuracy", "accuracy_low", "accuracy_high"]].to_string(
                index=False
            )
        )
        print("\nWhen did it start?")
        print(when_shifted(s, "features.mean_texture", window="1D", model="cancer-history"))
        investigate(s)


def investigate(s: Store) -> None:
    """predlog.analysis: which inputs go with the wrong predictions, which slice fails, is it fair by region."""
    from predlog.analysis import error_correlation, error_slices, fairness_audit

    print("\nWhich inputs go with the errors?")
    found = error_correlation(s, model="cancer-history", features=["context.region", "context.device", "mean_texture"])
    print(found.summary["text"])
    print(found.df[["feature", "cramers_v", "mutual_info", "top_group", "top_lift"]].to_string(index=False))
    print("\nWhere does the model fail most?")
    slices = error_slices(s, model="cancer-history", features=["context.region", "context.device", "mean_texture"])
    print(slices.summary["text"])
    print("\nIs it fair across regions?")
    print(fairness_audit(s, "context.region", model="cancer-history", n_boot=200).summary["text"])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        main(target)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="predlog-quickstart-"))
        try:
            main(tmp / "store")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            print("(temporary store removed; run `python examples/quickstart.py DIR` to keep one)")
