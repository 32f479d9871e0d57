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
from pathlib import Path
from typing import Any, Iterator, Sequence

from kbterm.backends.base import Evidence, GenerationStream
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
        self.forward_calls = 0  # generations run (kbterm serve's stats read it)

    def _load(self, path: Path, runtime: Runtime) -> None:
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        self._processor = AutoProcessor.from_pretrained(str(path))
        self._encoder = Encoder(self._processor, CONTEXT_LENGTH)
        self._model = self._from_pretrained(Qwen3VLForConditionalGeneration, path, runtime)

    def _unload(self) -> None:
        self._model = self._processor = self._encoder = None

    def messages(self, question: str, evidence: Sequence[Evidence]) -> list[dict[str, Any]]:
        """System prompt, then the labelled evidence and the question."""
        return answer_messages(question, evidence, self.limits)

    def _inputs(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        assert self._encoder is not None
        # Over the context, evidence gives way: the question and the generation prompt stay.
        last = messages[-1]["content"][-1] if messages[-1]["content"] else {}
        tail = GENERATION_PROMPT_TOKENS
        if last.get("type") == "text":
            tail += len(self._processor.tokenizer(last["text"])["input_ids"])
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
        return self.stream_messages(self.messages(question, evidence),
                                    max_new_tokens=max_new_tokens, cancel=cancel)

    def stream_messages(
        self,
        messages: list[dict[str, Any]],
        *,
        max_new_tokens: int | None = None,
        cancel: threading.Event | None = None,
        temperature: float | None = None,
    ) -> GenerationStream:
        """Generate from chat messages (``kbterm serve`` passes a client's)."""
        self.load()
        cancel = cancel or threading.Event()
        inputs = self._inputs(messages)
        return GenerationStream(self._run(inputs, max_new_tokens, cancel, temperature), cancel)

    def _run(
        self, inputs: dict[str, Any], max_new_tokens: int | None, cancel: threading.Event,
        temperature: float | None = None,
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
        temperature = self.temperature if temperature is None else temperature
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature}
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
                self.forward_calls += 1
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


def answer_messages(question: str, evidence: Sequence[Evidence],
                    limits: VisionLimits) -> list[dict[str, Any]]:
    """The answer prompt: system prompt, then the labelled evidence and the question (pictures
    as PIL images read with ``limits``; the server backend sends the same chat)."""
    content: list[dict[str, Any]] = []
    for ev in evidence:
        content.append({"type": "text", "text": f"[{ev.number}] {ev.citation}:\n"})
        if ev.image is not None:
            try:
                picture = load_image(ev.image, limits)
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
                        "min_pixels": limits.image_min_pixels,
                        "max_pixels": limits.image_max_pixels,
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
