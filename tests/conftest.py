"""Fixtures shared by every test package.

``make_rec`` builds recorders on ``store_dir`` (the test's tmp_path here; a package's conftest
may point it elsewhere) with ``rec_defaults`` (a package's conftest may add settings), and
shuts every one down after the test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import predlog

# Internal errors of the SDK fail the test instead of being counted and swallowed.
os.environ.setdefault("PREDLOG_RAISE_INTERNAL_ERRORS", "1")
# The helper package (tests/helpers) is importable from every test package.
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["predlog.testing"]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def rec_defaults() -> dict[str, Any]:
    """Configuration every ``make_rec`` recorder starts from (override per package or module)."""
    return {"model": "m"}


@pytest.fixture
def make_rec(store_dir: Path, rec_defaults: dict[str, Any]) -> Iterator[Callable[..., predlog.Recorder]]:
    """Build recorders on ``store_dir`` and shut every one down afterwards."""
    made: list[predlog.Recorder] = []

    def make(**config: Any) -> predlog.Recorder:
        config.setdefault("store", str(store_dir))
        for key, value in rec_defaults.items():
            config.setdefault(key, value)
        rec = predlog.Recorder(**config)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.shutdown(timeout_s=10)


@pytest.fixture
def rec(make_rec: Callable[..., predlog.Recorder]) -> predlog.Recorder:
    return make_rec()
