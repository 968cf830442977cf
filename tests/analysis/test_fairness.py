"""fairness_audit(): metrics per group, gaps and measures equal to fairlearn's; intervals that
cover; sampled stores reweighted; bad input refused with a message that says what to do.

Stores are written by the SDK (``labeled_writer``: ``Recorder.log_frame`` then
``log_labels``; ``store_writer`` for rows with a ``sample_rate``). The references are
fairlearn's ``MetricFrame`` and fairness functions on the frames the tests logged, not on
what the store gives back, so the labels join is checked too.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    mean_prediction,
    selection_rate,
    true_positive_rate,
)
from fairlearn.metrics import count as fl_count
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, mean_absolute_error, precision_score

import predlog
from predlog.analysis import FairnessResult, fairness_audit
from predlog.replay import Store

RTOL = 1e-9
RATES = ["selection_rate", "tpr", "fpr", "fnr", "precision", "accuracy"]
FAIRLEARN = {
    "selection_rate": selection_rate,
    "tpr": true_positive_rate,
    "fpr": false_positive_rate,
    "fnr": false_negative_rate,
    "precision": precision_score,
    "accuracy": accuracy_score,
}


def close(actual: Any, expected: Any) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=RTOL, atol=1e-12, equal_nan=True
    )


def people(n: int, seed: int) -> pd.DataFrame:
    """A credit model's scores, with a lower score for gender x and region south (planted
    gaps) and labels drawn from a score that does not have them."""
    rng = np.random.default_rng(seed)
    gender = rng.choice(["f", "m", "x"], n, p=[0.46, 0.44, 0.10])
    region = rng.choice(["north", "south", "east"], n)
    age = np.round(rng.uniform(18, 80, n), 1)
    z = rng.normal(size=n)
    label = (rng.random(n) < 1 / (1 + np.exp(-1.5 * z))).astype(np.int64)
    logit = 1.5 * z - 0.7 * (gender == "x") - 0.3 * (region == "south") + rng.normal(scale=0.5, size=n)
    score = np.round(1 / (1 + np.exp(-logit)), 3)
    return pd.DataFrame({"age": age, "gender": gender, "region": region, "prediction": score, "label": label})


def frame_of(mf: MetricFrame) -> pd.DataFrame:
    return mf.by_group.dropna(how="all")  # fairlearn lists every combination; the audit the ones found


def reference(
    y: Any, p: Any, sensitive: Any, w: Any = None, metrics: Any = None, threshold: float = 0.5
) -> MetricFrame:
    """fairlearn's MetricFrame over the same rows (weights through ``sample_params``)."""
    yp = (np.asarray(p, dtype=float) >= threshold).astype(int)
    fns = {m: FAIRLEARN[m] for m in metrics or RATES}
    params = {m: {"sample_weight": np.asarray(w, dtype=float)} for m in fns} if w is not None else None
    return MetricFrame(
        metrics={**fns, "count": fl_count},
        y_true=np.asarray(y, dtype=int),
        y_pred=yp,
        sensitive_features=sensitive,
        sample_params=params,
    )


def assert_matches(got: FairnessResult, mf: MetricFrame, metrics: list[str], *, same_index: bool = True) -> None:
    """Every number of ``got`` that MetricFrame has, equal to 1e-9 (groups in the same order)."""
    want = frame_of(mf)
    assert len(got.by_group) == len(want)
    if same_index:
        assert list(got.by_group.index) == list(want.index)
    for m in metrics:
        close(got.by_group[m], want[m])
        close(got.overall[m], mf.overall[m])
        close(got.group_min()[m], mf.group_min()[m])
        close(got.group_max()[m], mf.group_max()[m])
        for method in ("between_groups", "to_overall"):
            close(got.difference(method)[m], mf.difference(method=method)[m])
            close(got.ratio(method)[m], mf.ratio(method=method)[m])


