"""Which Parquet files make up a store right now.

Readers list files themselves instead of globbing, so that maintenance (compaction, erasure)
can swap many files at once without a reader ever seeing a row twice or not at all.

A maintenance operation publishes a manifest ``<store>/_maintenance/<op-id>.json``::

    {"op": "compact", "replaces": ["predictions/model=m/date=d/a.parquet", ...],
     "by": ["predictions/model=m/date=d/compact-<id>-0.parquet", ...], "created": 1764000000.0}

Paths are relative to the store, with ``/`` separators. The operation writes its new files
under hidden temporary names, writes the manifest (fsynced), renames the new files into place,
deletes the replaced files, then deletes the manifest. The rule for readers follows:

- while some file of ``by`` is missing, the operation is not published: the ``by`` files that
  already exist are hidden and the ``replaces`` files are visible;
- once every file of ``by`` exists (always, when ``by`` is empty), it is published: the
  ``replaces`` files are hidden even though they may still exist.

A reader lists the directories first, then reads the manifests, and judges "exists" from
its listing (not from the disk at the time it reads the manifests): otherwise a listing
taken just before the new files were renamed in, judged just after, would hide the old
files and show no new ones. For the same reason each manifest covers one partition
directory (listed in one ``listdir``), or has no ``by`` files at all.

So at every instant a reader sees either the old files or the new ones. A reader that listed
files just before the replaced files were deleted may fail to open one; the query layer
re-lists and retries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from collections.abc import Iterable, Iterator

from predlog._layout import (
    DATE_KEY,
    LABELS,
    MAINTENANCE,
    MODEL_KEY,
    PREDICTIONS,
    in_range,
    list_partition_values,
    parquet_names,
)

logger = logging.getLogger("predlog")


__all__ = ["Manifest", "label_files", "manifests", "models", "prediction_files", "visible"]


@dataclasses.dataclass(frozen=True)
class Manifest:
    path: str
    op: str
    replaces: tuple[str, ...]
    by: tuple[str, ...]
    created: float

    def published(self, root: str) -> bool:
        return all(os.path.exists(os.path.join(root, p)) for p in self.by)


def manifests(root: str) -> list[Manifest]:
    """The maintenance operations in flight (or interrupted) in the store at ``root``."""
    d = os.path.join(root, MAINTENANCE)
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        path = os.path.join(d, name)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            out.append(
                Manifest(
                    path=path,
                    op=str(doc["op"]),
                    replaces=tuple(doc["replaces"]),
                    by=tuple(doc["by"]),
                    created=float(doc.get("created", 0.0)),
                )
            )
        except FileNotFoundError:  # finished while we listed
            continue
        except (ValueError, KeyError, TypeError) as exc:
            # Written by tmp + rename, so never partial; a damaged one is left for a human.
            logger.warning("predlog: ignoring unreadable maintenance manifest %s: %s", path, exc)
    return out


def _hidden(root: str, listed: set[str]) -> set[str]:
    hidden: set[str] = set()
    for m in manifests(root):
        # Published as of the listing, not as of now: a listing taken before the new files
        # were renamed into place must keep the old ones, though the operation may have
        # published since (it then hides nothing new: its new files are not listed).
        published = all(p in listed for p in m.by)
        hidden.update(m.replaces if published else m.by)
    return hidden


def visible(root: str, rel_paths: Iterable[str]) -> list[str]:
    """``rel_paths`` minus those hidden by maintenance manifests, as absolute paths, sorted.

    ``rel_paths`` must be a listing of the directories involved taken *before* this call
    reads the manifests: whether an operation is published is judged from that listing, so
    the answer matches the moment of the listing (an operation's manifest always covers one
    partition directory, or replaces files without new ones).
    """
    rel = list(rel_paths)
    hidden = _hidden(root, set(rel))
    return sorted(os.path.join(root, p) for p in rel if p not in hidden)


def _parquet_under(root: str, rel_dir: str) -> Iterator[str]:
    for name in parquet_names(os.path.join(root, rel_dir)):
        yield f"{rel_dir}/{name}"


def models(root: str) -> list[str]:
    """Model names that have a partition in the store."""
    return list_partition_values(os.path.join(root, PREDICTIONS), MODEL_KEY)


def prediction_files(
    root: str,
    models_: Iterable[str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> list[str]:
    """Visible prediction files, pruned by model and by UTC date partition (inclusive)."""
    names = models(root) if models_ is None else list(models_)
    rel: list[str] = []
    for m in names:
        base = f"{PREDICTIONS}/{MODEL_KEY}={m}"
        for date in in_range(list_partition_values(os.path.join(root, base), DATE_KEY), start, end):
            rel.extend(_parquet_under(root, f"{base}/{DATE_KEY}={date}"))
    return visible(root, rel)


def label_files(root: str) -> list[str]:
    """Visible label files."""
    rel: list[str] = []
    for date in list_partition_values(os.path.join(root, LABELS), DATE_KEY):
        rel.extend(_parquet_under(root, f"{LABELS}/{DATE_KEY}={date}"))
    return visible(root, rel)
