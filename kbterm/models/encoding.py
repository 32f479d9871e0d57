"""Turning chat messages into model tensors, one input at a time, then into padded batches.

Every input is encoded on its own (chat template, vision preprocessing, tokenisation), truncated
the way the model contract says, and only then collated into batches.  Encoding alone is what
makes a vector independent of its batch-mates, and knowing each input's length before batching is
what lets :func:`plan_batches` form batches by a token budget over inputs sorted by length.
"""

from __future__ import annotations

import contextlib
import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from kbterm.errors import InputError
from kbterm.models.inputs import Content, Video

if TYPE_CHECKING:
    import torch

# Vision limits of the reference (patch 16, merge 2: one visual token = 32x32 pixels).
IMAGE_MIN_PIXELS = 4 * 32 * 32
IMAGE_MAX_PIXELS = 1800 * 32 * 32
VIDEO_FPS = 1.0
VIDEO_MAX_FRAMES = 64
VIDEO_FRAME_MAX_PIXELS = 768 * 32 * 32
VIDEO_TOTAL_PIXELS = 10 * 768 * 32 * 32
# <|im_end|> \n <|im_start|> assistant \n: what ends every input after the last message.
GENERATION_PROMPT_TOKENS = 5


@dataclass(frozen=True)
class VisionLimits:
    """Pixel and frame limits applied to images and videos before they reach a model."""

    image_min_pixels: int = IMAGE_MIN_PIXELS
    image_max_pixels: int = IMAGE_MAX_PIXELS
    fps: float = VIDEO_FPS
    max_frames: int = VIDEO_MAX_FRAMES
    frame_max_pixels: int = VIDEO_FRAME_MAX_PIXELS
    total_pixels: int = VIDEO_TOTAL_PIXELS


def with_punctuation(instruction: str) -> str:
    """The contract's rule: an instruction not ending in punctuation (Unicode P*) gets a '.'."""
    instruction = instruction.strip()
    if instruction and not unicodedata.category(instruction[-1]).startswith("P"):
        instruction += "."
    return instruction


def thin_frames(frames: Sequence[Any], max_frames: int) -> list[Any]:
    """At most ``max_frames`` frames, evenly spaced (numpy linspace over indices, cast to int)."""
    frames = list(frames)
    if len(frames) <= max_frames:
        return frames
    idx = np.linspace(0, len(frames) - 1, max_frames).astype(int)
    return [frames[i] for i in idx]


def _file_uri(path: str | Path) -> str:
    return "file://" + str(Path(path).expanduser().resolve())


def load_image(source: Any, limits: VisionLimits | None = None) -> Any:
    """A PIL image, upright (EXIF orientation applied) and RGB; paths are opened here.

    A path is read exactly as the indexer reads an image file (:mod:`kbterm.ingest.image`):
    bounded memory (reduced-size JPEG decoding, a refusal by decoded bytes), and, given
    ``limits``, resized to the size the model's preprocessing would give it (its own resize is
    then a no-op, so the pixels are those of the reference).  Without ``limits`` (video
    frames) the picture keeps its size."""
    if not isinstance(source, (str, Path)):
        return source
    from kbterm.ingest.base import ParseContext, ParseError
    from kbterm.ingest.image import load_image as read_image

    path = Path(source).expanduser()
    try:
        return read_image(path, ParseContext(limits=limits or VisionLimits()),
                          resize=limits is not None)
    except ParseError as exc:
        raise InputError(f"{path}: {exc}") from None


def media_parts(content: Content, limits: VisionLimits) -> list[dict[str, Any]]:
    """Chat content parts for one input: every video, then every image, then every text."""
    parts: list[dict[str, Any]] = []
    for video in content.videos:
        parts.append(_video_part(video, limits))
    for image in content.images:
        parts.append(
            {
                "type": "image",
                "image": load_image(image.source, limits),
                "min_pixels": limits.image_min_pixels,
                "max_pixels": limits.image_max_pixels,
            }
        )
    for text in content.texts:
        parts.append({"type": "text", "text": text})
    return parts


