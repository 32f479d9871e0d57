"""Plain text and Markdown: decoding any bytes to text, streamed, and cutting it into sections.

Decoding is shared with the HTML parser (:func:`detect_encoding`, :func:`open_text`).  The rules,
in order:

1. A byte-order mark decides (UTF-32 is checked before UTF-16: ``FF FE 00 00`` starts with
   ``FF FE``).
2. Without one, a NUL byte near the start means a binary file (:class:`ParseError`).
3. If the first 64 KiB are valid UTF-8 the file is read as UTF-8, and so is a sample whose
   UTF-8 lines beside lines in a legacy code page make a real mix (see below).
4. Otherwise ``charset_normalizer`` guesses from the same sample (a guess that cannot be made on
   a sample full of control characters means binary), falling back to cp1252.

UTF-8 without a BOM (detected, or declared by an HTML page) is decoded line by line, since files
get appended to by programs that disagree (a log, notes pasted from an old editor): a line that
is not valid UTF-8 is read in the code page of such lines in the sample (cp1252 when the sample
has none), unless it is UTF-8 with a few bad bytes (:class:`_LineDecoder` says when), which
become U+FFFD.  A file with a BOM means what it says.

Text always comes out with Unix newlines and without a BOM character, so a section's line number
is its count of ``"\\n"`` plus one.  Files are read in binary chunks through an incremental
decoder: a 200 MB log never sits in memory whole.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

from kbterm.ingest.base import ParseContext, ParseError, Section

CHUNK_BYTES = 1 << 20  # read size; bounds memory together with ParseContext.text_block_chars
SAMPLE_BYTES = 64 << 10  # what encoding detection looks at
BINARY_PROBE_BYTES = 8 << 10  # a NUL here (and no BOM) means the file is not text
CONTROL_RATIO_BINARY = 0.10  # share of control characters above which a sample is not text
MARKDOWN_MAX_BYTES = 16 << 20  # larger Markdown files are read as plain text (streamed)
# Mixed files are decoded line by line; a longer line is decided a piece of this size at a time.
MIXED_PIECE_BYTES = 64 << 10
# A sample that is not valid UTF-8 is still read as UTF-8 (with its other lines in a legacy code
# page) when its valid UTF-8 lines are real evidence.  Short lines in CJK or Cyrillic code pages
# are valid UTF-8 by chance (measured on random runs of characters: 1 in 8 one-character GBK
# lines, 1 in 300 five-character EUC-JP lines, none of 10 characters), so outside Western code
# pages (where chance matches do not occur) that takes a UTF-8 line of this many multi-byte
# characters.
MIXED_STRONG_LINE_CHARS = 8

# UTF-32 first: its little-endian BOM begins with the UTF-16 one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# When a short sample fits several single-byte code pages equally well, charset_normalizer picks
# one almost at random (cp1006 for "café"); Western European text is by far the likeliest.
_PREFERRED_ON_TIE = ("cp1252", "latin_1", "iso8859_15", "cp1250", "iso8859_2")
FALLBACK_ENCODING = "cp1252"
_WESTERN_LETTERS = frozenset("àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœšžÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŒŠŽªº")
_WESTERN_MARKS = frozenset("€–—‘’‚“”„…•·«»‹›°©®™§¶£¥¢½¼¾¹²³¡¿±×µ†‡‰\xa0\xad")

# C0 controls that do not occur in text (tab, newlines, form feed and escape do).
_CONTROL_CHARS = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n\r\f\v\x1b") | {"\x7f"}


def sniff_bom(head: bytes) -> tuple[str, int] | None:
    """The codec named by a byte-order mark at the start of ``head`` and the mark's length."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return None


def _control_ratio(text: str) -> float:
    if not text:
        return 0.0
    return sum(1 for ch in text if ch in _CONTROL_CHARS) / len(text)


def _looks_western(text: str) -> bool:
    """Whether ``text`` (bytes read as cp1252) reads as Western European text.

    Another code page read as cp1252 shows itself: Cyrillic and Greek become runs of accented
    capitals and letters such as "ð" and "÷" in every word, Polish puts "¿", "³", "¹" inside
    words.  Western text is mostly ASCII letters with a few accents and typographic marks.
    """
    letters = non_ascii_letters = 0
    previous = ""
    for index, ch in enumerate(text):
        if ch.isalpha():
            letters += 1
            if ord(ch) >= 128:
                if ch not in _WESTERN_LETTERS:
                    return False
                non_ascii_letters += 1
        elif ord(ch) >= 128 and not ch.isspace():
            if ch not in _WESTERN_MARKS:
                return False
            following = text[index + 1 : index + 2]
            if previous.isalpha() and following.isalpha() and ch not in "’‘·":
                return False
        previous = ch
    return letters > 0 and non_ascii_letters <= 0.3 * letters


