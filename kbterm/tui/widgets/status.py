"""The status bar: files and chunks, the watcher, the model, the last error; one line.

Its segments shorten, then drop, in priority order so that the line fits its width (80x24
included): the watcher goes first, then the counts, then the model; the last error keeps at
least :data:`ERROR_MIN` columns (half the line when it is wider) and is cut with an
ellipsis.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from kbterm.tui.render import one_line

SEPARATOR = " │ "
ERROR_MIN = 36


@dataclass
class Segment:
    """One part of the bar: its forms from longest to shortest, and how much it matters."""

    forms: list[str]
    priority: int  # the lowest shortens (and then drops) first
    style: str = ""


def fit(segments: list[Segment], width: int) -> list[tuple[Segment, str]]:
    """The segments (in their order) in the forms that fit ``width``: shorten the least
    important one that can still shorten, else drop the least important; one segment stays
    (to be cut with an ellipsis)."""
    chosen: dict[int, int] = {n: 0 for n in range(len(segments))}

    def length() -> int:
        shown = [len(segments[n].forms[f]) for n, f in chosen.items()]
        return sum(shown) + len(SEPARATOR) * max(len(shown) - 1, 0)

    by_priority = sorted(range(len(segments)), key=lambda n: segments[n].priority)
    while length() > width and chosen:
        shorter = next((n for n in by_priority
                        if n in chosen and chosen[n] < len(segments[n].forms) - 1), None)
        if shorter is not None:
            chosen[shorter] += 1
        elif len(chosen) > 1:
            del chosen[next(n for n in by_priority if n in chosen)]
        else:
            break
    return [(segments[n], segments[n].forms[chosen[n]]) for n in sorted(chosen)]


class StatusBar(Widget):
    """Set its attributes; it draws them to fit."""

    counts: reactive[tuple[int, int, int] | None] = reactive(None)  # files, chunks, failed
    watch: reactive[tuple[str, ...]] = reactive(("not running",))  # long to short
    model: reactive[tuple[str, ...]] = reactive(("models load on first search",))
    error: reactive[str] = reactive("")

    def segments(self) -> list[Segment]:
        out = []
        if self.counts is not None:
            files, chunks, failed = self.counts
            head = f"{files:,} files"
            tail = f", {failed:,} failed" if failed else ""
            out.append(Segment([f"{head}, {chunks:,} chunks{tail}", head + tail, head], 2))
        out.append(Segment([one_line(f"watch: {w}") for w in self.watch], 1))
        out.append(Segment([one_line(m) for m in self.model], 3))
        return out

    def render(self) -> Text:
        width = max(self.content_size.width, 1)
        error = one_line(self.error)
        room = width - min(len(error) + len(SEPARATOR), max(ERROR_MIN, width // 2)) if error \
            else width
        parts = fit(self.segments(), room) if room > 0 else []
        line = Text(no_wrap=True, overflow="ellipsis", end="")
        for n, (segment, form) in enumerate(parts):
            if n:
                line.append(SEPARATOR)
            line.append(form, style=segment.style)
        line.truncate(max(room, 0), overflow="ellipsis")  # (one segment may still be long)
        if error:
            if parts:
                line.append(SEPARATOR)
            line.append(error, style="red")
        line.truncate(width, overflow="ellipsis")
        return line
