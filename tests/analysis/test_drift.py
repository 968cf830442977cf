"""Input and prediction drift: every statistic equal to its reference, on stores the SDK wrote."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

import predlog
from predlog.analysis import DriftResult, Profile, input_drift, prediction_drift
from predlog.replay import Store, UnknownModelError

REL = 1e-9


def write(
    store: Path,
    frame: pd.DataFrame,
    *,
    version: str,
    model: str = "m",
    predictions: Any = None,
    sample_rate: float = 1.0,
    batch: int = 2_000,
) -> None:
    """Log ``frame`` in batch calls of ``model``/``version`` through the SDK and seal it.

    Each batch is served to its own user: sampling is decided per call by the user's bucket
    (deterministic), so a sampled store is the same on every run.
    """
    rec = predlog.Recorder(store=str(store), model=model, version=version)
    outputs = iter([])

    @rec.capture(sample_rate=sample_rate)
    def predict(x: pd.DataFrame) -> Any:
        return next(outputs)

    try:
        for start in range(0, len(frame), batch):
            rows = frame.iloc[start : start + batch].reset_index(drop=True)
            out = np.zeros(len(rows)) if predictions is None else predictions[start : start + batch]
            outputs = iter([out])
            with predlog.context(user_id=f"u{start // batch}"):
                predict(rows)
        assert rec.flush(timeout_s=60)
    finally:
        rec.shutdown()


# ---------------------------------------------------------------- oracles


def psi_oracle(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """PSI and Jensen-Shannon on the reference's deciles, written from the definition."""
    edges = np.unique(np.quantile(ref, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], method="inverted_cdf"))

    def shares(x: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(edges, x, side="left")  # right-closed bins: x <= edge goes below it
        return np.bincount(idx, minlength=len(edges) + 1) / len(x)

    r, c = shares(ref), shares(cur)
    rr, cc = np.maximum(r, 1e-4), np.maximum(c, 1e-4)
    return float(np.sum((cc - rr) * np.log(cc / rr))), float(distance.jensenshannon(r, c, base=2))


def assert_close(got: float, want: float, what: str) -> None:
    assert math.isclose(got, want, rel_tol=REL, abs_tol=1e-15), f"{what}: {got!r} != {want!r}"


def check_numbers(row: pd.Series, ref: np.ndarray, cur: np.ndarray) -> None:
    name = row.get("feature", row.name)
    ks = stats.ks_2samp(ref, cur)
    assert_close(row["ks"], float(ks.statistic), f"{name} ks")
    assert_close(row["ks_p_value"], float(ks.pvalue), f"{name} ks p")
    assert row["ks_method"] == ("exact" if max(len(ref), len(cur)) <= 10_000 else "asymp")
    assert_close(row["ks_location"], float(ks.statistic_location), f"{name} location")
    w = stats.wasserstein_distance(ref, cur) / np.std(ref)
    assert_close(row["wasserstein"], float(w), f"{name} wasserstein")
    psi, js = psi_oracle(ref, cur)
    assert_close(row["psi"], psi, f"{name} psi")
    assert_close(row["js"], js, f"{name} js")


# ---------------------------------------------------------------- a real dataset


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    data.columns = [c.replace(" ", "_") for c in data.columns]
    ref, cur = data.iloc[::2].reset_index(drop=True), data.iloc[1::2].reset_index(drop=True).copy()
    cur["mean_radius"] = cur["mean_radius"] + 0.5 * data["mean_radius"].std()  # planted
    store = tmp_path_factory.mktemp("cancer")
    write(store, ref, version="ref")
    write(store, cur, version="cur")
    return store, ref, cur


def test_every_number_statistic_equals_scipy_on_a_real_dataset(cancer: Any) -> None:
    store, ref, cur = cancer
    with Store(store) as s:
        got = input_drift(s, {"version": "ref"}, {"version": "cur"})
    assert isinstance(got, DriftResult)
    assert got.summary["features"] == ref.shape[1] == got.summary["tested"]
    for _, row in got.df.iterrows():
        name = row["feature"].split(".", 1)[1]
        check_numbers(row, ref[name].to_numpy(), cur[name].to_numpy())
        assert row["method"] == "ks" and row["statistic"] == row["ks"] and row["p_value"] == row["ks_p_value"]
    # Benjamini-Hochberg over the features, as scipy adjusts them.
    by_p = got.df.set_index("feature")
    order = list(by_p.index)
    want = stats.false_discovery_control(by_p.loc[order, "p_value"].to_numpy(float), method="bh")
    np.testing.assert_allclose(by_p.loc[order, "p_adjusted"].to_numpy(float), want, rtol=REL)
    assert got.drifted[0] == "features.mean_radius"  # the planted shift leads
    assert got.df.iloc[0]["drifted"]
    assert "mean_radius" in got.summary["text"] and got.summary["reference"] == "version ref"


def test_a_frame_reference_equals_the_store_reference(cancer: Any) -> None:
    store, ref, cur = cancer
    with Store(store) as s:
        from_store = input_drift(s, {"version": "ref"}, {"version": "cur"})
        from_frame = input_drift(s, ref, {"version": "cur"})
    pd.testing.assert_frame_equal(
        from_store.df.drop(columns=["note"]), from_frame.df.drop(columns=["note"]), check_exact=False, rtol=REL
    )
    assert from_frame.reference == f"reference frame ({len(ref):,} rows)"
    frames_only = input_drift(None, ref, cur)
    pd.testing.assert_frame_equal(from_store.df, frames_only.df, check_exact=False, rtol=REL)


def test_corrections_and_distance_methods(cancer: Any) -> None:
    store, ref, cur = cancer
    with Store(store) as s:
        none = input_drift(s, {"version": "ref"}, {"version": "cur"}, correction=None)
        bonf = input_drift(s, {"version": "ref"}, {"version": "cur"}, correction="bonferroni")
        psi = input_drift(s, {"version": "ref"}, {"version": "cur"}, method="psi")
        with pytest.raises(ValueError, match="correction must be"):
            input_drift(s, {"version": "ref"}, {"version": "cur"}, correction="holm")
        with pytest.raises(ValueError, match="method must be one of"):
            input_drift(s, {"version": "ref"}, {"version": "cur"}, method="t")
    p = none.df.set_index("feature")["p_value"]
    assert (none.df["p_adjusted"] == none.df["p_value"]).all()
    b = bonf.df.set_index("feature")["p_adjusted"]
    np.testing.assert_allclose(b[p.index].to_numpy(float), np.minimum(p.to_numpy(float) * len(p), 1), rtol=REL)
    assert (psi.df["method"] == "psi").all() and psi.df["p_value"].isna().all()
    assert list(psi.df.loc[psi.df["drifted"], "feature"]) == list(psi.df.loc[psi.df["psi"] > 0.2, "feature"])


# ---------------------------------------------------------------- edge cases


def test_ties_nans_constants_categories_and_one_sided_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 3_000
    ref = pd.DataFrame(
        {
            "ties": rng.integers(0, 5, n),
            "with_nan": np.where(rng.random(n) < 0.1, np.nan, rng.normal(0, 1, n)),
            "constant": np.full(n, 3.0),
            "country": rng.choice(["DE", "FR", "US"], n, p=[0.5, 0.3, 0.2]),
            "flag": rng.random(n) < 0.3,
            "gone": rng.normal(0, 1, n),
        }
    )
    cur = pd.DataFrame(
        {
            "ties": rng.integers(0, 6, n),
            "with_nan": np.where(rng.random(n) < 0.3, np.nan, rng.normal(0.1, 1, n)),
            "constant": np.full(n, 3.0),
            "country": rng.choice(["DE", "FR", "US", "BR"], n, p=[0.4, 0.3, 0.2, 0.1]),
            "flag": rng.random(n) < 0.3,
            "new": rng.normal(0, 1, n),
        }
    )
    write(tmp_path, ref, version="a")
    write(tmp_path, cur, version="b")
    with Store(tmp_path) as s:
        got = input_drift(s, {"version": "a"}, {"version": "b"}).df.set_index("feature")
    check_numbers(got.loc["features.ties"], ref["ties"].to_numpy(float), cur["ties"].to_numpy(float))
    r_ok, c_ok = ref["with_nan"].dropna().to_numpy(), cur["with_nan"].dropna().to_numpy()
    check_numbers(got.loc["features.with_nan"], r_ok, c_ok)
    assert got.loc["features.with_nan", "ref_rows"] == len(r_ok)
    assert_close(got.loc["features.with_nan", "cur_missing"], float(cur["with_nan"].isna().mean()), "missing share")
    const = got.loc["features.constant"]
    assert const["note"] == "constant" and const["ks"] == 0 and not const["drifted"]
    country = got.loc["features.country"]
    table = pd.crosstab(
        np.r_[np.zeros(n), np.ones(n)], np.r_[ref["country"].to_numpy(), cur["country"].to_numpy()]
    ).to_numpy()
    want = stats.chi2_contingency(table)
    assert_close(country["chi2"], float(want.statistic), "chi2")
    assert_close(country["chi2_p_value"], float(want.pvalue), "chi2 p")
    assert country["method"] == "chi2" and country["new_categories"] == ["BR"] and country["drifted"]
    assert_close(country["new_share"], float((cur["country"] == "BR").mean()), "new share")
    flag = got.loc["features.flag"]  # two categories: Yates' correction, as scipy's default
    table = np.array([[(~ref["flag"]).sum(), ref["flag"].sum()], [(~cur["flag"]).sum(), cur["flag"].sum()]])[
        :, :: -1 if ref["flag"].sum() + cur["flag"].sum() > n else 1
    ]
    assert_close(flag["chi2_p_value"], float(stats.chi2_contingency(table).pvalue), "yates")
    assert got.loc["features.gone", "note"] == "only in reference"
    assert got.loc["features.new", "note"] == "only in current"
    assert pd.isna(got.loc["features.new", "p_value"]) and not got.loc["features.new", "drifted"]


def test_small_samples_are_insufficient_not_errors(tmp_path: Path) -> None:
    write(tmp_path, pd.DataFrame({"x": [1.0, 2.0, 3.0]}), version="a")
    write(tmp_path, pd.DataFrame({"x": [None, None, None], "y": [1, 2, 3]}), version="b")
    write(tmp_path, pd.DataFrame({"x": [4.0, 5.0, 6.0]}), version="c")
    with Store(tmp_path) as s:
        got = input_drift(s, {"version": "a"}, {"version": "b"}).df.set_index("feature")
        few = input_drift(s, {"version": "a"}, {"version": "c"}).df.set_index("feature")
    # x has values in a only (b's x is never given one), y in b only
    assert got.loc["features.x", "note"] == "only in reference" and got.loc["features.y", "note"] == "only in current"
    assert few.loc["features.x", "note"] == "insufficient data (fewer than 30 values)"
    assert few.loc["features.x", "ref_rows"] == few.loc["features.x", "cur_rows"] == 3
    assert not got["drifted"].any() and not few["drifted"].any()


def test_large_samples_use_the_asymptotic_p_value_as_scipy_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 30_000).round(2)})  # many ties
    cur = pd.DataFrame({"x": rng.normal(0.02, 1, 25_000).round(2)})
    write(tmp_path, ref, version="a")
    write(tmp_path, cur, version="b")
    with Store(tmp_path) as s:
        row = input_drift(s, {"version": "a"}, {"version": "b"}).df.iloc[0]
    check_numbers(row, ref["x"].to_numpy(), cur["x"].to_numpy())
    assert row["ks_method"] == "asymp"


