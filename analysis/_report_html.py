"""The report's page: one self-contained HTML file (inline CSS, inline SVG, no request when it opens).

:func:`page` lays out a header, a table of contents and the sections that
:mod:`._report` built; :func:`figure_block` turns a matplotlib Figure into an inline
``<svg>`` element. Text that came from the store (model names, feature names, context
values, error messages) is escaped here or by the results' own ``_repr_html_``: a section's
``blocks`` hold trusted HTML fragments only.
"""

from __future__ import annotations

import dataclasses
import html
import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Section", "error_block", "figure_block", "heading_block", "note_block", "page", "table_block"]

OK, NOTE, ERROR = "ok", "note", "error"


@dataclasses.dataclass
class Section:
    """One section of the report.

    Attributes:
        key: The anchor (``overview``, ``input-drift``...), also the section's ``id``.
        title: The heading.
        summary: One sentence, first under the heading (plain text: escaped when rendered).
        details: More plain-text lines under the summary (what was compared, defaults chosen).
        blocks: Trusted HTML, in order: figures (:func:`figure_block`), tables
            (:func:`table_block`: the results' ``_repr_html_()``), headings, notes.
        note: What would fill a section without data (plain text).
        error: The message of a section that raised (plain text).
        seconds: How long the section took to build.
    """

    key: str
    title: str
    summary: str = ""
    details: list[str] = dataclasses.field(default_factory=list)
    blocks: list[str] = dataclasses.field(default_factory=list)
    note: str = ""
    error: str = ""
    seconds: float = 0.0

    @property
    def state(self) -> str:
        """``"error"`` (it raised), ``"note"`` (no data for it) or ``"ok"``."""
        return ERROR if self.error else NOTE if self.note and not self.blocks else OK


_XML_PROLOGUE = re.compile(r"<\?xml[^>]*>\s*|<!DOCTYPE[^>]*>\s*|<metadata>.*?</metadata>\s*", re.S)