def _video_part(video: Video, limits: VisionLimits) -> dict[str, Any]:
    if video.is_frames:
        frames = thin_frames(video.source, limits.max_frames)  # type: ignore[arg-type]
        if not frames:
            raise InputError("a video given as frames needs at least one frame")
        images = [load_image(f) for f in frames]
        size = images[0].size
        # Frames of one video share a size; stray ones are resized to the first frame's.
        images = [im if im.size == size else im.resize(size) for im in images]
        part: dict[str, Any] = {
            "type": "video",
            "video": images,
            "total_pixels": limits.total_pixels,
        }
        if video.fps is not None:
            part["sample_fps"] = float(video.fps)
        return part
    path = Path(video.source).expanduser()  # type: ignore[arg-type]
    if not path.is_file():
        raise InputError(f"{path}: video file not found")
    part = {
        "type": "video",
        "video": _file_uri(path),
        "fps": float(video.fps or limits.fps),
        "max_frames": limits.max_frames,
        "max_pixels": limits.frame_max_pixels,
        "total_pixels": limits.total_pixels,
    }
    if video.start is not None:
        part["video_start"] = float(video.start)
    if video.end is not None:
        part["video_end"] = float(video.end)
    return part


def parts_or_null(content: Content, limits: VisionLimits) -> list[dict[str, Any]]:
    parts = media_parts(content, limits)
    return parts or [{"type": "text", "text": "NULL"}]


# --------------------------------------------------------------------------- encoding


@dataclass
class Encoded:
    """One input, tokenised and vision-processed, ready to be collated."""

    input_ids: "torch.Tensor"  # (L,)
    mm_token_type_ids: "torch.Tensor"  # (L,)
    pixel_values: "torch.Tensor | None" = None
    image_grid_thw: "torch.Tensor | None" = None
    pixel_values_videos: "torch.Tensor | None" = None
    video_grid_thw: "torch.Tensor | None" = None
    truncated: bool = False

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def truncation_keep(
    ids: Sequence[int], special_ids: set[int], max_length: int, keep_tail: int = 0
) -> list[int] | None:
    """Indices to keep so that ``ids`` fits ``max_length``, or None when it already fits.

    Every special token survives (image and video placeholders included, so the vision features
    still match), as do the last ``keep_tail`` tokens; ordinary tokens are dropped from the end.
    """
    n = len(ids)
    if n <= max_length:
        return None
    head_end = n - keep_tail
    n_special = sum(1 for t in ids[:head_end] if t in special_ids)
    ordinary_budget = max(0, max_length - keep_tail - n_special)
    keep: list[int] = []
    for i in range(head_end):
        if ids[i] in special_ids:
            keep.append(i)
        elif ordinary_budget > 0:
            keep.append(i)
            ordinary_budget -= 1
    keep.extend(range(head_end, n))
    return keep


_reader_announced = False


def _vision_info(messages: list[dict[str, Any]], patch_size: int) -> tuple[Any, Any, dict]:
    from qwen_vl_utils import process_vision_info, vision_process

    global _reader_announced
    if not _reader_announced:
        # qwen-vl-utils prints its video backend to stderr once; keep the terminal clean.
        with contextlib.redirect_stderr(io.StringIO()):
            vision_process.get_video_reader_backend()
        _reader_announced = True
    return process_vision_info(
        messages,
        image_patch_size=patch_size,
        return_video_kwargs=True,
        return_video_metadata=True,
    )


