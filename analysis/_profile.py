"""A saved summary of a reference, read once and compared against many times.

A profile file is JSON (``docs/analysis.md`` documents it)::

    {"format": "predlog.profile", "version": 1, "created": "2026-12-01T10:00:00+00:00",
     "label": "training set", "rows": 5000,
     "source": {"kind": "frame"} | {"kind": "store", "filters": {"model": "fraud", ...}},
     "max_values": 10000,
     "fields": {"features.age": {"kind": "number", "dtype": "BIGINT", "note": "",
                                 "summary": {...}}, ...}}

A number field's summary keeps its sorted distinct values with their counts (exact) when it
has at most ``max_values`` of them, else a sketch of ``max_values`` points (any ECDF read from
it is off by at most ``1 / max_values``); a category field keeps the count of each category
(up to :data:`~predlog.analysis._summary.KEPT_CATEGORIES`, the rest pooled).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._result import jsonable
from ._sides import FrameSide, Side, StoreSide, resolve_model
from ._summary import Field, Numbers, Summary, from_json, to_json

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from predlog.replay import Store

__all__ = ["Profile", "bounded"]

FORMAT = "predlog.profile"
VERSION = 1
MAX_VALUES = 10_000


class Profile:
    """A saved summary of a reference: per field its type, counts, missing share, categories and
    sorted values (or a sketch of them).

    Pass it wherever a reference is taken (``input_drift(s, reference=profile)``): the
    reference is then read once, when the profile is made, not on every check.

    ::

        profile = Profile.from_frame(train_df, label="training set")
        profile.save("train.profile.json")
        input_drift(s, Profile.load("train.profile.json"), {"last": "1d"})
    """

    def __init__(
        self,
        fields: Mapping[str, Field],
        summaries: Mapping[str, Summary],
        *,
        rows: int,
        label: str,
        source: Mapping[str, Any],
        max_values: int = MAX_VALUES,
        created: dt.datetime | None = None,
    ) -> None:
        self._fields = dict(fields)
        self._summaries = dict(summaries)
        self.rows = rows
        self._label = label
        self.source = dict(source)
        self.max_values = max_values
        self.created = created or dt.datetime.now(dt.UTC)

    # ------------------------------------------------------------ making one

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame | pa.Table, *, label: str = "reference frame", max_values: int = MAX_VALUES
    ) -> Profile:
        """The profile of a DataFrame (or pyarrow Table) with one column per field.

        A column ``age`` is the feature ``features.age``; ``prediction``, ``confidence`` and
        dotted names (``context.country``) are those fields.
        """
        side = FrameSide(frame, label=label)
        return cls._of(side, label, {"kind": "frame"}, max_values)

    @classmethod
    def from_store(
        cls,
        store: Store,
        model: str | None = None,
        *,
        label: str | None = None,
        max_values: int = MAX_VALUES,
        **filters: Any,
    ) -> Profile:
        """The profile of the rows of ``model`` that ``filters`` (as ``Store.predictions``) select."""
        model = resolve_model(store, model, filters)
        side = StoreSide(store, model, filters)
        return cls._of(side, label or side.label, {"kind": "store", "filters": side.filters}, max_values)

    @classmethod
    def _of(cls, side: Side, label: str, source: dict[str, Any], max_values: int) -> Profile:
        fields = side.fields()
        summaries = {p: bounded(s, max_values) for p, s in side.summarize(list(fields.values())).items()}
        rows = max((s.n + s.missing for s in summaries.values()), default=0)
        return cls(fields, summaries, rows=rows, label=label, source=source, max_values=max_values)

    # ------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        """The profile as the JSON document :meth:`save` writes."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created.isoformat(),
            "label": self._label,
            "rows": self.rows,
            "source": jsonable(self.source),
            "max_values": self.max_values,
            "fields": {
                path: {
                    "kind": f.kind,
                    "dtype": f.dtype,
                    "note": f.note,
                    **({"summary": to_json(self._summaries[path])} if path in self._summaries else {}),
                }
                for path, f in self._fields.items()
            },
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the profile as JSON (atomically: a reader never sees half a file)."""
        text = json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))
        tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        """Read a profile written by :meth:`save`.

        Raises:
            ValueError: the file is not a predlog profile, or of a newer version.
        """
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{os.fspath(path)} is not a predlog profile (not UTF-8 JSON: {exc})") from exc
        return cls.from_dict(data, where=os.fspath(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "the profile") -> Profile:
        """The inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f'{where} is not a predlog profile (no "format": "{FORMAT}")')
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(
                f'{where}: "version" must be a whole number (this predlog writes {VERSION}), got {version!r}'
            )
        if version > VERSION:
            raise ValueError(
                f"{where} is a profile of format version {version}; this predlog reads version {VERSION} "
                "and older: upgrade predlog"
            )
        fields: dict[str, Field] = {}
        summaries: dict[str, Summary] = {}
        path = ""
        try:
            for path, f in data["fields"].items():
                fields[path] = Field(path, f["kind"], f["dtype"], f.get("note", ""))
                if "summary" in f:
                    summaries[path] = from_json(f["summary"])
            path = ""
            return cls(
                fields,
                summaries,
                rows=int(data["rows"]),
                label=str(data["label"]),
                source=data.get("source", {}),
                max_values=int(data.get("max_values", MAX_VALUES)),
                created=dt.datetime.fromisoformat(data["created"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            at = f" (field {path!r})" if path else ""
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(
                f"{where} is not a valid predlog profile{at}: {what}; write profiles with Profile.save, and "
                "see docs/analysis.md for the format"
            ) from exc

    # ------------------------------------------------------------ as a side

    @property
    def label(self) -> str:
        return self._label

    @property
    def filters(self) -> dict[str, Any] | None:
        source_filters = self.source.get("filters")
        return dict(source_filters) if isinstance(source_filters, Mapping) else None

    def fields(self) -> dict[str, Field]:
        return dict(self._fields)

    def summarize(self, fields: Sequence[Field]) -> dict[str, Summary]:
        return {f.path: self._summaries[f.path] for f in fields if f.path in self._summaries}

    def __repr__(self) -> str:
        kinds = [f.kind for f in self._fields.values()]
        return (
            f"Profile({self._label!r}, rows={self.rows:,}, numbers={kinds.count('number')}, "
            f"categories={kinds.count('category')}, created={self.created:%Y-%m-%d %H:%M} UTC)"
        )


def bounded(s: Summary, max_values: int) -> Summary:
    """``s`` with equal values merged, and as a sketch of ``max_values`` points when it has more."""
    if not isinstance(s, Numbers) or len(s.values) == 0:
        return s
    values, weights = s.values, s.weights
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    values, weights = values[starts], np.add.reduceat(weights, starts)
    exact, error = s.exact, s.ecdf_error
    if len(values) > max_values:
        # The values where the ECDF crosses each 1/max_values step: the rule of the store's sketch.
        cum = np.cumsum(weights)
        total = cum[-1]
        keep = np.floor(cum * max_values / total) > np.floor((cum - weights) * max_values / total)
        keep[-1] = True
        values, weights, exact = values[keep], np.diff(np.r_[0.0, cum[keep]]), False
        error = error + 1.0 / max_values  # off by the summary's own error, and by one more step
    return Numbers(values, weights, s.n, s.missing, s.n_eff, s.mean, s.var, exact=exact, ecdf_error=error)