def assert_measures(got: FairnessResult, y: Any, p: Any, sensitive: Any, w: Any = None) -> None:
    yp = (np.asarray(p, dtype=float) >= 0.5).astype(int)
    y = np.asarray(y, dtype=int)
    kw = {"sensitive_features": sensitive, "sample_weight": w}
    m = got.measures["value"]
    close(m["demographic_parity_difference"], demographic_parity_difference(y, yp, **kw))
    close(m["demographic_parity_ratio"], demographic_parity_ratio(y, yp, **kw))
    close(m["equalized_odds_difference"], equalized_odds_difference(y, yp, **kw))
    close(m["equalized_odds_ratio"], equalized_odds_ratio(y, yp, **kw))
    close(m["equal_opportunity_difference"], equal_opportunity_difference(y, yp, **kw))


# ---------------------------------------------------------------- stores


@pytest.fixture(scope="module")
def credit(tmp_path_factory: pytest.TempPathFactory, labeled_writer: Any) -> tuple[Path, pd.DataFrame]:
    """3,000 scored people written by the SDK: gender and region as context, age a feature."""
    root = tmp_path_factory.mktemp("credit") / "store"
    frame = people(3000, seed=1)
    labeled_writer(root, frame, model="credit", context=["gender", "region"])
    return root, frame


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory, store_writer: Any) -> dict[str, Any]:
    """The same 40,000 calls stored twice: every row, and a sample that keeps every
    positive score and a quarter of the rest (``sample_rate`` 0.25), both labeled."""
    frame = people(40_000, seed=2)
    frame["ts"] = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(len(frame)), unit="s")
    rng = np.random.default_rng(3)
    keep = (frame["prediction"] >= 0.5) | (rng.random(len(frame)) < 0.25)
    rate = np.where(frame["prediction"] >= 0.5, 1.0, 0.25)
    stores = {}
    for name, rows in (("full", frame.assign(sample_rate=1.0)), ("sample", frame.assign(sample_rate=rate)[keep])):
        path = tmp_path_factory.mktemp(name) / "store"
        rows = rows.assign(row=np.arange(len(rows)))
        store_writer(path, rows, sample_rate="sample_rate", features=["age", "gender", "row"])
        with Store(path) as s:
            got = s.predictions(columns=["prediction_id", "features.row"])
        order = got["features.row"].to_numpy() if "features.row" in got else got["features"].map(lambda f: f["row"])
        labels = rows["label"].to_numpy()[np.asarray(order, dtype=np.int64)]
        rec = predlog.Recorder(store=str(path))
        try:
            rec.log_labels(pd.DataFrame({"prediction_id": got["prediction_id"].to_numpy(), "label": labels}))
            assert rec.flush(timeout_s=60)
        finally:
            rec.shutdown()
        stores[name] = path
    return {**stores, "frame": frame, "keep": keep.to_numpy(), "rate": rate}


# ---------------------------------------------------------------- equal to fairlearn


def test_one_sensitive_field_from_a_store_equals_fairlearn(credit: tuple[Path, pd.DataFrame]) -> None:
    root, frame = credit
    with Store(root) as s:
        got = fairness_audit(s, "context.gender", n_boot=0)
    mf = reference(frame["label"], frame["prediction"], frame["gender"].rename("context.gender"))
    assert_matches(got, mf, [*RATES, "count"])
    assert_measures(got, frame["label"], frame["prediction"], frame["gender"])
    assert got.by_group.index.name == "context.gender"
    assert list(got.df["count"]) == list(frame["gender"].value_counts().sort_index())


def test_two_sensitive_fields_are_intersectional_and_equal_fairlearn(credit: tuple[Path, pd.DataFrame]) -> None:
    root, frame = credit
    with Store(root) as s:
        got = fairness_audit(s, ["context.gender", "context.region"], n_boot=0, model="credit")
    sens = frame[["gender", "region"]].set_axis(["context.gender", "context.region"], axis=1)
    mf = reference(frame["label"], frame["prediction"], sens)
    assert len(got.by_group) == 9 and got.by_group.index.names == ["context.gender", "context.region"]
    assert_matches(got, mf, [*RATES, "count"])
    assert_measures(got, frame["label"], frame["prediction"], sens)


