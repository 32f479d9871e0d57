"""The preview of the selected hit: its source lines, or its image (photo, page, keyframe)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from kbterm.paths import display_path
from kbterm.tui.render import highlight, one_line, render_context, safe_text

if TYPE_CHECKING:
    from kbterm.retrieval import Context, Hit

IMAGE_WIDGETS = {"auto": "Image", "kitty": "TGPImage", "sixel": "SixelImage",
                 "halfcell": "HalfcellImage", "unicode": "UnicodeImage"}


def image_widget(mode: str) -> Any:
    """The textual-image widget class for ``tui.images`` (None: no images)."""
    if mode == "none":
        return None
    import textual_image.widget

    return getattr(textual_image.widget, IMAGE_WIDGETS[mode])


class PreviewPane(Vertical):
    """Shows one hit: a text hit as its source lines around the match (the chunk's lines
    bright, the query's words highlighted; a PDF's page image below, added with
    :meth:`add_image`); a visual hit as its image with its time range."""

    def __init__(self, images: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.images = images  # tui.images
        self.hit: "Hit | None" = None
        self._key: tuple[str, str] | None = None  # (the hit's id, the query it highlights)

    def compose(self) -> ComposeResult:
        yield Static("", id="preview-title")
        yield VerticalScroll(Static("", id="preview-text"), id="preview-scroll")

    def shows(self, hit: "Hit | None", query: str) -> bool:
        """Whether the pane already shows ``hit`` for ``query``."""
        key = (hit.id, query) if hit is not None else None
        return key is not None and key == self._key

    def show(self, hit: "Hit | None", query: str, context: "Context | None" = None) -> None:
        """Show ``hit`` (None: nothing); ``context`` holds a text hit's source lines."""
        title = self.query_one("#preview-title", Static)
        text = self.query_one("#preview-text", Static)
        self.hit = hit
        if self.shows(hit, query):
            return  # already shown (the list re-sorted, or its selection was set again)
        self._key = (hit.id, query) if hit is not None else None
        for old in self.query(".preview-image"):  # (removal is deferred: no ids to clash)
            old.remove()
        if hit is None:
            title.update("")
            text.update("")
            return
        head = Text(one_line(hit.citation()), style="bold", no_wrap=True, overflow="ellipsis")
        head.append("\n" + one_line(display_path(hit.path)), style="dim")
        title.update(head)
        self.query_one("#preview-scroll", VerticalScroll).scroll_home(animate=False)
        if hit.modality == "text":
            text.update(render_context(context, query) if context is not None
                        else highlight(hit.content, query))
            return
        # (A visual hit's snippet is its title, or its file's name, which the title shows.)
        caption = hit.title if hit.title and hit.title != os.path.basename(hit.path) else ""
        text.update(safe_text(caption, "dim"))
        # The picture itself is decoded off the UI thread (the app's picture job), then
        # drawn by add_image.

    def add_image(self, hit: "Hit", picture: Any, before: bool = False) -> None:
        """Draw ``picture`` (a decoded PIL image) for ``hit`` (above its text, or below: a PDF
        text hit's page), unless the selection moved on meanwhile."""
        if self.hit is None or self.hit.id != hit.id:
            return
        widget = image_widget(self.images)
        if widget is None:
            return
        scroll = self.query_one("#preview-scroll", VerticalScroll)
        text = self.query_one("#preview-text", Static)
        image = widget(picture, classes="preview-image")
        if before:
            scroll.mount(image, before=text)
        else:
            scroll.mount(image, after=text)
