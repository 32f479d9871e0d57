"""How to open a hit's source outside kbterm (``ctrl+o``, or Enter in the results list)."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kbterm.retrieval import Hit


def open_command(hit: "Hit") -> list[str] | None:
    """How to open a hit's source: ``$EDITOR +line`` for text, the system viewer otherwise
    (PDF viewers that take a page get it)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if hit.modality == "text" and hit.file_type != "pdf" and editor:
        line = hit.line_start or 1
        return [*shlex.split(editor), f"+{line}", hit.path]
    if hit.file_type == "pdf" and hit.page:
        for viewer, args in (("zathura", ["--page", str(hit.page)]), ("evince", ["-i",
                             str(hit.page)]), ("okular", ["-p", str(hit.page)])):
            if shutil.which(viewer):
                return [viewer, *args, hit.path]
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    if shutil.which(opener):
        return [opener, hit.path]
    if editor:
        return [*shlex.split(editor), hit.path]
    return None
