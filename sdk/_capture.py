"""The decorator: wrappers for sync, async, generator and async-generator predict functions.

Everything that can be decided once is decided at decoration time. Per call the wrapper
reads two clocks (four when it measures CPU time), takes a counter value, builds one tuple
of references and puts it on the recorder's queue without blocking. Conversion, I/O and
spans happen in the writer thread.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from time import thread_time_ns, time_ns
from typing import TYPE_CHECKING, Any

from ._config import ConfigError, check_sample_rate, validate_model_name
from ._context import CURRENT
from ._ids import next_seq
from ._otel import parent_getter
from ._recorder_state import LAST, LAST_BY_THREAD, remember

if TYPE_CHECKING:
    from ._config import Config
    from ._otel import Telemetry
    from ._queue import RecordQueue

__all__ = ["FunctionSpec", "wrap"]

# A record is a plain tuple, the cheapest thing to build on the request thread: see _record.

# Functions whose calls are usually faster than this get their CPU time measured on one
# call in _CPU_SAMPLE_EVERY under cpu_time="auto": the thread CPU clock is a system call
# (about 1 µs on some virtual machines), too dear to pay twice on every fast call.
CPU_FAST_NS = 50_000
_CPU_SAMPLE_EVERY = 16


class FunctionSpec:
    """What one decorated function records. Effective values follow the recorder's config
    (:meth:`refresh`); calls go to the recorder's queue."""

    __slots__ = (
        "queue",
        "telemetry",
        "fn",
        "name",
        "model_arg",
        "version_arg",
        "features",
        "feature_names",
        "prediction",
        "confidence",
        "sample_rate_arg",
        "skip_self",
        "signature",
        "kind",
        "model",
        "version",
        "sample_rate",
        "keep_all",
        "active",
        "cpu_every",
        "cpu_auto",
        "otel_mode",
        "otel_get",
        "__weakref__",
    )

    def __init__(
        self,
        queue: RecordQueue,
        telemetry: Telemetry,
        config: Config,
        fn: Callable[..., Any],
        *,
        model: str | None,
        version: str | None,
        features: str | Callable[..., Any] | None,
        feature_names: tuple[str, ...] | None,
        prediction: Callable[[Any], Any] | None,
        confidence: Callable[[Any], Any] | str | None,
        sample_rate: float | None,
    ) -> None:
        self.queue = queue
        self.telemetry = telemetry
        self.fn = fn
        self.name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        self.model_arg = None if model is None else validate_model_name(model)
        if version is not None and (not isinstance(version, str) or not version):
            raise ConfigError(f"version must be a non-empty string, got {version!r}")
        self.version_arg = version
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self.signature = None
        params = list(self.signature.parameters) if self.signature else []
        self.skip_self = 1 if params and params[0] in ("self", "cls") else 0
        if features is not None and not callable(features):
            if not isinstance(features, str):
                raise ConfigError(f"features must be an argument name or a callable, got {features!r}")
            if self.signature is not None and features not in self.signature.parameters:
                raise ConfigError(f"features={features!r} is not a parameter of {self.name}{self.signature}")
        self.features = features
        if feature_names is not None:
            feature_names = tuple(str(n) for n in feature_names)
        self.feature_names = feature_names
        if prediction is not None and not callable(prediction):
            raise ConfigError(f"prediction must be a callable on the output, got {prediction!r}")
        self.prediction = prediction
        if confidence is not None and confidence != "max" and not callable(confidence):
            raise ConfigError(f"confidence must be a callable on the output or 'max', got {confidence!r}")
        self.confidence = confidence
        self.sample_rate_arg = None if sample_rate is None else check_sample_rate(sample_rate)
        if inspect.isasyncgenfunction(fn):
            self.kind = "asyncgen"
        elif inspect.iscoroutinefunction(fn):
            self.kind = "async"
        elif inspect.isgeneratorfunction(fn):
            self.kind = "gen"
        else:
            self.kind = "sync"
        self.refresh(config)

    def refresh(self, cfg: Config) -> None:
        """Recompute effective settings from the recorder's current config."""
        if self.model_arg is not None:
            self.model = self.model_arg
        elif cfg.model is not None:
            self.model = cfg.model
        else:
            base = getattr(self.fn, "__name__", "model")
            self.model = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip("._-")[:128] or "model"
        self.version = self.version_arg if self.version_arg is not None else cfg.version
        self.sample_rate = self.sample_rate_arg if self.sample_rate_arg is not None else cfg.sample_rate
        self.keep_all = self.sample_rate >= 1.0
        self.active = cfg.enabled
        self.cpu_auto = cfg.cpu_time == "auto"
        self.cpu_every = {"always": 1, "never": 0, "auto": 1}[cfg.cpu_time]
        # 0: no spans; 1: the writer makes the span from the captured parent context;
        # 2: the span is started around the call (generators cannot hold a context across
        # their yields, so they stay at 1).
        getter = parent_getter() if cfg.tracing else None
        self.otel_get = getter
        if getter is None:
            self.otel_mode = 0
        elif cfg.nest_spans and self.kind in ("sync", "async"):
            self.otel_mode = 2
        else:
            self.otel_mode = 1

    def observe_latency(self, median_ns: float) -> None:
        """Called by the worker: under cpu_time="auto", fast functions sample the CPU clock."""
        if self.cpu_auto:
            self.cpu_every = _CPU_SAMPLE_EVERY if median_ns < CPU_FAST_NS else 1

    def keep(self, ctx: Any) -> bool:
        """Sampling decision for a successful call (errors are always kept)."""
        rate = self.sample_rate
        if rate >= 1.0:
            return True
        if rate <= 0.0:
            return False
        if ctx is not None and ctx.user_id is not None:
            return bool(ctx.user_bucket() < rate)
        return bool(self.queue.random() < rate)

    def __repr__(self) -> str:
        return f"<FunctionSpec {self.name} model={self.model} version={self.version}>"


