"""Words for the keyword index and the highlights, in every script.

LanceDB's tokenizers split text at spaces and punctuation, which is where words end in
English, German, French or Spanish, but not in Chinese, Japanese, Thai (no spaces at all) or
Korean (a space ends a phrase, and particles stick to the noun: 김치찌개를 is "kimchi stew" +
object marker).  So the index does not read the chunk's text itself but its *keyword text*
(:func:`keyword_text`, the chunks table's ``keywords`` column): the text unchanged, except that
each run of characters of those scripts becomes its overlapping bigrams, as in Lucene's CJK
analyzer (网络设置 -> 网络 络设 设置; a run of one character stays one token).  The query goes
through the same function, so 网络设置 matches every text holding that word, 김치찌개 matches
김치찌개를, and a two-character word (设置) is one bigram.  The other scripts go to LanceDB's
``simple`` tokenizer with the settings in :data:`FTS_SETTINGS` (chosen by the numbers in
BENCHMARKS.md, "Keyword index").

:data:`KEYWORDS_VERSION` names this recipe: when it changes, the writer rebuilds the column and
the index once (``Store.upgrade_keywords``).
"""

from __future__ import annotations

import re
import unicodedata

# The recipe of the keywords column (this module's functions and FTS_SETTINGS): change it
# and every index rebuilds its keywords once.
KEYWORDS_VERSION = 2

# LanceDB's FTS settings for the keywords column (lancedb.index.FTS keyword arguments).
FTS_SETTINGS = {
    "base_tokenizer": "simple",
    "language": "English",
    "stem": True,
    "remove_stop_words": True,
    "ascii_folding": True,
    "lower_case": True,
}

# Scripts written without spaces between words (or, for Hangul, with particles attached):
# CJK ideographs (with extensions and compatibility forms), kana, Hangul, Thai, Lao, Khmer,
# Myanmar.
_UNSPACED = (
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u1000-\u109f"  # Myanmar
    "\u1100-\u11ff"  # Hangul Jamo
    "\u1780-\u17ff"  # Khmer
    "\u3005\u3006\u3007"  # 々 〆 〇
    "\u3040-\u309f"  # Hiragana
    "\u30a0-\u30ff"  # Katakana (with ー)
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\ua960-\ua97f"  # Hangul Jamo extended A
    "\uac00-\ud7af"  # Hangul syllables
    "\ud7b0-\ud7ff"  # Hangul Jamo extended B
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\U00020000-\U0003134f"  # CJK extensions B-G
)
_RUN = re.compile(f"[{_UNSPACED}]+")
# Latin letters that can carry accents (Latin-1 Supplement to Latin Extended Additional).
_ACCENTED = re.compile("[\u00c0-\u024f\u1e00-\u1eff]+")
_WORD = re.compile(r"\w+")


def has_unspaced(text: str) -> bool:
    """Whether ``text`` holds characters of a script written without spaces."""
    return _RUN.search(text) is not None


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i:i + 2] for i in range(len(run) - 1)]


def _unaccented(letters: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", letters)
                   if not unicodedata.combining(c))


def keyword_text(text: str) -> str:
    """What the keyword index reads for ``text`` (and for a query): NFKC-normalised (full-width
    letters, half-width kana), accents taken off Latin letters, each unspaced run as its
    bigrams, the rest unchanged.

    (LanceDB folds accents too, but after stemming: the English stemmer then cuts ``élèves``
    and ``eleves`` differently and the two never match.)"""
    if not text:
        return ""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    text = _ACCENTED.sub(lambda m: _unaccented(m.group()), text)
    if not has_unspaced(text):
        return text
    return _RUN.sub(lambda m: " " + " ".join(_bigrams(m.group())) + " ", text)


def query_terms(query: str) -> list[str]:
    """The pieces of ``query`` to mark in a text (lower-cased, longest first): its words of
    three or more letters, and each bigram (or lone character) of its unspaced runs, so that
    a two-character Chinese word is marked whole and a longer one by its overlapping pairs."""
    query = unicodedata.normalize("NFKC", query).lower()
    terms: set[str] = set()
    for run in _RUN.findall(query):
        terms.update(_bigrams(run))
    spaced = _RUN.sub(" ", query)
    terms.update(w for w in _WORD.findall(spaced) if len(w) >= 3)
    return sorted(terms, key=lambda t: (-len(t), t))


def term_pattern(query: str) -> "re.Pattern[str] | None":
    """A case-insensitive pattern of :func:`query_terms` (None: nothing to mark)."""
    terms = query_terms(query)
    if not terms:
        return None
    return re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)


def term_spans(text: str, query: str) -> list[tuple[int, int]]:
    """The spans of ``text`` that hold the query's terms, overlapping ones merged (the pairs
    of 网络设置 mark the whole word)."""
    pattern = term_pattern(query)
    if pattern is None:
        return []
    spans: list[tuple[int, int]] = []
    # Overlapping matches: try every start, not only the end of the last match.
    pos = 0
    while pos < len(text):
        m = pattern.search(text, pos)
        if m is None:
            break
        start, end = m.start(), m.end()
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
        pos = start + 1
    return spans
