"""Text, Markdown and HTML parsers: decoding any bytes, streaming, sections and their lines."""

from __future__ import annotations

import codecs
import gc
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from kbterm.ingest import text as text_module
from kbterm.ingest.base import ParseContext, ParseError
from kbterm.ingest.html import parse_html
from kbterm.ingest.text import (
    decode_stream,
    detect_encoding,
    open_text,
    parse_markdown,
    parse_text,
)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _text_of(path: Path, block: int = 1 << 20) -> str:
    sections = list(parse_text(path, ParseContext(text_block_chars=block)))
    assert all(s.kind == "text" for s in sections)
    return "".join(s.text for s in sections)


# --- decoding -------------------------------------------------------------------------------

SAMPLE = "Grüße, café naïve — 日本語 🙂\nzweite Zeile\n"


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-32-be", codecs.BOM_UTF32_BE),
    ],
)
def test_unicode_files_with_and_without_bom(tmp_path, encoding, bom):
    path = _write(tmp_path, "a.txt", bom + SAMPLE.encode(encoding))
    found, _pieces = open_text(path)
    assert codecs.lookup(found).name == codecs.lookup(encoding).name
    assert _text_of(path) == SAMPLE  # BOM character stripped, text intact


def test_utf32_le_bom_is_not_taken_for_utf16(tmp_path):
    path = _write(tmp_path, "a.txt", codecs.BOM_UTF32_LE + "ab\n".encode("utf-32-le"))
    assert open_text(path)[0] == "utf-32-le"
    assert _text_of(path) == "ab\n"


def test_cp1252_without_bom(tmp_path):
    path = _write(tmp_path, "a.txt", "café naïve".encode("cp1252"))
    assert _text_of(path) == "café naïve"
    longer = "Une phrase en français, très jolie, déjà vue — 5 €.\n" * 3
    path = _write(tmp_path, "b.txt", longer.encode("cp1252"))
    assert _text_of(path) == longer


def test_legacy_cyrillic_is_detected(tmp_path):
    russian = "Привет, как дела? Всё хорошо, спасибо. Это обычный текст.\n" * 5
    path = _write(tmp_path, "ru.txt", russian.encode("cp1251"))
    assert _text_of(path) == russian


def test_invalid_utf8_in_the_middle_becomes_replacement(tmp_path):
    head = "é" + "a" * 70_000  # past the 64 KiB detection sample
    data = head.encode() + b"\xff\xfe bad \xc3" + " ünd weiter\n".encode()
    path = _write(tmp_path, "a.txt", data)
    assert open_text(path)[0] == "utf-8"
    out = _text_of(path, block=4096)
    assert out == head + "\ufffd\ufffd bad \ufffd ünd weiter\n"


def test_utf8_sample_cut_inside_a_character_is_still_utf8():
    sample = ("x" * 10 + "ü").encode()[:-1]  # ends with half of "ü"
    assert detect_encoding(sample) == ("utf-8", 0)


def test_declared_encoding_only_without_bom():
    assert detect_encoding("é".encode("cp1252"), "iso-8859-15")[0] == "iso8859-15"
    assert detect_encoding(codecs.BOM_UTF8 + b"x", "cp1252") == ("utf-8", 3)
    assert detect_encoding(b"plain", "base64")[0] == "utf-8"  # not a text codec: ignored
    assert detect_encoding(b"plain", "no-such-codec")[0] == "utf-8"


def test_png_named_txt_is_binary(tmp_path):
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2000)
    path = _write(tmp_path, "picture.txt", png)
    with pytest.raises(ParseError, match="binary"):
        list(parse_text(path, ParseContext()))


def test_control_bytes_without_nul_are_binary(tmp_path):
    data = bytes(b % 31 + 1 for b in range(4000))  # no NUL, mostly C0 controls
    path = _write(tmp_path, "blob.txt", data)
    with pytest.raises(ParseError, match="binary"):
        list(parse_text(path, ParseContext()))


