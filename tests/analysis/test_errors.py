"""error_correlation(): error rates per group and association scores, equal to pandas,
scikit-learn and scipy on the same rows.

Stores are written by the SDK (``labeled_writer``: ``Recorder.log_frame`` then
``log_labels``; ``store_writer`` for a store with sample rates, labelled with
``Recorder.log_labels``). The references are computed from the frames the tests logged, not
from the store, so the labels join is checked too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.stats.contingency import association
from sklearn.metrics import mutual_info_score, roc_auc_score

import predlog
from predlog.analysis import ErrorCorrelation, error_correlation
from predlog.replay import Store

RTOL = 1e-9
N = 6000


def planted(n: int = N, seed: int = 7) -> pd.DataFrame:
    """A binary classifier's rows: an error rate of 12 % but 36 % on iOS (3×); ``age`` an
    integer, ``income`` a float with some NaN, ``plan`` a category with some missing."""
    rng = np.random.default_rng(seed)
    device = rng.choice(["ios", "android", "web"], n, p=[0.3, 0.4, 0.3])
    age = rng.integers(18, 90, n)
    income = np.round(rng.lognormal(10, 0.6, n), 2)
    income[rng.random(n) < 0.03] = np.nan
    plan = rng.choice(np.array(["free", "basic", "gold", None], dtype=object), n, p=[0.5, 0.3, 0.15, 0.05])
    rate = np.where(device == "ios", 0.36, 0.12) + 0.002 * (age - 50).clip(0)  # older rows err a little more
    wrong = rng.random(n) < rate
    label = rng.integers(0, 2, n)
    return pd.DataFrame(
        {
            "age": age,
            "income": income,
            "plan": plan,
            "device": device,
            "prediction": np.where(wrong, 1 - label, label),
            "label": label,
        }
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return planted()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, labeled_writer: Any, frame: pd.DataFrame) -> Store:
    root = tmp_path_factory.mktemp("errors") / "store"
    labeled_writer(root, frame, model="churn", context=["device"])
    with Store(root) as s:
        yield s


@pytest.fixture(scope="module")
def result(store: Store) -> ErrorCorrelation:
    return error_correlation(store)


def groups_of(frame: pd.DataFrame, field: str, res: ErrorCorrelation) -> pd.Series:
    """Each row's group label in ``res`` for ``field``, computed by pandas from the bin bounds."""
    col = frame[field.split(".", 1)[1]]
    g = res.by_group[res.by_group["feature"] == field]
    if g["kind"].iloc[0] == "category":
        return col.astype(object).where(col.notna(), "(missing)")
    bins = g[g["bin"].notna()]
    cuts = sorted(bins["lower"].dropna())
    idx = pd.cut(col, [-np.inf, *cuts, np.inf], right=False, labels=False)
    names = dict(zip(bins["bin"].astype(int), bins["group"], strict=True))
    return idx.map(names).astype(object).where(col.notna(), "(missing)")


def close(actual: Any, expected: Any, rtol: float = RTOL) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rtol, atol=1e-12)


# ---------------------------------------------------------------- what it finds


def test_the_planted_feature_comes_first(result: ErrorCorrelation) -> None:
    assert result.df["feature"].iloc[0] == "context.device"
    assert result.summary["top_feature"] == "context.device" and result.summary["top_group"] == "ios"
    assert 1.6 < result.summary["top_lift"] < 2.0  # 36 % against about 21 % overall (iOS rows included)
    text = result.summary["text"]
    assert text.startswith("Errors are ") and "context.device = 'ios'" in text and "(n=" in text
    assert result.summary["ranked_by"] == "cramers_v"
    assert list(result.df["cramers_v"]) == sorted(result.df["cramers_v"], reverse=True)
    assert set(result.df["feature"]) == {"features.age", "features.income", "features.plan", "context.device"}


def test_counts_and_rates_equal_a_pandas_groupby(result: ErrorCorrelation, frame: pd.DataFrame) -> None:
    wrong = (frame["prediction"] != frame["label"]).astype(int)
    for field in result.df["feature"]:
        got = result.by_group[result.by_group["feature"] == field].set_index("group")
        want = wrong.groupby(groups_of(frame, field, result)).agg(["size", "sum", "mean"])
        assert sorted(got.index) == sorted(want.index), field
        got = got.loc[want.index]
        assert (got["rows"] == want["size"]).all() and (got["scored_rows"] == want["size"]).all()
        assert (got["errors"] == want["sum"]).all()
        close(got["error_rate"], want["mean"])
        close(got["lift"], want["mean"] / wrong.mean())
        low, high = zip(
            *(
                stats.binomtest(int(k), int(n)).proportion_ci(method="wilson")
                for k, n in zip(want["sum"], want["size"], strict=True)
            ),
            strict=True,
        )
        close(got["error_rate_low"], low, 1e-7)
        close(got["error_rate_high"], high, 1e-7)
    assert "(missing)" in set(result.by_group.loc[result.by_group["feature"] == "features.income", "group"])
    assert "(missing)" in set(result.by_group.loc[result.by_group["feature"] == "features.plan", "group"])
    assert result.summary["rows"] == len(frame) and result.summary["error_rate"] == pytest.approx(
        wrong.mean(), rel=RTOL
    )


