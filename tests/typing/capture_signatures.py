"""Checked by mypy (tests/test_types.py), not run: decorated functions keep their types."""

from __future__ import annotations

from typing import assert_type

import predlog


@predlog.capture
def plain(x: dict[str, float], threshold: float = 0.5) -> bool:
    return sum(x.values()) > threshold


@predlog.capture(model="m", confidence="max")
def with_options(x: dict[str, float]) -> list[float]:
    return [0.1, 0.9]


@predlog.capture
async def asynchronous(x: dict[str, float]) -> float:
    return 1.0


assert_type(plain({"a": 1.0}, threshold=0.2), bool)
assert_type(with_options({"a": 1.0}), list[float])


async def caller() -> None:
    assert_type(await asynchronous({"a": 1.0}), float)
