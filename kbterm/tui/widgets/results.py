"""The results list: one line per hit, updated in place as the list changes.

Which hit is selected after a change: the first, unless the user moved the selection
themselves since this query's first list (then their hit stays selected while the reranker
re-sorts the list).  A new query (or new filters) starts again at the first hit.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import ListItem, ListView, Static

from kbterm.tui.render import highlight, one_line, safe_text

if TYPE_CHECKING:
    from kbterm.retrieval import Hit, Results

ICONS = {"text": "¶", "image": "▣", "video": "▶"}


class ResultItem(ListItem):
    """One hit in the results list: a head line (rank, reranked marker, modality icon,
    citation; scores on the right) and a snippet of up to two lines.

    An item is updated in place when the list changes (:meth:`show`): re-sorting after the
    rerank, or the next query's hits, cost a text update per line instead of new widgets."""

    def __init__(self, hit: "Hit", query: str, reranked: bool) -> None:
        super().__init__()
        self.hit = hit
        self.query = query
        self.reranked = reranked

    def compose(self) -> ComposeResult:
        head, scores, short, body = self._parts()
        with Horizontal(classes="hit-head"):
            yield Static(head, classes="hit-title")
            yield Static(scores, classes="hit-scores")
            yield Static(short, classes="hit-score")
        yield Static(body, classes="hit-snippet")

    def show(self, hit: "Hit", query: str, reranked: bool) -> None:
        """Show another hit in this line."""
        self.hit, self.query, self.reranked = hit, query, reranked
        for selector, part in zip((".hit-title", ".hit-scores", ".hit-score", ".hit-snippet"),
                                  self._parts()):
            self.query_one(selector, Static).update(part)

    def _parts(self) -> tuple[Text, Text, Text, Text]:
        hit = self.hit
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append(f"{hit.rank:>2} ", style="dim")
        head.append(("★ " if self.reranked and hit.rerank_score is not None else "  "),
                    style="green")
        head.append(f"{ICONS.get(hit.modality, '·')} ", style="cyan")
        head.append(one_line(hit.citation()), style="bold")  # (a file name: untrusted)
        scores = []
        if hit.embedding_score is not None:
            scores.append(f"cos {hit.embedding_score:.2f}")
        if hit.rerank_score is not None:
            scores.append(f"rr {hit.rerank_score:.2f}")
        if not scores and hit.keyword_score is not None:  # the keyword stage: BM25 alone
            scores.append(f"bm25 {hit.keyword_score:.1f}")
        # A narrow list shows one score: the reranker's when there is one.
        short = (Text(f"{hit.rerank_score:.2f}", style="green") if hit.rerank_score is not None
                 else Text(f"{hit.embedding_score:.2f}") if hit.embedding_score is not None
                 else Text(f"{hit.keyword_score:.1f}", style="dim")
                 if hit.keyword_score is not None else Text(""))
        body = highlight(" ".join(hit.snippet.split())[:240], self.query, single_line=True)
        return head, Text(" ".join(scores)), short, body


class ResultsList(ListView):
    """The list of :class:`ResultItem`; remembers whether the user moved the selection."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.user_moved = False  # since the current query's first list
        self._moving = False  # the app is moving the selection, not the user
        self._list_key: object = None  # the query the lines belong to

    def watch_index(self, old_index: int | None, new_index: int | None) -> None:
        super().watch_index(old_index, new_index)
        if not self._moving:  # a key, a click, or a citation followed
            self.user_moved = True

    @contextmanager
    def _by_the_app(self) -> Iterator[None]:
        self._moving = True
        try:
            yield
        finally:
            self._moving = False

    def items(self) -> list[ResultItem]:
        return [c for c in self.children if isinstance(c, ResultItem)]

    async def show_hits(self, results: "Results", reranked: bool) -> None:
        """Show ``results`` in the lines on screen: only the difference is mounted or removed
        (mounting 20 lines costs 40-90 ms, updating them about 15)."""
        shown, hits = self.items(), results.hits
        with self._by_the_app():
            for item, hit in zip(shown, hits):
                item.show(hit, results.query, reranked)
            if len(shown) > len(hits):
                await self.remove_children(shown[len(hits):])
            elif len(hits) > len(shown):
                await self.extend([ResultItem(hit, results.query, reranked)
                                   for hit in hits[len(shown):]])

    def select_after_change(self, key: object, selected: str | None) -> "Hit | None":
        """Select the hit to show after the list changed (see the module docstring):
        ``key`` names the query; ``selected`` is the id of the hit selected before."""
        items = self.items()
        if not items:
            return None
        if key != self._list_key:  # a new query: the user's last move was in another list
            self._list_key, self.user_moved = key, False
        index = 0
        if self.user_moved and selected is not None:
            index = next((n for n, it in enumerate(items) if it.hit.id == selected), 0)
        with self._by_the_app():
            if self.index != index:
                self.index = index
            else:
                self.scroll_to_widget(items[index], animate=False)
        return items[index].hit

    def select_hit(self, hit_id: str) -> bool:
        """Select the line of ``hit_id`` (for the user: a citation clicked)."""
        for index, item in enumerate(self.items()):
            if item.hit.id == hit_id:
                self.index = index
                return True
        return False


class ResultsPane(Vertical):
    """The results box: a message (no index, no results, a bad filter) or the list."""

    @dataclass
    class Highlighted(Message):
        """The selection moved to ``hit`` (the preview follows)."""

        hit: "Hit"

    @dataclass
    class OpenRequested(Message):
        """Enter on a hit: open its source."""

        hit: "Hit"

    def compose(self) -> ComposeResult:
        yield Static("", id="message")
        yield ResultsList(id="results")

    @property
    def list_view(self) -> ResultsList:
        return self.query_one(ResultsList)

    def show_message(self, text: str) -> None:
        """Say ``text`` where the results go (plain text: "[library]" is not markup); the
        list is hidden while there is a message (hidden, not cleared: the next query's lines
        are ready)."""
        message = self.query_one("#message", Static)
        message.update(safe_text(text))
        message.display = bool(text)
        self.list_view.set_class(bool(text), "empty")
        if text:
            self.border_title = ""

    def set_title(self, title: str, subtitle: str) -> None:
        self.border_title = Content(one_line(title))
        self.border_subtitle = Content(one_line(subtitle))

    def shown_items(self) -> list[ResultItem]:
        """The result lines on screen (a hidden list keeps its lines for the next query)."""
        if self.list_view.has_class("empty"):
            return []
        return self.list_view.items()

    @property
    def highlighted(self) -> "Hit | None":
        item = self.list_view.highlighted_child
        return item.hit if isinstance(item, ResultItem) and item in self.shown_items() else None

    def on_list_view_highlighted(self, event: ListView.Highlighted) -> None:
        event.stop()
        if isinstance(event.item, ResultItem):
            self.post_message(self.Highlighted(event.item.hit))

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ResultItem):
            self.post_message(self.OpenRequested(event.item.hit))
