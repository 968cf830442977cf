"""Canary routing between two captured predict functions, and the log of its promote / rollback.

::

    router = predlog.canary(baseline=predict_v1, candidate=predict_v2, share=0.05)
    y = router(x)        # one call, served by one of the two; its row says which
    router.promote()     # every call from now on goes to the candidate

Per call the router reads one immutable routing plan, picks an arm, sets the request
context to a derived :class:`~._context.Ctx` carrying ``canary_arm`` (cached per thread and
outer context, so a repeated context costs no allocation) and calls the captured function.
The per-thread cache holds no record once the call returns, and goes with its thread; the
call counts of ended threads are folded into totals (:class:`_Tally`).

Routing by key mixes the CRC32 of the key's value with a 64-bit seed derived from the model
name and the candidate version, through MurmurHash3's finalizer: each canary picks its own
users, the same ones in every process, and the choice is independent of the per-user
sampling bucket, the bare CRC32 (a keyed CRC would not be: CRC32 of a salted id is the CRC32
of the bare id XOR a constant for ids of one length).

Promote, rollback and share changes swap the plan under a lock and are written to the
store's event log (:class:`EventLog`) on the caller's thread. In shadow mode the candidate
runs on a bounded queue served by one daemon thread (:class:`_ShadowWorker`), or, for
async functions, as a task of the caller's event loop; a full queue drops the shadow call
and counts it, never blocking the caller.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import math
import os
import random
import threading
import time
import weakref
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._config import ConfigError
from ._context import CURRENT, Ctx
from ._fsio import fsync_dir, mkdir_private, open_private
from ._ids import next_seq, uuid7_str
from ._layout import HOST, event_dir, event_name
from ._recorder_state import LAST_BY_THREAD

if TYPE_CHECKING:
    from ._capture import FunctionSpec
    from ._health import Health

__all__ = ["ARMS", "EVENT_KINDS", "STATES", "Canary", "EventLog", "make_canary"]

BASELINE, CANDIDATE = 0, 1
ARMS = ("baseline", "candidate")
"""The arms of a canary, as ``context.canary_arm`` names them."""

STATES = ("canary", "shadow", "promoted", "rolled_back")
"""The states of a canary (``Canary.state``)."""

EVENT_KINDS = ("start", "share", "promote", "rollback")
"""The kinds of event a canary records (the ``kind`` field of ``events/`` files)."""

# The context extras of a routed call: by arm, then a shadow call's and a fallback's. The
# first three are cached per thread and outer context (_Slot.ctxs).
_SHADOW, _FALLBACK = 2, 3
_FALLBACKS = 2  # the index of the fallbacks in _Slot.counts
_EXTRAS: tuple[dict[str, Any], ...] = (
    {"canary_arm": "baseline"},
    {"canary_arm": "candidate"},
    {"canary_arm": "candidate", "canary_shadow": True},
    {"canary_arm": "baseline", "canary_fallback": True},
)

# Longest wait for the shadow worker to finish its queue at interpreter exit.
_EXIT_TIMEOUT_S = 2.0
_UNSEEN = object()
_TWO_64 = float(1 << 64)
_M64 = (1 << 64) - 1
_crc32 = zlib.crc32
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Bound once: module globals are found faster than attributes on the per-call path.
_get_ctx = CURRENT.get
_set_ctx = CURRENT.set
_reset_ctx = CURRENT.reset
_LAST_BY_THREAD = LAST_BY_THREAD


def _derive(outer: Ctx | None, extra: dict[str, Any], request_id: str | None = None) -> Ctx:
    """The context a routed call runs under: the outer one's values plus the arm's extras.

    Without outer extras the arm's own dict is shared, not copied: a context's extras are
    never changed after it is made (``predlog.context`` shares them the same way).
    """
    if outer is None:
        return Ctx(None, request_id, extra)
    rid = outer.request_id if request_id is None else request_id
    return Ctx(outer.user_id, rid, {**outer.extra, **extra} if outer.extra else extra, outer.suppress)


def _hand_last(ctx: Ctx, outer: Ctx | None) -> None:
    """Make the derived context's last prediction the caller's (for last_prediction_id()).

    The derived context lets go of it: it is cached per thread, and would otherwise keep the
    call's arguments and result alive until the thread's next call.
    """
    rec = ctx.last
    if rec is not None:
        ctx.last = None
        if outer is not None:
            outer.last = rec
        else:
            LAST_BY_THREAD.last = rec


class _Plan:
    """How calls are routed now; replaced whole, never changed, so a call reads it once."""

    __slots__ = ("state", "share", "arm", "shadow")

    def __init__(self, state: str, share: float) -> None:
        self.state = state
        self.share = share
        # A fixed arm, or -1 when each call is routed by its key.
        self.arm = {"canary": -1, "shadow": BASELINE, "promoted": CANDIDATE, "rolled_back": BASELINE}[state]
        self.shadow = state == "shadow"


class _Slot:
    """One thread's cache: the outer context last seen, its bucket and derived contexts, and
    the thread's call counts (a thread writes only its own; :class:`_Tally` sums them)."""

    __slots__ = ("outer", "bucket", "ctxs", "counts", "__weakref__")

    def __init__(self) -> None:
        self.outer: Any = _UNSEEN
        self.bucket: float | None = -1.0
        self.ctxs: list[Ctx | None] = [None, None, None]
        self.counts = [0, 0, 0]  # calls routed to the baseline, to the candidate; fallbacks

    def see(self, outer: Ctx | None) -> None:
        self.outer = outer
        self.bucket = -1.0  # not computed yet; None: the key is absent
        ctxs = self.ctxs
        ctxs[0] = ctxs[1] = ctxs[2] = None  # in place: a new request allocates no list


