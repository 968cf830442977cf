"""performance(): metrics against the labels per window and segment, equal to scikit-learn.

Stores are written by the SDK (``write.history``: real captured calls moved to past days;
``write.labels``: ``Recorder.log_label`` now, so every label arrives weeks after its
prediction). The references are computed from what the tests logged (the truth frames), not
from the store, so the labels join is checked too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn import datasets, metrics
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import predlog
from predlog.analysis import PerformanceResult, performance, prediction_drift, when_shifted
from predlog.replay import Store

START = "2026-11-01"
COUNTRIES = ["DE", "FR", "US"]
RTOL = 1e-9


@dataclasses.dataclass
class Logged:
    """A store and the truth of what was logged into it: one row per call."""

    root: Path
    truth: pd.DataFrame  # row, ts, day, segment columns, prediction, label (NaN: none), status, weight


def close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=RTOL, atol=1e-12, equal_nan=True
    )


def quiet(fn: Any, *args: Any, **kwargs: Any) -> float:
    """A scikit-learn metric, NaN where it raises (as performance() reports an undefined metric)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(fn(*args, **kwargs))
        except ValueError:
            return float("nan")


def weak_model(X: np.ndarray, y: np.ndarray, n: int, seed: int, **kw: Any) -> Any:
    """A model fitted on ``n`` random rows, as many of each class: right most of the time, not always."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), n // len(classes), replace=False) for c in classes])
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, **kw)).fit(X[pick], y[pick])


def features_of(X: np.ndarray, k: int = 4) -> pd.DataFrame:
    return pd.DataFrame({f"x{j}": X[:, j] for j in range(k)})


def truth_of(ts: pd.Series, prediction: Any, label: Any, segments: dict[str, Any], status: Any = "ok") -> pd.DataFrame:
    """What was logged, one row per call: its time, day, segments, prediction, label (NaN:
    none), status and weight (1: every call kept)."""
    frame = pd.DataFrame({"row": np.arange(len(ts)), "ts": ts, "day": ts.dt.floor("D"), **segments})
    frame["prediction"] = list(prediction) if np.ndim(prediction) == 2 else prediction
    frame["label"], frame["status"], frame["weight"] = label, status, 1.0
    return frame


# ---------------------------------------------------------------- stores


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory, write: Any) -> Logged:
    """Breast cancer: a logistic regression's probability of class 1, rounded to 2 decimals
    (ties, and scores of exactly 0 and 1), over 4 days and 3 countries. 85 % of rows labeled
    (0/1), five labels corrected later; 3 NaN scores; 6 calls that failed (labeled too)."""
    root = tmp_path_factory.mktemp("cancer") / "store"
    X, y = datasets.load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(3)
    score = np.round(weak_model(X, y, 40, seed=3).predict_proba(X)[:, 1], 2)
    score[[7, 100, 300]] = np.nan
    fail = np.zeros(len(y), bool)
    fail[rng.choice(len(y), 6, replace=False)] = True
    country = rng.choice(COUNTRIES, len(y))
    ts = write.days_apart(START, len(y), 4, seed=3)
    stored = write.history(
        root, "cancer", features_of(X), score, ts, context=[{"country": c} for c in country], fail=fail
    )
    labeled = rng.random(len(y)) < 0.85
    ids = stored.set_index("row")["prediction_id"]
    rows = np.flatnonzero(labeled)
    write.labels(root, y[rows], prediction_ids=[ids[r] for r in rows])
    corrected = rows[:5]
    write.labels(root, 1 - y[corrected], prediction_ids=[ids[r] for r in corrected])  # the latest label wins
    label = np.where(labeled, y, np.nan)
    label[corrected] = 1 - y[corrected]
    status = np.where(fail, "error", "ok")
    truth = truth_of(ts, np.where(fail, np.nan, score), label, {"context.country": country}, status)
    return Logged(root, truth)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory, write: Any) -> Logged:
    """Iris: probability vectors of 3 classes, labels the class index, 3 days, 2 sites."""
    root = tmp_path_factory.mktemp("iris") / "store"
    X, y = datasets.load_iris(return_X_y=True)
    rng = np.random.default_rng(5)
    order = rng.permutation(2 * len(y))  # the dataset is sorted by class; its rows come in any order
    X, y = np.vstack([X, X + 0.05])[order], np.concatenate([y, y])[order]  # 300 rows
    proba = weak_model(X, y, 12, seed=5).predict_proba(X)
    site = rng.choice(["north", "south"], len(y))
    ts = write.days_apart(START, len(y), 3, seed=5)
    stored = write.history(root, "iris", features_of(X).assign(site=site), proba, ts)
    rows = np.flatnonzero(rng.random(len(y)) < 0.9)
    write.labels(root, y[rows], prediction_ids=list(stored.set_index("row")["prediction_id"][rows]))
    label = np.full(len(y), np.nan)
    label[rows] = y[rows]
    return Logged(root, truth_of(ts, proba, label, {"features.site": site}))


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory, write: Any) -> Logged:
    """Wine: class names (strings) predicted and labeled, 3 days, 2 countries; and, as model
    ``cancer-names``, breast cancer's "malignant"/"benign" for a binary average."""
    root = tmp_path_factory.mktemp("wine") / "store"
    X, y = datasets.load_wine(return_X_y=True)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(y))  # sorted by class, like iris
    X, y = X[order], y[order]
    names = np.array(["barolo", "grignolino", "barbera"], dtype=object)
    predicted = names[weak_model(X, y, 15, seed=7).predict(X)]
    country = rng.choice(COUNTRIES[:2], len(y))
    ts = write.days_apart(START, len(y), 3, seed=7)
    stored = write.history(root, "wine", features_of(X), predicted, ts, context=[{"country": c} for c in country])
    write.labels(root, names[y], prediction_ids=list(stored["prediction_id"]))
    truth = truth_of(ts, predicted, names[y], {"context.country": country})
    Xc, yc = datasets.load_breast_cancer(return_X_y=True)
    diagnosis = np.array(["malignant", "benign"], dtype=object)
    said = diagnosis[weak_model(Xc, yc, 30, seed=8).predict(Xc)]
    ts_c = write.days_apart(START, len(yc), 3, seed=8)
    stored_c = write.history(root, "cancer-names", features_of(Xc), said, ts_c)
    write.labels(root, diagnosis[yc], prediction_ids=list(stored_c["prediction_id"]))
    truth.attrs["names"] = truth_of(ts_c, said, diagnosis[yc], {})
    return Logged(root, truth)


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory, write: Any) -> Logged:
    """Diabetes: a ridge regression's predictions, labels the disease progression, 4 days."""
    root = tmp_path_factory.mktemp("diabetes") / "store"
    X, y = datasets.load_diabetes(return_X_y=True)
    pred = Ridge(alpha=1.0).fit(X[:200], y[:200]).predict(X)
    rng = np.random.default_rng(9)
    country = rng.choice(COUNTRIES, len(y))
    ts = write.days_apart(START, len(y), 4, seed=9)
    stored = write.history(root, "diabetes", features_of(X), pred, ts, context=[{"country": c} for c in country])
    rows = np.flatnonzero(rng.random(len(y)) < 0.8)
    write.labels(root, y[rows], prediction_ids=list(stored.set_index("row")["prediction_id"][rows]))
    label = np.full(len(y), np.nan)
    label[rows] = y[rows]
    return Logged(root, truth_of(ts, pred, label, {"context.country": country}))


