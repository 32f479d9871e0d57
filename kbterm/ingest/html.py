"""HTML pages: the readable main text and the title, without navigation, scripts and styles.

Bytes are decoded with the plain-text rules of :mod:`kbterm.ingest.text`, except that a
``<meta charset>`` declared near the top is honoured when there is no byte-order mark (a BOM
wins: saved pages often keep a stale meta after being re-encoded).  lxml then parses the text,
and a small readability pass keeps what a person would read:

* elements that never hold readable text (script, style, head, form controls, hidden ones)
  and page furniture (nav, aside, footer, banner/navigation roles) are removed;
* ``<main>`` / ``[role=main]`` / the largest ``<article>`` becomes the root when there is one;
* elements whose class or id says boilerplate (menu, sidebar, cookie, share...) are removed,
  but only while what remains still holds most of the text: a page that is all links keeps them.

Lines of extracted text do not map to source lines, so sections carry ``line_start=None``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from kbterm.ingest.base import ParseContext, Section
from kbterm.ingest.text import SAMPLE_BYTES, decode_stream, detect_decoding, sniff_bom, split_blocks

if TYPE_CHECKING:
    from lxml.html import HtmlElement

log = logging.getLogger(__name__)

META_PROBE_BYTES = 4 << 10  # where a <meta charset> is looked for
BOILERPLATE_KEEP_SHARE = 0.30  # class/id boilerplate goes only if this much text remains

_META_CHARSET = re.compile(
    rb"""<meta\b[^>]*?\bcharset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE
)
# HTML's own label rules: a page that could be read as ASCII to find its meta is not UTF-16/32,
# and "latin-1" / "ascii" on the web mean windows-1252.
_META_ALIASES = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252",
                 "latin-1": "cp1252", "l1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252"}

# Never readable text, wherever they are.
_DROP_TAGS = frozenset({
    "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object",
    "embed", "head", "nav", "aside", "footer", "button", "select", "input", "textarea",
    "option", "datalist", "dialog", "map", "audio", "video", "picture", "source", "track",
})
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "complementary"})
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_BOILERPLATE = re.compile(
    r"(?<![a-z])(?:nav(?:bar|igation)?|menu(?:bar)?|breadcrumbs?|side-?bar|footer|cookies?"
    r"|banner|share|sharing|social|advert\w*|ads?|skip-?link)(?![a-z])",
    re.IGNORECASE,
)

# Elements whose content starts and ends a line; the second set also gets a blank line around it.
_LINE_TAGS = frozenset({
    "div", "li", "tr", "dd", "dt", "caption", "figcaption", "address", "center", "details",
    "summary", "legend", "fieldset", "option", "body", "html", "form", "hgroup", "menu",
})
_PARAGRAPH_TAGS = frozenset({
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "ul", "ol", "dl", "section",
    "article", "main", "header", "figure", "hr", "pre",
})
_CELL_TAGS = frozenset({"td", "th"})
_CELL_SEPARATOR = " | "


def declared_charset(head: bytes) -> str | None:
    """The encoding a ``<meta charset>`` or ``http-equiv`` Content-Type names in ``head``."""
    match = _META_CHARSET.search(head[:META_PROBE_BYTES])
    if match is None:
        return None
    label = match.group(1).decode("ascii", "replace").strip().lower()
    if label.startswith(("utf-16", "utf16", "utf-32", "utf32", "ucs-2", "ucs2")):
        return "utf-8"
    return _META_ALIASES.get(label, label)


