"""The filter bar (``ctrl+f``): file type, folder, modified after and before.

It fits one line from 80 columns: short placeholders (the formats are in the help and the
README), fixed widths for the type and the dates, the folder box takes the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Select

from kbterm.filetypes import FILE_TYPES
from kbterm.tui.suggest import PathSuggester

if TYPE_CHECKING:
    from kbterm.retrieval import Filters

TYPES = list(dict.fromkeys(FILE_TYPES.values()))  # text markdown json html pdf image video
PLACEHOLDERS = {"f-folder": "in folder (→ completes)", "f-after": "after: 7d",
                "f-before": "before: 2w"}


class FilterBar(Horizontal):
    """The filters; hidden, they still apply (:meth:`read` reads them either way)."""

    def compose(self) -> ComposeResult:
        yield Select([(kind, kind) for kind in TYPES], prompt="any type", id="f-type",
                     compact=True)
        yield Input(placeholder=PLACEHOLDERS["f-folder"], id="f-folder", compact=True,
                    suggester=PathSuggester(folders_only=True))
        yield Input(placeholder=PLACEHOLDERS["f-after"], id="f-after", compact=True)
        yield Input(placeholder=PLACEHOLDERS["f-before"], id="f-before", compact=True)

    def read(self) -> "tuple[Filters, list[str], str]":
        """The filters the bar holds, what is wrong with them (those parts are ignored until
        fixed, and their box is marked), and the filters described for people."""
        from kbterm.errors import InputError
        from kbterm.retrieval import Filters, parse_when

        problems: list[str] = []
        kind = self.query_one("#f-type", Select).value
        folder = self.query_one("#f-folder", Input).value.strip()
        when: dict[str, float | None] = {}
        described = [f"type {kind}"] if isinstance(kind, str) else []
        if folder:
            described.append(f"in {folder}")
        for name in ("after", "before"):
            box = self.query_one(f"#f-{name}", Input)
            value = box.value.strip()
            when[name] = None
            box.remove_class("-invalid")
            if value:
                try:
                    when[name] = parse_when(value, name)
                    described.append(f"{name} {value}")
                except InputError as exc:
                    problems.append(str(exc))
                    box.add_class("-invalid")
        # (A folder, ~ and relative paths included, or a glob: Filters.match_path's rules.)
        filters = Filters(paths=(folder,) if folder else (),
                          types=(kind,) if isinstance(kind, str) else (),
                          modified_after=when["after"], modified_before=when["before"])
        return filters, problems, " · ".join(described)