# ---------------------------------------------------------------- references


def scored(truth: pd.DataFrame) -> pd.DataFrame:
    """The rows a metric is computed on: labeled, not failed, a usable prediction."""
    ok = truth["label"].notna() & (truth["status"] == "ok")
    ok &= truth["prediction"].map(lambda p: p is not None and not (isinstance(p, float) and np.isnan(p)))
    return truth[ok]


def sk_labels(y: Any, yp: Any, w: Any, average: str, pos_label: Any = 1) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of classes ``yp`` against ``y``, as performance() computes them."""
    kw: dict[str, Any] = {"average": average, "zero_division": np.nan, "sample_weight": w, "pos_label": pos_label}
    return {
        "accuracy": quiet(metrics.accuracy_score, y, yp, sample_weight=w),
        "precision": quiet(metrics.precision_score, y, yp, **kw),
        "recall": quiet(metrics.recall_score, y, yp, **kw),
        "f1": quiet(metrics.f1_score, y, yp, **kw),
    }


def sk_binary(rows: pd.DataFrame, threshold: float = 0.5, average: str = "macro") -> dict[str, float]:
    y, p, w = rows["label"].to_numpy().astype(int), rows["prediction"].to_numpy(dtype=float), rows["weight"].to_numpy()
    out = sk_labels(y, (p >= threshold).astype(int), w, average)
    out["roc_auc"] = quiet(metrics.roc_auc_score, y, p, sample_weight=w)
    out["log_loss"] = quiet(metrics.log_loss, y, p, sample_weight=w, labels=[0, 1])
    return out


def sk_vectors(rows: pd.DataFrame, average: str) -> dict[str, float]:
    y, P, w = rows["label"].to_numpy().astype(int), np.vstack(rows["prediction"].to_list()), rows["weight"].to_numpy()
    out = sk_labels(y, P.argmax(axis=1), w, average)
    out["roc_auc"] = quiet(
        metrics.roc_auc_score, y, P, sample_weight=w, multi_class="ovr", average=average, labels=[0, 1, 2]
    )
    out["log_loss"] = quiet(metrics.log_loss, y, P, sample_weight=w, labels=[0, 1, 2])
    return out


def sk_classes(rows: pd.DataFrame, average: str, pos_label: Any = 1) -> dict[str, float]:
    return sk_labels(
        rows["label"].to_numpy(), rows["prediction"].to_numpy(), rows["weight"].to_numpy(), average, pos_label
    )


def sk_regression(rows: pd.DataFrame) -> dict[str, float]:
    y, p, w = rows["label"].to_numpy(dtype=float), rows["prediction"].to_numpy(dtype=float), rows["weight"].to_numpy()
    return {
        "mae": quiet(metrics.mean_absolute_error, y, p, sample_weight=w),
        "rmse": quiet(metrics.root_mean_squared_error, y, p, sample_weight=w),
        "r2": quiet(metrics.r2_score, y, p, sample_weight=w),
    }


def compare(df: pd.DataFrame, truth: pd.DataFrame, keys: list[str], reference: Any, names: list[str]) -> int:
    """Each row of ``df`` (keyed by ``keys``; ``window_start`` is the truth's ``day``) against
    ``reference`` on the truth's scored rows of that key. Returns the rows compared."""
    rows = scored(truth)
    tkeys = ["day" if k == "window_start" else k for k in keys]
    for _, got in df.iterrows():
        mask = np.ones(len(rows), bool)
        for k, t in zip(keys, tkeys, strict=True):
            mask &= (rows[t] == got[k]).to_numpy()
        part = rows[mask]
        assert got["scored_rows"] == len(part), (dict(got[keys]), got["scored_rows"], len(part))
        want = reference(part) if len(part) else dict.fromkeys(names, np.nan)
        for name in names:
            close(got[name], want[name])
    return len(df)


# ---------------------------------------------------------------- binary scores


def test_binary_scores_per_day_and_country_equal_scikit_learn(cancer: Logged) -> None:
    with Store(cancer.root) as s:
        res = performance(s, window="1D", by="context.country")
    assert isinstance(res, PerformanceResult)
    assert res.summary["task"] == "classification"
    assert res.summary["rule"] == "score >= 0.5 is class 1"
    assert res.metrics == ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"]
    names = res.metrics
    assert compare(res.df, cancer.truth, ["window_start", "context.country"], sk_binary, names) == 12
    assert compare(res.by_group, cancer.truth, ["context.country"], sk_binary, names) == 3
    close([res.overall.iloc[0][n] for n in names], [sk_binary(scored(cancer.truth))[n] for n in names])
    # Counts: every call is a row; labels count wherever they landed; errors are rows, not scored.
    t = cancer.truth
    per_day = t.groupby("day").agg(rows=("row", "size"), labeled=("label", "count"))
    got = res.df.groupby("window_start")[["rows", "labeled_rows"]].sum()
    assert got["rows"].tolist() == per_day["rows"].tolist()
    assert got["labeled_rows"].tolist() == per_day["labeled"].tolist()
    overall = res.overall.iloc[0]
    assert overall["rows"] == len(t) and overall["weighted_rows"] == len(t)
    assert overall["scored_rows"] == len(scored(t)) < overall["labeled_rows"]  # NaN scores, failed calls
    close(overall["label_coverage"], t["label"].notna().mean())
    close(overall["error_rate"], (t["status"] == "error").mean())


def test_binary_average_threshold_and_summary(cancer: Logged) -> None:
    with Store(cancer.root) as s:
        res = performance(s, average="binary", threshold=0.3)
    assert res.summary["rule"] == "score >= 0.3 is class 1" and res.by_group is None
    assert list(res.df.columns[:2]) == ["window_start", "rows"]
    compare(res.df, cancer.truth, ["window_start"], lambda r: sk_binary(r, 0.3, "binary"), res.metrics)
    text = res.summary["text"]
    assert text.startswith("accuracy 0.") and "over 4 days; lowest" in text and "% of predictions labeled" in text
    worst = res.summary["worst"]
    assert worst["value"] == res.df["accuracy"].min()
    assert f"(n={worst['scored_rows']:,})" in text


def test_wilson_intervals_equal_scipy_binomtest(cancer: Logged) -> None:
    with Store(cancer.root) as s:
        res = performance(s, average="binary")
    rows = scored(cancer.truth)
    for _, got in res.df.iterrows():
        part = rows[rows["day"] == got["window_start"]]
        y, yp = part["label"].astype(int).to_numpy(), (part["prediction"] >= 0.5).astype(int).to_numpy()
        for name, k, n in (
            ("accuracy", int((y == yp).sum()), len(y)),
            ("precision", int(((y == 1) & (yp == 1)).sum()), int((yp == 1).sum())),
            ("recall", int(((y == 1) & (yp == 1)).sum()), int((y == 1).sum())),
        ):
            ci = binomtest(k, n).proportion_ci(method="wilson")
            close([got[f"{name}_low"], got[f"{name}_high"]], [ci.low, ci.high])
            assert got[f"{name}_low"] <= got[name] <= got[f"{name}_high"]
        day = cancer.truth[cancer.truth["day"] == got["window_start"]]
        ci = binomtest(int(day["label"].notna().sum()), len(day)).proportion_ci(method="wilson")
        close([got["label_coverage_low"], got["label_coverage_high"]], [ci.low, ci.high])


def test_labels_arriving_weeks_later_count_in_their_predictions_window(cancer: Logged) -> None:
    with Store(cancer.root) as s:
        joined = s.labeled("cancer")
        res = performance(s, start="2026-11-02", end="2026-11-03")
    lag = joined["label_ts"] - joined["ts"]
    assert lag.min() > pd.Timedelta(days=20)  # logged now, predicted in early November
    assert len(res.df) == 1 and res.df["window_start"].iloc[0] == pd.Timestamp("2026-11-02", tz="UTC")
    day = cancer.truth[cancer.truth["day"] == pd.Timestamp("2026-11-02", tz="UTC")]
    assert res.df["labeled_rows"].iloc[0] == day["label"].notna().sum()
    close(res.overall["accuracy"], sk_binary(scored(day))["accuracy"])


def test_task_regression_scores_the_float_as_a_number(cancer: Logged) -> None:
    with Store(cancer.root) as s:
        res = performance(s, task="regression", metrics=["mae", "rmse"])
    assert res.summary["task"] == "regression" and res.metrics == ["mae", "rmse"]
    assert "r2" not in res.df.columns and "accuracy" not in res.df.columns
    compare(res.df, cancer.truth, ["window_start"], sk_regression, ["mae", "rmse"])


# ---------------------------------------------------------------- probability vectors


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
def test_probability_vectors_equal_scikit_learn(iris: Logged, average: str) -> None:
    with Store(iris.root) as s:
        res = performance(s, by="site", average=average)
    assert res.summary["rule"].startswith("argmax of the probability vector")
    assert res.segments == ["features.site"] and "features.site" in res.df.columns
    names = res.metrics
    assert "roc_auc" in names and "log_loss" in names
    compare(res.df, iris.truth, ["window_start", "features.site"], lambda r: sk_vectors(r, average), names)
    compare(res.by_group, iris.truth, ["features.site"], lambda r: sk_vectors(r, average), names)
    want = sk_vectors(scored(iris.truth), average)
    close([res.overall.iloc[0][n] for n in names], [want[n] for n in names])


# ---------------------------------------------------------------- class values


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
def test_string_classes_equal_scikit_learn(wine: Logged, average: str) -> None:
    with Store(wine.root) as s:
        res = performance(s, model="wine", by="context.country", average=average)
    assert res.summary["rule"] == "the class value as is"
    assert res.metrics == ["accuracy", "precision", "recall", "f1"]
    ref = lambda r: sk_classes(r, average)  # noqa: E731
    compare(res.df, wine.truth, ["window_start", "context.country"], ref, res.metrics)
    compare(res.by_group, wine.truth, ["context.country"], ref, res.metrics)


def test_binary_average_of_named_classes(wine: Logged) -> None:
    names = wine.truth.attrs["names"]
    with Store(wine.root) as s:
        res = performance(s, model="cancer-names", average="binary", positive_label="malignant")
        with pytest.raises(ValueError, match="needs positive_label"):
            performance(s, model="cancer-names", average="binary")
        with pytest.raises(ValueError, match="is not a class"):
            performance(s, model="cancer-names", average="binary", positive_label="benignant")
        with pytest.raises(ValueError, match="needs two classes"):
            performance(s, model="wine", average="binary", positive_label="barolo")
    ref = lambda r: sk_classes(r, "binary", "malignant")  # noqa: E731
    compare(res.df, names, ["window_start"], ref, res.metrics)


# ---------------------------------------------------------------- regression


def test_regression_per_day_and_country_equals_scikit_learn(diabetes: Logged) -> None:
    with Store(diabetes.root) as s:
        res = performance(s, by="context.country")
        hourly = performance(s, window="6h")
    assert res.summary["task"] == "regression" and res.summary["rule"] == "the prediction as a number"
    assert res.metrics == ["mae", "rmse", "r2"]
    assert compare(res.df, diabetes.truth, ["window_start", "context.country"], sk_regression, res.metrics) == 12
    compare(res.by_group, diabetes.truth, ["context.country"], sk_regression, res.metrics)
    want = sk_regression(scored(diabetes.truth))
    close([res.overall.iloc[0][m] for m in res.metrics], [want[m] for m in res.metrics])
    assert res.summary["text"].startswith("mae ") and "highest" in res.summary["text"]
    assert len(hourly.df) == 16
    six = diabetes.truth.assign(day=diabetes.truth["ts"].dt.floor("6h"))
    compare(hourly.df, six, ["window_start"], sk_regression, hourly.metrics)


def test_windows_start_where_duckdb_time_bucket_starts_them(diabetes: Logged) -> None:
    import duckdb

    ts = diabetes.truth["ts"]
    with Store(diabetes.root) as s:
        for window, interval in (("1h", "1 hour"), ("7d", "7 days"), ("90min", "90 minutes"), ("2d", "2 days")):
            got = sorted(performance(s, window=window).df["window_start"])
            con = duckdb.connect()
            con.execute("SET TimeZone = 'UTC'")
            con.register("frame", pd.DataFrame({"ts": ts}))
            want = con.sql(f"SELECT DISTINCT time_bucket(INTERVAL '{interval}', ts) AS w FROM frame ORDER BY w").df()
            assert [pd.Timestamp(x) for x in got] == [pd.Timestamp(x).tz_convert("UTC") for x in want["w"]], window


# ---------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory, write: Any) -> Logged:
    """6,000 calls kept at 10 % (errors always kept: 5 % of calls fail), one call per request;
    every request labeled, so only the kept calls' labels join."""
    root = tmp_path_factory.mktemp("sampled") / "store"
    X, y = datasets.load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(11)
    pick = rng.integers(0, len(y), 6_000)
    score = weak_model(X, y, 40, seed=11).predict_proba(X)[:, 1][pick]
    fail = rng.random(len(pick)) < 0.05
    ts = write.days_apart(START, len(pick), 2, seed=11)
    stored = write.history(root, "sampled", features_of(X[pick], 2), score, ts, fail=fail, sample_rate=0.1)
    write.labels(root, y[pick], request_ids=[f"sampled-1-{i}" for i in range(len(pick))])
    truth = pd.DataFrame(
        {
            "row": np.arange(len(pick)),
            "ts": ts,
            "day": ts.dt.floor("D"),
            "prediction": np.where(fail, np.nan, score),
            "label": y[pick].astype(float),
            "status": np.where(fail, "error", "ok"),
        }
    )
    truth["kept"] = truth["row"].isin(stored["row"])
    truth["weight"] = truth["row"].map(1.0 / stored.set_index("row")["sample_rate"])
    return Logged(root, truth)


def test_sampled_rows_are_weighted_back_to_the_calls(sampled: Logged) -> None:
    t = sampled.truth
    kept = t[t["kept"]]
    assert set(kept.loc[kept["status"] == "error", "weight"]) == {1.0}  # errors kept at rate 1
    assert set(kept.loc[kept["status"] == "ok", "weight"]) == {10.0}
    with Store(sampled.root) as s:
        res = performance(s, average="binary")
    o = res.overall.iloc[0]
    assert o["rows"] == len(kept) and o["labeled_rows"] == len(kept)  # every kept call has its label
    close(o["weighted_rows"], kept["weight"].sum())
    # Weighted share of errors: the calls' error rate, not the rows' (where errors are ~1 in 3).
    raw_share = (kept["status"] == "error").mean()
    true_share = (t["status"] == "error").mean()
    close(o["error_rate"], np.average(kept["status"] == "error", weights=kept["weight"]))
    assert raw_share > 0.25 and abs(o["error_rate"] - true_share) < 0.015
    assert o["error_rate_low"] < true_share < o["error_rate_high"]
    # Metrics equal scikit-learn with sample_weight on the kept rows, close to the truth of all calls.
    want = sk_binary(scored(kept), average="binary")
    close([o[m] for m in res.metrics], [want[m] for m in res.metrics])
    compare(res.df, kept, ["window_start"], lambda r: sk_binary(r, average="binary"), res.metrics)
    everything = sk_binary(scored(t).assign(weight=1.0), average="binary")
    assert abs(o["accuracy"] - everything["accuracy"]) < 0.04
    assert abs(o["roc_auc"] - everything["roc_auc"]) < 0.04
    # Kish's effective number of rows (errors weigh 1, the rest 10) sets the error rate's interval.
    w = kept["weight"]
    n, p, z = w.sum() ** 2 / (w**2).sum(), o["error_rate"], 1.959963984540054
    assert n < len(kept)
    center = (2 * n * p + z * z) / (2 * (n + z * z))
    half = z / (2 * (n + z * z)) * np.sqrt(4 * n * p * (1 - p) + z * z)
    close([o["error_rate_low"], o["error_rate_high"]], [center - half, center + half])


@pytest.fixture(scope="module")
def reweighted(tmp_path_factory: pytest.TempPathFactory, write: Any) -> dict[str, Logged]:
    """Three models (a score, probability vectors, a regression), each logged by two versions
    on the same days, kept at 50 % and 20 %: the rows of a window weigh 2 or 5."""
    root = tmp_path_factory.mktemp("reweighted") / "store"
    rng = np.random.default_rng(13)
    Xc, yc = datasets.load_breast_cancer(return_X_y=True)
    Xi, yi = datasets.load_iris(return_X_y=True)
    Xd, yd = datasets.load_diabetes(return_X_y=True)
    answers = {
        "score": (Xc, yc.astype(float), weak_model(Xc, yc, 40, seed=13).predict_proba(Xc)[:, 1]),
        "vectors": (Xi, yi.astype(float), weak_model(Xi, yi, 12, seed=13).predict_proba(Xi)),
        "regression": (Xd, yd, Ridge().fit(Xd[:150], yd[:150]).predict(Xd)),
    }
    out = {}
    for model, (X, y, answer) in answers.items():
        parts = []
        for version, rate in (("a", 0.5), ("b", 0.2)):
            pick = rng.integers(0, len(y), 1_200)
            site = rng.choice(["north", "south"], len(pick))
            ts = write.days_apart(START, len(pick), 2, seed=int(rng.integers(1000)))
            stored = write.history(
                root,
                model,
                features_of(X[pick], 2).assign(site=site),
                answer[pick],
                ts,
                version=version,
                sample_rate=rate,
            )
            write.labels(root, y[pick], request_ids=[f"{model}-{version}-{i}" for i in range(len(pick))])
            kept = stored.set_index("row")
            part = pd.DataFrame({"ts": ts, "features.site": site, "label": y[pick], "status": "ok"})
            part["prediction"] = list(answer[pick]) if answer.ndim == 2 else answer[pick]
            part = part[part.index.isin(kept.index)]
            part["weight"] = 1.0 / kept.loc[part.index, "sample_rate"].to_numpy()
            parts.append(part)
        truth = pd.concat(parts, ignore_index=True)
        truth["day"] = truth["ts"].dt.floor("D")
        out[model] = Logged(root, truth)
    return out


@pytest.mark.parametrize(
    ("model", "average", "reference"),
    [
        ("score", "macro", lambda r: sk_binary(r)),
        ("score", "binary", lambda r: sk_binary(r, average="binary")),
        ("vectors", "weighted", lambda r: sk_vectors(r, "weighted")),
        ("vectors", "macro", lambda r: sk_vectors(r, "macro")),
        ("regression", "macro", sk_regression),
    ],
)
def test_rows_of_different_weights_equal_scikit_learn_with_sample_weight(
    reweighted: dict[str, Logged], model: str, average: str, reference: Any
) -> None:
    logged = reweighted[model]
    assert set(logged.truth["weight"]) == {2.0, 5.0}
    with Store(logged.root) as s:
        res = performance(s, model=model, by="site", average=average)
    assert compare(res.df, logged.truth, ["window_start", "features.site"], reference, res.metrics) == 4
    compare(res.by_group, logged.truth, ["features.site"], reference, res.metrics)
    want = reference(scored(logged.truth))
    close([res.overall.iloc[0][m] for m in res.metrics], [want[m] for m in res.metrics])
    close(res.overall.iloc[0]["weighted_rows"], logged.truth["weight"].sum())


# ---------------------------------------------------------------- edge cases


def test_no_labels_at_all(store: Path, write: Any) -> None:
    X, _ = datasets.load_breast_cancer(return_X_y=True)
    write.history(store, "m", features_of(X[:50]), np.linspace(0, 1, 50), write.days_apart(START, 50, 2))
    with Store(store) as s:
        res = performance(s)
    o = res.overall.iloc[0]
    assert o["rows"] == 50 and o["labeled_rows"] == 0 and o["label_coverage"] == 0.0
    assert res.summary["task"] == "classification" and "no labels yet" in res.summary["rule"]
    assert all(np.isnan(o[m]) for m in res.metrics)
    assert res.df["accuracy"].isna().all() and len(res.df) == 2
    assert res.summary["text"].startswith("No labels to score yet: 0 of 50 predictions over 2 days")
    json.dumps(res.to_dict(), allow_nan=False)
    assert "No labels" in res._repr_html_()


def test_one_class_in_a_window_a_single_row_and_bool_labels(store: Path, write: Any) -> None:
    X, _ = datasets.load_iris(return_X_y=True)
    ts = pd.Series(
        [pd.Timestamp("2026-11-01 10:00", tz="UTC")] * 4
        + [pd.Timestamp("2026-11-02 10:00", tz="UTC")] * 3
        + [pd.Timestamp("2026-11-03 10:00", tz="UTC")]
    )
    scores = [0.9, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.55]
    labels = [True, True, True, True, False, True, False, True]  # day 1: one class only
    stored = write.history(store, "m", features_of(X[:8]), scores, ts)
    write.labels(store, labels, prediction_ids=list(stored["prediction_id"]))
    with Store(store) as s:
        res = performance(s)
    assert res.summary["rule"] == "score >= 0.5 is class 1" and res.summary["positive_label"] is True
    truth = pd.DataFrame(
        {"day": ts.dt.floor("D"), "prediction": scores, "label": np.array(labels, float), "status": "ok", "weight": 1.0}
    )
    compare(res.df, truth, ["window_start"], sk_binary, res.metrics)
    first, _, single = (res.df.iloc[i] for i in range(3))
    assert np.isnan(first["roc_auc"]) and first["accuracy"] == 0.75
    assert single["scored_rows"] == 1 and np.isnan(single["roc_auc"]) and single["accuracy"] == 1.0
    assert not np.isnan(res.overall.iloc[0]["roc_auc"])
    assert "lowest" not in res.summary["text"] and res.summary.get("worst") is None  # no window of 30 scored rows


def test_nan_predictions_and_labels_are_not_scored(tmp_path: Path, store_writer: Any) -> None:
    """NaN in files that have no null: DuckDB folds isnan() from Parquet statistics, which
    leave NaN out; NaN scores and labels must still count as missing."""
    rng = np.random.default_rng(4)
    n = 200
    score = rng.random(n)
    score[::10] = np.nan
    label = (rng.random(n) < 0.5).astype(float)
    label[5::20] = np.nan
    ts = pd.Timestamp(START, tz="UTC") + pd.to_timedelta(np.arange(n) * 600, unit="s")
    store_writer(tmp_path / "s", pd.DataFrame({"ts": ts, "prediction": score, "x": rng.random(n)}))
    with Store(tmp_path / "s") as s:
        rows = s.predictions("m", columns=["prediction_id"])
        labels = rng.permutation(len(rows))  # any order
    frame = rows.iloc[labels].assign(label=label[labels])
    rec = predlog.Recorder(store=str(tmp_path / "s"), model="m")
    try:
        rec.log_labels(frame[["prediction_id", "label"]])
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    ok = ~np.isnan(score) & ~np.isnan(label)
    with Store(tmp_path / "s") as s:
        res = performance(s, window="7D", task="classification")
    o = res.overall.iloc[0]
    assert o["scored_rows"] == ok.sum()
    close(
        [o["roc_auc"], o["accuracy"]],
        [metrics.roc_auc_score(label[ok], score[ok]), metrics.accuracy_score(label[ok], score[ok] >= 0.5)],
    )


def test_two_entry_vectors_score_their_positive_entry(tmp_path: Path, store_writer: Any) -> None:
    """A vector of two entries is binary: ROC AUC of the positive entry (index 1, or
    ``positive_label``), equal to scikit-learn; a positive label that is not an index is refused."""
    X, y = datasets.load_breast_cancer(return_X_y=True)
    p = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[::2], y[::2]).predict_proba(X)
    ts = pd.Timestamp(START, tz="UTC") + pd.to_timedelta(np.arange(len(y)) * 300, unit="s")
    vectors = pd.Series([list(row) for row in p], dtype=object)
    store_writer(tmp_path / "s", pd.DataFrame({"ts": ts, "prediction": vectors, "x": X[:, 0]}))
    with Store(tmp_path / "s") as s:
        ids = s.predictions("m", columns=["prediction_id", "ts"]).sort_values("ts")["prediction_id"]
    rec = predlog.Recorder(store=str(tmp_path / "s"), model="m")
    try:
        rec.log_labels(pd.DataFrame({"prediction_id": ids.to_numpy(), "label": y}))
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    with Store(tmp_path / "s") as s:
        one = performance(s, window="30D").overall.iloc[0]
        zero = performance(s, window="30D", positive_label=0, average="binary").overall.iloc[0]
        with pytest.raises(ValueError, match="a class is an index into the vector"):
            performance(s, positive_label="yes")
        with pytest.raises(ValueError, match="the classes are 0 to 1"):
            performance(s, positive_label=2)
    close(
        [one["roc_auc"], one["log_loss"], one["accuracy"]],
        [metrics.roc_auc_score(y, p[:, 1]), metrics.log_loss(y, p), metrics.accuracy_score(y, p.argmax(1))],
    )
    close(
        [zero["roc_auc"], zero["recall"]],
        [metrics.roc_auc_score(y == 0, p[:, 0]), metrics.recall_score(y, p.argmax(1), pos_label=0)],
    )