def read_html(path: Path) -> str:
    """The decoded text of an HTML file (BOM, then meta charset, then the plain-text rules)."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return ""
    declared = None if sniff_bom(data) else declared_charset(data)
    encoding, skip, fallback = detect_decoding(data[:SAMPLE_BYTES], declared)
    return "".join(decode_stream((data,), encoding, skip, fallback))


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _text_length(el: "HtmlElement") -> int:
    return len(_collapse(el.text_content()))


def _is_hidden(el: "HtmlElement") -> bool:
    return (
        el.get("hidden") is not None
        or (el.get("aria-hidden") or "").strip().lower() == "true"
        or bool(_HIDDEN_STYLE.search(el.get("style") or ""))
        or (el.get("role") or "").strip().lower() in _DROP_ROLES
    )


# The walks below keep every element they visit referenced until they end (``seen``): lxml
# frees an element's Python proxy by walking up to the nearest ancestor that has one, so a walk
# that lets go of ancestors costs the depth at every step, minutes on a page nested 20,000 deep.
# The list is freed from its end, descendants first, each next to a live parent.


def _drop_furniture(root: "HtmlElement") -> None:
    """Remove comments and everything that never holds readable text (keeping tails)."""
    doomed = []
    seen = []
    stack: list[tuple["HtmlElement", bool]] = [(root, False)]  # (element, inside an article)
    while stack:
        el, in_article = stack.pop()
        seen.append(el)
        if not isinstance(el.tag, str):  # comment or processing instruction
            doomed.append(el)
            continue
        tag = el.tag.lower()
        # A page-level <header> is the site banner; one inside an article is the article's own.
        page_header = tag == "header" and not in_article
        if tag in _DROP_TAGS or page_header or _is_hidden(el):
            doomed.append(el)  # and nothing inside it needs a look
            continue
        inside = in_article or tag in ("article", "main", "section")
        stack.extend((child, inside) for child in reversed(el))
    for el in doomed:
        if el.getparent() is not None:
            el.drop_tree()


def _choose_root(doc: "HtmlElement") -> "HtmlElement":
    """The ``<main>`` with the most text, else a dominant ``<article>``, else ``<body>``."""
    body = doc.find(".//body")
    if body is None:
        body = doc
    mains = [el for el in doc.iter("main")] + doc.xpath(
        "//*[translate(@role, 'MAIN', 'main')='main']"
    )
    scored = [(_text_length(el), el) for el in mains]
    if scored:
        length, best = max(scored, key=lambda pair: pair[0])
        if length:
            return best
    articles = [(_text_length(el), el) for el in doc.iter("article")]
    if articles:
        length, best = max(articles, key=lambda pair: pair[0])
        # A blog index is many articles; taking the largest would lose the rest.
        if length and length >= 0.5 * _text_length(body):
            return best
    return body


def _drop_boilerplate(root: "HtmlElement") -> None:
    """Remove menu/sidebar/cookie... blocks named by class or id, if most of the text remains."""
    total = _text_length(root)
    if not total:
        return
    doomed: list["HtmlElement"] = []
    removed = 0
    seen = []  # see _drop_furniture
    # Outermost matches only (nothing inside a doomed block is looked at), so no text counts twice.
    stack = list(reversed(root))
    while stack:
        el = stack.pop()
        seen.append(el)
        if not isinstance(el.tag, str):
            continue
        names = f"{el.get('class') or ''} {el.get('id') or ''}"
        if names.strip() and _BOILERPLATE.search(names):
            doomed.append(el)
            removed += _text_length(el)
        else:
            stack.extend(reversed(el))
    if doomed and total - removed >= BOILERPLATE_KEEP_SHARE * total:
        for el in doomed:
            el.drop_tree()


class _Lines:
    """Collects inline text into lines, with at most one blank line between blocks."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._inline: list[str] = []
        self._blank = False  # a blank line is owed before the next text
        self._has_text = False  # the current line holds more than whitespace
        self._separator = ""  # owed before the next text on this line (table cells)

    def add(self, text: str | None) -> None:
        if not text:
            return
        if self._separator and not text.isspace():
            self._inline.append(self._separator)
            self._separator = ""
        self._inline.append(text)
        self._has_text = self._has_text or not text.isspace()

    def separate(self, separator: str) -> None:
        """Put ``separator`` before the next text, if this line has text (empty cells add none)."""
        self._separator = separator if self._has_text else ""

    def _emit(self, line: str) -> None:
        if self._blank and self.lines:
            self.lines.append("")
        self._blank = False
        self.lines.append(line)

    def end_line(self, blank: bool = False) -> None:
        line = _collapse("".join(self._inline))
        self._inline = []
        self._has_text = False
        self._separator = ""
        if line:
            self._emit(line)
        if blank:
            self._blank = True

    def add_pre(self, text: str) -> None:
        self.end_line(blank=True)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        # HTML drops a newline right after <pre>; trailing ones are layout, not text.
        if text.startswith("\n"):
            text = text[1:]
        text = text.rstrip()
        if text.strip():
            self._emit(text)
        self._blank = True


def extract_text(root: "HtmlElement") -> str:
    """The readable text under ``root``: blocks on their own lines, ``<pre>`` kept as is."""
    out = _Lines()
    # Iterative walk: malformed pages nest deeper than Python's recursion limit.
    stack: list[tuple["HtmlElement", bool]] = [(root, True)]
    while stack:
        el, entering = stack.pop()
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if entering:
            if not tag:  # a comment left in: its text is not content, its tail is
                out.add(el.tail)
                continue
            if tag == "pre":
                out.add_pre(el.text_content())
                out.add(el.tail)
                continue
            if tag == "br":
                out.end_line()
                out.add(el.tail)
                continue
            if tag in _PARAGRAPH_TAGS:
                out.end_line(blank=True)
            elif tag in _LINE_TAGS:
                out.end_line()
            elif tag in _CELL_TAGS:
                out.separate(_CELL_SEPARATOR)
            elif tag == "img" and el.get("alt"):
                out.add(f" {el.get('alt')} ")
            out.add(el.text)
            stack.append((el, False))
            stack.extend((child, True) for child in reversed(el))
        else:
            if tag in _PARAGRAPH_TAGS:
                out.end_line(blank=True)
            elif tag in _LINE_TAGS:
                out.end_line()
            if el is not root:
                out.add(el.tail)
    out.end_line()
    return "\n".join(out.lines) + "\n" if out.lines else ""