def _guess_legacy_encoding(sample: bytes) -> str | None:
    """The best guess for a sample that is not UTF-8, or None when nothing fits as text."""
    from charset_normalizer import from_bytes

    matches = from_bytes(sample)
    best = matches.best()
    if best is None:
        return None
    candidates = {m.encoding for m in matches}
    # charset_normalizer ranks code pages by how "chaotic" the decoded sample looks; on short
    # or punctuation-rich Western text that ranking is close to random (cp1006 for "café",
    # cp1257 for French with an em dash).  cp1252 is the likeliest legacy encoding of all, so
    # it wins whenever it is a candidate and its reading looks like Western text.
    if "cp1252" in candidates:
        try:
            if _looks_western(sample.decode("cp1252")):
                return "cp1252"
        except UnicodeDecodeError:  # one of the five bytes cp1252 leaves undefined
            pass
    tied = {m.encoding for m in matches if m.chaos <= best.chaos and m.coherence >= best.coherence}
    for encoding in _PREFERRED_ON_TIE:
        if encoding in tied:
            return encoding
    return best.encoding


def _codec_name(encoding: str) -> str | None:
    """The canonical Python codec name for ``encoding``, or None when Python has no such codec."""
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):
        return None
    # "base64" and "rot13" are codecs too, but not ones that turn bytes into text.
    return info.name if getattr(info, "_is_text_encoding", True) else None


class Decoding(NamedTuple):
    """How to read a file: its codec, the BOM bytes to skip and, for UTF-8 read line by line,
    the codec of its lines that are not UTF-8 (None: no line-by-line reading)."""

    encoding: str
    skip: int = 0
    fallback: str | None = None


# A character that UTF-8 encodes in several bytes, as ``bytes.decode("utf-8",
# "surrogateescape")`` leaves it (undecodable bytes become U+DC80..U+DCFF, never valid UTF-8).
_MULTIBYTE = re.compile("[\u0080-\ud7ff\ue000-\U0010ffff]")
_ESCAPED = re.compile("[\udc80-\udcff]")
# Code pages in which lines of text are not valid UTF-8 by chance (letters sit at C0..FF and
# are followed by ASCII or by more letters, never by the 80..BF continuation bytes).
_WESTERN_CODECS = frozenset({"cp1252", "iso8859-1", "iso8859-15"})
# Bytes after which a long line can be cut without splitting a character in any ASCII-based
# code page (they are never a second byte in GBK, Shift-JIS, Big5 or EUC).
_CUT_BYTES = (b" ", b"\t", b",", b".", b";", b":", b"<", b">", b"\"", b"'", b"=", b"/")


def _is_utf8(sample: bytes) -> bool:
    try:
        # final=False: the sample may end in the middle of a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _ascii_compatible(encoding: str) -> bool:
    try:
        return b"\n\r\t azAZ09.<>".decode(encoding) == "\n\r\t azAZ09.<>"
    except (LookupError, UnicodeDecodeError):
        return False


def _utf8_evidence(line: bytes) -> tuple[int, int]:
    """(well-formed multi-byte UTF-8 characters, bytes that are not UTF-8) in ``line``."""
    text = line.decode("utf-8", "surrogateescape")
    return len(_MULTIBYTE.findall(text)), len(_ESCAPED.findall(text))


def _line_kinds(sample: bytes) -> tuple[list[bytes], int, int]:
    """Sort the lines of ``sample``: the legacy ones (not valid UTF-8, and more bytes that are
    not UTF-8 than well-formed multi-byte characters), and of the UTF-8 ones that are not ASCII
    (valid, or with fewer bad bytes than multi-byte characters) how many there are and the most
    multi-byte characters one holds."""
    lines = sample.splitlines()
    if len(sample) >= SAMPLE_BYTES and lines:
        lines.pop()  # cut short by the end of the sample
    legacy: list[bytes] = []
    utf8_lines = strongest = 0
    for line in lines:
        if line.isascii():
            continue
        good, bad = _utf8_evidence(line)
        if good < bad:
            legacy.append(line)
        elif good:
            utf8_lines += 1
            strongest = max(strongest, good)
    return legacy, utf8_lines, strongest


