"""Recorder configuration: one frozen dataclass, argument > ``PREDLOG_*`` env var > default."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ._layout import is_model_name
from ._processors import Processor

logger = logging.getLogger("predlog")

__all__ = ["Config", "ConfigError", "ENV_VARS", "resolve_config", "validate_model_name"]


class ConfigError(ValueError):
    """A configuration argument is invalid. Raised at configuration or decoration time only."""


ConfigError.__module__ = "predlog"


# Documented environment variables, one per setting that makes sense outside code.
ENV_VARS: dict[str, str] = {
    "store": "PREDLOG_STORE",
    "model": "PREDLOG_MODEL",
    "version": "PREDLOG_VERSION",
    "enabled": "PREDLOG_ENABLED",
    "sample_rate": "PREDLOG_SAMPLE_RATE",
    "max_queue_size": "PREDLOG_MAX_QUEUE_SIZE",
    "on_full": "PREDLOG_ON_FULL",
    "block_timeout_s": "PREDLOG_BLOCK_TIMEOUT_S",
    "flush_interval_s": "PREDLOG_FLUSH_INTERVAL_S",
    "segment_max_rows": "PREDLOG_SEGMENT_MAX_ROWS",
    "segment_max_bytes": "PREDLOG_SEGMENT_MAX_BYTES",
    "segment_max_age_s": "PREDLOG_SEGMENT_MAX_AGE_S",
    "row_group_size": "PREDLOG_ROW_GROUP_SIZE",
    "max_value_bytes": "PREDLOG_MAX_VALUE_BYTES",
    "cpu_time": "PREDLOG_CPU_TIME",
    "hash_key": "PREDLOG_HASH_KEY",
    "shutdown_timeout_s": "PREDLOG_SHUTDOWN_TIMEOUT_S",
    "tracing": "PREDLOG_TRACING",
    "otlp": "PREDLOG_OTLP",
    "nest_spans": "PREDLOG_NEST_SPANS",
    "span_payload": "PREDLOG_SPAN_PAYLOAD",
    "max_spans_per_s": "PREDLOG_MAX_SPANS_PER_S",
    "metrics": "PREDLOG_METRICS",
}

CpuTime = Literal["auto", "always", "never"]
OnFull = Literal["drop", "block"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Settings of one :class:`~predlog.Recorder`. Build it with :func:`predlog.configure`.

    Attributes:
        store: Directory of the replay store (created on first write).
        model: Default model name; a ``@capture(model=...)`` overrides it per function.
            Letters, digits, ``.``, ``_`` and ``-`` (it names a directory).
        version: Default model version.
        enabled: When false, decorated functions run untouched (one attribute check per call).
        sample_rate: Fraction of calls kept in Parquet, in ``[0, 1]``. Deterministic per user
            when a user id is set; errors are always kept.
        max_queue_size: Records held in memory between the request threads and the writer.
        on_full: ``"drop"`` (count and drop, the default) or ``"block"`` (wait up to
            ``block_timeout_s``, then drop) when the queue is full.
        flush_interval_s: Longest time a record waits before it reaches the write-ahead segment.
        segment_max_rows, segment_max_bytes, segment_max_age_s: A write-ahead segment is
            sealed into Parquet when any of these is reached.
        row_group_size: Rows per Parquet row group when the volume allows.
        max_value_bytes: Strings and bytes longer than this are truncated and flagged.
        cpu_time: ``"always"`` reads the thread CPU clock around every call; ``"auto"``
            (default) does so for every call of functions slower than 50 µs and one call in
            16 of faster ones (the clock read costs about 1 µs on some kernels); ``"never"``.
        drop_fields: Dotted paths removed before writing, e.g. ``"features.raw_image"``.
        hash_fields: Dotted paths replaced by a keyed HMAC-SHA256 (hex, 32 chars), e.g.
            ``"user_id"``, ``"features.email"``. Needs ``hash_key``.
        hash_key: Key for ``hash_fields`` (``PREDLOG_HASH_KEY``).
        redact: Key patterns (``fnmatch`` style, case-insensitive) whose values are replaced
            by ``"[REDACTED]"`` anywhere in features, context and prediction, and in a
            label's value and extra fields.
        processors: Callables ``row -> row | None`` run in the writer, after the built-ins.
        shutdown_timeout_s: Longest wait for pending records in ``shutdown()``, at
            interpreter exit and when ``configure()`` replaces a running writer.
        tracing: Make an OpenTelemetry span per prediction (default on). Spans go to
            ``tracer_provider``, else to predlog's own OTLP pipeline when ``otlp`` is set,
            else to the application's global TracerProvider; with none of these, no spans.
        otlp: Export predlog's spans and metrics over OTLP through a provider of predlog's
            own (not installed globally), configured by the standard ``OTEL_EXPORTER_OTLP_*``,
            ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` variables, gRPC or
            HTTP/protobuf. ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` set to
            ``none`` (or to anything that does not name ``otlp``) leave that signal out.
            Ignored for spans when ``tracer_provider`` is given.
        nest_spans: Start the span on the request thread around the call, so spans made
            inside predict nest under it (costs the request thread an SDK span, ~15-35 µs).
            By default the span is built by the writer from the captured parent context and
            the call's timestamps.
        span_payload: Add a truncated copy of the features and prediction (after
            ``drop_fields``, ``hash_fields`` and ``redact``) to each span as JSON.
        max_spans_per_s: Spans made per second at most; calls above it are still written to
            Parquet, and the spans not made are counted (``spans_dropped``).
        tracer_provider: An OpenTelemetry TracerProvider to use instead of the global one.
        metrics: Report predlog's counters and a latency histogram through the OpenTelemetry
            metrics API (``meter_provider``, predlog's OTLP pipeline, or the global one).
        meter_provider: An OpenTelemetry MeterProvider to use instead of the global one.
    """

    store: str = "predlog-store"
    model: str | None = None
    version: str = "unversioned"
    enabled: bool = True
    sample_rate: float = 1.0
    max_queue_size: int = 200_000
    on_full: OnFull = "drop"
    block_timeout_s: float = 0.1
    flush_interval_s: float = 1.0
    segment_max_rows: int = 1_000_000
    segment_max_bytes: int = 256 * 1024 * 1024
    segment_max_age_s: float = 60.0
    row_group_size: int = 131_072
    max_value_bytes: int = 64 * 1024
    cpu_time: CpuTime = "auto"
    drop_fields: tuple[str, ...] = ()
    hash_fields: tuple[str, ...] = ()
    hash_key: bytes | None = dataclasses.field(default=None, repr=False)
    redact: tuple[str, ...] = ()
    processors: tuple[Processor, ...] = ()
    shutdown_timeout_s: float = 5.0
    tracing: bool = True
    otlp: bool = False
    nest_spans: bool = False
    span_payload: bool = False
    max_spans_per_s: float = 10_000.0
    tracer_provider: Any = dataclasses.field(default=None, repr=False, compare=False)
    metrics: bool = True
    meter_provider: Any = dataclasses.field(default=None, repr=False, compare=False)


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def validate_model_name(name: object) -> str:
    """Return ``name`` if it can name a store partition, else raise ConfigError."""
    if not isinstance(name, str) or not is_model_name(name):
        raise ConfigError(
            f"model name {name!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it names a directory in the store)"
        )
    return name


