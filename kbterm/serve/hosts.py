"""The warm local models behind ``kbterm serve``: one per served role, with its coalescer.

Requests arrive as wire bodies (:mod:`kbterm.backends.wire`); here they become the same items
and messages the in-process backend builds, so a vector, a score or a greedy answer from the
server equals the in-process one.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from kbterm.backends.wire import TooLarge, WireError
from kbterm.errors import InputError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from kbterm.config import Config

log = logging.getLogger(__name__)


@dataclass
class EmbedJob:
    item: Any
    instruction: str | None
    dimensions: int = 0


@dataclass
class RerankJob:
    query: Any
    documents: list[Any]
    instruction: str | None


@dataclass
class RerankResult:
    scores: list[float]
    tokens: int
    errors: dict[int, str] = field(default_factory=dict)


class Hosts:
    """The served roles' models (loaded at start), their coalescers and their numbers."""

    def __init__(self, config: "Config", roles: Sequence[str]) -> None:
        from kbterm.models.registry import get_embedder, get_generator, get_reranker
        from kbterm.serve.batcher import Coalescer

        self.config = config
        self.roles = list(roles)
        sv = config.serve
        self.max_image_pixels = sv.max_image_pixels
        self.max_documents = sv.max_documents
        self.embedder = get_embedder(config) if "embedder" in roles else None
        self.reranker = get_reranker(config) if "reranker" in roles else None
        self.generator = get_generator(config) if "generator" in roles else None
        wait = sv.batch_wait_ms / 1000
        self.embeddings = Coalescer(self._embed, name="embedder", wait_s=wait,
                                    max_items=sv.max_batch_items) if self.embedder else None
        self.reranks = Coalescer(self._rerank, name="reranker", wait_s=wait,
                                 max_items=sv.max_batch_items,
                                 size=lambda job: len(job.documents)) if self.reranker else None
        self.generations = 0
        self.streams_open = 0
        self._count_lock = threading.Lock()

    def config_model(self, role: str) -> str:
        """A role's model name on the wire: the checkpoint the config names."""
        return getattr(self.config.models, role).model

    def config_limits(self) -> Any:
        from kbterm.models.encoding import VisionLimits

        model = self.embedder or self.reranker or self.generator
        return getattr(model, "limits", None) or VisionLimits()

    def models(self) -> dict[str, Any]:
        return {role: getattr(self, role) for role in self.roles}

    def load(self) -> None:
        """Load every served model now (a server is warm before it says it is ready)."""
        for role, model in self.models().items():
            log.info("loading the %s: %s", role, model.spec.model)
            model.load()

    def close(self) -> None:
        for coalescer in (self.embeddings, self.reranks):
            if coalescer is not None:
                coalescer.close()

    # ------------------------------------------------------------------ pictures

    def decode_image(self, data: bytes) -> "PILImage":
        """A picture a client sent, bounded by ``serve.max_image_pixels`` before decoding."""
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > self.max_image_pixels:
                raise TooLarge(f"an image of {width}x{height} pixels is over this server's "
                               f"limit of {self.max_image_pixels} pixels (serve.max_image_pixels)")
            image.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise WireError(f"an image cannot be decoded: {exc}") from None
        return image if image.mode == "RGB" else image.convert("RGB")

    # ------------------------------------------------------------------ embeddings

    def _embed(self, jobs: Sequence[EmbedJob]) -> list[tuple[np.ndarray, int]]:
        model = self.embedder
        assert model is not None
        lengths: list[int] = []
        vectors = model.embed_messages(jobs, lambda job: model.messages(job.item, job.instruction),
                                       lengths=lengths)
        out = []
        for job, vector, tokens in zip(jobs, vectors, lengths):
            if job.dimensions and job.dimensions < vector.shape[0]:
                vector = vector[: job.dimensions]
                vector = vector / np.float32(np.linalg.norm(vector))
            out.append((vector.astype(np.float32), tokens))
        return out

    # ------------------------------------------------------------------ reranking

    def _rerank(self, jobs: Sequence[RerankJob]) -> list[RerankResult]:
        model = self.reranker
        assert model is not None
        pairs = [(job.query, doc, job.instruction) for job in jobs for doc in job.documents]
        unreadable: dict[int, str] = {}
        lengths: list[int] = []
        scores = model.score_pairs(pairs, unreadable=unreadable, lengths=lengths)
        results, at = [], 0
        for job in jobs:
            n = len(job.documents)
            errors = {i - at: unreadable[i] for i in range(at, at + n) if i in unreadable}
            results.append(RerankResult(list(scores[at:at + n]), 0, errors))
            at += n
        total = sum(lengths)
        for r in results:  # tokens are shared out by document count (usage is a total)
            r.tokens = total * len(r.scores) // max(1, len(pairs))
        return results

    def forward_passes(self) -> dict[str, int]:
        return {role: int(model.calls) for role, model in self.models().items()}

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for role, model in self.models().items():
            entry: dict[str, Any] = {"forward_passes": int(model.calls)}
            coalescer = {"embedder": self.embeddings, "reranker": self.reranks}.get(role)
            if coalescer is not None:
                entry.update(requests=coalescer.requests, model_calls=coalescer.calls)
            if role == "generator":
                entry.update(generations=self.generations, streams_open=self.streams_open,
                             last_generated_tokens=getattr(model, "last_generated_tokens", 0))
            out[role] = entry
        return out


def input_error(exc: BaseException) -> bool:
    """Errors that are the request's fault (answered 4xx), not the server's."""
    return isinstance(exc, (InputError, WireError))
