"""The store's layout on disk: every directory and file name of the store format, in one place.

::

    <store>/predlog.json                                            {"format": 2}
    <store>/predictions/model=<name>/date=<YYYY-MM-DD>/<host>-<pid>-<rand>-<n>.parquet
    <store>/labels/date=<YYYY-MM-DD>/<host>-<pid>-<rand>-<n>.parquet
    <store>/_wal/<host>-<pid>-<rand>.arrows                        live write-ahead segments
    <store>/_maintenance/<op-id>.json                               maintenance in progress
    <store>/events/date=<YYYY-MM-DD>/<host>-<pid>-<rand>-<n>.json   canary events, one per file

The writer, the sealer, live reading, maintenance, the command line and ``Store.stats`` all
name and parse paths through this module (docs/store-format.md is the specification).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
from collections.abc import Iterable, Iterator

__all__ = [
    "DATE_KEY",
    "EVENTS",
    "EVENT_SUFFIX",
    "FORMAT_VERSION",
    "HOST",
    "LABELS",
    "MAINTENANCE",
    "MARKER",
    "MODEL_KEY",
    "PREDICTIONS",
    "SEGMENT_SUFFIX",
    "WAL_DIR",
    "date_of",
    "event_dir",
    "event_name",
    "event_paths",
    "in_range",
    "is_model_name",
    "label_dir",
    "list_partition_values",
    "marker_format",
    "model_of",
    "parquet_names",
    "prediction_dir",
    "sealed_name",
    "segment_name",
    "segment_paths",
    "segment_stem",
    "stem_of",
    "wal_dir",
]

FORMAT_VERSION = 2
MARKER = "predlog.json"
PREDICTIONS = "predictions"
LABELS = "labels"
WAL_DIR = "_wal"
MAINTENANCE = "_maintenance"
EVENTS = "events"
EVENT_SUFFIX = ".json"
SEGMENT_SUFFIX = ".arrows"
PARQUET_SUFFIX = ".parquet"
MODEL_KEY = "model"
DATE_KEY = "date"

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HOST = "".join(c if c.isalnum() or c in "-." else "_" for c in socket.gethostname())[:64] or "host"
"""This host's name as file names carry it (letters, digits, ``-``, ``.``; others as ``_``)."""


def is_model_name(name: object) -> bool:
    """Whether ``name`` can name a model partition: 1-128 letters, digits, ``.``, ``_``, ``-``."""
    return isinstance(name, str) and _MODEL_NAME.fullmatch(name) is not None


def marker_format(root: str) -> int:
    """The format the store's ``predlog.json`` names; 0 when there is none (or it cannot be read)."""
    try:
        with open(os.path.join(root, MARKER), encoding="utf-8") as f:
            return int(json.load(f).get("format", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


# ---------------------------------------------------------------- write-ahead segments


def wal_dir(root: str) -> str:
    return os.path.join(root, WAL_DIR)


def segment_name() -> str:
    """A segment file name unique across hosts, processes and time: host-pid-random."""
    return f"{HOST}-{os.getpid()}-{os.urandom(8).hex()}{SEGMENT_SUFFIX}"


def segment_stem(path: str) -> str:
    """``host-pid-rand`` of a segment path (the stem its Parquet files are named after)."""
    name = os.path.basename(path)
    return name[: -len(SEGMENT_SUFFIX)] if name.endswith(SEGMENT_SUFFIX) else name


def segment_paths(root: str) -> list[str]:
    """The segments in ``_wal/``, sorted (symlinks left out: the store holds regular files)."""
    directory = wal_dir(root)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [
        os.path.join(directory, n)
        for n in names
        if n.endswith(SEGMENT_SUFFIX) and not os.path.islink(os.path.join(directory, n))
    ]


def sealed_name(stem: str, n: int) -> str:
    """The name of the ``n``-th Parquet file sealed from the segment ``stem``."""
    return f"{stem}-{n}{PARQUET_SUFFIX}"


def stem_of(parquet_name: str) -> str | None:
    """The segment stem a Parquet file was sealed from (``<stem>-<n>.parquet``), or None when
    the name is not one the sealer writes (maintenance output, say)."""
    base = os.path.basename(parquet_name)
    if not base.endswith(PARQUET_SUFFIX):
        return None
    stem, sep, n = base[: -len(PARQUET_SUFFIX)].rpartition("-")
    return stem if sep and n.isdigit() else None


# ---------------------------------------------------------------- partitions


def prediction_dir(root: str, model: str, date: str) -> str:
    return os.path.join(root, PREDICTIONS, f"{MODEL_KEY}={model}", f"{DATE_KEY}={date}")


def label_dir(root: str, date: str) -> str:
    return os.path.join(root, LABELS, f"{DATE_KEY}={date}")


def _value(part: str, key: str) -> str | None:
    prefix = key + "="
    return part[len(prefix) :] if part.startswith(prefix) else None


def model_of(path: str) -> str | None:
    """The model of a prediction file or partition directory, from its ``model=`` part."""
    for part in reversed(os.path.normpath(path).split(os.sep)):
        found = _value(part, MODEL_KEY)
        if found is not None:
            return found
    return None


def date_of(path: str) -> dt.date | None:
    """The UTC date of a file or partition directory, from its ``date=`` part."""
    for part in reversed(os.path.normpath(path).split(os.sep)):
        found = _value(part, DATE_KEY)
        if found is not None:
            try:
                return dt.date.fromisoformat(found)
            except ValueError:
                return None
    return None


def list_partition_values(directory: str, key: str) -> list[str]:
    """The values of the ``key=<value>`` subdirectories of ``directory``, sorted."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(v for n in names if (v := _value(n, key)) is not None)


def parquet_names(directory: str) -> Iterator[str]:
    """The visible Parquet files of a partition directory (hidden temporary files and
    symlinks, which could point outside the store, are left out)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if (
            name.endswith(PARQUET_SUFFIX)
            and not name.startswith(".")
            and not os.path.islink(os.path.join(directory, name))
        ):
            yield name


def in_range(dates: Iterable[str], start: dt.date | None, end: dt.date | None) -> list[str]:
    """The ISO dates among ``dates`` within ``[start, end]`` (unreadable ones left out)."""
    out = []
    for text in dates:
        try:
            d = dt.date.fromisoformat(text)
        except ValueError:
            continue
        if (start is None or d >= start) and (end is None or d <= end):
            out.append(text)
    return out


# ---------------------------------------------------------------- events


def event_dir(root: str, date: str) -> str:
    return os.path.join(root, EVENTS, f"{DATE_KEY}={date}")


def event_name(rand: str, n: int) -> str:
    """The name of this process's ``n``-th event file; ``rand`` tells its event logs apart."""
    return f"{HOST}-{os.getpid()}-{rand}-{n}{EVENT_SUFFIX}"


def event_paths(root: str, start: dt.date | None = None, end: dt.date | None = None) -> list[str]:
    """The event files of the dates within ``[start, end]``, sorted by path (hidden temporary
    files and symlinks left out)."""
    base = os.path.join(root, EVENTS)
    out: list[str] = []
    for date in in_range(list_partition_values(base, DATE_KEY), start, end):
        directory = event_dir(root, date)
        try:
            names = sorted(os.listdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        out.extend(
            os.path.join(directory, n)
            for n in names
            if n.endswith(EVENT_SUFFIX) and not n.startswith(".") and not os.path.islink(os.path.join(directory, n))
        )
    return out