def _legacy_codec(lines: list[bytes]) -> str | None:
    """The code page of ``lines`` (legacy lines of a UTF-8 file), if it is one ASCII-based
    code page that can stand beside UTF-8 line by line."""
    if not lines:
        return FALLBACK_ENCODING
    joined = b"\n".join(lines)
    # A few short lines are too little for charset_normalizer ("très" alone comes out as
    # UTF-16); cp1252 is the likeliest code page beside UTF-8 when it reads as Western text.
    try:
        if _looks_western(joined.decode("cp1252")):
            return "cp1252"
    except UnicodeDecodeError:  # one of the five bytes cp1252 leaves undefined
        pass
    guessed = _guess_legacy_encoding(joined)
    codec = (_codec_name(guessed) if guessed else None) or FALLBACK_ENCODING
    return codec if codec != "utf-8" and _ascii_compatible(codec) else None


def _mixed_fallback(sample: bytes) -> str | None:
    """For a sample that is not valid UTF-8: the code page of its legacy lines when its valid
    UTF-8 lines make it a mix (the file is then read as UTF-8, line by line), else None."""
    legacy, utf8_lines, strongest = _line_kinds(sample)
    if not utf8_lines:
        return None
    fallback = _legacy_codec(legacy)  # cp1252 when every line is UTF-8, a few bad bytes aside
    if fallback is None:
        return None
    if fallback in _WESTERN_CODECS or strongest >= MIXED_STRONG_LINE_CHARS:
        return fallback
    return None


class _LineDecoder:
    """UTF-8, line by line: a line that is not valid UTF-8 is decoded as ``fallback``, unless it
    is UTF-8 with a few bad bytes (those become U+FFFD).  That is a line holding a well-formed
    multi-byte UTF-8 character when ``fallback`` is a Western code page (whose text never holds
    one by chance), and otherwise one holding at least as many of them as bad bytes (Shift-JIS
    or GBK text does hold some by chance, among many more bytes that are not UTF-8).

    Lines end at ``"\n"`` or ``"\r"``; a line longer than :data:`MIXED_PIECE_BYTES` is decided a
    piece at a time (cut after a space or punctuation where it has one), so memory stays
    bounded.  Files that are valid UTF-8 cost one decode a chunk, as with the plain decoder."""

    def __init__(self, fallback: str) -> None:
        self.fallback = fallback
        self.western = fallback in _WESTERN_CODECS
        self.pending = b""

    def decode(self, data: bytes, final: bool = False) -> str:
        data = self.pending + data if self.pending else data
        if final:
            cut = len(data)
        else:
            cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            if len(data) - cut > MIXED_PIECE_BYTES:
                cut = self._piece_end(data, cut)
        head, self.pending = data[:cut], data[cut:]
        if not head:
            return ""
        try:
            return head.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(self._line(line) for line in head.splitlines(keepends=True))

    @staticmethod
    def _piece_end(data: bytes, cut: int) -> int:
        after = max(data.rfind(b, cut) for b in _CUT_BYTES) + 1
        if after > cut:
            return after
        end = len(data)  # no such byte: cut before a UTF-8 lead byte near the end
        for back in range(1, 5):
            if data[end - back] & 0xC0 != 0x80:
                return end - back
        return end

    def _line(self, line: bytes) -> str:
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            pass
        good, bad = _utf8_evidence(line)
        if good and (self.western or good >= bad):
            return line.decode("utf-8", "replace")
        return line.decode(self.fallback, "replace")


def _decoder(encoding: str, fallback: str | None = None) -> Any:
    """An incremental decoder: :class:`_LineDecoder` with a ``fallback``, else the codec's."""
    if fallback:
        return _LineDecoder(fallback)
    return codecs.getincrementaldecoder(encoding)(errors="replace")


