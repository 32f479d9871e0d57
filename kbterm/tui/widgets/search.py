"""The search box."""

from __future__ import annotations

from textual.widgets import Input

PLACEHOLDER = "Search your files…   (F1 or ? for keys, ctrl+c quits)"


class SearchBox(Input):
    """The query: ``?`` opens the help while the box is empty, and is text once there is a
    query ("why?").  (F1 opens the help from anywhere.)"""

    def check_consume_key(self, key: str, character: str | None) -> bool:
        if character == "?" and not self.value:
            return False  # (the app's ? binding gets it)
        return super().check_consume_key(key, character)