def test_zero_byte_and_whitespace_files_yield_nothing(tmp_path):
    assert list(parse_text(_write(tmp_path, "empty.txt", b""), ParseContext())) == []
    assert list(parse_markdown(_write(tmp_path, "empty.md", b""), ParseContext())) == []
    assert list(parse_html(_write(tmp_path, "empty.html", b""), ParseContext())) == []
    spaces = _write(tmp_path, "blank.txt", b" \n\t\n\r\n   \n" * 50)
    assert list(parse_text(spaces, ParseContext(text_block_chars=16))) == []


def test_leading_whitespace_block_is_kept_when_text_follows(tmp_path):
    content = "\n" * 40 + "text\n"
    path = _write(tmp_path, "a.txt", content.encode())
    sections = list(parse_text(path, ParseContext(text_block_chars=8)))
    assert "".join(s.text for s in sections) == content
    assert sections[-1].text.endswith("text\n") and sections[-1].line_start == 41


def test_crlf_and_lone_cr_become_lf(tmp_path):
    path = _write(tmp_path, "a.txt", b"one\r\ntwo\rthree\r\n\r\nfour\r")
    assert _text_of(path) == "one\ntwo\nthree\n\nfour\n"


def test_crlf_split_across_chunks_is_one_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "CHUNK_BYTES", 4)
    # "abc\r" | "\ndef" | "\r\r\n" ...: the pair straddles the chunk boundary.
    path = _write(tmp_path, "a.txt", b"abc\r\ndef\r\r\nghi\r")
    assert "".join(text_module.open_text(path)[1]) == "abc\ndef\n\nghi\n"
    assert list(decode_stream([b"x\r", b"\ny"], "utf-8")) == ["x", "\ny"]
    # UTF-16: the CR and the LF are two bytes each, split mid-character too.
    data = codecs.BOM_UTF16_LE + "a\r\nb".encode("utf-16-le")
    pieces = [data[i : i + 3] for i in range(0, len(data), 3)]
    assert "".join(decode_stream(pieces, "utf-16-le", skip=2)) == "a\nb"


# --- blocks and lines -----------------------------------------------------------------------


def test_blocks_cut_at_line_ends_with_exact_line_starts(tmp_path):
    content = "".join(f"line {i:02d}\n" for i in range(1, 21))  # 8 chars a line
    path = _write(tmp_path, "a.txt", content.encode())
    sections = list(parse_text(path, ParseContext(text_block_chars=20)))
    assert "".join(s.text for s in sections) == content
    # 20 characters hold two whole lines of 8: every block is two lines.
    assert [s.line_start for s in sections] == list(range(1, 21, 2))
    assert all(s.text.endswith("\n") and s.text.count("\n") == 2 for s in sections)
    for s in sections:
        assert s.text.startswith(f"line {s.line_start:02d}\n")


def test_long_line_is_cut_mid_line_and_next_block_starts_on_same_line(tmp_path):
    content = "short\n" + "x" * 25 + "\nend\n"
    path = _write(tmp_path, "a.txt", content.encode())
    sections = list(parse_text(path, ParseContext(text_block_chars=10)))
    assert "".join(s.text for s in sections) == content
    assert [(s.line_start, s.text) for s in sections] == [
        (1, "short\n"),
        (2, "x" * 10),
        (2, "x" * 10),
        (2, "x" * 5 + "\nend\n"),  # what is left at the end is one last short block
    ]


def test_line_start_counts_decoded_newlines(corpus):
    path = corpus / "text" / "handbook.txt"
    whole = path.read_bytes().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    sections = list(parse_text(path, ParseContext(text_block_chars=1000)))
    assert "".join(s.text for s in sections) == whole
    lines = whole.split("\n")
    for s in sections:
        first = s.text.split("\n", 1)[0]
        assert lines[s.line_start - 1].startswith(first) or first in lines[s.line_start - 1]


