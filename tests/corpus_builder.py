"""The corpus the tests and benchmarks read: vendored files copied in, everything else generated.

``build_corpus(dest)`` writes ``dest/{images,pdf,text,video}``.  Files whose licence allows it
are vendored unchanged under ``tests/data`` (origin and licence of each in
``tests/data/SOURCES.md``); the PDFs, the HTML page, the long text file and the videos are
generated here, deterministically (fixed seeds), in a few seconds, with the properties the tests
rely on.  The module-level constants describe what is generated, so that tests compute their
expectations from them instead of hard-coding them.

Generated files (vendored ones are listed in tests/data/SOURCES.md):

* ``pdf/book.pdf``: a 285-page book of prose (every page has text and a numbered section
  heading found on no other page, some pages a vector figure); the prose is a seeded bigram
  walk over the vendored README's words mixed with everyday English (``COMMON_WORDS``), so that
  token counts are realistic.
* ``pdf/slides.pdf``: 15 landscape slides, little text and 2-3 raster images each; page 1 is a
  results table whose tagged-PDF structure tree sends MuPDF's display list device into minutes
  of structure-tree repair (``slides_page_1_stalls_a_display_list``), while drawing the page
  straight into a pixmap takes milliseconds.
* ``pdf/small-table.pdf``: one page, a table of the noble gases and their boiling points.
  It is written object by object with its XMP metadata last, so cut in half it still has its
  page; ``book.pdf`` and ``report-short.pdf`` use object streams, so cut in half they have
  lost their page tree (the two outcomes of a truncated PDF).
* ``pdf/chinese-tables.pdf``: one page, two tables in Chinese (MuPDF's built-in CJK font).
* ``pdf/cjk.pdf``: Chinese (simplified, traditional), Japanese and Korean text.
* ``pdf/paper.pdf``: a one-page paper, A4, two columns.
* ``pdf/form.pdf``: a two-page form with text fields, check boxes and a list box.
* ``pdf/report.pdf``: a 34-page report, a picture (chart or photo) on every other page, a short
  last page.
* ``pdf/report-short.pdf``: a 3-page dense report on an unusual page size (523 x 827 pt).
* ``pdf/scanned.pdf``: two pages that are only images (the vendored document photos).
* ``pdf/encrypted.pdf``: a password-protected PDF (``ENCRYPTED_PASSWORD``).
* ``images/rotated_exif.jpg``: stored 320x240, EXIF orientation 6 (shown 240x320, red on top).
* ``images/transparent.png``: RGBA with a transparent background.
* ``text/handbook.txt``: about 700 lines of Markdown-like notes (long lines, lists, code).
* ``text/bom-over-meta.html``: UTF-16LE with a byte-order mark and a stale
  ``<meta charset=windows-1252>``; ``text/bom-over-meta.expected.json`` says what its readable
  text must and must not contain.
* ``video/*``: see ``VIDEOS``; every frame shows its number as 8 bits in a strip along the top
  (``frame_number``) and the colour of its second below (``second_colour``).

Run ``python tests/corpus_builder.py DEST`` to write a corpus to look at.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
README = DATA / "text" / "qwen3-vl-embedding-readme.md"

BOOK_PAGES = 285
BOOK_TITLE = "Rendering Pages: A Field Guide"
SLIDES_PAGES = 15
REPORT_PAGES = 34
ENCRYPTED_PASSWORD = "kbterm"
# Depth of the doubling chain in slides.pdf's structure tree: MuPDF's repair walk visits 2**depth
# nodes (2**20 take about 0.7 s here, so 2**28 take minutes).
SLIDES_STALL_DEPTH = 28

HTML_TITLE = "Homöopathie auf dem Prüfstand – Spektrum der Wissenschaft"

# Frame pixels: the strip along the top holds the frame number, the rest the second's colour.
PALETTE = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 40), (200, 60, 200),
           (40, 200, 210), (240, 140, 30), (120, 120, 120), (150, 90, 40), (250, 250, 250)]
FRAME_BITS = 8


@dataclass(frozen=True)
class VideoSpec:
    frames: int
    fps: int
    width: int
    height: int
    codec: str
    options: dict[str, str] = field(default_factory=dict)
    container_options: dict[str, str] = field(default_factory=dict)
    audio: str | None = None
    audio_options: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds: frames / fps."""
        return self.frames / self.fps


_X264 = {"preset": "ultrafast", "g": "25", "threads": "1"}
_VPX = {"deadline": "realtime", "cpu-used": "8", "threads": "1"}
VIDEOS: dict[str, VideoSpec] = {
    # 2.0 s: one 30-s segment of two frames.
    "example.mp4": VideoSpec(50, 25, 160, 120, "libx264", _X264),
    # 9.64 s with a sound track: five 2-s segments, 10 frames at 1 fps, thinning to max_frames.
    "timeline.mp4": VideoSpec(241, 25, 160, 120, "libx264", _X264, audio="aac"),
    # 1280x720 is more than frame_max_pixels (768*32*32): frames are scaled down when decoding.
    "hd_720p.webm": VideoSpec(6, 6, 1280, 720, "libvpx", {**_VPX, "b": "1M"}),
    # Matroska written live: no duration in its header (decord refuses it, PyAV plays it).
    "no_duration.webm": VideoSpec(74, 15, 160, 120, "libvpx-vp9", _VPX, {"live": "1"},
                                  audio="libopus", audio_options={"frame_duration": "60"}),
}


# --------------------------------------------------------------------------- prose

