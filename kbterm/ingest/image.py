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
# Decoding a picture costs width x height x the bytes Pillow keeps per pixel, not its size on
# disk: a 17,000 x 17,000 float TIFF is 1.7 MB compressed and 1.2 GB decoded, and converting it
# naively took 8.8 GB.  An image whose decoded pixels and conversion copies (see decode_cost)
# would take more than this is refused with what it would cost; within it, conversion works in
# bands of rows, so reading one image never takes much more than this.  JPEGs are decoded at
# 1/2..1/8 scale first (libjpeg's draft mode), so large photos stay far below it.
MAX_DECODE_BYTES = 1 << 30
_BAND_BYTES = 32 << 20  # float64 working memory per band of rows
# Bytes per pixel as Pillow stores each mode (RGB, like most, is padded to 4).
_ONE_BYTE_MODES = ("1", "L", "P")
_TWO_BYTE_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# qwen-vl-utils refuses images whose long side exceeds 200 times the short side.
MAX_ASPECT_RATIO = 200
_EXIF_ORIENTATION = 0x0112

__all__ = ["MAX_DECODE_BYTES", "MAX_SOURCE_PIXELS", "decoded_bytes", "load_image", "parse_image",
           "pixel_fingerprint", "smart_resize", "new_digest"]


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


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """The memory Pillow needs to hold a ``mode`` picture of this size."""
    per_pixel = 1 if mode in _ONE_BYTE_MODES else 2 if mode in _TWO_BYTE_MODES else 4
    return width * height * per_pixel


def decode_cost(mode: str, width: int, height: int, transparent: bool = False) -> int:
    """Peak memory of reading such a picture: its decoded pixels plus the full-size copies
    conversion makes (8-bit grey for high-depth grey, RGB or RGBA for colour modes other than
    RGB, and a white background for transparent ones)."""
    pixels = width * height
    cost = decoded_bytes(mode, width, height)
    if mode.startswith("I") or mode == "F":
        cost += pixels  # the 8-bit copy (converted in bands)
    elif mode == "L" and not transparent:
        pass  # resized as it is
    elif mode != "RGB" or transparent:
        cost += 4 * pixels * (2 if transparent else 1)
    return cost


def _check_decode_cost(img: Any, rotated: bool) -> None:
    width, height = img.size
    cost = decode_cost(img.mode, width, height, _transparent(img))
    if rotated:  # EXIF orientation: one more copy, turned upright
        cost += decoded_bytes(img.mode, width, height)
    if cost > MAX_DECODE_BYTES:
        raise ParseError(
            f"image too large to decode: {width}x{height} pixels of mode {img.mode} need "
            f"{_size(cost)} of memory (kbterm reads images of at most "
            f"{_size(MAX_DECODE_BYTES)}); a JPEG or a smaller copy of it can be indexed")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _high_depth_to_l(img: Any) -> Any:
    """A 16-bit, 32-bit or float grey image as 8-bit grey (Pillow's own conversion clips at 255,
    which turns most 16-bit scans white).  Converted a band of rows at a time, so the float
    working copy stays small whatever the picture's size."""
    import numpy as np
    from PIL import Image

    width, height = img.size
    extrema = img.getextrema()
    top = float(extrema[1]) if width and height else 0.0
    if img.mode == "F" and top <= 1.0:
        scale = 255.0  # float images are usually 0..1
    elif top <= 255:
        scale = 1.0
    elif top <= 65535:
        scale = 255.0 / 65535.0
    else:
        scale = 255.0 / top
    out = Image.new("L", (width, height))
    rows = max(1, _BAND_BYTES // (8 * max(1, width)))
    for y in range(0, height, rows):
        band = np.asarray(img.crop((0, y, width, min(height, y + rows))), dtype=np.float64)
        out.paste(Image.fromarray(np.clip(band * scale + 0.5, 0, 255).astype(np.uint8)), (0, y))
    return out


def _transparent(img: Any) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB", "1") and "transparency" in img.info)


def _to_rgb(img: Any) -> Any:
    """RGB; transparent areas become white (as qwen-vl-utils' ``to_rgb`` does for RGBA)."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_l(img).convert("RGB")
    if _transparent(img):
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return img.convert("RGB")


def load_image(path: Path, ctx: ParseContext, resize: bool = True) -> "PILImage":
    """The first frame of ``path``: upright, RGB, resized to the model's size for it (with
    ``resize`` False, at its own size: video frames, which the video preprocessing sizes)."""
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
            ) if resize else (up_h, up_w)
        except ValueError as exc:
            raise ParseError(f"cannot use image ({width}x{height}): {exc}") from None
        try:
            if resize and img.format == "JPEG" and width * height > 4 * limits.image_max_pixels:
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the target size:
                # a 50 MP photo then never sits in memory at full size.
                img.draft(img.mode, (target_h, target_w) if turned else (target_w, target_h))
            _check_decode_cost(img, orientation != 1)
            img.load()
            upright = ImageOps.exif_transpose(img) if orientation != 1 else img
            grey = None
            if upright.mode.startswith("I") or upright.mode == "F":
                grey = _high_depth_to_l(upright)
            elif upright.mode == "L" and not _transparent(upright):
                grey = upright
            if grey is not None:
                # Resized as grey, then made RGB: the same pixels as RGB-then-resize (the
                # filter works per channel) at a third of the memory.
                if grey.size != (target_w, target_h):
                    grey = grey.resize((target_w, target_h), Image.Resampling.BICUBIC)
                rgb = grey.convert("RGB")
            else:
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


def load_preview(path: str | Path, max_pixels: int) -> "PILImage":
    """``path`` as a picture of at most about ``max_pixels`` for a preview: opened as the
    indexer opens files (a regular file only: never a FIFO that would block, never through a
    symlink) and read with the same bounded decoding.  Raises ParseError or OSError."""
    from kbterm.models.encoding import VisionLimits
    from kbterm.safeopen import checked_path

    limits = VisionLimits(image_min_pixels=min(VisionLimits.image_min_pixels, max_pixels),
                          image_max_pixels=max_pixels)
    with checked_path(str(path)) as safe:
        return load_image(safe, ParseContext(limits=limits))


def parse_image(path: Path, ctx: ParseContext) -> Iterator[Section]:
    """One image section: the picture (first frame of an animation) as the model will see it."""
    image = load_image(path, ctx)
    yield Section(kind="image", image=image, fingerprint=pixel_fingerprint(image.tobytes(),
                                                                           image.size))
