"""error_slices(): planted slices are found first, null data reports none at the stated rate,
counts and p-values equal pandas and scipy, the top slice equals sliceline's.

Stores are written by the SDK (``labeled_writer``: ``Recorder.log_frame`` then
``log_labels``; ``store_writer`` for sampled rows, labelled with ``Recorder.log_labels``).
References are computed from the generated frames, not from the store.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, false_discovery_control

import predlog
from predlog.analysis import ErrorSlices, error_slices
from predlog.analysis._bins import bin_label
from predlog.analysis._slices import MAX_VALUES, SCORE_ALPHA
from predlog.replay import Store

REGIONS = ["north", "south", "east", "west", "central"]
DEVICES = ["ios", "android", "web"]
PLANS = ["free", "basic", "gold", "team"]
PLANTED = "context.device = ios and context.region = south"


def generate(n: int, seed: int, *, base: float = 0.1, planted: float = 0.3, where: str = "pair") -> pd.DataFrame:
    """A classifier's rows: context region and device, features plan and age (2 % missing),
    a 0/1 label and a predicted class that is wrong with probability ``base``, or
    ``planted`` inside the planted slice (``where``: ``"pair"`` south × ios, ``"gold"`` plan
    gold, ``"triple"`` south × ios × gold, ``"missing"`` age missing, ``"none"``)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "context.region": rng.choice(REGIONS, n),
            "context.device": rng.choice(DEVICES, n),
            "plan": rng.choice(PLANS, n),
            "age": np.round(rng.normal(40, 12, n), 1),
        }
    )
    frame.loc[rng.random(n) < 0.02, "age"] = np.nan
    south_ios = (frame["context.region"] == "south") & (frame["context.device"] == "ios")
    inside = {
        "pair": south_ios,
        "gold": frame["plan"] == "gold",
        "triple": south_ios & (frame["plan"] == "gold"),
        "missing": frame["age"].isna(),
        "none": pd.Series(False, index=frame.index),
    }[where]
    wrong = rng.random(n) < np.where(inside, planted, base)
    label = rng.integers(0, 2, n)
    frame["label"] = label
    frame["prediction"] = np.where(wrong, 1 - label, label)
    return frame


def by_hand(frame: pd.DataFrame, got: ErrorSlices) -> pd.DataFrame:
    """Each tested slice's rows and errors counted with pandas on the frame, from the values
    the result names (bins from ``got.cuts``, kept categories from ``got.values``)."""
    labels: dict[str, pd.Series] = {}
    for path in got.summary["features"]:
        col = path if path.startswith("context.") else path.split(".", 1)[1]
        x = frame[col]
        if path in got.cuts:
            cuts = got.cuts[path]
            v = x.to_numpy(float)
            idx = np.searchsorted(cuts, v, side="right")
            names = np.array([bin_label(cuts, i) for i in range(len(cuts) + 1)], dtype=object)
            labels[path] = pd.Series(np.where(~np.isfinite(v), "(missing)", names[np.minimum(idx, len(cuts))]))
        else:
            kept = set(got.values[path])
            labels[path] = x.map(lambda v, kept=kept: "(missing)" if pd.isna(v) else (v if v in kept else "(other)"))
    wrong = (frame["prediction"] != frame["label"]).to_numpy()
    rows, errors = [], []
    for _, s in got.tested.iterrows():
        mask = np.ones(len(frame), bool)
        for d in range(1, s["depth"] + 1):
            mask &= (labels[s[f"feature_{d}"]] == s[f"value_{d}"]).to_numpy()
        rows.append(int(mask.sum()))
        errors.append(int(wrong[mask].sum()))
    return pd.DataFrame({"rows": rows, "errors": errors})


@pytest.fixture(scope="module")
def planted_frame() -> pd.DataFrame:
    return generate(20_000, seed=1)


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory: pytest.TempPathFactory, labeled_writer: Any, planted_frame: pd.DataFrame) -> Path:
    root = tmp_path_factory.mktemp("slices") / "store"
    frame = planted_frame.rename(columns={"context.region": "region", "context.device": "device"})
    labeled_writer(root, frame, model="churn", context=["region", "device"])
    return root