def test_a_weighted_dataframe_equals_fairlearn_with_sample_weight() -> None:
    frame = people(2500, seed=4)
    rng = np.random.default_rng(5)
    frame["sample_rate"] = rng.choice([1.0, 0.5, 0.1], len(frame))
    w = 1 / frame["sample_rate"].to_numpy()
    got = fairness_audit(frame, ["gender", "region"], n_boot=0, threshold=0.4)
    sens = frame[["gender", "region"]].set_axis(["features.gender", "features.region"], axis=1)
    mf = reference(frame["label"], frame["prediction"], sens, w, threshold=0.4)
    assert_matches(got, mf, [*RATES, "count"])
    renamed = frame.rename(columns={"prediction": "score", "label": "truth"})
    again = fairness_audit(renamed, "gender", n_boot=0, prediction="score", label="truth", threshold=0.4)
    one = reference(frame["label"], frame["prediction"], frame["gender"].rename("features.gender"), w, threshold=0.4)
    assert_matches(again, one, RATES)


def test_a_number_field_is_cut_into_quantile_bins(credit: tuple[Path, pd.DataFrame]) -> None:
    root, frame = credit
    with Store(root) as s:
        got = fairness_audit(s, "age", bins=4, n_boot=0, metrics=["selection_rate", "tpr", "count"])
    cuts = got.cuts["features.age"]
    assert len(cuts) == 3 and cuts == sorted(cuts)
    # bin i holds cuts[i-1] <= age < cuts[i]
    bin_of = np.searchsorted(np.asarray(cuts), frame["age"].to_numpy(), side="right")
    mf = reference(
        frame["label"], frame["prediction"], pd.Series(bin_of, name="bin"), metrics=["selection_rate", "tpr"]
    )
    close(got.by_group["selection_rate"].to_numpy(), mf.by_group["selection_rate"].to_numpy())
    close(got.by_group["tpr"].to_numpy(), mf.by_group["tpr"].to_numpy())
    assert list(got.df["count"]) == list(np.bincount(bin_of))
    assert got.by_group.index[0].startswith("[") and got.by_group.index[-1].endswith("]")
    assert got.summary["metrics"] == ["selection_rate", "tpr", "count"]


def test_a_regression_equals_fairlearn() -> None:
    rng = np.random.default_rng(6)
    n = 1200
    group = rng.choice(["a", "b", "c"], n)
    y = rng.normal(50, 10, n)
    p = y + rng.normal(0, 5, n) + 3 * (group == "c")
    w = rng.choice([1.0, 4.0], n)
    frame = pd.DataFrame({"prediction": p, "label": y, "group": group, "sample_rate": 1 / w})
    got = fairness_audit(frame, "group", n_boot=300)
    assert got.summary["task"] == "regression" and got.metrics == ["mae", "mean_prediction", "count"]
    mf = MetricFrame(
        metrics={"mae": mean_absolute_error, "mean_prediction": mean_prediction},
        y_true=y,
        y_pred=p,
        sensitive_features=pd.Series(group, name="features.group"),
        sample_params={"mae": {"sample_weight": w}, "mean_prediction": {"sample_weight": w}},
    )
    assert_matches(got, mf, ["mae", "mean_prediction"])
    assert got.measures.empty and "four_fifths" not in got.df.columns
    lo, hi = got.gaps.loc["mean_prediction", ["difference_low", "difference_high"]]
    assert lo < got.difference()["mean_prediction"] < hi


# ---------------------------------------------------------------- intervals


