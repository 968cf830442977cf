"""drift_over_time: each cell equals the _stats statistic (and scipy) on that window's rows alone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from predlog.analysis import DriftOverTime, Profile, drift_over_time, when_shifted
from predlog.analysis import _stats as st
from predlog.analysis._sides import FrameSide, StoreSide
from predlog.analysis._summary import Categories, Numbers
from predlog.replay import Store

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2026-11-01", tz="UTC")


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


# ---------------------------------------------------------------------------- references


def psi_numpy(ref: np.ndarray, cur: np.ndarray) -> float:
    """PSI as documented: reference deciles (inverted_cdf), right-closed bins, shares floored."""
    edges = np.unique(np.quantile(ref, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], method="inverted_cdf"))
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=len(edges) + 1) / len(cur)
    r, c = np.maximum(r, st.PSI_FLOOR), np.maximum(c, st.PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def js_numpy(ref: np.ndarray, cur: np.ndarray) -> float:
    edges = np.unique(np.quantile(ref, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], method="inverted_cdf"))
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=len(edges) + 1) / len(cur)
    return float(distance.jensenshannon(r, c, base=2))


def category_shares(ref: pd.Series, cur: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    cats = sorted(set(ref.dropna()) | set(cur.dropna()), key=str)
    r = np.array([(ref == k).sum() for k in cats], dtype=float)
    c = np.array([(cur == k).sum() for k in cats], dtype=float)
    return r / r.sum(), c / c.sum()


def by_stats(ref: Any, cur: Any, statistic: str) -> float:
    """The _stats function on two summaries: what each cell must equal."""
    if isinstance(ref, Categories):
        t = st.compare_categories(ref, cur)
        return t.js if statistic == "js" else t.psi
    assert isinstance(ref, Numbers) and isinstance(cur, Numbers)
    if statistic == "mean":
        return cur.mean
    t = st.compare_numbers(ref, cur)
    return {"psi": t.psi, "js": t.js, "ks": t.ks}[statistic]


def by_scipy(ref: pd.Series, cur: pd.Series, statistic: str) -> float:
    """numpy / scipy on the raw values (NaN and null dropped)."""
    ref, cur = ref.dropna(), cur.dropna()
    if ref.dtype == object and all(isinstance(v, float) for v in ref):
        ref, cur = ref.astype(float).dropna(), cur.astype(float).dropna()
    if not pd.api.types.is_numeric_dtype(ref) or pd.api.types.is_bool_dtype(ref):
        r, c = category_shares(ref, cur)
        if statistic == "js":
            return float(distance.jensenshannon(r, c, base=2))
        r, c = np.maximum(r, st.PSI_FLOOR), np.maximum(c, st.PSI_FLOOR)
        return float(np.sum((c - r) * np.log(c / r)))
    a, b = ref.to_numpy(dtype=float), cur.to_numpy(dtype=float)
    if statistic == "mean":
        return float(np.mean(b))
    if statistic == "ks":
        return float(stats.ks_2samp(a, b).statistic)
    return psi_numpy(a, b) if statistic == "psi" else js_numpy(a, b)


def window_of(ts: pd.Series) -> pd.Series:
    return pd.to_datetime(ts, utc=True).dt.floor("D")


def check_cells(result: DriftOverTime, frame: pd.DataFrame, ref_frame: pd.DataFrame, ref_side: Any) -> int:
    """Every computed cell against _stats on the window's rows and against numpy/scipy."""
    checked = 0
    win = window_of(frame["ts"])
    paths = list(dict.fromkeys(result.df["feature"]))
    columns = {p: p.split(".", 1)[1] if p.startswith("features.") else p for p in paths}
    ref_fields = ref_side.fields()
    ref_sums = ref_side.summarize([ref_fields[p] for p in paths])
    windows: dict[Any, tuple[pd.DataFrame, dict[str, Any]]] = {}
    for start in set(result.df["window_start"]):
        rows = frame.loc[win == start, list(columns.values())]
        if len(rows):
            side = FrameSide(rows)
            windows[start] = (rows, side.summarize([side.fields()[p] for p in paths]))
    for row in result.df.itertuples():
        if math.isnan(row.value):
            continue
        column = columns[row.feature]
        rows, sums = windows[row.window_start]
        cur = sums[row.feature]
        want = by_stats(ref_sums[row.feature], cur, row.statistic)
        assert close(row.value, want), (row.feature, row.window_start, row.statistic, row.value, want)
        raw = by_scipy(ref_frame[column], rows[column], row.statistic)
        assert close(row.value, raw), (row.feature, row.window_start, row.statistic, row.value, raw)
        if row.statistic == "ks" and row.kind == "number":  # the p-value: scipy's asymptotic one
            x, y = (
                pd.to_numeric(v, errors="coerce").dropna().to_numpy(float) for v in (ref_frame[column], rows[column])
            )
            p = stats.ks_2samp(x, y, method="asymp").pvalue
            assert close(row.p_value, p), (row.feature, row.window_start, row.p_value, p)
        assert row.rows == cur.n
        checked += 1
    return checked


