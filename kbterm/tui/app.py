"""The kbterm TUI: search as you type, reranked results, a preview of each source.

The app is a view over the headless core: :class:`~kbterm.retrieval.Searcher` does the work in
thread workers, and widgets only display what it returns.  The first frame needs no model and
no index read; models warm in the background with an indicator in the status bar.

Search as you type: a keystroke restarts a 200 ms debounce; when it fires, the query gets a
sequence number and a worker retrieves fused vector + keyword hits (shown at once), then
reranks them (the list re-sorts; reranked hits are marked).  A result whose sequence number is
not the latest is dropped, so a stale list never replaces a newer one.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Input, ListItem, ListView, Markdown, Select, Static

from kbterm.filetypes import FILE_TYPES, IMAGE_SUFFIXES
from kbterm.paths import display_path

if TYPE_CHECKING:
    from kbterm.answer import Answer, Asker
    from kbterm.config import Config
    from kbterm.retrieval import Context, Filters, Hit, Results, Searcher

CITATION = re.compile(r"\[(\d{1,3})\]")
IMAGE_WIDGETS = {"auto": "Image", "kitty": "TGPImage", "sixel": "SixelImage",
                 "halfcell": "HalfcellImage", "unicode": "UnicodeImage"}
ICONS = {"text": "¶", "image": "▣", "video": "▶"}
STATUS_SECONDS = 2.0
TYPES = list(dict.fromkeys(FILE_TYPES.values()))  # text markdown json html pdf image video


def while_mounted(method: Any) -> Any:
    """Skip ``method`` once the app is tearing its screen down (a worker thread or a timer
    may still deliver something while kbterm quits)."""
    import functools

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except NoMatches:  # the widgets it updates (fixed ids) are already gone
            return None

    return wrapper


def highlight(text: str, query: str) -> Text:
    """``text`` with the query's words (3+ letters) in bold yellow."""
    out = Text(text)
    words = {w for w in re.findall(r"\w{3,}", query.lower())}
    if words:
        pattern = re.compile("|".join(re.escape(w) for w in sorted(words, key=len,
                                                                      reverse=True)),
                             re.IGNORECASE)
        for m in pattern.finditer(text):
            out.stylize("bold yellow", m.start(), m.end())
    return out


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

    def _parts(self) -> tuple[Text, str, Text, Text]:
        hit = self.hit
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append(f"{hit.rank:>2} ", style="dim")
        head.append(("★ " if self.reranked and hit.rerank_score is not None else "  "),
                    style="green")
        head.append(f"{ICONS.get(hit.modality, '·')} ", style="cyan")
        head.append(hit.citation(), style="bold")
        scores = []
        if hit.embedding_score is not None:
            scores.append(f"cos {hit.embedding_score:.2f}")
        if hit.rerank_score is not None:
            scores.append(f"rr {hit.rerank_score:.2f}")
        # A narrow list shows one score: the reranker's when there is one.
        short = (Text(f"{hit.rerank_score:.2f}", style="green") if hit.rerank_score is not None
                 else Text(f"{hit.embedding_score:.2f}") if hit.embedding_score is not None
                 else Text(""))
        body = highlight(" ".join(hit.snippet.split())[:240], self.query)
        return head, " ".join(scores), short, body


class PathSuggester(Suggester):
    """Completes a file path (folders, and images unless ``folders_only``), like a shell's
    Tab."""

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
            full = os.path.join(folder, name)
            if os.path.isdir(full):
                name += os.sep
            elif self.folders_only or os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            return value + name[len(stem):]
        return None


