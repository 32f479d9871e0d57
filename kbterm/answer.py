"""``kbterm ask``: retrieve, rerank, then let Qwen3-VL-Instruct answer from the evidence.

Evidence is the best hits in final (reranked) order, within a budget (``ask.evidence`` pieces,
``ask.max_images`` images, ``ask.evidence_chars`` characters of text): PDF pages, photos and
video keyframes go to the model as images, text chunks as text, each labelled with its number
and citation.  A hit the reranker judged irrelevant (score below ``ask.min_rerank_score``; 0.5
is where the model's "yes" outweighs its "no") is not evidence; with no evidence left the
answer says so and no text is generated, so nothing is invented.

The answer streams; its ``[n]`` citations are checked against the evidence, and it ends with
the sources it cites (``[1] report.pdf, page 12``).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from kbterm.errors import KbtermError, ModelNotAvailable
from kbterm.retrieval import Filters, Hit, Medium, Results, Searcher

if TYPE_CHECKING:
    from kbterm.config import Config
    from kbterm.backends.base import AnswerBackend, Evidence

CITATION_RE = re.compile(r"\[(\d{1,3})\]")


class NoEvidence(KbtermError):
    """Nothing in the index is relevant to the question."""


class GeneratorMissing(KbtermError):
    """The answer model cannot be loaded."""


@dataclass
class Answer:
    question: str
    evidence: list[Hit] = field(default_factory=list)
    text: str = ""
    cancelled: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def citations(self) -> list[int]:
        """Evidence numbers the answer cites, in order of first use (unknown numbers dropped)."""
        seen: list[int] = []
        for m in CITATION_RE.finditer(self.text):
            n = int(m.group(1))
            if 1 <= n <= len(self.evidence) and n not in seen:
                seen.append(n)
        return seen

    def sources(self) -> list[tuple[int, Hit]]:
        """The cited evidence, or all of it when the answer cites none."""
        numbers = self.citations or list(range(1, len(self.evidence) + 1))
        return [(n, self.evidence[n - 1]) for n in numbers]

    def sources_text(self) -> str:
        return "\n".join(f"[{n}] {hit.citation()}" for n, hit in self.sources())

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question, "answer": self.text, "cancelled": self.cancelled,
            "citations": self.citations,
            "sources": [{"n": n, "citation": h.citation(), "source": h.path, "page": h.page,
                         "start_s": h.start_s, "end_s": h.end_s, "line_start": h.line_start,
                         "line_end": h.line_end, "image_path": h.image_path,
                         "rerank_score": h.rerank_score}
                        for n, h in enumerate(self.evidence, start=1)],
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
            "warnings": self.warnings,
        }


def select_evidence(results: Results, config: "Config") -> list[Hit]:
    """The hits that become evidence, in order, within the configured budget."""
    ask = config.ask
    chosen: list[Hit] = []
    images = chars = 0
    for hit in results.hits:
        if len(chosen) >= ask.evidence:
            break
        if hit.rerank_score is not None and hit.rerank_score < ask.min_rerank_score:
            continue
        if hit.modality != "text":
            if not hit.image_path or images >= ask.max_images:
                continue
            images += 1
        else:
            if chosen and chars + len(hit.content) > ask.evidence_chars:
                continue
            chars += len(hit.content)
        chosen.append(hit)
    return chosen


def to_evidence(hits: list[Hit], chars: int) -> list["Evidence"]:
    from kbterm.backends.base import Evidence

    out = []
    for n, hit in enumerate(hits, start=1):
        if hit.modality == "text":
            out.append(Evidence(n, hit.citation(), text=hit.content[:chars]))
        else:
            out.append(Evidence(n, hit.citation(), image=Path(hit.image_path or hit.path)))
    return out


class Asker:
    """Answers questions from the index (reuse it: models and the vector cache stay loaded)."""

    def __init__(self, config: "Config", *, searcher: Searcher | None = None,
                 generator: "AnswerBackend | None" = None) -> None:
        self.config = config
        self.searcher = searcher or Searcher(config)
        self._generator = generator

    @property
    def generator(self) -> "AnswerBackend":
        if self._generator is None:
            from kbterm.backends import get_generator

            self._generator = get_generator(self.config)
        return self._generator

    def prepare(self, question: str, image: "Medium | None" = None,
                filters: Filters | None = None) -> Answer:
        """Retrieve and choose the evidence (raises NoEvidence when none is relevant);
        ``image``: a picture's path or a :class:`~kbterm.models.inputs.Video` clip the question
        is about."""
        results = self.searcher.search(question, image, k=max(self.config.ask.evidence * 2, 10),
                                       rerank=True, filters=filters)
        answer = Answer(question=question, warnings=list(results.warnings))
        answer.timings_ms.update(results.timings_ms)
        answer.evidence = select_evidence(results, self.config)
        if not answer.evidence:
            what = "nothing in the index" if not results.hits else \
                "nothing the reranker judged relevant"
            raise NoEvidence(f"{what} answers this; try other words, or index more folders")
        return answer

    def prepare_from(self, results: Results) -> Answer:
        """Choose the evidence from results already on screen (the TUI)."""
        answer = Answer(question=results.query, warnings=list(results.warnings))
        answer.evidence = select_evidence(results, self.config)
        if not answer.evidence:
            raise NoEvidence("nothing in these results is relevant enough to answer from")
        return answer

    def stream(self, answer: Answer, cancel: threading.Event | None = None) -> Iterator[str]:
        """Generate the answer, yielding text as it comes (fills ``answer.text``)."""
        from kbterm.backends.base import GenerationStream

        t = time.perf_counter()
        evidence = to_evidence(answer.evidence, self.config.ask.evidence_chars)
        try:
            self.generator.warm()
        except ModelNotAvailable as exc:
            model = self.config.models.generator.model
            raise GeneratorMissing(
                f"the answer model {model} is not available ({exc}); fetch it with "
                "`kbterm pull generator`, or name a local checkpoint in "
                "models.generator.model") from None
        answer.timings_ms["load"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        stream: GenerationStream = self.generator.stream(answer.question, evidence,
                                                         cancel=cancel)
        try:
            for piece in stream:
                answer.text += piece
                yield piece
        finally:
            answer.cancelled = stream.cancelled
            stream.close()
            answer.timings_ms["generate"] = (time.perf_counter() - t) * 1000
