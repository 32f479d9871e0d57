"""The last guard between untrusted text and the terminal.

Every widget escapes what it shows (:mod:`kbterm.tui.render`); this line filter drops any
control character that would still be drawn (a widget or a library that forgot), so that no
title change, clipboard write or screen clear ever reaches the terminal.  Textual's own
control output (cursor moves, colours) is not text and is not touched.
"""

from __future__ import annotations

import re

from rich.segment import Segment
from textual.color import Color
from textual.filter import LineFilter

# C0 (tab and newline included: a drawn line holds neither), DEL, C1, bidi controls.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class DropControls(LineFilter):
    """Removes control characters from drawn text (they take no cells: the layout holds)."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        if not any(UNSAFE.search(text) for text, _, control in segments if not control):
            return segments
        return [Segment(UNSAFE.sub("", text), style, control) if not control else
                Segment(text, style, control) for text, style, control in segments]
