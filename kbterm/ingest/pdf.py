"""PDF files: every page's text layer, then the page rendered as an image for the model.

Pages are read one at a time (the generator holds one rendered page at most).  A page is drawn
at the size the model's preprocessing would give it (``smart_resize`` of the page made as large
as the contract's ``image_max_pixels`` allows, never zoomed above :data:`MAX_ZOOM`): the model
sees text drawn sharp at its final size, never a rendering resampled a second time.

Rendering draws the page straight into a pixmap (``fz_new_pixmap_from_page``) rather than
through PyMuPDF's ``Page.get_pixmap``, which records a display list first.  The pixels are the
same (within one level; checked on real PDFs); skipping the display list is faster on ordinary pages and
avoids a display-list case that runs for minutes with the GIL held (a real slide deck whose
malformed structure tree MuPDF's repair walks exponentially: page 1 takes 9 ms drawn directly,
more than two minutes through a display list; ``slides.pdf`` in tests/corpus_builder.py).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from kbterm.ingest.base import ParseContext, ParseError, Section, describe
from kbterm.ingest.image import PATCH_FACTOR, pixel_fingerprint, smart_resize
from kbterm.models.encoding import IMAGE_MIN_PIXELS

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

log = logging.getLogger(__name__)

# A small page (a label, a slide thumbnail) is not blown up past 3x (216 dpi): more pixels would
# add visual tokens without adding detail.
MAX_ZOOM = 3.0
# Bounds from what the file really holds.  The pages read are the pages MuPDF can load: it
# refuses a page tree whose /Count exceeds the file's objects (the tree is then counted again
# from its leaves), and a /Count larger than the leaves fails page by page, so after this many
# pages in a row that cannot be loaded the rest of what the tree claims is not tried.  A page
# that draws nothing (no content, no annotation, or a render that stays white) gives no image:
# thousands of blank pages cost a look each, not an embedding each.
MAX_UNLOADABLE_RUN = 100
# Problems with single pages are reported once per kind, with their pages, in this many lines.
MAX_PAGE_WARNINGS = 10

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
    colour then differs by one level from an RGB rendering: measured on real PDFs,
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


def _xref(value: str) -> int | None:
    match = re.fullmatch(r"\s*(\d+)\s+\d+\s+R\s*", value)
    return int(match.group(1)) if match else None


def _recount_pages(doc: Any) -> int:
    """Count the leaves of the page tree and write each node's true /Count (in memory only);
    returns the number of pages, 0 when there is no tree to count.

    Iterative and cycle-safe: every object is visited once, so the work is bounded by the
    file's objects, whatever the tree claims."""
    kind, value = doc.xref_get_key(doc.pdf_catalog(), "Pages")
    top = _xref(value) if kind == "xref" else None
    if top is None:
        return 0
    seen: set[int] = set()
    counts: dict[int, int] = {}
    stack: list[tuple[int, list[int] | None]] = [(top, None)]
    while stack:
        xref, kids = stack.pop()
        if kids is None:  # first visit
            # Seen before: a kid listed twice counts twice (as MuPDF walks it); a node on a
            # cycle counts nothing for its own descendant.
            if xref in seen or not 0 < xref < doc.xref_length():
                continue
            seen.add(xref)
            kids_kind, kids_value = doc.xref_get_key(xref, "Kids")
            if kids_kind != "array":
                is_page = doc.xref_get_key(xref, "Type")[1] == "/Page"
                counts[xref] = 1 if is_page else 0
                continue
            children = [int(m.group(1)) for m in re.finditer(r"(\d+)\s+\d+\s+R", kids_value)]
            stack.append((xref, children))
            stack.extend((child, None) for child in reversed(children))
        else:  # the children are counted
            total = sum(counts.get(child, 0) for child in kids)
            counts[xref] = total
            doc.xref_set_key(xref, "Count", str(total))
    return counts.get(top, 0)


def _page_count(doc: Any, warn: Callable[[str], None] | None) -> int:
    """The number of pages; a page tree that claims more pages than the file has objects
    (MuPDF: "Invalid number of pages") is counted again from its leaves."""
    try:
        return doc.page_count
    except Exception as exc:  # noqa: BLE001 - MuPDF's RuntimeError
        reason = describe(exc)
    try:
        top = _xref(doc.xref_get_key(doc.pdf_catalog(), "Pages")[1])
        claimed = doc.xref_get_key(top, "Count")[1] if top else "?"
        pages = _recount_pages(doc)
        if pages:
            pages = doc.page_count
    except Exception:  # noqa: BLE001 - a tree too broken to count
        pages = 0
    if not pages:
        raise ParseError(f"PDF's page tree is damaged ({reason}) and holds no page")
    if warn is not None:
        warn(f"the page tree claims {claimed} pages, more than the file holds; "
             f"counted again from its leaves, it has {pages}")
    return pages


