"""The rows an investigation reads: predictions with their labels, from a store or a DataFrame.

Error correlation, error slices and fairness audits ask the same thing of their source: the
selected predictions with their latest labels, a weight per row, and for each row its true
and predicted class (or, for a regression, its label and prediction as numbers). This
module gives them that once, as a lazy DuckDB relation:

- from a :class:`~predlog.replay.Store`, through the reading side's query core
  (``Store.labeled_relation`` over the ``Store.predictions`` filters: nothing here writes a
  WHERE clause of its own);
- from a pandas DataFrame (or pyarrow Table) with a prediction column, a label column and
  one column per feature or context field, on a private in-memory DuckDB connection.

How a prediction is scored is decided as :func:`predlog.analysis.performance` decides it
(same rules, same ``task``, ``threshold`` and ``positive_label``), from the column types and,
for a float prediction, whether every label is 0 or 1.

The relation that :meth:`Labeled.relation` returns has the requested fields (named by path:
``features.age``, ``context.gender``) and these columns:

====== =====================================================================================
``_wt`` the row's weight, ``1 / sample_rate`` (a DataFrame's ``sample_rate`` column, or 1)
``_yt`` the true class of a row with a usable label, else NULL (classification)
``_yp`` the predicted class of a row with a usable prediction, else NULL (classification)
``_sc`` 1 where the row is scored (a usable label and a usable prediction), else NULL
``_y``  the label as a DOUBLE where scored (regression), else NULL
``_p``  the prediction as a DOUBLE where usable (regression), else NULL
====== =====================================================================================

:meth:`Labeled.errors` adds ``_e``: 1 where a scored row is an error, 0 where it is not, NULL
where the row is not scored (see :func:`error_rule` for what an error is).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from predlog.replay._shapes import ident

from ._performance import (
    TASKS,
    _check_filters,
    _ok_label,
    _ok_prediction,
    _Plan,
    _plan,
    _scored,
    decide,
    one_label_type,
)
from ._sides import WEIGHT, FrameSide, describe_filters, feature_path, one_kind, resolve_model
from ._summary import Field

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from predlog.replay import Store

__all__ = ["REGRESSION_QUANTILE", "Labeled", "labeled"]

REGRESSION_QUANTILE = 0.9
"""For a regression, a row is an error when its absolute error is above this quantile of the
absolute errors of the scored rows (``quantile_cont``, unweighted: a sample keeps the shape)."""

_OWN = ("prediction", "label", "sample_rate")
"""Columns every relation reads besides the fields asked for."""


@dataclasses.dataclass
class Labeled:
    """The labeled rows of one investigation and how they are scored.

    Attributes:
        plan: How predictions are scored (task, rule, threshold, positive class).
        model: The model (None for a DataFrame).
        filters: The ``Store.predictions`` filters (empty for a DataFrame).
        label: A few words saying what the rows are ("model fraud, version 1.3", "a frame of
            10,000 rows").
        fields: Every feature and context field, by dotted path.
    """

    plan: _Plan
    model: str | None
    filters: dict[str, Any]
    label: str
    fields: dict[str, Field]
    _base: Callable[[list[str]], duckdb.DuckDBPyRelation]  # the labeled rows, columns by path
    _plain: Callable[[list[str]], duckdb.DuckDBPyRelation]  # the same without the label join
    _rows: int | None = None

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return self.plan.task

    @property
    def labels(self) -> bool:
        """False when the selection surely has no label (its label column has no type, or
        the plan found none); True when labels may exist: another model's labels can type
        the column, so a caller that must know counts them in its own pass."""
        return not self.plan.unlabeled

    def resolve(self, names: str | Sequence[str] | None, what: str) -> list[str]:
        """Field paths from what the user named (``"age"`` is ``"features.age"``), checked.

        ``names=None`` gives every feature and context field of a kind that can be grouped
        (numbers, categories). An unknown name raises a :class:`KeyError` listing close matches.
        """
        if names is None:
            return [p for p, f in self.fields.items() if f.kind is not None and f.source is None]
        items = [names] if isinstance(names, str) else list(names)
        if not items:
            raise ValueError(f"{what}= names no field: name at least one, e.g. {what}='context.country'")
        out: list[str] = []
        for name in items:
            if not isinstance(name, str) or not name:
                raise TypeError(f"{what}= takes field names (text), got {name!r}")
            path = feature_path(name)
            if path not in self.fields:
                raise KeyError(_unknown(name, path, self.fields, what))
            f = self.fields[path]
            if f.kind is None:
                raise ValueError(f"{what}={name!r}: the field is {f.dtype} ({f.note}); name a number or a category")
            if path in out:
                raise ValueError(f"{what}= names {path!r} twice")
            out.append(path)
        return out

    def relation(self, paths: Sequence[str] = (), *, raw: bool = False) -> duckdb.DuckDBPyRelation:
        """The rows with ``paths`` (by path) and the scoring columns (see the module's docs);
        with ``raw``, the ``prediction`` and ``label`` columns as read too."""
        rel = self._base([*paths, *_OWN])
        plan = self.plan
        ok_p, ok_y = _ok_prediction(plan), _ok_label(plan)
        cols = [ident(p) for p in paths] + (['"prediction"', '"label"'] if raw else [])
        cols.append(f"{WEIGHT} AS _wt")
        cols.append(f"CASE WHEN {_scored(plan)} THEN 1 END AS _sc")
        if plan.task == "classification":
            yt, yp = _true_and_predicted(plan)
            cols += [f"CASE WHEN {ok_y} THEN {yt} END AS _yt", f"CASE WHEN {ok_p} THEN {yp} END AS _yp"]
        else:
            cols += [
                f'CASE WHEN {_scored(plan)} THEN CAST("label" AS DOUBLE) END AS _y',
                f'CASE WHEN {ok_p} THEN CAST("prediction" AS DOUBLE) END AS _p',
            ]
        return rel.project(", ".join(cols))

    def predictions(self, paths: Sequence[str]) -> duckdb.DuckDBPyRelation:
        """The selected rows with ``paths`` only, labeled or not (no label join: cheap)."""
        return self._plain(list(paths))

    def rows(self) -> int:
        """How many rows are selected, labeled or not."""
        if self._rows is None:
            self._rows = int(self._plain(["sample_rate"]).aggregate("count(*)").fetchall()[0][0])
        return self._rows

    def cuts(self, paths: Sequence[str], bins: int) -> dict[str, list[float]]:
        """Quantile cut points of the number fields ``paths`` over the selected rows (see
        :func:`._bins.edges`)."""
        from ._bins import edges

        if not paths:
            return {}
        return edges(self.predictions(paths), paths, bins, self.rows())

    def errors(self, paths: Sequence[str] = (), error: Any = None) -> tuple[duckdb.DuckDBPyRelation, str]:
        """The rows with ``paths``, the scoring columns and ``_e`` (the error indicator), and
        a few words saying what an error is.

        ``error``:

        - None: a misclassification (``_yt <> _yp``) for a classification; for a regression,
          an absolute error above the 90th percentile of the scored rows' absolute errors.
        - a SQL expression (text) over the columns ``prediction`` and ``label`` (and the
          fields named in ``paths``), true for an error: ``"abs(label - prediction) > 5"``.
          Evaluated in the engine.
        - a callable ``error(label, prediction) -> booleans``, given pandas Series and
          returning one boolean per row (an array or Series). Applied in Python to chunks of
          rows as DuckDB streams them (``DuckDBPyRelation.map``): slower than SQL on a large store.

        Only scored rows (a usable label and prediction) are errors or not; ``_e`` is NULL
        on the others.
        """
        plan = self.plan
        if error is None:
            rel = self.relation(paths)
            if plan.task == "classification":
                return rel.project("*, CASE WHEN _sc = 1 THEN CAST(_yt IS DISTINCT FROM _yp AS INTEGER) END AS _e"), (
                    "a misclassification (" + plan.rule + ")"
                )
            cut = self._cut()
            return rel.project(f"*, CASE WHEN _sc = 1 THEN CAST(abs(_y - _p) > {cut!r} AS INTEGER) END AS _e"), (
                f"an absolute error above {cut:.4g}, the 90th percentile of the absolute errors"
            )
        if isinstance(error, str):
            return self._sql_error(paths, error), f"rows where {error}"
        if callable(error):
            return self._callable_error(
                paths, error
            ), f"rows where {getattr(error, '__name__', 'error')}(label, prediction)"
        raise TypeError(
            f"error= takes a SQL expression (text, e.g. 'abs(label - prediction) > 5') or a callable "
            f"error(label, prediction) -> booleans; got {type(error).__name__}"
        )

    def _cut(self) -> float:
        got = self.relation().aggregate(f"quantile_cont(abs(_y - _p), {REGRESSION_QUANTILE}) FILTER (_sc = 1)")
        value = got.fetchall()[0][0]
        if value is None:
            raise ValueError(
                f"no scored rows in {self.label}: an error needs a label and a prediction; log labels with "
                "predlog.log_label(label, prediction_id=...)"
            )
        return float(value)

    def _sql_error(self, paths: Sequence[str], error: str) -> duckdb.DuckDBPyRelation:
        import duckdb

        inner = self.relation(paths, raw=True)
        try:
            out = inner.project(
                f"* EXCLUDE (prediction, label), CASE WHEN _sc = 1 THEN CAST(({error}) AS INTEGER) END AS _e"
            )
            out.limit(0).fetchall()
        except duckdb.Error as exc:
            raise ValueError(
                f"error={error!r} is not a SQL expression over these rows ({str(exc).splitlines()[0]}); it may use "
                f"the columns prediction and label{', ' + ', '.join(paths) if paths else ''}, e.g. "
                "error='abs(label - prediction) > 5'"
            ) from None
        return out

    def _callable_error(self, paths: Sequence[str], error: Any) -> duckdb.DuckDBPyRelation:
        import numpy as np

        inner = self.relation(paths, raw=True)
        names = list(inner.columns)
        types = [str(t) for t in inner.types]

        def apply(chunk: pd.DataFrame) -> pd.DataFrame:
            got = np.asarray(error(chunk["label"], chunk["prediction"]))
            if got.shape != (len(chunk),):
                raise ValueError(
                    f"error(label, prediction) must return one boolean per row: got shape {got.shape} for {len(chunk)} rows"
                )
            e = np.where(chunk["_sc"].notna().to_numpy(), got.astype(bool).astype(np.float64), np.nan)
            return chunk.drop(columns=["prediction", "label"]).assign(_e=e)

        schema = {n: t for n, t in zip(names, types, strict=True) if n not in ("prediction", "label")}
        schema["_e"] = "DOUBLE"
        return inner.map(apply, schema=schema).project("* EXCLUDE (_e), CAST(_e AS INTEGER) AS _e")


def _true_and_predicted(plan: _Plan) -> tuple[str, str]:
    """The true and the predicted class as SQL, each on its own (a label without a usable
    prediction still has a true class; a prediction without a label a predicted one)."""
    if plan.kind == "score":
        y = '"label"' if plan.ltype.upper() == "BOOLEAN" else 'CASE WHEN "label" IN (0, 1) THEN "label" END'
        return f"CAST({y} AS INTEGER)", f'CAST("prediction" >= {plan.threshold!r} AS INTEGER)'
    if plan.kind == "vector":
        return 'CAST("label" AS BIGINT)', 'list_position("prediction", list_max("prediction")) - 1'
    if plan.cast:
        return f'CAST("label" AS {plan.cast})', f'CAST("prediction" AS {plan.cast})'
    return '"label"', '"prediction"'  # the value rule with one type on both sides


def _unknown(name: str, path: str, fields: Mapping[str, Field], what: str) -> str:
    paths = list(fields)
    short = {p.split(".", 1)[-1]: p for p in paths}
    close = difflib.get_close_matches(path, paths, n=3, cutoff=0.8)
    close += [short[c] for c in difflib.get_close_matches(name, list(short), n=3, cutoff=0.8) if short[c] not in close]
    hint = f"; did you mean {', '.join(repr(c) for c in close[:3])}?" if close else ""
    shown = ", ".join(paths[:20]) + (", ..." if len(paths) > 20 else "")
    return f"{what}={name!r}: no field {path!r} in these rows{hint} (fields: {shown or 'none'})"


def labeled(
    source: Store | pd.DataFrame | pa.Table,
    *,
    model: str | None,
    filters: dict[str, Any],
    prediction: str = "prediction",
    label: str | None = "label",
    task: str = "auto",
    threshold: float = 0.5,
    positive_label: Any = None,
    what: str,
) -> Labeled:
    """The labeled rows of ``source`` and how they are scored; ``what`` names the caller in errors."""
    import pandas as pd
    import pyarrow as pa

    from predlog.replay import Store

    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if isinstance(source, Store):
        _check_filters(filters, what)
        if label != "label" and label is not None:
            raise TypeError("label= names a DataFrame column; a store's labels are those logged with predlog.log_label")
        name = resolve_model(source, model, filters)
        field = prediction if prediction.split(".", 1)[0] == "prediction" else f"prediction.{prediction}"
        store = source

        def plain(columns: list[str]) -> duckdb.DuckDBPyRelation:
            return store.relation(name, columns=columns, ordered=False, **filters)

        def base(columns: list[str]) -> duckdb.DuckDBPyRelation:
            asked = [field if c == "prediction" else c for c in columns]
            rel = store.labeled_relation(name, include_unlabeled=True, columns=asked, ordered=False, **filters)
            if field == "prediction":
                return rel
            return rel.project(", ".join(f"{ident(c)} AS {ident('prediction' if c == field else c)}" for c in asked))

        probe = one_label_type(lambda: base(["prediction", "label"]), name, what)
        types = dict(zip(probe.columns, (str(t) for t in probe.types), strict=True))
        if types["prediction"] == "VARCHAR" and field == "prediction":
            one_kind(store, name, filters, what)
        from ._sides import StoreSide

        side = StoreSide(store, name, filters)
        fields = {p: f for p, f in side.fields().items() if p.split(".", 1)[0] in ("features", "context")}
        desc = f"model {name}" + (f", {describe_filters(filters)}" if filters else "")
        model_name: str | None = name
    elif isinstance(source, (pd.DataFrame, pa.Table)):
        if model is not None or filters:
            given = ["model=" if model is not None else "", *(f"{k}=" for k in filters)]
            raise TypeError(
                f"{', '.join(g for g in given if g)} select rows of a Store; a DataFrame is used as it is "
                "(filter it with pandas first)"
            )
        frame_side, probe = _frame(source, prediction, label, what)
        own = {f"features.{c}" for c in _OWN}
        fields = {
            p: f
            for p, f in frame_side.fields().items()
            if p.split(".", 1)[0] in ("features", "context") and p not in own
        }

        def base(columns: list[str]) -> duckdb.DuckDBPyRelation:
            paths = ["features.sample_rate" if c == "sample_rate" else c for c in columns]
            rel = frame_side.relation(paths)
            return rel.project(", ".join(f"{ident(p)} AS {ident(c)}" for p, c in zip(paths, columns, strict=True)))

        plain = base
        types = dict(zip(probe.columns, (str(t) for t in probe.types), strict=True))
        desc = frame_side.label
        model_name = None
    else:
        raise TypeError(
            f"{what}() reads a predlog.replay.Store or a pandas DataFrame with prediction and label columns, "
            f"got {type(source).__name__}"
        )
    plan = _plan(probe, types["prediction"], types["label"], task, threshold, positive_label, "macro")
    if not (isinstance(source, Store) and _binary_scores(source, model_name, filters, plan)):
        plan = decide(probe, plan)
    elif plan.kind == "undecided":
        plan = dataclasses.replace(plan, kind="score")
    return Labeled(plan, model_name, dict(filters), desc, fields, base, plain)


def _binary_scores(store: Store, model: str | None, filters: Mapping[str, Any], plan: _Plan) -> bool:
    """Whether a float prediction with numeric labels is surely a binary score, from the labels
    and the predictions alone (no label join, which costs a pass over every row): every
    numeric label in the store is 0 or 1, and every prediction is within [0, 1].

    Then every scored row has a label of 0 or 1 and :func:`._performance.decide` would say
    "score" (with scored rows, or without them since the scores are probabilities). When
    not sure (another model's labels are not binary, a score is outside [0, 1]), the caller
    decides with a pass over the labeled rows.
    """
    from predlog.replay._shapes import fields_of

    if plan.kind != "undecided":
        return False
    label = 'CAST("label" AS DOUBLE)'

    def check(cur: duckdb.DuckDBPyConnection, snap: Any) -> tuple[int, int]:
        if "label" not in fields_of(snap.shape("labels")):
            return 0, 1
        got = cur.sql(
            f"SELECT count(*) FILTER (isfinite({label})), count(*) FILTER (isfinite({label}) AND {label} NOT IN (0, 1)) "
            "FROM labels"
        ).fetchall()[0]
        return int(got[0]), int(got[1])

    labels, nonbinary = store.run(check, store.selection(model, **filters), predictions=False)
    if not labels or nonbinary:
        return False
    rel = store.relation(model, columns=["prediction"], ordered=False, **filters)
    lo, hi = rel.aggregate(
        'min("prediction") FILTER (isfinite("prediction")), max("prediction") FILTER (isfinite("prediction"))'
    ).fetchall()[0]
    return lo is not None and lo >= 0 and hi <= 1


def _frame(frame: pd.DataFrame | pa.Table, prediction: str, label: str | None, what: str) -> tuple[FrameSide, Any]:
    """A DataFrame as a side whose prediction and label columns are named ``prediction`` and
    ``label`` (``label=None``: no labels, a column of nulls), with ``sample_rate`` (1: every
    row weighs 1) when it lacks one. A ``sample_rate`` column must hold rates in (0, 1]."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._sides import _arrow

    table = frame if isinstance(frame, pa.Table) else _arrow(frame)
    names = table.column_names
    if label is None:
        if "label" in names:
            raise ValueError(f"{what}(): label=None, but the DataFrame has a column 'label': drop it or name it")
        table = table.append_column("label", pa.nulls(table.num_rows))
        names, label = table.column_names, "label"
    for arg, col in (("prediction", prediction), ("label", label)):
        if col not in names:
            close = difflib.get_close_matches(col, names, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            unlabeled = " (or label=None for rows without labels)" if arg == "label" else ""
            raise KeyError(
                f"{what}(): the DataFrame has no {arg} column {col!r}{hint} (columns: {', '.join(names[:20])}); "
                f"name it with {arg}={unlabeled}"
            )
    if "sample_rate" in names:
        rates = table.column("sample_rate")
        if not pa.types.is_integer(rates.type) and not pa.types.is_floating(rates.type):
            raise TypeError(f"{what}(): the sample_rate column must hold numbers (rates in (0, 1]), not {rates.type}")
        bad = pc.sum(pc.invert(pc.and_(pc.greater(rates, 0), pc.less_equal(rates, 1))).fill_null(False)).as_py()
        if bad:
            raise ValueError(
                f"{what}(): {bad:,} rows have a sample_rate outside (0, 1]; a row kept with probability r weighs 1 / r"
            )
    renamed = {prediction: "prediction", label: "label"}
    for old, new in renamed.items():
        if old != new and new in names:
            raise ValueError(
                f"{what}(): the DataFrame has a column {new!r} besides {old!r} ({new}={old!r}): rename one of them"
            )
    table = table.rename_columns([renamed.get(n, n) for n in names])
    if "sample_rate" not in table.column_names:
        table = table.append_column("sample_rate", pa.array([1.0] * table.num_rows, pa.float64()))
    side = FrameSide(table, label=f"a frame of {table.num_rows:,} rows")
    probe = side.relation(["prediction", "label"])
    return side, probe