def _title(doc: "HtmlElement") -> str:
    """``<title>``, else the first non-empty ``<h1>``, else ""."""
    for tag in ("title", "h1"):
        for el in doc.iter(tag):
            title = _collapse(el.text_content())
            if title:
                return title
    return ""


# libxml2 stops building the tree at a nesting depth of 256 (2,048 with huge_tree) and drops
# everything after that point; such pages are parsed again by a builder without a depth limit.
_VOID_TAGS = frozenset({
    "area", "base", "basefont", "br", "col", "embed", "frame", "hr", "img", "input", "isindex",
    "keygen", "link", "meta", "param", "source", "track", "wbr",
})
_SELF_CLOSING = frozenset({"p", "li", "dt", "dd", "tr", "td", "th", "option"})  # <li>a<li>b
_HEAD_TAGS = frozenset({"title", "meta", "link", "style", "script", "base", "noscript",
                        "template"})  # anything else (a <body> that forgot </head>) ends <head>
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*\Z")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _deep_document(markup: str) -> "HtmlElement":
    """The tree of ``markup`` built by Python's own HTML tokenizer (no depth limit, no
    recursion), with the few HTML rules that matter for text: void elements, ``<p>``/``<li>``
    /cells closed by the next one, ``<head>`` closed by the first tag that is not a head tag,
    end tags closing what they match (``</body>`` and ``</html>`` excepted: the root stays
    open, so the tree has one)."""
    from html.parser import HTMLParser

    import lxml.html
    from lxml import etree

    builder = etree.TreeBuilder(parser=lxml.html.HTMLParser())
    stack: list[str] = []  # the open elements
    open_tags: Counter[str] = Counter()  # how many of each are open (no scan of the stack)

    def push(tag: str, attrs: dict[str, str]) -> None:
        builder.start(tag, attrs)
        stack.append(tag)
        open_tags[tag] += 1

    def pop() -> str:
        tag = stack.pop()
        open_tags[tag] -= 1
        builder.end(tag)
        return tag

    def start(tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not stack and tag != "html":
            push("html", {})
        if open_tags["head"] and tag not in _HEAD_TAGS and tag != "head":
            while pop() != "head":
                pass
        if stack and stack[-1] == tag and tag in _SELF_CLOSING:
            pop()
        clean = {name: _NOT_XML.sub("", value or "") for name, value in attrs
                 if _TAG_NAME.match(name)}
        if tag in _VOID_TAGS:
            builder.start(tag, clean)
            builder.end(tag)
        else:
            push(tag, clean)

    class Tokens(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            start(tag if _TAG_NAME.match(tag) else "span", attrs)

        def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.handle_starttag(tag, attrs)
            if tag not in _VOID_TAGS and _TAG_NAME.match(tag):
                self.handle_endtag(tag)

        def handle_endtag(self, tag: str) -> None:
            # </body> and </html> close nothing: what follows them is still the page's text.
            if open_tags[tag] > 0 and tag not in ("html", "body"):
                while pop() != tag:
                    pass

        def handle_data(self, data: str) -> None:
            if not stack:
                start("html", [])
            builder.data(_NOT_XML.sub("", data))

    tokens = Tokens(convert_charrefs=True)
    tokens.feed(markup)
    tokens.close()
    if not stack:  # no tag and no text at all
        start("html", [])
    while stack:
        pop()
    return builder.close()


def _document(markup: str) -> "HtmlElement | None":
    """The parsed page (None when it is empty)."""
    import lxml.html
    from lxml import etree

    # lxml refuses a str that carries an XML encoding declaration; bytes with an explicit
    # encoding sidestep that and any stale <meta charset> inside.  huge_tree: text nodes over
    # 10 MB and nesting past 256 levels are kept (up to libxml2's hard limit of 2,048).
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True,
                                  huge_tree=True)
    try:
        doc = lxml.html.document_fromstring(markup.encode("utf-8", "replace"), parser=parser)
    except (etree.ParserError, ValueError):  # "Document is empty"
        doc = None
    if any("Excessive depth" in entry.message for entry in parser.error_log):
        log.debug("HTML nested deeper than libxml2 builds trees; parsing it again")
        return _deep_document(markup)
    return doc


def html_to_text(markup: str) -> tuple[str, str]:
    """``(title, readable text)`` of an HTML document given as text."""
    doc = _document(markup)
    if doc is None:
        return "", ""
    title = _title(doc)
    _drop_furniture(doc)
    root = _choose_root(doc)
    _drop_boilerplate(root)
    return title, extract_text(root)


def parse_html(path: Path, ctx: ParseContext) -> Iterator[Section]:
    """An HTML page's readable text in blocks of about ``ctx.text_block_chars``, titled."""
    markup = read_html(path)
    if not markup.strip():
        return
    title, text = html_to_text(markup)
    if not text.strip():
        return
    for _line, block in split_blocks((text,), ctx.text_block_chars):
        yield Section(kind="text", text=block, title=title, line_start=None)
