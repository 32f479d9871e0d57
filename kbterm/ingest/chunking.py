"""Cutting text into chunks by tokens of the embedder's tokenizer.

A chunk is at most ``size`` tokens; consecutive chunks of one section share ``overlap`` tokens so
that a sentence cut at a boundary is whole in one of them.  Where a chunk would end mid-paragraph,
the cut moves back to the last line break in the final quarter of the window, so chunks tend to
end where the author ended a line.  Every chunk keeps the line range it covers in the file.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any, Protocol

# A cut looks back at most this fraction of the window for a line break.
BREAK_LOOKBACK = 0.25
_NEWLINE = re.compile("\n")


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class TextChunk:
    """A piece of a section's text and where it lies in the file."""

    text: str
    line_start: int | None
    line_end: int | None
    tokens: int


class Chunker:
    """Cuts section texts with a (fast) Hugging Face tokenizer's offset mapping."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]  # type: ignore[misc]

    def split(
        self, text: str, size: int, overlap: int, line_start: int | None = None
    ) -> list[TextChunk]:
        """Chunks of ``text`` (``line_start``: the file line where ``text`` begins, 1-based)."""
        if size < 1 or not 0 <= overlap < size:
            raise ValueError(f"bad chunk size/overlap: {size}/{overlap}")
        if not text.strip():
            return []
        offsets = self._offsets(text)
        n = len(offsets)
        newlines = [m.start() for m in _NEWLINE.finditer(text)] if line_start is not None else []
        spans: list[tuple[int, int, int]] = []  # (char start, char end, tokens)
        if n <= size:
            spans.append((0, len(text), n))
        else:
            start = 0
            lookback = max(1, int(size * BREAK_LOOKBACK))
            while start < n:
                end = min(start + size, n)
                if end < n:
                    end = self._break_at_line(text, offsets, start, end, lookback)
                spans.append((offsets[start][0], offsets[end - 1][1], end - start))
                if end >= n:
                    break
                start = max(end - overlap, start + 1)
        chunks: list[TextChunk] = []
        for cs, ce, tokens in spans:
            # Drop surrounding whitespace, so line ranges name the lines that hold text.
            while cs < ce and text[cs].isspace():
                cs += 1
            while ce > cs and text[ce - 1].isspace():
                ce -= 1
            if cs >= ce:
                continue
            if line_start is None:
                first = last = None
            else:
                first = line_start + bisect.bisect_left(newlines, cs)
                last = line_start + bisect.bisect_left(newlines, ce - 1)
            chunks.append(TextChunk(text[cs:ce], first, last, tokens))
        return chunks

    @staticmethod
    def _break_at_line(
        text: str, offsets: list[tuple[int, int]], start: int, end: int, lookback: int
    ) -> int:
        """Move a cut back to just after a token that ends a line, if one is near the end."""
        for j in range(end - 1, max(start, end - lookback) - 1, -1):
            s, e = offsets[j]
            if e > s and "\n" in text[s:e]:
                return j + 1
        return end
