"""What a parser yields: :class:`Section` objects with their provenance.

A parser turns one file into a stream of sections.  A *text* section is text the indexer will
cut into token chunks; an *image* section (an image file, a rendered PDF page) and a *video*
section (a segment of a clip as frames at 1 fps) are embedded as they are.  Every section says
where it came from (page, first line, time range) so that a search hit can cite it exactly.

Parsers are generators so that a 300-page PDF or a 200 MB text file never sits in memory whole:
the indexer pulls sections, chunks and embeds them, and drops them.

A parser that cannot read a file at all raises :class:`ParseError` with a reason a person can
act on ("PDF is password-protected"); a problem with part of a file (one unreadable page) is
reported with :meth:`ParseContext.warn` and the rest of the file is still indexed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from kbterm.errors import KbtermError
from kbterm.models.encoding import VisionLimits

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

SectionKind = Literal["text", "image", "video"]


class ParseError(KbtermError):
    """A file cannot be indexed at all; the message is the reason kept in the ledger."""


@dataclass
class Section:
    """One piece of a file, ready to be chunked (text) or embedded (image, video)."""

    kind: SectionKind
    text: str = ""
    # kind == "image": the picture, upright, RGB, already within the contract's pixel limits.
    image: "PILImage | None" = None
    # kind == "video": the frames of one segment, 1 per second (at most 64), RGB.
    frames: "list[PILImage] | None" = None
    # kind == "video": one frame of the segment kept for previews.
    keyframe: "PILImage | None" = None
    page: int | None = None  # 1-based PDF page
    line_start: int | None = None  # 1-based line of the file where ``text`` starts
    start_s: float | None = None  # video segment start, seconds
    end_s: float | None = None  # video segment end, seconds
    title: str = ""  # HTML <title>, Markdown heading path
    # A stable digest of the section's pixels or frames (hex); equal digests let the indexer
    # reuse a vector instead of embedding again.  Text sections leave it empty.
    fingerprint: str = ""


@dataclass
class ParseContext:
    """Settings parsers need and the warnings they report."""

    limits: VisionLimits = field(default_factory=VisionLimits)
    video_segment_seconds: float = 30.0
    # Text files are read in blocks of about this many characters (bounded memory).
    text_block_chars: int = 1 << 20
    warnings: list[str] = field(default_factory=list)
    # How far the parser is within the file, for progress: ``done`` of ``total`` ``unit``s
    # (pages of a PDF, seconds of a video); total 0 when it cannot know.
    unit: str = ""
    total: float = 0
    done: float = 0
    # Which part of the file to read: "text", "pictures" (page images, photos, video
    # segments) or "" (both, in file order).  The indexer reads text first, pictures after.
    stage: str = ""

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def position(self) -> str:
        """"page 12 of 285", "01:30 of 12:00" (empty when the parser does not say)."""
        if not self.total:
            return ""
        if self.unit == "s":
            return f"{clock(self.done)} of {clock(self.total)}"
        return f"{self.unit} {self.done:g} of {self.total:g}"


def clock(seconds: float) -> str:
    """A time in a video: ``01:23``, or ``1:02:03`` past an hour (citations, progress)."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 \
        else f"{s // 60:02d}:{s % 60:02d}"


def describe(exc: BaseException) -> str:
    """One line for an unexpected exception (its type when it has no message)."""
    text: Any = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