def test_rows_sampled_at_different_rates_are_weighted(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    kept = pd.DataFrame({"x": rng.normal(0, 1, 1_000)})  # sampled at 0.5: each stands for 2
    full = pd.DataFrame({"x": rng.normal(1, 1, 1_000)})
    write(tmp_path, kept, version="a", sample_rate=0.5, batch=50)  # about half the 20 calls kept
    write(tmp_path, full, version="a")
    cur = pd.DataFrame({"x": rng.normal(0.5, 1, 2_000)})
    write(tmp_path, cur, version="b")
    with Store(tmp_path) as s:
        rates = s.predictions("m", version="a", columns=["sample_rate"])["sample_rate"]
        assert 0 < (rates == 0.5).sum() < 1_000 and (rates == 1.0).sum() == 1_000
        row = input_drift(s, {"version": "a"}, {"version": "b"}).df.iloc[0]
        raw = s.predictions("m", version="a", columns=["features.x", "sample_rate"])
    # Weighted by 1 / sample_rate: the same ECDF as every rate-0.5 row counted twice.
    replicated = np.repeat(raw["features.x"].to_numpy(), np.rint(1 / raw["sample_rate"]).astype(int))
    assert_close(row["ks"], float(stats.ks_2samp(replicated, cur["x"].to_numpy()).statistic), "weighted ks")
    assert row["ks_method"] == "asymp"  # Kish's effective sample size, not the scipy p-value


# ---------------------------------------------------------------- power and false positives


def test_a_small_shift_is_found_and_random_splits_stay_within_the_false_positive_rate() -> None:
    from sklearn.datasets import load_diabetes

    rng = np.random.default_rng(11)
    base = pd.DataFrame(rng.normal(0, 1, (10_000, 8)), columns=[f"f{i}" for i in range(8)])
    ref, cur = base.iloc[:5_000].reset_index(drop=True), base.iloc[5_000:].reset_index(drop=True).copy()
    cur["f3"] = cur["f3"] + 0.2  # 0.2 standard deviations
    got = input_drift(None, ref, cur)
    assert got.drifted == ["features.f3"]

    data = load_diabetes(as_frame=True).frame.drop(columns="target")
    flagged = 0
    for _ in range(200):
        idx = rng.permutation(len(data))
        half = len(data) // 2
        res = input_drift(None, data.iloc[idx[:half]], data.iloc[idx[half:]])
        flagged += int(res.summary["drifted"] > 0)
    # BH controls the false discovery rate; under no drift at all, the chance that any
    # feature is flagged is at most alpha (0.05): 200 draws give about 10, allow noise.
    assert flagged <= 20, flagged


# ---------------------------------------------------------------- profiles


def test_a_profile_gives_the_same_drift_as_its_frame(tmp_path: Path, cancer: Any) -> None:
    _, ref, cur = cancer
    profile = Profile.from_frame(ref, label="training set")
    profile.save(tmp_path / "p.json")
    loaded = Profile.load(tmp_path / "p.json")
    assert loaded.rows == len(ref) and loaded.label == "training set"
    raw = input_drift(None, ref, cur)
    for p in (profile, loaded):
        got = input_drift(None, p, cur)
        pd.testing.assert_frame_equal(got.df, raw.df, check_exact=False, rtol=REL)
        assert got.reference == "training set"
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["format"] == "predlog.profile" and doc["version"] == 1
    assert doc["fields"]["features.mean_radius"]["summary"]["exact"] is True


def test_a_sketched_profile_stays_within_its_stated_bound(cancer: Any) -> None:
    _, ref, cur = cancer
    sketch = Profile.from_frame(ref, max_values=50)
    raw = input_drift(None, ref, cur).df.set_index("feature")
    got = input_drift(None, sketch, cur).df.set_index("feature")
    for name in raw.index:
        bound = got.loc[name, "error_bound"]
        assert bound == pytest.approx(1 / 50)
        assert abs(got.loc[name, "ks"] - raw.loc[name, "ks"]) <= bound + 1e-12, name


def test_profiles_from_a_store_and_bad_files(tmp_path: Path, cancer: Any) -> None:
    store, ref, cur = cancer
    with Store(store) as s:
        profile = Profile.from_store(s, version="ref")
        assert profile.filters == {"model": "m", "version": "ref"}
        via_profile = input_drift(s, profile, {"version": "cur"})
        direct = input_drift(s, {"version": "ref"}, {"version": "cur"})
    pd.testing.assert_frame_equal(via_profile.df, direct.df, check_exact=False, rtol=REL)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "predlog.profile", "version": 99, "fields": {}}')
    with pytest.raises(ValueError, match="version 99.*upgrade predlog"):
        Profile.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a predlog profile"):
        Profile.load(bad)
    # A file edited by hand: a clear error naming what is wrong, never a raw KeyError or IndexError.
    good = json.loads(json.dumps(profile.to_dict()))
    number = next(p for p, f in good["fields"].items() if f["kind"] == "number" and p.startswith("features."))

    def edited(change: Any) -> Path:
        data = json.loads(json.dumps(good))
        change(data)
        bad.write_text(json.dumps(data))
        return bad

    cases = [
        (lambda d: d.pop("rows"), "missing key 'rows'"),
        (lambda d: d.update(fields=[]), "not a valid predlog profile"),
        (lambda d: d.update(version="1"), '"version" must be a whole number'),
        (lambda d: d["fields"][number]["summary"]["weights"].pop(), "equal length"),
        (lambda d: d["fields"][number]["summary"]["values"].reverse(), "increasing order"),
        (
            lambda d: d["fields"][number]["summary"].update(
                weights=[-1.0] * len(d["fields"][number]["summary"]["weights"])
            ),
            "positive",
        ),
    ]
    for change, said in cases:
        with pytest.raises(ValueError, match=f"not a valid predlog profile.*{re.escape(said)}|{re.escape(said)}"):
            Profile.load(edited(change))
    bad.write_bytes('{"format": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        Profile.load(bad)


# ---------------------------------------------------------------- predictions


def test_prediction_drift_for_numbers_classes_and_confidence(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = pd.DataFrame({"a": rng.normal(0, 1, 4_000)})
    p_ref, p_cur = rng.normal(0.3, 0.1, 2_000), rng.normal(0.35, 0.12, 2_000)
    write(tmp_path, x.iloc[:2_000], version="a", predictions=p_ref)
    write(tmp_path, x.iloc[2_000:].reset_index(drop=True), version="b", predictions=p_cur)
    classes_ref = rng.choice(["cat", "dog", "emu"], 3_000, p=[0.5, 0.4, 0.1])
    classes_cur = rng.choice(["cat", "dog", "emu"], 3_000, p=[0.4, 0.4, 0.2])
    write(tmp_path, x.iloc[:3_000], model="c", version="a", predictions=classes_ref)
    write(tmp_path, x.iloc[:3_000], model="c", version="b", predictions=classes_cur)
    with Store(tmp_path) as s:
        num = prediction_drift(s, {"version": "a"}, {"version": "b"}, model="m")
        cls = prediction_drift(s, {"version": "a"}, {"version": "b"}, model="c")
    row = num.df.set_index("feature").loc["prediction"]
    check_numbers(row, p_ref, p_cur)
    means = num.means.set_index("feature").loc["prediction"]
    t = stats.ttest_ind(p_cur, p_ref, equal_var=False)
    ci = t.confidence_interval(0.95)
    assert_close(means["mean_diff"], float(p_cur.mean() - p_ref.mean()), "mean diff")
    assert_close(means["ci_low"], float(ci.low), "welch low")
    assert_close(means["ci_high"], float(ci.high), "welch high")
    assert_close(means["welch_p_value"], float(t.pvalue), "welch p")
    crow = cls.df.set_index("feature").loc["prediction"]
    table = pd.crosstab(np.r_[np.zeros(3_000), np.ones(3_000)], np.r_[classes_ref, classes_cur]).to_numpy()
    assert_close(crow["chi2"], float(stats.chi2_contingency(table).statistic), "class chi2")
    shares = cls.shares.set_index("category")
    assert_close(shares.loc["emu", "cur_share"], float((classes_cur == "emu").mean()), "emu share")
    assert crow["drifted"]


def test_prediction_drift_for_probability_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    ref = rng.dirichlet([5, 3, 2], 2_000)
    cur = rng.dirichlet([3, 3, 4], 2_000)
    x = pd.DataFrame({"a": rng.normal(0, 1, 2_000)})
    write(tmp_path, x, version="a", predictions=ref)
    write(tmp_path, x, version="b", predictions=cur)
    with Store(tmp_path) as s:
        got = prediction_drift(s, {"version": "a"}, {"version": "b"})
    df = got.df.set_index("feature")
    cls = df.loc["prediction.class"]
    table = pd.crosstab(np.r_[np.zeros(2_000), np.ones(2_000)], np.r_[ref.argmax(1), cur.argmax(1)]).to_numpy()
    assert_close(cls["chi2"], float(stats.chi2_contingency(table).statistic), "argmax chi2")
    means = got.means.set_index("feature")
    for k in range(3):
        t = stats.ttest_ind(cur[:, k], ref[:, k], equal_var=False)
        assert_close(means.loc[f"prediction[{k}]", "mean_diff"], float(cur[:, k].mean() - ref[:, k].mean()), "mean")
        assert_close(means.loc[f"prediction[{k}]", "ci_low"], float(t.confidence_interval().low), "low")


# ---------------------------------------------------------------- the result and errors


def test_the_result_reads_as_a_table_json_html_and_a_plot(cancer: Any) -> None:
    store, _, _ = cancer
    with Store(store) as s:
        got = input_drift(s, {"version": "ref"}, {"version": "cur"})
    json.dumps(got.to_dict(), allow_nan=False)
    html = got._repr_html_()
    assert "<table" in html and "mean_radius" in html
    assert "DriftResult" in repr(got) and got.summary["text"] in repr(got)
    assert got.filters == {"model": "m", "version": "cur"}
    fig = got.plot()
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 6
    fig = got.plot(["mean_radius", "mean_texture"])
    assert "features.mean_radius" in fig.axes[0].get_title()


def test_wrong_arguments_say_what_to_do(tmp_path: Path, cancer: Any) -> None:
    store, ref, _ = cancer
    with Store(store) as s:
        with pytest.raises(UnknownModelError, match="'nope'"):
            input_drift(s, {"version": "ref"}, model="nope")
        with pytest.raises(TypeError, match="a dict of Store.predictions filters"):
            input_drift(s, [1, 2, 3])
        with pytest.raises(TypeError, match="verison.*did you mean 'version'"):
            input_drift(s, {"verison": "ref"})
        with pytest.raises(ValueError, match="on neither side"):
            input_drift(s, {"version": "ref"}, {"version": "cur"}, features=["nope"])
    write(tmp_path, ref.iloc[:100], version="x", model="other")
    write(tmp_path, ref.iloc[:100], version="x", model="another")
    with Store(tmp_path) as s, pytest.raises(ValueError, match="2 models \\(another, other\\).*model="):
        input_drift(s, {"version": "x"})
    with pytest.raises(TypeError, match="needs a Store"):
        input_drift(None, {"version": "x"})


def test_current_defaults_to_the_last_day(cancer: Any) -> None:
    store, _, _ = cancer
    with Store(store) as s:
        got = input_drift(s, {"version": "ref"})
    assert got.current.startswith("last day (")
    assert got.df["cur_rows"].max() == 569  # every row was written today


def test_sides_past_the_exact_limit_are_sketched_within_the_stated_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from predlog.analysis import _summary

    rng = np.random.default_rng(9)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 6_000), "k": rng.integers(0, 40, 6_000)})
    cur = pd.DataFrame({"x": rng.normal(0.1, 1.1, 5_000), "k": rng.integers(0, 42, 5_000)})
    write(tmp_path, ref, version="a")
    write(tmp_path, cur, version="b")
    with Store(tmp_path) as s:
        exact = input_drift(s, {"version": "a"}, {"version": "b"}).df.set_index("feature")
        # The same rows, as if each side held more values than fit in memory.
        monkeypatch.setattr(_summary, "EXACT_LIMIT", 1_000)
        monkeypatch.setattr(_summary, "SKETCH_POINTS", 200)
        sketched = input_drift(s, {"version": "a"}, {"version": "b"}).df.set_index("feature")
    for name in ("features.x", "features.k"):
        bound = sketched.loc[name, "error_bound"]
        assert bound == pytest.approx(2 / 200)  # 1/200 for each sketched side
        assert abs(sketched.loc[name, "ks"] - exact.loc[name, "ks"]) <= bound, name
        assert sketched.loc[name, "ks_method"] == "asymp"
    assert exact.loc["features.x", "error_bound"] == 0