# ---------------------------------------------------------------- what is found


def test_planted_slice_ranks_first_in_a_store_written_by_the_sdk(
    planted_store: Path, planted_frame: pd.DataFrame
) -> None:
    with Store(planted_store) as s:
        got = error_slices(s)
    top = got.df.iloc[0]
    assert top["slice"] == PLANTED
    assert (top["feature_1"], top["value_1"], top["feature_2"], top["value_2"]) == (
        "context.device",
        "ios",
        "context.region",
        "south",
    )
    inside = (planted_frame["context.region"] == "south") & (planted_frame["context.device"] == "ios")
    wrong = planted_frame["prediction"] != planted_frame["label"]
    assert top["rows"] == inside.sum()
    assert top["error_rate"] == pytest.approx(wrong[inside].mean(), rel=1e-12)
    assert top["lift"] == pytest.approx(wrong[inside].mean() / wrong.mean(), rel=1e-12)
    assert top["size"] == pytest.approx(inside.mean(), rel=1e-12)
    assert top["excess_errors"] == pytest.approx(wrong[inside].sum() - wrong.mean() * inside.sum(), rel=1e-9)
    assert top["error_rate_low"] < top["error_rate"] < top["error_rate_high"]
    assert top["p_vs_parents"] <= 0.05 and top["p_adjusted"] < 1e-10
    assert 2.0 < top["lift"] < 3.5
    # Both parents are significant only through the planted slice: folded into it.
    tested = got.tested.set_index("slice")
    for parent in ("context.region = south", "context.device = ios"):
        assert tested.loc[parent, "significant"]
        assert tested.loc[parent, "folded_into"] == PLANTED
        assert not tested.loc[parent, "reported"]
    # Nothing else stands out in these rows.
    assert len(got.df) <= 2
    assert got.summary["model"] == "churn" and got.filters == {"model": "churn"}
    assert got.summary["rows"] == len(planted_frame)


def test_store_and_frame_give_the_same_slices(planted_store: Path, planted_frame: pd.DataFrame) -> None:
    with Store(planted_store) as s:
        a = error_slices(s, max_depth=2, top=None)
    b = error_slices(planted_frame, max_depth=2, top=None)
    assert a.cuts == b.cuts and a.values == b.values
    pd.testing.assert_frame_equal(a.tested, b.tested, rtol=1e-9)
    pd.testing.assert_frame_equal(a.df, b.df, rtol=1e-9)


def test_counts_equal_pandas_and_p_values_equal_scipy(planted_frame: pd.DataFrame) -> None:
    got = error_slices(planted_frame, top=None)
    want = by_hand(planted_frame, got)
    np.testing.assert_array_equal(got.tested["rows"].to_numpy(), want["rows"].to_numpy())
    np.testing.assert_allclose(got.tested["errors"].to_numpy(float), want["errors"].to_numpy(float))
    overall = (planted_frame["prediction"] != planted_frame["label"]).mean()
    assert got.overall_error_rate == pytest.approx(overall, rel=1e-12)
    p = [binomtest(int(k), int(n), overall, alternative="greater").pvalue for n, k in zip(want["rows"], want["errors"])]
    np.testing.assert_allclose(got.tested["p_value"].to_numpy(), p, rtol=1e-7, atol=1e-300)
    np.testing.assert_allclose(got.tested["p_adjusted"].to_numpy(), false_discovery_control(p, method="bh"), rtol=1e-7)
    n = len(planted_frame)
    score = SCORE_ALPHA * (want["errors"] / want["rows"] / overall - 1) - (1 - SCORE_ALPHA) * (n / want["rows"] - 1)
    np.testing.assert_allclose(got.tested["score"].to_numpy(), score.to_numpy(), rtol=1e-9)
    # Every single value and every pair of values with enough rows is tested.
    support = got.summary["min_support"]
    assert support == 30
    assert got.tested["rows"].min() >= support
    assert set(got.tested["depth"]) == {1, 2}
    assert (got.tested["slice"] == "features.age is missing").sum() == 1  # missing values are a value


