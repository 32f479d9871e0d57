"""Which files kbterm reads, by suffix.  Imports nothing, so the app and the CLI can use it
without loading the parsers."""

from __future__ import annotations

FILE_TYPES: dict[str, str] = {
    **{s: "text" for s in (".txt", ".text", ".rst", ".csv", ".tsv", ".srt", ".vtt")},
    **{s: "markdown" for s in (".md", ".markdown")},
    ".json": "json",
    **{s: "html" for s in (".html", ".htm", ".xhtml")},
    ".pdf": "pdf",
    **{s: "image" for s in (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")},
    **{s: "video" for s in (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v")},
}

IMAGE_SUFFIXES = frozenset(s for s, kind in FILE_TYPES.items() if kind == "image")
VIDEO_SUFFIXES = frozenset(s for s, kind in FILE_TYPES.items() if kind == "video")
