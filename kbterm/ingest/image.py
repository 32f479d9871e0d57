"""Image files: one upright RGB picture, already at the size the model's preprocessing uses.

The reference preprocessing (qwen-vl-utils ``fetch_image``) resizes every image to
``smart_resize(h, w, factor=32, min_pixels, max_pixels)`` with Pillow's default resampling for
RGB (bicubic).  Doing the same here means the model receives exactly those pixels (its own
resize is then a no-op), the section holds at most ``image_max_pixels`` pixels, and the
fingerprint describes what the model sees.  :func:`smart_resize` is a copy of qwen-vl-utils'
function because importing that package imports torch; a test checks that the two agree.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from kbterm.ingest.base import ParseContext, ParseError, Section, describe

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# Largest source image accepted (300 megapixels, e.g. 20000 x 15000): decoding one costs about
# 1 GB of memory; anything larger is far more likely a decompression bomb than a photo.
MAX_SOURCE_PIXELS = 300_000_000
# Patch 16 x merge 2: one visual token covers 32 x 32 pixels (the model contract).
PATCH_FACTOR = 32
# qwen-vl-utils refuses images whose long side exceeds 200 times the short side.
MAX_ASPECT_RATIO = 200
_EXIF_ORIENTATION = 0x0112

__all__ = ["MAX_SOURCE_PIXELS", "parse_image", "pixel_fingerprint", "smart_resize", "new_digest"]


def new_digest(header: bytes) -> Any:
    """A hash object: XXH3-128 when the ``xxhash`` package is installed, else BLAKE2b-160.

    Hashing the pixels of a rendered PDF page (5.5 MB) takes 6 ms with BLAKE2b on the project
    machine, three times as long as PyMuPDF needs to extract the page's text and render it;
    XXH3 takes under 0.3 ms.  A fingerprint only decides whether a stored vector can be
    reused, so a non-cryptographic 128-bit hash is enough.  The two digests differ in length
    (32 and 40 hex digits), so one can never be mistaken for the other.
    """
    try:
        import xxhash
    except ImportError:
        return hashlib.blake2b(header, digest_size=20)
    digest = xxhash.xxh3_128()
    digest.update(header)
    return digest


def pixel_fingerprint(pixels: Any, size: tuple[int, int]) -> str:
    """A hex digest of packed 8-bit RGB ``pixels`` (any bytes-like object) and their size.

    Shared by every parser that yields pictures, so the same pixels give the same fingerprint
    whether they came from an image file or a PDF page.
    """
    digest = new_digest(f"{size[0]}x{size[1]}:".encode())
    digest.update(pixels)
    return digest.hexdigest()


def smart_resize(
    height: int, width: int, factor: int = PATCH_FACTOR, min_pixels: int = 4 * 32 * 32,
    max_pixels: int = 1800 * 32 * 32,
) -> tuple[int, int]:
    """(height, width) as qwen-vl-utils' ``smart_resize`` computes them: both multiples of
    ``factor``, the area within [min_pixels, max_pixels], the aspect ratio kept as well as can be.
    """
    if max_pixels < min_pixels:
        raise ValueError("max_pixels must be at least min_pixels")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _pil() -> Any:
    from PIL import Image

    # Pillow refuses images over 2 x MAX_IMAGE_PIXELS (179 MP by default) with its own error;
    # lift that to our cap so the size check below gives the one, clear message.  Only ever
    # raised, never lowered (someone may have switched the check off with None).
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and 2 * limit < MAX_SOURCE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_SOURCE_PIXELS // 2
    return Image


def _open(path: Path) -> Any:
    Image = _pil()
    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except FileNotFoundError:
        raise ParseError("cannot read image: file not found") from None
    except UnidentifiedImageError:
        raise ParseError("not a readable image: unknown format or damaged file") from None
    except Image.DecompressionBombError as exc:
        # Pillow stops before we learn the size; its message has the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:,.0f} megapixels" if found else "over the limit"
        raise ParseError(
            f"image too large ({size}; at most {MAX_SOURCE_PIXELS / 1e6:,.0f} are read)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - image plugins raise many kinds of errors
        raise ParseError(f"cannot read image: {describe(exc)}") from None


def _high_depth_to_l(img: Any) -> Any:
    """A 16-bit, 32-bit or float grey image as 8-bit grey (Pillow's own conversion clips at 255,
    which turns most 16-bit scans white)."""
    import numpy as np
    from PIL import Image

    a = np.asarray(img, dtype=np.float64)
    top = float(a.max()) if a.size else 0.0
    if img.mode == "F" and top <= 1.0:
        scale = 255.0  # float images are usually 0..1
    elif top <= 255:
        scale = 1.0
    elif top <= 65535:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / top
    return Image.fromarray(np.clip(a * scale + 0.5, 0, 255).astype(np.uint8))


def _to_rgb(img: Any) -> Any:
    """RGB; transparent areas become white (as qwen-vl-utils' ``to_rgb`` does for RGBA)."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_l(img).convert("RGB")
    transparent = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in img.info
    )
    if transparent:
        rgba = img.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return img.convert("RGB")


def _load(path: Path, ctx: ParseContext) -> "PILImage":
    """The first frame of ``path``: upright, RGB, resized to the model's size for it."""
    from PIL import Image, ImageOps

    limits = ctx.limits
    img = _open(path)
    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise ParseError(f"not a readable image: empty picture ({width}x{height})")
        if width * height > MAX_SOURCE_PIXELS:
            raise ParseError(f"image too large ({width}x{height})")
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
            orientation = 1
        turned = orientation in (5, 6, 7, 8)
        up_w, up_h = (height, width) if turned else (width, height)
        try:
            target_h, target_w = smart_resize(
                up_h, up_w, PATCH_FACTOR, limits.image_min_pixels, limits.image_max_pixels
            )
        except ValueError as exc:
            raise ParseError(f"cannot use image ({width}x{height}): {exc}") from None
        try:
            if img.format == "JPEG" and width * height > 4 * limits.image_max_pixels:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the target size:
                # a 50 MP photo then never sits in memory at full size.
                img.draft(img.mode, (target_h, target_w) if turned else (target_w, target_h))
            img.load()
            upright = ImageOps.exif_transpose(img) if orientation != 1 else img
            rgb = _to_rgb(upright)
            if rgb.size != (target_w, target_h):
                rgb = rgb.resize((target_w, target_h), Image.Resampling.BICUBIC)
            elif rgb is img:
                rgb = img.copy()  # closing the file would drop the pixels
        except ParseError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated data, bad codecs, broken EXIF
            raise ParseError(f"cannot read image: {describe(exc)}") from None
    return rgb


def parse_image(path: Path, ctx: ParseContext) -> Iterator[Section]:
    """One image section: the picture (first frame of an animation) as the model will see it."""
    image = _load(path, ctx)
    yield Section(kind="image", image=image, fingerprint=pixel_fingerprint(image.tobytes(),
                                                                           image.size))