def test_null_data_reports_a_slice_in_at_most_alpha_of_draws() -> None:
    draws, alpha, reported, small_p, tested = 60, 0.05, 0, 0, 0
    for seed in range(draws):
        got = error_slices(generate(3_000, seed=100 + seed, base=0.2, where="none"), alpha=alpha)
        reported += len(got.df) > 0
        single = got.tested[got.tested["depth"] == 1]
        small_p += int((single["p_value"] <= alpha).sum())
        tested += len(single)
    # Benjamini–Hochberg at alpha under the global null: P(any slice) <= alpha; allow 2 SE.
    assert reported / draws <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / draws)
    assert small_p / tested <= alpha + 0.02  # each test holds its level (a little conservative)
    assert "No error slice" in str(error_slices(generate(3_000, seed=7, base=0.2, where="none")))


def test_the_top_slice_agrees_with_sliceline_on_the_binned_rows() -> None:
    sliceline = pytest.importorskip("sliceline")
    frame = generate(6_000, seed=3, base=0.1, planted=0.6)
    got = error_slices(frame, rank="sliceline", min_support=60)
    binned = by_hand_values(frame, got)
    wrong = (frame["prediction"] != frame["label"]).to_numpy(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finder = sliceline.Slicefinder(alpha=SCORE_ALPHA, k=1, max_l=2, min_sup=60, verbose=False)
        finder.fit(binned, wrong)
    theirs = {c: v for c, v in zip(binned.columns, finder.top_slices_[0], strict=True) if v is not None}
    best = got.tested.iloc[0]  # the highest score of every slice tested
    ours = {best[f"feature_{d}"]: best[f"value_{d}"] for d in range(1, best["depth"] + 1)}
    assert ours == theirs == {"context.region": "south", "context.device": "ios"}
    assert got.df.iloc[0]["slice"] == PLANTED
    assert best["score"] == pytest.approx(finder.top_slices_statistics_[0]["slice_score"], rel=1e-9)


def by_hand_values(frame: pd.DataFrame, got: ErrorSlices) -> pd.DataFrame:
    """The frame's fields as the values the result names (its bins and kept categories)."""
    out = {}
    for path in got.summary["features"]:
        col = path if path.startswith("context.") else path.split(".", 1)[1]
        x = frame[col]
        if path in got.cuts:
            cuts = got.cuts[path]
            names = np.array([bin_label(cuts, i) for i in range(len(cuts) + 1)], dtype=object)
            idx = np.searchsorted(cuts, x.to_numpy(float), side="right")
            out[path] = np.where(x.isna(), "(missing)", names[np.minimum(idx, len(cuts))])
        else:
            out[path] = x.to_numpy(object)
    return pd.DataFrame(out)


def test_a_slice_that_repeats_its_parent_is_folded_into_it() -> None:
    frame = generate(20_000, seed=5, where="gold")
    got = error_slices(frame)
    assert got.df.iloc[0]["slice"] == "features.plan = gold"
    children = got.tested[(got.tested["depth"] == 2) & got.tested["slice"].str.contains("features.plan = gold")]
    assert children["significant"].sum() >= 10  # above the overall rate, but only as gold is
    assert (children.loc[children["significant"], "folded_into"] == "features.plan = gold").all()
    assert not got.df["slice"].str.contains("features.plan = gold and|and features.plan = gold").any()


def test_depth_three_finds_a_planted_triple_and_depth_one_only_singles() -> None:
    frame = generate(30_000, seed=9, base=0.1, planted=0.5, where="triple")
    got = error_slices(frame, features=["context.region", "context.device", "plan"], max_depth=3)
    assert got.df.iloc[0]["slice"] == "context.region = south and context.device = ios and features.plan = gold"
    assert got.tested["depth"].max() == 3
    one = error_slices(frame, features=["context.region", "context.device", "plan"], max_depth=1)
    assert set(one.tested["depth"]) == {1} and "feature_2" not in one.df.columns


def test_missing_values_and_pooled_categories_are_values_of_their_own() -> None:
    frame = generate(20_000, seed=6, base=0.1, planted=0.5, where="missing")
    rng = np.random.default_rng(6)
    frame["city"] = [f"c{i:03d}" for i in rng.integers(0, 80, len(frame))]
    got = error_slices(frame, features=["age", "city", "context.device"])
    assert got.df.iloc[0]["slice"] == "features.age is missing"
    assert len(got.values["features.city"]) == MAX_VALUES
    other = got.tested.set_index("slice").loc["features.city = (other)"]
    assert other["rows"] == (~frame["city"].isin(got.values["features.city"])).sum()


# ---------------------------------------------------------------- weights


def test_weights_equal_rows_repeated_by_their_weight() -> None:
    frame = generate(6_000, seed=8)[["context.region", "context.device", "plan", "prediction", "label"]]
    rate = np.where(frame["context.region"] == "north", 0.25, np.where(frame["context.device"] == "web", 0.5, 1.0))
    weighted = error_slices(frame.assign(sample_rate=rate), top=None)
    repeated = error_slices(frame.loc[frame.index.repeat(np.round(1 / rate).astype(int))], top=None)
    a, b = weighted.tested.set_index("slice"), repeated.tested.set_index("slice").loc[weighted.tested["slice"]]
    for col in ("size", "error_rate", "lift", "excess_errors", "score"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9, err_msg=col)
    np.testing.assert_allclose(a["errors"].to_numpy(), b["errors"].to_numpy(), rtol=1e-9)
    assert (a["rows"] < b["rows"]).any()  # rows count rows, not weight
    assert (a["n_eff"] <= a["rows"] + 1e-9).all()  # Kish: unequal weights give fewer effective rows


def test_a_sampled_store_estimates_the_unsampled_store(tmp_path: Path, store_writer: Any) -> None:
    full = generate(40_000, seed=12)
    full["ts"] = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(np.arange(len(full)), unit="s")
    region = full["context.region"]
    rate = np.where(region.isin(["north", "east"]), 0.25, np.where(region == "south", 0.5, 1.0))
    kept = np.random.default_rng(12).random(len(full)) < rate
    stores = {}
    for name, rows in (("full", full.assign(sr=1.0)), ("sampled", full.assign(sr=rate)[kept])):
        frame = rows.rename(columns={"context.region": "region", "context.device": "device"})
        frame = frame.assign(row=np.arange(len(frame)))
        path = store_writer(
            tmp_path / name,
            frame.drop(columns=["label"]),
            features=["region", "device", "plan", "age", "row"],
            sample_rate="sr",
        )
        with Store(path) as s:
            ids = s.relation("m", columns=["prediction_id", "features.row"], ordered=False).df()
        rec = predlog.Recorder(store=path, model="labels")
        try:
            labels = frame["label"].to_numpy()[ids["features.row"].to_numpy(int)]
            rec.log_labels(pd.DataFrame({"prediction_id": ids["prediction_id"], "label": labels}))
            assert rec.flush(timeout_s=60)
        finally:
            rec.shutdown()
        with Store(path) as s:
            stores[name] = error_slices(s, features=["region", "device", "plan"], top=None)
    full_r, samp_r = stores["full"], stores["sampled"]
    assert (
        full_r.df.iloc[0]["slice"] == samp_r.df.iloc[0]["slice"] == "features.region = south and features.device = ios"
    )
    a = full_r.tested.set_index("slice")
    b = samp_r.tested.set_index("slice").reindex(a.index)
    planted = "features.region = south and features.device = ios"
    assert b.loc[planted, "rows"] < 0.6 * a.loc[planted, "rows"]  # half of south was kept
    assert b.loc[planted, "size"] == pytest.approx(a.loc[planted, "size"], abs=0.01)
    assert samp_r.overall_error_rate == pytest.approx(
        full_r.overall_error_rate, abs=4 * np.sqrt(0.1 * 0.9 / kept.sum())
    )
    # Each slice's weighted error rate and size within 4 standard errors of the full store's.
    se = np.sqrt(a["error_rate"] * (1 - a["error_rate"]) / b["n_eff"])
    assert (np.abs(b["error_rate"] - a["error_rate"]) <= 4 * se + 1e-12).all()
    assert (np.abs(b["size"] - a["size"]) <= 0.02).all()


# ---------------------------------------------------------------- the result


def test_summary_table_json_html_and_plot(planted_frame: pd.DataFrame) -> None:
    got = error_slices(planted_frame)
    top = got.df.iloc[0]
    text = got.summary["text"]
    assert text.startswith(f"The top error slice is {PLANTED}: error rate {100 * top['error_rate']:.3g} %")
    assert f"lift {top['lift']:.2f}" in text and f"{int(top['rows']):,} rows" in text
    assert str(got) == text and repr(got).startswith("ErrorSlices: The top error slice")
    assert got.summary["top"] == PLANTED and got.summary["top_size"] == pytest.approx(top["size"])
    assert got.summary["reported"] == int(got.tested["reported"].sum()) >= len(got.df)
    data = json.loads(json.dumps(got.to_dict()))
    assert data["summary"]["top"] == PLANTED and data["rows"][0]["slice"] == PLANTED
    assert data["rows"][0]["feature_2"] == "context.region"
    html = got._repr_html_()
    assert "Error slices" in html and "context.region = south" in html
    fig = got.plot()
    assert len(fig.axes[0].patches) == len(got.df)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][-1] == PLANTED  # the first at the top
    assert error_slices(planted_frame, top=1).df["slice"].tolist() == [PLANTED]
    empty = error_slices(generate(2_000, seed=4, where="none"))
    assert len(empty.df) == 0 and empty.summary["top"] is None
    assert empty.summary["text"].startswith("No error slice: no slice of up to 2 predicates over 4 fields")
    assert len(empty.plot().axes[0].patches) == 0