def test_many_categories_are_pooled_alike_on_both_sides() -> None:
    """Past 1,000 categories over both sides, the lightest by their share on the two sides
    together are pooled under "(other)" on both sides: the same bins, nothing counted new."""
    a = [f"a{i}" for i in range(1000)]
    b = [f"b{i}" for i in range(200)]
    ref = pd.DataFrame({"c": a * 5 + b})
    cur = pd.DataFrame({"c": a + b * 5})
    got = input_drift(None, ref, cur).df.set_index("feature").loc["features.c"]
    assert got["new_categories"] == [] and got["new_share"] == 0.0
    r = ref["c"].value_counts() / len(ref)
    c = cur["c"].value_counts() / len(cur)
    share = r.add(c, fill_value=0)
    order = sorted(share.index, key=lambda k: (-share[k], k))
    kept, tail = order[:999], order[999:]
    table = np.array(
        [[*(side["c"].value_counts().reindex(kept, fill_value=0)), side["c"].isin(tail).sum()] for side in (ref, cur)]
    )
    want = stats.chi2_contingency(table)
    assert math.isclose(got["chi2"], want.statistic, rel_tol=REL) and math.isclose(
        got["chi2_p_value"], want.pvalue, rel_tol=REL
    )


def test_model_in_a_side_and_what_the_summary_says(tmp_path: Path) -> None:
    """``model`` may be named in a dict side; the summary names the p-value the decision
    used and the features on one side only; distances order the table when there is no p."""
    rng = np.random.default_rng(2)
    base = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600)})
    write(tmp_path, base, version="1.0")
    write(tmp_path, base.assign(a=base["a"] + 1.0, b=base["b"] + 0.3), version="2.0")
    write(tmp_path, base, version="1.0", model="other")
    with Store(tmp_path) as s:
        r = input_drift(s, {"model": "m", "version": "1.0"}, {"version": "2.0"})
        assert r.summary["model"] == "m"
        assert re.search(r"strongest: features\.a \(ks [\d.]+, p \(bh-adjusted\) [\de.+-]+\)\.$", r.summary["text"])
        with pytest.raises(ValueError, match="the sides name different models"):
            input_drift(s, {"model": "m", "version": "1.0"}, {"model": "other"})
        by_psi = input_drift(s, {"model": "m", "version": "1.0"}, {"version": "2.0"}, method="psi", threshold=10)
        assert list(by_psi.df["feature"]) == ["features.a", "features.b"]  # the larger PSI first
        assert by_psi.df["psi"].iloc[0] > by_psi.df["psi"].iloc[1]
    renamed = base.rename(columns={"a": "aa"})
    text = input_drift(None, base, renamed).summary["text"]
    assert text.endswith("On one side only: features.a (reference), features.aa (current).")


