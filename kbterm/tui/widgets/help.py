"""The help screen: every key (F1 anywhere; ``?`` where it is not text)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

from kbterm.tui.render import safe_text

KEYS = [("type", "search as you type"),
        ("↓ / ↑", "move through the results; the preview follows"),
        ("enter", "answer (in the search box); open the source (in the list)"),
        ("ctrl+g", "answer from these results, streamed"),
        ("ctrl+o", "open the source at its page or line"),
        ("ctrl+t", "search by an image (→ completes the path)"),
        ("ctrl+f", "filters: type, folder, modified after/before"),
        ("tab", "next box"),
        ("[n] in the answer", "click: show that source"),
        ("escape", "stop the answer; back to the search box"),
        ("f1  ?", "this help (? when the search box is empty)"),
        ("ctrl+c  ctrl+q", "quit")]


class HelpScreen(ModalScreen[None]):
    """Every key binding, in a box that fits 80x24."""

    BINDINGS = [Binding("escape,f1,question_mark,q", "dismiss", "Close")]

    def __init__(self, keys: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.rows = KEYS if keys is None else keys

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(ratio=1)
        for key, what in self.rows:
            table.add_row(safe_text(key), safe_text(what))  # (plain: "[n]" is not markup)
        yield Static(Group(Text("kbterm keys\n", style="bold"), table,
                           Text("\nType to search; results refresh as you type. "
                                "Dates: 2026-11-01 or an age (7d, 12h, 2w).",
                                style="dim")), id="help")
