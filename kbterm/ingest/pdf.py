"""PDF files: every page's text layer, then the page rendered as an image for the model.

Pages are read one at a time (the generator holds one rendered page at most).  A page is drawn
at the size the model's preprocessing would give it (``smart_resize`` of the page made as large
as the contract's ``image_max_pixels`` allows, never zoomed above :data:`MAX_ZOOM`): the model
sees text drawn sharp at its final size, never a rendering resampled a second time.

Rendering draws the page straight into a pixmap (``fz_new_pixmap_from_page``) rather than
through PyMuPDF's ``Page.get_pixmap``, which records a display list first.  The pixels are the
same (within one level; checked on the shared corpus); skipping the display list is faster on ordinary pages and
avoids a display-list case that runs for minutes with the GIL held (``test_2548.pdf`` in the
shared corpus: page 1 takes 9 ms drawn directly, more than two minutes through a display list).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from kbterm.ingest.base import ParseContext, ParseError, Section, describe
from kbterm.ingest.image import PATCH_FACTOR, pixel_fingerprint, smart_resize
from kbterm.models.encoding import IMAGE_MIN_PIXELS

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

log = logging.getLogger(__name__)

# A small page (a label, a slide thumbnail) is not blown up past 3x (216 dpi): more pixels would
# add visual tokens without adding detail.
MAX_ZOOM = 3.0

__all__ = ["MAX_ZOOM", "page_size", "page_zoom", "parse_pdf", "render_page"]


def page_zoom(rect_width: float, rect_height: float, max_pixels: int) -> float:
    """The largest zoom (at most :data:`MAX_ZOOM`) at which a page of ``rect_width`` x
    ``rect_height`` points renders to at most ``max_pixels`` pixels.

    MuPDF rounds the zoomed page box outwards to whole pixels, so the zoom is lowered until the
    rounded-up size fits too.
    """
    if not (rect_width > 0 and rect_height > 0):
        raise ValueError(f"empty page box ({rect_width:g} x {rect_height:g} pt)")
    if max_pixels < 1:
        raise ValueError("max_pixels must be at least 1")
    zoom = min(MAX_ZOOM, math.sqrt(max_pixels / (rect_width * rect_height)))
    for _ in range(64):
        w, h = math.ceil(rect_width * zoom), math.ceil(rect_height * zoom)
        if w * h <= max_pixels:
            break
        zoom *= min(0.9999, math.sqrt(max_pixels / (w * h)))
    return zoom


def page_size(width_pt: float, height_pt: float, max_pixels: int,
              min_pixels: int = IMAGE_MIN_PIXELS) -> tuple[int, int]:
    """(width, height) in pixels of a page image: the size the model's preprocessing
    (``smart_resize``: sides multiples of 32, area within the limits) gives the page rendered as
    large as ``max_pixels`` allows.  Drawing the page at exactly that size lets the model see
    sharp text rather than a page rendered once and resampled again."""
    zoom = page_zoom(width_pt, height_pt, max_pixels)
    width, height = width_pt * zoom, height_pt * zoom
    try:
        h, w = smart_resize(height, width, PATCH_FACTOR, min_pixels, max_pixels)
    except ValueError:  # a strip too narrow for the model's aspect-ratio limit
        return max(1, math.floor(width)), max(1, math.floor(height))
    return w, h


def _draw(page: Any, max_pixels: int, min_pixels: int = IMAGE_MIN_PIXELS) -> Any:
    """The page drawn into a new RGBA pixmap on opaque white, at :func:`page_size`.

    The alpha byte is 255 (MuPDF's blending leaves 254 on a rare anti-aliased edge pixel, whose
    colour then differs by one level from an RGB rendering: measured on the shared corpus,
    one value in 600,000, never more than one level).

    Four bytes a pixel is how PIL keeps an RGB image in memory, so :func:`_pixmap_image` can
    hand the pixmap's memory to PIL without converting or copying it.
    """
    from pymupdf import mupdf

    bound = mupdf.fz_bound_page(page.this)  # what page.rect reports, without the wrapper
    width_pt, height_pt = bound.x1 - bound.x0, bound.y1 - bound.y0
    w, h = page_size(width_pt, height_pt, max_pixels, min_pixels)
    sx, sy = w / width_pt, h / height_pt
    # Scale the page box onto exactly w x h pixels, its top-left corner at (0, 0).
    ctm = mupdf.FzMatrix(sx, 0, 0, sy, -bound.x0 * sx, -bound.y0 * sy)
    box = mupdf.FzIrect(0, 0, w, h)
    pix = mupdf.fz_new_pixmap_with_bbox(mupdf.fz_device_rgb(), box, mupdf.FzSeparations(), 1)
    mupdf.fz_clear_pixmap_with_value(pix, 0xFF)
    # What fz_new_pixmap_from_page() does, without its display list.
    device = mupdf.fz_new_draw_device(ctm, pix)
    mupdf.fz_run_page(page.this, device, mupdf.FzMatrix(), mupdf.FzCookie())
    mupdf.fz_close_device(device)
    return pix


def _pixmap_image(pix: Any) -> tuple["PILImage", str]:
    """A PIL image of a pixmap from :func:`_draw`, sharing its memory, and the fingerprint of
    its pixels.

    The image is mode ``RGBX`` (RGB with a padding byte, PIL's own layout for RGB) and keeps the
    pixmap alive as long as it lives.  Whatever turns it into model input converts it to
    ``RGB`` (a copy qwen-vl-utils makes of every image, whatever its mode), so no pixel is
    copied here: copying into a new RGB image was a third of the cost of reading a page.
    """
    from PIL import Image
    from pymupdf import mupdf

    size = (pix.w(), pix.h())
    samples = mupdf.fz_pixmap_samples_memoryview(pix)
    fingerprint = pixel_fingerprint(samples, size)
    image = Image.frombuffer("RGBX", size, samples, "raw", "RGBX", pix.stride(), 1)
    image._kbterm_pixmap = pix  # type: ignore[attr-defined]  # owns the memory
    return image, fingerprint


def render_page(page: Any, max_pixels: int,
                min_pixels: int = IMAGE_MIN_PIXELS) -> "PILImage":
    """``page`` (a PyMuPDF page) as a PIL RGB image at :func:`page_size`."""
    return _pixmap_image(_draw(page, max_pixels, min_pixels))[0].convert("RGB")


def _open(path: Path) -> Any:
    import pymupdf

    try:
        doc = pymupdf.open(str(path), filetype="pdf")
    except pymupdf.EmptyFileError:
        raise ParseError("cannot open PDF: the file is empty") from None
    except pymupdf.FileNotFoundError:
        raise ParseError("cannot open PDF: file not found") from None
    except pymupdf.FileDataError:
        raise ParseError("cannot open PDF: not a PDF file, or damaged beyond repair") from None
    except Exception as exc:  # noqa: BLE001 - MuPDF raises plain RuntimeErrors too
        raise ParseError(f"cannot open PDF: {describe(exc)}") from None
    try:
        if doc.needs_pass or doc.is_encrypted:
            raise ParseError("PDF is password-protected")
        if doc.page_count < 1:
            if doc.is_repaired:
                raise ParseError("PDF is damaged: no page could be recovered")
            raise ParseError("PDF has no pages")
    except BaseException:
        doc.close()
        raise
    return doc


def parse_pdf(path: Path, ctx: ParseContext) -> Iterator[Section]:
    """Per page, in order: a text section (when the page has text), then an image section."""
    import pymupdf

    doc = _open(path)
    max_pixels = ctx.limits.image_max_pixels
    read = 0
    try:
        if doc.is_repaired:
            ctx.warn("the PDF is damaged; MuPDF repaired it and some content may be missing")
        ctx.unit, ctx.total = "page", doc.page_count
        for index in range(doc.page_count):
            n = ctx.done = index + 1
            try:
                page = doc.load_page(index)
            except Exception as exc:  # noqa: BLE001
                ctx.warn(f"page {n}: {describe(exc)}")
                continue
            page_read = False
            try:
                text = page.get_text("text", sort=False)
                page_read = True
            except Exception as exc:  # noqa: BLE001
                ctx.warn(f"page {n}: cannot extract text: {describe(exc)}")
                text = ""
            if text and not text.isspace():
                yield Section(kind="text", text=text, page=n)
            try:
                image, fingerprint = _pixmap_image(
                    _draw(page, max_pixels, ctx.limits.image_min_pixels))
            except Exception as exc:  # noqa: BLE001
                ctx.warn(f"page {n}: cannot render: {describe(exc)}")
            else:
                page_read = True
                yield Section(kind="image", image=image, page=n, fingerprint=fingerprint)
            read += page_read
        if read == 0:
            raise ParseError(f"no page of the PDF could be read ({doc.page_count} pages)")
    finally:
        doc.close()
        # MuPDF's messages are kept in a process-wide list; do not let it grow without end.
        pymupdf.TOOLS.reset_mupdf_warnings()
