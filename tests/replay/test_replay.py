"""Store.replay on stores written by the real SDK, with real scikit-learn models.

A logistic regression is trained on scikit-learn's breast cancer data and served through
``@capture``-decorated predict functions (single dict calls and DataFrame batch calls, two
versions, two models: classes and probabilities); labels are logged for part of the rows.
Expected values are computed independently from the data we served, not from the store.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import predlog
from predlog.replay import NothingToReplayError, ReplayResult, Store, UnknownColumnError, UnknownModelError

N_SINGLE = 150  # rows served one dict at a time (version 1.0); the rest in DataFrame batches (1.1)
BATCH = 60
COUNTRIES = ["FR", "DE", "US"]


@dataclasses.dataclass
class Served:
    root: str
    names: list[str]
    X: pd.DataFrame
    y: np.ndarray
    old: Any  # the served model
    new: Any  # retrained: other hyperparameters, more data
    predict: Any  # the decorated original (classes)
    predict_proba: Any  # the decorated original (probabilities)
    ids: dict[str, list[str]]  # model -> prediction id of each row of X
    labels: dict[str, dict[int, int]]  # model -> row -> label (latest, as joined)
    country: list[str]  # context.country of each row of X
    rec_stats: dict[str, Any]
    rec: predlog.Recorder  # the serving recorder


def _models() -> tuple[pd.DataFrame, np.ndarray, Any, Any]:
    data = load_breast_cancer(as_frame=True)
    X = data.data.astype(float)
    y = data.target.to_numpy()
    old = make_pipeline(StandardScaler(), LogisticRegression(C=0.02, max_iter=2000)).fit(X[:150], y[:150])
    new = make_pipeline(StandardScaler(), LogisticRegression(C=5.0, max_iter=5000)).fit(X, y)
    return X, y, old, new


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = str(tmp_path_factory.mktemp("replay") / "store")
    X, y, old, new = _models()
    names = list(X.columns)
    rec = predlog.Recorder(store=root, model="cancer", version="1.0")

    def serve(x: Any) -> Any:
        if isinstance(x, dict):
            return int(old.predict(pd.DataFrame([x], columns=names))[0])
        return old.predict(x[names])

    def serve_proba(x: Any) -> Any:
        if isinstance(x, dict):
            return old.predict_proba(pd.DataFrame([x], columns=names))[0]
        return old.predict_proba(x[names])

    predict = rec.capture(serve)
    predict_v11 = rec.capture(version="1.1")(serve)
    predict_proba = rec.capture(model="cancer_proba")(serve_proba)
    ids: dict[str, list[str]] = {"cancer": [], "cancer_proba": []}
    country = []
    for i in range(len(X)):
        country.append(COUNTRIES[i % 3] if i < N_SINGLE else ("FR" if ((i - N_SINGLE) // BATCH) % 2 else "DE"))
    for i in range(N_SINGLE):
        x = {n: float(v) for n, v in X.iloc[i].items()}
        with predlog.context(user_id=f"u{i % 5}", request_id=f"r{i}", country=country[i]):
            predict(x)
            ids["cancer"].append(predlog.last_prediction_id())
            predict_proba(x)
            ids["cancer_proba"].append(predlog.last_prediction_id())
    for a in range(N_SINGLE, len(X), BATCH):
        frame = X.iloc[a : a + BATCH].reset_index(drop=True)
        with predlog.context(user_id=f"b{a}", request_id=f"batch{a}", country=country[a]):
            predict_v11(frame)
            ids["cancer"].extend(predlog.last_prediction_ids())
            predict_proba(frame)
            ids["cancer_proba"].extend(predlog.last_prediction_ids())
    labels: dict[str, dict[int, int]] = {"cancer": {}, "cancer_proba": {}}
    for model in labels:
        for i in range(0, len(X), 3):
            rec.log_label(int(y[i]), prediction_id=ids[model][i])
            labels[model][i] = int(y[i])
    # A wrong label first, then the right one: the latest wins.
    rec.log_label(int(1 - y[3]), prediction_id=ids["cancer"][3])
    rec.log_label(int(y[3]), prediction_id=ids["cancer"][3])
    # A label by request id (row 1 was served alone under request "r1").
    rec.log_label(int(y[1]), request_id="r1")
    labels["cancer"][1] = labels["cancer_proba"][1] = int(y[1])
    assert rec.flush(timeout_s=30)
    rec_stats = rec.stats()
    assert rec_stats["captured"] == rec_stats["written"] == 2 * N_SINGLE + 2 * math.ceil((len(X) - N_SINGLE) / BATCH)
    rec.shutdown(timeout_s=10)
    assert all(len(v) == len(X) for v in ids.values())
    return Served(root, names, X, y, old, new, predict, predict_proba, ids, labels, country, rec.stats(), rec)


@pytest.fixture
def store(served: Served) -> Any:
    with Store(served.root) as s:
        yield s


def _by_id(r: ReplayResult) -> pd.DataFrame:
    return r.df.set_index("prediction_id")


# ---------------------------------------------------------------- (1) the original reproduces itself


@pytest.mark.parametrize("mode", ["auto", "row"])
def test_replaying_the_decorated_original_reproduces_every_prediction_and_records_nothing(
    served: Served, store: Store, mode: str
) -> None:
    rows_before = store.stats()["rows"]
    default_before = predlog.stats()
    r = store.replay(served.predict, mode=mode)
    assert isinstance(r, ReplayResult)
    assert r.summary["model"] == "cancer"  # from the decorated function
    assert r.summary["mode"] == ("batch" if mode == "auto" else "row")
    assert r.summary["rows"] == r.summary["compared"] == len(served.X)
    assert r.summary["changed"] == 0
    assert r.summary["agreement_rate"] == 1.0
    assert r.summary["errors"] == 0
    assert r.summary["mean_abs_change"] == 0.0 and r.summary["max_abs_change"] == 0.0
    assert not r.df["changed"].any()
    assert (r.df["difference"] == 0).all()
    df = _by_id(r)
    expected = served.old.predict(served.X)
    got = df.loc[served.ids["cancer"], "replayed"].to_numpy()
    np.testing.assert_array_equal(got, expected)
    assert df["replayed"].dtype == df["logged"].dtype == np.int64  # classes stay integers, row mode too
    np.testing.assert_array_equal(df.loc[served.ids["cancer"], "logged"].to_numpy(), expected)
    # Nothing new in the store; neither the serving recorder nor the default one saw a call.
    assert store.stats()["rows"] == rows_before
    assert predlog.stats()["captured"] == default_before["captured"]
    after = served.rec.stats()
    assert (after["captured"], after["written"]) == (served.rec_stats["captured"], served.rec_stats["written"])
    # Replaying the same model's logged rows gives the same accuracy both ways.
    assert r.accuracy is not None
    assert r.accuracy["logged"] == r.accuracy["replayed"]


def test_result_rows_carry_ids_users_times_and_versions(served: Served, store: Store) -> None:
    r = store.replay(served.predict)
    logged = store.predictions(model="cancer")
    assert list(r.df.columns[:8]) == [
        "prediction_id",
        "ts",
        "user_id",
        "model_version",
        "logged",
        "replayed",
        "changed",
        "difference",
    ]
    assert r.df["ts"].is_monotonic_increasing
    merged = logged.set_index("prediction_id").loc[r.df["prediction_id"]]
    assert (merged["user_id"].to_numpy() == r.df["user_id"].to_numpy()).all()
    assert (merged["model_version"].to_numpy() == r.df["model_version"].to_numpy()).all()
    assert (merged["ts"].to_numpy() == r.df["ts"].to_numpy()).all()
    assert sorted(r.df["prediction_id"]) == sorted(served.ids["cancer"])
    assert set(r.by_version.index) == {"1.0", "1.1"}
    assert r.by_version.loc["1.0", "rows"] == N_SINGLE
    assert r.by_version.loc["1.1", "rows"] == len(served.X) - N_SINGLE


# ---------------------------------------------------------------- (2) a retrained model


def test_a_retrained_model_changes_some_predictions_and_the_result_says_how(served: Served, store: Store) -> None:
    r = store.replay(served.new.predict, model="cancer")
    old_pred = served.old.predict(served.X)
    new_pred = served.new.predict(served.X)
    n_changed = int((old_pred != new_pred).sum())
    assert 0 < n_changed < len(served.X)  # the retrained model really disagrees, on some rows
    assert r.summary["changed"] == n_changed
    assert r.summary["compared"] == len(served.X)
    assert r.summary["agreement_rate"] == pytest.approx(1 - n_changed / len(served.X))
    df = _by_id(r).loc[served.ids["cancer"]]
    np.testing.assert_array_equal(df["changed"].to_numpy(dtype=bool), old_pred != new_pred)
    np.testing.assert_array_equal(df["replayed"].to_numpy(), new_pred)
    # difference = replayed - logged, by hand from the DataFrame, and from the served data
    np.testing.assert_array_equal(r.df["difference"], r.df["replayed"] - r.df["logged"])
    np.testing.assert_array_equal(df["difference"].to_numpy(), (new_pred - old_pred).astype(float))
    assert r.summary["mean_abs_change"] == pytest.approx(n_changed / len(served.X))
    assert r.summary["max_abs_change"] == 1.0
    # by version: the changes split between the single calls (1.0) and the batches (1.1)
    v10 = int((old_pred[:N_SINGLE] != new_pred[:N_SINGLE]).sum())
    assert r.by_version.loc["1.0", "changed"] == v10
    assert r.by_version.loc["1.1", "changed"] == n_changed - v10
    # by context: country groups (context.country is the only context key)
    country = np.array(served.country)
    by = r.by_context.set_index(["column", "value"])
    for c in ("FR", "DE", "US"):
        mask = country == c
        assert by.loc[("context.country", c), "rows"] == mask.sum()
        assert by.loc[("context.country", c), "changed"] == (old_pred[mask] != new_pred[mask]).sum()
    # accuracy on the labeled rows, logged vs replayed, as scikit-learn computes it
    rows = sorted(served.labels["cancer"])
    truth = [served.labels["cancer"][i] for i in rows]
    assert r.accuracy is not None
    assert r.accuracy["metric"] == "accuracy"
    assert r.accuracy["labeled_rows"] == len(rows)
    assert r.accuracy["logged"] == pytest.approx(accuracy_score(truth, old_pred[rows]))
    assert r.accuracy["replayed"] == pytest.approx(accuracy_score(truth, new_pred[rows]))
    assert r.summary["labeled_rows"] == len(rows)
    labels = df["label"]
    assert labels.notna().sum() == len(rows)
    assert labels.loc[served.ids["cancer"][3]] == served.y[3]  # the latest label of the row wins
    assert labels.loc[served.ids["cancer"][1]] == served.y[1]  # joined by request id


# ---------------------------------------------------------------- (3) a function of a DataFrame batch


def test_a_function_taking_a_dataframe_batch(served: Served, store: Store) -> None:
    seen: list[pd.DataFrame] = []

    def new_version(batch: pd.DataFrame) -> np.ndarray:
        seen.append(batch)
        return served.new.predict(batch)

    r = store.replay(new_version, model="cancer", batch_size=200)
    assert r.summary["mode"] == "batch"
    assert [len(b) for b in seen] == [200, 200, len(served.X) - 400]
    assert list(seen[0].columns) == served.names  # logged feature order
    expected = served.new.predict(served.X)
    np.testing.assert_array_equal(_by_id(r).loc[served.ids["cancer"], "replayed"].to_numpy(), expected)

    def as_array(x: np.ndarray) -> Any:
        assert isinstance(x, np.ndarray) and x.shape[1] == len(served.names)
        return pd.Series(served.new.predict(pd.DataFrame(x, columns=served.names)))

    subset = served.names[:5][::-1]
    first = store.replay(lambda b: seen.append(b) or np.zeros(len(b), dtype=int), model="cancer", features=subset)
    assert list(seen[-1].columns) == subset
    assert first.summary["rows"] == len(served.X)

    r2 = store.replay(as_array, model="cancer")
    assert r2.summary["mode"] == "array"
    assert r2.summary["changed"] == r.summary["changed"]

    # Unannotated, and unable to take a DataFrame: auto falls back to one call per row.
    def per_row(x):  # type: ignore[no-untyped-def]
        if not isinstance(x, dict):
            raise TypeError("dicts only")
        return int(served.new.predict(pd.DataFrame([x], columns=served.names))[0])

    r3 = store.replay(per_row, model="cancer", where={"context.country": "US"})
    assert r3.summary["mode"] == "row"
    assert "TypeError: dicts only" in r3.summary["batch_error"]
    us = np.array(served.country) == "US"
    assert r3.summary["rows"] == us.sum()
    assert r3.summary["changed"] == (served.old.predict(served.X[us]) != served.new.predict(served.X[us])).sum()


# ---------------------------------------------------------------- (4) vectors


def test_probability_vectors_compare_element_wise_and_by_class(served: Served, store: Store) -> None:
    r = store.replay(served.new.predict_proba, model="cancer_proba")
    old_p = served.old.predict_proba(served.X)
    new_p = served.new.predict_proba(served.X)
    assert r.summary["kind"] == "vector"
    df = _by_id(r).loc[served.ids["cancer_proba"]]
    max_abs = np.abs(new_p - old_p).max(axis=1)
    np.testing.assert_allclose(df["abs_change"].to_numpy(dtype=float), max_abs, atol=1e-9)
    assert r.summary["changed"] == int((max_abs > 1e-9).sum())
    assert r.summary["max_abs_change"] == pytest.approx(max_abs.max(), abs=1e-9)
    class_changed = old_p.argmax(axis=1) != new_p.argmax(axis=1)
    assert r.summary["class_changes"] == int(class_changed.sum()) > 0
    np.testing.assert_array_equal(df["class_changed"].to_numpy(dtype=bool), class_changed)
    np.testing.assert_array_equal(df["replayed_class"].to_numpy(dtype=int), new_p.argmax(axis=1))
    np.testing.assert_allclose(np.stack(df["logged"].to_numpy()), old_p, atol=1e-12)
    np.testing.assert_allclose(np.stack(df["replayed"].to_numpy()), new_p, atol=1e-12)
    rows = sorted(served.labels["cancer_proba"])
    truth = [served.labels["cancer_proba"][i] for i in rows]
    assert r.accuracy is not None
    assert r.accuracy["replayed"] == pytest.approx(accuracy_score(truth, new_p[rows].argmax(axis=1)))
    assert r.accuracy["logged"] == pytest.approx(accuracy_score(truth, old_p[rows].argmax(axis=1)))

    # The decorated original reproduces its vectors (within atol: batch sizes differ).
    same = store.replay(served.predict_proba)
    assert same.summary["model"] == "cancer_proba"
    assert same.summary["changed"] == 0 and same.summary["class_changes"] == 0


# ---------------------------------------------------------------- (5) filters


def test_filters_pass_through(served: Served, store: Store) -> None:
    logged = store.predictions(model="cancer")
    r = store.replay(served.new.predict, model="cancer", version="1.0")
    assert r.summary["rows"] == N_SINGLE
    assert set(r.df["model_version"]) == {"1.0"}
    cut = logged["ts"].sort_values().iloc[100]
    late = store.replay(served.new.predict, model="cancer", start=cut)
    assert late.summary["rows"] == int((logged["ts"] >= cut).sum())
    assert late.df["ts"].min() >= cut
    early = store.replay(served.new.predict, model="cancer", end=cut)
    assert early.summary["rows"] + late.summary["rows"] == len(logged)
    fr = store.replay(served.new.predict, model="cancer", where={"context.country": "FR"})
    assert fr.summary["rows"] == int((np.array(served.country) == "FR").sum())
    assert set(fr.df["context.country"]) == {"FR"}
    sql = store.replay(served.new.predict, model="cancer", where="user_id LIKE 'u%'")
    assert sql.summary["rows"] == N_SINGLE
    user = store.replay(served.new.predict, model="cancer", user_id="u1")
    assert set(user.df["user_id"]) == {"u1"} and user.summary["rows"] == N_SINGLE // 5
    by = store.replay(served.new.predict, model="cancer", by=["user_id"], top_k=2)
    assert list(by.by_context["column"].unique()) == ["user_id"]
    assert len(by.by_context) == 2
    with pytest.raises(UnknownModelError):
        store.replay(served.new.predict, model="cancr")
    with pytest.raises(UnknownColumnError):
        store.replay(served.new.predict, model="cancer", where={"context.cuntry": "FR"})
    # Two models, an undecorated function: which model must be said.
    with pytest.raises(ValueError, match="model="):
        store.replay(served.new.predict)


# ---------------------------------------------------------------- (6) record_as


def test_record_as_writes_shadow_rows_marked_as_replays(served: Served, tmp_path: Path) -> None:
    root = str(tmp_path / "copy")
    shutil.copytree(served.root, root)
    default_before = predlog.stats()["captured"]
    with Store(root) as s:
        before = s.stats()["rows"]
        r = s.replay(served.new.predict, model="cancer", record_as="2.0.0-shadow")
        assert r.summary["recorded"] == len(served.X)
        assert r.summary["record_as"] == "2.0.0-shadow"
        shadow = s.predictions(model="cancer", version="2.0.0-shadow")
        assert len(shadow) == len(served.X)
        assert s.stats()["rows"] == before + len(served.X)
        original = s.predictions(model="cancer", version=["1.0", "1.1"]).set_index("prediction_id")
        shadow = shadow.set_index(shadow["context"].map(lambda c: c["replay_of"]))
        assert sorted(shadow.index) == sorted(served.ids["cancer"])
        rows = original.loc[shadow.index]
        assert (shadow["user_id"].to_numpy() == rows["user_id"].to_numpy()).all()
        assert (shadow["request_id"].to_numpy() == rows["request_id"].to_numpy()).all()
        assert [c["country"] for c in shadow["context"]] == [c["country"] for c in rows["context"]]
        assert shadow["features"].tolist() == rows["features"].tolist()
        replayed = _by_id(r)["replayed"]
        assert (shadow["prediction"].to_numpy() == replayed.loc[shadow.index].to_numpy()).all()
        # Side by side: the shadow version replayed by itself has no changes...
        again = s.replay(served.new.predict, model="cancer", version="2.0.0-shadow")
        assert again.summary["rows"] == len(served.X) and again.summary["changed"] == 0
        # ...and live-traffic replays leave the shadow rows out.
        live = s.replay(served.new.predict, model="cancer")
        assert live.summary["rows"] == len(served.X)
        assert set(live.by_version.index) == {"1.0", "1.1"}
        # A live version cannot be reused for replays.
        with pytest.raises(ValueError, match="live traffic"):
            s.replay(served.new.predict, model="cancer", record_as="1.1")
    assert predlog.stats()["captured"] == default_before


# ---------------------------------------------------------------- (7) display


def test_html_and_text_reports_show_the_headline_numbers(served: Served, store: Store) -> None:
    r = store.replay(served.new.predict, model="cancer")
    page = r._repr_html_()
    s = r.summary
    assert "cancer" in page
    assert f"{s['rows']:,}" in page and f"{s['changed']:,}" in page
    assert f"{100 * s['agreement_rate']:.2f}%" in page
    assert "By model version" in page and "By context" in page and "Changed rows" in page
    assert f"{100 * r.accuracy['replayed']:.2f}%" in page  # type: ignore[index]
    text = repr(r)
    assert f"changed={s['changed']:,}" in text and "agreement=" in text
    d = r.to_dict()
    assert d["summary"]["changed"] == s["changed"]
    assert {row["model_version"] for row in d["by_version"]} == {"1.0", "1.1"}


# ---------------------------------------------------------------- (8) errors


def test_no_matching_rows_is_a_clear_error(served: Served, store: Store) -> None:
    with pytest.raises(NothingToReplayError, match="no logged prediction of model 'cancer'"):
        store.replay(served.new.predict, model="cancer", where={"context.country": "ZZ"})


def test_a_function_failing_on_every_row_raises_its_error_naming_the_row(served: Served, store: Store) -> None:
    def broken(x: dict) -> float:  # type: ignore[type-arg]
        raise KeyError("no such feature: 'income'")

    with pytest.raises(KeyError) as info:
        store.replay(broken, model="cancer")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "raised on every row" in notes
    assert any(pid in notes for pid in served.ids["cancer"])
    assert "mean radius" in notes  # the features of the failing row

    def broken_batch(x: pd.DataFrame) -> np.ndarray:
        raise RuntimeError("model not loaded")

    with pytest.raises(RuntimeError, match="model not loaded"):
        store.replay(broken_batch, model="cancer", mode="batch")

    with pytest.raises(ValueError, match="one value per row"):
        store.replay(lambda df: served.new.predict(df)[:-1], model="cancer", mode="batch")

    # A failure in the middle of the stream (third batch) leaves the store usable.
    calls = []

    def third_fails(x: pd.DataFrame) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return served.new.predict(x)

    with pytest.raises(RuntimeError, match="out of memory"):
        store.replay(third_fails, model="cancer", mode="batch", batch_size=100)
    assert len(store.predictions(model="cancer")) == len(served.X)
    assert store.replay(served.new.predict, model="cancer", batch_size=100).summary["rows"] == len(served.X)


def test_partial_failures_are_kept_per_row_and_counted(served: Served, store: Store) -> None:
    threshold = float(served.X["mean radius"].median())

    def sometimes(x: dict) -> int:  # type: ignore[type-arg]
        if x["mean radius"] > threshold:
            raise ValueError(f"radius {x['mean radius']} out of range")
        return int(served.new.predict(pd.DataFrame([x], columns=served.names))[0])

    r = store.replay(sometimes, model="cancer")
    assert r.summary["mode"] == "row"
    failing = (served.X["mean radius"] > threshold).to_numpy()
    assert r.summary["errors"] == failing.sum() > 0
    assert r.summary["compared"] == (~failing).sum()
    df = _by_id(r).loc[served.ids["cancer"]]
    assert df["error"].notna().to_numpy().tolist() == failing.tolist()
    assert df["error"].dropna().str.startswith("ValueError: radius").all()
    assert df["changed"][failing].isna().all()
    assert df["replayed"][failing].isna().all()
    ok = ~failing
    expected = served.old.predict(served.X[ok]) != served.new.predict(served.X[ok])
    assert r.summary["changed"] == expected.sum()
    assert "Errors (first 5" in r._repr_html_()


def test_replaying_failed_rows_too(demo: Any) -> None:
    with Store(demo.root) as s:
        r = s.replay(lambda x: round(max(x["amount"], 0.0) / 100, 3), model="fraud", status=None, mode="row")
    assert r.summary["rows"] == 13  # 12 ok rows and the one that raised when served
    row = _by_id(r).loc[demo.error_id]
    assert pd.isna(row["logged"]) and row["replayed"] == 0.0 and pd.isna(row["changed"])
    assert r.summary["compared"] == 12 and r.summary["changed"] == 0


def test_argument_errors(served: Served, store: Store) -> None:
    with pytest.raises(ValueError, match="mode="):
        store.replay(served.new.predict, model="cancer", mode="fast")
    with pytest.raises(ValueError, match="batch_size"):
        store.replay(served.new.predict, model="cancer", batch_size=0)
    with pytest.raises(UnknownColumnError):
        store.replay(served.new.predict, model="cancer", features=["mean radus"])

    async def coro(x: dict) -> int:  # type: ignore[type-arg]
        return 0

    with pytest.raises(TypeError, match="asynchronous"):
        store.replay(coro, model="cancer")
