"""Qwen3-VL-Reranker: how well a candidate answers a query, as a score in (0, 1).

Model input (the contract): a system message with the judging rule; a user message with
``<Instruct>: {instruction}``, ``<Query>:`` and the query's parts, ``\\n<Document>:`` and the
document's parts; the generation prompt.  Score = sigmoid(h . (W[yes] - W[no])) with h the last
hidden state at the final position (left padding keeps that position real in every row).

The reference scores one pair per forward pass; here pairs are batched by a token budget over
pairs sorted by length, and a batched score equals the single-pair score.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from kbterm.config import DEFAULT_RERANK_INSTRUCTION
from kbterm.errors import InputError
from kbterm.models.base import BatchedModel, ModelSpec, check_cancel
from kbterm.models.encoding import (
    GENERATION_PROMPT_TOKENS,
    Encoded,
    Encoder,
    VisionLimits,
    collate,
    parts_or_null,
)
from kbterm.models.inputs import Item, to_content
from kbterm.models.runtime import Runtime

SYSTEM_PROMPT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
# The generation prompt survives truncation.
KEEP_TAIL = GENERATION_PROMPT_TOKENS
# Below this many shared tokens, reusing the query prefix is not worth a separate pass.
MIN_SHARED_PREFIX = 16
# The bound of the document-side vision features kept between queries (kbterm.models.visioncache).
VISION_CACHE_MB = 512


class Reranker(BatchedModel):
    """``score(query, documents) -> list[float]``; loads the checkpoint on first use."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        instruction: str = DEFAULT_RERANK_INSTRUCTION,
        batch_tokens: int = 16384,
        max_length: int = 10240,
        limits: VisionLimits | None = None,
        share_prefix: bool = True,
        vision_cache_mb: int = VISION_CACHE_MB,
    ) -> None:
        super().__init__(spec, batch_tokens=batch_tokens, max_length=max_length, limits=limits)
        self.share_prefix = share_prefix
        self.default_instruction = instruction
        self.vision_cache_mb = vision_cache_mb
        # What the vision tower made of each image, kept while the model is loaded (None: off).
        self.vision_cache: Any = None
        self._score_vector: Any = None

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
        self._cache_kwarg = cache_kwarg(self._model)
        self._encoder = Encoder(processor, self.max_length)
        if self.vision_cache_mb > 0:
            from kbterm.models.visioncache import VisionCache

            self.vision_cache = VisionCache(self.vision_cache_mb << 20)

    def _unload(self) -> None:
        self._model = self._encoder = self._score_vector = self.vision_cache = None

    def _run(self, inputs: dict[str, Any], **kwargs: Any) -> Any:
        """A forward pass; the tower's outputs for the batch's images come from the vision
        cache when it is on."""
        from kbterm.models import visioncache

        cache = self.vision_cache
        if cache is None or not visioncache.has_pixels(inputs):
            return super()._run(inputs, **kwargs)
        names = visioncache.keys(inputs)  # on the host, before the batch moves
        return super()._run(inputs, call=lambda moved: visioncache.forward(
            self._model, moved, names, cache, self._cache_kwarg, **kwargs))

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
        self, query: Item, documents: Sequence[Item], instruction: str | None = None,
        *, cancel: threading.Event | None = None, unreadable: dict[int, str] | None = None,
    ) -> list[float]:
        """Relevance of each document to ``query`` in (0, 1), in document order.

        ``cancel``: once set, scoring stops before the next batch with
        :class:`~kbterm.errors.Cancelled` (the TUI sets it when a newer keystroke comes).
        ``unreadable``: given a dict, a document that cannot be read (an image file gone,
        damaged or too large) gets the score None and its reason in the dict, instead of
        failing the whole call."""
        return self.score_pairs([(query, doc, instruction) for doc in documents],
                                cancel=cancel, unreadable=unreadable)

    def score_pairs(
        self, pairs: Sequence[tuple[Item, Item, str | None]],
        *, cancel: threading.Event | None = None, unreadable: dict[int, str] | None = None,
        lengths: list[int] | None = None,
    ) -> list[float]:
        """Scores of (query, document, instruction) triples, in order; the queries may differ
        (``kbterm serve`` scores several clients' requests in the same batches).  ``lengths``,
        given a list, receives each readable pair's length in tokens."""
        self.load()
        if not pairs:
            return []
        order: list[int] = []  # the pairs that could be read, in order

        def readable() -> Iterator[Encoded]:
            for i, (query, doc, instruction) in enumerate(pairs):
                try:
                    encoded = self.encode(query, doc, instruction)
                except InputError as exc:
                    if unreadable is None:
                        raise
                    unreadable[i] = str(exc)
                    continue
                order.append(i)
                if lengths is not None:
                    lengths.append(encoded.length)
                yield encoded

        scores: list[float] = []
        for _, encoded in self._windows(readable(), lambda enc: enc):
            check_cancel(cancel)
            scores.extend(self._score_window(encoded, cancel))
        if unreadable is None:
            return scores
        out: list[float | None] = [None] * len(pairs)
        for i, value in zip(order, scores):
            out[i] = value
        return out  # type: ignore[return-value]

    def _score_window(self, encoded: list[Encoded],
                      cancel: threading.Event | None = None) -> list[float]:
        prefix = shared_prefix_length(encoded) if self.share_prefix and len(encoded) > 1 else 0
        if prefix >= MIN_SHARED_PREFIX:
            cache = self._prefix_cache(encoded[0].input_ids[:prefix])
            lengths = [e.length - prefix for e in encoded]

            def forward(batch: list[int]) -> list[float]:
                return self._forward_after_prefix([encoded[i] for i in batch], prefix, cache)
        else:
            lengths = [e.length for e in encoded]

            def forward(batch: list[int]) -> list[float]:
                return self._forward([encoded[i] for i in batch])

        return self._run_batched(lengths, forward, cancel)

    def _scores(self, hidden: Any) -> list[float]:
        import torch

        logits = hidden.float() @ self._score_vector.to(hidden.device)
        return torch.sigmoid(logits).cpu().tolist()

    def _forward(self, batch: list[Encoded]) -> list[float]:
        """Score whole pairs, left-padded (the reference's input, batched)."""
        assert self._encoder is not None
        inputs = collate(batch, self._encoder.pad_id, side="left")
        return self._scores(self._run(inputs, use_cache=False).last_hidden_state[:, -1])

    # ------------------------------------------------------------- shared query prefix
    #
    # Every pair of one query starts with the same tokens (system prompt, instruction, query,
    # "<Document>:").  They are run once; their keys and values are reused for every document,
    # which then runs only its own tokens.  Causal attention makes this exact: the prefix's states
    # do not depend on what follows it.  Each document's positions are those it has in its full
    # sequence (multimodal RoPE included), so the final hidden state equals the single-pair one.

    def _prefix_cache(self, prefix_ids: Any) -> Any:
        import torch

        ids = prefix_ids[None]
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return kv_cache(self._run(inputs, use_cache=True))

    def _positions(self, enc: Encoded) -> Any:
        """M-RoPE position ids (3, L) of one whole pair, as the model computes them."""
        import torch

        n = enc.length
        if enc.image_grid_thw is None and enc.video_grid_thw is None:
            return torch.arange(n).view(1, -1).expand(3, -1)
        assert self._model is not None
        positions, _ = self._model.get_rope_index(
            enc.input_ids[None],
            enc.mm_token_type_ids[None],
            image_grid_thw=enc.image_grid_thw,
            video_grid_thw=None if enc.video_grid_thw is None else enc.video_grid_thw.clone(),
        )
        return positions[:, 0]

    def _forward_after_prefix(self, batch: list[Encoded], prefix: int, cache: Any) -> list[float]:
        import copy

        import torch

        assert self._encoder is not None
        suffixes = [
            replace(e, input_ids=e.input_ids[prefix:], mm_token_type_ids=e.mm_token_type_ids[prefix:])
            for e in batch
        ]
        inputs = collate(suffixes, self._encoder.pad_id, side="left")
        width = inputs["input_ids"].shape[1]
        positions = torch.zeros((3, len(batch), width), dtype=torch.long)
        for row, enc in enumerate(batch):
            pos = self._positions(enc)[:, prefix:]
            positions[:, row, width - pos.shape[1]:] = pos
        n = len(batch)
        inputs["attention_mask"] = torch.cat(
            [torch.ones((n, prefix), dtype=torch.long), inputs["attention_mask"]], dim=1
        )
        inputs["position_ids"] = positions
        past = copy.deepcopy(cache)
        if n > 1:
            past.batch_repeat_interleave(n)
        out = self._run(inputs, **{self._cache_kwarg: past}, use_cache=True)
        return self._scores(out.last_hidden_state[:, -1])


def kv_cache(output: Any) -> Any:
    """The key/value cache a forward pass returned (``cache`` from transformers 5.24,
    ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def cache_kwarg(model: Any) -> str:
    """The name the base model's ``forward`` takes a cache under: ``cache`` from transformers
    5.24 (``past_key_values`` is deprecated there, gone in 5.40), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters \
        else "past_key_values"


def shared_prefix_length(encoded: Sequence[Encoded]) -> int:
    """Tokens every pair starts with, stopping before any image or video token and leaving
    each pair at least one token of its own."""
    import torch

    first = encoded[0]
    limit = min(e.length for e in encoded) - 1
    visual = torch.nonzero(first.mm_token_type_ids[:limit] != 0)
    if len(visual):
        limit = int(visual[0])
    if limit <= 0:
        return 0
    same = torch.ones(limit, dtype=torch.bool)
    for e in encoded[1:]:
        same &= e.input_ids[:limit] == first.input_ids[:limit]
    differing = torch.nonzero(~same)
    return int(differing[0]) if len(differing) else limit
