"""change_points (equal to ruptures' PELT; CUSUM and Page–Hinkley on planted steps) and when_shifted."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
import ruptures
from scipy import stats

from predlog.analysis import Shift, change_points, drift_over_time, when_shifted
from predlog.analysis._shift import default_penalty, robust_sigma
from predlog.replay import Store

T0 = pd.Timestamp("2026-11-01", tz="UTC")
SHIFT_DAY = pd.Timestamp("2026-11-09", tz="UTC")


def steps(levels: list[tuple[int, float]], noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """Segments of ``(length, level)`` plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.full(n, level) for n, level in levels])
    return x + rng.normal(scale=noise, size=len(x))


# ---------------------------------------------------------------------------- PELT


@pytest.mark.parametrize("penalty", [None, 0.5, 3.0, 20.0, 200.0])
def test_pelt_equals_ruptures(penalty: float | None) -> None:
    x = steps([(40, 0.0), (25, 3.0), (30, 1.0), (35, -2.0)], seed=1)
    pen = default_penalty(x) if penalty is None else penalty
    want = ruptures.Pelt(model="l2", min_size=2, jump=1).fit(x).predict(pen=pen)
    got = change_points(pd.Series(x), penalty=penalty)
    assert [c.index for c in got] + [len(x)] == want
    bounds = [0, *want]
    for j, c in enumerate(got):
        assert c.before == pytest.approx(np.mean(x[bounds[j] : bounds[j + 1]]), rel=1e-12)
        assert c.after == pytest.approx(np.mean(x[bounds[j + 1] : bounds[j + 2]]), rel=1e-12)
        assert c.delta == c.after - c.before and c.alarm is None
    if penalty is None:
        assert [c.index for c in got] == [40, 65, 95]


def test_default_penalty_is_bic_like_with_a_mad_sigma() -> None:
    x = steps([(50, 0.0), (50, 5.0)], noise=0.7, seed=2)
    sigma = stats.median_abs_deviation(np.diff(x), scale="normal") / math.sqrt(2)
    assert robust_sigma(x) == pytest.approx(sigma, rel=1e-12)
    assert sigma == pytest.approx(0.7, rel=0.15)  # the step moved one difference only
    assert default_penalty(x) == pytest.approx(2 * sigma**2 * math.log(len(x)), rel=1e-12)
    clean = np.r_[np.zeros(10), np.ones(10)]  # no noise: MAD 0, the differences' sd instead
    assert robust_sigma(clean) == pytest.approx(np.std(np.diff(clean)) / math.sqrt(2))
    assert [c.index for c in change_points(clean)] == [10]
    assert change_points(np.ones(30)) == [] and change_points([1.0, 2.0, 3.0]) == []


def test_nan_is_dropped_and_labels_refer_to_the_series_as_given() -> None:
    x = steps([(30, 0.0), (30, 4.0)], seed=3)
    index = pd.date_range(T0, periods=len(x), freq="h")
    s = pd.Series(x, index=index)
    s.iloc[[5, 29, 31, 45]] = math.nan
    got = change_points(s)
    kept = s.dropna().to_numpy()
    want = ruptures.Pelt(model="l2", min_size=2, jump=1).fit(kept).predict(pen=default_penalty(kept))
    assert len(got) == len(want) - 1 == 1
    assert got[0].index == 30 and got[0].at == index[30]
    assert got[0].before == pytest.approx(np.nanmean(s.iloc[:30]))
    assert got[0].after == pytest.approx(np.nanmean(s.iloc[30:]))


def test_flat_noisy_series_have_no_change_at_the_defaults() -> None:
    for seed in range(5):
        x = np.random.default_rng(100 + seed).normal(loc=3.0, scale=2.0, size=300)
        for method in ("pelt", "cusum", "page_hinkley"):
            assert change_points(x, method=method) == [], (seed, method)


# ---------------------------------------------------------------------------- detectors