def detect_decoding(sample: bytes, declared: str | None = None) -> Decoding:
    """How to read a file, from its first bytes (the rules in the module's docstring).

    ``sample`` is the start of the file (:data:`SAMPLE_BYTES` of it, or all of a shorter file).
    ``declared`` is an encoding the file names itself (an HTML ``<meta charset>``): it is used
    when there is no BOM and it is a codec Python knows.  Raises :class:`ParseError` when the
    bytes are binary rather than text.
    """
    bom = sniff_bom(sample)
    if bom is not None:
        return Decoding(*bom)
    if b"\x00" in sample[:BINARY_PROBE_BYTES]:
        raise ParseError("binary file, not text (it contains NUL bytes)")

    encoding = _codec_name(declared) if declared else None
    fallback = None
    if encoding is None:
        if _is_utf8(sample):
            encoding = "utf-8"
        else:
            fallback = _mixed_fallback(sample)
            if fallback is not None:
                encoding = "utf-8"
            else:
                guessed = _guess_legacy_encoding(sample)
                encoding = (_codec_name(guessed) if guessed else None) or FALLBACK_ENCODING
    if encoding == "utf-8" and fallback is None:
        # Lines further on that are not UTF-8 are most likely in the code page of those here.
        legacy = [] if _is_utf8(sample) else _line_kinds(sample)[0]
        fallback = _legacy_codec(legacy)

    # Bytes that decode (every byte does in cp1252) are still no text when they are mostly
    # control characters: charset_normalizer finding nothing usually ends here.
    decoded = _decoder(encoding, fallback).decode(sample, final=False)
    if _control_ratio(decoded) > CONTROL_RATIO_BINARY:
        raise ParseError("binary file, not text (mostly control characters)")
    return Decoding(encoding, 0, fallback)


def detect_encoding(sample: bytes, declared: str | None = None) -> tuple[str, int]:
    """The codec to read a file with and how many BOM bytes to skip (:func:`detect_decoding`
    without the line-by-line fallback)."""
    decoding = detect_decoding(sample, declared)
    return decoding.encoding, decoding.skip


def decode_stream(chunks: Iterable[bytes], encoding: str, skip: int = 0,
                  fallback: str | None = None) -> Iterator[str]:
    """Decode binary ``chunks`` incrementally into text with ``"\\n"`` newlines and no BOM.

    ``skip`` bytes (a BOM) are dropped from the start.  Undecodable bytes become U+FFFD.  A
    ``"\\r\\n"`` split between two chunks still becomes one ``"\\n"``.  With ``fallback``
    (``encoding`` is UTF-8), lines that are not UTF-8 are decoded as ``fallback`` instead.
    """
    decoder = _decoder(encoding, fallback)
    started = False
    carry_cr = False  # a trailing "\r" held back until we know whether "\n" follows

    def normalise(piece: str, final: bool) -> str:
        nonlocal started, carry_cr
        if carry_cr:
            piece = "\r" + piece
            carry_cr = False
        if not final and piece.endswith("\r"):
            piece = piece[:-1]
            carry_cr = True
        if not started and piece:
            started = True
            if piece.startswith("\ufeff"):
                piece = piece[1:]
        if "\r" in piece:
            piece = piece.replace("\r\n", "\n").replace("\r", "\n")
        return piece

    for chunk in chunks:
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        piece = normalise(decoder.decode(chunk), final=False)
        if piece:
            yield piece
    piece = normalise(decoder.decode(b"", final=True), final=True)
    if piece:
        yield piece