class Encoder:
    """Renders messages with a processor and returns :class:`Encoded` inputs."""

    def __init__(self, processor: Any, max_length: int) -> None:
        self.processor = processor
        self.max_length = max_length
        self.patch_size = int(getattr(processor.image_processor, "patch_size", 16))
        tok = processor.tokenizer
        special = set(tok.all_special_ids)
        special.update(
            i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if t.special
        )
        for name in ("image_token_id", "video_token_id", "vision_start_token_id",
                     "vision_end_token_id"):
            value = getattr(processor, name, None)
            if isinstance(value, int):
                special.add(value)
        self.special_ids = special
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        vp = getattr(processor, "video_processor", None)
        if vp is not None and hasattr(vp, "cap_pixels_per_frame"):
            # Frames are already sized by the reference limits (qwen-vl-utils) and passed with
            # do_resize=False; the processor's own cap would only warn.
            vp.cap_pixels_per_frame = False

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        return self.processor.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def encode(self, messages: list[dict[str, Any]], keep_tail: int = 0) -> Encoded:
        text = self.render(messages)
        try:
            images, videos, video_kwargs = _vision_info(messages, self.patch_size)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoders raise anything; report it plainly
            raise InputError(f"cannot read image or video input: {exc}") from None
        kwargs: dict[str, Any] = {}
        if videos:
            frames, metadata = zip(*videos)
            kwargs.update(videos=list(frames), video_metadata=list(metadata), **video_kwargs)
        out = self.processor(
            text=[text],
            images=images or None,
            do_resize=False,
            return_tensors="pt",
            **kwargs,
        )
        ids = out["input_ids"][0]
        mm = out.get("mm_token_type_ids")
        mm = mm[0] if mm is not None else ids.new_zeros(ids.shape)
        keep = truncation_keep(ids.tolist(), self.special_ids, self.max_length, keep_tail)
        if keep is not None:
            import torch

            index = torch.tensor(keep, dtype=torch.long)
            ids, mm = ids[index], mm[index]
        return Encoded(
            input_ids=ids,
            mm_token_type_ids=mm,
            pixel_values=out.get("pixel_values"),
            image_grid_thw=out.get("image_grid_thw"),
            pixel_values_videos=out.get("pixel_values_videos"),
            video_grid_thw=out.get("video_grid_thw"),
            truncated=keep is not None,
        )


def collate(batch: Sequence[Encoded], pad_id: int, side: str) -> dict[str, "torch.Tensor"]:
    """Pad a batch (``side`` is "right" or "left"); input_ids, attention_mask and
    mm_token_type_ids are padded alike, vision tensors concatenated in row order."""
    import torch

    width = max(e.length for e in batch)
    n = len(batch)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mm = torch.zeros((n, width), dtype=batch[0].mm_token_type_ids.dtype)
    for row, enc in enumerate(batch):
        span = slice(0, enc.length) if side == "right" else slice(width - enc.length, width)
        input_ids[row, span] = enc.input_ids
        attention[row, span] = 1
        mm[row, span] = enc.mm_token_type_ids
    out = {"input_ids": input_ids, "attention_mask": attention, "mm_token_type_ids": mm}
    for key, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
        values = [getattr(e, key) for e in batch if getattr(e, key) is not None]
        if values:
            out[key] = torch.cat(values, dim=0)
            out[grid] = torch.cat([getattr(e, grid) for e in batch if getattr(e, grid) is not None])
    return out


# What one more forward pass costs, in padded tokens.  On a CPU a pass is compute-bound past a
# few dozen tokens (measured: 2.5 ms of fixed cost, about 80 tokens' worth, for a 4-layer model of
# hidden 256), so padding is expensive and batches should hold similar lengths; on a GPU the fixed
# cost of a pass dominates and padded tokens are nearly free up to the budget.
CPU_PASS_OVERHEAD_TOKENS = 64
GPU_PASS_OVERHEAD_TOKENS = 2048
MAX_BATCH_ROWS = 256


def plan_batches(
    lengths: Sequence[int],
    budget: int,
    overhead: int = CPU_PASS_OVERHEAD_TOKENS,
    max_rows: int = MAX_BATCH_ROWS,
) -> list[list[int]]:
    """Group input indices into batches whose padded size (rows x longest) fits ``budget``.

    Inputs are sorted by length and cut into consecutive runs; the cut points minimise the
    padded tokens computed plus ``overhead`` tokens for every forward pass (dynamic
    programming over the sorted lengths).  An input longer than the budget is a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    sorted_len = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        # A batch order[start:end] is padded to sorted_len[start] (the longest in it).
        for start in range(end - 1, max(-1, end - 1 - max_rows), -1):
            rows = end - start
            padded = rows * sorted_len[start]
            if rows > 1 and padded > budget:
                break
            cost = best[start] + overhead + padded
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches: list[list[int]] = []
    end = n
    while end > 0:
        start = cut[end]
        batches.append(order[start:end])
        end = start
    batches.reverse()
    return batches


def move(batch: dict[str, "torch.Tensor"], device: Any, dtype: Any) -> dict[str, "torch.Tensor"]:
    """Move a collated batch to the model's device; pixel tensors take the model's dtype."""
    moved = {}
    for key, value in batch.items():
        if key.startswith("pixel_values"):
            moved[key] = value.to(device=device, dtype=dtype)
        else:
            moved[key] = value.to(device)
    return moved