def test_a_single_regression_row(store: Path, write: Any) -> None:
    X, y = datasets.load_diabetes(return_X_y=True)
    stored = write.history(store, "m", features_of(X[:1]), [150.0], write.days_apart(START, 1, 1))
    write.labels(store, [151.5], prediction_ids=list(stored["prediction_id"]))
    with Store(store) as s:
        res = performance(s)
    row = res.overall.iloc[0]
    assert res.summary["task"] == "regression" and row["scored_rows"] == 1
    close([row["mae"], row["rmse"]], [1.5, 1.5])
    assert np.isnan(row["r2"])  # scikit-learn: R² is not defined for fewer than two rows


def test_labels_of_several_types_ask_for_one_model(store: Path, write: Any) -> None:
    X, _ = datasets.load_iris(return_X_y=True)
    stored = write.history(store, "m", features_of(X[:4]), [0.1, 0.9, 0.4, 0.6], write.days_apart(START, 4, 1))
    ids = list(stored["prediction_id"])
    write.labels(store, [0, 1], prediction_ids=ids[:2])
    write.labels(store, ["no", "yes"], prediction_ids=ids[2:])
    with Store(store) as s, pytest.raises(ValueError, match="several types.*select one model and version"):
        performance(s)


def test_arguments_are_checked(cancer: Logged, diabetes: Logged) -> None:
    with Store(cancer.root) as s:
        # windows read as drift_over_time and the rules read them: pandas' widths and seconds too
        pd.testing.assert_frame_equal(performance(s, window="1h30min").df, performance(s, window=5400).df)
        with pytest.raises(ValueError, match="unknown metric 'auc'.*did you mean 'roc_auc'"):
            performance(s, metrics=["auc"])
        with pytest.raises(TypeError, match="unexpected keyword argument 'strat'.*'start'"):
            performance(s, strat="2026-11-01")
        with pytest.raises(TypeError, match="unexpected keyword argument 'columns'"):
            performance(s, columns=["ts"])
        with pytest.raises(ValueError, match="average must be one of"):
            performance(s, average="samples")
        with pytest.raises(ValueError, match="task must be one of"):
            performance(s, task="ranking")
        with pytest.raises(ValueError, match="positive_label=2"):
            performance(s, positive_label=2)
        with pytest.raises(ValueError, match="window"):
            performance(s, window="soon")
        res = performance(s, metrics=["roc_auc"], version="1")
        assert res.metrics == ["roc_auc"] and "accuracy" not in res.df.columns
    with Store(diabetes.root) as s, pytest.raises(ValueError, match="'roc_auc' does not apply: the task is regression"):
        performance(s, metrics=["roc_auc"])