_BOOLS = ("enabled", "tracing", "otlp", "nest_spans", "span_payload", "metrics")
_FLOATS = (
    "sample_rate",
    "block_timeout_s",
    "flush_interval_s",
    "segment_max_age_s",
    "shutdown_timeout_s",
    "max_spans_per_s",
)

_ENV_KIND = {
    **{n: "1/0, true/false, yes/no or on/off" for n in _BOOLS},
    **{
        n: "an integer"
        for n in ("max_queue_size", "segment_max_rows", "segment_max_bytes", "row_group_size", "max_value_bytes")
    },
    **{n: "a number" for n in _FLOATS},
}


def _parse_env(name: str, raw: str) -> Any:
    """Parse one env value into the field's type; raise ValueError if it does not parse."""
    if name in _BOOLS:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if name in ("max_queue_size", "segment_max_rows", "segment_max_bytes", "row_group_size", "max_value_bytes"):
        return int(raw)
    if name in _FLOATS:
        return float(raw)
    if name == "hash_key":
        return raw.encode()
    if name in ("on_full", "cpu_time"):
        return raw.strip().lower()
    return raw


def _check(cfg: Config) -> None:
    def positive(name: str, value: float, *, integer: bool = False) -> None:
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
            raise ConfigError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")

    if not isinstance(cfg.store, (str, os.PathLike)) or not str(cfg.store):
        raise ConfigError(f"store must be a directory path, got {cfg.store!r}")
    if cfg.model is not None:
        validate_model_name(cfg.model)
    if not isinstance(cfg.version, str) or not cfg.version:
        raise ConfigError(f"version must be a non-empty string, got {cfg.version!r}")
    for name in _BOOLS:
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"{name} must be True or False, got {getattr(cfg, name)!r}")
    check_sample_rate(cfg.sample_rate)
    for name in ("max_queue_size", "segment_max_rows", "segment_max_bytes", "row_group_size", "max_value_bytes"):
        positive(name, getattr(cfg, name), integer=True)
    for name in ("block_timeout_s", "flush_interval_s", "segment_max_age_s", "shutdown_timeout_s", "max_spans_per_s"):
        positive(name, getattr(cfg, name))
    if not math.isfinite(cfg.max_spans_per_s):
        raise ConfigError(f"max_spans_per_s must be a finite number, got {cfg.max_spans_per_s!r}")
    if cfg.on_full not in ("drop", "block"):
        raise ConfigError(f"on_full must be 'drop' or 'block', got {cfg.on_full!r}")
    if cfg.cpu_time not in ("auto", "always", "never"):
        raise ConfigError(f"cpu_time must be 'auto', 'always' or 'never', got {cfg.cpu_time!r}")
    for name in ("drop_fields", "hash_fields", "redact"):
        for item in getattr(cfg, name):
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{name} takes non-empty strings, got {item!r}")
    for path in cfg.drop_fields + cfg.hash_fields:
        head = path.split(".", 1)[0]
        if head not in _PATH_ROOTS:
            raise ConfigError(
                f"field path {path!r} must start with one of {sorted(_PATH_ROOTS)}, e.g. 'features.email'"
            )
    if cfg.hash_fields and not cfg.hash_key:
        raise ConfigError(
            "hash_fields needs a key: pass hash_key=... or set PREDLOG_HASH_KEY "
            "(keep it secret and stable, or hashed ids stop matching)"
        )
    if cfg.tracer_provider is not None and not callable(getattr(cfg.tracer_provider, "get_tracer", None)):
        raise ConfigError(f"tracer_provider must be an OpenTelemetry TracerProvider, got {cfg.tracer_provider!r}")
    if cfg.meter_provider is not None and not callable(getattr(cfg.meter_provider, "get_meter", None)):
        raise ConfigError(f"meter_provider must be an OpenTelemetry MeterProvider, got {cfg.meter_provider!r}")
    for proc in cfg.processors:
        if not callable(proc):
            raise ConfigError(f"processors must be callables row -> row | None, got {proc!r}")


