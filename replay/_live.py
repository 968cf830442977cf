"""Rows still in live write-ahead segments (``<store>/_wal/*.arrows``), for ``include_live=True``.

A segment being sealed has Parquet files named ``<segment-stem>-<n>.parquet`` while it still
exists. Reading the segments *before* listing the Parquet files, then removing from a segment's
rows those already present in the Parquet files sealed from it, shows every row exactly once:

- a segment sealed and deleted before we read it: its rows are all in Parquet, listed after;
- a segment sealed between our read and our listing: its rows are removed from the live part;
- a segment half sealed: rows in the files written so far come from Parquet, the rest live.

Skipping a segment as soon as one of its Parquet files exists would lose the rows of the files
not yet written (a segment spanning several models or days is sealed into several files).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from predlog._layout import segment_paths, segment_stem, stem_of
from predlog._segment import KIND_LABELS, KIND_PREDICTIONS, read_segment

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["LiveSegment", "live_tables", "read_live"]


@dataclasses.dataclass
class LiveSegment:
    """What one live segment holds right now."""

    stem: str
    path: str
    predictions: list[pa.Table]
    labels: list[pa.Table]


def read_live(root: str, models: Collection[str] | None = None) -> list[LiveSegment]:
    """Read every live segment of the store; prediction rows restricted to ``models``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = []
    wanted = None if models is None else pa.array(sorted(models), pa.string())
    for path in segment_paths(root):
        try:
            contents = read_segment(path)
        except (FileNotFoundError, ValueError):
            continue  # sealed and deleted since the listing: its rows are in Parquet now
        preds: list[pa.Table] = []
        labels: list[pa.Table] = []
        for kind, table in contents.tables:
            if table.num_rows == 0:
                continue
            if kind == KIND_PREDICTIONS:
                if wanted is not None and "model" in table.column_names:
                    table = table.filter(pc.is_in(table.column("model"), value_set=wanted))
                    if table.num_rows == 0:
                        continue
                preds.append(table)
            elif kind == KIND_LABELS:
                labels.append(table)
        out.append(LiveSegment(segment_stem(path), path, preds, labels))
    return out


def sealed_from(stem: str, files: Iterable[str]) -> list[str]:
    """The Parquet files among ``files`` sealed from the segment ``stem`` (``<stem>-<n>.parquet``)."""
    return [f for f in files if stem_of(f) == stem]


def _label_key_table(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    n = table.num_rows
    cols = {}
    for name, typ in (("prediction_id", pa.string()), ("request_id", pa.string())):
        col = table.column(name) if name in table.column_names else pa.nulls(n, typ)
        cols[name] = col.cast(pa.string()).fill_null("\x00")
    ts = table.column("ts") if "ts" in table.column_names else pa.nulls(n, pa.timestamp("us", tz="UTC"))
    cols["ts"] = ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).fill_null(-1)
    return pa.table(cols)


def _dedupe_predictions(tables: list[pa.Table], sealed: list[str]) -> list[pa.Table]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not sealed:
        return tables
    ids = pa.concat_arrays(
        [
            pq.read_table(f, columns=["prediction_id"]).column("prediction_id").combine_chunks().cast(pa.string())
            for f in sealed
        ]
    )
    out = []
    for t in tables:
        t = t.filter(pc.invert(pc.is_in(t.column("prediction_id"), value_set=ids)))
        if t.num_rows:
            out.append(t)
    return out


def _dedupe_labels(tables: list[pa.Table], sealed: list[str]) -> list[pa.Table]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not sealed:
        return tables
    keys: set[tuple[str, str, int]] = set()
    for f in sealed:
        pf = pq.ParquetFile(f)
        cols = [c for c in ("prediction_id", "request_id", "ts") if c in pf.schema_arrow.names]
        k = _label_key_table(pf.read(columns=cols))
        keys.update(zip(*(k.column(c).to_pylist() for c in ("prediction_id", "request_id", "ts"))))
    out = []
    for t in tables:
        k = _label_key_table(t)
        rows = zip(*(k.column(c).to_pylist() for c in ("prediction_id", "request_id", "ts")))
        mask = pa.array([key not in keys for key in rows], pa.bool_())
        t = t.filter(mask)
        if t.num_rows:
            out.append(t)
    return out


def _by_schema(tables: Iterable[pa.Table]) -> list[pa.Table]:
    """Concatenate tables of identical schema (a writer's frames usually share one)."""
    import pyarrow as pa

    groups: list[tuple[pa.Schema, list[pa.Table]]] = []
    for t in tables:
        t = t.replace_schema_metadata(None)
        for schema, members in groups:
            if schema.equals(t.schema):
                members.append(t)
                break
        else:
            groups.append((t.schema, [t]))
    return [pa.concat_tables(members) for _, members in groups]


def live_tables(
    segments: list[LiveSegment],
    prediction_files: list[str],
    label_files: list[str],
) -> tuple[list[pa.Table], list[pa.Table]]:
    """Live prediction and label tables without the rows already sealed into the listed files.

    ``prediction_files`` and ``label_files`` must be listed *after* the segments were read.
    Returns one table per distinct schema, for predictions and for labels.
    """
    preds: list[pa.Table] = []
    labels: list[pa.Table] = []
    for seg in segments:
        preds.extend(_dedupe_predictions(seg.predictions, sealed_from(seg.stem, prediction_files)))
        labels.extend(_dedupe_labels(seg.labels, sealed_from(seg.stem, label_files)))
    return _by_schema(preds), _by_schema(labels)
