"""PDF files: every page's text layer, then the page rendered as an image for the model.

Pages are read one at a time (the generator holds one rendered page at most).  A page is
rendered at the zoom that makes it as large as the contract's ``image_max_pixels`` allows
(never above :data:`MAX_ZOOM`), so a page image reaches the model without being resized twice.

Rendering draws the page straight into a pixmap (``fz_new_pixmap_from_page``) rather than
through PyMuPDF's ``Page.get_pixmap``, which records a display list first.  The pixels are the
same (checked on the shared corpus); skipping the display list is faster on ordinary pages and
avoids a display-list case that runs for minutes with the GIL held (``test_2548.pdf`` in the
shared corpus: page 1 takes 9 ms drawn directly, more than two minutes through a display list).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from kbterm.ingest.base import ParseContext, ParseError, Section, describe
from kbterm.ingest.image import pixel_fingerprint

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

log = logging.getLogger(__name__)

# A small page (a label, a slide thumbnail) is not blown up past 3x (216 dpi): more pixels would
# add visual tokens without adding detail.
MAX_ZOOM = 3.0

__all__ = ["MAX_ZOOM", "page_zoom", "parse_pdf", "render_page"]


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


def _draw(page: Any, max_pixels: int) -> Any:
    """The page drawn into a new RGBA pixmap on opaque white, within ``max_pixels``.

    The alpha byte is 255 (MuPDF's blending leaves 254 on a rare anti-aliased edge pixel, whose
    colour then differs by one level from an RGB rendering: measured on the shared corpus,
    one value in 600,000, never more than one level).

    Four bytes a pixel is how PIL keeps an RGB image in memory, so :func:`_pixmap_image` can
    hand the pixmap's memory to PIL without converting or copying it.
    """
    from pymupdf import mupdf

    bound = mupdf.fz_bound_page(page.this)  # what page.rect reports, without the wrapper
    zoom = page_zoom(bound.x1 - bound.x0, bound.y1 - bound.y0, max_pixels)
    # The page box need not start at (0, 0); check the size MuPDF will really allocate.
    for _ in range(8):
        ctm = mupdf.FzMatrix(zoom, 0, 0, zoom, 0, 0)
        box = mupdf.fz_round_rect(mupdf.fz_transform_rect(bound, ctm))
        if (box.x1 - box.x0) * (box.y1 - box.y0) <= max_pixels:
            break
        zoom *= 0.99
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


def render_page(page: Any, max_pixels: int) -> "PILImage":
    """``page`` (a PyMuPDF page) as a PIL RGB image of at most ``max_pixels`` pixels."""
    return _pixmap_image(_draw(page, max_pixels))[0].convert("RGB")


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
        for index in range(doc.page_count):
            n = index + 1
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
                image, fingerprint = _pixmap_image(_draw(page, max_pixels))
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
