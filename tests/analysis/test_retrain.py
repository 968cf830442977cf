"""The retraining steps: a validated alert, a time-split training window, a paired held-out check."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from sklearn.metrics import accuracy_score, mean_absolute_error

import predlog
from predlog.analysis import Monitor, retrain, rules
from predlog.replay import Store

DAY0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
DAYS = 10
PER_DAY = 300
DRIFT_DAYS = {5, 6, 7}  # x moves for three days in a row
BLIP_DAY = 2  # and for one day alone


def day(i: int) -> dt.datetime:
    return DAY0 + dt.timedelta(days=i)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten days of a classifier's labeled predictions; feature ``x`` shifts on the drift days and the blip day."""
    store = tmp_path_factory.mktemp("retrain")
    rng = np.random.default_rng(3)
    frames = []
    for i in range(DAYS):
        labels = rng.integers(0, 2, PER_DAY)
        frames.append(
            pd.DataFrame(
                {
                    "ts": day(i) + pd.to_timedelta(np.sort(rng.integers(0, 86_400_000, PER_DAY)), unit="ms"),
                    "x": rng.normal(2.0 if i in DRIFT_DAYS or i == BLIP_DAY else 0.0, 1.0, PER_DAY),
                    "z": rng.normal(0.0, 1.0, PER_DAY),
                    "prediction": labels,
                    "label": labels,
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    rec = predlog.Recorder(store=str(store), model="churn", version="1.0")
    try:
        ids = rec.log_frame(frame, features=["x", "z"])
        rec.log_labels(frame.assign(prediction_id=ids)[["prediction_id", "label"]])
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    return store


def reference() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame({"x": rng.normal(0.0, 1.0, 2000), "z": rng.normal(0.0, 1.0, 2000)})


def test_drift_that_holds_three_days_is_validated_and_a_blip_is_not(history: Path) -> None:
    with Store(history) as s:
        fired = []
        monitor = Monitor(s, [rules.feature_drift(["x"], window="1D")], reference=reference(), on_alert=fired.append)
        assert len(monitor.check(at=day(3))) == 1  # the monitor alone fires on the blip
        fired.clear()
        held = retrain.validate_alert(monitor, consecutive=3, at=day(8))
        blip = retrain.validate_alert(monitor, consecutive=3, at=day(3))
        early = retrain.validate_alert(monitor, consecutive=3, at=day(7))
    assert held.validated and [a.rule for a in held.alerts] == ["feature_drift"]
    assert held.alerts[0].start == day(5) and held.alerts[0].end == day(8)
    assert held.summary["text"].startswith("Validated: churn: a feature drifted (x) on 3 consecutive 1D windows")
    assert list(held.df["breached"]) == [True, True, True]
    assert not blip.validated and blip.alerts == []
    assert "held on 1 of the last 3 windows" in blip.summary["text"]
    assert not early.validated and "held on 2 of the last 3 windows" in early.summary["text"]
    assert fired == []  # validating does not call the monitor's callbacks again
    assert monitor.rules[0].consecutive == 1  # nor change the monitor
    json.dumps(held.to_dict(), allow_nan=False)
    assert "Validated" in held._repr_html_()
    with pytest.raises(ValueError, match="consecutive must be"):
        retrain.validate_alert(monitor, consecutive=0)


def test_the_training_window_is_split_by_time_with_the_latest_days_held_out(history: Path) -> None:
    with Store(history) as s:
        window = retrain.training_window(s, days=DAYS, holdout_days=2, end=day(DAYS))
        ts = s.predictions(columns=["prediction_id", "ts"]).set_index("prediction_id")["ts"]
        default = retrain.training_window(s, days=5, end=day(DAYS))
    assert (window.start, window.split, window.end) == (day(0), day(DAYS - 2), day(DAYS))
    assert len(window.train) == (DAYS - 2) * PER_DAY and len(window.holdout) == 2 * PER_DAY
    assert ts[window.train.index].max() < day(DAYS - 2) <= ts[window.holdout.index].min()
    assert ts[window.train.index].is_monotonic_increasing  # rows in time order
    assert window.features == ["x", "z"] and list(window.X_holdout.columns) == ["x", "z"]
    assert window.y_train.tolist() == window.train["label"].tolist()
    assert len(default.holdout) == PER_DAY  # a fifth of 5 days
    assert list(window.df["rows"]) == [len(window.train), len(window.holdout)]
    json.dumps(window.to_dict(), allow_nan=False)
    with Store(history) as s:
        with pytest.raises(ValueError, match="no labeled predictions in the holdout part"):
            retrain.training_window(s, days=12, holdout_days=2, end=day(12))
        with pytest.raises(ValueError, match="holdout_days must be"):
            retrain.training_window(s, days=3, holdout_days=3)


def paired_score_z(worse: int, better: int, n: int, margin: float) -> float:
    """The paired score test's z of p_c − p_b = margin (the share wrong), the cell
    probabilities' maximum likelihood under H0 found numerically."""
    rest = n - worse - better

    def nll(q01: float) -> float:
        return -float(worse * np.log(max(q01 + margin, 1e-300)) + better * np.log(max(q01, 1e-300))
                      + rest * np.log(max(1 - 2 * q01 - margin, 1e-300)))  # fmt: skip

    q01 = optimize.minimize_scalar(nll, bounds=(max(0.0, -margin), (1 - margin) / 2), method="bounded",
                                   options={"xatol": 1e-14}).x  # fmt: skip
    return float((worse - better - n * margin) / np.sqrt(n * (2 * q01 + margin - margin**2)))


def test_holdout_check_scores_both_models_on_the_same_rows_like_scipy(tmp_path: Path) -> None:
    """Accuracy: the paired score test compare_versions applies to shadow pairs, a drop of
    more than the tolerance (default -0.01); at tolerance 0, McNemar's χ²."""
    rng = np.random.default_rng(5)
    n = 2000
    X = pd.DataFrame({"x": rng.normal(size=n)})
    y = rng.integers(0, 3, n)
    base = np.where(rng.random(n) < 0.85, y, (y + 1) % 3)
    worse = np.where(rng.random(n) < 0.78, y, (y + 2) % 3)
    frame = X.assign(label=y)

    rec = predlog.Recorder(store=str(tmp_path / "store"), model="m", version="2")
    try:
        candidate = rec.capture(lambda X: worse)  # a captured model: checking it is not traffic
        check = retrain.holdout_check(candidate, lambda X: base, frame)
        assert rec.flush(timeout_s=30)
    finally:
        rec.shutdown()
    assert rec.stats()["captured"] == 0
    row = check.df.iloc[0]
    assert check.task == "classification" and not check.passed
    assert row["candidate"] == pytest.approx(accuracy_score(y, worse), abs=1e-12)
    assert row["baseline"] == pytest.approx(accuracy_score(y, base), abs=1e-12)
    b = int(((base == y) & (worse != y)).sum())
    c = int(((worse == y) & (base != y)).sum())
    assert (row["baseline_only"], row["candidate_only"]) == (b, c)
    assert row["tolerance"] == -0.01
    assert row["p_value"] == pytest.approx(stats.norm.sf(paired_score_z(b, c, n, 0.01)), rel=1e-5)
    assert check.summary["text"].startswith("Held-out check failed: accuracy")
    plain = retrain.holdout_check(lambda X: worse, lambda X: base, frame, tolerance=0.0)
    chi2 = (b - c) ** 2 / (b + c)  # McNemar, no continuity correction
    assert plain.df.iloc[0]["p_value"] == pytest.approx(stats.chi2.sf(chi2, 1) / 2, rel=1e-9)

    same = retrain.holdout_check(lambda X: base, lambda X: base, frame)
    assert same.passed and same.df.iloc[0]["p_value"] > 0.999
    better = retrain.holdout_check(lambda X: base, lambda X: worse, frame)
    assert better.passed and "better by" in better.summary["text"]
    json.dumps(check.to_dict(), allow_nan=False)


def test_holdout_check_fails_a_drop_of_accuracy_beyond_the_tolerance_only_when_significant() -> None:
    """Within the tolerance (half a point lower) it passes; two points lower on 5,000 rows, it fails."""
    rng = np.random.default_rng(8)
    n = 5000
    y = rng.integers(0, 2, n)
    frame = pd.DataFrame({"x": np.zeros(n), "label": y})
    base = np.where(rng.random(n) < 0.90, y, 1 - y)
    for drop, passed in ((0.005, True), (0.04, False)):
        flip = (base == y) & (rng.random(n) < drop / 0.9)
        cand = np.where(flip, 1 - base, base)
        assert retrain.holdout_check(lambda X, c=cand: c, lambda X: base, frame).passed is passed


def test_holdout_check_for_regression_uses_the_mae_and_a_paired_t() -> None:
    """The MAE: compare_versions' paired test, ``ttest_rel(|e_c| / 1.05, |e_b|)``."""
    rng = np.random.default_rng(6)
    n = 500
    y = rng.normal(10.0, 3.0, n)
    frame = pd.DataFrame({"x": rng.normal(size=n), "target": y})
    base = y + rng.normal(0.0, 1.0, n)
    cand = y + rng.normal(0.0, 1.4, n)
    check = retrain.holdout_check(lambda X: cand, lambda X: base, frame, label="target")
    row = check.df.iloc[0]
    assert check.task == "regression" and not check.passed
    assert row["candidate"] == pytest.approx(mean_absolute_error(y, cand), rel=1e-12)
    assert row["baseline"] == pytest.approx(mean_absolute_error(y, base), rel=1e-12)
    assert row["tolerance"] == 1.05
    expected = stats.ttest_rel(np.abs(cand - y) / 1.05, np.abs(base - y), alternative="greater").pvalue
    assert row["p_value"] == pytest.approx(expected, rel=1e-9)
    assert retrain.holdout_check(lambda X: cand, lambda X: base, frame, label="target", tolerance=2.0).passed


def test_holdout_check_refuses_predictions_that_are_not_finite() -> None:
    """A NaN prediction would make every comparison False (a pass): it is an error instead."""
    n = 1000
    frame = pd.DataFrame({"x": np.arange(n, dtype=float), "label": np.arange(n) % 2})
    good = (np.arange(n) % 2).astype(float)
    half = np.where(np.arange(n) < 500, np.nan, good)
    for cand, count in ((np.full(n, np.nan), "1,000"), (half, "500"), (np.where(good == 1, np.inf, 0.0), "500")):
        with pytest.raises(ValueError, match=f"candidate_fn returned {count} of 1,000 predictions that are not finite"):
            retrain.holdout_check(lambda X, c=cand: c, lambda X: good, frame)
    labels = np.array(["a", None] * (n // 2), dtype=object)
    with pytest.raises(ValueError, match="baseline_fn returned 500 of 1,000 .*impute the features"):
        retrain.holdout_check(lambda X: np.array(["a"] * n, dtype=object), lambda X: labels, frame)
    regression = frame.assign(label=np.linspace(0.5, 9.5, n))
    with pytest.raises(ValueError, match="candidate_fn returned 500 of 1,000"):
        retrain.holdout_check(lambda X: half, lambda X: good, regression)
    with pytest.raises(ValueError, match="2 of 1,000 held-out rows have a missing or non-finite 'label'"):
        retrain.holdout_check(lambda X: good, lambda X: good, regression.assign(label=[np.nan, np.nan, *good[2:]]))


def test_holdout_check_says_what_is_wrong_with_its_input() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "label": [0, 1]})
    with pytest.raises(ValueError, match="one prediction per row"):
        retrain.holdout_check(lambda X: np.zeros((2, 2)), lambda X: np.zeros(2), frame)
    with pytest.raises(ValueError, match="no 'y' column"):
        retrain.holdout_check(lambda X: np.zeros(2), lambda X: np.zeros(2), frame, label="y")
    with pytest.raises(ValueError, match="task must be"):
        retrain.holdout_check(lambda X: np.zeros(2), lambda X: np.zeros(2), frame, task="ranking")
    with pytest.raises(ValueError, match="a negative difference \\(as in compare_versions\\): e.g. -0.01"):
        retrain.holdout_check(lambda X: np.zeros(2), lambda X: np.zeros(2), frame, tolerance=0.01)
    with pytest.raises(ValueError, match="at least 1"):
        retrain.holdout_check(lambda X: np.zeros(2), lambda X: np.zeros(2), frame, task="regression", tolerance=0.9)
