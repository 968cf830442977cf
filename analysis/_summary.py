"""What one side of a comparison holds of one column, computed in DuckDB.

A :class:`Numbers` summary is the column's distribution as sorted distinct values with the
weight of each (its count, or the sum of ``1 / sample_rate`` over its rows when the side's
rows were sampled at different rates): from it every statistic of :mod:`._stats` follows
exactly. Past ``exact_limit`` values it is a sketch instead: the exact ECDF at about
``sketch_points`` evenly spaced ranks, so any ECDF read from it is off by at most
``1 / sketch_points`` (see :attr:`Numbers.ecdf_error`).

A :class:`Categories` summary is the weight of each category. Both know how many rows had
no value (null, or NaN for floats): ``missing``.

The SQL here only aggregates a relation it is given (a store selection from
``Store.relation``, or a DataFrame): it never filters rows.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from predlog.replay._shapes import ident

if TYPE_CHECKING:
    import duckdb
    from duckdb.sqltypes import DuckDBPyType

__all__ = [
    "EXACT_LIMIT",
    "KEPT_CATEGORIES",
    "MAX_CATEGORIES",
    "NO_VALUE",
    "OTHER",
    "SKETCH_POINTS",
    "Categories",
    "Field",
    "Numbers",
    "Summary",
    "category_table",
    "kind_of",
    "pooled",
    "summarize",
    "vector_fields",
]

EXACT_LIMIT = 10_000_000
"""Above this many values of one column on one side, numbers are summarised by a sketch."""

SKETCH_POINTS = 100_000
"""Points of a sketch: the ECDF read from it is off by at most 1 / SKETCH_POINTS."""

MAX_CATEGORIES = 1_000
"""Categories compared: past this many over both sides, the lightest (by their share on the
two sides together) are pooled under :data:`OTHER` on both sides alike."""

NO_VALUE = "no value on this side"
"""The note of a field whose column has no type on one side: its files never held a value."""

KEPT_CATEGORIES = 100_000
"""Categories one side's summary keeps, heaviest first; the rest are pooled under :data:`OTHER`
(id-like text columns: a bound on memory and on a profile's size)."""

OTHER = "(other)"

_NUMBER_TYPES = frozenset(
    {
        "tinyint",
        "smallint",
        "integer",
        "bigint",
        "hugeint",
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "uhugeint",
        "float",
        "double",
        "decimal",
    }
)
_FLOAT_TYPES = frozenset({"float", "double"})
_CATEGORY_TYPES = frozenset({"varchar", "boolean", "enum"})


@dataclasses.dataclass(frozen=True)
class Field:
    """A column one side can summarise: its dotted path, kind and DuckDB type.

    ``kind`` is ``"number"``, ``"category"`` or None (not compared; ``note`` says why). A
    derived field (the argmax of a probability vector, one of its elements) reads ``source``
    and is the SQL expression ``expr`` over it.
    """

    path: str
    kind: str | None
    dtype: str
    note: str = ""
    source: str | None = None
    expr: str | None = None

    @property
    def floating(self) -> bool:
        return self.dtype.lower() in _FLOAT_TYPES

    @property
    def column(self) -> str:
        """The column a relation of the side must have for this field."""
        return self.source or self.path

    @property
    def sql(self) -> str:
        """The field's value in SQL over that relation."""
        return self.expr or ident(self.path)


def vector_fields(path: str, dtype: str, length: int) -> list[Field]:
    """The fields derived from a probability vector: its argmax and each element."""
    col = ident(path)
    out = [Field(f"{path}.class", "category", "BIGINT", source=path, expr=f"list_position({col}, list_max({col})) - 1")]
    out += [
        Field(f"{path}[{k}]", "number", dtype, source=path, expr=f"CAST({col}[{k + 1}] AS DOUBLE)")
        for k in range(length)
    ]
    return out


def kind_of(dtype: DuckDBPyType) -> tuple[str | None, str]:
    """``("number" | "category" | None, note)`` for a DuckDB column type."""
    tid = str(dtype.id).lower()
    if tid in _NUMBER_TYPES:
        return "number", ""
    if tid in _CATEGORY_TYPES:
        return "category", ""
    if tid in ("list", "array"):
        return None, "a list: not compared (compare one element with a where= or a derived column)"
    if tid in ("map", "union"):
        return None, f"a {tid}: not compared"
    if tid.startswith("timestamp") or tid in ("date", "time", "interval"):
        return None, "a time: not compared (times always move)"
    if tid == "null" or tid == '"null"':
        return None, NO_VALUE
    return None, f"type {dtype}: not compared"


@dataclasses.dataclass(frozen=True, eq=False)
class Numbers:
    """A number column on one side: sorted distinct ``values`` and the ``weights`` at each.

    Attributes:
        values: Sorted distinct values (float64), or a sketch's points (``exact`` False).
        weights: Weight at each value: its count, or the sum of ``1 / sample_rate`` of its rows.
        n: Rows with a value.
        missing: Rows without one (null, NaN).
        n_eff: Effective sample size: ``n`` when every row weighs the same, else Kish's
            ``(sum w)^2 / sum w^2``.
        mean, var: Weighted mean and (unbiased) variance of the values, computed exactly.
        exact: False when ``values`` is a sketch (more than :data:`EXACT_LIMIT` values).
        ecdf_error: How far an ECDF read from this summary can be from the true one: 0 when
            exact, ``1 / points`` for a sketch of ``points`` steps.
    """

    values: np.ndarray
    weights: np.ndarray
    n: int
    missing: int
    n_eff: float
    mean: float
    var: float
    exact: bool = True
    ecdf_error: float = 0.0

    kind = "number"

    @property
    def weighted(self) -> bool:
        return self.n_eff != self.n

    @property
    def total(self) -> float:
        return float(self.weights.sum())

    @property
    def weights_are_counts(self) -> bool:
        """Every value is one row (weights all 1): the summary is the sorted sample itself."""
        return self.exact and not self.weighted and len(self.values) == self.n

    def sample(self) -> np.ndarray:
        """The values as a sample again (only for exact, unweighted summaries)."""
        if not self.exact or self.weighted:
            raise ValueError("only an exact summary of unweighted rows is a sample")
        return np.repeat(self.values, self.weights.astype(np.int64))


@dataclasses.dataclass(frozen=True, eq=False)
class Categories:
    """A category column on one side: the weight of each category.

    Attributes:
        counts: Category → weight, heaviest first (at most :data:`KEPT_CATEGORIES`; the rest
            pooled under :data:`OTHER`).
        n, missing, n_eff: As for :class:`Numbers`.
    """

    counts: dict[Any, float]
    n: int
    missing: int
    n_eff: float

    kind = "category"

    @property
    def weighted(self) -> bool:
        return self.n_eff != self.n

    @property
    def total(self) -> float:
        return float(sum(self.counts.values()))


Summary = Numbers | Categories


def finite(x: str) -> str:
    """SQL: the float ``x`` is a finite number (NaN and ±inf count as missing values).

    Not ``NOT isnan(x)``: DuckDB (2.0.1) folds ``isnan()`` to false from a Parquet column's
    min/max statistics, which writers compute without NaN, and keeps the NaN rows.
    ``isfinite`` is evaluated on every row.
    """
    return f"isfinite({x})"


def _present(col: str, field: Field) -> str:
    return f"{col} IS NOT NULL AND {finite(col)}" if field.floating else f"{col} IS NOT NULL"


RelationOf = Callable[[Sequence[str]], "duckdb.DuckDBPyRelation"]
"""Makes a fresh relation of the side's rows with the columns named (one per thread)."""


def summarize(
    relation_of: RelationOf,
    fields: Sequence[Field],
    *,
    weight: str | None = None,
    weight_columns: Sequence[str] = (),
    rows: int | None = None,
    exact_limit: int | None = None,
    sketch_points: int | None = None,
    threads: int | None = None,
) -> dict[str, Summary]:
    """Summaries of ``fields`` (compared kinds only) over one side's rows.

    ``relation_of(columns)`` makes a relation of the side's rows with those columns, named by
    path (it is called once per field, so that fields are read in parallel on cursors of
    their own). ``weight`` is a SQL expression over ``weight_columns`` giving a row's weight
    (``1.0 / sample_rate``); None means every row weighs 1. Where every row with a value
    weighs the same, the weights are plain counts: shares are the same, and the statistics
    equal their unweighted references exactly.

    A number column comes back as one column (values, and weights when they vary) and is
    sorted in numpy; past ``exact_limit`` values it is sketched in DuckDB instead. A
    category column comes back as its weight per category. ``rows``, the side's row count
    when the caller knows it, saves counting. ``exact_limit`` and ``sketch_points`` default
    to :data:`EXACT_LIMIT` and :data:`SKETCH_POINTS`.
    """
    from concurrent.futures import ThreadPoolExecutor

    fields = [f for f in fields if f.kind is not None]
    if not fields:
        return {}
    if rows is None and any(f.kind == "number" for f in fields):
        rows = int(relation_of([fields[0].column]).aggregate("count(*)").fetchall()[0][0])
    limit = EXACT_LIMIT if exact_limit is None else exact_limit
    points = SKETCH_POINTS if sketch_points is None else sketch_points
    big = rows is not None and rows > limit

    def one(f: Field) -> Summary:
        rel = relation_of([f.column, *weight_columns])
        if f.kind == "category":
            return _categories(rel, f, weight)
        if big:
            return _sketch(rel, f, weight, points)
        assert rows is not None
        return _numbers(rel, f, weight, rows)

    workers = threads or min(4, os.cpu_count() or 1)
    if workers <= 1 or len(fields) == 1:
        return {f.path: one(f) for f in fields}
    with ThreadPoolExecutor(workers, thread_name_prefix="predlog-summary") as pool:
        return dict(zip((f.path for f in fields), pool.map(one, fields), strict=True))


def _query(rel: duckdb.DuckDBPyRelation, sql: str) -> duckdb.DuckDBPyRelation:
    """``sql`` over ``rel``, which it names ``side``."""
    got = rel.query("side", sql)
    assert got is not None  # a SELECT always gives a relation
    return got


def _numbers(rel: duckdb.DuckDBPyRelation, f: Field, weight: str | None, rows: int) -> Numbers:
    """One number column: its values (and weights) without nulls and NaN, sorted in numpy."""
    cols = f"CAST({f.sql} AS DOUBLE) AS v" + (f", {weight} AS w" if weight else "")
    got = _query(rel, f"SELECT {cols} FROM side WHERE {_present(f.sql, f)}").fetchnumpy()
    x = np.asarray(got["v"], dtype=float)
    n = len(x)
    if weight is not None:
        w = np.asarray(got["w"], dtype=float)
        if n and w.min() != w.max():
            order = np.argsort(x, kind="stable")
            x, w = x[order], w[order]
            total = w.sum()
            mean = float(np.sum(w * x) / total)
            q = float(np.sum(w * w))
            denom = total - q / total
            var = float(np.sum(w * (x - mean) ** 2) / denom) if denom > 0 else math.nan
            return Numbers(x, w, n, rows - n, total * total / q, mean, var)
    x.sort()
    mean = float(np.mean(x)) if n else math.nan
    var = float(np.var(x, ddof=1)) if n > 1 else math.nan
    return Numbers(x, np.ones(n), n, rows - n, float(n), mean, var)


def _sketch(rel: duckdb.DuckDBPyRelation, f: Field, weight: str | None, points: int) -> Numbers:
    """The exact ECDF at the values where it crosses each 1/points step (more than EXACT_LIMIT rows)."""
    w = weight or "1.0"
    col, ok = f"CAST({f.sql} AS DOUBLE)", _present(f.sql, f)
    sql = (
        f"SELECT v, w, cum, total, n_rows FROM ("
        f"SELECT v, w, sum(w) OVER (ORDER BY v) AS cum, sum(w) OVER () AS total FROM ("
        f"SELECT {col} AS v, sum({w}) AS w FROM side WHERE {ok} GROUP BY v)), "
        f"(SELECT count(*) AS n_rows FROM side) "
        f"WHERE floor(cum * {points} / total) > floor((cum - w) * {points} / total) OR cum = total ORDER BY v"
    )
    got = _query(rel, sql).fetchnumpy()
    moments = (
        f"SELECT count(*), sum({w}), sum({w} * {w}), sum({w} * {col}) / sum({w}), var_samp({col}) FROM side WHERE {ok}"
    )
    n, s, q, mean, var = _query(rel, moments).fetchall()[0]
    cum = np.asarray(got["cum"], dtype=float)
    values = np.asarray(got["v"], dtype=float)
    weights = np.diff(np.r_[0.0, cum])
    n_rows = int(got["n_rows"][0]) if len(got["n_rows"]) else 0
    uniform = weight is None or abs(float(s) * float(s) / float(q) - int(n)) < 1e-6 * max(int(n), 1)
    return Numbers(
        values,
        weights,
        int(n),
        n_rows - int(n),
        float(n) if uniform else float(s) * float(s) / float(q),
        math.nan if mean is None else float(mean),
        math.nan if var is None else float(var),
        exact=False,
        ecdf_error=1.0 / points,
    )


def _categories(rel: duckdb.DuckDBPyRelation, f: Field, weight: str | None) -> Categories:
    w = weight or "1.0"
    col = f.sql
    sql = f"SELECT {col} AS v, count(*) AS n, sum({w}) AS w FROM side GROUP BY v ORDER BY w DESC, v"
    rows = _query(rel, sql).fetchall()
    missing = sum(int(r[1]) for r in rows if r[0] is None)
    rows = [r for r in rows if r[0] is not None]
    n = sum(int(r[1]) for r in rows)
    uniform = weight is None or len({float(r[2]) / int(r[1]) for r in rows}) <= 1
    s = sum(float(r[2]) for r in rows)
    q = None
    if not uniform:
        q = _query(rel, f"SELECT sum({w} * {w}) FROM side WHERE {col} IS NOT NULL").fetchall()[0][0]
    counts = pooled({_plain(r[0]): float(r[1]) if uniform else float(r[2]) for r in rows}, KEPT_CATEGORIES)
    n_eff = float(n) if uniform or not q else s * s / float(q)
    return Categories(counts=counts, n=n, missing=missing, n_eff=n_eff)


def pooled(weights: Mapping[Any, float], limit: int) -> dict[Any, float]:
    """``weights`` heaviest first (ties by value); past ``limit``, the tail summed under :data:`OTHER`."""
    pairs = sorted(weights.items(), key=lambda kv: (-kv[1], str(kv[0])))
    if len(pairs) <= limit:
        return dict(pairs)
    out = dict(pairs[: limit - 1])
    out[OTHER] = out.get(OTHER, 0.0) + float(sum(w for _, w in pairs[limit - 1 :]))
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def category_table(ref: Categories, cur: Categories) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The categories of either side and each side's weight in each, in a stable order (by
    their share on the two sides together, then by value); past :data:`MAX_CATEGORIES`, the
    lightest pooled under :data:`OTHER` on both sides alike, so that both sides have the same bins."""
    totals = [sum(side.counts.values()) or 1.0 for side in (ref, cur)]
    share: dict[Any, float] = {}
    for side, total in zip((ref, cur), totals, strict=True):
        for k, v in side.counts.items():
            share[k] = share.get(k, 0.0) + v / total
    cats = list(pooled(share, MAX_CATEGORIES))
    tail = set(share) - set(cats)

    def weights(side: Categories) -> np.ndarray:
        got = np.array([side.counts.get(k, 0.0) for k in cats])
        if tail:
            got[cats.index(OTHER)] += sum(v for k, v in side.counts.items() if k in tail)
        return got

    return cats, weights(ref), weights(cur)


def to_json(summary: Summary) -> dict[str, Any]:
    """A summary as JSON-ready values (for :class:`~predlog.analysis.Profile`)."""
    if isinstance(summary, Numbers):
        return {
            "kind": "number",
            "n": summary.n,
            "missing": summary.missing,
            "n_eff": summary.n_eff,
            "mean": None if np.isnan(summary.mean) else summary.mean,
            "var": None if np.isnan(summary.var) else summary.var,
            "exact": summary.exact,
            "ecdf_error": summary.ecdf_error,
            "values": summary.values.tolist(),
            "weights": summary.weights.tolist(),
        }
    return {
        "kind": "category",
        "n": summary.n,
        "missing": summary.missing,
        "n_eff": summary.n_eff,
        "categories": [[k, v] for k, v in summary.counts.items()],
    }


def from_json(data: Mapping[str, Any]) -> Summary:
    """The inverse of :func:`to_json`."""
    if data["kind"] == "number":
        values = np.asarray(data["values"], dtype=float)
        weights = np.asarray(data["weights"], dtype=float)
        if values.ndim != 1 or values.shape != weights.shape:
            raise ValueError(f'"values" and "weights" must be lists of equal length ({values.size} and {weights.size})')
        if np.any(np.diff(values) <= 0) or not np.all(np.isfinite(values)):
            raise ValueError('"values" must be finite numbers in increasing order, each once')
        if np.any(weights <= 0) or not np.all(np.isfinite(weights)):
            raise ValueError('"weights" must be positive numbers')
        return Numbers(
            values=values,
            weights=weights,
            n=int(data["n"]),
            missing=int(data["missing"]),
            n_eff=float(data["n_eff"]),
            mean=float("nan") if data["mean"] is None else float(data["mean"]),
            var=float("nan") if data["var"] is None else float(data["var"]),
            exact=bool(data["exact"]),
            ecdf_error=float(data.get("ecdf_error", 0.0)),
        )
    if data["kind"] != "category":
        raise ValueError(f'"kind" must be "number" or "category", got {data["kind"]!r}')
    return Categories(
        counts={k: float(v) for k, v in data["categories"]},
        n=int(data["n"]),
        missing=int(data["missing"]),
        n_eff=float(data["n_eff"]),
    )
