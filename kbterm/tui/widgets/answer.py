"""The answer pane: an answer streamed as Markdown, its sources, and whether it is done.

While the answer streams, the pane follows its end (it is anchored) unless the user scrolls
up; scrolling back to the end follows again.  The pane's title says where the answer is:
writing, done, stopped, or no answer.  Each ``[n]`` links to its source.

The answer's text is untrusted (the model repeats what it read): control characters are
escaped before Markdown sees them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Markdown

from kbterm.tui.render import markdown_line, visible

if TYPE_CHECKING:
    from textual.widgets.markdown import MarkdownStream

    from kbterm.answer import Answer

CITATION = re.compile(r"\[(\d{1,3})\]")
# The end of a text that may be the start of a citation ("[1" of "[12]"), held back while
# streaming so that what is written is never rewritten.
PARTIAL_CITATION = re.compile(r"\[\d{0,3}$")

WRITING, DONE, STOPPED, FAILED, WAITING = ("writing…", "✓ done", "■ stopped", "✗ no answer",
                                           "waiting…")


def linked(text: str) -> str:
    """The answer's text for the pane: escaped, each ``[n]`` a link to its source."""
    return CITATION.sub(lambda m: f"[[{m.group(1)}]](cite:{m.group(1)})", visible(text))


def streamable(text: str) -> str:
    """The part of a growing answer that can be shown now (:data:`PARTIAL_CITATION`; and a
    lone CR, which may be the start of a line end)."""
    match = PARTIAL_CITATION.search(text)
    text = text[:match.start()] if match else text
    return text[:-1] if text.endswith("\r") else text


class AnswerPane(VerticalScroll):
    """The answer (hidden until there is one)."""

    @dataclass
    class CitationClicked(Message):
        """``[n]`` was clicked: show evidence ``n``."""

        n: int

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.answer: "Answer | None" = None
        self.state = ""
        self._stream: "MarkdownStream | None" = None
        self._written = ""  # what the stream has written (linked)

    def compose(self) -> ComposeResult:
        yield Markdown("", id="answer", open_links=False)  # (links: see below)

    @property
    def markdown(self) -> Markdown:
        return self.query_one("#answer", Markdown)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.border_title = Content(f"Answer {state}")

    async def _stop_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.stop()

    async def say(self, text: str, state: str = WAITING) -> None:
        """Show a note instead of an answer (``*waiting for the reranker…*``)."""
        await self._stop_stream()
        self.answer = None
        self.add_class("shown")
        self._set_state(state)
        await self.markdown.update(text)

    async def begin(self, answer: "Answer") -> None:
        """Start showing ``answer`` (its text streams in with :meth:`progress`)."""
        await self._stop_stream()
        self.answer = answer
        self.add_class("shown")
        self._set_state(WRITING)
        self._written = ""
        await self.markdown.update("*thinking…*")
        self.anchor()

    async def progress(self, answer: "Answer") -> None:
        """Show what has been written of ``answer`` so far."""
        if answer is not self.answer:
            return  # an older answer's last tokens
        shown = linked(streamable(answer.text))
        if not shown:
            return
        if not shown.startswith(self._written) or not self._written:
            # The first words replace "thinking…"; later ones are appended.
            await self._stop_stream()
            await self.markdown.update("")
            self._written = ""
            self._stream = Markdown.get_stream(self.markdown)
        if self._stream is not None and len(shown) > len(self._written):
            await self._stream.write(shown[len(self._written):])
            self._written = shown

    async def finish(self, answer: "Answer") -> None:
        """Show ``answer`` complete: its text, its sources, and the done (or stopped) mark."""
        if answer is not self.answer:
            return
        await self._stop_stream()
        body = linked(answer.text or "")
        failed = not answer.text and bool(answer.warnings)
        if answer.cancelled:
            body += "\n\n*stopped*"
        elif not failed:
            body += "\n\n*✓ done*"
        if failed:
            body += "**No answer:** " + markdown_line(answer.warnings[-1])
        heading = "Most relevant sources" if failed else "Sources"
        body += f"\n\n**{heading}**\n\n" + "\n".join(
            f"- [[{n}]](cite:{n}) {markdown_line(hit.citation())}"
            for n, hit in answer.sources())
        self._set_state(STOPPED if answer.cancelled else FAILED if failed else DONE)
        self.add_class("shown")
        await self.markdown.update(body)  # (anchored, the pane shows its end)

    async def clear(self) -> None:
        """Hide the pane and forget its answer (the query changed)."""
        if not self.has_class("shown") and self.answer is None and self._stream is None:
            return  # (nothing to clear: a keystroke costs nothing here)
        await self._stop_stream()
        self.answer = None
        self.state = ""
        self.anchor(False)
        self.remove_class("shown")
        await self.markdown.update("")

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        # Only the pane's own links work: a link the model wrote opens nothing.
        event.stop()
        if re.fullmatch(r"cite:\d{1,3}", event.href):
            self.post_message(self.CitationClicked(int(event.href.split(":", 1)[1])))
