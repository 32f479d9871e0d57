"""Parsers: one per file type behind one interface (``parse(path, ctx) -> Iterator[Section]``).

:data:`FILE_TYPES` (from :mod:`kbterm.filetypes`) maps a file suffix to its type; :func:`parse`
dispatches to the parser.  Importing this package is cheap: each parser imports its heavy library (PyMuPDF, decord, lxml)
when it is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from kbterm.filetypes import FILE_TYPES
from kbterm.ingest.base import ParseContext, ParseError, Section, describe

__all__ = ["FILE_TYPES", "PICTURE_TYPES", "ParseContext", "ParseError", "Section", "describe",
           "file_type", "parse"]

# The file types that have pictures (page images, the photo itself, video segments).
PICTURE_TYPES = frozenset({"pdf", "image", "video"})


def file_type(path: str | Path) -> str | None:
    """The type kbterm indexes ``path`` as, or None when kbterm does not read such files."""
    return FILE_TYPES.get(Path(path).suffix.lower())


def parse(path: Path, kind: str, ctx: ParseContext) -> Iterator[Section]:
    """The sections of ``path`` read as ``kind`` (a value of :data:`FILE_TYPES`); only its text
    or only its pictures when ``ctx.stage`` says so."""
    if (ctx.stage == "pictures" and kind not in PICTURE_TYPES) or (
            ctx.stage == "text" and kind in ("image", "video")):
        return iter(())
    if kind in ("text", "json"):
        from kbterm.ingest.text import parse_text

        return parse_text(path, ctx)
    if kind == "markdown":
        from kbterm.ingest.text import parse_markdown

        return parse_markdown(path, ctx)
    if kind == "html":
        from kbterm.ingest.html import parse_html

        return parse_html(path, ctx)
    if kind == "pdf":
        from kbterm.ingest.pdf import parse_pdf

        return parse_pdf(path, ctx)
    if kind == "image":
        from kbterm.ingest.image import parse_image

        return parse_image(path, ctx)
    if kind == "video":
        from kbterm.ingest.video import parse_video

        return parse_video(path, ctx)
    raise ValueError(f"unknown file type {kind!r}")