@pytest.mark.parametrize("method", ["cusum", "page_hinkley"])
@pytest.mark.parametrize("seed", range(4))
def test_detectors_find_planted_steps(method: str, seed: int) -> None:
    x = steps([(80, 0.0), (80, 3.0), (80, 0.5)], noise=1.0, seed=10 + seed)
    index = pd.date_range(T0, periods=len(x), freq="D")
    got = change_points(pd.Series(x, index=index), method=method)
    assert len(got) == 2, got
    for c, true in zip(got, (80, 160), strict=True):
        assert abs(c.index - true) <= 3, (c, true)
        assert c.at == index[c.index]
        assert index[c.index] <= c.alarm <= index[true + 12]  # fires soon after the change starts
    assert got[0].delta == pytest.approx(3.0, abs=0.5) and got[1].delta == pytest.approx(-2.5, abs=0.5)


def test_detector_settings_are_in_robust_sigmas() -> None:
    x = steps([(60, 0.0), (60, 2.0)], noise=1.0, seed=7)
    for method in ("cusum", "page_hinkley"):
        found = change_points(x, method=method)
        assert [abs(c.index - 60) <= 3 for c in found] == [True], (method, found)
        assert change_points(x, method=method, threshold=1e6) == []
        assert change_points(x, method=method, drift=3.0) == []  # a 2-sigma step under a 3-sigma drift
        # Scaling the series scales sigma with it: the same points.
        scaled = change_points(x * 1000, method=method)
        assert [(c.index, c.alarm) for c in scaled] == [(c.index, c.alarm) for c in found]
    with pytest.raises(ValueError, match="method must be one of"):
        change_points(x, method="binseg")


# ---------------------------------------------------------------------------- when_shifted