def test_result_views(cancer: Logged) -> None:
    from matplotlib.figure import Figure

    with Store(cancer.root) as s:
        res = performance(s, by="context.country")
    out = res.to_dict()
    json.dumps(out, allow_nan=False)
    assert len(out["rows"]) == 12 and len(out["overall"]) == 1 and len(out["by_group"]) == 3
    assert out["summary"]["worst"]["segment"]["context.country"] in COUNTRIES
    html = res._repr_html_()
    assert "<table" in html and "accuracy" in html
    assert "PerformanceResult: accuracy" in repr(res)
    fig = res.plot()
    assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()) == 3
    assert isinstance(res.plot("roc_auc"), Figure)
    with pytest.raises(ValueError, match="no metric 'mae'"):
        res.plot("mae")


def test_a_model_whose_output_changed_kind_between_versions(tmp_path: Path) -> None:
    """Version 1 logged a score, version 2 a probability vector: the store reads the model's
    predictions as text. Scoring that text would call every prediction wrong: refused, and
    ``version=`` scores each kind with its own type (its files only)."""
    X, y = datasets.load_breast_cancer(return_X_y=True)
    p = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y).predict_proba(X)[:, 1]
    n = len(y)
    ts = pd.Timestamp(START, tz="UTC") + pd.to_timedelta(np.arange(n) * 600, unit="s")
    half = n // 2
    rec = predlog.Recorder(store=str(tmp_path), model="m")
    try:
        one = rec.log_frame(pd.DataFrame({"ts": ts[:half], "prediction": p[:half], "x": X[:half, 0]}), version="1")
        two = rec.log_frame(
            pd.DataFrame({"ts": ts[half:], "prediction": [[1 - v, v] for v in p[half:]], "x": X[half:, 0]}),
            version="2",
        )
        rec.log_labels(pd.DataFrame({"prediction_id": one + two, "label": y}))
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    with Store(tmp_path) as s:
        with pytest.raises(ValueError, match=r"two kinds \(version 1: single values, 2: lists\).*version="):
            performance(s, window="30D")
        with pytest.raises(ValueError, match=r"two kinds.*prediction_drift\(s, \.\.\., version=\.\.\.\)"):
            prediction_drift(s, {"end": ts[half]}, {})
        with pytest.raises(ValueError, match=r"two kinds.*when_shifted"):
            when_shifted(s, window="1D")
        assert prediction_drift(s, {"version": "1", "end": ts[half // 2]}, {"version": "1"}).summary["tested"] == 1
        v1 = performance(s, window="30D", version="1").overall.iloc[0]
        v2 = performance(s, window="30D", version="2").overall.iloc[0]
    close(
        [v1["accuracy"], v1["roc_auc"]],
        [metrics.accuracy_score(y[:half], p[:half] >= 0.5), metrics.roc_auc_score(y[:half], p[:half])],
    )
    close(
        [v2["accuracy"], v2["roc_auc"]],
        [metrics.accuracy_score(y[half:], p[half:] >= 0.5), metrics.roc_auc_score(y[half:], p[half:])],
    )


def test_one_output_of_a_dict_prediction(tmp_path: Path) -> None:
    """A model that returns {"score": ..., "label": ...}: ``prediction="score"`` scores that output."""
    X, y = datasets.load_breast_cancer(return_X_y=True)
    p = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y).predict_proba(X)[:, 1]
    rec = predlog.Recorder(store=str(tmp_path), model="m")
    predict = rec.capture(lambda x: {"score": float(x["p"]), "label": "benign" if x["p"] >= 0.5 else "malignant"})
    ids = []
    for v in p:
        predict({"p": float(v)})
        ids.append(predlog.last_prediction_id())
    try:
        rec.log_labels(pd.DataFrame({"prediction_id": ids, "label": y}))
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    with Store(tmp_path) as s:
        with pytest.raises(
            ValueError, match=r"name the output to score: performance\(s, prediction='prediction.score'\)"
        ):
            performance(s, window="1h")
        got = performance(s, window="1h", prediction="score").overall.iloc[0]
        also = performance(s, window="1h", prediction="prediction.score").overall.iloc[0]
    close(
        [got["roc_auc"], got["accuracy"], got["log_loss"]],
        [metrics.roc_auc_score(y, p), metrics.accuracy_score(y, p >= 0.5), metrics.log_loss(y, p)],
    )
    assert got["roc_auc"] == also["roc_auc"]


def test_two_kinds_on_one_day_live_rows_and_class_names_that_look_like_lists(tmp_path: Path) -> None:
    """The files read decide the column's type, so the check looks at them all: a selection of
    the score rows only, on a day whose other rows are vectors, is refused too. Live rows of
    another version are left out with ``version=``. Class names such as "[unk]" are classes."""
    t0 = pd.Timestamp(START, tz="UTC")
    n = 100
    y = np.arange(n) % 2
    score = np.where(y == 1, 0.8, 0.2)
    rec = predlog.Recorder(store=str(tmp_path / "a"), model="m")
    try:
        one = rec.log_frame(
            pd.DataFrame({"ts": t0 + pd.to_timedelta(np.arange(n), unit="min"), "prediction": score}), version="1"
        )
        later = t0 + pd.Timedelta(hours=12) + pd.to_timedelta(np.arange(n), unit="min")
        two = rec.log_frame(pd.DataFrame({"ts": later, "prediction": [[1 - v, v] for v in score]}), version="2")
        rec.log_labels(pd.DataFrame({"prediction_id": one + two, "label": np.r_[y, y]}))
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    with Store(tmp_path / "a") as s:
        with pytest.raises(ValueError, match="two kinds"):
            performance(s, end=t0 + pd.Timedelta(hours=6))  # only scores selected, vectors in the same day's files
        assert performance(s, version="1").overall["accuracy"].iloc[0] == 1.0

    live = predlog.Recorder(
        store=str(tmp_path / "b"), model="m", version="1", segment_max_age_s=3600, flush_interval_s=0.05
    )
    try:
        ids = live.log_frame(pd.DataFrame({"ts": t0 + pd.to_timedelta(np.arange(n), unit="min"), "prediction": score}))
        live.log_frame(
            pd.DataFrame(
                {"ts": t0 + pd.to_timedelta(np.arange(n), unit="min"), "prediction": [[1 - v, v] for v in score]}
            ),
            version="2",
        )
        live.log_labels(pd.DataFrame({"prediction_id": ids, "label": y}))
        deadline = time.monotonic() + 30
        while live.stats()["written"] < 2 * n and time.monotonic() < deadline:
            time.sleep(0.02)
        with Store(tmp_path / "b") as s:
            got = performance(s, version="1", include_live=True).overall.iloc[0]
        assert got["scored_rows"] == n and got["accuracy"] == 1.0
    finally:
        live.shutdown()

    names = np.array(["[unk]", "cat", "dog"])[np.arange(n) % 3]
    rec = predlog.Recorder(store=str(tmp_path / "c"), model="m", version="1")
    try:
        ids = rec.log_frame(pd.DataFrame({"ts": t0 + pd.to_timedelta(np.arange(n), unit="min"), "prediction": names}))
        rec.log_labels(pd.DataFrame({"prediction_id": ids, "label": names}))
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    with Store(tmp_path / "c") as s:
        assert performance(s).overall["accuracy"].iloc[0] == 1.0
        assert prediction_drift(s, {"end": t0 + pd.Timedelta(minutes=50)}, {}).summary["tested"] == 1


def test_vectors_with_infinite_entries_are_not_scored(tmp_path: Path, store_writer: Any) -> None:
    rng = np.random.default_rng(9)
    n = 60
    p = rng.random(n)
    vectors = [[1 - v, v] for v in p]
    vectors[3] = [-math.inf, 1.0]
    vectors[7] = [0.5, math.inf]
    ts = pd.Timestamp(START, tz="UTC") + pd.to_timedelta(np.arange(n), unit="min")
    store_writer(tmp_path / "s", pd.DataFrame({"ts": ts, "prediction": pd.Series(vectors, dtype=object), "x": p}))
    with Store(tmp_path / "s") as s:
        ids = s.predictions("m", columns=["prediction_id", "ts"]).sort_values("ts")["prediction_id"].to_numpy()
    y = (rng.random(n) < p).astype(int)
    rec = predlog.Recorder(store=str(tmp_path / "s"), model="m")
    try:
        rec.log_labels(pd.DataFrame({"prediction_id": ids, "label": y}))
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    ok = np.ones(n, bool)
    ok[[3, 7]] = False
    with Store(tmp_path / "s") as s:
        got = performance(s, window="1D").overall.iloc[0]
        with pytest.raises(ValueError, match="prediction='prediction\\[1\\]': name the prediction"):
            performance(s, prediction="prediction[1]")
    assert got["scored_rows"] == n - 2
    close(
        [got["accuracy"], got["roc_auc"]],
        [metrics.accuracy_score(y[ok], p[ok] >= 0.5), metrics.roc_auc_score(y[ok], p[ok])],
    )