class _Tally:
    """The router's call counts, exact, in memory that does not grow with the threads served.

    Each thread counts in its own slot (no lock per call). A thread's slot is freed when the
    thread ends; a weak reference's callback then queues its counts to be folded into the
    totals, which ``totals()`` and the next ``add()`` do under the lock. The callback never
    blocks: it runs while a thread is torn down, or in a forked child whose lock a thread of
    the parent may have held.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[weakref.ref[_Slot], list[int]] = {}
        self._ended: collections.deque[weakref.ref[_Slot]] = collections.deque()
        self._totals = [0, 0, 0]

    def add(self, slot: _Slot) -> None:
        """Count ``slot``'s calls from now on (the slot of a thread's first call)."""
        with self._lock:
            self._fold()
            self._live[weakref.ref(slot, self._end)] = slot.counts

    def _end(self, ref: weakref.ref[_Slot]) -> None:
        self._ended.append(ref)  # atomic: no lock needed to queue it
        if self._lock.acquire(blocking=False):
            try:
                self._fold()
            finally:
                self._lock.release()

    def _fold(self) -> None:
        """Move the counts of ended threads into the totals (under the lock)."""
        ended, live, totals = self._ended, self._live, self._totals
        while ended:
            counts = live.pop(ended.popleft(), None)
            if counts is not None:
                for i, n in enumerate(counts):
                    totals[i] += n

    def totals(self) -> list[int]:
        """Calls routed to the baseline, to the candidate, and fallbacks, of every thread."""
        with self._lock:
            self._fold()
            out = list(self._totals)
            for counts in list(self._live.values()):
                for i, n in enumerate(counts):
                    out[i] += n
        return out


# ---------------------------------------------------------------- the event log


class EventLog:
    """The canary's events: kept in memory and written to ``<store>/events/`` one file each.

    ``store`` returns the store directory, or None to keep events in memory only. Writing
    happens on the caller's thread (events are rare), atomically (temporary file, fsync,
    rename); a failure is logged once, counted in ``failed`` and never raised.
    """

    def __init__(self, store: Callable[[], str | None], health: Health) -> None:
        self._store = store
        self._health = health
        self._rand = os.urandom(4).hex()
        self._n = 0
        self._last_us = 0
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.failed = 0

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._rand = os.urandom(4).hex()

    def record(self, **fields: Any) -> dict[str, Any]:
        """Add one event (``ts``, ``host`` and ``pid`` filled in) and write it; return it."""
        with self._lock:
            # Strictly increasing per log, so events of one canary sort in the order made.
            us = max(time.time_ns() // 1000, self._last_us + 1)
            self._last_us = us
            ts = _EPOCH + dt.timedelta(microseconds=us)
            event = {"ts": ts.isoformat(timespec="microseconds"), **fields, "host": HOST, "pid": os.getpid()}
            self.events.append(event)
            self._n += 1
            store = self._store()
            if store is not None:
                self._write(store, ts.date().isoformat(), event)
            return event

    def _write(self, store: str, date: str, event: dict[str, Any]) -> None:
        try:
            from ._sealing import ensure_store

            ensure_store(store)
            directory = event_dir(store, date)
            mkdir_private(directory)
            name = event_name(self._rand, self._n)
            tmp = os.path.join(directory, f".{name}.tmp")
            with open_private(tmp) as f:
                f.write(json.dumps(event, ensure_ascii=False).encode("utf-8"))
            os.replace(tmp, os.path.join(directory, name))
            fsync_dir(directory)
        except OSError as exc:
            self.failed += 1
            self._health.error_once(
                "canary_event",
                "predlog: could not write a canary event to %s (%s); events stay in router.events "
                "(counted in router.stats()['events_failed']): check that the store is writable",
                store,
                exc,
            )


# ---------------------------------------------------------------- shadow calls


_ShadowCall = tuple[Callable[..., Any], Ctx, tuple[Any, ...], dict[str, Any]]


class _ShadowWorker:
    """Runs shadow calls of the candidate off the request thread: a bounded deque, one daemon
    thread started on the first call. ``submit`` never blocks; a full queue drops the call."""

    def __init__(self, max_size: int) -> None:
        self.max = max_size
        self.runs = 0
        self.errors = 0
        self.dropped = 0
        self._reset()

    def _reset(self) -> None:
        self.items: collections.deque[_ShadowCall] = collections.deque()
        self.wakeup = threading.Event()
        self.idle = threading.Condition(threading.Lock())
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.running = 0  # 1 while the worker runs a call it took
        self.stopping = False
        self.pid = os.getpid()

    def after_fork_in_child(self) -> None:
        """The child starts with an empty queue, new locks and no thread."""
        self.runs = self.errors = self.dropped = 0
        self._reset()

    def submit(self, fn: Callable[..., Any], ctx: Ctx, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if self.pid != os.getpid():
            self.after_fork_in_child()
        items = self.items
        if len(items) >= self.max or self.stopping:
            with self.lock:
                self.dropped += 1
            return False
        items.append((fn, ctx, args, kwargs))
        thread = self.thread
        if thread is None or not thread.is_alive():
            self._start()
        if not self.wakeup.is_set():
            self.wakeup.set()
        return True

    def _start(self) -> None:
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                return
            self.thread = threading.Thread(target=self._run, name="predlog-canary-shadow", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        items, wakeup = self.items, self.wakeup
        while True:
            wakeup.wait(1.0)
            wakeup.clear()
            while items:
                self.running = 1
                fn, ctx, args, kwargs = items.popleft()
                token = CURRENT.set(ctx)
                try:
                    fn(*args, **kwargs)
                except Exception:
                    self.errors += 1  # the candidate's row records the error
                finally:
                    CURRENT.reset(token)
                    ctx.last = None  # cached by the caller's thread: keep no record alive
                    self.runs += 1
                    self.running = 0
            with self.idle:
                self.idle.notify_all()
            if self.stopping:
                return

    def flush(self, timeout_s: float) -> bool:
        """Wait until every shadow call queued so far has run; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self.idle:
            while self.items or self.running:
                left = deadline - time.monotonic()
                if left <= 0 or self.thread is None or not self.thread.is_alive():
                    return not (self.items or self.running)
                self.wakeup.set()
                self.idle.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float) -> bool:
        """Run what is queued, then stop the thread (a later shadow call is dropped)."""
        ok = self.flush(timeout_s)
        self.stopping = True
        self.wakeup.set()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        return ok