class HelpScreen(ModalScreen[None]):
    """Every key binding (``?``)."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = bindings

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(ratio=1)
        for key, what in self.rows:
            table.add_row(Text(key), Text(what))  # (plain: "[n]" is not markup)
        yield Static(Group(Text("kbterm keys\n", style="bold"), table,
                           Text("\nType to search; results refresh as you type.",
                                style="dim")), id="help")


class KbtermApp(App[None]):
    """``kbterm`` with no arguments."""

    TITLE = "kbterm"
    # Under 80 columns the preview goes below the results instead of beside them.
    # From 80 to 119 columns the results list is narrow and shows one score per hit.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-wide"), (120, "-very-wide")]
    CSS = """
    Screen { layout: vertical; }
    #query { margin: 0 0; }
    #image { display: none; }
    #image.shown { display: block; }
    #filters { height: 1; display: none; padding: 0 1; }
    #filters.shown { display: block; }
    #filters Select { width: 14; margin-right: 1; }
    #filters Input { margin-right: 1; }
    #f-folder { width: 1fr; }
    #f-after, #f-before { width: 13; }
    #filters Input.-invalid { color: $error; text-style: bold; }
    #main { height: 1fr; }
    Screen.-narrow #main { layout: vertical; }
    #results-pane { width: 1fr; height: 1fr; border: round $primary-darken-2; }
    Screen.-wide #results-pane { width: 3fr; }
    Screen.-wide #preview-pane { width: 2fr; }
    #results { height: 1fr; min-width: 30; }
    #results.empty { display: none; }
    #preview-pane { width: 1fr; height: 1fr; border: round $primary-darken-2; }
    #preview-title { height: auto; padding: 0 1; text-style: bold; }
    #preview-text { padding: 0 1; }
    .preview-image { height: 1fr; width: 1fr; min-height: 8; }
    #message { padding: 1 1; color: $text-muted; }
    #status { dock: bottom; height: 1; background: $boost; padding: 0 1;
              text-wrap: nowrap; text-overflow: ellipsis; }
    #answer-pane { height: 1fr; border-top: solid $primary-darken-2; display: none; }
    #answer-pane.shown { display: block; }
    #answer { padding: 0 1; }
    ResultItem { height: auto; padding: 0 1 0 0; }
    .hit-head { height: 1; }
    .hit-title { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    .hit-scores, .hit-score { width: auto; color: $text-muted; padding-left: 1; }
    .hit-score { display: none; }
    Screen.-wide .hit-scores { display: none; }
    Screen.-wide .hit-score { display: block; }
    .hit-snippet { padding-left: 5; max-height: 2; color: $text-muted; }
    HelpScreen { align: center middle; }
    #help { width: 78; max-width: 100%; height: auto; max-height: 100%;
            border: round $primary; padding: 1 2; background: $panel; }
    """
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit"),
        Binding("question_mark", "help", "Keys", key_display="?"),
        Binding("escape", "focus_query", "Search box", show=False),
        Binding("down", "focus_results", "Results", show=False),
        Binding("ctrl+o", "open_source", "Open source"),
        Binding("ctrl+g", "answer", "Answer", priority=True),
        Binding("ctrl+t", "image_query", "Image query", priority=True),
        Binding("ctrl+f", "filters", "Filters", priority=True),
        Binding("ctrl+r", "refresh_status", "Refresh status", show=False),
    ]
    KEYS = [("type", "search as you type"),
            ("↓ / ↑", "move through the results; the preview follows"),
            ("enter", "answer (in the search box); open the source (in the list)"),
            ("ctrl+g", "answer from these results, streamed"),
            ("ctrl+o", "open the source at its page or line"),
            ("ctrl+t", "search by an image (→ completes the path)"),
            ("ctrl+f", "filters: type, folder, modified after/before"),
            ("tab", "next box"),
            ("[n] in the answer", "click: show that source"),
            ("escape", "stop the answer; back to the search box"), ("?", "this help"),
            ("ctrl+q", "quit")]

    def __init__(self, config: "Config", *, searcher: "Searcher | None" = None,
                 asker: "Asker | None" = None) -> None:
        super().__init__()
        self.config = config
        self._searcher = searcher
        self._asker = asker
        self.answer: "Answer | None" = None
        self._answer_cancel: threading.Event | None = None
        self._search_cancel: threading.Event | None = None
        self._searcher_lock = threading.Lock()
        self._show_lock = asyncio.Lock()
        self.seq = 0  # the latest query's number
        self.shown_seq = 0  # the query whose results are on screen
        self.final_seq = 0  # the latest query whose search has ended (reranked, or failed)
        self._answer_pending: int | None = None  # a query to answer once it is reranked
        self._watcher_mark: tuple[int, float] | None = None  # its last batch, as last seen
        self.results: "Results | None" = None
        self.filters_text = ""  # the active filters, for people
        self.previewed: "Hit | None" = None  # the hit in the preview pane
        self._preview_key: tuple[str, str] | None = None  # (its id, the query it highlights)
        self._timer: Any = None
        self.model_state = "models load on first search"
        self.last_error = ""
        self.index_state = ""

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search your files…  (? for keys)", id="query")
        yield Input(placeholder="Image to search by: a path (→ completes; empty: none)",
                    id="image", suggester=PathSuggester())
        with Horizontal(id="filters"):
            yield Select([(kind, kind) for kind in TYPES], prompt="any type", id="f-type",
                         compact=True)
            yield Input(placeholder="in folder (→ completes)", id="f-folder", compact=True,
                        suggester=PathSuggester(folders_only=True))
            yield Input(placeholder="after: 7d, 2026-11-01", id="f-after", compact=True)
            yield Input(placeholder="before", id="f-before", compact=True)
        with Horizontal(id="main"):
            with Vertical(id="results-pane"):
                yield Static("", id="message")
                yield ListView(id="results")
            with Vertical(id="preview-pane"):
                yield Static("", id="preview-title")
                yield VerticalScroll(Static("", id="preview-text"), id="preview-scroll")
                with VerticalScroll(id="answer-pane"):
                    yield Markdown("", id="answer")
        yield Static("", id="status")

    def on_mount(self) -> None:
        self.query_one("#query", Input).focus()
        self._update_index_state()
        self._render_status()
        self.set_interval(STATUS_SECONDS, self._render_status)
        if self.index_state == "empty":
            self._message(
                "No index yet.\n\nAdd folders with  kbterm index ~/Documents\n"
                "or list them under [library] in the config and run  kbterm watch --detach\n"
                f"(data folder: {display_path(self.config.data_path)})")
        else:
            self._message("Type to search.")
            # After the first frame: loading LanceDB and torch holds the interpreter for a
            # second or more, and the screen must not wait for it.
            self.call_after_refresh(lambda: self.set_timer(0.05, self._warm))

    # ------------------------------------------------------------------ state

    @property
    def searcher(self) -> "Searcher":
        with self._searcher_lock:
            if self._searcher is None:
                from kbterm.retrieval import Searcher

                self._searcher = Searcher(self.config)
            return self._searcher

    def _update_index_state(self) -> None:
        from kbterm.store import Store

        store = Store(self.config.data_path)
        self.index_state = "ready" if store.exists else "empty"

    def _message(self, text: str) -> None:
        """Say ``text`` where the results go (plain text: "[library]" is not markup); the
        list is hidden while there is a message."""
        message = self.query_one("#message", Static)
        message.update(Text(text))
        message.display = bool(text)
        self.query_one("#results", ListView).set_class(bool(text), "empty")

    def shown_items(self) -> "list[ResultItem]":
        """The result lines on screen (a hidden list keeps its lines for the next query)."""
        view = self.query_one("#results", ListView)
        if view.has_class("empty"):
            return []
        return [c for c in view.children if isinstance(c, ResultItem)]

    @while_mounted
    def _render_status(self) -> None:
        from kbterm.watchstate import read_state

        parts = []
        searcher = self._searcher
        if searcher is not None and searcher.chunk_count:
            parts.append(f"{searcher.file_count:,} files, {searcher.chunk_count:,} chunks")
        watcher = read_state(self.config.data_path)
        parts.append("watch: " + (watcher.summary() if watcher else "not running"))
        if watcher is not None and searcher is not None:
            mark = (watcher.pid, watcher.last_batch_at)
            if mark != self._watcher_mark:  # the watcher changed the index: recount
                self._watcher_mark = mark
                self._recount()
        parts.append(self.model_state)
        line = Text(" │ ".join(parts), no_wrap=True, overflow="ellipsis")  # plain text: an
        if self.last_error:  # error may hold "[Errno 2]", which is not markup
            line.append(" │ ")
            line.append(self.last_error, style="red")
        self.query_one("#status", Static).update(line)

    @work(thread=True, group="warm", exit_on_error=False)
    def _warm(self) -> None:
        """Load the embedder (and the vector cache) in the background."""
        from kbterm.errors import KbtermError

        self.call_from_thread(self._set_model_state, "loading models…")
        try:
            searcher = self.searcher
            searcher.refresh()
            embedder = searcher.embedder
            embedder.load()
            runtime = embedder.runtime
            where = f"{runtime.device} {runtime.dtype}" if runtime is not None else ""
            # torch, transformers and LanceDB leave millions of long-lived objects, and each
            # full garbage collection walked them all: 100-300 ms pauses in the middle of
            # showing results (BENCHMARKS.md).  Frozen, the collector skips them.
            gc.freeze()
            self.call_from_thread(self._set_model_state,
                                  f"{os.path.basename(embedder.spec.model)} ({where})")
        except KbtermError as exc:
            self.call_from_thread(self._set_model_state, "embedder unavailable: keyword search")
            self.call_from_thread(self._set_error, str(exc))

    @work(thread=True, group="recount", exclusive=True, exit_on_error=False)
    def _recount(self) -> None:
        """Catch the searcher up with the index (off the UI thread), for the status bar."""
        from kbterm.errors import KbtermError

        try:
            self.searcher.refresh()
        except KbtermError:
            return
        self.call_from_thread(self._render_status)

    def _set_model_state(self, text: str) -> None:
        self.model_state = text
        self._render_status()

    def _set_error(self, text: str) -> None:
        self.last_error = text
        self._render_status()

    # ------------------------------------------------------------------ search

    @on(Input.Submitted, "#query")
    def _query_submitted(self, event: Input.Submitted) -> None:
        self.action_answer()

    @on(Input.Changed, "#query")
    @on(Input.Changed, "#image")
    @on(Input.Changed, "#filters Input")
    @on(Select.Changed, "#f-type")
    def _query_changed(self, event: Input.Changed | Select.Changed) -> None:
        """Any change restarts the debounce and cancels the running search."""
        self.seq += 1
        if self._search_cancel is not None:
            self._search_cancel.set()  # the reranker stops before its next batch
        if self._answer_pending is not None:
            self._answer_pending = None
            self.query_one("#answer", Markdown).update(
                "*The query changed before its results were reranked: press Enter to answer "
                "it.*")
        if self._timer is not None:
            self._timer.stop()
        seq = self.seq
        text = self.query_one("#query", Input).value
        delay = self.config.tui.debounce_ms / 1000
        if delay > 0:
            self._timer = self.set_timer(delay, lambda: self._start_search(seq, text))
        else:
            self._timer = None
            self.call_later(self._start_search, seq, text)

    @property
    def image_query(self) -> str | None:
        """The image to search by, when the image box holds an existing image file."""
        value = os.path.expanduser(self.query_one("#image", Input).value.strip())
        if value and os.path.isfile(value) and os.path.splitext(value)[1].lower() in IMAGE_SUFFIXES:
            return value
        return None

    def action_image_query(self) -> None:
        box = self.query_one("#image", Input)
        box.toggle_class("shown")
        if box.has_class("shown"):
            box.focus()
        else:
            box.value = ""
            self.query_one("#query", Input).focus()

    def action_filters(self) -> None:
        """Show the filter bar (and focus it), or hide it; hidden filters still apply."""
        bar = self.query_one("#filters")
        bar.toggle_class("shown")
        if bar.has_class("shown"):
            self.query_one("#f-type", Select).focus()
        else:
            self.query_one("#query", Input).focus()

    def current_filters(self) -> "tuple[Filters, list[str]]":
        """The filters the bar holds, and what is wrong with them (those parts are ignored
        until fixed, and their box is marked)."""
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
        self.filters_text = " · ".join(described)
        return filters, problems

    async def _start_search(self, seq: int, text: str) -> None:
        if seq != self.seq:
            return
        image = self.image_query
        filters, problems = self.current_filters()
        if problems:
            await self._show_results(seq, None, reranked=False, note=problems[0])
            return
        if not text.strip() and image is None:
            await self._show_results(seq, None, reranked=False)
            return
        if self.index_state == "empty":
            self._update_index_state()
            if self.index_state == "empty":
                return
        self._search_cancel = cancel = threading.Event()
        self._search(seq, text, image, filters, cancel)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _search(self, seq: int, text: str, image: str | None, filters: "Filters",
                cancel: threading.Event) -> None:
        from kbterm.errors import Cancelled, KbtermError

        try:
            k = self.config.tui.results
            results = self.searcher.retrieve(text, image, k=k, filters=filters)
            if seq != self.seq:
                return  # a newer keystroke: this one is stale
            fast = _copy_head(results, k)
            self.call_from_thread(self._show_results, seq, fast, False)
            if self.config.search.rerank:
                reranked = self.searcher.rerank(results, k=k, cancel=cancel)
                if seq != self.seq:
                    return
                self.call_from_thread(self._show_results, seq, reranked, True)
        except Cancelled:
            return  # a newer keystroke stopped it: that search shows its own results
        except KbtermError as exc:
            self.call_from_thread(self._search_failed, seq, str(exc))
        except Exception as exc:  # noqa: BLE001 - shown, never a traceback on screen
            self.call_from_thread(self._search_failed, seq,
                                  f"search failed: {type(exc).__name__}: {exc}")

    def _search_failed(self, seq: int, error: str) -> None:
        self._set_error(error)
        if seq == self.seq:
            self.final_seq = seq
            self._answer_if_pending(seq)

    def _answer_if_pending(self, seq: int) -> None:
        if self._answer_pending == seq:
            self._answer_pending = None
            self.action_answer()

    async def _show_results(self, seq: int, results: "Results | None", reranked: bool,
                            note: str = "") -> None:
        # One list change at a time: clearing and mounting are awaited, and a second change
        # interleaved with them would clear before the first list's items are mounted, leaving
        # both lists on screen.
        async with self._show_lock:
            await self._replace_results(seq, results, reranked, note)

    async def _replace_results(self, seq: int, results: "Results | None", reranked: bool,
                               note: str) -> None:
        if seq != self.seq:
            return  # never show a stale list
        view = self.query_one("#results", ListView)
        pane = self.query_one("#results-pane")
        selected = None
        if isinstance(view.highlighted_child, ResultItem):
            selected = view.highlighted_child.hit.id
        hits = results.hits if results is not None else []
        shown = [c for c in view.children if isinstance(c, ResultItem)]
        # The lines on screen show the new hits in place; only the difference is mounted or
        # removed, and an empty list is hidden, not cleared, so the next query's lines are
        # ready (mounting 20 lines costs 40-90 ms, updating them about 15).
        self.results, self.shown_seq = None, seq  # (on screen: in between, for now)
        if hits:
            query = results.query if results is not None else ""
            for item, hit in zip(shown, hits):
                item.show(hit, query, reranked)
            if len(shown) > len(hits):
                await view.remove_children(shown[len(hits):])
            elif len(hits) > len(shown):
                await view.extend([ResultItem(hit, query, reranked)
                                   for hit in hits[len(shown):]])
            if seq != self.seq:
                return  # (a newer list is waiting for the lock)
        pane.border_subtitle = self.filters_text
        self.results = results
        if results is None:
            self._message(note or "Type to search.")
            pane.border_title = ""
            self._preview(None)
            return
        if results.warnings:
            self._set_error(results.warnings[-1])
        if not hits:
            filtered = f"\n\nwith filters: {self.filters_text} (ctrl+f)" if self.filters_text \
                else ""
            self._message(f"No results for “{results.query}”.{filtered}")
            pane.border_title = ""
            self._preview(None)
            return
        if reranked:
            pane.border_title = f"{len(hits)} results, ★ reranked"
        elif self.config.search.rerank:
            pane.border_title = f"{len(hits)} results, reranking…"
        else:
            pane.border_title = f"{len(hits)} results"
        self._message("")
        index = next((n for n, hit in enumerate(hits) if hit.id == selected), 0)
        if view.index != index:
            view.index = index
        else:
            view.scroll_to_widget(view.children[index], animate=False)
        self._preview(hits[index])
        self._render_status()
        if reranked or not self.config.search.rerank:
            self.final_seq = seq
            self._answer_if_pending(seq)

    # ------------------------------------------------------------------ preview

    @on(ListView.Selected, "#results")
    def _selected(self, event: ListView.Selected) -> None:
        self.action_open_source()

    @on(ListView.Highlighted, "#results")
    def _highlighted(self, event: ListView.Highlighted) -> None:
        if isinstance(event.item, ResultItem):
            self._preview(event.item.hit)

    def _preview(self, hit: "Hit | None") -> None:
        """Show ``hit``: a text hit as its source lines around the match (the chunk's lines
        bright, the query's words highlighted; a PDF's page image below); a visual hit as its
        image (the photo, the rendered page, the video's keyframe) with its time range."""
        title = self.query_one("#preview-title", Static)
        scroll = self.query_one("#preview-scroll", VerticalScroll)
        text = self.query_one("#preview-text", Static)
        query = self.results.query if self.results is not None else ""
        key = (hit.id, query) if hit is not None else None
        self.previewed = hit
        if key is not None and key == self._preview_key:
            return  # already shown (the list re-sorted, or its selection was set again)
        self._preview_key = key
        for old in self.query(".preview-image"):  # (removal is deferred: no ids to clash)
            old.remove()
        if hit is None:
            title.update("")
            text.update("")
            return
        head = Text(hit.citation(), style="bold", no_wrap=True, overflow="ellipsis")
        head.append(f"\n{display_path(hit.path)}", style="dim")
        title.update(head)
        scroll.scroll_home(animate=False)
        if hit.modality == "text":
            context = self._searcher.context(hit) if self._searcher is not None else None
            text.update(render_context(context, query) if context is not None
                        else highlight(hit.content, query))
            if hit.file_type == "pdf" and hit.page is not None \
                    and self.config.tui.images != "none":
                self._page_image(hit)
            return
        # (A visual hit's snippet is its title, or its file's name, which the title shows.)
        caption = hit.title if hit.title and hit.title != os.path.basename(hit.path) else ""
        text.update(Text(caption, style="dim"))
        if hit.image_path and Path(hit.image_path).is_file():
            self._mount_image(hit, hit.image_path, before=True)

    @while_mounted
    def _mount_image(self, hit: "Hit", image_path: str, before: bool) -> None:
        if self.previewed is None or self.previewed.id != hit.id:
            return  # the selection moved on while the page rendered
        widget = image_widget(self.config.tui.images)
        if widget is None:
            return
        scroll = self.query_one("#preview-scroll", VerticalScroll)
        text = self.query_one("#preview-text", Static)
        image = widget(image_path, classes="preview-image")
        if before:
            scroll.mount(image, before=text)
        else:
            scroll.mount(image, after=text)

    @work(thread=True, group="page", exclusive=True, exit_on_error=False)
    def _page_image(self, hit: "Hit") -> None:
        """Render (or take from the cache) the PDF page of a text hit, off the UI thread."""
        path = self.searcher.image_for(hit)
        if path is not None:
            self.call_from_thread(self._mount_image, hit, path, False)

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.KEYS))

    def action_focus_query(self) -> None:
        if self._answer_pending is not None:  # Escape: do not answer once reranked either
            self._answer_pending = None
            self.query_one("#answer", Markdown).update("*stopped*")
            return
        if self._answer_cancel is not None and not self._answer_cancel.is_set():
            self._answer_cancel.set()  # Escape stops the answer first; what is written stays
            return
        self.query_one("#query", Input).focus()

    # ------------------------------------------------------------------ answers

    @property
    def asker(self) -> "Asker":
        if self._asker is None:
            from kbterm.answer import Asker

            self._asker = Asker(self.config, searcher=self.searcher)
        return self._asker

    def action_answer(self) -> None:
        from kbterm.answer import NoEvidence

        if self.results is None or not self.results.hits:
            self.notify("search first: the answer is written from the results")
            return
        if self._answer_cancel is not None:
            self._answer_cancel.set()
        if self.final_seq != self.shown_seq:
            # Still reranking: the evidence is chosen in the reranker's order, and only what it
            # finds relevant (ask.min_rerank_score) is used, so the answer waits for it.
            self._answer_pending = self.shown_seq
            self.answer = None
            self.query_one("#answer-pane").add_class("shown")
            self.query_one("#answer", Markdown).update("*waiting for the reranker…*")
            return
        try:
            answer = self.asker.prepare_from(self.results)
        except NoEvidence as exc:
            self.notify(str(exc), severity="warning")
            return
        self.answer = answer
        self._answer_cancel = cancel = threading.Event()
        self.query_one("#answer-pane").add_class("shown")
        self.query_one("#answer", Markdown).update("*thinking…*")
        self._generate(answer, cancel)

    @work(thread=True, group="answer", exit_on_error=False)
    def _generate(self, answer: "Answer", cancel: threading.Event) -> None:
        from kbterm.errors import KbtermError

        last = 0.0
        try:
            for _piece in self.asker.stream(answer, cancel=cancel):
                now = time.monotonic()
                if now - last > 0.05:  # repaint at most 20 times a second
                    last = now
                    self.call_from_thread(self._render_answer, answer, False)
        except KbtermError as exc:  # e.g. no answer model: said in the pane, with the sources
            answer.warnings.append(str(exc))
            self.call_from_thread(self._set_error, str(exc))
        except Exception as exc:  # noqa: BLE001 - shown, never a traceback on screen
            answer.warnings.append(f"answer failed: {type(exc).__name__}: {exc}")
            self.call_from_thread(self._set_error, answer.warnings[-1])
        finally:
            # (Asker.stream recorded whether the user stopped it; the event is set now either
            # way, which marks the answer as finished for Escape.)
            self.call_from_thread(self._render_answer, answer, True)
            cancel.set()

    @while_mounted
    def _render_answer(self, answer: "Answer", done: bool) -> None:
        if answer is not self.answer:
            return  # an older answer's last tokens
        body = CITATION.sub(lambda m: f"[[{m.group(1)}]](cite:{m.group(1)})",
                            answer.text or "")
        if done:
            if answer.cancelled:
                body += "\n\n*stopped*"
            failed = not answer.text and answer.warnings
            if failed:
                body += "**No answer:** " + _markdown_escape(answer.warnings[-1])
            heading = "Most relevant sources" if failed else "Sources"
            body += f"\n\n**{heading}**\n\n" + "\n".join(
                f"- [[{n}]](cite:{n}) {_markdown_escape(hit.citation())}"
                for n, hit in answer.sources())
        self.query_one("#answer", Markdown).update(body or "…")

    @on(Markdown.LinkClicked, "#answer")
    def _link(self, event: Markdown.LinkClicked) -> None:
        if event.href.startswith("cite:"):
            event.prevent_default()
            self.show_citation(int(event.href.split(":", 1)[1]))

    def show_citation(self, n: int) -> None:
        """Move the preview (and the results list) to evidence ``n`` of the answer."""
        if self.answer is None or not 1 <= n <= len(self.answer.evidence):
            return
        hit = self.answer.evidence[n - 1]
        for index, item in enumerate(self.shown_items()):
            if item.hit.id == hit.id:
                self.query_one("#results", ListView).index = index
        self._preview(hit)

    def action_focus_results(self) -> None:
        if self.shown_items():
            self.query_one("#results", ListView).focus()

    def action_refresh_status(self) -> None:
        self._render_status()

    def action_open_source(self) -> None:
        view = self.query_one("#results", ListView)
        item = view.highlighted_child
        if not isinstance(item, ResultItem) or item not in self.shown_items():
            return
        command = open_command(item.hit)
        if command is None:
            self.notify("no viewer found (set $EDITOR, or install xdg-open)", severity="warning")
            return
        try:
            with self.suspend():
                subprocess.run(command, check=False)
        except Exception:  # noqa: BLE001 - suspend is not possible (e.g. in tests): detach
            subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)