# Everyday English, mixed into the README's vocabulary so that the tokenizer trained on the
# generated text splits ordinary words the way a real one would (not into letters).
COMMON_WORDS = """
a about above across act action add after again against age ago agree air all almost alone
along already also always am among an and animal another answer any anyone anything appear
apple are area arm around arrive art as ask at away baby back bad bag ball bank base be bear
beat beautiful because become bed been before began begin behind being believe bell below
best better between big bird bit black blood blue board boat body bone book born both bottom
box boy bread break bridge bright bring broad brother brought brown build burn business busy
but buy by call came camp can capital captain car card care carry case cat catch caught cause
cell center century certain chair chance change chart check child children choose church
circle city class clean clear climb clock close cloth cloud coast coat cold collect colony
color come common company complete condition consider contain continue control cook cool
copy corn corner correct cost cotton could count country course cover cow create crop cross
crowd cry current cut dance dark daughter day dead deal dear death decide deep degree depend
describe desert design detail develop did die differ difficult direct discuss distant divide
do doctor does dog dollar done door double down draw dream dress drink drive drop dry during
duck dust each ear early earth east eat edge effect egg eight either else end enemy energy
engine enough enter equal even evening event ever every evidence exact example except excite
exercise expect experience explain eye face fact fair fall family famous far farm fast father
favor fear feed feel feet fell felt few field fig fight figure fill final find fine finger
finish fire first fish fit five flat floor flow flower fly follow food foot for force forest
form forward found four free fresh friend from front fruit full fun game garden gas gather
gave general gentle get gift girl give glad glass go gold gone good got govern grand grass
gray great green grew ground group grow guess guide gun had hair half hall hand happen happy
hard harbour has hat have he head hear heard heart heat heavy held help her here high hill
him his history hit hold hole home hope horse hot hour house how huge human hundred hunt
hurry I ice idea if imagine important in inch include industry insect inside instead
interest into iron is island it job join joy jump just keep kept key kill kind king kitchen
knew know lady lake land language large last late laugh law lay lead learn least leave led
left leg length less let letter level lie life lift light like line liquid list listen little
live locate log long look lost lot loud love low machine made magnet main major make man many
map mark market mass master match material matter may me mean measure meat meet melody men
metal method middle might mile milk million mind mine minute miss modern moment money month
moon more morning most mother motion mount mountain mouth move much music must my name nation
natural nature near necessary neck need neighbor never new next night nine no noise noon nor
north nose not note nothing notice noun now number ocean of off offer office often oh oil old
on once one only open operate opposite or order ordinary organ other our out over own page
paint pair paper paragraph parent part particular party pass past path pattern pay people
perhaps period person picture piece place plain plan plane plant play please plural poem point
pole poor port position possible post pound power practice prepare present press pretty print
probable problem process produce product proper property protect prove provide pull push put
question quick quiet quite race radio rain raise ran rather reach read ready real reason
receive record red region remember repeat reply represent require rest result rich ride right
ring rise river road rock roll room root rope rose round row rule run safe said sail salt same
sand sat save saw say scale school science score sea search season seat second section see
seed seem segment select self sell send sense sent separate serve set settle seven several
shall shape share sharp she sheet shell shine ship shoe shop shore short should shoulder shout
show side sight sign silent silver similar simple since sing single sister sit six size skill
skin sky sleep slip slow small smell smile snow so soft soil soldier solution some son song
soon sound south space speak special speech speed spell spend spoke spot spread spring square
stand star start state station stay stead steam steel step stick still stone stood stop store
storm story straight strange stream street stretch string strong student study subject such
sudden suffix sugar suggest summer sun supply support sure surface surprise swim syllable
table tail take talk tall teach team teeth tell temperature ten term test than thank that the
their them then there these they thick thin thing think third this those though thought
thousand three through throw thus tide tie time tiny tire to together told tone too took tool
top total touch toward town track trade train travel tree triangle trip trouble truck true try
tube turn twenty two type under unit until up us use usual valley value very view village
visit voice vowel wait walk wall want war warm was wash watch water wave way we wear weather
week weight well went were west what wheel when where whether which while white who whole
whose why wide wife wild will win wind window wing winter wire wish with woman women wonder
wood word wore work world would write written wrong wrote yard year yellow yes yet you young
""".split()


def _readme_sentences() -> list[list[str]]:
    """The vendored README's prose as sentences of words (code, markup and links removed;
    punctuation kept on the word it follows)."""
    text = README.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"https?://\S+", " ", text)
    lines = [ln for ln in text.splitlines() if "|" not in ln and not ln.lstrip().startswith("#")]
    text = re.sub(r"[*_`>#()]+", " ", " ".join(lines))
    sentences = []
    for raw in re.split(r"(?<=[.!?])\s+", text):
        words = re.findall(r"(?:[A-Za-z][A-Za-z0-9'’\-]*|\d+(?:\.\d+)?%?)[,;:]?", raw)
        if len(words) >= 5:
            sentences.append(words)
    return sentences


class Prose:
    """Seeded English-like text: a bigram walk over the README's sentences."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.starts, self.next = _bigrams()

    def sentence(self, low: int = 8, high: int = 26) -> str:
        rand = self.rng.random
        target = low + int(rand() * (high - low + 1))
        starts, following = self.starts, self.next
        word = starts[int(rand() * len(starts))]
        words = [word]
        limit = 3 * high
        common = COMMON_WORDS
        while len(words) < limit:
            followers = following.get(word)
            if not followers or (len(words) >= target and rand() < 0.35):
                break
            if rand() < 0.3:  # an everyday word, then back into the README's bigrams
                words.append(common[int(rand() * len(common))])
            word = followers[int(rand() * len(followers))]
            words.append(word)
        text = " ".join(words).rstrip(",;:")
        return text[0].upper() + text[1:] + "."

    def paragraph(self, low: int = 3, high: int = 7) -> str:
        return " ".join([self.sentence() for _ in range(self.rng.randint(low, high))])

    def title(self, low: int = 3, high: int = 7) -> str:
        words = self.sentence(low, high).rstrip(".").split()[:high]
        return " ".join(words).rstrip(",;:")


@lru_cache(maxsize=1)
def _bigrams() -> tuple[list[str], dict[str, list[str]]]:
    """Sentence-starting words, and for each word the words that follow it in the README."""
    starts: list[str] = []
    following: dict[str, list[str]] = {}
    for words in _readme_sentences():
        if words[0][0].isalpha():
            starts.append(words[0])
        for a, b in zip(words, words[1:]):
            following.setdefault(a, []).append(b)
    return starts, following


@lru_cache(maxsize=1)
def handbook_text() -> str:
    """``text/handbook.txt``: Markdown-like notes, about 700 lines (LF line ends)."""
    prose = Prose(7)
    rng = prose.rng
    out = ["# Field notes: indexing a personal library", "",
           "> " + prose.paragraph(2, 3), ""]
    section = 0
    while len(out) < 690:
        section += 1
        out += ["---", "", f"## {section}. {prose.title()}", ""]
        for _ in range(rng.randint(2, 4)):
            kind = rng.random()
            if kind < 0.55:
                out += [prose.paragraph(2, 4), ""]
            elif kind < 0.75:
                out += [f"- **{prose.title(2, 4)}**: {prose.sentence()}"
                        for _ in range(rng.randint(3, 6))] + [""]
            elif kind < 0.9:
                names = [w.lower() for w in prose.title(3, 5).split() if w.isalpha()] or ["page"]
                var = "_".join(names[:2])
                out += ["```python", "import kbterm", "",
                        f"{var} = kbterm.open({rng.choice(names)!r})",
                        f"for page in {var}:",
                        f"    print(page.number, len(page.text))  # {prose.title(2, 4)}",
                        "```", ""]
            else:
                out += [f"### {prose.title(2, 5)}", "", prose.sentence() + " Größe, café, naïve —"
                        " 日本語 and 한국어 examples.", ""]
    return "\n".join(out) + "\n"


def tokenizer_training_lines() -> list[str]:
    """Lines to train the tests' tokenizer on: the long generated text and the README."""
    return handbook_text().splitlines() + README.read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------- PDF helpers