def test_srt_from_corpus(corpus):
    path = corpus / "text" / "subtitles-unicode.srt"
    sections = list(parse_text(path, ParseContext()))
    assert len(sections) == 1 and sections[0].line_start == 1
    assert "\r" not in sections[0].text and sections[0].text.strip()


def test_streaming_keeps_memory_bounded(tmp_path):
    path = tmp_path / "big.txt"
    line = ("lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2).encode() + b"\n"
    with open(path, "wb") as f:
        chunk = line * 10_000
        while f.tell() < 40 << 20:
            f.write(chunk)
    size = path.stat().st_size
    gc.collect()
    tracemalloc.start()
    try:
        count = chars = 0
        lines_seen = 0
        for section in parse_text(path, ParseContext()):  # default 1 Mi-character blocks
            count += 1
            chars += len(section.text)
            lines_seen = section.line_start + section.text.count("\n")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert chars == size and count >= 40
    assert lines_seen == size // len(line) + 1
    assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB file"


# --- Markdown -------------------------------------------------------------------------------

MARKDOWN = """Intro text.

# Install

Use pip.

## From source

```bash
# not a heading
git clone x
```

~~~
## also code
~~~

### Notes ###
Deep.
# Usage
Run it.
#hashtag is not a heading
"""


def test_markdown_sections_titles_and_lines(tmp_path):
    path = _write(tmp_path, "doc.md", MARKDOWN.encode())
    sections = list(parse_markdown(path, ParseContext()))
    assert "".join(s.text for s in sections) == MARKDOWN
    assert [(s.title, s.line_start) for s in sections] == [
        ("", 1),
        ("Install", 3),
        ("Install > From source", 7),
        ("Install > From source > Notes", 18),
        ("Usage", 20),
    ]
    lines = MARKDOWN.split("\n")
    for s in sections[1:]:
        assert s.text.split("\n", 1)[0] == lines[s.line_start - 1]
        assert s.text.startswith("#")
    assert "# not a heading" in sections[2].text and "## also code" in sections[2].text
    assert "#hashtag" in sections[4].text


def test_markdown_crlf_blank_preamble_and_long_sections(tmp_path):
    content = "\r\n\r\n# A\r\n" + "".join(f"row {i}\r\n" for i in range(10)) + "## B\r\nend\r\n"
    path = _write(tmp_path, "doc.md", content.encode())
    normalised = content.replace("\r\n", "\n")
    sections = list(parse_markdown(path, ParseContext(text_block_chars=16)))
    assert "".join(s.text for s in sections) == normalised
    assert sections[0].line_start == 1 and sections[0].text.startswith("\n\n# A\n")
    assert {s.title for s in sections} == {"A", "A > B"}
    assert all(len(s.text) <= 16 for s in sections)
    lines = normalised.split("\n")
    for s in sections:
        if s.text.strip():
            first = s.text.lstrip("\n").split("\n", 1)[0]
            skip = len(s.text) - len(s.text.lstrip("\n"))
            assert lines[s.line_start - 1 + skip] == first
    b = next(s for s in sections if s.title == "A > B")
    assert b.text.startswith("## B") and lines[b.line_start - 1] == "## B"


def test_markdown_from_corpus(corpus):
    path = corpus / "text" / "qwen3-vl-embedding-readme.md"
    whole = path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n")
    sections = list(parse_markdown(path, ParseContext()))
    assert "".join(s.text for s in sections) == whole
    assert len(sections) > 3
    lines = whole.split("\n")
    for s in sections:
        if s.title:
            assert lines[s.line_start - 1].lstrip().startswith("#")


def test_large_markdown_falls_back_to_text_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "MARKDOWN_MAX_BYTES", 10)
    path = _write(tmp_path, "doc.md", b"# Title\nbody\n")
    sections = list(parse_markdown(path, ParseContext()))
    assert [(s.title, s.text, s.line_start) for s in sections] == [("", "# Title\nbody\n", 1)]


