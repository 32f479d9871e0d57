"""The TUI driven by Textual's Pilot, over the real headless core and the tiny model."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from dataclasses import replace

import pytest

from indexing_helpers import make_config, run_index
from kbterm.retrieval import Filters, Searcher

pytest.importorskip("textual")

from kbterm.tui.app import KbtermApp, ResultItem  # noqa: E402


OLD = time.mktime((2020, 6, 1, 12, 0, 0, 0, 0, -1))


@pytest.fixture(autouse=True)
def _explicit_data_dir(monkeypatch):
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, corpus, index_model_dir, index_embedder):
    root = tmp_path_factory.mktemp("tui")
    folder = root / "library"
    folder.mkdir()
    (folder / "tides.md").write_text("# Tides\n\nSpring tides follow the new moon.\n")
    (folder / "xylo.txt").write_text("A xylophonic melody drifted over the harbour.\n")
    (folder / "rigging").mkdir()
    rope = folder / "rigging" / "rope.md"
    rope.write_text("# Rigging\n\nHemp rope swells when wet.\n")
    os.utime(rope, (OLD, OLD))  # for the date filter
    shutil.copy(corpus / "images" / "beach.jpeg", folder / "beach.jpeg")
    shutil.copy(corpus / "pdf" / "small-table.pdf", folder / "table.pdf")
    shutil.copy(corpus / "video" / "example.mp4", folder / "clip.mp4")
    config = make_config(index_model_dir, root / "data", [folder])
    run_index(config, embedder=index_embedder)
    return config


async def settle(pilot, app, predicate, timeout: float = 30.0, what: str = "") -> None:
    for _ in range(int(timeout / 0.05)):
        await pilot.pause(0.05)
        if predicate():
            return
    raise AssertionError(f"timed out waiting for {what or predicate}")


def items(app) -> list[ResultItem]:
    return app.shown_items()


def shown_text(widget) -> str:
    """What ``widget`` draws, as text."""
    from textual.geometry import Region

    lines = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    return "\n".join(line.text.rstrip() for line in lines).strip()


def showing(app, query: str, reranked: bool = False) -> bool:
    """The list on screen is for ``query`` (not a list shown while it was being typed)."""
    shown = items(app)
    return (app.results is not None and app.results.query == query and bool(shown)
            and all(it.query == query for it in shown)
            and (not reranked or any(it.reranked for it in shown)))


def test_type_then_results_then_reranked_with_preview(indexed, index_embedder, reranker):
    searcher = Searcher(indexed, embedder=index_embedder, reranker=reranker)

    async def scenario() -> None:
        app = KbtermApp(indexed, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*"xylophonic")
            await settle(pilot, app, lambda: showing(app, "xylophonic", reranked=True))
            shown = [it.hit for it in items(app)]
            assert "reranked" in app.query_one("#results-pane").border_title
            assert [h.rank for h in shown] == list(range(1, len(shown) + 1))
            head = [h.rerank_score for h in shown if h.rerank_score is not None]
            assert len(head) == len(shown) and head == sorted(head, reverse=True)
            xylo = next(n for n, h in enumerate(shown) if h.path.endswith("xylo.txt"))
            assert shown[xylo].keyword_score is not None
            app.query_one("#results").index = xylo
            await pilot.pause(0.2)
            # The source's lines, with a line-number gutter.
            assert " ".join(shown_text(app.query_one("#preview-text")).split()) == \
                "1 A xylophonic melody drifted over the harbour."
            title = str(app.query_one("#preview-title").render())
            assert "xylo.txt" in title
            assert not app.query(".preview-image")
            # A PDF text hit: its text, and the page rendered below it.
            pdf = next(n for n, h in enumerate(shown)
                       if h.file_type == "pdf" and h.modality == "text")
            app.query_one("#results").index = pdf
            await settle(pilot, app, lambda: bool(app.query(".preview-image")), what="page")
            scroll = list(app.query_one("#preview-scroll").children)
            assert scroll.index(app.query_one("#preview-text")) < scroll.index(
                app.query_one(".preview-image"))
            assert "page 1" in str(app.query_one("#preview-title").render())
            # A video hit: its keyframe, and the time range in the title.
            video = next(n for n, h in enumerate(shown) if h.modality == "video")
            app.query_one("#results").index = video
            await settle(pilot, app, lambda: app.previewed is shown[video]
                         and bool(app.query(".preview-image")), what="keyframe")
            assert shown[video].image_path and os.path.isfile(shown[video].image_path)
            assert "clip.mp4 @ 00:0" in str(app.query_one("#preview-title").render())
            # Move to an image hit: the preview shows the image.
            index = next(n for n, it in enumerate(items(app)) if it.hit.modality == "image")
            app.query_one("#results").index = index
            await settle(pilot, app, lambda: bool(app.query(".preview-image")))
            status = str(app.query_one("#status").render())
            assert "chunks" in status and "watch:" in status

    asyncio.run(scenario())


class SlowSearcher(Searcher):
    """Makes one query slow, to check that its late result is never shown."""

    def __init__(self, *args, slow: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.slow = slow
        self.release = threading.Event()
        self.slow_done = threading.Event()

    def retrieve(self, text: str = "", *args, **kwargs):
        results = super().retrieve(text, *args, **kwargs)
        if text == self.slow:
            self.release.wait(30)
            self.slow_done.set()
        return results


def test_stale_results_are_never_shown(indexed, index_embedder, reranker):
    searcher = SlowSearcher(indexed, embedder=index_embedder, reranker=reranker, slow="rope")

    async def scenario() -> None:
        app = KbtermApp(indexed, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*"rope")
            await pilot.pause(0.5)  # the slow search for "rope" is running
            await pilot.press("backspace", "backspace", "backspace", "backspace",
                              *"tides")
            await settle(pilot, app, lambda: app.results is not None
                         and app.results.query == "tides")
            searcher.release.set()  # now the stale "rope" results arrive
            await settle(pilot, app, searcher.slow_done.is_set)
            await pilot.pause(1.0)
            assert app.results.query == "tides"
            assert app.shown_seq == app.seq
            # Whatever delivers a late list (a worker textual did not stop), the app drops it.
            late = searcher.retrieve("rope", k=5)
            await app._show_results(app.seq - 1, late, False)
            assert app.results.query == "tides"
            assert all("rope" not in it.query for it in items(app))

    asyncio.run(scenario())


def test_empty_index_shows_how_to_add_folders(tmp_path, index_model_dir):
    config = make_config(index_model_dir, tmp_path / "data", [])

    async def scenario() -> None:
        app = KbtermApp(config)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            message = str(app.query_one("#message").render())
            assert "No index yet" in message and "kbterm index" in message
            await pilot.press(*"anything")
            await pilot.pause(0.5)
            assert not items(app)

    asyncio.run(scenario())


def test_missing_model_falls_back_to_keywords(indexed, tmp_path):
    from dataclasses import replace

    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder

    broken = Embedder(ModelSpec("embedder", str(tmp_path / "no-model"), device="cpu"))
    config = replace(indexed, search=replace(indexed.search, rerank=0))
    searcher = Searcher(config, embedder=broken)

    async def scenario() -> None:
        app = KbtermApp(config, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, app, lambda: "unavailable" in app.model_state)
            await pilot.press(*"xylophonic")
            await settle(pilot, app, lambda: showing(app, "xylophonic"))
            assert items(app)[0].hit.path.endswith("xylo.txt")
            status = str(app.query_one("#status").render())
            assert "keyword" in status and "not found" in status
            app._set_error("[Errno 13] Permission denied: '/x/[draft].md'")  # not markup
            await pilot.pause(0.1)
            assert "[Errno 13]" in str(app.query_one("#status").render())

    asyncio.run(scenario())


def test_missing_reranker_keeps_the_fused_list_and_says_why(indexed, index_embedder,
                                                            tmp_path):
    from kbterm.models.base import ModelSpec
    from kbterm.models.reranker import Reranker

    broken = Reranker(ModelSpec("reranker", str(tmp_path / "no-reranker"), device="cpu"))
    searcher = Searcher(indexed, embedder=index_embedder, reranker=broken)

    async def scenario() -> None:
        app = KbtermApp(indexed, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*"tides")
            await settle(pilot, app, lambda: "reranker unavailable" in app.last_error,
                         what="the reranker's error")
            assert showing(app, "tides") and not any(it.hit.rerank_score is not None
                                                     for it in items(app))
            assert "no-reranker" in str(app.query_one("#status").render())

    asyncio.run(scenario())


def test_open_command(monkeypatch, tmp_path):
    from kbterm.retrieval import Hit
    from kbterm.tui.app import open_command

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", "nvim -p")
    note = Hit(rank=1, id="a", path="/n/notes.md", file_type="markdown", modality="text",
               content="", snippet="", line_start=42, line_end=50)
    page = Hit(rank=1, id="b", path="/n/paper.pdf", file_type="pdf", modality="image",
               content="", snippet="", page=7)
    assert open_command(note) == ["nvim", "-p", "+42", "/n/notes.md"]
    monkeypatch.setenv("VISUAL", "'/opt/My Editor/edit' --wait")
    assert open_command(note) == ["/opt/My Editor/edit", "--wait", "+42", "/n/notes.md"]
    monkeypatch.delenv("VISUAL")
    assert open_command(page) == ["nvim", "-p", "/n/paper.pdf"]  # no viewer: the editor
    for name in ("zathura", "xdg-open"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    assert open_command(page) == ["zathura", "--page", "7", "/n/paper.pdf"]
    monkeypatch.delenv("EDITOR")
    assert open_command(note) == ["xdg-open", "/n/notes.md"]
    (bin_dir / "xdg-open").unlink()
    assert open_command(note) is None


def test_ctrl_o_opens_the_source_at_its_line(indexed, index_embedder, tmp_path, monkeypatch):
    record = tmp_path / "opened.txt"
    editor = tmp_path / "editor.sh"
    editor.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    editor.chmod(0o755)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(editor))

    async def scenario() -> None:
        app = KbtermApp(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*"xylophonic")
            await settle(pilot, app, lambda: showing(app, "xylophonic", reranked=True))
            xylo = next(n for n, it in enumerate(items(app)) if it.hit.path.endswith("xylo.txt"))
            path = items(app)[xylo].hit.path
            app.query_one("#results").index = xylo
            app.query_one("#results").focus()
            await pilot.press("ctrl+o")
            await settle(pilot, app, lambda: record.exists() and record.read_text().strip(),
                         what="the editor")
            assert record.read_text().split() == ["+1", path]
            record.unlink()
            await pilot.press("enter")  # in the list, Enter opens it too
            await settle(pilot, app, lambda: record.exists() and record.read_text().strip(),
                         what="the editor, again")
            assert record.read_text().split() == ["+1", path]

    asyncio.run(scenario())


def test_help_lists_the_keys(indexed, index_embedder):
    async def scenario() -> None:
        app = KbtermApp(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(80, 24)) as pilot:
            app.query_one("#results").focus()
            await pilot.press("question_mark")
            await pilot.pause(0.2)
            text = shown_text(app.screen.query_one("#help"))
            assert "ctrl+o" in text and "ctrl+f" in text and "[n] in the answer" in text
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert not app.screen.query("#help")

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def long_generator(tiny_model_dir):
    from kbterm.models.base import ModelSpec
    from kbterm.models.generator import Generator

    model = Generator(ModelSpec("generator", str(tiny_model_dir), device="cpu"),
                      max_new_tokens=5000)
    model.load()
    return model


def answer_app(indexed, index_embedder, reranker, generator):
    from dataclasses import replace

    from kbterm.answer import Asker

    config = replace(indexed, ask=replace(indexed.ask, min_rerank_score=0.0))
    searcher = Searcher(config, embedder=index_embedder, reranker=reranker)
    return KbtermApp(config, searcher=searcher,
                     asker=Asker(config, searcher=searcher, generator=generator))


def test_answer_streams_with_sources_and_citations_move_the_preview(
        indexed, index_embedder, reranker, generator):
    async def scenario() -> None:
        app = answer_app(indexed, index_embedder, reranker, generator)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press(*"spring tides")
            await settle(pilot, app, lambda: showing(app, "spring tides", reranked=True))
            await pilot.press("enter")
            await settle(pilot, app, lambda: app._answer_cancel is not None
                         and app._answer_cancel.is_set())
            answer = app.answer
            assert answer.text and not answer.cancelled
            shown = app.query_one("#answer").source
            assert "**Sources**" in shown and "(cite:1)" in shown
            n = len(answer.evidence)
            app.show_citation(n)  # what clicking [n] does
            await pilot.pause(0.2)
            title = str(app.query_one("#preview-title").render())
            assert answer.evidence[n - 1].citation() in title

    asyncio.run(scenario())


def test_escape_cancels_the_answer_and_keeps_what_was_written(
        indexed, index_embedder, reranker, long_generator):
    async def scenario() -> None:
        app = answer_app(indexed, index_embedder, reranker, long_generator)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press(*"rope")
            await settle(pilot, app, lambda: showing(app, "rope", reranked=True))
            app.query_one("#results").focus()
            await pilot.press("ctrl+g")
            await settle(pilot, app, lambda: app.answer is not None and len(app.answer.text) > 0,
                         what="the first tokens")
            await pilot.press("escape")
            await settle(pilot, app, lambda: app._answer_cancel.is_set()
                         and "stopped" in app.query_one("#answer").source, what="stopped")
            assert app.answer.cancelled and app.answer.text
            await settle(pilot, app, lambda: long_generator.last_generated_tokens > 0)
            assert long_generator.last_generated_tokens < 5000

    asyncio.run(scenario())


def test_image_query_with_path_completion(indexed, index_embedder, corpus):
    from kbterm.tui.app import PathSuggester

    folder = corpus / "images"

    async def scenario() -> None:
        suggestion = await PathSuggester().get_suggestion(str(folder / "bea"))
        assert suggestion == str(folder / "beach.jpeg")
        assert await PathSuggester().get_suggestion(str(corpus / "ima")) == \
            str(corpus / "images") + "/"
        app = KbtermApp(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("ctrl+t")
            assert app.focused is app.query_one("#image")
            await pilot.press(*str(folder / "bea"), "right")  # → takes the completion
            await settle(pilot, app, lambda: app.query_one("#image").value
                         == str(folder / "beach.jpeg"), what="completion")
            await settle(pilot, app, lambda: app.results is not None and bool(items(app))
                         and app.results.image == str(folder / "beach.jpeg"),
                         what="image results")
            hits = [it.hit for it in items(app)]
            beach = next(h for h in hits if h.path.endswith("beach.jpeg"))
            assert beach.embedding_score is not None and beach.keyword_score is None
            assert app.results.image == str(folder / "beach.jpeg")

    asyncio.run(scenario())


def folder_of(config):
    return config.library.folders[0]


def test_filters_narrow_the_results(indexed, index_embedder):
    config = replace(indexed, search=replace(indexed.search, rerank=0))
    searcher = Searcher(config, embedder=index_embedder)
    folder = os.path.expanduser(folder_of(config))
    query = "tides rope"

    def expected(**filters) -> list[str]:
        return [h.id for h in searcher.retrieve(query, k=20, filters=Filters(**filters)).hits]

    async def scenario() -> None:
        app = KbtermApp(config, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*query)
            await settle(pilot, app, lambda: showing(app, query))
            everything = [it.hit.id for it in items(app)]
            assert everything == expected()
            assert {it.hit.file_type for it in items(app)} >= {"markdown", "text", "pdf"}

            await pilot.press("ctrl+f")
            assert app.focused is app.query_one("#f-type")
            app.query_one("#f-type").value = "markdown"
            await settle(pilot, app, lambda: [it.hit.id for it in items(app)]
                         == expected(types=("markdown",)), what="type filter")
            assert {it.hit.file_type for it in items(app)} == {"markdown"}
            # (The lines were updated in place: each shows its own hit.)
            for n, item in enumerate(items(app), start=1):
                title = str(item.query_one(".hit-title").render())
                assert item.hit.rank == n and title.split()[0] == str(n)
                assert item.hit.citation() in title
            assert app.query_one("#results-pane").border_subtitle == "type markdown"

            # A folder, completed like a path in a shell.
            await pilot.press("tab")
            assert app.focused is app.query_one("#f-folder")
            await pilot.press(*os.path.join(folder, "rig"), "right")
            await settle(pilot, app, lambda: [it.hit.path for it in items(app)]
                         == [os.path.join(folder, "rigging", "rope.md")], what="folder filter")
            assert app.query_one("#f-folder").value == os.path.join(folder, "rigging") + "/"

            # Dates: rope.md is from 2020, the rest from today.
            app.query_one("#f-type").clear()
            app.query_one("#f-folder").value = ""
            app.query_one("#f-before").focus()
            await pilot.press(*"2021-01-01")
            await settle(pilot, app, lambda: {it.hit.path for it in items(app)}
                         == {os.path.join(folder, "rigging", "rope.md")}, what="before")
            app.query_one("#f-before").value = ""
            app.query_one("#f-after").value = "7d"
            await settle(pilot, app, lambda: [it.hit.id for it in items(app)]
                         == expected(modified_after=time.time() - 7 * 86400), what="after")
            assert all(not it.hit.path.endswith("rope.md") for it in items(app))

            # A date that is not one: said, marked, and nothing searched until fixed.
            app.query_one("#f-after").value = "yesterday"
            await settle(pilot, app, lambda: not items(app), what="invalid date")
            assert "not a date" in str(app.query_one("#message").render())
            assert app.query_one("#f-after").has_class("-invalid")
            app.query_one("#f-after").value = ""
            await settle(pilot, app, lambda: [it.hit.id for it in items(app)] == everything,
                         what="filters cleared")
            assert not app.query_one("#f-after").has_class("-invalid")
            assert not app.query_one("#results-pane").border_subtitle

            # Filters that leave nothing: said, with the filters.
            app.query_one("#f-after").value = "2999-01-01"
            await settle(pilot, app, lambda: "No results" in str(
                app.query_one("#message").render()), what="no results")
            assert "after 2999-01-01" in str(app.query_one("#message").render())
            # Hidden, the filters still apply (and the list says so).
            await pilot.press("ctrl+f")
            assert not app.query_one("#filters").display
            assert app.focused is app.query_one("#query")

    asyncio.run(scenario())


def test_layout_at_80x24_and_on_resize(indexed, index_embedder):
    async def scenario() -> None:
        app = KbtermApp(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press(*"tides")
            await settle(pilot, app, lambda: showing(app, "tides"))

            def region(selector):
                return app.query_one(selector).region

            def fits() -> None:
                screen = app.screen.region
                for selector in ("#query", "#results-pane", "#preview-pane", "#status"):
                    assert region(selector).area and screen.contains_region(region(selector))
                assert region("#status").bottom == screen.bottom
                for item in items(app)[:3]:  # a head line each, never wrapped
                    assert item.query_one(".hit-title").region.height == 1

            fits()
            results, preview = region("#results-pane"), region("#preview-pane")
            assert preview.x >= results.right and results.height >= 18  # side by side
            first = items(app)[0]
            # 80 columns: one score per hit, so the citation keeps its room.
            assert first.query_one(".hit-score").display
            assert not first.query_one(".hit-scores").display
            assert first.query_one(".hit-title").region.width >= 30

            await pilot.press("ctrl+f")
            await pilot.pause(0.2)
            fits()
            assert region("#filters").height == 1 and region("#results-pane").height >= 17

            await pilot.resize_terminal(60, 30)  # narrow: the preview goes below
            await pilot.pause(0.3)
            fits()
            results, preview = region("#results-pane"), region("#preview-pane")
            assert preview.y >= results.bottom and preview.width == app.screen.region.width
            assert results.height >= 8 and preview.height >= 8

            await pilot.resize_terminal(130, 40)  # wide: side by side, both scores
            await pilot.pause(0.3)
            fits()
            results, preview = region("#results-pane"), region("#preview-pane")
            assert preview.x >= results.right
            first = items(app)[0]
            assert first.query_one(".hit-scores").display
            assert not first.query_one(".hit-score").display
            assert "cos " in str(first.query_one(".hit-scores").render())

            await pilot.resize_terminal(80, 24)
            await pilot.pause(0.3)
            fits()

    asyncio.run(scenario())


def test_a_new_keystroke_stops_the_running_rerank(indexed, index_embedder, tiny_model_dir):
    from kbterm.models.base import ModelSpec
    from kbterm.models.reranker import Reranker

    class Blocking(Reranker):
        """Holds its first forward pass until released; logs the query of every pass."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.entered, self.release = threading.Event(), threading.Event()
            self.passes: list[str] = []
            self.query = ""

        def score(self, query, documents, instruction=None, *, cancel=None):
            self.query = str(query)
            return super().score(query, documents, instruction, cancel=cancel)

        def _run(self, inputs, **kwargs):
            self.passes.append(self.query)
            self.entered.set()
            self.release.wait(30)
            return super()._run(inputs, **kwargs)

    reranker = Blocking(ModelSpec("reranker", str(tiny_model_dir), device="cpu"),
                        batch_tokens=1)  # one candidate per forward pass
    reranker.share_prefix = False
    searcher = Searcher(indexed, embedder=index_embedder, reranker=reranker)

    async def scenario() -> None:
        app = KbtermApp(indexed, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*"rope")
            await settle(pilot, app, reranker.entered.is_set, what="rerank started")
            running = app._search_cancel
            first_query = reranker.query
            assert not running.is_set()
            await pilot.press("s")  # "ropes"
            assert running.is_set()  # the keystroke itself cancels
            reranker.release.set()
            await settle(pilot, app, lambda: app.results is not None
                         and app.results.query == "ropes" and app.results.reranked,
                         what="the new query reranked")
            assert reranker.passes.count(first_query) == 1  # stopped after the pass it was in
            assert reranker.passes.count(reranker.query) == len(items(app))
            assert all(it.query == "ropes" for it in items(app))

    asyncio.run(scenario())


