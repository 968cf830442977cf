"""The query core's options: every reading method names its keywords, relations may be unordered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from predlog.replay import Store


@pytest.fixture
def store(make_rec: Any, store_dir: Path) -> Store:
    rec = make_rec(version="1.0")
    predict = rec.capture(lambda x: x["i"] % 3)
    for i in range(200):
        predict({"i": i})
    assert rec.flush(timeout_s=30)
    return Store(store_dir)


def test_a_misspelt_filter_raises_and_names_the_nearest_one(store: Store) -> None:
    for read in (store.predictions, store.relation, store.labeled, store.labeled_relation):
        with pytest.raises(TypeError, match="'verison'; did you mean 'version'"):
            read("m", verison="1.0")
    with pytest.raises(TypeError, match="'include_unlabeled'"):
        store.predictions("m", include_unlabeled=True)  # a labeled read's option
    with pytest.raises(TypeError, match="'mdoe'; did you mean 'mode'"):
        store.replay(lambda x: 0, model="m", mdoe="row")


def test_an_unordered_relation_holds_the_same_rows(store: Store) -> None:
    ordered = store.relation("m", columns=["prediction_id", "features.i"]).df()
    unordered = store.relation("m", columns=["prediction_id", "features.i"], ordered=False)
    assert "ORDER BY" not in unordered.sql_query().upper()
    assert sorted(map(tuple, unordered.fetchall())) == sorted(map(tuple, ordered.itertuples(index=False)))
    assert ordered["prediction_id"].is_monotonic_increasing  # ids are time-ordered UUIDv7