def _read_chunks(path: Path, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def open_text(path: Path, declared: str | None = None) -> tuple[str, Iterator[str]]:
    """The encoding of ``path`` and an iterator over its decoded text, read in chunks.

    Detection happens now (a binary file raises :class:`ParseError` here); the file is opened
    again, and read piece by piece, only when the iterator is consumed.  ``declared`` is passed
    to :func:`detect_encoding`.
    """
    with open(path, "rb") as f:
        sample = f.read(SAMPLE_BYTES)
    if not sample:
        return "utf-8", iter(())
    encoding, skip, fallback = detect_decoding(sample, declared)
    return encoding, decode_stream(_read_chunks(path), encoding, skip, fallback)


def read_text(path: Path, declared: str | None = None) -> tuple[str, str]:
    """The encoding and whole decoded text of ``path`` (for formats that need all of it)."""
    encoding, pieces = open_text(path, declared)
    return encoding, "".join(pieces)


def split_blocks(
    pieces: Iterable[str], size: int, first_line: int = 1
) -> Iterator[tuple[int, str]]:
    """Regroup text ``pieces`` into ``(line_start, block)`` of about ``size`` characters.

    Each block ends at a line end when there is one in its first ``size`` characters; a longer
    line is cut mid-line and the next block starts on that same line.  The blocks joined are
    exactly the pieces joined.
    """
    size = max(1, size)
    line = first_line
    buffer = ""
    for piece in pieces:
        buffer += piece
        pos = 0
        # An offset instead of re-slicing the buffer keeps small blocks from costing O(n^2).
        while len(buffer) - pos >= size:
            newline = buffer.rfind("\n", pos, pos + size)
            end = newline + 1 if newline >= 0 else pos + size
            block = buffer[pos:end]
            yield line, block
            line += block.count("\n")
            pos = end
        buffer = buffer[pos:]
    if buffer:
        yield line, buffer


def _has_visible_text(path: Path) -> bool:
    """Whether ``path`` holds anything but whitespace (read again, streamed, stopping early)."""
    _encoding, pieces = open_text(path)
    return any(not piece.isspace() for piece in pieces)


def parse_text(path: Path, ctx: ParseContext) -> Iterator[Section]:
    """Plain text (.txt, .csv, .srt, .json, ...) as blocks of about ``ctx.text_block_chars``.

    Blocks join back to the whole decoded text; ``line_start`` is the 1-based line each begins
    on.  A file that is empty or only whitespace yields nothing.
    """
    _encoding, pieces = open_text(path)
    first = True
    for line, block in split_blocks(pieces, ctx.text_block_chars):
        # Only a leading whitespace block raises the question "is there any text at all?";
        # answering it needs a second read, which stops at the first visible character.
        if first and block.isspace() and not _has_visible_text(path):
            return
        first = False
        yield Section(kind="text", text=block, line_start=line)


# --- Markdown -----------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")


def _markdown_parts(text: str) -> Iterator[tuple[int, str, str]]:
    """``(line_start, heading_path, text)`` for each heading section of Markdown ``text``.

    Headings inside fenced code blocks (``` or ~~~) are code, not headings.  The text before
    the first heading has the path ``""``; when it is only blank lines it is joined to the first
    section so that no section is empty.
    """
    path: list[tuple[int, str]] = []  # (level, title) of the enclosing headings
    title = ""
    start_line = 1
    current: list[str] = []
    fence: str | None = None  # the opening fence marker while inside a code block

    # Split on "\n" only: str.splitlines() also breaks at \f, \x1c, U+2028..., which would put
    # line numbers out of step with the indexer's count of "\n".
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        bare = line.rstrip("\n")
        if fence is not None:
            match = _FENCE.match(bare)
            # A closing fence: the same character, at least as long, nothing after it.
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not match.group(2).strip():
                fence = None
            current.append(line)
            continue
        fence_match = _FENCE.match(bare)
        if fence_match and not (fence_match.group(1)[0] == "`" and "`" in fence_match.group(2)):
            fence = fence_match.group(1)
            current.append(line)
            continue
        heading = _ATX_HEADING.match(bare)
        if heading is None:
            current.append(line)
            continue
        # A heading: close the section before it, unless that is only blank preamble.
        if current and not (not path and "".join(current).isspace()):
            yield start_line, title, "".join(current)
            current = []
            start_line = number
        level = len(heading.group(1))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, " ".join((heading.group(2) or "").split())))
        title = " > ".join(name for _, name in path if name)
        current.append(line)
    if current:
        yield start_line, title, "".join(current)


def parse_markdown(path: Path, ctx: ParseContext) -> Iterator[Section]:
    """Markdown split at its ATX headings; ``title`` is the heading path ("Install > From source").

    Sections join back to the whole decoded text and each starts with its heading line.  A
    section longer than ``ctx.text_block_chars`` is cut into blocks with the same title.  Files
    over :data:`MARKDOWN_MAX_BYTES` are read as plain text blocks (streamed, no titles).
    """
    if path.stat().st_size > MARKDOWN_MAX_BYTES:
        yield from parse_text(path, ctx)
        return
    _encoding, text = read_text(path)
    if not text or text.isspace():
        return
    for line_start, title, part in _markdown_parts(text):
        for line, block in split_blocks((part,), ctx.text_block_chars, first_line=line_start):
            yield Section(kind="text", text=block, line_start=line, title=title)
