"""What the app's workers (threads) report to the app; each a small dataclass.

Workers never touch widgets: they post one of these, and the app's handlers, on the UI
thread, update the widgets.  A worker that reports after the app has closed posts into the
void, which is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from kbterm.answer import Answer
    from kbterm.retrieval import Hit, Results


@dataclass
class SearchDone(Message):
    """Hits for query number ``seq``: the keyword hits first (``results.stage`` "keywords"),
    then the fused list, then ``reranked``."""

    seq: int
    results: "Results"
    reranked: bool


@dataclass
class SearchFailed(Message):
    """Query ``seq`` failed; ``error`` says why in one line."""

    seq: int
    error: str


@dataclass
class AnswerProgress(Message):
    """More of ``answer`` is written (``done``: all of it, or it stopped or failed)."""

    answer: "Answer"
    done: bool = False

    def can_replace(self, message: Message) -> bool:
        # A burst of tokens collapses into one repaint (the newer message supersedes this one).
        return (isinstance(message, AnswerProgress) and message.answer is self.answer
                and not self.done)


@dataclass
class ModelState(Message):
    """The embedder's state for the status bar, long to short."""

    forms: tuple[str, ...]


@dataclass
class ErrorShown(Message):
    """An error for the status bar."""

    error: str


@dataclass
class IndexCounted(Message):
    """The index as last read: files indexed, chunks, files that failed (``files_known``:
    whether the ledger has any file at all, failed ones included)."""

    files: int
    chunks: int
    failed: int
    files_known: bool


@dataclass
class PictureLoaded(Message):
    """The picture of a hit (its photo, page or keyframe, or a PDF text hit's page) is
    decoded, at a preview's size; ``before``: it goes above the hit's text."""

    hit: "Hit"
    picture: Any
    before: bool
