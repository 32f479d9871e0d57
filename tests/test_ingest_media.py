"""PDF, image and video parsers on the test corpus (tests/corpus_builder.py) and on files made
here."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import corpus_builder as built
from kbterm.ingest import ParseContext, ParseError
from kbterm.ingest import image as image_mod
from kbterm.ingest import video as video_mod
from kbterm.ingest.image import parse_image, smart_resize
from kbterm.ingest.pdf import MAX_ZOOM, page_size, page_zoom, parse_pdf, render_page
from kbterm.ingest.video import parse_video, sample_times

REPO = Path(__file__).resolve().parent.parent
LIMITS = ParseContext().limits
MAX_PIXELS = LIMITS.image_max_pixels


def sections(parser, path: Path, ctx: ParseContext | None = None) -> list:
    return list(parser(path, ctx or ParseContext()))


# --------------------------------------------------------------------------- PDF


def test_media_parsers_import_without_torch_or_textual():
    code = (
        "import kbterm.ingest.pdf, kbterm.ingest.image, kbterm.ingest.video, sys; "
        "bad = [m for m in ('torch', 'textual', 'pymupdf', 'decord', 'av') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_pdf_every_page_text_then_image_with_true_page_numbers(corpus, tmp_path):
    import pymupdf

    pages = 60
    path = built.book_excerpt(corpus, tmp_path / "book.pdf", pages)
    with pymupdf.open(path) as doc:
        assert doc.page_count == pages
        texts = [page.get_text() for page in doc]
    # A line of page 37 that no other page has.
    phrase = next(
        line.strip() for line in texts[36].splitlines()
        if len(line.strip()) > 25 and sum(line.strip() in t for t in texts) == 1
    )
    ctx = ParseContext()
    image_pages, text_pages, order = [], [], []
    for section in parse_pdf(path, ctx):
        order.append((section.page, section.kind))
        if section.kind == "image":
            image = section.image
            # RGBX: RGB laid out as PIL keeps it, sharing MuPDF's memory (opaque padding byte)
            assert image.mode == "RGBX"
            # opaque padding (MuPDF's blending leaves a rare 254 on an anti-aliased edge)
            assert image.getextrema()[3][0] >= 250
            assert image.width * image.height <= MAX_PIXELS
            assert image.width * image.height > MAX_PIXELS * 0.9  # rendered as large as allowed
            assert len(section.fingerprint) >= 32
            image_pages.append(section.page)
        else:
            assert section.kind == "text" and section.text.strip()
            text_pages.append(section.page)
            if phrase in section.text:
                assert section.page == 37
        section.image = None  # keep memory flat over the pages
    assert image_pages == list(range(1, pages + 1))
    assert text_pages == image_pages  # every page of the book has text
    assert any(p == 37 for p in text_pages)
    # Within a page the text comes before the image; pages come in order.
    assert order == sorted(order, key=lambda pk: (pk[0], pk[1] != "text"))
    assert ctx.warnings == []


def test_pdf_render_matches_pymupdf_get_pixmap(corpus):
    import pymupdf

    path = corpus / "pdf" / "small-table.pdf"
    (text, image) = sections(parse_pdf, path)
    with pymupdf.open(path) as doc:
        page = doc[0]
        w, h = page_size(page.rect.width, page.rect.height, MAX_PIXELS)
        matrix = pymupdf.Matrix(w / page.rect.width, h / page.rect.height)
        pix = page.get_pixmap(matrix=matrix, alpha=False)
        assert (pix.width, pix.height) == image.image.size == (w, h)
        ours = np.asarray(image.image.convert("RGB"), dtype=int)
        theirs = np.frombuffer(pix.samples, np.uint8).reshape(h, w, 3).astype(int)
        assert np.abs(ours - theirs).max() <= 1
        assert render_page(page, MAX_PIXELS).size == (w, h)
        small = render_page(page, 20_000)
        assert small.width * small.height <= 20_000
    assert "Noble gases" in text.text and text.page == 1


def test_pdf_page_image_is_drawn_at_the_size_the_model_uses(corpus):
    """The page is drawn at smart_resize's size, so the model's preprocessing does not resample
    it (qwen-vl-utils' fetch_image returns it at the same size)."""
    from qwen_vl_utils.vision_process import fetch_image

    for section in sections(parse_pdf, corpus / "pdf" / "paper.pdf"):
        if section.kind != "image":
            continue
        w, h = section.image.size
        assert w % 32 == 0 and h % 32 == 0 and w * h <= MAX_PIXELS
        seen = fetch_image({"image": section.image, "min_pixels": 4 * 32 * 32,
                            "max_pixels": MAX_PIXELS}, image_patch_size=16)
        assert seen.size == (w, h)
        assert np.array_equal(np.asarray(seen), np.asarray(section.image.convert("RGB")))


def test_pdf_page_that_stalls_a_display_list_renders_quickly(corpus):
    # slides.pdf page 1 takes minutes through PyMuPDF's display list (its structure tree sends
    # MuPDF into a repair walk that the list device triggers); drawn directly, milliseconds.
    path = corpus / "pdf" / "slides.pdf"
    assert built.slides_page_1_stalls_a_display_list(path)
    start = time.perf_counter()
    got = sections(parse_pdf, path)
    assert time.perf_counter() - start < 30
    assert [s.page for s in got if s.kind == "image"] == list(range(1, built.SLIDES_PAGES + 1))
    assert any(s.kind == "text" and s.page == 1 and "Correlation" in s.text for s in got)


def test_page_zoom_fits_and_caps():
    for w, h in [(612, 792), (595.3, 841.9), (100, 100), (14400, 200), (1, 5000), (3000, 2000)]:
        zoom = page_zoom(w, h, MAX_PIXELS)
        assert 0 < zoom <= MAX_ZOOM
        assert math.ceil(w * zoom) * math.ceil(h * zoom) <= MAX_PIXELS
    assert page_zoom(100, 100, MAX_PIXELS) == MAX_ZOOM  # a small page is not blown up past 3x
    with pytest.raises(ValueError):
        page_zoom(0, 100, MAX_PIXELS)


def test_pdf_of_only_an_image_yields_an_image_and_no_text(tmp_path):
    import pymupdf

    picture = Image.new("RGB", (400, 300), (200, 30, 30))
    png = tmp_path / "red.png"
    picture.save(png)
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=300)
    page.insert_image(page.rect, filename=str(png))
    path = tmp_path / "scan.pdf"
    doc.save(path)
    doc.close()
    got = sections(parse_pdf, path)
    assert [(s.kind, s.page) for s in got] == [("image", 1)]
    pixels = np.asarray(got[0].image.convert("RGB"))
    assert got[0].image.width * got[0].image.height <= MAX_PIXELS
    assert tuple(pixels[pixels.shape[0] // 2, pixels.shape[1] // 2]) == (200, 30, 30)


def test_encrypted_pdf_is_a_parse_error_about_the_password(tmp_path):
    import pymupdf

    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret text")
    path = tmp_path / "locked.pdf"
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="x", owner_pw="y")
    doc.close()
    with pytest.raises(ParseError, match="password"):
        sections(parse_pdf, path)


def test_the_corpus_other_pdfs_parse_as_what_they_are(corpus):
    pdf = corpus / "pdf"
    with pytest.raises(ParseError, match="password"):
        sections(parse_pdf, pdf / "encrypted.pdf")
    scanned = sections(parse_pdf, pdf / "scanned.pdf")  # pictures of pages, no text layer
    assert [(s.kind, s.page) for s in scanned] == [("image", 1), ("image", 2)]
    cjk = "".join(s.text for s in sections(parse_pdf, pdf / "cjk.pdf") if s.kind == "text")
    for lines in built.CJK_TEXT.values():
        assert all(line in cjk for line in lines)
    tables = "".join(s.text for s in sections(parse_pdf, pdf / "chinese-tables.pdf")
                     if s.kind == "text")
    assert "稀有气体" in tables and "乌鲁木齐" in tables
    form = sections(parse_pdf, pdf / "form.pdf")
    assert [s.page for s in form if s.kind == "image"] == [1, 2]
    assert any("Library card application" in s.text for s in form if s.kind == "text")


@pytest.mark.parametrize("name", ["book.pdf", "small-table.pdf", "report-short.pdf"])
def test_truncated_pdf_yields_what_it_can_or_a_parse_error(corpus, tmp_path, name):
    data = (corpus / "pdf" / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    ctx = ParseContext()
    try:
        got = []
        for section in parse_pdf(path, ctx):
            got.append((section.kind, section.page))
    except ParseError as exc:
        assert str(exc)
    else:
        assert got, "a PDF that parses must give at least one section"
        assert ctx.warnings, "a damaged PDF that still parses is reported"


def test_not_a_pdf_and_empty_pdf_are_parse_errors(tmp_path):
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(np.random.default_rng(1).bytes(20_000))
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(ParseError, match="cannot open PDF"):
        sections(parse_pdf, junk)
    with pytest.raises(ParseError, match="empty"):
        sections(parse_pdf, empty)


# --------------------------------------------------------------------------- images


def test_smart_resize_is_qwen_vl_utils_smart_resize():
    from qwen_vl_utils import smart_resize as reference

    rng = np.random.default_rng(0)
    sizes = [(1, 1), (32, 32), (10, 1999), (1545, 1194), (6000, 8000), (183, 275)]
    sizes += [tuple(int(v) for v in rng.integers(1, 9000, 2)) for _ in range(300)]
    for h, w in sizes:
        if max(h, w) / min(h, w) > 200:
            continue
        assert smart_resize(h, w, 32, LIMITS.image_min_pixels, MAX_PIXELS) == reference(
            h, w, factor=32, min_pixels=LIMITS.image_min_pixels, max_pixels=MAX_PIXELS
        )


def test_corpus_images_come_out_at_the_models_size_and_pixels(corpus):
    from PIL import ImageOps
    from qwen_vl_utils import smart_resize as reference
    from qwen_vl_utils.vision_process import fetch_image

    paths = sorted((corpus / "images").iterdir())
    assert len(paths) >= 5
    fingerprints = set()
    for path in paths:
        (section,) = sections(parse_image, path)
        assert section.kind == "image" and section.image.mode == "RGB"
        with Image.open(path) as original:
            w, h = ImageOps.exif_transpose(original).size  # as shown (rotated_exif.jpg turns)
        rh, rw = reference(h, w, factor=32, min_pixels=LIMITS.image_min_pixels,
                           max_pixels=MAX_PIXELS)
        assert section.image.size == (rw, rh)
        fingerprints.add(section.fingerprint)
    assert len(fingerprints) == len(paths)
    assert {"rotated_exif.jpg", "transparent.png"} <= {p.name for p in paths}
    # The reference preprocessing gives the very same pixels (so its own resize is a no-op).
    path = corpus / "images" / "docpage_0.jpg"
    (section,) = sections(parse_image, path)
    with Image.open(path) as original:
        expected = fetch_image(
            {"image": original.convert("RGB"), "min_pixels": LIMITS.image_min_pixels,
             "max_pixels": MAX_PIXELS},
            image_patch_size=16,
        )
    assert np.array_equal(np.asarray(expected), np.asarray(section.image))


def test_image_fingerprint_is_stable_and_follows_pixels(corpus, tmp_path):
    path = corpus / "images" / "photo_0.jpg"
    (a,) = sections(parse_image, path)
    (b,) = sections(parse_image, path)
    assert a.fingerprint == b.fingerprint
    changed = Image.open(path).convert("RGB")
    changed.putpixel((5, 5), (0, 0, 0))
    other = tmp_path / "changed.png"
    changed.save(other)
    (c,) = sections(parse_image, other)
    assert c.fingerprint != a.fingerprint


def test_exif_orientation_is_applied(tmp_path):
    picture = Image.new("RGB", (640, 320), (0, 0, 255))
    picture.paste((255, 0, 0), (0, 0, 320, 320))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "turned.jpg"
    picture.save(path, exif=exif, quality=95)
    (section,) = sections(parse_image, path)
    width, height = section.image.size
    assert height > width  # 640x320 stored, shown 320x640
    assert (height, width) == smart_resize(640, 320, 32, LIMITS.image_min_pixels, MAX_PIXELS)
    top = np.asarray(section.image)[10, width // 2]
    assert top[0] > 200 and top[2] < 60  # the red half is on top after turning


def test_huge_images_come_out_within_max_pixels(tmp_path):
    png = tmp_path / "huge.png"
    Image.new("RGB", (8000, 6000), (10, 120, 200)).save(png, compress_level=1)
    jpg = tmp_path / "huge.jpg"  # also exercises JPEG draft decoding
    Image.new("RGB", (8000, 6000), (10, 120, 200)).save(jpg, quality=80)
    for path in (png, jpg):
        (section,) = sections(parse_image, path)
        assert section.image.width * section.image.height <= MAX_PIXELS
        assert section.image.size == smart_resize(
            6000, 8000, 32, LIMITS.image_min_pixels, MAX_PIXELS
        )[::-1]
        r, g, b = np.asarray(section.image)[100, 100]
        assert abs(int(r) - 10) < 6 and abs(int(g) - 120) < 6 and abs(int(b) - 200) < 6


def _png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_image_over_the_pixel_cap_is_a_clean_parse_error(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 40_000, 40_000)  # 1.6 gigapixels, never decoded
    with pytest.raises(ParseError, match=r"image too large \(1,600 megapixels"):
        sections(parse_image, bomb)
    wide = tmp_path / "wide.png"
    _png_header_only(wide, 100_000, 3_100)  # 310 MP: Pillow lets it through, our cap does not
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ParseError, match=r"image too large \(100000x3100\)"):
        sections(parse_image, wide)
    # Between Pillow's own bomb limit (179 MP) and ours (300 MP): still our size check, which
    # passes; the file then fails on its missing pixel data, as a ParseError.
    big = tmp_path / "big.png"
    _png_header_only(big, 15_000, 15_000)
    with pytest.raises(ParseError, match="cannot read image"):
        sections(parse_image, big)


def test_corrupt_images_are_parse_errors(corpus, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(np.random.default_rng(2).bytes(5000))
    with pytest.raises(ParseError, match="not a readable image"):
        sections(parse_image, junk)
    data = (corpus / "images" / "photo_0.jpg").read_bytes()
    header = tmp_path / "header.jpg"
    header.write_bytes(data[:200])
    with pytest.raises(ParseError):
        sections(parse_image, header)
    half = tmp_path / "half.jpg"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match="cannot read image"):
        sections(parse_image, half)
    with pytest.raises(ParseError):
        sections(parse_image, tmp_path / "missing.png")


def test_transparency_becomes_white(tmp_path):
    rgba = Image.new("RGBA", (256, 128), (0, 0, 0, 0))
    rgba.paste((0, 200, 0, 255), (0, 0, 128, 128))
    path = tmp_path / "alpha.png"
    rgba.save(path)
    (section,) = sections(parse_image, path)
    assert section.image.mode == "RGB" and section.image.size == (256, 128)
    pixels = np.asarray(section.image)
    assert tuple(pixels[64, 32]) == (0, 200, 0)
    assert tuple(pixels[64, 220]) == (255, 255, 255)
    # A palette image with a transparent index, and a 16-bit grey image.
    pal = tmp_path / "pal.gif"
    Image.new("P", (64, 64), 0).save(pal, transparency=0)
    (section,) = sections(parse_image, pal)
    assert section.image.mode == "RGB"
    assert tuple(np.asarray(section.image)[3, 3]) == (255, 255, 255)
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.full((64, 64), 32768, dtype=np.uint16)).save(grey)
    (section,) = sections(parse_image, grey)
    assert 120 <= np.asarray(section.image)[5, 5, 0] <= 135  # mid-grey, not clipped to white


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (96, 64), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    (section,) = sections(parse_image, path)
    r, g, b = np.asarray(section.image)[10, 10]
    assert r > 200 and b < 50


# --------------------------------------------------------------------------- video


def _av_duration(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / 1_000_000


def _check_segments(got, duration: float, segment_seconds: float) -> None:
    assert got and got[0].start_s == 0
    for a, b in zip(got, got[1:]):
        assert a.end_s == pytest.approx(b.start_s)
    assert got[-1].end_s == pytest.approx(duration, abs=0.05)
    for section in got:
        assert section.kind == "video"
        assert 0 < section.end_s - section.start_s <= segment_seconds + 1e-6
        # One frame per second: t = start, start + 1, ... < end.
        assert len(section.frames) == max(1, math.ceil(section.end_s - section.start_s - 1e-6))
        assert section.keyframe is not None
        assert any(section.keyframe is f for f in section.frames)
        size = section.frames[0].size
        for frame in section.frames:
            assert frame.mode == "RGB" and frame.size == size
            assert frame.width * frame.height <= LIMITS.frame_max_pixels
        assert section.fingerprint


def _check_frames(got, spec: built.VideoSpec) -> None:
    """Every sampled frame is the one shown at its sample time (start, start + 1 s, ...): the
    generator drew its number and its second's colour into it."""
    for section in got:
        for k, frame in enumerate(section.frames):
            t = section.start_s + k
            assert built.frame_number(frame) == round(t * spec.fps), (section.start_s, k)
            colour = np.array(built.frame_colour(frame)) - built.second_colour(int(t))
            assert np.abs(colour).max() <= 16, (section.start_s, k, colour)


TIMELINE = built.VIDEOS["timeline.mp4"]


def test_video_segments_cover_the_clip_at_one_frame_per_second(corpus):
    path = corpus / "video" / "example.mp4"
    spec = built.VIDEOS["example.mp4"]
    assert _av_duration(path) == pytest.approx(spec.duration)
    got = sections(parse_video, path)
    _check_segments(got, spec.duration, 30)
    assert len(got) == 1 and len(got[0].frames) == math.ceil(spec.duration) == 2
    _check_frames(got, spec)

    timeline = corpus / "video" / "timeline.mp4"
    got = sections(parse_video, timeline, ParseContext(video_segment_seconds=2))
    assert len(got) == math.ceil(TIMELINE.duration / 2) == 5
    _check_segments(got, _av_duration(timeline), 2)
    _check_frames(got, TIMELINE)
    # The keyframe is the sampled frame nearest the middle of its segment.
    (whole,) = sections(parse_video, timeline)
    assert len(whole.frames) == math.ceil(TIMELINE.duration)  # 0..9 s sampled
    middle = TIMELINE.duration / 2  # 4.82 s
    assert whole.keyframe is whole.frames[round(middle)]


def test_video_frames_are_scaled_down_when_decoding(corpus):
    spec = built.VIDEOS["hd_720p.webm"]
    assert spec.width * spec.height > LIMITS.frame_max_pixels  # 1280x720 > 768*32*32
    (section,) = sections(parse_video, corpus / "video" / "hd_720p.webm")
    width, height = section.frames[0].size
    assert width * height <= LIMITS.frame_max_pixels
    assert abs(width / height - spec.width / spec.height) < 0.01
    _check_frames([section], spec)


def test_video_segments_are_thinned_to_max_frames(corpus):
    ctx = ParseContext(limits=replace(LIMITS, max_frames=4))
    (section,) = sections(parse_video, corpus / "video" / "timeline.mp4", ctx)
    assert len(section.frames) == 4
    times = sample_times(0, TIMELINE.duration, 1.0, 4)
    assert times == [0.0, 3.0, 6.0, 9.0]
    assert [built.frame_number(f) for f in section.frames] == \
        [round(t * TIMELINE.fps) for t in times]


def test_video_without_duration_in_its_header_indexes(corpus):
    import av

    path = corpus / "video" / "no_duration.webm"
    spec = built.VIDEOS["no_duration.webm"]
    with av.open(str(path)) as container:  # the header really has no duration
        assert container.duration is None and container.streams.video[0].duration is None
    with pytest.raises(video_mod._BackendFailed):  # so decord refuses it and PyAV reads it
        video_mod._decord_reader(path, LIMITS.frame_max_pixels)
    got = sections(parse_video, path, ParseContext(video_segment_seconds=2))
    assert len(got) == math.ceil(spec.duration / 2) == 3
    assert got[-1].end_s == pytest.approx(spec.duration, abs=0.1)
    for a, b in zip(got, got[1:]):
        assert a.end_s == b.start_s
    assert [len(s.frames) for s in got] == [2, 2, 1]
    _check_frames(got, spec)


def test_corrupt_video_is_a_parse_error(tmp_path, capfd):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(3).bytes(50_000))
    with pytest.raises(ParseError, match="cannot decode video"):
        sections(parse_video, junk)
    assert "ERROR" not in capfd.readouterr().err  # decord's C++ log line is kept off fd 2
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    with pytest.raises(ParseError, match="cannot decode video"):
        sections(parse_video, empty)


def test_pyav_fallback_matches_decord(corpus, monkeypatch):
    cases = [("example.mp4", 30), ("timeline.mp4", 2), ("timeline.mp4", 30)]
    by_decord = {
        case: sections(parse_video, corpus / "video" / case[0],
                       ParseContext(video_segment_seconds=case[1]))
        for case in cases
    }

    def no_decord(*args, **kwargs):
        raise video_mod._BackendFailed("decord disabled by the test")

    monkeypatch.setattr(video_mod, "_decord_reader", no_decord)
    for (name, seconds), expected in by_decord.items():
        got = sections(parse_video, corpus / "video" / name,
                       ParseContext(video_segment_seconds=seconds))
        assert [len(s.frames) for s in got] == [len(s.frames) for s in expected]
        assert [s.start_s for s in got] == [s.start_s for s in expected]
        assert [s.end_s for s in got] == pytest.approx([s.end_s for s in expected], abs=0.05)
        assert got[0].frames[0].size == expected[0].frames[0].size
        assert [[built.frame_number(f) for f in s.frames] for s in got] == \
            [[built.frame_number(f) for f in s.frames] for s in expected]
        _check_frames(got, built.VIDEOS[name])


def test_decord_failing_part_way_hands_over_to_pyav(corpus, monkeypatch):
    real_reader = video_mod._decord_reader

    class FailsAfterOneBatch:
        def __init__(self, reader):
            self.reader, self.calls = reader, 0

        def get_batch(self, indices):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("simulated decoding failure")
            return self.reader.get_batch(indices)

    def flaky_reader(path, max_pixels):
        reader, n, fps = real_reader(path, max_pixels)
        return FailsAfterOneBatch(reader), n, fps

    monkeypatch.setattr(video_mod, "_decord_reader", flaky_reader)
    path = corpus / "video" / "timeline.mp4"
    ctx = ParseContext(video_segment_seconds=2)
    got = sections(parse_video, path, ctx)
    assert [s.start_s for s in got] == [2 * i for i in range(math.ceil(TIMELINE.duration / 2))]
    _check_segments(got, _av_duration(path), 2)
    _check_frames(got, TIMELINE)
    assert ctx.warnings == []


def test_parse_video_is_lazy(corpus, monkeypatch):
    calls = []
    real = video_mod._section

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(video_mod, "_section", counting)
    stream = parse_video(corpus / "video" / "timeline.mp4", ParseContext(video_segment_seconds=2))
    next(stream)
    assert len(calls) == 1
    stream.close()


def test_fingerprints_differ_between_segments(corpus):
    got = sections(parse_video, corpus / "video" / "timeline.mp4",
                   ParseContext(video_segment_seconds=2))
    assert len({s.fingerprint for s in got}) == len(got)
    again = sections(parse_video, corpus / "video" / "timeline.mp4",
                     ParseContext(video_segment_seconds=2))
    assert [s.fingerprint for s in again] == [s.fingerprint for s in got]


def test_image_module_keeps_pillows_limit_raised_only(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    image_mod._pil()
    assert Image.MAX_IMAGE_PIXELS is None  # switched off by someone else: left off
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    image_mod._pil()
    assert Image.MAX_IMAGE_PIXELS * 2 >= image_mod.MAX_SOURCE_PIXELS
