"""Fixtures of the OpenTelemetry tests: a real OTLP receiver, and recorders that export to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.otlp import RECEIVER_SCRIPT, OtlpReceiver, Record  # noqa: F401 - re-exported for the tests

__all__ = ["RECEIVER_SCRIPT", "OtlpReceiver", "Record"]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def rec_defaults() -> dict[str, Any]:
    return {"model": "m", "version": "2"}


@pytest.fixture
def otlp_receiver(tmp_path: Path) -> Iterator[OtlpReceiver]:
    """A running OTLP receiver on loopback (gRPC and HTTP), killed at teardown."""
    receiver = OtlpReceiver(tmp_path / "otlp-received.jsonl", tmp_path / "otlp-receiver.log")
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.kill()