@pytest.fixture(scope="module")
def shifted_store(tmp_path_factory: pytest.TempPathFactory, store_writer: Any) -> Any:
    """Breast cancer cases scored by a fitted model, 40 an hour for 14 days; from SHIFT_DAY on,
    malignant cases are sampled twice as often: the predicted probability of benign (class 1)
    falls. Three models: the probability (``m``), the class name (``cls``), the probability
    vector (``vec``); and ``flat``, without a change."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.rename(columns=lambda c: c.replace(" ", "_"))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    rng = np.random.default_rng(5)
    n = 14 * 24 * 40
    ts = T0 + pd.to_timedelta(np.sort(rng.integers(0, 14 * 86_400_000_000, size=n)), unit="us")
    late = np.asarray(ts >= SHIFT_DAY)
    malignant, benign = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    p_malignant = np.where(late, 0.7, 0.35)
    pick = np.where(rng.random(n) < p_malignant, rng.choice(malignant, n), rng.choice(benign, n))
    rows = X.iloc[pick].reset_index(drop=True)
    proba = model.predict_proba(rows)[:, 1]
    path = tmp_path_factory.mktemp("shift") / "store"
    features = list(rows.columns[:4])
    frame = rows[features].assign(ts=ts, prediction=proba, confidence=np.maximum(proba, 1 - proba))
    store_writer(path, frame, model="m", confidence="confidence", features=features)
    names = np.asarray(["malignant", "benign"])[(proba > 0.5).astype(int)]
    store_writer(path, frame.assign(prediction=names), model="cls", features=features)
    vectors = pd.Series([[1 - p, p] for p in proba], dtype=object)
    store_writer(path, frame.assign(prediction=vectors), model="vec", features=features)
    flat = np.where(rng.random(n) < 0.35, rng.choice(malignant, n), rng.choice(benign, n))
    flat_rows = X.iloc[flat].reset_index(drop=True)
    flat_frame = flat_rows[features].assign(ts=ts, prediction=model.predict_proba(flat_rows)[:, 1])
    store_writer(path, flat_frame, model="flat", features=features)
    return path


@pytest.mark.parametrize("window", ["1h", "6h", "1D"])
def test_when_shifted_names_the_day(shifted_store: Any, window: str) -> None:
    with Store(shifted_store) as s:
        shift = when_shifted(s, window=window, model="m")
    assert isinstance(shift, Shift)
    assert shift.at == SHIFT_DAY
    assert shift.before == pytest.approx(0.62, abs=0.06) and shift.after == pytest.approx(0.30, abs=0.06)
    assert shift.column == "prediction" and shift.window == window
    assert str(shift) == shift.summary["text"]
    assert re.fullmatch(r"prediction mean moved from 0\.\d+ to 0\.\d+ starting 2026-11-09 00:00 UTC", str(shift)), str(
        shift
    )
    assert shift.change_points[0].at == SHIFT_DAY or SHIFT_DAY in [c.at for c in shift.change_points]
    assert shift.series.index[0] == T0 and len(shift.series) == 14 * pd.Timedelta("1D") // pd.Timedelta(window)


def test_when_shifted_per_window_means_are_weighted_means(shifted_store: Any) -> None:
    with Store(shifted_store) as s:
        shift = when_shifted(s, window="1D", model="m")
        rows = s.predictions("m", columns=["ts", "prediction", "sample_rate"])
    assert shift is not None
    day = rows["ts"].dt.floor("D")
    want = rows.groupby(day)["prediction"].mean()
    got = shift.series
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12)
    assert list(shift.df["rows"]) == list(rows.groupby(day).size())


def test_change_points_of_drift_over_time_name_the_day(shifted_store: Any) -> None:
    with Store(shifted_store) as s:
        r = drift_over_time(s, {"end": T0 + pd.Timedelta(days=3)}, window="1D", model="m")
    points = change_points(r.wide["prediction"])
    largest = max(points, key=lambda c: abs(c.delta))
    assert points[0].at == largest.at == SHIFT_DAY
    assert largest.before < 0.05 < 0.2 < largest.after  # PSI rises from near 0


def test_class_and_vector_predictions(shifted_store: Any) -> None:
    with Store(shifted_store) as s:
        by_class = when_shifted(s, window="6h", model="cls")
        by_vector = when_shifted(s, window="6h", model="vec")
        confidence = when_shifted(s, "confidence", window="1D", model="m")
        feature = when_shifted(s, "mean_radius", window="1D", model="m")
    assert by_class is not None and by_class.at == SHIFT_DAY
    assert by_class.measure == "share of 'benign' in prediction"  # the most frequent class
    assert by_class.after < by_class.before
    assert by_vector is not None and by_vector.at == SHIFT_DAY
    assert by_vector.measure == "prediction mean class index (argmax)"
    assert by_vector.before == pytest.approx(by_class.before, rel=1e-9)  # index 1 = benign
    assert confidence is None or confidence.column == "confidence"  # both classes are about as sure
    assert feature is not None and feature.at == SHIFT_DAY and feature.column == "features.mean_radius"
    assert feature.after > feature.before  # malignant tumours are larger


def test_nothing_changed_is_none(shifted_store: Any) -> None:
    with Store(shifted_store) as s:
        assert when_shifted(s, window="6h", model="flat") is None
        with pytest.raises(ValueError, match="not a column"):
            when_shifted(s, "nope", model="m")
        with pytest.raises(TypeError):
            when_shifted(s, model="m", bogus=1)


def test_shift_result_views(shifted_store: Any) -> None:
    import json

    pytest.importorskip("matplotlib")
    with Store(shifted_store) as s:
        shift = when_shifted(s, window="6h", model="m", start=T0 + pd.Timedelta(days=4))
    assert shift is not None and shift.at == SHIFT_DAY and shift.series.index[0] == T0 + pd.Timedelta(days=4)
    data = shift.to_dict()
    json.dumps(data)
    assert data["summary"]["at"] == "2026-11-09T00:00:00+00:00"
    assert "<table" in shift._repr_html_()
    fig = shift.plot()
    assert fig.axes and fig.axes[0].lines


def test_vector_elements_by_name_and_a_feature_called_class(
    shifted_store: Any, tmp_path: Any, store_writer: Any
) -> None:
    """``prediction[1]`` names an element of a probability vector (not a feature), and a
    string feature named ``class`` is a class, not a vector's argmax."""
    with Store(shifted_store) as s:
        element = when_shifted(s, "prediction[1]", window="1D", model="vec")
        plain = when_shifted(s, window="1D", model="m")
        r = drift_over_time(s, {"end": T0 + pd.Timedelta(days=3)}, window="1D", model="vec", features=["prediction[1]"])
    assert element is not None and plain is not None and element.column == "prediction[1]"
    np.testing.assert_allclose(element.series.to_numpy(), plain.series.to_numpy(), rtol=1e-12)
    assert list(r.df["feature"].unique()) == ["prediction[1]"]
    rng = np.random.default_rng(3)
    n = 6 * 24 * 10
    ts = T0 + pd.to_timedelta(np.arange(n) * 360, unit="s")
    frame = pd.DataFrame(
        {"ts": ts, "prediction": rng.random(n), "class": np.where(ts >= T0 + pd.Timedelta(days=3), "b", "a")}
    )
    store_writer(tmp_path / "store", frame, model="c")
    with Store(tmp_path / "store") as s:
        shift = when_shifted(s, "class", window="1D", model="c")
    assert shift is not None and shift.at == T0 + pd.Timedelta(days=3)
    assert shift.measure == "share of 'a' in features.class" or shift.measure == "share of 'b' in features.class"


