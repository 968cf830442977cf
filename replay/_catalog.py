"""Which files and live tables a query reads, and what their Parquet footers say.

Every query lists the store again (writers seal new files, maintenance swaps them) and builds
its :class:`~._views.Snapshot` here: the prediction and label files of the selection's
models and UTC date partitions, grouped by what DuckDB can read together, plus the rows of
live write-ahead segments for ``include_live``. Footers are read once per file and cached
while the file is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from predlog._layout import date_of, model_of
from predlog._processors import HASHED_KEY

from . import _files
from ._live import live_tables, read_live
from ._selection import Selection
from ._shapes import NULL, fields_of, schema_shape
from ._views import (
    KEYS,
    LABEL_HIVE,
    PREDICTION_HIVE,
    Footer,
    Snapshot,
    Source,
    group_files,
    label_family,
    labels_view,
    predictions_view,
    read_footer,
    view_shape,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Catalog"]

_HIVE_PREDICTIONS = "{'model': 'VARCHAR', 'date': 'DATE'}"
_HIVE_LABELS = "{'date': 'DATE'}"


class Catalog:
    """The files of one store, listed per query; their footers, cached. Thread-safe."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._footers: dict[str, Footer] = {}
        self._live_seq = 0

    def footer(self, path: str) -> Footer:
        """What the footer of one Parquet file says (cached while the file is unchanged)."""
        st = os.stat(path)
        cached = self._footers.get(path)
        if cached is not None and cached.mtime_ns == st.st_mtime_ns and cached.size == st.st_size:
            return cached
        footer = read_footer(path, st)
        self._footers[path] = footer
        return footer

    def _prune_footer_cache(self, keep: int) -> None:
        if len(self._footers) > 2 * keep + 1024:
            for path in list(self._footers):
                if not os.path.exists(path):
                    self._footers.pop(path, None)

    def _parquet_sources(self, files: list[str], *, labels: bool = False) -> list[Source]:
        hive = LABEL_HIVE if labels else PREDICTION_HIVE
        types = _HIVE_LABELS if labels else _HIVE_PREDICTIONS
        footers = [(f, self.footer(f)) for f in files]
        out = []
        # Label files of different label types are never read as one group (no widening).
        families = sorted({ft.label_family for _, ft in footers}) if labels else [""]
        for family in families:
            items = [(f, ft.shape) for f, ft in footers if not labels or ft.label_family == family]
            keys = {f: ft.keys for f, ft in footers}
            for raw, paths in group_files(items):
                held = frozenset().union(*(keys[f] for f in paths)) if labels else KEYS
                out.append(Source(view_shape(raw, hive=hive), paths, types, family=family, raw=raw, keys=held))
        return out

    def _live_sources(self, tables: list[pa.Table], *, labels: bool = False) -> list[Source]:
        out = []
        for t in tables:
            with self._lock:
                self._live_seq += 1
                name = f"_predlog_live_{self._live_seq}"
            raw = schema_shape(t.schema)
            family = label_family(t.schema.field("label").type) if labels and "label" in t.column_names else ""
            held = frozenset(k for k in KEYS if k in t.column_names and t.column(k).null_count < t.num_rows)
            keys = held if labels else KEYS
            out.append(Source(view_shape(raw, live=True), table=t, name=name, family=family, raw=raw, keys=keys))
        return out

    def snapshot(
        self,
        sel: Selection,
        *,
        predictions: bool = True,
        labels: bool = False,
        label_lo: dt.datetime | None = None,
        dates: tuple[dt.date | None, dt.date | None] | None = None,
    ) -> Snapshot:
        """The views of one query, from one listing of the store (see _views)."""

        models = list(sel.model) if sel.model else None
        # Live segments first, Parquet second: see _live for why this order loses no row.
        segments = read_live(self.root, models) if sel.include_live else []
        d0, d1 = dates if dates is not None else sel.dates
        views = {}
        pfiles = _files.prediction_files(self.root, models, d0, d1) if predictions else []
        if sel.version is not None:
            # Files of other versions only: left out, so that a model whose output changed
            # between versions (a number, then a vector) reads with one version's natural type.
            wanted = set(sel.version)
            pfiles = [f for f in pfiles if (v := self.footer(f).versions) is None or v & wanted]
        lfiles = _files.label_files(self.root) if labels else []
        if labels and label_lo is not None:
            # Labels come after their predictions; a day of slack covers clocks of other hosts.
            first = (label_lo - dt.timedelta(days=1)).date()
            lfiles = [f for f in lfiles if (d := date_of(f)) is None or d >= first]
        live_p, live_l = live_tables(segments, pfiles, lfiles) if segments else ([], [])
        if sel.version is not None and live_p:
            live_p = _of_versions(live_p, sel.version)  # as for the files: this version's types only
        hashed: set[str] = set()
        label_sources: list[Source] = []
        if predictions:
            sources = self._parquet_sources(pfiles) + self._live_sources(live_p)
            if not sources:
                # No rows in range: borrow a schema from the same models' other files, if any.
                others = _files.prediction_files(self.root, models) if (d0 or d1) else []
                if others:
                    sources = [dataclasses.replace(s, empty=True) for s in self._parquet_sources(others[-1:])]
            views["predictions"] = predictions_view(sources, replays=sel.replays)
            for f in pfiles:
                hashed |= self.footer(f).hashed
            for t in live_p:
                hashed |= _table_hashed(t)
        if labels:
            label_sources = self._parquet_sources(lfiles, labels=True) + self._live_sources(live_l, labels=True)
            views["labels"] = labels_view(label_sources)
        self._prune_footer_cache(len(pfiles) + len(lfiles))
        return Snapshot(views, label_sources, frozenset(hashed))

    def model_features(self, snap: Snapshot) -> dict[str, set[str]]:
        """Feature names per model, from the footers of the files read (live tables included)."""
        own: dict[str, set[str]] = {}
        for src in snap.views["predictions"].sources:
            if src.table is not None:
                feats = set(fields_of(fields_of(src.raw).get("features", NULL)))
                models = set(src.table.column("model").to_pylist()) if "model" in src.table.column_names else set()
                for m in models:
                    own.setdefault(str(m), set()).update(feats)
                continue
            for f in src.files:
                with contextlib.suppress(OSError):
                    feats = set(fields_of(fields_of(self.footer(f).shape).get("features", NULL)))
                    own.setdefault(model_of(f) or "", set()).update(feats)
        return own


def _of_versions(tables: list[pa.Table], versions: Sequence[str]) -> list[pa.Table]:
    """The rows of ``versions`` in live prediction tables; tables left without a row dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pa.array(sorted(set(versions)), pa.string())
    out = []
    for t in tables:
        if "model_version" in t.column_names:
            t = t.filter(pc.is_in(t.column("model_version"), value_set=wanted))
        if t.num_rows:
            out.append(t)
    return out


def _table_hashed(t: pa.Table) -> set[str]:
    raw = (t.schema.metadata or {}).get(HASHED_KEY)
    if not raw:
        return set()
    with contextlib.suppress(ValueError, TypeError):
        return {str(p) for p in json.loads(raw)}
    return set()