# --- HTML -----------------------------------------------------------------------------------


def test_html_bom_wins_over_meta_charset(corpus):
    path = corpus / "text" / "bom-over-meta.html"
    raw = path.read_bytes()  # UTF-16LE with a BOM, and a stale meta charset
    assert raw.startswith(codecs.BOM_UTF16_LE)
    assert "charset=windows-1252" in raw[2:].decode("utf-16-le")
    expected = json.loads((corpus / "text" / "bom-over-meta.expected.json").read_text("utf-8"))
    sections = list(parse_html(path, ParseContext()))
    text = "".join(s.text for s in sections)
    assert "Spektrum der Wissenschaft" in text
    assert "Homöopathie" in text
    assert "\x00" not in text and "\ufffd" not in text
    assert ".ie9fixq_opt1" not in text and "padding-top" not in text
    assert all(s.line_start is None for s in sections)
    assert {s.title for s in sections} == {expected["title"]}
    assert [p for p in expected["contains"] if p not in text] == []
    assert [p for p in expected["absent"] if p in text] == []


def test_html_meta_charset_without_bom(tmp_path):
    page = (
        '<html><head><meta charset="windows-1252"><title>Café</title></head>'
        "<body><p>naïve ½</p></body></html>"
    )
    path = _write(tmp_path, "a.html", page.encode("cp1252"))
    [section] = parse_html(path, ParseContext())
    assert section.title == "Café"
    assert section.text.strip() == "naïve ½"
    legacy = (
        '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
        "<p>Grüße €</p>"
    )
    path = _write(tmp_path, "b.html", legacy.encode("cp1252"))
    assert [s.text.strip() for s in parse_html(path, ParseContext())] == ["Grüße €"]


ARTICLE = """<!doctype html>
<html><head><title>How tides work</title>
<style>body { color: red } .menu { display: block }</style>
<script>var tracking = "SECRET_SCRIPT";</script></head>
<body>
<header><a href="/">SiteLogo</a> <nav><a href="/a">Home</a> <a href="/b">Archive</a></nav></header>
<div class="cookie-banner">We use cookies COOKIE_TEXT</div>
<main>
  <article>
    <h1>How   tides
       work</h1>
    <p>The Moon's gravity pulls the oceans.  Twice a day
       the water rises.</p>
    <p>A <b>spring</b> tide happens at <em>new</em> moon.<br>Neap tides are weaker.</p>
    <ul><li>High water</li><li>Low water</li></ul>
    <div class="share-buttons"><a>Share on SHARE_TEXT</a></div>
    <p hidden>HIDDEN_TEXT</p><p style="display: none">NONE_TEXT</p>
    <span aria-hidden="true">ARIA_TEXT</span>
    <table><tr><th>Place</th><th>Range</th></tr><tr><td>Bay of Fundy</td><td>16 m</td></tr></table>
    <!-- COMMENT_TEXT -->
    <form><label>Email</label><input value="INPUT_TEXT"><button>BUTTON_TEXT</button></form>
  </article>
  <aside>ASIDE_TEXT related links</aside>
</main>
<div role="contentinfo">ROLE_TEXT</div>
<footer>FOOTER_TEXT Copyright</footer>
<noscript>NOSCRIPT_TEXT</noscript>
</body></html>
"""