def wrap(spec: FunctionSpec) -> Callable[..., Any]:
    maker = {"sync": _wrap_sync, "async": _wrap_async, "gen": _wrap_gen, "asyncgen": _wrap_asyncgen}[spec.kind]
    wrapper = maker(spec)
    functools.update_wrapper(wrapper, spec.fn)
    wrapper.__predlog_spec__ = spec  # type: ignore[attr-defined]
    return wrapper


def _wrap_sync(spec: FunctionSpec) -> Callable[..., Any]:
    fn = spec.fn
    queue = spec.queue
    q = queue.items  # one deque for the recorder's life (cleared, never replaced)
    full = queue.full
    wake = queue.wake
    submit = queue.submit
    tls = LAST_BY_THREAD
    get_ctx = CURRENT.get
    nested = _nested_sync(spec)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not spec.active:
            return fn(*args, **kwargs)
        ctx = get_ctx()
        if ctx is not None and ctx.suppress:
            return fn(*args, **kwargs)
        mode = spec.otel_mode
        if mode == 2:
            return nested(args, kwargs, ctx)
        otel = spec.otel_get() if mode else None  # type: ignore[misc]
        seq = next_seq()
        every = spec.cpu_every
        if every and not seq % every:
            # The CPU interval sits inside the wall interval, so cpu_ms <= latency_ms.
            t0 = time_ns()
            c0 = thread_time_ns()
            try:
                out = fn(*args, **kwargs)
            except BaseException as exc:
                cpu = thread_time_ns() - c0
                submit((spec, args, kwargs, None, exc, t0, time_ns(), cpu, ctx, seq, otel))
                raise
            cpu = thread_time_ns() - c0
            t1 = time_ns()
        else:
            t0 = time_ns()
            try:
                out = fn(*args, **kwargs)
            except BaseException as exc:
                submit((spec, args, kwargs, None, exc, t0, time_ns(), -1, ctx, seq, otel))
                raise
            t1 = time_ns()
            cpu = -1
        rec = (spec, args, kwargs, out, None, t0, t1, cpu, ctx, seq, otel)
        # The last record, for last_prediction_id(): on the request's context object when
        # there is one, else per thread. Plain attribute stores, no allocation.
        if ctx is not None:
            ctx.last = rec
        else:
            tls.last = rec
        if spec.keep_all or spec.keep(ctx):
            # queue.put, inlined: this is the per-call cost of predlog.
            n = len(q)
            if n < queue.max:
                q.append(rec)
                if n == queue.wake_at:  # crossing the batch threshold wakes the writer
                    wake()
            else:
                full(rec)
        elif otel is not None:
            queue.submit_span_only(rec)
        return out

    return wrapper


def _start_span(spec: FunctionSpec, t0: int) -> tuple[Any, Any]:
    """Start the call's span on the request thread and make it current (nest_spans)."""
    try:
        tracer = spec.telemetry.tracer()
        if tracer is None:
            return None, None
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        span = tracer.start_span(f"predict {spec.model}", kind=trace.SpanKind.INTERNAL, start_time=t0)
        return span, otel_context.attach(trace.set_span_in_context(span))
    except Exception:
        spec.queue.health.internal_error("span_start")
        return None, None


