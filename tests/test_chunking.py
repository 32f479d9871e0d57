"""Token chunking with the tiny checkpoint's real tokenizer."""

from __future__ import annotations

import pytest

from kbterm.ingest.chunking import Chunker


@pytest.fixture(scope="module")
def chunker(index_embedder):
    return Chunker(index_embedder.tokenizer())


def count(chunker, text):
    return len(chunker.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_short_text_is_one_chunk_with_its_lines(chunker):
    [chunk] = chunker.split("\n\nfirst line\nsecond line\n\n", 64, 8, line_start=10)
    assert chunk.text == "first line\nsecond line"
    assert (chunk.line_start, chunk.line_end) == (12, 13)


def test_chunks_respect_size_overlap_and_cover_everything(chunker):
    lines = [f"Line {i}: the lighthouse keeper logs storm number {i}." for i in range(200)]
    text = "\n".join(lines) + "\n"
    chunks = chunker.split(text, 100, 10, line_start=1)
    assert len(chunks) > 10
    for c in chunks:
        assert count(chunker, c.text) <= 100 + 1  # a cut token may re-merge by one
        # the line range names exactly the lines the chunk text spans
        first = lines[c.line_start - 1]
        assert c.text.split("\n")[0] in first
        assert c.line_end - c.line_start == c.text.count("\n")
    # every line appears whole in some chunk (lines are shorter than the look-back)
    for line in lines:
        assert any(line in c.text for c in chunks), line
    # consecutive chunks overlap
    assert all(a.line_end >= b.line_start for a, b in zip(chunks, chunks[1:]))


def test_cuts_prefer_line_ends(chunker):
    text = "".join(f"Sentence {i} is short.\n" for i in range(100))
    chunks = chunker.split(text, 60, 5, line_start=1)
    ended = sum(c.text.endswith(".") for c in chunks[:-1])
    assert ended == len(chunks[:-1])  # lines (11 tokens) are shorter than the look-back


def test_no_lines_for_html_and_blank_text(chunker):
    assert chunker.split("   \n\t ", 32, 4) == []
    [c] = chunker.split("plain words", 32, 4)
    assert c.line_start is None and c.line_end is None


def test_bad_sizes_are_refused(chunker):
    with pytest.raises(ValueError):
        chunker.split("text", 16, 16)
