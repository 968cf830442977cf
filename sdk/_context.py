"""Request context (user, request, free key/values) carried in a contextvar.

Web middleware enters :func:`context` once per request; every prediction made inside it,
on any thread or task that inherits the context, carries the values.
"""

from __future__ import annotations

import contextlib
import contextvars
import zlib
from collections.abc import Iterator
from typing import Any

from ._recorder_state import LAST_BY_THREAD

__all__ = ["CURRENT", "Ctx", "context", "current_context", "mute_thread", "suppressed"]


class Ctx:
    """The request context: ids and extras fixed at creation, held by reference by records.

    Two fields change later: a cached sampling bucket and the last prediction made under it.
    """

    __slots__ = ("user_id", "request_id", "extra", "suppress", "_user_bucket", "last")

    def __init__(
        self,
        user_id: str | None = None,
        request_id: str | None = None,
        extra: dict[str, Any] | None = None,
        suppress: bool = False,
    ) -> None:
        self.user_id = user_id
        self.request_id = request_id
        self.extra = extra or {}
        self.suppress = suppress
        self._user_bucket: float | None = None
        self.last: tuple[Any, ...] | None = None  # the last sync prediction made under it

    def user_bucket(self) -> float:
        """A number in [0, 1) fixed per user id, for deterministic sampling."""
        bucket = self._user_bucket
        if bucket is None:
            bucket = zlib.crc32(str(self.user_id).encode("utf-8", "surrogatepass")) / 4294967296.0
            self._user_bucket = bucket
        return bucket


CURRENT: contextvars.ContextVar[Ctx | None] = contextvars.ContextVar("predlog_context", default=None)
"""The current request context (wrappers read it with one ``CURRENT.get()``)."""


def current_context() -> Ctx | None:
    return CURRENT.get()


def mute_thread() -> None:
    """Record nothing this thread calls from now on (predlog's own writer and sealer threads:
    a processor or a ``features=`` callable calling a decorated function is not traffic)."""
    CURRENT.set(Ctx(suppress=True))


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


@contextlib.contextmanager
def context(*, user_id: Any = None, request_id: Any = None, **extra: Any) -> Iterator[None]:
    """Attach a user id, a request id and free key/values to predictions made inside.

    Contexts nest: an inner context keeps the outer values it does not override. Ids are
    stored as strings. Safe for threads and asyncio tasks (a contextvar underneath).

    Example::

        with predlog.context(user_id="u1", request_id="r1", region="eu"):
            predict(x)
    """
    outer = CURRENT.get()
    if outer is not None:
        merged = {**outer.extra, **extra} if extra else outer.extra
        ctx = Ctx(
            _str_or_none(user_id) if user_id is not None else outer.user_id,
            _str_or_none(request_id) if request_id is not None else outer.request_id,
            merged,
            outer.suppress,
        )
    else:
        ctx = Ctx(_str_or_none(user_id), _str_or_none(request_id), dict(extra))
    token = CURRENT.set(ctx)
    try:
        yield
    finally:
        CURRENT.reset(token)
        if ctx.last is not None:
            # Hand the last prediction outwards, so that last_prediction_id() after the
            # block still names the block's last prediction.
            if outer is not None:
                outer.last = ctx.last
            else:
                LAST_BY_THREAD.last = ctx.last


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """Calls made inside are not recorded (used by replay so that it is not live traffic)."""
    outer = CURRENT.get()
    ctx = Ctx(outer.user_id, outer.request_id, outer.extra, True) if outer else Ctx(suppress=True)
    token = CURRENT.set(ctx)
    try:
        yield
    finally:
        CURRENT.reset(token)
