"""Quantile bins of number fields, for grouping rows by a field's value range.

Error correlation, error slices and fairness audits group rows by the value of a field: a
category is its own group, a number falls in one of a few quantile bins. :func:`edges` finds
the cut points of every number field in one aggregate over a relation; :func:`bin_sql` is the
SQL of a row's bin index (NULL for a missing value: null, NaN or ±inf); :func:`bin_label`
names a bin as a person reads it (``"[31.5, 42)"``).

Cut points are ``quantile_disc`` at ``i / bins`` (values that occur in the data, so a bin's
bounds are real values), deduplicated: a field with few distinct values gets fewer bins, and
a field whose distinct values are no more than ``bins`` gets one bin per value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from predlog.replay._shapes import ident

from ._summary import finite

if TYPE_CHECKING:
    import duckdb

__all__ = ["SAMPLE_ROWS", "bin_label", "bin_sql", "check_bins", "edges"]

SAMPLE_ROWS = 200_000
"""Cut points come from a uniform sample of this many rows (every row when there are fewer)."""


def check_bins(bins: object) -> int:
    """``bins`` as an int, or a ValueError: the number of quantile bins, at least 2."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins must be an integer of at least 2, got {bins!r}")
    return int(bins)


def edges(rel: duckdb.DuckDBPyRelation, paths: Sequence[str], bins: int, rows: int) -> dict[str, list[float]]:
    """The cut points of each number field in ``paths`` (columns of ``rel``, which has ``rows``
    rows), in one pass over all rows, or over a uniform sample of about :data:`SAMPLE_ROWS`
    rows when there are more (DuckDB's ``system`` sampling: whole vectors of 2,048 rows;
    seeded, so the same rows give the same bins). Bins only group rows: every count within a
    bin is exact either way.

    The cut points are the field's ``quantile_disc`` points at ``1 / bins`` …
    ``(bins - 1) / bins``, deduplicated, without the smallest value (nothing is below it). A
    field with at most ``bins`` distinct values gets one bin per value; a field whose
    smallest value holds a quantile (a heavy minimum: zero-inflated counts, a 0/1 flag with
    few ones) gets that value as a bin of its own.
    """
    bins = check_bins(bins)
    if not paths:
        return {}
    qs = ", ".join(repr(i / bins) for i in range(1, bins))
    aggs = []
    for p in paths:
        x = f"CAST({ident(p)} AS DOUBLE)"
        ok = f"{ident(p)} IS NOT NULL AND {finite(x)}"
        aggs.append(f"quantile_disc({x}, [{qs}]) FILTER ({ok})")
        aggs.append(f"min({x}) FILTER ({ok})")
    source = "r"
    if rows > SAMPLE_ROWS:
        source = f"(SELECT * FROM r USING SAMPLE {100.0 * SAMPLE_ROWS / rows!r}% (system, 7))"
    sampled = rel.query("r", f"SELECT {', '.join(aggs)} FROM {source}")
    assert sampled is not None  # a SELECT always gives a relation
    row = sampled.fetchall()[0]
    out: dict[str, list[float]] = {}
    tied: list[str] = []
    for i, p in enumerate(paths):
        quantiles, lo = row[2 * i], row[2 * i + 1]
        cuts = {float(v) for v in quantiles or [] if v is not None and math.isfinite(v)}
        out[p] = sorted(c for c in cuts if lo is None or c > lo)
        if lo is not None and (float(lo) in cuts or len(out[p]) < bins - 1):
            tied.append(p)
    if tied:  # few distinct values, or a heavy minimum: the smallest values decide
        firsts = []
        for p in tied:
            x = f"CAST({ident(p)} AS DOUBLE)"
            ok = f"{ident(p)} IS NOT NULL AND {finite(x)}"
            firsts.append(f"list_sort(list_distinct(list({x}) FILTER ({ok})))[1:{bins + 1}]")
        got = rel.query("r", f"SELECT {', '.join(firsts)} FROM {source}")
        assert got is not None
        for p, smallest in zip(tied, got.fetchall()[0], strict=True):
            values = [float(v) for v in smallest or []]
            if len(values) <= bins:
                out[p] = values[1:]  # one bin per value
            elif len(values) > 1:
                out[p] = sorted(set(out[p]) | {values[1]})  # the minimum alone in the first bin
    return out


def bin_sql(path: str, cuts: Sequence[float]) -> str:
    """SQL of the bin index of ``path`` (0 … len(cuts)): bin ``i`` holds ``cuts[i-1] <= x < cuts[i]``."""
    x = f"CAST({ident(path)} AS DOUBLE)"
    if not cuts:
        return f"CASE WHEN {ident(path)} IS NOT NULL AND {finite(x)} THEN 0 END"
    arms = " ".join(f"WHEN {x} < {c!r} THEN {i}" for i, c in enumerate(cuts))
    return f"CASE WHEN {ident(path)} IS NULL OR NOT {finite(x)} THEN NULL {arms} ELSE {len(cuts)} END"


def bin_label(cuts: Sequence[float], index: int, lo: float | None = None, hi: float | None = None) -> str:
    """``"[a, b)"`` for bin ``index`` (``"< b"`` and ``">= a"`` at the ends, unless the field's
    smallest and largest values ``lo`` and ``hi`` are given; ``"= a"`` for a bin of one value).

    Numbers have 4 significant digits, or as many more as it takes to tell every cut point
    (and ``lo``, ``hi``) apart: two bins never share a name.
    """
    num = _formatter([*cuts, *(v for v in (lo, hi) if v is not None)])
    a = cuts[index - 1] if index > 0 else lo
    b = cuts[index] if index < len(cuts) else None
    if a is not None and b is None and hi is not None and hi == a:
        return f"= {num(a)}"
    if a is None and b is None:
        return "all values"
    if a is None:
        return f"< {num(b)}"  # type: ignore[arg-type]
    if b is None:
        return f">= {num(a)}" if hi is None else f"[{num(a)}, {num(hi)}]"
    return f"[{num(a)}, {num(b)})"


def _formatter(values: Sequence[float]) -> Callable[[float], str]:
    """``format(x, ".{d}g")`` with the fewest digits ``d`` >= 4 that keep ``values`` distinct."""
    distinct = set(values)
    for digits in range(4, 18):
        if len({f"{v:.{digits}g}" for v in distinct}) == len(distinct):
            break
    return lambda x: f"{x:.{digits}g}"
