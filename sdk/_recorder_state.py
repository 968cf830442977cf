"""State shared by the wrappers and the recorder."""

from __future__ import annotations

import contextvars
from typing import Any

# The last prediction record of the current thread or asyncio task, for
# last_prediction_id(). Setting a contextvar costs about as much as a thread-local.
LAST: contextvars.ContextVar[tuple[Any, ...] | None] = contextvars.ContextVar("predlog_last", default=None)