def test_infinite_values_are_missing(tmp_path: Path) -> None:
    """±inf (an overflow upstream) is missing, as NaN is: the statistics are those of the
    finite values, and a profile of such a frame saves as plain JSON."""
    rng = np.random.default_rng(6)
    ref = pd.DataFrame({"x": rng.normal(size=400)})
    cur = pd.DataFrame({"x": rng.normal(0.3, 1, size=400)})
    cur.loc[::10, "x"] = np.inf
    cur.loc[5::10, "x"] = -np.inf
    got = input_drift(None, ref, cur).df.set_index("feature").loc["features.x"]
    finite = cur["x"][np.isfinite(cur["x"])].to_numpy()
    want = stats.ks_2samp(ref["x"].to_numpy(), finite)
    assert got["cur_rows"] == len(finite) and math.isclose(got["cur_missing"], 0.2)
    assert math.isclose(got["ks"], want.statistic, rel_tol=REL) and math.isclose(
        got["ks_p_value"], want.pvalue, rel_tol=REL
    )
    w = stats.wasserstein_distance(ref["x"], finite) / np.std(ref["x"])
    assert math.isclose(got["wasserstein"], w, rel_tol=REL)
    Profile.from_frame(cur).save(tmp_path / "p.json")
    json.loads((tmp_path / "p.json").read_text())