# Columns a dotted path may start with (processors act on these).
_PATH_ROOTS = frozenset(
    {"features", "context", "prediction", "user_id", "request_id", "error_message", "model_version"}
)


def check_sample_rate(rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ConfigError(f"sample_rate must be a number in [0, 1], got {rate!r}")
    return float(rate)


def _as_tuple(name: str, value: Any) -> Any:
    if name in ("drop_fields", "hash_fields", "redact", "processors"):
        if isinstance(value, (str, bytes)) or callable(value):
            return (value,)
        if isinstance(value, Sequence) or isinstance(value, (set, frozenset)):
            return tuple(value)
        raise ConfigError(f"{name} must be a sequence, got {value!r}")
    if name == "hash_key" and isinstance(value, str):
        return value.encode()
    if name == "store" and isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def resolve_config(args: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from explicit arguments, then ``PREDLOG_*`` variables, then defaults.

    A bad argument raises ConfigError; a bad environment value logs a warning and falls back
    to the default, so a typo in a deployment never stops a server from starting.
    """
    env = os.environ if env is None else env
    unknown = set(args) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"unknown configuration argument(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, var in ENV_VARS.items():
        if name in args or var not in env:
            continue
        try:
            parsed = _parse_env(name, env[var])
            _check(dataclasses.replace(Config(), **{name: parsed}) if name != "hash_key" else Config())
        except (ValueError, ConfigError) as exc:
            reason = str(exc) if isinstance(exc, ConfigError) else f"expected {_ENV_KIND.get(name, 'text')}"
            logger.warning(
                "predlog: ignoring %s=%r: %s; using the default %r", var, env[var], reason, getattr(Config(), name)
            )
            continue
        values[name] = parsed
    for name, value in args.items():
        values[name] = _as_tuple(name, value)
    try:
        cfg = Config(**values)
    except TypeError as exc:  # pragma: no cover - guarded by the unknown-name check
        raise ConfigError(str(exc)) from None
    _check(cfg)
    return cfg