def _open(path: Path, warn: Callable[[str], None] | None = None) -> Any:
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
        if _page_count(doc, warn) < 1:
            if doc.is_repaired:
                raise ParseError("PDF is damaged: no page could be recovered")
            raise ParseError("PDF has no pages")
    except BaseException:
        doc.close()
        raise
    return doc


def _draws_nothing(page: Any) -> bool:
    """Whether the page has no annotation and no content stream with anything in it."""
    try:
        if page.first_annot is not None or page.first_widget is not None:
            return False
        return not page.read_contents().strip()
    except Exception:  # noqa: BLE001 - let rendering decide
        return False


def _all_white(pix: Any) -> bool:
    """Whether a pixmap from :func:`_draw` is still the white it was cleared to."""
    import numpy as np
    from pymupdf import mupdf

    return bool(np.frombuffer(mupdf.fz_pixmap_samples_memoryview(pix), np.uint8).min() == 255)


def _page_list(pages: list[int]) -> str:
    """"page 3", "pages 2-101", "pages 4, 9-12" (at most a few ranges, then how many more)."""
    ranges: list[list[int]] = []
    for n in pages:
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:8]]
    more = sum(b - a + 1 for a, b in ranges[8:])
    text = ", ".join(shown) + (f" and {more} more" if more else "")
    return f"page {text}" if len(pages) == 1 else f"pages {text}"


class _PageProblems:
    """Problems with single pages, reported once per kind with the pages they hit."""

    def __init__(self) -> None:
        self.pages: dict[str, list[int]] = {}

    def add(self, page: int, problem: str) -> None:
        self.pages.setdefault(problem, []).append(page)

    def report(self, ctx: ParseContext) -> None:
        items = list(self.pages.items())
        for problem, pages in items[:MAX_PAGE_WARNINGS]:
            ctx.warn(f"{_page_list(pages)}: {problem}")
        rest = sum(len(pages) for _problem, pages in items[MAX_PAGE_WARNINGS:])
        if rest:
            ctx.warn(f"{rest} more pages with other problems")


def parse_pdf(path: Path, ctx: ParseContext) -> Iterator[Section]:
    """Per page, in order: a text section (when the page has text), then an image section
    (unless the page draws nothing); only one of the two with ``ctx.stage``."""
    import pymupdf

    doc = _open(path, ctx.warn)
    max_pixels = ctx.limits.image_max_pixels
    read = 0
    problems = _PageProblems()
    try:
        if doc.is_repaired:
            ctx.warn("the PDF is damaged; MuPDF repaired it and some content may be missing")
        count = doc.page_count
        ctx.unit, ctx.total = "page", count
        unloadable = 0  # pages in a row that could not be loaded
        for index in range(count):
            n = ctx.done = index + 1
            try:
                page = doc.load_page(index)
            except Exception as exc:  # noqa: BLE001
                problems.add(n, describe(exc))
                unloadable += 1
                if unloadable >= MAX_UNLOADABLE_RUN and n < count:
                    ctx.warn(f"the page tree claims {count} pages but pages {n - unloadable + 1}"
                             f"-{n} cannot be loaded; the other {count - n} were not tried")
                    break
                continue
            unloadable = 0
            if _draws_nothing(page):  # a blank page: no text, nothing to look at
                read += 1
                continue
            page_read = False
            if ctx.stage != "pictures":
                try:
                    text = page.get_text("text", sort=False)
                    page_read = True
                except Exception as exc:  # noqa: BLE001
                    problems.add(n, f"cannot extract text: {describe(exc)}")
                    text = ""
                if text and not text.isspace():
                    yield Section(kind="text", text=text, page=n)
            if ctx.stage == "text":
                read += 1  # (a page whose text fails may still be drawn: the pictures decide)
                continue
            try:
                pix = _draw(page, max_pixels, ctx.limits.image_min_pixels)
            except Exception as exc:  # noqa: BLE001
                problems.add(n, f"cannot render: {describe(exc)}")
            else:
                page_read = True
                if not _all_white(pix):
                    image, fingerprint = _pixmap_image(pix)
                    yield Section(kind="image", image=image, page=n, fingerprint=fingerprint)
                del pix
            read += page_read
        problems.report(ctx)
        if read == 0:
            raise ParseError(f"no page of the PDF could be read ({count} pages)")
    finally:
        doc.close()
        # MuPDF's messages are kept in a process-wide list; do not let it grow without end.
        pymupdf.TOOLS.reset_mupdf_warnings()