def render_context(context: "Context", query: str) -> Table:
    """Source lines beside their numbers (a wrapped line stays right of the gutter): the hit's
    lines bright, the rest dim, the query's words highlighted."""
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", no_wrap=True)
    table.add_column(ratio=1, overflow="fold")
    for offset, line in enumerate(context.lines):
        number = context.first_line + offset
        inside = context.hit_start <= number <= context.hit_end
        body = highlight(line, query)
        if not inside:
            body.stylize("dim")
        table.add_row(Text(str(number), style="bold green" if inside else "dim"), body)
    return table


def _markdown_escape(text: str) -> str:
    """``text`` shown as it is in a Markdown pane (file names hold ``_`` and ``*``)."""
    return re.sub(r"([\\`*_{}\[\]<>#|~])", r"\\\1", text)


def _copy_head(results: "Results", k: int) -> "Results":
    """The first ``k`` hits of ``results`` as their own list (reranking reorders the original)."""
    from dataclasses import replace

    return replace(results, hits=[replace(h) for h in results.hits[:k]],
                   timings_ms=dict(results.timings_ms), warnings=list(results.warnings))


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


def image_widget(mode: str) -> Any:
    """The textual-image widget class for ``tui.images`` (None: no images)."""
    if mode == "none":
        return None
    import textual_image.widget

    return getattr(textual_image.widget, IMAGE_WIDGETS[mode])


def run(config: "Config") -> None:
    """Open the app (``kbterm`` with no arguments)."""
    started = time.perf_counter()
    # textual-image asks the terminal what it can draw (and its cell size) when it is first
    # imported, which is only possible before the app takes over the terminal.
    image_widget(config.tui.images)
    app = KbtermApp(config)
    app.started_at = started  # type: ignore[attr-defined]
    app.run()