def test_display_path_uses_a_tilde(monkeypatch, tmp_path):
    from kbterm.paths import display_path

    monkeypatch.setenv("HOME", str(tmp_path / "ada"))
    assert display_path(tmp_path / "ada" / "notes" / "a.md") == "~/notes/a.md"
    assert display_path(str(tmp_path / "ada")) == "~"
    assert display_path(str(tmp_path / "adam" / "x")) == str(tmp_path / "adam" / "x")


def test_tui_settings_images_off_and_fewer_results(indexed, index_embedder):
    from kbterm.tui.app import image_widget

    assert image_widget("none") is None
    assert image_widget("halfcell").__name__ == "HalfcellImage"
    config = replace(indexed, tui=replace(indexed.tui, images="none", results=3, debounce_ms=0),
                     search=replace(indexed.search, rerank=0))

    async def scenario() -> None:
        app = KbtermApp(config, searcher=Searcher(config, embedder=index_embedder))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*"beach")
            await settle(pilot, app, lambda: showing(app, "beach"))
            assert len(items(app)) == 3
            for n, item in enumerate(items(app)):
                app.query_one("#results").index = n
                await pilot.pause(0.1)
                assert not app.query(".preview-image")

    asyncio.run(scenario())


def test_missing_answer_model_is_said_in_the_answer_pane(indexed, index_embedder, reranker,
                                                         tmp_path):
    from kbterm.models.base import ModelSpec
    from kbterm.models.generator import Generator

    missing = Generator(ModelSpec("generator", str(tmp_path / "no-such-model"), device="cpu"))
    app = answer_app(indexed, index_embedder, reranker, missing)

    async def scenario() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press(*"tides")
            await settle(pilot, app, lambda: showing(app, "tides", reranked=True))
            await pilot.press("enter")
            await settle(pilot, app, lambda: "No answer" in app.query_one("#answer").source,
                         what="the message")
            shown = app.query_one("#answer").source
            assert "kbterm pull generator" in shown and "Most relevant sources" in shown
            assert "(cite:1)" in shown
            assert "kbterm pull generator" in app.last_error

    asyncio.run(scenario())