def test_bootstrap_intervals_cover_the_true_gap_at_about_the_stated_rate() -> None:
    """Two groups with selection rates 0.50 and 0.35 and true positive rates 0.8 and 0.6:
    over 120 samples, the 90 % intervals of the gaps cover 0.15 and 0.2 about 90 % of the time."""
    covered = {"dp": 0, "eop": 0}
    draws = 120
    for seed in range(draws):
        rng = np.random.default_rng(1000 + seed)
        n = 600
        group = np.where(rng.random(n) < 0.5, "a", "b")
        label = (rng.random(n) < 0.5).astype(int)
        tpr = np.where(group == "a", 0.8, 0.6)
        # P(pred=1) = 0.5 tpr + 0.5 fpr: fpr 0.2 for a (0.5), 0.1 for b (0.35)
        fpr = np.where(group == "a", 0.2, 0.1)
        pred = np.where(label == 1, rng.random(n) < tpr, rng.random(n) < fpr).astype(float)
        frame = pd.DataFrame({"prediction": pred, "label": label, "group": group})
        got = fairness_audit(frame, "group", n_boot=200, ci=0.9, seed=seed, metrics=["selection_rate", "tpr"])
        dp = got.measures.loc["demographic_parity_difference"]
        eop = got.measures.loc["equal_opportunity_difference"]
        covered["dp"] += dp["low"] <= 0.15 <= dp["high"]
        covered["eop"] += eop["low"] <= 0.2 <= eop["high"]
    for name, hits in covered.items():
        assert 0.8 <= hits / draws <= 0.97, (name, hits)


def test_intervals_are_seeded_and_every_gap_has_one(credit: tuple[Path, pd.DataFrame]) -> None:
    root, _ = credit
    with Store(root) as s:
        a = fairness_audit(s, "context.gender", n_boot=200, seed=7)
        b = fairness_audit(s, "context.gender", n_boot=200, seed=7)
        c = fairness_audit(s, "context.gender", n_boot=200, seed=8)
    pd.testing.assert_frame_equal(a.gaps, b.gaps)
    pd.testing.assert_frame_equal(a.df, b.df)
    assert not a.gaps.equals(c.gaps)
    rates = a.gaps.loc[RATES]
    for col in ("difference", "ratio", "difference_to_overall", "ratio_to_overall"):
        assert (rates[f"{col}_low"] <= rates[f"{col}_high"]).all() and rates[f"{col}_low"].notna().all()
    for m in RATES:
        assert ((a.df[f"{m}_low"] <= a.df[m]) & (a.df[m] <= a.df[f"{m}_high"])).all()
    assert a.measures[["low", "high"]].notna().all().all()


# ---------------------------------------------------------------- sampling, labels, small groups


def test_a_sampled_store_reweighted_equals_the_full_store_within_sampling_error(sampled: dict[str, Any]) -> None:
    with Store(sampled["full"]) as s:
        full = fairness_audit(s, "gender", n_boot=0)
    with Store(sampled["sample"]) as s:
        part = fairness_audit(s, "gender", n_boot=300)
    frame, keep = sampled["frame"], sampled["keep"]
    kept = frame[keep]
    w = 1 / sampled["rate"][keep]
    # exact on the rows kept, weighted
    mf = reference(kept["label"], kept["prediction"], kept["gender"].rename("features.gender"), w)
    assert_matches(part, mf, RATES)
    # the rows kept are a biased sample (every positive score): unweighted, the selection rate is far off
    raw = (kept["prediction"] >= 0.5).mean()
    assert raw - full.overall["selection_rate"] > 0.15
    for m in RATES:
        err = part.df[f"{m}_high"] - part.df[f"{m}_low"]  # about four standard errors
        assert (np.abs(part.by_group[m].to_numpy() - full.by_group[m].to_numpy()) <= err.to_numpy()).all(), m
        assert abs(part.overall[m] - full.overall[m]) < 0.02, m