# ---------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory, store_writer: Any) -> dict[str, Any]:
    """Breast cancer (scikit-learn's bundled copy): 30 features, a fitted model's probability
    and confidence, the diagnosis as a category; rows ordered by mean texture over 6 days, so
    later windows drift. The reference is a random 200 rows."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    X = data.data.rename(columns=lambda c: c.replace(" ", "_"))
    y = data.target
    rng = np.random.default_rng(0)
    ref_idx = rng.choice(len(X), 200, replace=False)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X.iloc[ref_idx], y.iloc[ref_idx])
    proba = model.predict_proba(X)[:, 1]
    frame = X.copy()
    frame["diagnosis"] = np.asarray(data.target_names)[y]
    frame["prediction"] = proba
    frame["confidence"] = np.maximum(proba, 1 - proba)
    frame = frame.sort_values("mean_texture", kind="stable").reset_index(drop=True)
    frame["ts"] = T0 + pd.to_timedelta(np.arange(len(frame)) * (6 * 86_400_000_000 // len(frame)), unit="us")
    path = tmp_path_factory.mktemp("cancer") / "store"
    store_writer(path, frame, confidence="confidence")
    ref = frame.drop(columns=["ts"]).sample(200, random_state=1).reset_index(drop=True)
    return {"path": path, "frame": frame, "ref": ref}


@pytest.mark.parametrize("statistic", ["auto", "js", "mean", "ks"])
def test_cells_equal_stats_and_scipy_on_breast_cancer(cancer: dict[str, Any], statistic: str) -> None:
    with Store(cancer["path"]) as s:
        r = drift_over_time(s, cancer["ref"], window="1D", statistic=statistic)
    stat = "psi" if statistic == "auto" else statistic
    assert r.summary["statistic"] == stat
    assert r.summary["windows"] == 6
    fields = set(r.df["feature"])
    assert {"features.mean_radius", "features.diagnosis", "prediction", "confidence"} <= fields
    assert len(fields) == 33
    # Category fields keep PSI under "mean" and "ks".
    cat = r.df[r.df["feature"] == "features.diagnosis"]
    assert set(cat["statistic"]) == {"js" if stat == "js" else "psi"}
    assert set(r.df.loc[r.df["kind"] == "number", "statistic"]) == {stat}
    checked = check_cells(r, cancer["frame"], cancer["ref"], FrameSide(cancer["ref"]))
    assert checked == 33 * 6  # every window has 94-95 rows: all tested


def test_ordered_rows_drift_and_the_summary_names_the_field(cancer: dict[str, Any]) -> None:
    with Store(cancer["path"]) as s:
        r = drift_over_time(s, cancer["ref"], window="1D")
    texture = r.df[r.df["feature"] == "features.mean_texture"]
    flags = texture["drifted"].tolist()
    assert flags == [True] * 6  # rows in order of texture: every window is a sixth of it
    assert not r.df.loc[r.df["feature"] == "features.mean_compactness", "drifted"].all()
    start = 0
    top = r.summary["drifted"][0]
    last_values = {f: r.df[r.df["feature"] == f].iloc[-1]["value"] for f in r.summary["drifted"]}
    assert top == max(last_values, key=lambda f: last_values[f])
    assert r.summary["since"]["features.mean_texture"] == T0 + start * DAY
    assert r.summary["text"].startswith(f"{top} drifted from {r.summary['since'][top]:%Y-%m-%d} (PSI ")
    assert r.summary["text"].split(" on ")[1].startswith("the last window)")
    last = r.df[(r.df["feature"] == top)].iloc[-1]
    assert r.summary["last"][top] == last["value"]
    wide = r.wide
    assert wide.shape == (6, 33)
    assert wide.index[0] == T0 and list(wide.columns) == list(dict.fromkeys(r.df["feature"]))
    assert wide.columns[0] == "features.area_error" and list(wide.columns[-3:]) == [
        "features.worst_texture",
        "prediction",
        "confidence",
    ]
    assert wide.loc[T0 + 5 * DAY, top] == last["value"]
    json.dumps(r.to_dict())
    assert "<table" in r._repr_html_() and "mean_texture" in repr(r)


def test_reference_as_store_filters_and_as_profile(cancer: dict[str, Any]) -> None:
    with Store(cancer["path"]) as s:
        by_dict = drift_over_time(s, {"end": T0 + 2 * DAY}, window="1D", statistic="js")
        ref_side = StoreSide(s, "m", {"end": T0 + 2 * DAY})
        check_cells(
            by_dict, cancer["frame"], cancer["frame"][window_of(cancer["frame"]["ts"]) < T0 + 2 * DAY], ref_side
        )
        profile = Profile.from_frame(cancer["ref"], label="training set")
        by_profile = drift_over_time(s, profile, window="1D")
        by_frame = drift_over_time(s, cancer["ref"], window="1D")
    assert by_dict.summary["reference"] == "… → 2026-11-03"
    assert by_profile.summary["reference"] == "training set"
    pd.testing.assert_series_equal(by_profile.df["value"], by_frame.df["value"], rtol=1e-12)


def test_windows_are_counted_in_one_query(cancer: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    original = Store.relation

    def counted(self: Store, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("columns"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, "relation", counted)
    with Store(cancer["path"]) as s:
        r = drift_over_time(s, cancer["ref"], window="6h", statistic="js")
    assert r.summary["windows"] == 24 and r.summary["fields"] == 33
    # The fields (one schema read), then one relation for every window of every field.
    assert len(calls) == 2
    assert calls[1] is not None and len(calls[1]) == 2 + 33


# ---------------------------------------------------------------------------- generated data


def generated(seed: int = 3) -> pd.DataFrame:
    """Ties, NaN and null, categories with a new one, booleans, integers; a window of one row,
    a window of one repeated value, and a day without rows."""
    rng = np.random.default_rng(seed)
    per_day = [120, 120, 90, 60, 0, 1, 40]
    ts, ties, gaps, colour, flag, same = [], [], [], [], [], []
    for day, n in enumerate(per_day):
        late = day >= 3
        for i in range(n):
            ts.append(T0 + day * DAY + pd.Timedelta(seconds=int(i * 86_000 / n)))
            ties.append(int(rng.integers(0, 5 + (3 if late else 0))))
            nan = rng.random() < 0.1
            gaps.append(None if rng.random() < 0.05 else (math.nan if nan else float(rng.normal(late * 0.8))))
            colours = ["red", "green", "blue", *(["teal"] if late else [])]
            colour.append(None if rng.random() < 0.05 else str(rng.choice(colours)))
            flag.append(bool(rng.random() < (0.7 if late else 0.4)))
            same.append(1.5 if day == 6 else float(rng.integers(0, 3)))
    return pd.DataFrame(
        {
            "ts": ts,
            "ties": ties,
            "gaps": pd.Series(gaps, dtype=object),  # NaN and None: NaN and null in the store
            "colour": pd.Series(colour, dtype=object),
            "flag": flag,
            "same": same,
            "prediction": rng.normal(size=len(ts)),
        }
    )


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, store_writer: Any) -> dict[str, Any]:
    frame = generated()
    path = tmp_path_factory.mktemp("mixed") / "store"
    store_writer(path, frame)
    return {"path": path, "frame": frame}


@pytest.mark.parametrize("statistic", ["psi", "js", "mean", "ks"])
def test_cells_equal_stats_on_ties_nan_and_single_value_windows(mixed: dict[str, Any], statistic: str) -> None:
    frame = mixed["frame"]
    with Store(mixed["path"]) as s:
        ref_filters = {"end": T0 + 2 * DAY}
        r = drift_over_time(s, ref_filters, statistic=statistic, min_rows=1)
        checked = check_cells(r, frame, frame[window_of(frame["ts"]) < T0 + 2 * DAY], StoreSide(s, "m", ref_filters))
    assert r.summary["windows"] == 7
    gap = r.df[r.df["window_start"] == T0 + 4 * DAY]
    assert (gap["note"] == "no rows").all() and gap["value"].isna().all() and (gap["rows"] == 0).all()
    single = r.df[(r.df["window_start"] == T0 + 5 * DAY) & (r.df["feature"] == "features.ties")]
    assert single["rows"].tolist() == [1] and single["value"].notna().all()
    assert checked == r.df["value"].notna().sum() >= 6 * 6 - 1  # 6 fields × the 6 windows with rows
    missing = r.df[(r.df["feature"] == "features.gaps") & (r.df["window_start"] == T0)].iloc[0]
    nan_or_null = frame.loc[window_of(frame["ts"]) == T0, "gaps"].isna().sum()
    assert missing["missing"] == nan_or_null and missing["rows"] == 120 - nan_or_null


def test_windows_with_too_few_rows_are_nan_with_a_note(mixed: dict[str, Any]) -> None:
    with Store(mixed["path"]) as s:
        r = drift_over_time(s, {"end": T0 + 2 * DAY}, features=["ties", "colour"])
    small = r.df[r.df["window_start"].isin([T0 + 5 * DAY])]
    assert small["value"].isna().all() and (small["note"] == "fewer than 30 values").all()
    assert not small["drifted"].any()
    assert r.df.loc[r.df["window_start"] == T0 + 6 * DAY, "value"].notna().all()  # 40 rows
    assert list(dict.fromkeys(r.df["feature"])) == ["features.ties", "features.colour"]
    # The new category and the wider integers drift in the late windows.
    late = r.df[r.df["window_start"] >= T0 + 3 * DAY].dropna(subset=["value"])
    assert late["drifted"].all()


def test_weighted_rows_equal_the_weighted_summaries(tmp_path: Path, store_writer: Any) -> None:
    frame = generated(5)
    frame["sample_rate"] = np.where(np.arange(len(frame)) % 3 == 0, 0.25, 1.0)
    store_writer(tmp_path / "store", frame, sample_rate="sample_rate")
    with Store(tmp_path / "store") as s:
        ref_filters = {"end": T0 + 2 * DAY}
        ref_side = StoreSide(s, "m", ref_filters)
        for statistic in ("psi", "mean", "ks"):
            r = drift_over_time(s, ref_filters, statistic=statistic, features=["ties", "gaps", "colour"])
            for row in r.df.dropna(subset=["value"]).itertuples():
                start = row.window_start
                cur_side = StoreSide(s, "m", {"start": start, "end": start + DAY})
                field = cur_side.fields()[row.feature]
                cur = cur_side.summarize([field])[row.feature]
                ref = ref_side.summarize([ref_side.fields()[row.feature]])[row.feature]
                assert cur.weighted
                assert close(row.value, by_stats(ref, cur, row.statistic)), (row, by_stats(ref, cur, row.statistic))


def test_the_arguments_are_checked(mixed: dict[str, Any]) -> None:
    with Store(mixed["path"]) as s:
        with pytest.raises(ValueError, match="statistic must be one of"):
            drift_over_time(s, {"end": T0 + DAY}, statistic="wasserstein")
        with pytest.raises(ValueError, match="months and years vary in length"):
            drift_over_time(s, {"end": T0 + DAY}, window="1 month")
        # Windows read as the store's durations (and performance's windows) do: seconds, "1h", "1D"...
        hourly = drift_over_time(s, {"end": T0 + DAY}, window=6 * 3600, statistic="mean")
        pd.testing.assert_frame_equal(
            hourly.df, drift_over_time(s, {"end": T0 + DAY}, window="6h", statistic="mean").df
        )
        with pytest.raises(ValueError, match="on neither side"):
            drift_over_time(s, {"end": T0 + DAY}, features=["nope"])
        with pytest.raises(ValueError, match=r"features=\[\] names no field"):
            drift_over_time(s, {"end": T0 + DAY}, features=[])
        with pytest.raises(ValueError, match="the reference .* has no values of any field: nothing to compare against"):
            drift_over_time(s, {"start": "2031-01-01"})
        with pytest.raises(TypeError):
            drift_over_time(s, {"end": T0 + DAY}, bogus=1)
        r = drift_over_time(s, {"end": T0 + DAY}, start=T0 + 3 * DAY)
    assert r.summary["windows"] == 4 and r.df["window_start"].min() == T0 + 3 * DAY


def test_plot_is_a_heat_map(cancer: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    with Store(cancer["path"]) as s:
        for statistic in ("psi", "mean"):
            fig = drift_over_time(s, cancer["ref"], window="1D", statistic=statistic).plot()
            ax = fig.axes[0]
            assert ax.images and ax.images[0].get_array().shape == (33, 6)


def test_nan_in_files_without_nulls_is_missing(tmp_path: Path, store_writer: Any) -> None:
    """Parquet writers leave NaN out of a column's min/max statistics, and DuckDB 2.0 folds
    ``isnan()`` to false from them: NaN must still count as missing where a file has no null."""
    from predlog.analysis import when_shifted

    rng = np.random.default_rng(8)
    n = 3 * 60
    x = rng.normal(size=n)
    x[::7] = math.nan
    frame = pd.DataFrame({"ts": T0 + pd.to_timedelta(np.arange(n) * 1440, unit="s"), "x": x, "prediction": x * 2})
    store_writer(tmp_path / "store", frame)
    day = window_of(frame["ts"])
    with Store(tmp_path / "store") as s:
        side = StoreSide(s, "m", {"start": T0 + DAY})
        got = side.summarize([side.fields()["features.x"]])["features.x"]
        assert got.n == frame.loc[day >= T0 + DAY, "x"].notna().sum() and not math.isnan(got.mean)
        for statistic in ("psi", "mean", "ks"):
            r = drift_over_time(s, {"end": T0 + DAY}, statistic=statistic, features=["x", "prediction"])
            checked = check_cells(r, frame, frame[day < T0 + DAY], StoreSide(s, "m", {"end": T0 + DAY}))
            assert checked == 6
            assert list(r.df["missing"]) == [int(frame.loc[day == t, "x"].isna().sum()) for t in r.df["window_start"]]
        shift = when_shifted(s, "x", window="6h", min_rows=1, penalty=1e-9)
    assert shift is not None
    want = frame.set_index("ts")["x"].resample("6h").mean()
    np.testing.assert_allclose(shift.series.to_numpy(), want.to_numpy(), rtol=1e-12)


def test_ks_over_a_selection_too_large_to_read_says_what_to_do(
    mixed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from predlog.analysis import _over_time

    monkeypatch.setattr(_over_time, "EXACT_LIMIT", 50)
    with Store(mixed["path"]) as s:
        with pytest.raises(ValueError, match=r"statistic='ks'.*select fewer rows.*or use statistic='psi'"):
            drift_over_time(s, {"end": T0 + DAY}, statistic="ks")
        assert len(drift_over_time(s, {"end": T0 + DAY}, statistic="psi").df)  # counts in DuckDB: no limit


def test_a_row_from_1970_does_not_make_half_a_million_windows(tmp_path: Path, store_writer: Any) -> None:
    rng = np.random.default_rng(4)
    ts = pd.concat(
        [
            pd.Series([pd.Timestamp("1970-01-01", tz="UTC")]),
            pd.Series(T0 + pd.to_timedelta(np.arange(200) * 3600, unit="s")),
        ]
    )
    frame = pd.DataFrame({"ts": ts.to_numpy(), "x": rng.normal(size=201), "prediction": rng.random(201)})
    store_writer(tmp_path / "store", frame)
    with Store(tmp_path / "store") as s:
        with pytest.raises(ValueError, match=r"span [\d,]+ windows of 1h \(from 1970-01-01 00:00.*wrong time.*start="):
            drift_over_time(s, {"start": T0, "end": T0 + DAY}, window="1h")
        with pytest.raises(ValueError, match="wrong time"):
            when_shifted(s, "x", window="1h")
        assert len(drift_over_time(s, {"start": T0, "end": T0 + DAY}, window="1h", start=T0).df)  # the fix works


def test_infinite_values_are_missing_in_every_window(tmp_path: Path, store_writer: Any) -> None:
    rng = np.random.default_rng(10)
    n = 4 * 100
    x = rng.normal(size=n)
    x[::9] = math.inf
    x[4::9] = -math.inf
    frame = pd.DataFrame(
        {"ts": T0 + pd.to_timedelta(np.arange(n) * 864, unit="s"), "x": x, "prediction": rng.random(n)}
    )
    store_writer(tmp_path / "store", frame)
    day = window_of(frame["ts"])
    finite = frame.assign(x=frame["x"].where(np.isfinite(frame["x"])))
    with Store(tmp_path / "store") as s:
        r = drift_over_time(s, {"end": T0 + DAY}, statistic="mean", features=["x"])
        shift = when_shifted(s, "x", window="6h", min_rows=1, penalty=1e-9)
    want = finite.groupby(day)["x"].mean()
    np.testing.assert_allclose(r.df["value"].to_numpy(), want.to_numpy(), rtol=1e-12)
    assert list(r.df["missing"]) == list(frame.groupby(day)["x"].apply(lambda v: int((~np.isfinite(v)).sum())))
    assert shift is not None and np.isfinite(shift.series.to_numpy()).all()
