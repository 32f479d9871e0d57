"""The model seam: one small interface per role, and where a role's model runs.

The indexer, searcher, asker, TUI and doctor talk to models only through these three
interfaces.  Two backends implement them:

* ``local``: the checkpoint runs in this process (:mod:`kbterm.models`, torch + transformers);
* ``server``: an HTTP client of an OpenAI-compatible model server, a vLLM server or a
  ``kbterm serve`` (:mod:`kbterm.backends.client`; no torch in this process).

:func:`kbterm.backends.get_embedder` and its siblings pick one per role from the config.
Nothing here imports torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    from kbterm.models.encoding import VisionLimits
    from kbterm.models.inputs import Item

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Host:
    """Where one role's model runs, in words for people (doctor, the TUI's status bar)."""

    kind: str  # "in process", "kbterm serve" or "server"
    model: str  # the checkpoint (a Hub id, a folder, or the server's model name)
    device: str = ""  # "cpu", "cuda", "mps" ("" when a server does not say)
    dtype: str = ""
    url: str = ""  # the server's address (server kinds)
    why: str = ""  # why this host and this runtime were chosen

    def describe(self) -> str:
        """One line: ``in process, cpu bfloat16`` or ``kbterm serve at http://…, cpu float32``."""
        runtime = " ".join(p for p in (self.device, self.dtype) if p)
        where = self.kind + (f" at {self.url}" if self.url else "")
        return f"{where}, {runtime}" if runtime else where


@dataclass(frozen=True)
class Evidence:
    """One retrieved piece of evidence: text, an image (page, photo, keyframe), or both."""

    number: int
    citation: str  # e.g. "report.pdf, page 12" or "talk.mp4 @ 01:23-01:53"
    text: str | None = None
    image: Union[str, Path, Any, None] = None  # a path or a PIL image


class GenerationStream:
    """An iterator over answer text pieces that can be cancelled between tokens."""

    def __init__(self, pieces: Iterator[str], cancel: threading.Event) -> None:
        self._pieces = pieces
        self._cancel = cancel

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        """Stop generating after the current token; iteration then ends."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def close(self) -> None:
        self.cancel()
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


class TextTokenizer(Protocol):
    """What the chunker needs: a Hugging Face style call giving token ids and char offsets."""

    def __call__(self, text: str, add_special_tokens: bool = False,
                 return_offsets_mapping: bool = False) -> dict[str, Any]: ...


class RoleBackend(Protocol):
    """What every role has."""

    @property
    def loaded(self) -> bool:
        """Whether weights are in memory here (always False for a server)."""

    @property
    def calls(self) -> int:
        """Model calls made so far: forward passes in process, requests to a server."""

    def warm(self) -> None:
        """Load the model or reach the server now (raises a one-line KbtermError if neither)."""

    def host(self) -> Host:
        """Where this role runs (loads or connects first)."""

    def release(self) -> bool:
        """Free this process's copy of the weights, if any; whether there was one."""


class EmbeddingBackend(RoleBackend, Protocol):
    """``embed(items) -> float32 [n, dim]`` unit vectors in one space for text and pictures."""

    limits: "VisionLimits"

    @property
    def dimension(self) -> int:
        """The size of the vectors :meth:`embed` returns."""

    def tokenizer(self) -> TextTokenizer:
        """The embedder's tokenizer, for chunking (tokenizer files only: no weights)."""

    def embed(self, items: Sequence["Item"], instruction: str | None = None, *,
              progress: Progress | None = None) -> np.ndarray: ...


class RerankBackend(RoleBackend, Protocol):
    """``score(query, documents) -> [0..1]``: how well each document answers the query."""

    limits: "VisionLimits"

    def score(self, query: "Item", documents: Sequence["Item"], instruction: str | None = None,
              *, cancel: threading.Event | None = None,
              unreadable: dict[int, str] | None = None) -> list[float]:
        """Scores in document order.  ``cancel``: stop before the next batch (raises
        :class:`~kbterm.errors.Cancelled`).  ``unreadable``: given a dict, a document that
        cannot be read gets None and its reason in the dict instead of failing the call."""


class AnswerBackend(RoleBackend, Protocol):
    """``stream(question, evidence)``: the answer, piece by piece, cancellable."""

    def stream(self, question: str, evidence: Sequence[Evidence], *,
               max_new_tokens: int | None = None,
               cancel: threading.Event | None = None) -> GenerationStream: ...
