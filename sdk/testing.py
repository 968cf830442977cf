"""Test helpers for code instrumented with predlog.

``recorder`` builds a :class:`~predlog.Recorder` whose rows land in an
:class:`~predlog.InMemorySink` as well as in a temporary store; the pytest fixture
``predlog_recorder`` (enabled with ``pytest_plugins = ["predlog.testing"]``) hands you one
and shuts it down afterwards::

    def test_predict_is_recorded(predlog_recorder):
        predict = predlog_recorder.capture(model="m")(my_predict)
        predict({"x": 1})
        assert predlog_recorder.rows()[0]["features"] == {"x": 1}
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

from ._recorder import Recorder
from ._sinks import InMemorySink

__all__ = ["TestRecorder", "predlog_recorder"]


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


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional at run time
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def predlog_recorder() -> Iterator[TestRecorder]:
        rec = TestRecorder()
        try:
            yield rec
        finally:
            rec.shutdown(timeout_s=10)