# ---------------------------------------------------------------- the router


def _spec_of(fn: Any, role: str) -> FunctionSpec:
    spec = getattr(fn, "__predlog_spec__", None)
    if spec is None:
        raise ConfigError(
            f"canary({role}=...) takes a predict function decorated with @predlog.capture "
            f"(or rec.capture), got {fn!r}: decorate it first, e.g. @predlog.capture(version='1.5.0')"
        )
    return spec  # type: ignore[no-any-return]


def _check_share(share: object) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share):
        raise ConfigError(f"share must be a number in [0, 1], got {share!r}")
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"share must be in [0, 1] (0.05 sends 5% of traffic to the candidate), got {share!r}")
    return float(share)


def _key_reader(key: str | None) -> Callable[[Ctx | None], str | None]:
    """A function giving the key's value (as text) in a context, or None when absent."""
    if key is None:
        return lambda ctx: None
    if key == "user_id":
        return lambda ctx: None if ctx is None else ctx.user_id
    if key == "request_id":
        return lambda ctx: None if ctx is None else ctx.request_id

    def extra(ctx: Ctx | None) -> str | None:
        value = None if ctx is None else ctx.extra.get(key)
        return None if value is None else str(value)

    return extra


class Canary:
    """Routes calls between two captured predict functions; promote or roll back live.

    Build it with :func:`predlog.canary` (or ``Recorder.canary``). Calling it calls one of
    the two functions with the same arguments and returns what that one returns; the row
    the call writes names the version that served it and carries ``context.canary_arm``.

    Example::

        router = predlog.canary(baseline=predict_v1, candidate=predict_v2, share=0.05)
        with predlog.context(user_id="u1"):
            y = router(x)
        router.share = 0.25
        router.promote(reason="error rate and latency within bounds")

    Threads: calls may come from any number of threads (and asyncio tasks, for async
    functions). ``promote``, ``rollback`` and share changes are thread-safe and apply to
    every call that starts after they return.
    """

    def __init__(
        self,
        baseline: Callable[..., Any],
        candidate: Callable[..., Any],
        *,
        events: EventLog,
        share: float = 0.05,
        key: str | None = "user_id",
        shadow: bool = False,
        fallback: bool = True,
        shadow_queue_size: int = 1000,
    ) -> None:
        base_spec, cand_spec = _spec_of(baseline, "baseline"), _spec_of(candidate, "candidate")
        _check_pair(base_spec, cand_spec)
        if key is not None and (not isinstance(key, str) or not key):
            raise ConfigError(f"key must name a context field ('user_id', 'request_id' or an extra), got {key!r}")
        if isinstance(shadow_queue_size, bool) or not isinstance(shadow_queue_size, int) or shadow_queue_size < 1:
            raise ConfigError(f"shadow_queue_size must be an integer >= 1, got {shadow_queue_size!r}")
        self.baseline = baseline
        self.candidate = candidate
        self.key = key
        self.fallback = bool(fallback)
        self.model: str = base_spec.model
        self.baseline_version: str = base_spec.version
        self.candidate_version: str = cand_spec.version
        self._fns = (baseline, candidate)
        self._cand_spec = cand_spec
        self._key_of = _key_reader(key)
        self._by_user = key == "user_id"  # the common key, read inline
        # The routing seed: from the model and the candidate version, so that each canary
        # picks its own users; hashed once, here (docs/canary.md gives the formula).
        salt = f"predlog-canary\0{self.model}\0{self.candidate_version}".encode("utf-8", "surrogatepass")
        self._seed = int.from_bytes(hashlib.blake2b(salt, digest_size=8).digest(), "big")
        self._random = random.random  # reseeded by the random module in a forked child
        self._events = events
        self._shadow = _ShadowWorker(shadow_queue_size)
        self._lock = threading.Lock()
        self._reset_threads()
        self._plan = _Plan("shadow" if shadow else "canary", _check_share(share))
        self._record("start")
        _register_lifecycle(self)

    def _reset_threads(self) -> None:
        self._local = threading.local()
        self._tally = _Tally()

    def _slot(self) -> _Slot:
        """This thread's slot, made on its first call; freed (counts kept) when it ends."""
        slot = _Slot()
        self._local.slot = slot
        self._tally.add(slot)
        return slot

    def _after_fork_in_child(self) -> None:
        """A forked child routes as the parent did, with its own counts, locks and queue."""
        self._lock = threading.Lock()
        self._reset_threads()
        self._shadow.after_fork_in_child()
        self._events.after_fork_in_child()

    # ------------------------------------------------------------ routing

    def _bucket(self, value: str) -> float:
        """The key value's number in [0, 1): MurmurHash3's 64-bit finalizer (a bijection that
        mixes every input bit into every output bit) of the value's CRC32 XOR the seed.

        Unlike a keyed CRC, this is independent of the sampling bucket (the bare CRC32): the
        mixer scatters any range of CRCs over [0, 1). Ids with one CRC32 share an arm.
        """
        h = _crc32(value.encode("utf-8", "surrogatepass")) ^ self._seed
        h ^= h >> 33
        h = h * 0xFF51AFD7ED558CCD & _M64
        h ^= h >> 33
        h = h * 0xC4CEB9FE1A85EC53 & _M64
        return (h ^ (h >> 33)) / _TWO_64

    def arm_for(self, value: object) -> str:
        """The arm a call whose key has ``value`` goes to now (``None``: the key is absent,
        the call goes to a random arm). The same value gives the same arm in every process.

        Example::

            router.arm_for("u1")   # "baseline" or "candidate"
        """
        plan = self._plan
        arm = plan.arm
        if arm < 0:
            draw = self._random() if value is None else self._bucket(str(value))
            arm = CANDIDATE if draw < plan.share else BASELINE
        return ARMS[arm]

    def _route(self, plan: _Plan) -> tuple[int, _Slot, Ctx | None]:
        """The arm of this call, the thread's cache, the outer context (``__call__`` inlines it)."""
        outer = _get_ctx()
        try:
            slot: _Slot = self._local.slot
        except AttributeError:
            slot = self._slot()
        if slot.outer is not outer:
            slot.see(outer)
        arm = plan.arm
        if arm < 0:
            bucket = slot.bucket
            if bucket is None or bucket < 0.0:
                bucket = self._draw(slot, outer)
            arm = CANDIDATE if bucket < plan.share else BASELINE
        return arm, slot, outer

    def _draw(self, slot: _Slot, outer: Ctx | None) -> float:
        """The number in [0, 1) routing this call: the key's bucket (computed once per thread
        and outer context), or a random one when the key is absent."""
        if slot.bucket is not None:
            value = self._key_of(outer)
            slot.bucket = None if value is None else self._bucket(value)
            if slot.bucket is not None:
                return slot.bucket
        return self._random()

    def _ctx(self, slot: _Slot, outer: Ctx | None, which: int) -> Ctx:
        ctx = slot.ctxs[which]
        if ctx is None:
            ctx = slot.ctxs[which] = _derive(outer, _EXTRAS[which])
        return ctx

    def _enter(self, slot: _Slot, outer: Ctx | None, plan: _Plan) -> int:
        """The arm of a call under an outer context this thread did not see last: cache the
        context, hash its key and derive the arm's context into the slot, in one call (a
        request per call pays this on every call). ``plan`` is not shadow."""
        slot.outer = outer
        ctxs = slot.ctxs
        ctxs[0] = ctxs[1] = ctxs[2] = None
        arm = plan.arm
        if arm < 0:
            value = (None if outer is None else outer.user_id) if self._by_user else self._key_of(outer)
            if value is None:
                slot.bucket = None
                arm = CANDIDATE if self._random() < plan.share else BASELINE
            else:
                bucket = slot.bucket = self._bucket(value)
                arm = CANDIDATE if bucket < plan.share else BASELINE
        else:
            slot.bucket = -1.0
        ctxs[arm] = _derive(outer, _EXTRAS[arm])
        return arm

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the arm this call is routed to, with the same arguments; return its result."""
        # _route, inlined: this is the per-call cost of the router.
        plan = self._plan
        outer = _get_ctx()
        try:
            slot: _Slot = self._local.slot
        except AttributeError:
            slot = self._slot()
        if slot.outer is outer:
            arm = plan.arm
            if arm < 0:
                bucket = slot.bucket
                if bucket is None or bucket < 0.0:
                    bucket = self._draw(slot, outer)
                arm = CANDIDATE if bucket < plan.share else BASELINE
            elif plan.shadow:
                return self._serve_with_shadow(slot, outer, args, kwargs)
        elif plan.shadow:
            slot.see(outer)
            return self._serve_with_shadow(slot, outer, args, kwargs)
        else:
            arm = self._enter(slot, outer, plan)
        ctx = slot.ctxs[arm] or self._ctx(slot, outer, arm)
        slot.counts[arm] += 1
        token = _set_ctx(ctx)
        ctx.last = None
        try:
            return self._fns[arm](*args, **kwargs)
        except Exception:
            if arm == BASELINE or not self.fallback:
                raise
        finally:
            _reset_ctx(token)
            # The derived context's last prediction becomes the caller's (_hand_last, inlined).
            rec = ctx.last
            if rec is not None:
                ctx.last = None
                if outer is not None:
                    outer.last = rec
                else:
                    _LAST_BY_THREAD.last = rec
        return self._fall_back(slot, outer, args, kwargs)

    def _fall_back(self, slot: _Slot, outer: Ctx | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The candidate raised: the baseline serves the call, its row marked canary_fallback."""
        slot.counts[_FALLBACKS] += 1
        # Derived afresh (fallbacks are rare): the slot may hold another outer context by now.
        ctx = _derive(outer, _EXTRAS[_FALLBACK])
        token = CURRENT.set(ctx)
        ctx.last = None
        try:
            return self.baseline(*args, **kwargs)
        finally:
            CURRENT.reset(token)
            _hand_last(ctx, outer)

    def _shadow_contexts(self, slot: _Slot, outer: Ctx | None) -> tuple[Ctx, Ctx]:
        """The baseline's and the shadow candidate's contexts, sharing one request id."""
        if outer is not None and outer.request_id is not None:
            return self._ctx(slot, outer, BASELINE), self._ctx(slot, outer, _SHADOW)
        rid = uuid7_str(time.time_ns(), next_seq())
        return _derive(outer, _EXTRAS[BASELINE], rid), _derive(outer, _EXTRAS[_SHADOW], rid)

    def _serve_with_shadow(self, slot: _Slot, outer: Ctx | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        slot.counts[BASELINE] += 1
        ctx, shadow_ctx = self._shadow_contexts(slot, outer)
        token = CURRENT.set(ctx)
        ctx.last = None
        try:
            return self.baseline(*args, **kwargs)
        finally:
            CURRENT.reset(token)
            _hand_last(ctx, outer)
            if self._shadowing(outer):
                self._shadow.submit(self.candidate, shadow_ctx, args, kwargs)

    def _shadowing(self, outer: Ctx | None) -> bool:
        """A shadow call is only worth running when its row would be recorded."""
        return self._cand_spec.active and not (outer is not None and outer.suppress)

    # ------------------------------------------------------------ control

    @property
    def state(self) -> str:
        """``"canary"``, ``"shadow"``, ``"promoted"`` or ``"rolled_back"``."""
        return self._plan.state

    @property
    def share(self) -> float:
        """The share of keys (or of calls, without a key) routed to the candidate in canary state."""
        return self._plan.share

    @share.setter
    def share(self, share: float) -> None:
        self.set_share(share)

    def set_share(self, share: float, *, reason: str | None = None) -> None:
        """Route ``share`` of traffic to the candidate from the next call on.

        From any state, this puts the router in canary state (a shadow run becomes a canary,
        a promoted or rolled back one routes again). Recorded as a ``"share"`` event.

        Raises:
            ConfigError: ``share`` is not a number in [0, 1].
        """
        self._change("canary", _check_share(share), "share", reason)

    def promote(self, *, reason: str | None = None) -> None:
        """Send every call to the candidate from the next call on; recorded as ``"promote"``."""
        self._change("promoted", None, "promote", reason)

    def rollback(self, *, reason: str | None = None) -> None:
        """Send every call to the baseline from the next call on; recorded as ``"rollback"``."""
        self._change("rolled_back", None, "rollback", reason)

    def _change(self, state: str, share: float | None, kind: str, reason: str | None) -> None:
        with self._lock:
            self._plan = _Plan(state, self._plan.share if share is None else share)
            self._record(kind, reason)

    def _record(self, kind: str, reason: str | None = None) -> None:
        plan = self._plan
        self._events.record(
            model=self.model,
            kind=kind,
            baseline_version=self.baseline_version,
            candidate_version=self.candidate_version,
            share=plan.share,
            state=plan.state,
            shadow=plan.shadow,
            reason=None if reason is None else str(reason),
        )

    @property
    def events(self) -> list[dict[str, Any]]:
        """This router's events, oldest first (also when no store is written)."""
        return [dict(e) for e in self._events.events]

    def stats(self) -> dict[str, int]:
        """Counters of this process.

        ``baseline_calls`` and ``candidate_calls`` count calls by the arm they were routed to
        (a shadow call is not a call); ``fallbacks`` the candidate calls that raised and were
        served by the baseline; ``shadow_runs`` the shadow calls run (``shadow_errors`` of
        them raised), ``shadow_dropped`` those dropped on a full queue, ``shadow_queued``
        those waiting; ``events_failed`` the events that could not be written to the store.
        """
        counts = self._tally.totals()
        shadow = self._shadow
        return {
            "baseline_calls": counts[BASELINE],
            "candidate_calls": counts[CANDIDATE],
            "fallbacks": counts[_FALLBACKS],
            "shadow_runs": shadow.runs,
            "shadow_errors": shadow.errors,
            "shadow_dropped": shadow.dropped,
            "shadow_queued": len(shadow.items),
            "events_failed": self._events.failed,
        }

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the shadow calls queued so far have run (then ``predlog.flush()`` writes
        their rows). Returns False on timeout. Never raises."""
        return self._shadow.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Run the queued shadow calls and stop the shadow thread; later shadow calls are
        dropped. Called at interpreter exit. Returns False on timeout."""
        return self._shadow.close(timeout_s)

    def __repr__(self) -> str:
        plan = self._plan
        return (
            f"<Canary {self.model} {self.baseline_version} -> {self.candidate_version} "
            f"state={plan.state} share={plan.share:g} key={self.key!r}>"
        )


class _AsyncCanary(Canary):
    """A canary between two async predict functions: calling it returns a coroutine.

    Shadow calls run as tasks of the caller's event loop (at most ``shadow_queue_size`` at
    once; more are dropped and counted), started after the baseline's call returns.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tasks: set[Any] = set()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        plan = self._plan
        arm, slot, outer = self._route(plan)
        if plan.shadow:
            slot.counts[BASELINE] += 1
            ctx, shadow_ctx = self._shadow_contexts(slot, outer)
            token = CURRENT.set(ctx)
            try:
                return await self.baseline(*args, **kwargs)
            finally:
                CURRENT.reset(token)
                if self._shadowing(outer):
                    self._start_shadow_task(shadow_ctx, args, kwargs)
        ctx = slot.ctxs[arm] or self._ctx(slot, outer, arm)
        slot.counts[arm] += 1
        token = CURRENT.set(ctx)
        try:
            return await self._fns[arm](*args, **kwargs)
        except Exception:
            if arm == BASELINE or not self.fallback:
                raise
        finally:
            CURRENT.reset(token)
        slot.counts[_FALLBACKS] += 1
        # Derived afresh: while the candidate ran, another task may have changed the slot.
        token = CURRENT.set(_derive(outer, _EXTRAS[_FALLBACK]))
        try:
            return await self.baseline(*args, **kwargs)
        finally:
            CURRENT.reset(token)

    def _start_shadow_task(self, ctx: Ctx, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import asyncio

        shadow = self._shadow
        if len(self._tasks) >= shadow.max:
            with shadow.lock:
                shadow.dropped += 1
            return

        async def run() -> None:
            CURRENT.set(ctx)  # the task runs in a copy of the caller's context
            try:
                await self.candidate(*args, **kwargs)
            except Exception:
                shadow.errors += 1
            finally:
                shadow.runs += 1

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, int]:
        out = super().stats()
        out["shadow_queued"] = len(self._tasks)
        return out


def _check_pair(base: FunctionSpec, cand: FunctionSpec) -> None:
    if base.queue is not cand.queue:
        raise ConfigError(
            "canary: baseline and candidate are captured by different recorders; capture both with "
            "the recorder whose canary() you call"
        )
    kinds = {base.kind, cand.kind}
    if not kinds <= {"sync"} and kinds != {"async"}:
        raise ConfigError(
            f"canary: baseline is a {base.kind} function and candidate a {cand.kind} one; both must be "
            "plain functions, or both async functions (generators are not routed)"
        )
    if base.model != cand.model:
        raise ConfigError(
            f"canary: baseline is model {base.model!r} and candidate {cand.model!r}; a canary compares two "
            "versions of one model: give both the same @capture(model=...)"
        )
    if base.version == cand.version:
        raise ConfigError(
            f"canary: baseline and candidate are both version {base.version!r}; give each its own "
            "@capture(version=...) so their rows can be told apart"
        )


def make_canary(
    baseline: Callable[..., Any],
    candidate: Callable[..., Any],
    *,
    queue: object,
    events: EventLog,
    share: float,
    key: str | None,
    shadow: bool,
    fallback: bool,
    shadow_queue_size: int,
) -> Canary:
    """A :class:`Canary` (its async kind for async functions) over functions captured by the
    recorder whose record queue is ``queue``."""
    spec = _spec_of(baseline, "baseline")
    if spec.queue is not queue:
        raise ConfigError(
            "canary: baseline and candidate must be captured by the recorder whose canary() you call "
            "(predlog.canary for @predlog.capture, rec.canary for @rec.capture)"
        )
    cls = _AsyncCanary if spec.kind == "async" else Canary
    return cls(
        baseline,
        candidate,
        events=events,
        share=share,
        key=key,
        shadow=shadow,
        fallback=fallback,
        shadow_queue_size=shadow_queue_size,
    )


# ---------------------------------------------------------------- fork and exit


def _register_lifecycle(router: Canary) -> None:
    """Fork hook and exit hook, holding the router weakly."""
    child = weakref.WeakMethod(router._after_fork_in_child)
    os.register_at_fork(after_in_child=lambda: _call(child))
    ref = weakref.ref(router)
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise AttributeError
        # Runs before the recorder's own exit flush (registered earlier; these run last first).
        register(_close_at_exit, ref)
    except (AttributeError, RuntimeError):
        import atexit

        atexit.register(_close_at_exit, ref)


def _call(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    fn = method()
    if fn is not None:
        fn()


def _close_at_exit(ref: weakref.ReferenceType[Canary]) -> None:
    router = ref()
    if router is not None and router._shadow.pid == os.getpid():
        router.close(_EXIT_TIMEOUT_S)
