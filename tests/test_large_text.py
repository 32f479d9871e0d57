"""A 200 MB text file is streamed: the parser's memory does not grow with the file."""

from __future__ import annotations

import tracemalloc

from kbterm.ingest import ParseContext
from kbterm.ingest.text import parse_text

SIZE = 200 * 1024 * 1024


def test_200_mb_text_file_is_parsed_in_bounded_memory(tmp_path):
    path = tmp_path / "huge.txt"
    line = "The lighthouse log, entry after entry, storm after storm. Ünïcode ✓\n"
    block = (line * ((1 << 20) // len(line) + 1)).encode()
    with open(path, "wb") as fh:
        written = 0
        while written < SIZE:
            fh.write(block)
            written += len(block)
    lines_in_file = written // len(line.encode())

    ctx = ParseContext()
    tracemalloc.start()
    try:
        sections = 0
        chars = 0
        last_line = 0
        for section in parse_text(path, ctx):
            assert section.line_start == last_line + 1 or sections == 0
            last_line = section.line_start + section.text.count("\n") - 1
            sections += 1
            chars += len(section.text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert last_line == lines_in_file
    assert chars == lines_in_file * len(line)
    assert sections >= 190
    assert peak < 32 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while parsing a 200 MB file"