def test_errors_by_a_sql_expression_for_a_regression() -> None:
    rng = np.random.default_rng(2)
    n = 8_000
    frame = pd.DataFrame({"tier": rng.choice(["a", "b", "c", "d"], n), "x": rng.normal(size=n)})
    frame["label"] = rng.normal(size=n)
    noise = np.where(frame["tier"] == "c", 3.0, 1.0)
    frame["prediction"] = frame["label"] + rng.normal(size=n) * noise
    got = error_slices(frame, error="abs(label - prediction) > 2")
    assert got.df.iloc[0]["slice"] == "features.tier = c"
    assert got.summary["error"] == "rows where abs(label - prediction) > 2"
    wrong = (frame["label"] - frame["prediction"]).abs() > 2
    assert got.overall_error_rate == pytest.approx(wrong.mean(), rel=1e-12)
    by_default = error_slices(frame)  # a regression: errors above the 90th percentile
    assert by_default.df.iloc[0]["slice"] == "features.tier = c"
    by_callable = error_slices(frame, error=lambda y, p: (y - p).abs() > 2)
    pd.testing.assert_frame_equal(by_callable.tested, got.tested, rtol=1e-12)


# ---------------------------------------------------------------- bad input


def test_bad_input_says_what_to_change(tmp_path: Path, planted_store: Path, store_writer: Any) -> None:
    frame = generate(500, seed=1)
    with pytest.raises(KeyError, match=r"no field 'features\.regoin'.*did you mean 'context\.region'"):
        error_slices(frame, features=["regoin"])
    with pytest.raises(KeyError, match="did you mean 'features.plan'"):
        error_slices(frame, features="plna")
    for bad in ({"max_depth": 0}, {"max_depth": 4}, {"max_depth": 1.5}, {"max_depth": True}):
        with pytest.raises(ValueError, match="max_depth must be an integer from 1 to 3"):
            error_slices(frame, **bad)
    for bad in ({"alpha": 0}, {"alpha": 1}, {"alpha": -0.1}, {"alpha": True}, {"alpha": "0.05"}):
        with pytest.raises(ValueError, match="alpha must be a number between 0 and 1"):
            error_slices(frame, **bad)
    for bad in ({"top": 0}, {"top": -1}, {"top": 2.0}):
        with pytest.raises(ValueError, match="top must be an integer of at least 1"):
            error_slices(frame, **bad)
    for bad in ({"min_support": 0}, {"min_support": -5}, {"min_support": 1.0}, {"min_support": True}):
        with pytest.raises(ValueError, match="min_support must be a number of rows"):
            error_slices(frame, **bad)
    with pytest.raises(ValueError, match="bins must be an integer of at least 2"):
        error_slices(frame, bins=1)
    with pytest.raises(ValueError, match="rank must be one of 'excess', 'sliceline'"):
        error_slices(frame, rank="lift")
    with pytest.raises(ValueError, match="no predictions in a frame of 0 rows"):
        error_slices(frame.iloc[:0])
    with pytest.raises(TypeError, match="select rows of a Store"):
        error_slices(frame, version="1")
    with Store(planted_store) as s:
        with pytest.raises(ValueError, match=r"no predictions in model churn, .*widen the selection"):
            error_slices(s, where="features.plan = 'platinum'")
    unlabeled = frame.drop(columns=["label"]).assign(ts=pd.Timestamp("2026-11-01", tz="UTC"))
    path = store_writer(tmp_path / "unlabeled", unlabeled.rename(columns=lambda c: c.replace("context.", "")))
    with Store(path) as s, pytest.raises(ValueError, match=r"no labels in model m \(500 predictions\).*log_label"):
        error_slices(s)
    # A min_support share is of the scored rows; min_support above every slice tests none.
    assert error_slices(frame, min_support=0.5).summary["min_support"] == 250
    assert error_slices(frame, min_support=10_000).summary["tested"] == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    levels=st.integers(1, 6),
    missing=st.floats(0, 0.5),
    depth=st.integers(1, 3),
    bins=st.integers(2, 6),
)
def test_counts_equal_pandas_on_any_small_frame(
    n: int, seed: int, levels: int, missing: float, depth: int, bins: int
) -> None:
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=n), 1)
    x[rng.random(n) < missing / 2] = np.nan
    x[rng.random(n) < missing / 4] = np.inf
    tier = rng.choice([f"t{i}" for i in range(levels)], n).astype(object)
    tier[rng.random(n) < missing] = None
    label = rng.integers(0, 2, n)
    frame = pd.DataFrame(
        {"tier": tier, "x": x, "context.k": rng.choice(["a", "b"], n), "label": label, "prediction": label}
    )
    frame.loc[rng.random(n) < 0.3, "prediction"] = 1 - frame["label"]
    got = error_slices(frame, max_depth=depth, bins=bins, min_support=1, top=None)
    want = by_hand(frame, got)
    np.testing.assert_array_equal(got.tested["rows"].to_numpy(), want["rows"].to_numpy())
    np.testing.assert_allclose(got.tested["errors"].to_numpy(float), want["errors"].to_numpy(float))
    assert got.tested["p_value"].between(0, 1).all() and got.tested["p_adjusted"].between(0, 1).all()
    assert got.summary["rows"] == n
    # Every value of one field with a row is a slice: their rows add up to all rows.
    for f in got.summary["features"]:
        assert got.tested.loc[(got.tested["depth"] == 1) & (got.tested["feature_1"] == f), "rows"].sum() == n


