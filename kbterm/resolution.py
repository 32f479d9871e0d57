"""How many pixels a PDF page image or a photo gets when it is indexed (issue #16).

The model contract allows up to 1,843,200 pixels (1,800 visual tokens) a picture.  What a
picture costs to embed grows with its visual tokens (the vision tower over its patches, then
the language model over the merged tokens): measured with the 2B model's shapes on a 2-core
CPU, a full page took 346 s (BENCHMARKS.md, "Qwen3-VL-2B shapes on this CPU"), and a page at
980 visual tokens costs a little over half of that.  So the default depends on the device that
embeds: the contract's maximum on a GPU or a model server (an A4 page at 138 dpi), 1,003,520
pixels on a CPU (A4 at 102 dpi, where 10-point text is still about 10 pixels high).  The user's
``indexing.page_max_pixels`` / ``image_max_pixels`` override it.

This module imports nothing heavy.
"""

from __future__ import annotations

import math

CONTRACT_MAX_PIXELS = 1800 * 32 * 32
CPU_DEFAULT_PIXELS = 980 * 32 * 32
A4_INCHES = (8.27, 11.69)
# A glyph needs about this many pixels of cap height for the model to read it (an estimate).
LEGIBLE_CAP_PIXELS = 10.0
CAP_HEIGHT = 0.7  # of the font size


def default_pixels(device: str) -> int:
    """The default for pictures embedded on ``device`` ("cpu", "cuda", "mps", "" = a server
    that does not say, taken for a GPU)."""
    return CPU_DEFAULT_PIXELS if device == "cpu" else CONTRACT_MAX_PIXELS


def a4_dpi(pixels: int) -> float:
    """The resolution an A4 page is drawn at within ``pixels``."""
    return math.sqrt(pixels / (A4_INCHES[0] * A4_INCHES[1]))


def smallest_legible_points(pixels: int) -> float:
    """About the smallest font size (points) on an A4 page the model can still read."""
    return LEGIBLE_CAP_PIXELS / (CAP_HEIGHT * a4_dpi(pixels) / 72)


def describe(pixels: int) -> str:
    """"1,003,520 pixels (A4 at 102 dpi: text from about 10 pt)"."""
    return (f"{pixels:,} pixels (A4 at {a4_dpi(pixels):.0f} dpi: text from about "
            f"{smallest_legible_points(pixels):.0f} pt)")