_char_widths: dict[str, dict[str, float]] = {}
_widths: dict[tuple[str, float], dict[str, float]] = {}


def _width(text: str, font: str, size: float) -> float:
    """Width in points of ``text`` in a base-14 font: the sum of its glyph advances, as
    ``pymupdf.get_text_length`` measures it (one C call per character is slow: cached)."""
    import pymupdf

    cache = _widths.setdefault((font, size), {})
    w = cache.get(text)
    if w is None:
        chars = _char_widths.setdefault(font, {})
        total = 0.0
        for ch in text:
            cw = chars.get(ch)
            if cw is None:
                cw = chars[ch] = pymupdf.get_text_length(ch, fontname=font, fontsize=1)
            total += cw
        w = cache[text] = total * size
    return w


def wrap(text: str, width: float, font: str = "helv", size: float = 10.0) -> list[str]:
    """Greedy word wrap of ``text`` to lines at most ``width`` points wide."""
    space = _width(" ", font, size)
    cache = _widths[(font, size)]
    lines: list[str] = []
    line: list[str] = []
    used = -space
    for word in text.split():
        w = cache.get(word)
        if w is None:
            w = _width(word, font, size)
        if line and used + space + w > width:
            lines.append(" ".join(line))
            line, used = [], -space
        used += space + w
        line.append(word)
    if line:
        lines.append(" ".join(line))
    return lines


_BASE14 = {"helv": "Helvetica", "hebo": "Helvetica-Bold", "heit": "Helvetica-Oblique",
           "cour": "Courier"}


def base14_fonts(doc: Any) -> dict[str, int]:
    """Font objects (WinAnsi) for the base-14 names PageText uses, made once per document."""
    xrefs = {}
    for name, base in _BASE14.items():
        xref = doc.get_new_xref()
        doc.update_object(xref, f"<< /Type /Font /Subtype /Type1 /BaseFont /{base} "
                                "/Encoding /WinAnsiEncoding >>")
        xrefs[name] = xref
    return xrefs


_ESCAPES = str.maketrans({"\\": "\\\\", "(": "\\(", ")": "\\)"})


def _pdf_string(text: str) -> str:
    """``text`` as a PDF literal string in WinAnsi (cp1252) bytes."""
    if text.isascii():
        return "(" + text.translate(_ESCAPES) + ")"
    out = []
    for byte in text.encode("cp1252", errors="replace"):
        ch = chr(byte)
        if 32 <= byte < 127:
            out.append(ch.translate(_ESCAPES))
        else:
            out.append(f"\\{byte:03o}")
    return "(" + "".join(out) + ")"


class PageText:
    """Lines of base-14 text written straight into a page's content stream (PyMuPDF's Shape
    takes about a millisecond a line; this, microseconds).  Same call as Shape.insert_text."""

    def __init__(self, height: float) -> None:
        self.height = height
        self.ops: list[str] = []

    def insert_text(self, point: tuple[float, float], text: str, fontname: str = "helv",
                    fontsize: float = 11, color: tuple = (0, 0, 0)) -> None:
        r, g, b = color
        self.ops.append(f"BT {r:g} {g:g} {b:g} rg /{fontname} {fontsize:g} Tf "
                        f"{point[0]:.2f} {self.height - point[1]:.2f} Td {_pdf_string(text)} Tj ET")

    def commit(self, doc: Any, page: Any, fonts: dict[str, int]) -> None:
        """Make these lines the page's content (before any Shape or image is added)."""
        font_dict = " ".join(f"/{name} {xref} 0 R" for name, xref in fonts.items())
        doc.xref_set_key(page.xref, "Resources", f"<< /Font << {font_dict} >> >>")
        contents = doc.get_new_xref()
        doc.update_object(contents, "<<>>")
        doc.update_stream(contents, "\n".join(self.ops).encode("latin-1"))
        doc.xref_set_key(page.xref, "Contents", f"{contents} 0 R")