def test_decile_edges_at_exact_tenths() -> None:
    """With 1,000 distinct reference values the 30 % edge is the 300th value, as
    numpy.quantile(ref, 0.3, method="inverted_cdf") has it (0.3, not linspace's 0.30000000000000004)."""
    rng = np.random.default_rng(12)
    ref = pd.DataFrame({"x": rng.normal(size=1000)})
    cur = pd.DataFrame({"x": rng.normal(0.2, 1, size=700)})
    got = input_drift(None, ref, cur).df.set_index("feature").loc["features.x"]
    want_psi, want_js = psi_oracle(ref["x"].to_numpy(), cur["x"].to_numpy())
    assert np.quantile(ref["x"], 0.3, method="inverted_cdf") == np.sort(ref["x"])[299]
    assert math.isclose(got["psi"], want_psi, rel_tol=REL) and math.isclose(got["js"], want_js, rel_tol=REL)


def test_the_method_says_when_scipy_falls_back_from_exact() -> None:
    """Where scipy's exact p-value cannot be computed it warns and uses the asymptotic one;
    ``ks_method`` says which was used."""
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.permutation(np.arange(10_000, dtype=float))})
    cur = pd.DataFrame({"x": rng.permutation(np.arange(10_000, dtype=float)) + 0.5})
    row = input_drift(None, ref, cur).df.iloc[0]
    with pytest.warns(RuntimeWarning, match="Switching to method=asymp"):
        want = stats.ks_2samp(ref["x"], cur["x"])
    assert row["ks_method"] == "asymp" and math.isclose(row["ks_p_value"], want.pvalue, rel_tol=REL)


def test_frame_columns_that_differ_only_in_case_are_refused() -> None:
    frame = pd.DataFrame({"Amount": [1.0, 2.0], "amount": [3.0, 4.0]})
    with pytest.raises(ValueError, match="'Amount' and 'amount' differ only in case.*rename one"):
        input_drift(None, frame, frame)
    with pytest.raises(ValueError, match="differ only in case"):
        Profile.from_frame(frame)
