"""Qwen3-VL-Instruct: answers written from retrieved evidence, streamed token by token.

The chat is the standard Qwen3-VL one: a system message saying how to answer and cite, then a
user message holding the evidence (images as image parts, text as text parts, each labelled with
its citation number) and the question.  Generation runs in a thread feeding a
``TextIteratorStreamer``; a stopping criterion checks a cancel flag after every token, so an
answer can be stopped between tokens (Escape in the TUI, Ctrl-C in the CLI).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

from kbterm.errors import InputError
from kbterm.models.base import LazyModel, ModelSpec
from kbterm.models.encoding import (
    GENERATION_PROMPT_TOKENS,
    Encoder,
    VisionLimits,
    collate,
    load_image,
    move,
)
from kbterm.models.runtime import Runtime

log = logging.getLogger(__name__)

# Qwen3-VL's context length in tokens.
CONTEXT_LENGTH = 32768

SYSTEM_PROMPT = (
    "You are kbterm, an assistant that answers questions about the user's own files. "
    "Answer only from the numbered evidence below. Cite every statement with the number of the "
    "evidence that supports it, in square brackets, like [1] or [2][3]. If the evidence does not "
    "contain the answer, say that the knowledge base does not contain it; do not guess. "
    "Be concise."
)


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


class Generator(LazyModel):
    """``stream(question, evidence)`` yields the answer as it is generated."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        limits: VisionLimits | None = None,
    ) -> None:
        super().__init__(spec)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.limits = limits or VisionLimits()
        self._model: Any = None
        self._processor: Any = None
        self._encoder: Encoder | None = None
        self.last_generated_tokens = 0  # tokens produced by the last stream (tests read it)

    def _load(self, path: Path, runtime: Runtime) -> None:
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        self._processor = AutoProcessor.from_pretrained(str(path))
        self._encoder = Encoder(self._processor, CONTEXT_LENGTH)
        self._model = self._from_pretrained(Qwen3VLForConditionalGeneration, path, runtime)

    def _unload(self) -> None:
        self._model = self._processor = self._encoder = None

    def messages(self, question: str, evidence: Sequence[Evidence]) -> list[dict[str, Any]]:
        """System prompt, then the labelled evidence and the question."""
        content: list[dict[str, Any]] = []
        for ev in evidence:
            content.append({"type": "text", "text": f"[{ev.number}] {ev.citation}:\n"})
            if ev.image is not None:
                try:
                    picture = load_image(ev.image, self.limits)
                except InputError as exc:
                    # One unreadable picture (replaced, damaged, too large) costs its
                    # evidence, not the answer.
                    log.warning("evidence [%d] left out: %s", ev.number, exc)
                    content.append({"type": "text", "text": "(its picture could not be read)\n"})
                else:
                    content.append(
                        {
                            "type": "image",
                            "image": picture,
                            "min_pixels": self.limits.image_min_pixels,
                            "max_pixels": self.limits.image_max_pixels,
                        }
                    )
            if ev.text:
                content.append({"type": "text", "text": ev.text.strip() + "\n"})
        if not evidence:
            content.append({"type": "text", "text": "(no evidence was found)\n"})
        content.append({"type": "text", "text": f"\nQuestion: {question}"})
        return [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": content},
        ]

    def _inputs(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        assert self._encoder is not None
        # Over the context, evidence gives way: the question and the generation prompt stay.
        question = messages[-1]["content"][-1]["text"]
        tail = len(self._processor.tokenizer(question)["input_ids"]) + GENERATION_PROMPT_TOKENS
        enc = self._encoder.encode(messages, keep_tail=tail)
        inputs = collate([enc], self._encoder.pad_id, side="left")
        return move(inputs, self._model.device, self._model.dtype)

    def stream(
        self,
        question: str,
        evidence: Sequence[Evidence],
        *,
        max_new_tokens: int | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationStream:
        """Start generating an answer; iterate the result for text pieces as they come."""
        self.load()
        cancel = cancel or threading.Event()
        inputs = self._inputs(self.messages(question, evidence))
        return GenerationStream(self._run(inputs, max_new_tokens, cancel), cancel)

    def _run(
        self, inputs: dict[str, Any], max_new_tokens: int | None, cancel: threading.Event
    ) -> Iterator[str]:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        prompt_len = int(inputs["input_ids"].shape[1])

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                import torch

                done = cancel.is_set()
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool,
                                  device=input_ids.device)

        streamer = TextIteratorStreamer(
            self._processor.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        sampling: dict[str, Any] = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature}
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock:
                    output = self._model.generate(
                        **inputs,
                        streamer=streamer,
                        max_new_tokens=max_new_tokens or self.max_new_tokens,
                        stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                        **sampling,
                    )
                self.last_generated_tokens = int(output.shape[1]) - prompt_len
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, name="kbterm-generate", daemon=True)
        thread.start()
        finished = False
        try:
            for piece in streamer:
                if piece:
                    yield piece
            finished = True
        finally:
            if not finished and thread.is_alive():  # the consumer stopped early: stop too
                cancel.set()
            thread.join()
        if failure:
            raise failure[0]