class Column:
    """Lines of text placed top-down in a box of a page, through a Shape or a PageText."""

    def __init__(self, out: Any, x: float, y: float, width: float, bottom: float) -> None:
        self.out, self.x, self.y, self.width, self.bottom = out, x, y, width, bottom

    def room(self, leading: float) -> int:
        return max(0, int((self.bottom - self.y) // leading))

    def text(self, lines: list[str], font: str = "helv", size: float = 10.0,
             leading: float | None = None, color: tuple = (0, 0, 0)) -> list[str]:
        """Place as many of ``lines`` as fit; return the rest."""
        leading = leading or size * 1.35
        fit = lines[: self.room(leading)]
        for line in fit:
            self.y += leading
            self.out.insert_text((self.x, self.y), line, fontname=font, fontsize=size,
                                 color=color)
        return lines[len(fit):]

    def skip(self, points: float) -> None:
        self.y += points


def _figure(shape: Any, rect: Any, rng: random.Random) -> None:
    """A vector diagram: boxes joined by arrows, and a curve."""
    import pymupdf

    x0, y0, x1, y1 = rect
    shape.draw_rect(rect)
    shape.finish(color=(0.4, 0.4, 0.4), width=0.6)
    n = rng.randint(3, 5)
    step = (x1 - x0) / n
    centres = []
    for i in range(n):
        box = pymupdf.Rect(x0 + i * step + 10, y0 + 20, x0 + (i + 1) * step - 10, y0 + 60)
        shape.draw_rect(box)
        shape.finish(color=(0.1, 0.2, 0.5), fill=(0.85, 0.9, 1.0), width=0.8)
        centres.append(((box.x0 + box.x1) / 2, box.y1))
    for (ax, ay), (bx, by) in zip(centres, centres[1:]):
        shape.draw_line((ax + step / 2 - 14, ay - 20), (bx - step / 2 + 14, by - 20))
    shape.finish(color=(0.1, 0.1, 0.1), width=0.8)
    pts = [(x0 + 10 + k * (x1 - x0 - 20) / 40,
            y1 - 12 - (y1 - y0 - 90) * (0.5 + 0.45 * np.sin(k / 6 + rng.random())))
           for k in range(41)]
    shape.draw_polyline(pts)
    shape.finish(color=(0.8, 0.2, 0.1), width=1.0)


def _table(shape: Any, x: float, y: float, widths: list[float], rows: list[list[str]],
           font: str = "helv", size: float = 10.0, row_height: float = 18.0,
           header_font: str | None = None) -> float:
    """A ruled table; returns the y below it."""
    total = sum(widths)
    for r, row in enumerate(rows):
        cx = x
        for w, cell in zip(widths, row):
            shape.insert_text((cx + 4, y + r * row_height + row_height - 5), cell,
                              fontname=(header_font or font) if r == 0 else font, fontsize=size)
            cx += w
    for r in range(len(rows) + 1):
        shape.draw_line((x, y + r * row_height), (x + total, y + r * row_height))
    cx = x
    for w in [0.0, *widths]:
        cx += w
        shape.draw_line((cx, y), (cx, y + len(rows) * row_height))
    shape.finish(color=(0, 0, 0), width=0.6)
    return y + len(rows) * row_height


def _raster(rng: np.random.Generator, width: int, height: int, kind: str) -> bytes:
    """A generated picture as JPEG bytes: a bar chart, or a smooth 'photo' with a horizon."""
    from PIL import Image, ImageDraw

    if kind == "chart":
        image = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        bars = int(rng.integers(4, 9))
        bw = (width - 40) // bars
        for i in range(bars):
            h = int(rng.integers(height // 6, height - 30))
            colour = tuple(int(c) for c in rng.integers(30, 220, 3))
            draw.rectangle([20 + i * bw + 4, height - 15 - h, 20 + (i + 1) * bw - 4, height - 15],
                           fill=colour)
        draw.line([18, 10, 18, height - 15, width - 10, height - 15], fill=(0, 0, 0), width=2)
    else:
        top, bottom = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
        t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        pixels = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()
        x = np.arange(width, dtype=np.float32)
        horizon = height * (0.45 + 0.2 * np.sin(x / width * rng.uniform(2, 7)))
        pixels[np.arange(height)[:, None] > horizon[None, :]] *= 0.6
        pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * 6
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def _save(doc: Any, path: Path, object_streams: bool = False) -> None:
    """Save compressed, the same bytes every build; ``object_streams`` packs the objects into
    object streams (PDF 1.5, as most producers do now): cut in half, such a file has lost its
    page tree, where one written object by object keeps its first pages."""
    doc.set_metadata({"producer": "kbterm tests/corpus_builder.py", "creator": "",
                      "creationDate": "", "modDate": ""})
    doc.save(path, garbage=1, deflate=True, no_new_id=True, use_objstms=int(object_streams))
    doc.close()


XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:pdf="http://ns.adobe.com/pdf/1.3/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title>
   <dc:creator><rdf:Seq><rdf:li>kbterm tests</rdf:li></rdf:Seq></dc:creator>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt>
   </dc:description>
   <pdf:Producer>kbterm tests/corpus_builder.py</pdf:Producer>
   <xmp:CreatorTool>kbterm tests/corpus_builder.py</xmp:CreatorTool>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
{padding}
<?xpacket end="w"?>"""


def _xmp(title: str, description: str) -> str:
    """An XMP metadata packet (with the customary whitespace padding for in-place edits)."""
    padding = "\n".join(" " * 99 for _ in range(12))
    return XMP.format(title=title, description=description, padding=padding)


# --------------------------------------------------------------------------- PDFs


def section_heading(prose: Prose, number: str, used: set[str]) -> str:
    """A numbered heading of 25 to 60 characters, its title used once in the book: a line
    found on its page and on no other."""
    while True:
        title = prose.title(3, 9)
        heading = f"{number} {title}"
        if 25 <= len(heading) <= 60 and title not in used:
            used.add(title)
            return heading


def book_excerpt(corpus: Path, dest: Path, pages: int = 60) -> Path:
    """The first ``pages`` pages of the corpus's ``book.pdf`` (chapter openings, figures and
    plain pages are all among the first 60), for tests that need every page but not 285."""
    import pymupdf

    with pymupdf.open(corpus / "pdf" / "book.pdf") as doc:
        doc.select(list(range(pages)))
        doc.save(dest, garbage=3, deflate=True)
    return dest


def write_book(path: Path) -> Path:
    """285 pages of prose with running heads, chapter openings, figures and page numbers."""
    import pymupdf

    prose = Prose(1)
    rng = prose.rng
    doc = pymupdf.open()
    fonts = base14_fonts(doc)
    chapter = section = 0
    used: set[str] = set()
    pending: list[str] = []  # lines of a paragraph carried over to the next page
    for n in range(1, BOOK_PAGES + 1):
        page = doc.new_page(width=612, height=792)
        out = PageText(792)
        col = Column(out, 81, 60, 450, 730)
        figure = None
        if n == 1 or rng.random() < 0.05:
            chapter += 1
            section = 0
            pending = []
            col.skip(60)
            col.text([f"Chapter {chapter}"], font="hebo", size=14)
            col.text(wrap(prose.title(4, 8), 450, "hebo", 20), font="hebo", size=20)
            col.skip(20)
        else:
            out.insert_text((81, 50), f"{BOOK_TITLE} - chapter {chapter}", fontname="heit",
                            fontsize=8, color=(0.3, 0.3, 0.3))
        if n % 12 == 5:
            figure = pymupdf.Rect(90, col.y + 10, 522, col.y + 190)
            col.skip(200)
            col.text(wrap(f"Figure {chapter}.{n}: {prose.sentence(6, 14)}", 450, "heit", 9),
                     font="heit", size=9)
            col.skip(8)
        pending = col.text(pending, size=11)
        heading_after = rng.randint(0, 1)  # one section heading a page, after this paragraph
        paragraphs = 0
        while col.room(14.85) > 2:
            if paragraphs == heading_after and col.room(14.85) > 4:
                col.skip(6)
                section += 1
                col.text([section_heading(prose, f"{chapter}.{section}", used)], font="hebo",
                         size=11.5)
            pending = col.text(wrap(prose.paragraph(2, 6), 450, "helv", 11), size=11)
            paragraphs += 1
            col.skip(5)
        out.insert_text((300, 760), str(n), fontname="helv", fontsize=9)
        out.commit(doc, page, fonts)
        if figure is not None:
            shape = page.new_shape()
            _figure(shape, figure, rng)
            shape.commit()
    _save(doc, path, object_streams=True)
    return path


def write_paper(path: Path) -> Path:
    """A one-page A4 paper: title, authors, abstract, two columns, a figure, references."""
    import pymupdf

    prose = Prose(2)
    doc = pymupdf.open()
    page = doc.new_page(width=595.28, height=841.89)
    shape = page.new_shape()
    top = Column(shape, 60, 50, 475, 800)
    top.text(wrap("Sparse and Dense Retrieval over Rendered Pages: " + prose.title(3, 6),
                  475, "hebo", 16), font="hebo", size=16, leading=20)
    top.text(["A. Keeper, B. Lantern and C. Harbour - Department of Information Retrieval"],
             font="heit", size=9)
    top.skip(8)
    top.text(["Abstract"], font="hebo", size=10)
    top.text(wrap(prose.paragraph(4, 5), 475, "helv", 9), size=9, leading=11.5)
    top.skip(8)
    left = Column(shape, 60, top.y, 230, 800)
    right = Column(shape, 305, top.y, 230, 800)
    headings = ["1 Introduction", "2 Related work", "3 Method", "4 Experiments", "5 Results",
                "6 Conclusion"]
    col = left
    for i, heading in enumerate(headings):
        if col is left and col.room(11) < 6:
            col = right
        col.skip(4)
        col.text([heading], font="hebo", size=9.5)
        rest = col.text(wrap(prose.paragraph(3, 5), 230, "helv", 8.5), size=8.5, leading=10.5)
        if rest and col is left:
            col = right
            rest = col.text(rest, size=8.5, leading=10.5)
        if i == 2:
            col.text(["    s(q, d) = cos(E(q), E(d)) = E(q) . E(d) / (|E(q)| |E(d)|)     (1)"],
                     font="cour", size=8)
        if i == 3 and col is right:
            _figure(shape, pymupdf.Rect(305, col.y + 6, 535, col.y + 126), prose.rng)
            col.skip(130)
            col.text(wrap("Figure 1: " + prose.sentence(6, 12), 230, "heit", 8), font="heit",
                     size=8)
    col.skip(4)
    col.text(["References"], font="hebo", size=9.5)
    for k in range(1, 5):
        col.text(wrap(f"[{k}] {prose.title(4, 8)}. arXiv, 202{k}.", 230, "helv", 7.5), size=7.5)
    shape.commit()
    _save(doc, path)
    return path


NOBLE_GASES = [("Helium", "He", "2", "-268.93"), ("Neon", "Ne", "10", "-246.05"),
               ("Argon", "Ar", "18", "-185.85"), ("Krypton", "Kr", "36", "-153.42"),
               ("Xenon", "Xe", "54", "-108.10"), ("Radon", "Rn", "86", "-61.70")]


def write_small_table(path: Path) -> Path:
    """One page: the noble gases and their boiling points, in a ruled table, and XMP metadata
    written after the page (so the file cut in half keeps the page's content)."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    shape = page.new_shape()
    shape.insert_text((72, 90), "Noble gases", fontname="hebo", fontsize=16)
    rows = [["Element", "Symbol", "Atomic number", "Boiling point (°C)"]]
    rows += [list(r) for r in NOBLE_GASES]
    _table(shape, 72, 110, [120, 70, 110, 140], rows, header_font="hebo")
    shape.commit()
    doc.set_xml_metadata(_xmp("Noble gases", "Boiling points of the noble gases, in a table."))
    _save(doc, path)
    return path


def write_chinese_tables(path: Path) -> Path:
    """One A4 page, two ruled tables in Chinese (simplified), with MuPDF's CJK font."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=595.3, height=841.9)
    shape = page.new_shape()
    font = "china-s"
    shape.insert_text((60, 70), "表一：主要城市的月平均气温（摄氏度）", fontname=font, fontsize=14)
    cities = [("北京", "-3.1", "26.7", "12.9"), ("上海", "4.8", "28.6", "17.1"),
              ("广州", "13.6", "28.9", "22.4"), ("哈尔滨", "-17.6", "23.3", "4.9"),
              ("成都", "5.6", "25.7", "16.4"), ("昆明", "8.5", "19.9", "15.4"),
              ("拉萨", "-0.4", "15.9", "8.6"), ("乌鲁木齐", "-12.2", "24.7", "7.8")]
    y = _table(shape, 60, 85, [110, 110, 110, 120],
               [["城市", "一月", "七月", "年平均"]] + [list(c) for c in cities], font=font,
               size=11, row_height=22)
    shape.insert_text((60, y + 45), "表二：稀有气体的沸点", fontname=font, fontsize=14)
    names = ["氦", "氖", "氩", "氪", "氙", "氡"]
    rows = [["元素", "符号", "原子序数", "沸点（摄氏度）"]]
    rows += [[names[i], sym, z, bp] for i, (_, sym, z, bp) in enumerate(NOBLE_GASES)]
    y = _table(shape, 60, y + 60, [90, 90, 110, 160], rows, font=font, size=11, row_height=22)
    shape.insert_text((60, y + 30), "注：数据仅用于测试表格的解析与检索。", fontname=font,
                      fontsize=10)
    shape.commit()
    _save(doc, path)
    return path


CJK_TEXT = {
    "china-s": ["简体中文：个人知识库在终端里运行。", "它为文本、图片和视频建立索引，并回答问题。"],
    "china-t": ["繁體中文：每一頁都會被轉成圖片。", "檢索結果會標明出處與頁碼。"],
    "japan": ["日本語：このページには日本語の文章があります。", "検索と再ランキングのテストです。"],
    "korea": ["한국어: 이 페이지에는 한국어 문장이 있습니다.", "검색과 재순위 테스트입니다."],
}


def write_cjk(path: Path) -> Path:
    """One page of Chinese (simplified, traditional), Japanese and Korean text."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=595.3, height=841.9)
    shape = page.new_shape()
    y = 80.0
    for font, lines in CJK_TEXT.items():
        for line in lines:
            shape.insert_text((60, y), line, fontname=font, fontsize=14)
            y += 24
        y += 20
    shape.commit()
    _save(doc, path)
    return path


def write_form(path: Path) -> Path:
    """Two pages of a form: labelled text fields, check boxes, a list box and fine print."""
    import pymupdf

    prose = Prose(3)
    doc = pymupdf.open()
    for p in range(2):
        page = doc.new_page(width=612, height=792)
        shape = page.new_shape()
        shape.insert_text((54, 60), f"Library card application - part {p + 1} of 2",
                          fontname="hebo", fontsize=15)
        y = 90.0
        labels = (["Family name", "Given names", "Street and number", "Postcode and town",
                   "Telephone", "E-mail"] if p == 0 else
                  ["Card number", "Branch", "Date", "Signature"])
        for label in labels:
            shape.insert_text((54, y + 13), label, fontname="helv", fontsize=9)
            shape.draw_rect(pymupdf.Rect(180, y, 558, y + 18))
            widget = pymupdf.Widget()
            widget.field_type = pymupdf.PDF_WIDGET_TYPE_TEXT
            widget.field_name = f"p{p + 1}_{label.lower().replace(' ', '_')}"
            widget.rect = pymupdf.Rect(181, y + 1, 557, y + 17)
            widget.text_fontsize = 9
            page.add_widget(widget)
            y += 26
        for k, label in enumerate(["I accept the lending rules", "Send me reminders by e-mail",
                                   "I am under 16 years old"]):
            box = pymupdf.Rect(54, y, 66, y + 12)
            shape.draw_rect(box)
            shape.insert_text((74, y + 10), label, fontname="helv", fontsize=9)
            widget = pymupdf.Widget()
            widget.field_type = pymupdf.PDF_WIDGET_TYPE_CHECKBOX
            widget.field_name = f"p{p + 1}_check_{k}"
            widget.rect = box
            page.add_widget(widget)
            y += 20
        if p == 0:
            widget = pymupdf.Widget()
            widget.field_type = pymupdf.PDF_WIDGET_TYPE_LISTBOX
            widget.field_name = "p1_language"
            widget.choice_values = ["English", "Deutsch", "Français", "中文"]
            widget.rect = pymupdf.Rect(180, y, 330, y + 50)
            shape.insert_text((54, y + 13), "Preferred language", fontname="helv", fontsize=9)
            page.add_widget(widget)
            y += 60
        shape.finish(color=(0, 0, 0), width=0.6)
        col = Column(shape, 54, y + 10, 504, 750)
        col.text(["Conditions"], font="hebo", size=10)
        while col.room(9.5) > 1:
            col.text(wrap(prose.paragraph(2, 3), 504, "helv", 7), size=7, leading=9.2)
            col.skip(3)
        shape.commit()
    _save(doc, path)
    return path


def write_report(path: Path, pages: int = REPORT_PAGES) -> Path:
    """A report: title page, sections, a picture on every other page, a short last page."""
    import pymupdf

    prose = Prose(4)
    rng = np.random.default_rng(4)
    doc = pymupdf.open()
    fonts = base14_fonts(doc)
    for n in range(1, pages + 1):
        page = doc.new_page(width=612, height=792)
        out = PageText(792)
        col = Column(out, 72, 72, 468, 720)
        picture = None
        if n == 1:
            col.skip(150)
            col.text(["Annual report of the harbour library"], font="hebo", size=22)
            col.text([prose.title(4, 8)], font="heit", size=13)
        elif n == pages:
            col.text(["Summary"], font="hebo", size=14)
            col.text(wrap(prose.paragraph(2, 3), 468, "helv", 10.5), size=10.5)
        else:
            col.text([f"{n - 1}. {prose.title(3, 6)}"], font="hebo", size=14)
            col.skip(4)
            if n % 2 == 0:
                picture = (pymupdf.Rect(96, col.y + 6, 516, col.y + 6 + 262),
                           _raster(rng, 480, 300, "chart" if n % 4 == 0 else "photo"))
                col.skip(275)
                col.text(wrap(f"Figure {n // 2}: {prose.sentence(6, 12)}", 468, "heit", 9),
                         font="heit", size=9)
            while col.room(14.2) > 3:
                col.text(wrap(prose.paragraph(), 468, "helv", 10.5), size=10.5)
                col.skip(5)
        out.insert_text((540, 760), str(n), fontname="helv", fontsize=9)
        out.commit(doc, page, fonts)
        if picture is not None:
            page.insert_image(picture[0], stream=picture[1])
    _save(doc, path)
    return path


def write_report_short(path: Path) -> Path:
    """Three dense pages on a 523 x 827 pt page, small type, ruled header and footer."""
    import pymupdf

    prose = Prose(5)
    doc = pymupdf.open()
    fonts = base14_fonts(doc)
    for n in range(1, 4):
        page = doc.new_page(width=523, height=827)
        out = PageText(827)
        out.insert_text((40, 40), f"Technical note 17 - {prose.title(3, 5)}", fontname="hebo",
                        fontsize=10)
        col = Column(out, 40, 52, 443, 785)
        while col.room(10) > 1:
            if prose.rng.random() < 0.2:
                col.text([prose.title(2, 5)], font="hebo", size=8.5, leading=11)
            col.text(wrap(prose.paragraph(), 443, "helv", 7.5), size=7.5, leading=9.6)
            col.skip(3)
        out.insert_text((250, 805), f"{n} / 3", fontname="helv", fontsize=8)
        out.commit(doc, page, fonts)
        shape = page.new_shape()
        shape.draw_line((40, 48), (483, 48))
        shape.draw_line((40, 790), (483, 790))
        shape.finish(color=(0, 0, 0), width=0.5)
        shape.commit()
    _save(doc, path, object_streams=True)
    return path


def _slides_page_1(doc: Any, page: Any) -> None:
    """A results table whose every cell is tagged content (an MCID), and a structure tree that
    MuPDF repairs when a cell's parent chain does not reach the root: the repair walks the tree
    along every path, and a chain of elements that each list their child twice has
    2**SLIDES_STALL_DEPTH paths."""
    import pymupdf

    rng = random.Random(6)
    page.insert_font(fontname="helv")
    page.insert_font(fontname="hebo")
    ops = ["0.5 w 0 G"]
    x0, widths, top, row_h = 72.0, [150.0, 150.0, 150.0, 150.0], 470.0, 11.5
    header = ["Term", "Correlation", "p-value", "q-value"]
    rows = [header] + [[f"TERM{rng.randint(1, 99)}{rng.choice('ABCDEFGHKLMNPR')}",
                        f"{0.5 - i * 0.008:.3f}", f"{rng.uniform(1, 9):.2f}E-{12 - i // 4:02d}",
                        f"{rng.uniform(1, 9):.2f}E-{9 - i // 5:02d}"] for i in range(36)]
    total = sum(widths)
    for r in range(len(rows) + 1):
        y = top - r * row_h + 3
        ops.append(f"{x0} {y:.2f} m {x0 + total} {y:.2f} l S")
    mcid = 0
    cells: list[tuple[int, int]] = []  # (row, mcid)
    for r, row in enumerate(rows):
        x = x0
        for cell in row:
            font = "hebo" if r == 0 else "helv"
            ops.append(f"/TD <</MCID {mcid}>> BDC BT /{font} 9 Tf {x + 4:.2f} "
                       f"{top - (r + 1) * row_h + 5:.2f} Td ({cell}) Tj ET EMC")
            cells.append((r, mcid))
            mcid += 1
            x += widths[0]
    ops.append(f"/P <</MCID {mcid}>> BDC BT /hebo 16 Tf 72 520 Td "
               "(Supplementary table 1. Terms correlated with the outcome) Tj ET EMC")
    caption_mcid = mcid
    contents = doc.get_new_xref()
    doc.update_object(contents, "<<>>")
    doc.update_stream(contents, "\n".join(ops).encode("latin-1"))
    doc.xref_set_key(page.xref, "Contents", f"{contents} 0 R")
    doc.xref_set_key(page.xref, "StructParents", "0")

    new = doc.get_new_xref
    root, slide1, slide2, table, caption, tree, nums, lost = (new() for _ in range(8))
    row_elems = [new() for _ in rows]
    cell_elems = []
    kids_of_row: dict[int, list[int]] = {}
    for r, m in cells:
        elem = new()
        cell_elems.append(elem)
        kids_of_row.setdefault(r, []).append(elem)
        doc.update_object(elem, f"<< /Type /StructElem /S /TD /P {row_elems[r]} 0 R "
                                f"/Pg {page.xref} 0 R /K {m} >>")
    for r, elem in enumerate(row_elems):
        parent = lost if r == len(rows) - 1 else table  # the last row hangs off a lost parent
        kids = " ".join(f"{k} 0 R" for k in kids_of_row[r])
        doc.update_object(elem, f"<< /Type /StructElem /S /TR /P {parent} 0 R /K [{kids}] >>")
    doc.update_object(lost, f"<< /Type /StructElem /S /Div /K [{row_elems[-1]} 0 R] >>")
    rows_k = " ".join(f"{e} 0 R" for e in row_elems[:-1])
    doc.update_object(table, f"<< /Type /StructElem /S /Table /P {slide1} 0 R /K [{rows_k}] >>")
    doc.update_object(caption, f"<< /Type /StructElem /S /P /P {slide1} 0 R "
                               f"/Pg {page.xref} 0 R /K {caption_mcid} >>")
    doc.update_object(slide1, f"<< /Type /StructElem /S /Slide /P {root} 0 R "
                              f"/K [{caption} 0 R {table} 0 R] >>")
    chain = [new() for _ in range(SLIDES_STALL_DEPTH)]
    for k, elem in enumerate(chain):
        parent = slide2 if k == 0 else chain[k - 1]
        kids = f"[{chain[k + 1]} 0 R {chain[k + 1]} 0 R]" if k + 1 < len(chain) else "[]"
        doc.update_object(elem, f"<< /Type /StructElem /S /Div /P {parent} 0 R /K {kids} >>")
    doc.update_object(slide2, f"<< /Type /StructElem /S /Slide /P {root} 0 R "
                              f"/K [{chain[0]} 0 R] >>")
    doc.update_object(nums, "[" + " ".join(f"{e} 0 R" for e in cell_elems + [caption]) + "]")
    doc.update_object(tree, f"<< /Nums [0 {nums} 0 R] >>")
    doc.update_object(root, f"<< /Type /StructTreeRoot /K [{slide1} 0 R {slide2} 0 R] "
                            f"/ParentTree {tree} 0 R /ParentTreeNextKey 1 >>")
    catalog = doc.pdf_catalog()
    doc.xref_set_key(catalog, "StructTreeRoot", f"{root} 0 R")
    doc.xref_set_key(catalog, "MarkInfo", "<< /Marked true >>")


def write_slides(path: Path) -> Path:
    """15 landscape slides: a title and a few bullets, 2-3 pictures each; page 1 a tagged table
    that stalls MuPDF's display list (see :func:`_slides_page_1`)."""
    import pymupdf

    prose = Prose(6)
    rng = np.random.default_rng(6)
    doc = pymupdf.open()
    for _ in range(SLIDES_PAGES):
        doc.new_page(width=792, height=612)
    _slides_page_1(doc, doc[0])
    for n in range(2, SLIDES_PAGES + 1):
        page = doc[n - 1]
        shape = page.new_shape()
        shape.insert_text((48, 70), prose.title(2, 5), fontname="hebo", fontsize=26)
        y = 110.0
        for _ in range(int(rng.integers(1, 4))):
            shape.insert_text((60, y), "- " + prose.title(3, 8), fontname="helv", fontsize=15)
            y += 24
        shape.commit()
        pictures = int(rng.integers(2, 4))
        width = (696 - (pictures - 1) * 24) / pictures
        for k in range(pictures):
            rect = pymupdf.Rect(48 + k * (width + 24), y + 20, 48 + k * (width + 24) + width,
                                y + 20 + width * 0.66)
            page.insert_image(rect, stream=_raster(rng, 360, 240, "chart" if k % 2 else "photo"))
    _save(doc, path)
    return path


def slides_page_1_stalls_a_display_list(path: Path, seconds: float = 1.0) -> bool:
    """Whether recording page 1 of ``path`` into a display list (PyMuPDF's ``get_pixmap`` path)
    takes longer than ``seconds``: timed in a child process, from when it has imported PyMuPDF
    and opened the file, and killed then."""
    import subprocess

    code = ("import sys, pymupdf\n"
            "page = pymupdf.open(sys.argv[1])[0]\n"
            "print('ready', flush=True)\n"
            "page.get_displaylist()\n")
    with subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as child:
        try:
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the child could not open {path}")
            child.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return True
        finally:
            child.kill()
    return False


def write_scanned(path: Path, images: list[Path]) -> Path:
    """Pages that are only pictures of pages (no text layer)."""
    import pymupdf

    doc = pymupdf.open()
    for image in images:
        page = doc.new_page(width=595.3, height=841.9)
        page.insert_image(page.rect, filename=str(image))
    _save(doc, path)
    return path


def write_encrypted(path: Path) -> Path:
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "The combination of the lighthouse safe is 0451.")
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw=ENCRYPTED_PASSWORD,
             owner_pw=ENCRYPTED_PASSWORD + "-owner")
    doc.close()
    return path


# --------------------------------------------------------------------------- images


def write_rotated_exif(path: Path) -> Path:
    """Stored 320x240 with EXIF orientation 6: shown 240x320, red top half, blue bottom half."""
    from PIL import Image

    shown = np.zeros((320, 240, 3), np.uint8)
    shown[:160] = (230, 30, 30)
    shown[160:] = (30, 30, 230)
    shown[:, :, 1] = np.linspace(0, 120, 240, dtype=np.uint8)[None, :]
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # undone by orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif, quality=92)
    return path


def write_transparent_png(path: Path) -> Path:
    """256x192 RGBA: transparent, with an opaque green disc and a half-transparent bar."""
    from PIL import Image

    yy, xx = np.mgrid[0:192, 0:256]
    rgba = np.zeros((192, 256, 4), np.uint8)
    disc = (xx - 90) ** 2 + (yy - 96) ** 2 < 60 ** 2
    rgba[disc] = (20, 160, 60, 255)
    rgba[150:170, 140:240] = (200, 40, 40, 128)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


# --------------------------------------------------------------------------- text


HTML_ARTICLE = [
    "Spektrum der Wissenschaft hat die Studienlage zur Homöopathie neu gesichtet.",
    "Über 170 kontrollierte Studien wurden für diesen Überblick gelesen; die Wirkung der "
    "Kügelchen war in keiner großen Untersuchung stärker als die eines Placebos.",
    "Warum glauben dennoch so viele Menschen an die Methode? Psychologinnen nennen die "
    "Zuwendung im langen Erstgespräch, die Erwartung und den natürlichen Verlauf vieler "
    "Beschwerden – Gründe, die man ernst nehmen sollte.",
    "Die Kosten trägt oft die Krankenkasse: rund 20 Millionen € im Jahr, schätzen Fachleute.",
]
HTML_FURNITURE = ["Startseite", "Abo bestellen", "Impressum und Datenschutz",
                  "Newsletter abonnieren"]


def html_page() -> str:
    nav = "".join(f'<li><a href="/{i}">{t}</a></li>' for i, t in enumerate(HTML_FURNITURE[:2]))
    body = "".join(f"<p>{p}</p>\r\n" for p in HTML_ARTICLE)
    return (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.0 Transitional//EN">\r\n<HTML>\r\n<HEAD>\r\n'
        '  <META content="text/html; charset=windows-1252" http-equiv=Content-Type>\r\n'
        f"  <TITLE>{HTML_TITLE}</TITLE>\r\n"
        "  <STYLE type=text/css>.ie9fixq_opt1 { padding-top: 4px; border: 0 }</STYLE>\r\n"
        "  <SCRIPT>var tracker = 'never shown'; document.write(tracker);</SCRIPT>\r\n"
        "</HEAD>\r\n<BODY>\r\n"
        f"<nav><ul>{nav}</ul></nav>\r\n"
        '<div class="ie9fixq_opt1"><main><article>\r\n'
        f"<h1>Homöopathie auf dem Prüfstand</h1>\r\n{body}"
        "</article></main></div>\r\n"
        f"<footer>{HTML_FURNITURE[2]} · {HTML_FURNITURE[3]}</footer>\r\n"
        "</BODY>\r\n</HTML>\r\n"
    )


def html_expected() -> dict:
    return {
        "encoding": "UTF-16LE with BOM; the page's meta says windows-1252",
        "title": HTML_TITLE,
        "contains": ["Homöopathie auf dem Prüfstand", *HTML_ARTICLE],
        "absent": [".ie9fixq_opt1", "padding-top", "tracker", "never shown",
                   *HTML_FURNITURE],
    }


# --------------------------------------------------------------------------- videos


def second_colour(second: int) -> tuple[int, int, int]:
    """The colour below the counter strip during ``second`` (0-based) of a generated video."""
    return PALETTE[second % len(PALETTE)]


def frame_pixels(index: int, fps: float, width: int, height: int) -> np.ndarray:
    """Frame ``index``: its number in binary along the top, its second's colour below."""
    a = np.empty((height, width, 3), np.uint8)
    a[:] = second_colour(int(index // fps))
    bw, bh = width // FRAME_BITS, max(8, height // 10)
    a[:bh] = 0
    for b in range(FRAME_BITS):
        if index >> (FRAME_BITS - 1 - b) & 1:
            a[:bh, b * bw + bw // 8:(b + 1) * bw - bw // 8] = 255
    return a


def frame_number(frame: Any) -> int:
    """The frame number drawn in a decoded frame (PIL image or HxWx3 array, any scale)."""
    a = np.asarray(frame, dtype=np.float32)
    height, width = a.shape[:2]
    bw, bh = width / FRAME_BITS, max(8 * height / 120, height / 10)
    row = int(bh / 2)
    n = 0
    for b in range(FRAME_BITS):
        n = n * 2 + int(a[row, int((b + 0.5) * bw)].mean() > 128)
    return n


def frame_colour(frame: Any) -> tuple[int, int, int]:
    """The mean colour below the counter strip."""
    a = np.asarray(frame, dtype=np.float32)
    height = a.shape[0]
    return tuple(int(round(v)) for v in a[height // 4:].reshape(-1, 3).mean(axis=0))


def write_video(path: Path, spec: VideoSpec) -> Path:
    import av

    options = {"fflags": "+bitexact", **spec.container_options}  # same bytes every build
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(spec.codec, rate=spec.fps, options=dict(spec.options))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        audio = None
        if spec.audio:
            audio = container.add_stream(spec.audio, rate=8000, options=dict(spec.audio_options))
            audio.layout = "mono"
        for i in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(
                frame_pixels(i, spec.fps, spec.width, spec.height), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, spec.fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            rate = audio.rate
            total = int(spec.duration * rate)
            size = audio.codec_context.frame_size or 1024
            t = np.arange(total, dtype=np.float32) / rate
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, total, size):
                chunk = np.ascontiguousarray(tone[None, start:start + size])
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate = rate
                frame.pts = start
                frame.time_base = Fraction(1, rate)
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return path


# --------------------------------------------------------------------------- all of it


def build_corpus(dest: Path, *, verbose: bool = False) -> Path:
    """Write the whole corpus into ``dest`` (created; must not exist or be empty); return it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    for sub in ("images", "pdf", "text", "video"):
        (dest / sub).mkdir()
    timings: dict[str, float] = {}

    def step(name: str, fn, *args) -> None:
        start = time.perf_counter()
        fn(*args)
        timings[name] = time.perf_counter() - start

    # Vendored, unchanged.
    for sub in ("images", "text"):
        for src in sorted((DATA / sub).iterdir()):
            shutil.copyfile(src, dest / sub / src.name)
    images, pdf, text, video = (dest / s for s in ("images", "pdf", "text", "video"))
    step("rotated_exif.jpg", write_rotated_exif, images / "rotated_exif.jpg")
    step("transparent.png", write_transparent_png, images / "transparent.png")
    step("book.pdf", write_book, pdf / "book.pdf")
    step("slides.pdf", write_slides, pdf / "slides.pdf")
    step("small-table.pdf", write_small_table, pdf / "small-table.pdf")
    step("chinese-tables.pdf", write_chinese_tables, pdf / "chinese-tables.pdf")
    step("cjk.pdf", write_cjk, pdf / "cjk.pdf")
    step("paper.pdf", write_paper, pdf / "paper.pdf")
    step("form.pdf", write_form, pdf / "form.pdf")
    step("report.pdf", write_report, pdf / "report.pdf")
    step("report-short.pdf", write_report_short, pdf / "report-short.pdf")
    step("scanned.pdf", write_scanned, pdf / "scanned.pdf",
         [images / "docpage_0.jpg", images / "docpage_1.jpg"])
    step("encrypted.pdf", write_encrypted, pdf / "encrypted.pdf")
    step("handbook.txt", lambda p: p.write_text(handbook_text(), encoding="utf-8"),
         text / "handbook.txt")
    step("bom-over-meta.html", lambda p: p.write_bytes(b"\xff\xfe" + html_page().encode(
        "utf-16-le")), text / "bom-over-meta.html")
    (text / "bom-over-meta.expected.json").write_text(
        json.dumps(html_expected(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    for name, spec in VIDEOS.items():
        step(name, write_video, video / name, spec)
    if verbose:
        for name, seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
            print(f"{seconds:7.3f} s  {name}")
        print(f"{sum(timings.values()):7.3f} s  total")
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/corpus_builder.py DEST")
    build_corpus(Path(sys.argv[1]), verbose=True)
