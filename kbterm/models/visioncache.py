"""The reranker's document-side vision features, kept for the next query.

Search as you type reranks mostly the same candidates at every keystroke, and most of the cost of
a picture, a PDF page or a keyframe is the vision tower.  What the tower makes of an image (its
merged visual tokens and the DeepStack features it feeds to the first language-model layers)
depends on the image's pixels alone, never on the query, so it is computed once and reused.

* **Key**: a digest of the pixel values and patch grid the processor produced.  It is a content
  key: the same picture found under another path hits, a file changed in place misses, and so
  does the same file under other vision limits (other pixels).
* **Bound**: least recently used out first, by bytes (``models.reranker.vision_cache_mb``); the
  features are kept in host memory, whatever the device.
* **Invalidation**: the reranker clears it whenever it loads or releases its model.

:func:`forward` is the glue ``Qwen3VLModel.forward`` runs when given pixel values (token
embeddings, the visual features scattered into their placeholders, the visual mask and DeepStack
features handed to the language model, M-RoPE positions from the same ``get_rope_index``), with
the tower's outputs taken from the cache.  Each image goes through the tower on its own, as in
the reference's one-pair-per-pass scoring; scores equal the model's own forward (tested).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable

import torch

# (pixel values key, grid key, placeholder token attribute of the config)
_KINDS = (
    ("pixel_values", "image_grid_thw", "image_token_id"),
    ("pixel_values_videos", "video_grid_thw", "video_token_id"),
)


@dataclass(frozen=True)
class Features:
    """The vision tower's outputs for one image (or one video's frames)."""

    embeds: torch.Tensor  # (merged tokens, hidden)
    deepstack: tuple[torch.Tensor, ...]  # one (merged tokens, hidden) per DeepStack layer

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.embeds, *self.deepstack))


class VisionCache:
    """``get(key)`` / ``put(key, features)`` under a byte bound, LRU; thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.nbytes = 0
        self._items: OrderedDict[Hashable, Features] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Features | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: Hashable, features: Features) -> None:
        size = features.nbytes
        if size > self.max_bytes:
            return  # larger than the whole bound: not kept
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._items[key] = features
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.nbytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


def digest(pixels: torch.Tensor, grid: torch.Tensor) -> str:
    """A content key for one image's pixel values and its (t, h, w) patch grid."""
    # SHA-256: collision-safe, and hardware-accelerated on current CPUs (2.5x blake2b's speed
    # here: 33 ms for the 45 MB of float32 patches of a full page).
    h = hashlib.sha256()
    h.update(repr((tuple(int(v) for v in grid), str(pixels.dtype), tuple(pixels.shape))).encode())
    h.update(pixels.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()


def keys(inputs: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """The key of every image and video in a collated batch (computed before the batch moves to
    the model's device), by pixel-values name."""
    out: dict[str, list[str]] = {}
    for pixel_key, grid_key, _ in _KINDS:
        if pixel_key in inputs:
            out[pixel_key] = [digest(pixels, grid) for pixels, grid in
                              zip(*_split(inputs[pixel_key], inputs[grid_key]))]
    return out


def has_pixels(inputs: dict[str, Any]) -> bool:
    return any(pixel_key in inputs for pixel_key, _, _ in _KINDS)


def _split(pixels: torch.Tensor, grid: torch.Tensor
           ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Pixel rows and grid of each image (an image is t*h*w rows of patches)."""
    sizes = grid.prod(-1).tolist()
    return list(torch.split(pixels, sizes)), list(grid)


def _tower(model: Any, pixel_key: str, pixels: torch.Tensor, grid: torch.Tensor) -> Features:
    run = model.get_image_features if pixel_key == "pixel_values" else model.get_video_features
    out = run(pixels, grid[None])
    if isinstance(out, tuple):  # older transformers: (embeds per image, deepstack per layer)
        embeds, deepstack = out[0], out[1]
    else:
        embeds, deepstack = out.pooler_output, out.deepstack_features

    def one(value: Any) -> torch.Tensor:
        value = value[0] if isinstance(value, (tuple, list)) else value
        return value.detach().to("cpu")

    return Features(one(embeds), tuple(one(d) for d in deepstack))


def features(model: Any, pixel_key: str, pixels: torch.Tensor, grid: torch.Tensor,
             names: list[str], store: VisionCache) -> list[Features]:
    """Every image's features, from ``store`` or the tower (then stored)."""
    out = []
    for one_pixels, one_grid, key in zip(*_split(pixels, grid), names):
        found = store.get(key)
        if found is None:
            found = _tower(model, pixel_key, one_pixels, one_grid)
            store.put(key, found)
        out.append(found)
    return out


def forward(model: Any, inputs: dict[str, torch.Tensor], names: dict[str, list[str]],
            store: VisionCache, cache_kwarg: str, **kwargs: Any) -> Any:
    """``model(**inputs, **kwargs)`` of a batch holding pixel values (already on the model's
    device), with the vision tower's outputs from ``store``; returns the language model's output
    (``last_hidden_state`` and the key/value cache, passed as ``kwargs[cache_kwarg]``)."""
    ids = inputs["input_ids"]
    embeds = model.get_input_embeddings()(ids)
    masks: list[torch.Tensor] = []
    stacks: list[list[torch.Tensor]] = []
    for pixel_key, grid_key, token_attr in _KINDS:
        if pixel_key not in inputs:
            continue
        found = features(model, pixel_key, inputs[pixel_key], inputs[grid_key],
                         names[pixel_key], store)
        merged = torch.cat([f.embeds for f in found]).to(embeds.device, embeds.dtype)
        mask = ids == getattr(model.config, token_attr)
        if int(mask.sum()) != merged.shape[0]:
            raise ValueError(f"{int(mask.sum())} placeholder tokens for {merged.shape[0]} "
                             "visual features")
        embeds = embeds.masked_scatter(mask[..., None], merged)
        masks.append(mask)
        stacks.append([torch.cat(layer) for layer in zip(*(f.deepstack for f in found))])
    visual = masks[0] if len(masks) == 1 else masks[0] | masks[1]
    deepstack = []
    for layer in zip(*stacks):  # the features of every visual position, in sequence order
        joint = layer[0].new_zeros((int(visual.sum()), layer[0].shape[-1]))
        for mask, values in zip(masks, layer):
            joint[mask[visual]] = values.to(joint.dtype)
        deepstack.append(joint.to(embeds.device))
    position_ids = inputs.get("position_ids")
    if position_ids is None:
        grids = {k: inputs[k].clone() for _, k, _ in _KINDS if k in inputs}
        position_ids, _ = model.get_rope_index(
            ids, inputs["mm_token_type_ids"], image_grid_thw=grids.get("image_grid_thw"),
            video_grid_thw=grids.get("video_grid_thw"), attention_mask=inputs["attention_mask"])
    language = model.language_model
    if cache_kwarg in kwargs:
        kwargs[language_cache_kwarg(language)] = kwargs.pop(cache_kwarg)
    return language(
        input_ids=None, inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
        position_ids=position_ids, visual_pos_masks=visual, deepstack_visual_embeds=deepstack,
        **kwargs,
    )


def language_cache_kwarg(language: Any) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(language.forward).parameters \
        else "past_key_values"