def test_association_equals_sklearn_and_scipy(result: ErrorCorrelation, frame: pd.DataFrame) -> None:
    wrong = (frame["prediction"] != frame["label"]).astype(int)
    for _, row in result.df.iterrows():
        table = pd.crosstab(groups_of(frame, row["feature"], result), wrong).to_numpy()
        assert row["groups"] == len(table)
        close(row["mutual_info"], mutual_info_score(None, None, contingency=table))
        close(row["cramers_v"], association(table, method="cramer"))
        chi2, p, *_ = stats.chi2_contingency(table, correction=False)
        close(row["chi2"], chi2)
        close(row["p_value"], p, 1e-6)


def test_auc_and_point_biserial_exact_for_an_integer_field(result: ErrorCorrelation, frame: pd.DataFrame) -> None:
    wrong = (frame["prediction"] != frame["label"]).astype(int)
    age = result.df.set_index("feature").loc["features.age"]
    assert age["exact"] is True
    assert age["auc_bound"] == 0.0
    close(age["auc"], roc_auc_score(wrong, frame["age"]))
    close(age["point_biserial"], stats.pointbiserialr(wrong, frame["age"]).statistic)
    assert age["auc"] > 0.52  # older rows err more: the AUC sees it


def test_point_biserial_is_exact_for_a_skewed_field_read_in_order() -> None:
    """Values in order (a trending feature read in time order) put the first rows, which
    place the fine cells, far from the tail: the point-biserial does not depend on the cells."""
    rng = np.random.default_rng(5)
    n = 20_000
    x = np.sort(rng.lognormal(0.0, 2.0, n))
    p = rng.random(n)
    y = (rng.random(n) < 0.3 + 0.3 * (x > np.quantile(x, 0.8))).astype(int)
    got = error_correlation(pd.DataFrame({"x": x, "prediction": p, "label": y})).df.iloc[0]
    wrong = ((p >= 0.5).astype(int) != y).astype(int)
    close(got["point_biserial"], stats.pointbiserialr(wrong, x).statistic)


def test_auc_of_a_float_field_is_within_its_bound(result: ErrorCorrelation, frame: pd.DataFrame) -> None:
    wrong = (frame["prediction"] != frame["label"]).astype(int)
    ok = frame["income"].notna()
    income = result.df.set_index("feature").loc["features.income"]
    assert not income["exact"]
    exact = roc_auc_score(wrong[ok], frame.loc[ok, "income"])
    assert abs(income["auc"] - exact) <= income["auc_bound"] + 1e-12
    assert 0 < income["auc_bound"] < 0.002
    # the point-biserial is exact whatever the cells: it comes from sums of the values
    close(income["point_biserial"], stats.pointbiserialr(wrong[ok], frame.loc[ok, "income"]).statistic)
    for cat in ("context.device", "features.plan"):
        assert math.isnan(result.df.set_index("feature").loc[cat, "auc"])


# ---------------------------------------------------------------- sources and weights


def test_a_dataframe_gives_the_same_result(result: ErrorCorrelation, frame: pd.DataFrame) -> None:
    got = error_correlation(frame.rename(columns={"device": "context.device"}))
    cols = ["feature", "groups", "scored_rows", "cramers_v", "mutual_info", "auc", "auc_bound", "point_biserial"]
    pd.testing.assert_frame_equal(got.df[cols], result.df[cols], rtol=RTOL)
    pd.testing.assert_frame_equal(got.by_group, result.by_group, rtol=RTOL)
    assert got.summary["text"] == result.summary["text"]


def labeled_store(root: Path, rows: pd.DataFrame, store_writer: Any, sample_rate: str | None = None) -> str:
    """``rows`` written as predictions (``store_writer``), then their labels logged with
    ``Recorder.log_labels`` by prediction id."""
    rows = rows.reset_index(drop=True)
    rows = rows.assign(
        ts=pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(len(rows)), unit="s"),
        row=np.arange(len(rows)),
    )
    features = ["age", "income", "plan", "device", "row"]
    path = store_writer(root, rows.drop(columns=["label"]), features=features, sample_rate=sample_rate)
    with Store(path) as s:
        ids = s.predictions(columns=["prediction_id", "features.row"])
    labels = rows["label"].to_numpy()[ids["features.row"].to_numpy().astype(int)]
    rec = predlog.Recorder(store=path, model="labels")
    try:
        rec.log_labels(pd.DataFrame({"prediction_id": ids["prediction_id"], "label": labels}))
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()
    return str(path)