def test_selection_rate_needs_no_labels(tmp_path: Path, labeled_writer: Any) -> None:
    frame = people(800, seed=8)
    labeled_writer(tmp_path / "store", frame.drop(columns=["label"]), context=["gender"], label=None)
    with Store(tmp_path / "store") as s:
        got = fairness_audit(s, "context.gender", n_boot=100)
        assert got.metrics == ["selection_rate", "count"]
        yp = (frame["prediction"] >= 0.5).astype(int)
        close(
            got.measures.loc["demographic_parity_difference", "value"],
            demographic_parity_difference(yp, yp, sensitive_features=frame["gender"]),
        )
        assert math.isnan(got.measures.loc["equalized_odds_difference", "value"])
        assert "no labels" in got.summary["text"]
        with pytest.raises(ValueError, match="metric 'tpr' needs labels"):
            fairness_audit(s, "context.gender", metrics=["selection_rate", "tpr"])


def test_rows_without_a_label_count_for_the_selection_rate_only(tmp_path: Path, labeled_writer: Any) -> None:
    frame = people(1500, seed=9)
    frame["label"] = frame["label"].astype(float).where(np.arange(len(frame)) % 3 != 0)  # a third unlabeled
    labeled_writer(tmp_path / "store", frame, context=["gender"])
    with Store(tmp_path / "store") as s:
        got = fairness_audit(s, "context.gender", n_boot=0)
    yp = (frame["prediction"] >= 0.5).astype(int)
    close(got.by_group["selection_rate"], yp.groupby(frame["gender"]).mean())
    lab = frame["label"].notna()
    mf = reference(frame.loc[lab, "label"], frame.loc[lab, "prediction"], frame.loc[lab, "gender"].rename("g"))
    for m in ("tpr", "fpr", "precision", "accuracy"):
        close(got.by_group[m], mf.by_group[m])
    assert list(got.df["scored_rows"]) == list(lab.groupby(frame["gender"]).sum())
    assert list(got.df["count"]) == list(frame["gender"].value_counts().sort_index())


def test_small_groups_are_listed_not_compared_and_kept_in_the_overall() -> None:
    frame = people(1000, seed=10)
    frame.loc[:11, "gender"] = "n"  # 12 rows
    got = fairness_audit(frame, "gender", n_boot=100, min_group_size=30)
    small = got.df.set_index("features.gender")["too_small"]
    assert small.to_dict() == {"f": False, "m": False, "n": True, "x": False}
    big = frame[frame["gender"] != "n"]
    mf = reference(big["label"], big["prediction"], big["gender"].rename("features.gender"))
    for m in RATES:
        close(got.group_min()[m], mf.group_min()[m])
        close(got.difference()[m], mf.difference()[m])
    everyone = reference(frame["label"], frame["prediction"], frame["gender"].rename("features.gender"))
    close(got.overall[RATES], everyone.overall[RATES])
    assert "n" in got.by_group.index
    assert got.df.set_index("features.gender")["four_fifths"]["n"] is None
    assert got.summary["too_small"] == [{"features.gender": "n"}]
    assert "1 group under 30 rows left out" in got.summary["text"]


def test_four_fifths_rule_against_the_reference_group() -> None:
    frame = people(3000, seed=11)
    got = fairness_audit(frame, "gender", n_boot=200)
    df = got.df.set_index("features.gender")
    sr = df["selection_rate"]
    assert got.summary["reference_group"] == {"features.gender": "f"}  # the largest
    close(df["impact_ratio"], sr / sr["f"])
    assert df["four_fifths"].to_dict() == {g: bool(0.8 <= sr[g] / sr["f"] <= 1.25) for g in sr.index}
    assert df.loc["x", "four_fifths"] is False  # the planted gap
    assert {"features.gender": "x"} in got.summary["four_fifths_failing"]
    other = fairness_audit(frame, "gender", n_boot=0, reference_group="m")
    close(other.df["impact_ratio"], sr.to_numpy() / sr["m"])
    both = fairness_audit(frame, ["gender", "region"], n_boot=0, reference_group={"gender": "m", "region": "east"})
    assert both.df.loc[both.df["reference"], ["features.gender", "features.region"]].values.tolist() == [["m", "east"]]
    assert "features.gender=x" in got.summary["text"] and "four-fifths" in got.summary["text"]