def figure_block(fig: Figure) -> str:
    """``fig`` as an inline ``<svg>`` element: no XML prologue, no DOCTYPE (its DTD is a URL),
    no metadata, text drawn as paths (no font is needed to read it)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    text = _XML_PROLOGUE.sub("", buf.getvalue())
    # The figure keeps its own size, shrunk by CSS on a narrow page (the viewBox keeps its proportions).
    return text.replace("<svg ", '<svg class="figure" ', 1)


def table_block(fragment: str, *, result: bool = True) -> str:
    """Trusted HTML in a scrolling box: an analysis result's ``_repr_html_()`` (``result``: its
    heading and sentence hidden, the section shows them; its tables side by side), or any
    other HTML as it is (a verdict, a step, an escaped table)."""
    return f'<div class="table{" result" if result else ""}">{fragment}</div>'


def heading_block(text: str) -> str:
    """A sub-heading inside a section (plain text)."""
    return f"<h3>{html.escape(text)}</h3>"


def note_block(text: str) -> str:
    """A note inside a section: what is missing, or why a figure is not drawn (plain text)."""
    return f'<p class="note">{html.escape(text)}</p>'


def error_block(text: str) -> str:
    """The message of a part of a section that raised (plain text)."""
    return f'<p class="error">{html.escape(text)}</p>'


_CSS = """
:root { --fg: #1d2430; --muted: #5b6575; --line: #d8dde5; --bg: #ffffff; --panel: #f6f8fa;
        --ok: #1a7f37; --note: #9a6700; --err: #cf222e; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg);
       font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
header { border-bottom: 3px solid var(--accent); padding-bottom: 12px; margin-bottom: 20px; }
h1 { font-size: 26px; margin: 0 0 8px; }
h2 { font-size: 20px; margin: 0 0 6px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; }
nav { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
      padding: 10px 18px; margin-bottom: 24px; }
nav ol { margin: 4px 0; padding-left: 22px; columns: 2; }
nav a { color: var(--accent); text-decoration: none; }
.badge { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 8px;
         margin-left: 6px; color: #fff; vertical-align: middle; }
.badge.ok { background: var(--ok); } .badge.note { background: var(--note); }
.badge.error { background: var(--err); }
section { border: 1px solid var(--line); border-radius: 6px; padding: 16px 20px; margin: 0 0 22px; }
section > header { border: 0; padding: 0; margin: 0 0 8px; display: flex;
                   justify-content: space-between; align-items: baseline; gap: 12px; }
button.toggle { font-size: 12px; border: 1px solid var(--line); background: var(--panel);
                border-radius: 4px; cursor: pointer; color: var(--muted); }
section.collapsed .content { display: none; }
p.summary { font-size: 16px; font-weight: 600; margin: 4px 0 8px; }
p.detail { color: var(--muted); margin: 2px 0; font-size: 13px; }
p.note { background: #fff8c5; border-left: 4px solid var(--note); padding: 8px 12px; margin: 8px 0; }
p.error { background: #ffebe9; border-left: 4px solid var(--err); padding: 8px 12px; margin: 8px 0;
          font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; white-space: pre-wrap; }
svg.figure { display: block; max-width: 100%; height: auto; margin: 10px 0; }
.table { max-height: 36em; overflow: auto; border-top: 1px solid var(--line); margin-top: 8px; }
.table table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
.table th, .table td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: right;
                       white-space: nowrap; }
.table th { background: var(--panel); position: sticky; top: 0; }
.table td:first-child, .table th:first-child { text-align: left; }
.result > div { display: flex; flex-wrap: wrap; gap: 4px 28px; align-items: flex-start; }
.result > div > h4:first-child, .result > div > h4:first-child + p { display: none; }
.result > div > table.dataframe { order: -1; }  /* the result's rows first, its key numbers beside */
footer { color: var(--muted); font-size: 12px; margin-top: 32px; }
@media print { section.collapsed .content { display: block; } button.toggle { display: none; }
               .table { max-height: none; overflow: visible; } }
"""

# Folding a section is the only behaviour; the page reads fully without it.
_SCRIPT = """
document.querySelectorAll("button.toggle").forEach(function (b) {
  b.addEventListener("click", function () {
    var s = b.closest("section");
    s.classList.toggle("collapsed");
    b.textContent = s.classList.contains("collapsed") ? "show" : "hide";
  });
});
"""


def page(
    title: str,
    meta: Sequence[tuple[str, str]],
    sections: Sequence[Section],
    *,
    notes: Sequence[str] = (),
    footer: str = "",
) -> str:
    """The whole HTML document.

    Args:
        title: The heading and the document's title (plain text).
        meta: ``(label, value)`` pairs of the header: store, model, time range... (plain text).
        sections: In order; each gets an entry in the table of contents.
        notes: Lines under the header about the whole report (plain text), e.g. no figures.
        footer: A last line (plain text).
    """
    e = html.escape
    head = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in meta)
    toc = "".join(f'<li><a href="#{e(s.key)}">{e(s.title)}</a>{_badge(s)}</li>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body><main>",
        f'<header><h1>{e(title)}</h1><dl class="meta">{head}</dl>',
        *(f'<p class="note">{e(n)}</p>' for n in notes),
        "</header>",
        f'<nav aria-label="contents"><strong>Contents</strong><ol>{toc}</ol></nav>',
        *(_section(i, s) for i, s in enumerate(sections, 1)),
        f"<footer>{e(footer)}</footer>" if footer else "",
        f"<script>{_SCRIPT}</script></main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _badge(s: Section) -> str:
    word = {OK: "", NOTE: "no data", ERROR: "error"}[s.state]
    return f' <span class="badge {s.state}">{word}</span>' if word else ""


def _section(number: int, s: Section) -> str:
    e = html.escape
    parts = [
        f'<section id="{e(s.key)}" class="{s.state}">',
        f'<header><h2>{number}. {e(s.title)}{_badge(s)}</h2><button class="toggle" type="button">hide</button></header>',
        '<div class="content">',
    ]
    if s.summary:
        parts.append(f'<p class="summary">{e(s.summary)}</p>')
    parts += [f'<p class="detail">{e(d)}</p>' for d in s.details]
    if s.note:
        parts.append(f'<p class="note">{e(s.note)}</p>')
    if s.error:
        parts.append(f'<p class="error">{e(s.error)}</p>')
    parts += s.blocks
    parts.append("</div></section>")
    return "\n".join(parts)
