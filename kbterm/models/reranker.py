"""Qwen3-VL-Reranker: how well a candidate answers a query, as a score in (0, 1).

Model input (the contract): a system message with the judging rule; a user message with
``<Instruct>: {instruction}``, ``<Query>:`` and the query's parts, ``\\n<Document>:`` and the
document's parts; the generation prompt.  Score = sigmoid(h . (W[yes] - W[no])) with h the last
hidden state at the final position (left padding keeps that position real in every row).

The reference scores one pair per forward pass; here pairs are batched by a token budget over
pairs sorted by length, and a batched score equals the single-pair score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from kbterm.config import DEFAULT_RERANK_INSTRUCTION
from kbterm.models.base import LazyModel, ModelSpec
from kbterm.models.encoding import (
    Encoded,
    Encoder,
    VisionLimits,
    collate,
    move,
    parts_or_null,
    plan_batches,
)
from kbterm.models.inputs import Item, to_content
from kbterm.models.runtime import Runtime

SYSTEM_PROMPT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
# The generation prompt (<|im_end|>\n<|im_start|>assistant\n) survives truncation.
KEEP_TAIL = 5


class Reranker(LazyModel):
    """``score(query, documents) -> list[float]``; loads the checkpoint on first use."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        instruction: str = DEFAULT_RERANK_INSTRUCTION,
        batch_tokens: int = 16384,
        max_length: int = 10240,
        limits: VisionLimits | None = None,
    ) -> None:
        super().__init__(spec)
        self.default_instruction = instruction
        self.batch_tokens = batch_tokens
        self.max_length = max_length
        self.limits = limits or VisionLimits()
        self._model: Any = None
        self._encoder: Encoder | None = None
        self._score_vector: Any = None
        self.forward_calls = 0

    def _load(self, path: Path, runtime: Runtime) -> None:
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        processor = AutoProcessor.from_pretrained(str(path))
        lm = self._from_pretrained(Qwen3VLForConditionalGeneration, path, runtime)
        vocab = processor.tokenizer.get_vocab()
        missing = [w for w in ("yes", "no") if w not in vocab]
        if missing:
            raise ValueError(f"tokenizer has no single token for {', '.join(missing)}")
        weight = lm.get_output_embeddings().weight
        # Only the difference of two LM-head rows is needed; keep it in float32.
        self._score_vector = (weight[vocab["yes"]] - weight[vocab["no"]]).detach().float().clone()
        self._model = lm.model  # the LM head itself is not needed past this point
        self._encoder = Encoder(processor, self.max_length)

    def _unload(self) -> None:
        self._model = self._encoder = self._score_vector = None

    def messages(
        self, query: Item, document: Item, instruction: str | None = None
    ) -> list[dict[str, Any]]:
        """The chat the contract prescribes for one (query, document) pair."""
        user = [{"type": "text", "text": "<Instruct>: " + (instruction or self.default_instruction)}]
        user.append({"type": "text", "text": "<Query>:"})
        user.extend(parts_or_null(to_content(query), self.limits))
        user.append({"type": "text", "text": "\n<Document>:"})
        user.extend(parts_or_null(to_content(document), self.limits))
        return [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": user},
        ]

    def encode(self, query: Item, document: Item, instruction: str | None = None) -> Encoded:
        self.load()
        assert self._encoder is not None
        return self._encoder.encode(self.messages(query, document, instruction), keep_tail=KEEP_TAIL)

    def score(
        self, query: Item, documents: Sequence[Item], instruction: str | None = None
    ) -> list[float]:
        """Relevance of each document to ``query`` in (0, 1), in document order."""
        self.load()
        if not documents:
            return []
        encoded = [self.encode(query, doc, instruction) for doc in documents]
        scores = [0.0] * len(documents)
        for batch in plan_batches([e.length for e in encoded], self.batch_tokens, self.pass_overhead):
            for i, s in zip(batch, self._forward([encoded[i] for i in batch])):
                scores[i] = s
        return scores

    def _forward(self, batch: list[Encoded]) -> list[float]:
        import torch

        assert self._model is not None and self._encoder is not None
        inputs = collate(batch, self._encoder.pad_id, side="left")
        inputs = move(inputs, self._model.device, self._model.dtype)
        with self._lock, torch.inference_mode():
            hidden = self._model(**inputs, use_cache=False).last_hidden_state[:, -1]
            self.forward_calls += 1
        logits = hidden.float() @ self._score_vector.to(hidden.device)
        return torch.sigmoid(logits).cpu().tolist()