def test_classes_need_a_positive_label() -> None:
    frame = people(600, seed=12)
    frame["prediction"] = np.where(frame["prediction"] >= 0.5, "approve", "deny")
    frame["label"] = np.where(frame["label"] == 1, "approve", "deny")
    with pytest.raises(ValueError, match="positive_label=.*'approve', 'deny'|'approve', 'deny'.*positive_label="):
        fairness_audit(frame, "gender")
    got = fairness_audit(frame, "gender", positive_label="approve", n_boot=0)
    y = (frame["label"] == "approve").astype(int)
    p = (frame["prediction"] == "approve").astype(float)
    assert_matches(got, reference(y, p, frame["gender"].rename("features.gender")), RATES)
    assert got.summary["positive_label"] == "approve"
    with pytest.raises(ValueError, match="not one of the classes"):
        fairness_audit(frame, "gender", positive_label="maybe")


# ---------------------------------------------------------------- results


def test_result_surfaces(credit: tuple[Path, pd.DataFrame]) -> None:
    root, _ = credit
    with Store(root) as s:
        got = fairness_audit(s, ["context.gender", "context.region"], n_boot=100)
    out = got.to_dict()
    json.dumps(out)
    assert out["summary"]["text"] == got.summary["text"] == str(got)
    assert set(out) >= {"summary", "rows", "overall", "gaps", "measures"}
    assert len(out["rows"]) == 9
    html = got._repr_html_()
    assert "Fairness audit" in html and "selection_rate" in html
    assert "FairnessResult:" in repr(got)
    fig = got.plot()
    assert len(fig.axes) == len(RATES)
    assert len(got.plot("tpr").axes) == 1
    with pytest.raises(ValueError, match="no metric 'mae'"):
        got.plot("mae")
    lg = got.summary["largest_gap"]
    assert lg["metric"] in RATES and lg["difference"] == pytest.approx(got.difference()[lg["metric"]])


# ---------------------------------------------------------------- bad input


def test_bad_input_is_refused_with_a_useful_message(credit: tuple[Path, pd.DataFrame]) -> None:
    root, frame = credit
    with Store(root) as s:
        with pytest.raises(KeyError, match="did you mean 'context.gender'"):
            fairness_audit(s, "context.gendr")
        with pytest.raises(ValueError, match="unknown metric 'tprr'.*did you mean 'tpr'"):
            fairness_audit(s, "context.gender", metrics=["tprr"])
        with pytest.raises(ValueError, match="does not apply"):
            fairness_audit(s, "context.gender", metrics=["mae"])
        with pytest.raises(ValueError, match="no predictions"):
            fairness_audit(s, "context.gender", start="2030-01-01")
        with pytest.raises(ValueError, match="not a group"):
            fairness_audit(s, "context.gender", reference_group="q", n_boot=0)
        with pytest.raises(TypeError, match="unexpected keyword argument 'verison'"):
            fairness_audit(s, "context.gender", verison="1")
        got = fairness_audit(s, "context.gender", n_boot=0)
    with pytest.raises(ValueError, match="unknown method 'between'.*between_groups"):
        got.difference(method="between")
    with pytest.raises(ValueError, match="unknown method"):
        got.ratio(method="overall")
    one = frame.assign(gender="f")
    with pytest.raises(ValueError, match="sensitive='features.gender' has one group"):
        fairness_audit(one, "gender")
    for kw in ({"ci": 1.5}, {"n_boot": -1}, {"bins": 1}, {"min_group_size": 2.5}):
        with pytest.raises(ValueError):
            fairness_audit(frame, "gender", **kw)
    with pytest.raises(ValueError, match="name at least one"):
        fairness_audit(frame, [])