def test_an_answer_asked_while_reranking_waits_for_the_reranker(indexed, index_embedder,
                                                               tiny_model_dir, generator):
    from kbterm.answer import Asker
    from kbterm.models.base import ModelSpec
    from kbterm.models.reranker import Reranker

    class Slow(Reranker):
        def score(self, *args, **kwargs):
            time.sleep(1.5)
            return super().score(*args, **kwargs)

    config = replace(indexed, ask=replace(indexed.ask, min_rerank_score=0.0))
    searcher = Searcher(config, embedder=index_embedder,
                        reranker=Slow(ModelSpec("reranker", str(tiny_model_dir), device="cpu")))
    app = KbtermApp(config, searcher=searcher,
                    asker=Asker(config, searcher=searcher, generator=generator))

    async def scenario() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press(*"tides")
            await settle(pilot, app, lambda: showing(app, "tides"), what="fused list")
            assert not any(it.reranked for it in items(app))
            await pilot.press("enter")
            assert "waiting for the reranker" in app.query_one("#answer").source
            assert app.answer is None
            await settle(pilot, app, lambda: app.answer is not None
                         and app._answer_cancel.is_set(), what="the answer")
            assert app.answer.evidence and all(h.rerank_score is not None
                                               for h in app.answer.evidence)
            assert showing(app, "tides", reranked=True)

            # A new keystroke while an answer waits: it is not answered, and says so.
            await pilot.press("s")
            await settle(pilot, app, lambda: showing(app, "tidess"), what="fused list")
            await pilot.press("enter")
            assert "waiting for the reranker" in app.query_one("#answer").source
            await pilot.press("backspace")
            assert "query changed" in app.query_one("#answer").source
            await settle(pilot, app, lambda: showing(app, "tides", reranked=True),
                         what="reranked")
            await pilot.pause(0.5)
            assert "query changed" in app.query_one("#answer").source and app.answer is None

            # Escape while an answer waits: it is not written either.
            await pilot.press("s")
            await settle(pilot, app, lambda: showing(app, "tidess"), what="fused list")
            await pilot.press("enter", "escape")
            assert "stopped" in app.query_one("#answer").source
            await settle(pilot, app, lambda: showing(app, "tidess", reranked=True),
                         what="reranked")
            await pilot.pause(0.5)
            assert app.answer is None and "stopped" in app.query_one("#answer").source

    asyncio.run(scenario())


def test_status_bar_follows_the_watchers_updates(tmp_path, index_model_dir, index_embedder):
    from kbterm.watchstate import WatcherState, write_state

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nfirst note\n")
    config = make_config(index_model_dir, tmp_path / "data", [folder])
    run_index(config, embedder=index_embedder)
    searcher = Searcher(config, embedder=index_embedder)

    async def scenario() -> None:
        app = KbtermApp(config, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, app, lambda: "1 files" in str(app.query_one("#status").render()),
                         what="the first count")
            # What a running watcher does: index, then publish its state.
            (folder / "b.md").write_text("# B\n\nsecond note\n")
            run_index(config, embedder=index_embedder)
            write_state(config.data_path, WatcherState(pid=os.getpid(), state="idle",
                                                       heartbeat=time.time(), batches=1,
                                                       last_batch_at=time.time()))
            await settle(pilot, app, lambda: "2 files" in str(app.query_one("#status").render()),
                         what="the new count")
            assert "watch: idle" in str(app.query_one("#status").render())

    asyncio.run(scenario())