def _end_span_scope(spec: FunctionSpec, token: Any) -> None:
    if token is not None:
        try:
            from opentelemetry import context as otel_context

            otel_context.detach(token)
        except Exception:
            spec.queue.health.internal_error("span_detach")


def _nested_sync(spec: FunctionSpec) -> Callable[[tuple[Any, ...], dict[str, Any], Any], Any]:
    """The sync wrapper's body under nest_spans: the span is current while predict runs."""
    fn = spec.fn
    queue = spec.queue

    def call(args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
        seq = next_seq()
        every = spec.cpu_every
        measure = bool(every and not seq % every)
        t0 = time_ns()
        span, token = _start_span(spec, t0)
        c0 = thread_time_ns() if measure else 0
        try:
            out = fn(*args, **kwargs)
        except BaseException as exc:
            cpu = thread_time_ns() - c0 if measure else -1
            t1 = time_ns()
            _end_span_scope(spec, token)
            queue.submit((spec, args, kwargs, None, exc, t0, t1, cpu, ctx, seq, span))
            raise
        cpu = thread_time_ns() - c0 if measure else -1
        t1 = time_ns()
        _end_span_scope(spec, token)
        rec = (spec, args, kwargs, out, None, t0, t1, cpu, ctx, seq, span)
        if spec.keep_all or spec.keep(ctx):
            queue.submit(rec)
        else:
            remember(rec)
            if span is not None:
                queue.submit_span_only(rec)
        return out

    return call


class _CpuMeter:
    """Drives an awaitable step by step and adds the thread CPU time of each step.

    Awaiting a coroutine directly would charge it for everything else the event loop ran
    meanwhile; stepping it ourselves charges only its own work. Whatever the inner awaitable
    yields (futures, trio traps) passes through to the event loop unchanged.
    """

    __slots__ = ("cpu_ns",)

    def __init__(self) -> None:
        self.cpu_ns = 0

    def run(self, awaitable: Any) -> Any:
        it = awaitable.__await__()
        send, throw = it.send, it.throw
        value: Any = None
        error: BaseException | None = None
        while True:
            c0 = thread_time_ns()
            try:
                if error is not None:
                    e, error = error, None
                    step = throw(e)
                else:
                    step = send(value)
            except StopIteration as stop:
                self.cpu_ns += thread_time_ns() - c0
                return stop.value
            except BaseException:
                self.cpu_ns += thread_time_ns() - c0
                raise
            self.cpu_ns += thread_time_ns() - c0
            try:
                value = yield step
            except BaseException as exc:  # thrown in by the event loop (e.g. cancellation)
                error = exc
                value = None


class _Timed:
    __slots__ = ("meter", "awaitable")

    def __init__(self, meter: _CpuMeter, awaitable: Any) -> None:
        self.meter = meter
        self.awaitable = awaitable

    def __await__(self) -> Any:
        return self.meter.run(self.awaitable)


def _wrap_async(spec: FunctionSpec) -> Callable[..., Any]:
    fn = spec.fn
    submit = spec.queue.submit
    get_ctx = CURRENT.get

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not spec.active:
            return await fn(*args, **kwargs)
        ctx = get_ctx()
        if ctx is not None and ctx.suppress:
            return await fn(*args, **kwargs)
        mode = spec.otel_mode
        otel = spec.otel_get() if mode == 1 else None  # type: ignore[misc]
        seq = next_seq()
        every = spec.cpu_every
        meter = _CpuMeter() if every and not seq % every else None
        t0 = time_ns()
        token = None
        if mode == 2:
            otel, token = _start_span(spec, t0)
        try:
            if meter is None:
                out = await fn(*args, **kwargs)
            else:
                out = await _Timed(meter, fn(*args, **kwargs))
        except BaseException as exc:
            t1 = time_ns()
            _end_span_scope(spec, token)
            submit((spec, args, kwargs, None, exc, t0, t1, meter.cpu_ns if meter else -1, ctx, seq, otel))
            raise
        t1 = time_ns()
        _end_span_scope(spec, token)
        rec = (spec, args, kwargs, out, None, t0, t1, meter.cpu_ns if meter else -1, ctx, seq, otel)
        if spec.keep_all or spec.keep(ctx):
            submit(rec)
        else:
            LAST.set(rec)  # sampled out: the id still names this call, not an older one
            if otel is not None:
                spec.queue.submit_span_only(rec)
        return out

    return wrapper


class _Tap:
    """Iterator that forwards next/send/throw/close to a generator and keeps what it yields.

    ``yield from _Tap(gen)`` then has exactly the delegation semantics of ``yield from gen``.
    """

    __slots__ = ("gen", "items", "cpu_ns", "measure")

    def __init__(self, gen: Any, measure: bool) -> None:
        self.gen = gen
        self.items: list[Any] = []
        self.cpu_ns = 0
        self.measure = measure

    def __iter__(self) -> _Tap:
        return self

    def _step(self, method: Callable[..., Any], *arg: Any) -> Any:
        if self.measure:
            c0 = thread_time_ns()
            try:
                item = method(*arg)
            finally:
                self.cpu_ns += thread_time_ns() - c0
        else:
            item = method(*arg)
        self.items.append(item)
        return item

    def __next__(self) -> Any:
        return self._step(self.gen.__next__)

    def send(self, value: Any) -> Any:
        return self._step(self.gen.send, value)

    def throw(self, *exc: Any) -> Any:
        return self._step(self.gen.throw, *exc)

    def close(self) -> None:
        self.gen.close()


def _wrap_gen(spec: FunctionSpec) -> Callable[..., Any]:
    fn = spec.fn
    submit = spec.queue.submit
    get_ctx = CURRENT.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not spec.active:
            return (yield from fn(*args, **kwargs))
        ctx = get_ctx()
        if ctx is not None and ctx.suppress:
            return (yield from fn(*args, **kwargs))
        otel = spec.otel_get() if spec.otel_mode else None  # type: ignore[misc]
        seq = next_seq()
        every = spec.cpu_every
        measure = bool(every and not seq % every)
        t0 = time_ns()
        tap = _Tap(fn(*args, **kwargs), measure)
        try:
            result = yield from tap
        except GeneratorExit:
            # Closed early by the consumer: what was produced so far is the prediction.
            submit((spec, args, kwargs, tap.items, None, t0, time_ns(), tap.cpu_ns if measure else -1, ctx, seq, otel))
            raise
        except BaseException as exc:
            submit((spec, args, kwargs, tap.items, exc, t0, time_ns(), tap.cpu_ns if measure else -1, ctx, seq, otel))
            raise
        rec = (spec, args, kwargs, tap.items, None, t0, time_ns(), tap.cpu_ns if measure else -1, ctx, seq, otel)
        if spec.keep_all or spec.keep(ctx):
            submit(rec)
        else:
            remember(rec)
            if otel is not None:
                spec.queue.submit_span_only(rec)
        return result

    return wrapper


def _wrap_asyncgen(spec: FunctionSpec) -> Callable[..., Any]:
    fn = spec.fn
    submit = spec.queue.submit
    get_ctx = CURRENT.get

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        agen = fn(*args, **kwargs)
        ctx = get_ctx()
        if not spec.active or (ctx is not None and ctx.suppress):
            record = False
        else:
            record = True
        seq = next_seq() if record else 0
        otel = spec.otel_get() if record and spec.otel_mode else None  # type: ignore[misc]
        every = spec.cpu_every
        meter = _CpuMeter() if record and every and not seq % every else None
        items: list[Any] = []

        def step(awaitable: Any) -> Any:
            return _Timed(meter, awaitable) if meter is not None else awaitable

        t0 = time_ns()
        try:
            item = await step(agen.__anext__())
            while True:
                items.append(item)
                try:
                    sent = yield item
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:
                    item = await step(agen.athrow(exc))
                else:
                    item = await step(agen.asend(sent))
        except StopAsyncIteration:
            pass
        except GeneratorExit:
            if record:
                submit((spec, args, kwargs, items, None, t0, time_ns(), meter.cpu_ns if meter else -1, ctx, seq, otel))
            raise
        except BaseException as exc:
            if record:
                submit((spec, args, kwargs, items, exc, t0, time_ns(), meter.cpu_ns if meter else -1, ctx, seq, otel))
            raise
        if record:
            rec = (spec, args, kwargs, items, None, t0, time_ns(), meter.cpu_ns if meter else -1, ctx, seq, otel)
            if spec.keep_all or spec.keep(ctx):
                submit(rec)
            else:
                LAST.set(rec)
                if otel is not None:
                    spec.queue.submit_span_only(rec)

    return wrapper
