"""Fixtures shared by the capture tests: recorders on a temporary store, shut down after."""

from __future__ import annotations

from typing import Any

import pytest

import predlog


@pytest.fixture
def rec_defaults() -> dict[str, Any]:
    """Configuration every ``make_rec`` recorder starts from (override per module)."""
    return {"model": "m"}


@pytest.fixture
def make_rec(tmp_path, rec_defaults):
    """Build recorders on ``tmp_path`` (or a sub-store) and shut every one down afterwards."""
    made: list[predlog.Recorder] = []

    def make(**config: Any) -> predlog.Recorder:
        config.setdefault("store", str(tmp_path))
        for key, value in rec_defaults.items():
            config.setdefault(key, value)
        rec = predlog.Recorder(**config)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.shutdown(timeout_s=10)


@pytest.fixture
def rec(make_rec):
    return make_rec()
