"""Reading an image costs bounded memory: the decode is refused by what its pixels take in
memory (bytes per pixel, not just pixels), and conversion works in bands, with the same pixels
as converting the whole picture at once."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kbterm.ingest import ParseContext, ParseError, parse
from kbterm.ingest import image as image_module
from kbterm.ingest.image import decode_cost


def huge_float_tiff(path: Path, width: int, height: int) -> Path:
    """A float32 grey TIFF of ``width`` x ``height`` zeros, deflate-compressed as one strip,
    written without ever holding the picture in memory (17,000 x 17,000: 1.2 MB on disk)."""
    squeeze = zlib.compressobj(9)
    row = bytes(4 * width)
    parts = []
    for _ in range(height):
        parts.append(squeeze.compress(row))
    parts.append(squeeze.flush())
    strip = b"".join(parts)
    tags = [  # (tag, type, value): 3 = SHORT, 4 = LONG
        (256, 4, width), (257, 4, height), (258, 3, 32), (259, 3, 8), (262, 3, 1),
        (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(strip)), (339, 3, 3),
    ]
    ifd_size = 2 + 12 * len(tags) + 4
    data_at = 8 + ifd_size
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + strip)
    return path


def sections(path: Path):
    return list(parse(path, "image", ParseContext()))


def test_a_small_file_with_huge_float_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    path = huge_float_tiff(tmp_path / "huge.tif", 17_000, 17_000)
    assert path.stat().st_size < 2_000_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # to look at its header here
    with Image.open(path) as img:
        assert (img.mode, img.size) == ("F", (17_000, 17_000))
    with pytest.raises(ParseError) as info:
        sections(path)
    message = str(info.value)
    assert message.startswith("image too large to decode: 17000x17000 pixels of mode F need "
                              "1.4 GB of memory")
    assert "a JPEG or a smaller copy" in message


def test_bytes_per_pixel_decide_not_pixels(tmp_path, monkeypatch):
    """Same pixel count: 8-bit grey is read, float grey is refused, under a small budget."""
    monkeypatch.setattr(image_module, "MAX_DECODE_BYTES", 1_000_000)
    rng = np.random.default_rng(3)
    grey = tmp_path / "grey.png"
    Image.fromarray((rng.random((600, 700)) * 255).astype(np.uint8)).save(grey)
    floats = tmp_path / "floats.tif"
    Image.fromarray(rng.random((600, 700)).astype(np.float32)).save(floats)
    assert decode_cost("L", 700, 600) == 420_000
    assert decode_cost("F", 700, 600) == 700 * 600 * 5  # float pixels + the 8-bit copy
    assert decode_cost("RGBA", 700, 600, transparent=True) == 700 * 600 * 12
    (section,) = sections(grey)
    assert section.image.mode == "RGB"
    with pytest.raises(ParseError, match=r"600 pixels of mode F need 2\.1 MB"):
        sections(floats)


def reference(path: Path, target: tuple[int, int]) -> Image.Image:
    """The whole-picture conversion (what kbterm did before reading in bands)."""
    with Image.open(path) as img:
        a = np.asarray(img, dtype=np.float64)
        top = float(a.max())
        scale = 1.0 if top <= 255 else 255.0 / 65535.0 if top <= 65535 else 255.0 / top
        if img.mode == "F" and top <= 1.0:
            scale = 255.0
        grey = Image.fromarray(np.clip(a * scale + 0.5, 0, 255).astype(np.uint8))
    return grey.convert("RGB").resize(target, Image.Resampling.BICUBIC)


@pytest.mark.parametrize("kind", ["uint16", "float32", "uint8"])
def test_banded_conversion_gives_the_same_pixels(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(image_module, "_BAND_BYTES", 8 * 1500 * 7)  # 7-row bands
    rng = np.random.default_rng(5)
    values = rng.random((1100, 1500))
    array = {"uint16": (values * 65535).astype(np.uint16),
             "float32": values.astype(np.float32),
             "uint8": (values * 255).astype(np.uint8)}[kind]
    path = tmp_path / ("grey.tif" if kind == "float32" else "grey.png")
    Image.fromarray(array).save(path)
    (section,) = sections(path)
    expected = reference(path, section.image.size)
    assert section.image.size != (1500, 1100)  # resized to the model's size
    assert section.image.tobytes() == expected.tobytes()


def test_pdf_page_with_a_huge_media_box_renders_within_the_pixel_limit(tmp_path):
    import pymupdf

    path = tmp_path / "poster.pdf"
    doc = pymupdf.open()
    page = doc.new_page(width=14_400, height=14_400)  # 200 x 200 inches, PDF's largest
    page.insert_text((72, 144), "A very large poster", fontsize=600)
    doc.save(path)
    ctx = ParseContext()
    got = list(parse(path, "pdf", ctx))
    images = [s.image for s in got if s.kind == "image"]
    assert len(images) == 1
    w, h = images[0].size
    assert w * h <= ctx.limits.image_max_pixels and w == h
    assert any("very large poster" in s.text for s in got if s.kind == "text")