def test_many_fields_take_several_passes_and_count_the_same() -> None:
    rng = np.random.default_rng(21)
    n = 1_500
    frame = pd.DataFrame({f"c{i:02d}": rng.choice(["a", "b", "c"], n) for i in range(30)})
    frame["label"] = rng.integers(0, 2, n)
    frame["prediction"] = np.where(rng.random(n) < 0.2, 1 - frame["label"], frame["label"])
    got = error_slices(frame, min_support=1, top=None)  # 30 fields at depth 2: more than 32 packed groups
    assert got.tested["depth"].value_counts().to_dict() == {1: 90, 2: 435 * 9}
    want = by_hand(frame, got)
    np.testing.assert_array_equal(got.tested["rows"].to_numpy(), want["rows"].to_numpy())
    np.testing.assert_allclose(got.tested["errors"].to_numpy(float), want["errors"].to_numpy(float))
    wide = pd.DataFrame({f"w{i:02d}": rng.choice(["x", "y"], n) for i in range(70)}).assign(
        label=frame["label"], prediction=frame["prediction"]
    )
    one = error_slices(wide, max_depth=1, min_support=1, top=None)  # 70 category fields
    assert len(one.tested) == 140 and all(v == ["x", "y"] or v == ["y", "x"] for v in one.values.values())
