"""Where the last prediction record is kept, for last_prediction_id().

Sync calls keep it on the request's context object (one per request) or, outside any
context, per thread: plain attribute stores, nothing allocated on the hot path. Async calls
keep it in a contextvar, so each asyncio task sees its own. ``last()`` returns the newest of
the candidates visible from the caller.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from ._record import CTX, SEQ

LAST: contextvars.ContextVar[tuple[Any, ...] | None] = contextvars.ContextVar("predlog_last", default=None)
LAST_BY_THREAD = threading.local()


def remember(rec: tuple[Any, ...], *, task: bool = False) -> None:
    """Keep ``rec`` as the last record (``task=True`` for calls made in an asyncio task)."""
    if task:
        LAST.set(rec)
        return
    ctx = rec[CTX]
    if ctx is not None:
        ctx.last = rec
    else:
        LAST_BY_THREAD.last = rec


def last(ctx: Any) -> tuple[Any, ...] | None:
    """The newest record among this task's, this request context's and this thread's."""
    candidates = [LAST.get(), getattr(ctx, "last", None) if ctx is not None else None]
    if ctx is None:
        candidates.append(getattr(LAST_BY_THREAD, "last", None))
    best = None
    for rec in candidates:
        if rec is not None and (best is None or rec[SEQ] > best[SEQ]):
            best = rec
    return best
