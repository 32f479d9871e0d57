"""What a model input is: text, images and videos, in any mix.

An *item* given to the embedder, or a query or document given to the reranker, is one of

* ``str``: text (a string is always text, never a path);
* :class:`Image` or a ``PIL.Image.Image`` or a :class:`pathlib.Path` to an image file;
* :class:`Video` (a video file, optionally a time range of it, or a list of frames) or a
  :class:`pathlib.Path` to a video file;
* a list or tuple of the above: one item made of several parts.

:func:`to_content` sorts the parts into videos, images and texts, the order the models were
trained with.  This module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

from kbterm.errors import InputError
from kbterm.filetypes import IMAGE_SUFFIXES, VIDEO_SUFFIXES

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


@dataclass(frozen=True)
class Image:
    """An image: a file path or a PIL image."""

    source: Union[str, Path, "PILImage"]


@dataclass(frozen=True)
class Video:
    """A video: a file (optionally the ``start``..``end`` seconds of it) or a list of frames.

    ``fps`` is the sampling rate for a file (default: the contract's 1.0) and, for a list of
    frames, the rate at which the frames were taken (used for the frame timestamps the model sees;
    unset, the reference default applies).
    """

    source: Union[str, Path, Sequence[Union[str, Path, "PILImage"]]]
    start: float | None = None
    end: float | None = None
    fps: float | None = None

    @property
    def is_frames(self) -> bool:
        return not isinstance(self.source, (str, Path))


Part = Union[str, Image, Video]
Item = Union[Part, "PILImage", Path, Sequence[Union[Part, "PILImage", Path]]]


@dataclass
class Content:
    """The parts of one input in model order: videos, then images, then texts."""

    videos: list[Video] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.videos or self.images or self.texts)


def _is_pil(obj: Any) -> bool:
    try:
        from PIL.Image import Image as PILImage
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(obj, PILImage)


def _add(content: Content, part: Any) -> None:
    if isinstance(part, str):
        content.texts.append(part)
    elif isinstance(part, Image):
        content.images.append(part)
    elif isinstance(part, Video):
        content.videos.append(part)
    elif _is_pil(part):
        content.images.append(Image(part))
    elif isinstance(part, Path):
        suffix = part.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            content.images.append(Image(part))
        elif suffix in VIDEO_SUFFIXES:
            content.videos.append(Video(part))
        else:
            raise InputError(f"{part}: not an image or video file (wrap text in a str)")
    else:
        raise InputError(f"cannot use {type(part).__name__} as model input")


def to_content(item: Item) -> Content:
    """Sort one item's parts into videos, images and texts (each kept in its given order)."""
    content = Content()
    if isinstance(item, (list, tuple)):
        for part in item:
            _add(content, part)
    else:
        _add(content, item)
    return content
