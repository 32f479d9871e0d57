"""The kbterm TUI: search as you type, reranked results, a preview of each source.

The app is a view over the headless core: :class:`~kbterm.retrieval.Searcher` does the work in
thread workers, which report with messages (:mod:`kbterm.tui.messages`); widgets
(:mod:`kbterm.tui.widgets`) only display what they are given and post messages up.  The first
frame needs no model and no index read; models warm in the background with an indicator in
the status bar.

Search as you type: a keystroke restarts a 200 ms debounce; when it fires, the query gets a
sequence number and a worker retrieves fused vector + keyword hits (shown at once), then
reranks them (the list re-sorts; reranked hits are marked).  A result whose sequence number is
not the latest is dropped, so a stale list never replaces a newer one.  A new query (or new
filters) also stops and hides the answer written for the old one.
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any, Sequence

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.filter import LineFilter
from textual.widgets import Input, Select
from textual.worker import Worker, WorkerState

from kbterm.filetypes import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from kbterm.paths import display_path
from kbterm.textsafe import one_line, visible
from kbterm.tui import jobs, messages
from kbterm.tui.controls import DropControls
from kbterm.tui.open import open_command
from kbterm.tui.suggest import PathSuggester
from kbterm.tui.widgets.answer import STOPPED, AnswerPane
from kbterm.tui.widgets.filters import FilterBar
from kbterm.tui.widgets.help import HelpScreen
from kbterm.tui.widgets.preview import PreviewPane, image_widget
from kbterm.tui.widgets.results import ResultItem, ResultsPane
from kbterm.tui.widgets.search import PLACEHOLDER, SearchBox
from kbterm.tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from kbterm.answer import Answer, Asker
    from kbterm.models.inputs import Video
    from kbterm.config import Config
    from kbterm.retrieval import Filters, Hit, Results, Searcher

__all__ = ["KbtermApp", "ResultItem", "make_app", "open_command", "run"]

STATUS_SECONDS = 2.0


def while_mounted(method: Any) -> Any:
    """Skip ``method`` once the app is tearing its screen down (a timer, or a worker's
    message, may still arrive while kbterm quits)."""
    if asyncio.iscoroutinefunction(method):
        @functools.wraps(method)
        async def skipping(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await method(self, *args, **kwargs)
            except NoMatches:  # the widgets it updates (fixed ids) are already gone
                return None
        return skipping

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except NoMatches:
            return None
    return wrapper


class KbtermApp(App[None]):
    """``kbterm`` with no arguments."""

    TITLE = "kbterm"
    CSS_PATH = "kbterm.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-wide"), (120, "-very-wide")]
    BINDINGS = [
        # A search tool quits on ctrl+c (fzf, lazygit); q stays text for the search box.
        Binding("ctrl+c", "quit", "Quit", priority=True, show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "help", "Keys", priority=True),
        # (A box takes ? as text: the search box only once it holds a query, SearchBox.)
        Binding("question_mark", "help", "Keys", key_display="?", priority=True),
        Binding("escape", "focus_query", "Search box", show=False),
        Binding("down", "focus_results", "Results", show=False),
        Binding("ctrl+o", "open_source", "Open source"),
        Binding("ctrl+g", "answer", "Answer", priority=True),
        Binding("ctrl+t", "image_query", "Image query", priority=True),
        Binding("ctrl+f", "filters", "Filters", priority=True),
        Binding("ctrl+r", "refresh_status", "Refresh status", show=False),
    ]

    def __init__(self, config: "Config", *, searcher: "Searcher | None" = None,
                 asker: "Asker | None" = None, drop_controls: bool = True) -> None:
        super().__init__()
        self.config = config
        self._searcher = searcher
        self._asker = asker
        self._drop_controls = DropControls(enabled=drop_controls)
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
        self._timer: Any = None
        self.model_state = "models load on first search"
        self.last_error = ""
        self.index_state = ""  # "empty": nothing indexed (or tried) yet; "ready"
        self.failed_files = 0  # files the index could not read (kbterm status says why)
        self._idle = False  # the results box shows the idle message

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield SearchBox(placeholder=PLACEHOLDER, id="query")
        yield Input(placeholder="Image or video to search by: a path (→ completes; empty: none)",
                    id="image", suggester=PathSuggester())
        yield FilterBar(id="filters")
        with Horizontal(id="main"):
            yield ResultsPane(id="results-pane")
            with Vertical(id="preview-pane"):
                yield PreviewPane(images=self.config.tui.images, id="preview")
                yield AnswerPane(id="answer-pane")
        yield StatusBar(id="status")

    def get_line_filters(self) -> Sequence[LineFilter]:
        return [*super().get_line_filters(), self._drop_controls]

    def on_mount(self) -> None:
        self.query_one("#query", Input).focus()
        self._update_index_state()
        self._render_status()
        self.set_interval(STATUS_SECONDS, self._render_status)
        self._show_idle()
        if self.index_state != "empty":
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

    @property
    def previewed(self) -> "Hit | None":
        """The hit in the preview pane."""
        return self.query_one(PreviewPane).hit

    def _update_index_state(self) -> None:
        """Whether anything was ever indexed here, from the folders alone (no LanceDB read):
        a ledger counts even when every file in it failed (:meth:`on_index_counted` reads
        it)."""
        from kbterm.store import Store

        store = Store(self.config.data_path)
        tables = store.path.is_dir() and any(p.suffix == ".lance" for p in store.path.iterdir())
        self.index_state = "ready" if store.exists or tables else "empty"

    def idle_message(self) -> str:
        """What the results box says with no query."""
        if self.index_state == "empty":
            return ("No index yet.\n\nAdd folders with  kbterm index ~/Documents\n"
                    "or list them under [library] in the config and run  kbterm watch --detach\n"
                    f"(data folder: {display_path(self.config.data_path)})")
        return "Type to search." + self._failures_note()

    def _failures_note(self) -> str:
        n = self.failed_files
        if not n:
            return ""
        files = f"{n:,} file{'s' if n != 1 else ''}"
        return f"\n\n{files} could not be indexed: kbterm status says why."

    def _show_idle(self) -> None:
        self.query_one(ResultsPane).show_message(self.idle_message())
        self._idle = True

    def shown_items(self) -> list[ResultItem]:
        """The result lines on screen (a hidden list keeps its lines for the next query)."""
        return self.query_one(ResultsPane).shown_items()

    @while_mounted
    def _render_status(self) -> None:
        from kbterm.watchstate import read_state

        status = self.query_one(StatusBar)
        searcher = self._searcher
        if searcher is not None and (searcher.chunk_count or self.failed_files):
            status.counts = (searcher.file_count, searcher.chunk_count, self.failed_files)
        watcher = read_state(self.config.data_path)
        if watcher is None:
            status.watch = ("not running",)
        else:
            state = watcher.state if watcher.running and watcher.responding else \
                "not responding" if watcher.running else "not running"
            status.watch = (watcher.summary(), state)
        if watcher is not None and searcher is not None:
            mark = (watcher.pid, watcher.last_batch_at)
            if mark != self._watcher_mark:  # the watcher changed the index: recount
                self._watcher_mark = mark
                self._recount()
        status.error = self.last_error

    def _set_model_state(self, *forms: str) -> None:
        self.model_state = forms[0]
        self.query_one(StatusBar).model = forms

    def _set_error(self, text: str) -> None:
        self.last_error = one_line(text)
        self.query_one(StatusBar).error = self.last_error

    def _notify(self, text: str, severity: str = "information") -> None:
        self.notify(visible(text), severity=severity, markup=False)  # type: ignore[arg-type]

    @work(thread=True, group="warm", exit_on_error=False)
    def _warm(self) -> None:
        """Read the index and load the embedder in the background."""
        jobs.warm(lambda: self.searcher, self.post_message)

    @work(thread=True, group="recount", exclusive=True, exit_on_error=False)
    def _recount(self) -> None:
        jobs.recount(self.searcher, self.post_message)

    @while_mounted
    def on_model_state(self, message: messages.ModelState) -> None:
        self._set_model_state(*message.forms)

    @while_mounted
    def on_error_shown(self, message: messages.ErrorShown) -> None:
        self._set_error(message.error)

    @while_mounted
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A background job that failed where it did not expect to (each job reports its
        own errors) says so in the status line, never silently."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self._set_error(f"{event.worker.name} failed: {type(error).__name__}: {error}")

    @while_mounted
    def on_index_counted(self, message: messages.IndexCounted) -> None:
        self.failed_files = message.failed
        if not message.files_known and not message.chunks:
            self.index_state = "empty"  # a ledger, but nothing was ever indexed or tried
        if self._idle:
            self._show_idle()
        self._render_status()

    # ------------------------------------------------------------------ search

    @on(Input.Submitted, "#query")
    async def _query_submitted(self, event: Input.Submitted) -> None:
        await self.action_answer()

    @on(Input.Changed, "#query")
    @on(Input.Changed, "#image")
    @on(Input.Changed, "#filters Input")
    @on(Select.Changed, "#f-type")
    async def _query_changed(self, event: Input.Changed | Select.Changed) -> None:
        """Any change restarts the debounce, cancels the running search, and stops and
        hides the answer to the old query."""
        self.seq += 1
        if self._search_cancel is not None:
            self._search_cancel.set()  # the reranker stops before its next batch
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
        await self._drop_answer()

    async def _drop_answer(self) -> None:
        self._answer_pending = None
        if self._answer_cancel is not None:
            self._answer_cancel.set()
        self.answer = None
        await self.query_one(AnswerPane).clear()

    @property
    def image_query(self) -> "str | Video | None":
        """The picture (its path) or the video (a whole clip, 1 frame a second, at most 64)
        to search by, when the query-by-file box holds an existing image or video file."""
        value = os.path.expanduser(self.query_one("#image", Input).value.strip())
        if not value or not os.path.isfile(value):
            return None
        suffix = os.path.splitext(value)[1].lower()
        if suffix in VIDEO_SUFFIXES:
            from kbterm.models.inputs import Video

            return Video(value)
        return value if suffix in IMAGE_SUFFIXES else None

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
        bar = self.query_one(FilterBar)
        bar.toggle_class("shown")
        if bar.has_class("shown"):
            self.query_one("#f-type", Select).focus()
        else:
            self.query_one("#query", Input).focus()

    @while_mounted
    async def _start_search(self, seq: int, text: str) -> None:
        if seq != self.seq:
            return
        image = self.image_query
        filters, problems, self.filters_text = self.query_one(FilterBar).read()
        if problems:
            await self.show_results(seq, None, reranked=False, note=problems[0])
            return
        if not text.strip() and image is None:
            await self.show_results(seq, None, reranked=False)
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
        jobs.search(self.searcher, seq, text, image, filters, k=self.config.tui.results,
                    rerank=bool(self.config.search.rerank), cancel=cancel,
                    latest=lambda: self.seq, post=self.post_message)

    @while_mounted
    async def on_search_done(self, message: messages.SearchDone) -> None:
        await self.show_results(message.seq, message.results, message.reranked)

    @while_mounted
    async def on_search_failed(self, message: messages.SearchFailed) -> None:
        self._set_error(message.error)
        if message.seq == self.seq:
            self.final_seq = message.seq
            await self._answer_if_pending(message.seq)

    async def _answer_if_pending(self, seq: int) -> None:
        if self._answer_pending == seq:
            self._answer_pending = None
            await self.action_answer()

    async def show_results(self, seq: int, results: "Results | None", reranked: bool,
                           note: str = "") -> None:
        """Show the list for query ``seq`` (None: no query; ``note`` says why), unless a
        newer query was typed meanwhile."""
        # One list change at a time: clearing and mounting are awaited, and a second change
        # interleaved with them would clear before the first list's items are mounted, leaving
        # both lists on screen.
        async with self._show_lock:
            await self._replace_results(seq, results, reranked, note)

    async def _replace_results(self, seq: int, results: "Results | None", reranked: bool,
                               note: str) -> None:
        if seq != self.seq:
            return  # never show a stale list
        pane = self.query_one(ResultsPane)
        lines = pane.list_view
        selected = pane.highlighted.id if pane.highlighted is not None else None
        hits = results.hits if results is not None else []
        # The lines on screen show the new hits in place; an empty list is hidden, not
        # cleared, so the next query's lines are ready.
        self.results, self.shown_seq = None, seq  # (on screen: in between, for now)
        if hits:
            await lines.show_hits(results, reranked)
            if seq != self.seq:
                return  # (a newer list is waiting for the lock)
        self.results = results
        self._idle = False
        if results is None:
            if note:
                pane.show_message(note)
            else:
                self._show_idle()
            pane.set_title("", self.filters_text)
            self._preview(None)
            return
        if results.warnings:
            self._set_error(results.warnings[-1])
        if not hits:
            filtered = f"\n\nwith filters: {self.filters_text} (ctrl+f)" if self.filters_text \
                else ""
            pane.show_message(f"No results for “{results.query}”.{filtered}"
                              f"{self._failures_note()}")
            pane.set_title("", self.filters_text)
            self._preview(None)
        else:
            if results.stage == "keywords":
                title = f"{len(hits)} keyword matches, embedding the query…"
            elif reranked and results.reranked < min(results.rerank_candidates, len(hits)):
                title = (f"{len(hits)} results, ★ {results.reranked} of "
                         f"{results.rerank_candidates} reranked (tui.rerank_budget_ms)")
            elif reranked:
                title = f"{len(hits)} results, ★ reranked"
            elif self.config.search.rerank:
                title = f"{len(hits)} results, reranking…"
            else:
                title = f"{len(hits)} results"
            pane.show_message("")
            pane.set_title(title, self.filters_text)
            self._preview(lines.select_after_change(seq, selected))
        self._render_status()
        if results.stage != "keywords" and (reranked or not self.config.search.rerank):
            self.final_seq = seq
            await self._answer_if_pending(seq)

    # ------------------------------------------------------------------ preview

    @on(ResultsPane.Highlighted)
    def _highlighted(self, event: ResultsPane.Highlighted) -> None:
        # The message may be stale: the list was filled again (its lines updated in place)
        # and the selection set since it was sent.  The preview follows the line selected now.
        current = self.query_one(ResultsPane).highlighted
        if current is not None and current.id == event.hit.id:
            self._preview(current)

    @on(ResultsPane.OpenRequested)
    def _open_requested(self, event: ResultsPane.OpenRequested) -> None:
        self.action_open_source()

    def _preview(self, hit: "Hit | None") -> None:
        """Show ``hit`` in the preview: a text hit with its source lines around it (and a PDF
        text hit's page, rendered off the UI thread); a visual hit as its image."""
        pane = self.query_one(PreviewPane)
        query = self.results.query if self.results is not None else ""
        if pane.shows(hit, query):
            pane.hit = hit
            return
        context = None
        if hit is not None and hit.modality == "text" and self._searcher is not None:
            context = self._searcher.context(hit)
        pane.show(hit, query, context)
        if hit is None or self.config.tui.images == "none":
            return
        if hit.modality != "text" and hit.image_path:
            self._picture(hit, before=True)
        elif hit.modality == "text" and hit.file_type == "pdf" and hit.page is not None:
            self._picture(hit, before=False)  # the page, under the text

    @work(thread=True, group="picture", exclusive=True, exit_on_error=False)
    def _picture(self, hit: "Hit", before: bool) -> None:
        jobs.picture(self.searcher, hit, before, self.post_message)

    @while_mounted
    def on_picture_loaded(self, message: messages.PictureLoaded) -> None:
        self.query_one(PreviewPane).add_image(message.hit, message.picture, message.before)

    # ------------------------------------------------------------------ actions

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
        else:
            self.push_screen(HelpScreen())

    async def action_focus_query(self) -> None:
        if self._answer_pending is not None:  # Escape: do not answer once reranked either
            self._answer_pending = None
            await self.query_one(AnswerPane).say("*stopped*", STOPPED)
            return
        if self._answer_cancel is not None and not self._answer_cancel.is_set():
            self._answer_cancel.set()  # Escape stops the answer first; what is written stays
            return
        self.query_one("#query", Input).focus()

    def action_focus_results(self) -> None:
        if self.shown_items():
            self.query_one("#results").focus()

    def action_refresh_status(self) -> None:
        self._render_status()

    def action_open_source(self) -> None:
        hit = self.query_one(ResultsPane).highlighted
        if hit is None:
            return
        command = open_command(hit)
        if command is None:
            self._notify("no viewer found (set $EDITOR, or install xdg-open)", "warning")
            return
        try:
            with self.suspend():
                subprocess.run(command, check=False)
        except Exception:  # noqa: BLE001 - suspend is not possible (e.g. in tests): detach
            subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)

    # ------------------------------------------------------------------ answers

    @property
    def asker(self) -> "Asker":
        if self._asker is None:
            from kbterm.answer import Asker

            self._asker = Asker(self.config, searcher=self.searcher)
        return self._asker

    async def action_answer(self) -> None:
        from kbterm.answer import NoEvidence

        if self.results is None or not self.results.hits:
            self._notify("search first: the answer is written from the results")
            return
        if self._answer_cancel is not None:
            self._answer_cancel.set()
        pane = self.query_one(AnswerPane)
        if self.final_seq != self.shown_seq:
            # Still reranking: the evidence is chosen in the reranker's order, and only what it
            # finds relevant (ask.min_rerank_score) is used, so the answer waits for it.
            self._answer_pending = self.shown_seq
            self.answer = None
            await pane.say("*waiting for the reranker…*")
            return
        try:
            answer = self.asker.prepare_from(self.results)
        except NoEvidence as exc:
            self._notify(str(exc), "warning")
            return
        self.answer = answer
        self._answer_cancel = cancel = threading.Event()
        await pane.begin(answer)
        self._generate(answer, cancel)

    @work(thread=True, group="answer", exit_on_error=False)
    def _generate(self, answer: "Answer", cancel: threading.Event) -> None:
        jobs.generate(self.asker, answer, cancel, self.post_message)

    @while_mounted
    async def on_answer_progress(self, message: messages.AnswerProgress) -> None:
        pane = self.query_one(AnswerPane)
        if message.done:
            await pane.finish(message.answer)
        else:
            await pane.progress(message.answer)

    @on(AnswerPane.CitationClicked)
    def _citation_clicked(self, event: AnswerPane.CitationClicked) -> None:
        self.show_citation(event.n)

    def show_citation(self, n: int) -> None:
        """Move the preview (and the results list) to evidence ``n`` of the answer."""
        if self.answer is None or not 1 <= n <= len(self.answer.evidence):
            return
        hit = self.answer.evidence[n - 1]
        self.query_one(ResultsPane).list_view.select_hit(hit.id)
        self._preview(hit)


def make_app(config: "Config", **kwargs: Any) -> KbtermApp:
    """The app for ``config`` (``searcher``, ``asker``: ready ones, as tests pass)."""
    return KbtermApp(config, **kwargs)


def run(config: "Config") -> None:
    """Open the app (``kbterm`` with no arguments)."""
    started = time.perf_counter()
    # textual-image asks the terminal what it can draw (and its cell size) when it is first
    # imported, which is only possible before the app takes over the terminal.
    image_widget(config.tui.images)
    app = make_app(config)
    app.started_at = started  # type: ignore[attr-defined]
    app.run()