def test_boolean_predictions_too_few_rows_and_weighted_levels(tmp_path: Any, store_writer: Any) -> None:
    """A boolean prediction is a class; windows under ``min_rows`` say so in a warning; the
    levels before and after weigh each window by its rows."""
    rng = np.random.default_rng(11)
    per_day = np.array([200, 200, 200, 200, 5, 200, 200, 200, 200, 200])  # day 4: a thin day
    day = np.repeat(np.arange(10), per_day)
    ts = T0 + pd.to_timedelta(day * 86_400 + rng.integers(0, 86_400, len(day)), unit="s")
    flag = rng.random(len(day)) < np.where(day >= 5, 0.8, 0.3)
    frame = pd.DataFrame({"ts": ts, "prediction": flag, "x": rng.random(len(day))}).sort_values("ts")
    store_writer(tmp_path / "store", frame, model="b")
    with Store(tmp_path / "store") as s:
        shift = when_shifted(s, window="1D", model="b", min_rows=1)
        with pytest.warns(
            UserWarning, match=r"0 of 10 windows of 1D have at least 500 values.*widen window= or lower min_rows="
        ):
            assert when_shifted(s, window="1D", model="b", min_rows=500) is None
        with pytest.warns(UserWarning, match=r"[23] of [23] windows of 7D.*a change needs 4: use a narrower window="):
            assert when_shifted(s, window="7D", model="b", min_rows=1) is None
    assert shift is not None and shift.at == T0 + pd.Timedelta(days=5)
    assert shift.measure in ("share of True in prediction", "share of False in prediction")
    share = frame["prediction"] if "True" in shift.measure else ~frame["prediction"]
    cuts = [T0, *(c.at for c in shift.change_points), T0 + pd.Timedelta(days=10)]
    k = cuts.index(shift.at)
    when = pd.to_datetime(frame["ts"])
    # Over the rows of each segment, not over its windows: the thin day counts for 5 rows.
    assert shift.before == pytest.approx(share[(when >= cuts[k - 1]) & (when < cuts[k])].mean(), rel=1e-12)
    assert shift.after == pytest.approx(share[(when >= cuts[k]) & (when < cuts[k + 1])].mean(), rel=1e-12)


@pytest.mark.parametrize("bad", [{"penalty": -1}, {"penalty": math.nan}, {"threshold": "8"}, {"drift": -0.5}])
def test_detector_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be a number >= 0"):
        change_points(
            pd.Series(np.r_[np.zeros(20), np.ones(20)]), method="cusum" if "penalty" not in bad else "pelt", **bad
        )