def test_html_article_keeps_main_text_and_drops_furniture(tmp_path):
    path = _write(tmp_path, "page.html", ARTICLE.encode())
    sections = list(parse_html(path, ParseContext()))
    assert sections and all(s.title == "How tides work" for s in sections)
    text = "".join(s.text for s in sections)
    assert "How tides work" in text
    assert "The Moon's gravity pulls the oceans. Twice a day the water rises." in text
    assert "A spring tide happens at new moon.\nNeap tides are weaker." in text
    assert "High water\nLow water" in text
    assert "Place | Range\nBay of Fundy | 16 m" in text
    for gone in ("SECRET_SCRIPT", "color: red", "SiteLogo", "Home", "Archive", "COOKIE_TEXT",
                 "SHARE_TEXT", "HIDDEN_TEXT", "NONE_TEXT", "ARIA_TEXT", "COMMENT_TEXT",
                 "INPUT_TEXT", "BUTTON_TEXT", "ASIDE_TEXT", "ROLE_TEXT", "FOOTER_TEXT",
                 "NOSCRIPT_TEXT"):
        assert gone not in text, gone
    assert "\n\n\n" not in text
    assert all(line == line.strip() for line in text.split("\n"))


def test_html_title_falls_back_to_h1(tmp_path):
    page = b"<body><h1>First <i>heading</i></h1><p>Body text.</p></body>"
    path = _write(tmp_path, "a.html", page)
    [section] = parse_html(path, ParseContext())
    assert section.title == "First heading"
    assert section.text == "First heading\n\nBody text.\n"
    path = _write(tmp_path, "b.html", b"<p>No title here.</p>")
    assert [s.title for s in parse_html(path, ParseContext())] == [""]


def test_html_all_links_page_keeps_its_links(tmp_path):
    links = "".join(
        f'<li class="menu-item"><a href="/{i}">Link number {i}</a></li>' for i in range(30)
    )
    page = (
        "<html><head><title>Links</title></head>"
        f'<body><ul class="nav-menu">{links}</ul></body></html>'
    )
    path = _write(tmp_path, "links.html", page.encode())
    text = "".join(s.text for s in parse_html(path, ParseContext()))
    assert all(f"Link number {i}" in text for i in range(30))
    assert text.count("\n") >= 30


def test_html_boilerplate_class_removed_when_content_remains(tmp_path):
    body = "<p>" + "Real content sentence. " * 30 + "</p>"
    page = (
        f'<body><div id="sidebar">SIDEBAR_TEXT</div>{body}'
        '<div class="breadcrumb">CRUMB_TEXT</div></body>'
    )
    path = _write(tmp_path, "a.html", page.encode())
    text = "".join(s.text for s in parse_html(path, ParseContext()))
    assert "Real content sentence." in text
    assert "SIDEBAR_TEXT" not in text and "CRUMB_TEXT" not in text


def test_html_pre_keeps_whitespace(tmp_path):
    page = (
        "<body><p>Code:</p><pre>\ndef f(x):\n    return  x\n\n\tdone</pre>"
        "<p>after   it</p></body>"
    )
    path = _write(tmp_path, "a.html", page.encode())
    text = "".join(s.text for s in parse_html(path, ParseContext()))
    assert text == "Code:\n\ndef f(x):\n    return  x\n\n\tdone\n\nafter it\n"


def test_html_without_text_and_blocks(tmp_path):
    empty = b"<html><head><title>T</title><script>x=1</script></head><body> </body></html>"
    path = _write(tmp_path, "a.html", empty)
    assert list(parse_html(path, ParseContext())) == []
    paras = "".join(f"<p>Paragraph {i} text.</p>" for i in range(50))
    path = _write(tmp_path, "b.html", f"<title>Many</title>{paras}".encode())
    sections = list(parse_html(path, ParseContext(text_block_chars=100)))
    assert len(sections) > 5 and all(s.title == "Many" and s.line_start is None for s in sections)
    joined = "".join(s.text for s in sections)
    assert all(f"Paragraph {i} text." in joined for i in range(50))


def test_html_binary_is_rejected(tmp_path):
    path = _write(tmp_path, "x.html", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(ParseError, match="binary"):
        list(parse_html(path, ParseContext()))


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import kbterm.ingest.text, kbterm.ingest.html, sys; "
        "assert 'torch' not in sys.modules and 'textual' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
