"""Test helpers for code instrumented with predlog.

Enable the pytest fixture with ``pytest_plugins = ["predlog.testing"]``. ``predlog_recorder``
points the default recorder (the one behind ``@predlog.capture``) at a temporary store for
the test, keeps every written row in memory too, and restores everything afterwards::

    def test_predict_is_recorded(predlog_recorder):
        predict({"x": 1})                       # decorated with @predlog.capture
        assert predlog_recorder.rows()[0]["features"] == {"x": 1}

``TestRecorder`` is an independent recorder with the same in-memory view.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from typing import Any

from ._recorder import Recorder
from ._sinks import InMemorySink

__all__ = ["InMemorySink", "RecordedCalls", "TestRecorder", "predlog_recorder"]


class TestRecorder(Recorder):
    """A Recorder that also keeps every written table in memory."""

    __test__ = False  # not a pytest test class

    def __init__(self, **config: Any) -> None:
        self.sink = InMemorySink()
        if "store" not in config:
            self._tmp = tempfile.TemporaryDirectory(prefix="predlog-test-")
            config["store"] = self._tmp.name
        super().__init__(sinks=[self.sink], **config)

    def rows(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Flush, then return every prediction row written so far."""
        self.flush(timeout_s=timeout_s)
        return self.sink.rows()

    def label_rows(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        self.flush(timeout_s=timeout_s)
        return self.sink.label_rows()


@dataclasses.dataclass
class RecordedCalls:
    """What the default recorder wrote during one test."""

    recorder: Recorder
    sink: InMemorySink
    store: str

    def rows(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Flush, then return every prediction row written during the test."""
        self.recorder.flush(timeout_s=timeout_s)
        return self.sink.rows()

    def label_rows(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        self.recorder.flush(timeout_s=timeout_s)
        return self.sink.label_rows()

    def stats(self) -> dict[str, Any]:
        return self.recorder.stats()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional at run time
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def predlog_recorder(tmp_path: Any) -> Iterator[RecordedCalls]:
        from . import _default as default

        previous = default.config
        sink = InMemorySink()
        store = str(tmp_path / "predlog-store")
        default.configure(**{**_explicit(previous), "store": store})
        default._extra_sinks.append(sink)
        try:
            yield RecordedCalls(default, sink, store)
        finally:
            default.flush(timeout_s=10)
            default._extra_sinks.remove(sink)
            default.configure(**_explicit(previous))


def _explicit(cfg: Any) -> dict[str, Any]:
    """A config's fields as keyword arguments (so that restoring it is exact)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
