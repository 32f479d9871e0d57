"""Rich renderables built from untrusted text: file names, snippets, source lines, answers.

Every string that comes from a file, a model or an error message goes through
:mod:`kbterm.textsafe` here, so that no control sequence (a title change, an OSC 52 clipboard
write, a screen clear) ever reaches the terminal: each control character is drawn as a visible
escape (``\\x1b``).  Text is also kept out of Rich and Textual markup ("[draft].md" is a name,
not a style).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from kbterm.keywords import term_spans
from kbterm.textsafe import one_line, visible

if TYPE_CHECKING:
    from kbterm.retrieval import Context

__all__ = ["highlight", "markdown_escape", "markdown_line", "one_line", "render_context",
           "safe_text", "visible"]


def safe_text(text: object, style: str = "", *, single_line: bool = False) -> Text:
    """``text`` as a plain :class:`~rich.text.Text` (no markup), control characters escaped."""
    return Text(one_line(text) if single_line else visible(text), style=style)


def highlight(text: str, query: str, *, single_line: bool = False) -> Text:
    """``text`` (escaped) with the query's words in bold yellow: words of 3+ letters, and
    in Chinese, Japanese, Korean or Thai every word the query holds, two-character ones too
    (:func:`kbterm.keywords.term_spans`)."""
    out = safe_text(text, single_line=single_line)
    for start, end in term_spans(out.plain, query):
        out.stylize("bold yellow", start, end)
    return out


def render_context(context: "Context", query: str) -> Table:
    """Source lines beside their numbers (a wrapped line stays right of the gutter): the hit's
    lines bright, the rest dim, the query's words highlighted."""
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", no_wrap=True)
    table.add_column(ratio=1, overflow="fold")
    for offset, line in enumerate(context.lines):
        number = context.first_line + offset
        inside = context.hit_start <= number <= context.hit_end
        body = highlight(line, query)
        if not inside:
            body.stylize("dim")
        table.add_row(Text(str(number), style="bold green" if inside else "dim"), body)
    return table


def markdown_escape(text: str) -> str:
    """``text`` shown as it is in a Markdown pane (file names hold ``_`` and ``*``)."""
    return re.sub(r"([\\`*_{}\[\]<>#|~])", r"\\\1", text)


def markdown_line(text: object) -> str:
    """One line of untrusted text (a citation, an error) for a Markdown pane: escaped for
    the terminal and for Markdown."""
    return markdown_escape(one_line(text))
