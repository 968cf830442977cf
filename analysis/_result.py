"""What every analysis result shares: a table, a summary, JSON, HTML and a plot.

A result is a small façade over numbers computed in the engine, shaped like fairlearn's
``MetricFrame``: ``.df`` is the table (pandas), ``.summary`` a dict whose ``"text"`` is one
sentence and whose other keys are the key numbers, ``to_dict()`` JSON-ready values,
``_repr_html_()`` the notebook view and ``plot()`` a matplotlib Figure (matplotlib is
imported by ``plot()`` only: ``pip install 'predlog[plot]'``).
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from predlog.replay._replay_result import jsonable

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["Result", "figure", "fmt", "jsonable"]


class Result:
    """Base of the analysis results: ``df``, ``summary``, ``to_dict``, HTML and ``plot``."""

    df: pd.DataFrame
    summary: dict[str, Any]
    _title = "Result"

    def to_dict(self) -> dict[str, Any]:
        """The summary and the table as JSON-ready values (NaN → None, times → ISO 8601)."""
        return {"summary": jsonable(self.summary), "rows": jsonable(self.df.to_dict("records"))}

    def __str__(self) -> str:
        return str(self.summary.get("text", ""))

    def __repr__(self) -> str:
        head = f"{type(self).__name__}: {self.summary.get('text', '')}"
        if len(self.df) == 0:
            return head
        return f"{head}\n{self._table().to_string(max_rows=20, float_format=fmt)}"

    def _table(self) -> pd.DataFrame:
        """The columns shown by repr and HTML (the whole table by default)."""
        return self.df

    def _repr_html_(self) -> str:
        numbers = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(fmt(v))}</td></tr>"
            for k, v in self.summary.items()
            if k != "text" and not isinstance(v, (list, dict))
        )
        parts = [
            f"<div class='predlog-{type(self).__name__.lower()}'>",
            f"<h4>{html.escape(self._title)}</h4>",
            f"<p>{html.escape(str(self.summary.get('text', '')))}</p>",
            f"<table>{numbers}</table>",
        ]
        table = self._table()
        if len(table):
            parts.append(table.head(50).to_html(index=False, float_format=fmt, na_rep=""))
            if len(table) > 50:
                parts.append(f"<p>… {len(table) - 50:,} more rows in <code>.df</code></p>")
        parts.append("</div>")
        return "".join(parts)


def fmt(value: Any) -> str:
    """A number as a person reads it: 6 significant digits, ``-`` for missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.6g}"
    return str(value)


def figure(**kwargs: Any) -> Figure:
    """A matplotlib Figure made without pyplot (no global state, no display needed), or a clear error.

    Notebooks show it as they show any Figure; ``fig.savefig(path)`` writes it.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plot() needs matplotlib: pip install 'predlog[plot]'") from exc
    return Figure(**kwargs)
