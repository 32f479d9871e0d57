"""Path completion for the image-or-video box and the folder filter (→ takes it, like a shell's Tab)."""

from __future__ import annotations

import os

from textual.suggester import Suggester

from kbterm.filetypes import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from kbterm.textsafe import one_line


QUERY_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


class PathSuggester(Suggester):
    """Completes a file path (folders, and images and videos unless ``folders_only``)."""

    def __init__(self, folders_only: bool = False) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.folders_only = folders_only

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        folder, stem = os.path.split(expanded)
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            return None
        for name in names:
            if not name.startswith(stem) or name.startswith(".") and not stem.startswith("."):
                continue
            if one_line(name) != name:  # (a suggestion is drawn as it is: no control characters)
                continue
            full = os.path.join(folder, name)
            if os.path.isdir(full):
                name += os.sep
            elif self.folders_only or os.path.splitext(name)[1].lower() not in QUERY_SUFFIXES:
                continue
            return value + name[len(stem):]
        return None