def test_a_sampled_store_is_weighted(tmp_path: Path, store_writer: Any) -> None:
    """Web rows kept at 20 %, Android rows at 50 %, iOS rows all: weighted counts equal
    pandas' weighted sums on the kept rows, and the rates equal the unsampled store's within
    sampling error."""
    full = planted(20_000, seed=11)
    rate = full["device"].map({"web": 0.2, "android": 0.5, "ios": 1.0}).to_numpy()
    kept = full[np.random.default_rng(3).random(len(full)) < rate].assign(
        sample_rate=lambda d: d["device"].map({"web": 0.2, "android": 0.5, "ios": 1.0})
    )
    fields = ["device", "age"]
    with Store(labeled_store(tmp_path / "full", full, store_writer)) as s:
        truth = error_correlation(s, features=fields)
    with Store(labeled_store(tmp_path / "sampled", kept, store_writer, sample_rate="sample_rate")) as s:
        got = error_correlation(s, features=fields)
    kept = kept.reset_index(drop=True)
    wrong = (kept["prediction"] != kept["label"]).astype(float)
    w = 1 / kept["sample_rate"]
    dev = got.by_group[got.by_group["feature"] == "features.device"].set_index("group")
    for g, part in kept.groupby("device"):
        close(dev.loc[g, "weighted_rows"], w[part.index].sum())
        close(dev.loc[g, "weighted_errors"], (w * wrong)[part.index].sum())
        assert dev.loc[g, "rows"] == len(part)
        # one weight within the group: Kish's effective number is the number of rows
        ci = stats.binomtest(int(wrong[part.index].sum()), len(part)).proportion_ci(method="wilson")
        close([dev.loc[g, "error_rate_low"], dev.loc[g, "error_rate_high"]], [ci.low, ci.high], 1e-7)
    close(got.summary["error_rate"], (w * wrong).sum() / w.sum())
    close(got.summary["weighted_scored"], w.sum())
    full_dev = truth.by_group[truth.by_group["feature"] == "features.device"].set_index("group")
    for g in ("ios", "android", "web"):
        p = full_dev.loc[g, "error_rate"]
        assert abs(dev.loc[g, "error_rate"] - p) < 4 * math.sqrt(p * (1 - p) / dev.loc[g, "scored_rows"])
        assert dev.loc[g, "weighted_rows"] == pytest.approx(full_dev.loc[g, "rows"], rel=0.1)
    p = truth.summary["error_rate"]
    assert abs(got.summary["error_rate"] - p) < 4 * math.sqrt(p * (1 - p) / got.summary["scored_rows"])
    ranked = got.df.set_index("feature")
    assert got.df["feature"].iloc[0] == truth.df["feature"].iloc[0]
    assert got.summary["top_group"] == truth.summary["top_group"] == "ios"
    assert (
        abs(
            ranked.loc["features.device", "cramers_v"]
            - truth.df.set_index("feature").loc["features.device", "cramers_v"]
        )
        < 0.03
    )


def test_error_as_sql_or_callable(store: Store, result: ErrorCorrelation) -> None:
    cols = ["feature", "cramers_v", "mutual_info", "auc"]
    by_sql = error_correlation(store, error="label <> prediction")
    pd.testing.assert_frame_equal(by_sql.df[cols], result.df[cols], rtol=RTOL)
    by_fn = error_correlation(store, error=lambda y, p: y != p)
    pd.testing.assert_frame_equal(by_fn.df[cols], result.df[cols], rtol=RTOL)
    assert by_sql.summary["error"] == "rows where label <> prediction"
    only_ones = error_correlation(store, error="label = 1 AND prediction = 0", features="context.device")
    assert 0 < only_ones.summary["error_rate"] < result.summary["error_rate"]


def test_a_regression_errs_above_its_90th_percentile() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.normal(size=n)
    region = rng.choice(["north", "south"], n)
    label = 3 * x + rng.normal(size=n) * np.where(region == "south", 3.0, 1.0)
    frame = pd.DataFrame({"x": x, "context.region": region, "prediction": 3 * x, "label": label})
    got = error_correlation(frame)
    err = np.abs(label - 3 * x)
    wrong = err > np.quantile(err, 0.9)
    assert got.summary["task"] == "regression"
    close(got.summary["error_rate"], wrong.mean())
    assert got.summary["top_feature"] == "context.region" and got.summary["top_group"] == "south"
    reg = got.by_group[got.by_group["feature"] == "context.region"].set_index("group")
    assert reg.loc["south", "errors"] == wrong[region == "south"].sum()


