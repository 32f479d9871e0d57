"""Qwen3-VL-Embedding: text, images, pages and video in one vector space.

Model input (the contract): a system message holding the instruction (punctuated) and a user
message holding the item's videos, images and texts, rendered with the chat template and the
generation prompt; right padding; the hidden state of the last non-padding token of the base
model (no LM head) is the embedding; its first ``dimension`` values (Matryoshka) are L2-normalised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kbterm.config import DEFAULT_DOCUMENT_INSTRUCTION
from kbterm.models.base import BatchedModel, ModelSpec
from kbterm.models.encoding import (
    Encoded,
    Encoder,
    VisionLimits,
    collate,
    parts_or_null,
    with_punctuation,
)
from kbterm.models.inputs import Item, to_content
from kbterm.models.runtime import Runtime

Progress = Callable[[int, int], None]


class Embedder(BatchedModel):
    """``embed(items) -> float32 [n, dim]``; loads the checkpoint on first use."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        dimension: int = 0,
        instruction: str = DEFAULT_DOCUMENT_INSTRUCTION,
        batch_tokens: int = 16384,
        max_length: int = 8192,
        limits: VisionLimits | None = None,
    ) -> None:
        super().__init__(spec, batch_tokens=batch_tokens, max_length=max_length, limits=limits)
        self.requested_dimension = dimension
        self.default_instruction = instruction

    # ------------------------------------------------------------------ loading

    def _load(self, path: Path, runtime: Runtime) -> None:
        from transformers import AutoProcessor, Qwen3VLModel

        processor = AutoProcessor.from_pretrained(str(path))
        model = self._from_pretrained(Qwen3VLModel, path, runtime)
        full = int(model.config.text_config.hidden_size)
        dim = self.requested_dimension or full
        if not 1 <= dim <= full:
            raise ValueError(f"embedding dimension {dim} is outside 1..{full} for this model")
        self._model, self._encoder, self._dimension = model, Encoder(processor, self.max_length), dim

    def _unload(self) -> None:
        self._model = self._encoder = None

    def tokenizer(self) -> Any:
        """The checkpoint's fast tokenizer, for cutting text into chunks (its file only: the
        weights do not load)."""
        from kbterm.backends.tokenizer import folder_tokenizer

        return folder_tokenizer(self.model_folder())

    @property
    def dimension(self) -> int:
        """The size of the vectors :meth:`embed` returns (loads the model)."""
        self.load()
        return self._dimension

    # ------------------------------------------------------------------ inference

    def messages(self, item: Item, instruction: str | None = None) -> list[dict[str, Any]]:
        """The two-message chat the contract prescribes for one item."""
        instruction = with_punctuation(instruction or self.default_instruction)
        return [
            {"role": "system", "content": [{"type": "text", "text": instruction}]},
            {"role": "user", "content": parts_or_null(to_content(item), self.limits)},
        ]

    def encode(self, item: Item, instruction: str | None = None) -> Encoded:
        self.load()
        assert self._encoder is not None
        return self._encoder.encode(self.messages(item, instruction))

    def embed(
        self,
        items: Sequence[Item],
        instruction: str | None = None,
        *,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Embed ``items`` (documents by default; pass the query instruction for queries).

        Returns a float32 array ``[len(items), dimension]`` of unit vectors, in input order.
        """
        return self.embed_messages([(item, instruction) for item in items],
                                   lambda pair: self.messages(*pair), progress=progress)

    def embed_messages(self, inputs: Sequence[Any], build: Callable[[Any], list[dict[str, Any]]],
                       *, progress: Progress | None = None,
                       lengths: list[int] | None = None) -> np.ndarray:
        """Embed inputs whose chat messages ``build`` gives (built one window at a time, so
        pictures of a long list never sit in memory at once).  ``kbterm serve`` passes the
        messages a client sent, requests of several clients in one call; ``lengths``, given a
        list, receives each input's length in tokens."""
        self.load()
        if not inputs:
            return np.zeros((0, self._dimension), dtype=np.float32)
        out = np.zeros((len(inputs), self._dimension), dtype=np.float32)
        assert self._encoder is not None
        encoder = self._encoder
        for start, encoded in self._windows(inputs, lambda x: encoder.encode(build(x))):
            rows = self._run_batched(
                [e.length for e in encoded],
                lambda batch, encoded=encoded: self._forward([encoded[i] for i in batch]),
            )
            out[start:start + len(encoded)] = np.stack(rows)
            if lengths is not None:
                lengths.extend(e.length for e in encoded)
            if progress is not None:
                progress(start + len(encoded), len(inputs))
        return out

    def _forward(self, batch: list[Encoded]) -> np.ndarray:
        import torch

        assert self._encoder is not None
        inputs = collate(batch, self._encoder.pad_id, side="right")
        hidden = self._run(inputs, use_cache=False).last_hidden_state
        mask = inputs["attention_mask"].to(hidden.device)
        # Position of the last 1 in each row's attention mask.
        last = mask.shape[1] - 1 - mask.flip(dims=[1]).argmax(dim=1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        pooled = pooled[:, : self._dimension].float()
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled.cpu().numpy()