def test_a_missing_value_is_a_group_of_its_own() -> None:
    frame = people(1200, seed=13)
    frame["gender"] = frame["gender"].astype(object)
    frame.loc[frame.index[::20], "gender"] = None  # 60 rows
    got = fairness_audit(frame, "gender", n_boot=0)
    assert list(got.by_group.index)[:3] == ["f", "m", "x"] and pd.isna(got.by_group.index[3])
    filled = frame["gender"].fillna("~").rename("features.gender")  # "~" sorts after the letters
    assert_matches(got, reference(frame["label"], frame["prediction"], filled), [*RATES, "count"], same_index=False)


def test_probability_vectors_score_their_argmax_with_index_1_positive() -> None:
    frame = people(900, seed=14)
    p1 = frame["prediction"].to_numpy()
    frame["prediction"] = [[1 - p, p] for p in p1]
    got = fairness_audit(frame, "gender", n_boot=0)
    yp = (p1 > 0.5).astype(float)  # argmax: the first maximum, so 0.5 is class 0
    assert_matches(got, reference(frame["label"], yp, frame["gender"].rename("features.gender")), RATES)


def test_a_regression_from_a_store_equals_fairlearn(tmp_path: Path, labeled_writer: Any) -> None:
    rng = np.random.default_rng(15)
    n = 600
    frame = pd.DataFrame({"region": rng.choice(["north", "south"], n), "x": rng.normal(size=n)})
    frame["label"] = 100 + 10 * frame["x"] + rng.normal(0, 3, n)
    frame["prediction"] = frame["label"] + rng.normal(0, 2, n) + 4 * (frame["region"] == "south")
    labeled_writer(tmp_path / "store", frame, context=["region"])
    with Store(tmp_path / "store") as s:
        got = fairness_audit(s, "context.region", n_boot=200)
    mf = MetricFrame(
        metrics={"mae": mean_absolute_error, "mean_prediction": mean_prediction},
        y_true=frame["label"].to_numpy(),
        y_pred=frame["prediction"].to_numpy(),
        sensitive_features=frame["region"].rename("context.region"),
    )
    assert_matches(got, mf, ["mae", "mean_prediction"])
    assert got.summary["largest_gap"]["highest"] == {"context.region": "south"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(5, 120),
    groups=st.integers(2, 4),
    seed=st.integers(0, 2**31),
    rates=st.lists(st.sampled_from([1.0, 0.5, 0.2]), min_size=1, max_size=3),
)
def test_any_small_frame_equals_fairlearn_where_defined(n: int, groups: int, seed: int, rates: list[float]) -> None:
    """Random frames, tiny groups included (min_group_size=0): each metric equals fairlearn's
    wherever it is defined (fairlearn reports 0 where the audit reports NaN)."""
    rng = np.random.default_rng(seed)
    g = np.asarray([f"g{i}" for i in range(groups)])[np.arange(n) % groups]  # every group present
    frame = pd.DataFrame(
        {
            "prediction": rng.random(n).round(1),
            "label": rng.integers(0, 2, n),
            "group": g,
            "sample_rate": rng.choice(rates, n),
        }
    )
    got = fairness_audit(frame, "group", n_boot=0, min_group_size=0)
    w = 1 / frame["sample_rate"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's undefined-metric warnings
        mf = reference(frame["label"], frame["prediction"], frame["group"].rename("features.group"), w)
    want = frame_of(mf)
    for m in RATES:
        ours = got.by_group[m].to_numpy(dtype=float)
        theirs = want[m].to_numpy(dtype=float)
        defined = ~np.isnan(ours)
        close(ours[defined], theirs[defined])
        assert np.all(theirs[~defined] == 0), m
    assert list(got.df["count"]) == [int(c) for c in want["count"]]


def test_when_every_group_is_too_small_nothing_is_compared() -> None:
    frame = people(200, seed=16)
    got = fairness_audit(frame, "gender", min_group_size=1000, n_boot=50)
    assert got.df["too_small"].all() and got.group_min().isna().all() and got.difference().isna().all()
    assert got.measures["value"].isna().all() and got.summary["reference_group"] is None
    assert got.summary["text"].startswith("No group has 1,000 rows or more")
    close(got.overall["selection_rate"], (frame["prediction"] >= 0.5).mean())