def test_many_categories_pool_as_other() -> None:
    rng = np.random.default_rng(2)
    n = 5000
    shop = rng.choice([f"s{i:03d}" for i in range(80)], n)
    label = rng.integers(0, 2, n)
    frame = pd.DataFrame({"shop": shop, "prediction": label, "label": np.where(rng.random(n) < 0.2, 1 - label, label)})
    got = error_correlation(frame)
    g = got.by_group
    assert len(g) == 51 and g["group"].iloc[-1] == "(other)"
    heaviest = frame["shop"].value_counts()
    kept = heaviest.sort_values(ascending=False, kind="stable").index
    assert set(g["group"].iloc[:50]) == set(sorted(kept, key=lambda v: (-heaviest[v], v))[:50])
    assert g["rows"].sum() == n and g["group"].iloc[:50].isin(heaviest.index).all()


# ---------------------------------------------------------------- the result object


def test_the_result_object(result: ErrorCorrelation) -> None:
    d = result.to_dict()
    json.dumps(d)
    assert len(d["rows"]) == len(result.df) and len(d["by_group"]) == len(result.by_group)
    html = result._repr_html_()
    assert "Error correlation" in html and "context.device" in html
    assert str(result) == result.summary["text"]
    fig = result.plot()
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    fig = result.plot("features.age")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1
    fig = result.plot(["age", "context.device"])  # a bare name is a feature, as everywhere
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    with pytest.raises(ValueError, match="no field 'features.nope'"):
        result.plot("features.nope")


# ---------------------------------------------------------------- bad input


def test_bad_input(store: Store, frame: pd.DataFrame, tmp_path: Path, store_writer: Any) -> None:
    with pytest.raises(KeyError, match="did you mean 'context.device'"):
        error_correlation(store, features="context.devic")
    with pytest.raises(KeyError, match="features.agee"):
        error_correlation(store, features=["agee"])
    with pytest.raises(ValueError, match="bins must be an integer of at least 2"):
        error_correlation(store, bins=1)
    with pytest.raises(ValueError, match="is not a SQL expression"):
        error_correlation(store, error="label <>")
    with pytest.raises(ValueError, match="no rows|empty|no predictions"):
        error_correlation(store, start="2030-01-01")
    unlabeled = frame.drop(columns=["label"]).assign(ts=pd.Timestamp("2026-11-01", tz="UTC"))
    root = store_writer(tmp_path / "nolabels", unlabeled)
    with Store(root) as s, pytest.raises(ValueError, match="no labels"):
        error_correlation(s)
    with pytest.raises(ValueError, match="no labels in a frame of 6,000 rows: its label column 'label' has no value"):
        error_correlation(frame.assign(label=None))
    with pytest.raises(TypeError, match="Store or a pandas DataFrame"):
        error_correlation([1, 2, 3])  # type: ignore[arg-type]


def test_bins_of_an_integer_field_are_its_quantiles(result: ErrorCorrelation, frame: pd.DataFrame) -> None:
    """Over every row: the edges are numpy's inverted-CDF quantiles (DuckDB's quantile_disc),
    repeated ones merged, the smallest value left out."""
    g = result.by_group[(result.by_group["feature"] == "features.age") & result.by_group["bin"].notna()]
    q = np.quantile(frame["age"], [i / 10 for i in range(1, 10)], method="inverted_cdf")
    want = sorted({float(v) for v in q if v > frame["age"].min()})
    assert list(g["lower"].dropna()) == want
    coarse = error_correlation(frame.rename(columns={"device": "context.device"}), features="age", bins=3)
    q3 = np.quantile(frame["age"], [1 / 3, 2 / 3], method="inverted_cdf")
    assert list(coarse.by_group["lower"].dropna()) == sorted(float(v) for v in q3)
    assert len(coarse.by_group) == 3


def test_noise_gives_no_finding_at_the_stated_rate() -> None:
    """15 fields unrelated to the errors, 12 draws: groups are tested one-sided with
    Benjamini–Hochberg control over every group of every field, so a finding in more than a
    few draws (about alpha of them) would be chance called a cause."""
    found = 0
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        n = 2_000
        frame = pd.DataFrame({f"f{i}": rng.standard_normal(n) for i in range(15)})
        frame["prediction"] = rng.random(n)
        frame["label"] = (rng.random(n) < 0.5).astype(int)
        got = error_correlation(frame)
        assert got.by_group["p_adjusted"].notna().all()
        found += got.summary["top_group"] is not None
    assert found <= 2, found
