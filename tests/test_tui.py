"""The TUI driven by Textual's Pilot, over the real headless core and the tiny model."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import threading
import time
from dataclasses import replace

import pytest

from conftest import small_vision_limits
from indexing_helpers import make_config, run_index
from kbterm.retrieval import Filters, Searcher

pytest.importorskip("textual")

from kbterm.tui.app import make_app  # noqa: E402
from kbterm.tui.messages import ErrorShown  # noqa: E402
from kbterm.tui.widgets.answer import DONE, STOPPED, AnswerPane  # noqa: E402
from kbterm.tui.widgets.results import ResultItem  # noqa: E402


OLD = time.mktime((2020, 6, 1, 12, 0, 0, 0, 0, -1))


@pytest.fixture(autouse=True)
def _explicit_data_dir(monkeypatch):
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)


@pytest.fixture
def reranker(small_reranker):
    """Every reranked list here has pictures: they go through the vision tower small."""
    return small_reranker


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

    size = widget.region.size  # (padding and border included)
    lines = widget.render_lines(Region(0, 0, size.width, size.height))
    return "\n".join(line.text.rstrip() for line in lines).strip()


def region_text(app, widget) -> str:
    """What the screen shows where ``widget`` is (its children included), as text."""
    region = widget.region
    lines = [row.crop(region.x, region.right).text.rstrip()
             for row in screen_rows(app)[region.y:region.bottom]]
    return "\n".join(lines).strip()


def screen_rows(app):
    """The screen's lines as drawn (each a Strip)."""
    from textual.strip import Strip

    update = app.screen._compositor.render_update(full=True)
    return [Strip.join(list(row)) for row in update.strips]


def flat(text: str) -> str:
    return " ".join(text.split())


def showing(app, query: str, reranked: bool = False) -> bool:
    """The list on screen is for ``query`` (not a list shown while it was being typed)."""
    shown = items(app)
    return (app.results is not None and app.results.query == query and bool(shown)
            and app.results.stage != "keywords"  # (the first, keyword-only list)
            and all(it.query == query for it in shown)
            and (not reranked or any(it.reranked for it in shown)))


def test_type_then_results_then_reranked_with_preview(indexed, index_embedder, reranker):
    searcher = Searcher(indexed, embedder=index_embedder, reranker=reranker)

    async def scenario() -> None:
        app = make_app(indexed, searcher=searcher)
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
        app = make_app(indexed, searcher=searcher)
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
            await app.show_results(app.seq - 1, late, False)
            assert app.results.query == "tides"
            assert all("rope" not in it.query for it in items(app))

    asyncio.run(scenario())


def test_empty_index_shows_how_to_add_folders(tmp_path, index_model_dir):
    config = make_config(index_model_dir, tmp_path / "data", [])

    async def scenario() -> None:
        app = make_app(config)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            message = str(app.query_one("#message").render())
            assert "No index yet" in message and "kbterm index" in message
            await pilot.press(*"anything")
            await pilot.pause(0.5)
            assert not items(app)

    asyncio.run(scenario())


def test_keyword_hits_show_before_the_query_is_embedded_then_fused_then_reranked(
        tmp_path_factory):
    """The three stages of a search in the TUI, on a checkpoint larger than the tiny one (its
    query embedding is a real cost): keyword matches first, with no model call made yet,
    then the fused list, then the reranked one; the title says which stage is shown."""
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder
    from kbterm.models.random_checkpoint import build_random_checkpoint
    from kbterm.models.reranker import Reranker

    root = tmp_path_factory.mktemp("stages")
    model = build_random_checkpoint(root / "model", text_hidden=384, text_layers=6,
                                    text_heads=6, kv_heads=2, seed=3)
    folder = root / "notes"
    folder.mkdir()
    (folder / "tides.md").write_text("# Tides\n\nSpring tides follow the new moon.\n")
    (folder / "rope.md").write_text("# Rigging\n\nHemp rope swells when wet.\n")
    (folder / "zh.md").write_text("# 设置\n\n手机的网络设置很简单。\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KBTERM_DATA_DIR", raising=False)
        cfg = make_config(model, root / "data", [folder])
        embedder = Embedder(ModelSpec("embedder", str(model), device="cpu", dtype="float32"))
        reranker = Reranker(ModelSpec("reranker", str(model), device="cpu", dtype="float32"))
        assert run_index(cfg, embedder=embedder).indexed == 3
        cfg = replace(cfg, search=replace(cfg.search, rerank=3))

        async def scenario() -> None:
            app = make_app(cfg, searcher=Searcher(cfg, embedder=embedder, reranker=reranker))
            seen, firsts = [], []
            show = app.show_results

            async def recording(seq, results, reranked, note=""):
                await show(seq, results, reranked, note)
                if results is not None and results.query == "网络设置":
                    title = str(app.query_one("#results-pane").border_title)
                    seen.append((results.stage, reranked, embedder.calls, title))
                    firsts.append(results.hits[0].path if results.hits else "")

            app.show_results = recording
            async with app.run_test(size=(100, 30)) as pilot:
                await settle(pilot, app, lambda: "cpu" in app.model_state, what="the model")
                calls = embedder.calls
                await pilot.press(*"网络设置")
                await settle(pilot, app, lambda: len(seen) >= 3, what="three stages")
                (kw, k_rr, k_calls, k_title), (fu, f_rr, f_calls, _), (rr, r_rr, _, r_title) = \
                    seen[-3:]
                assert (kw, fu, rr) == ("keywords", "fused", "fused") and (k_rr, f_rr, r_rr) \
                    == (False, False, True)
                assert k_calls == calls  # nothing embedded yet when the keyword list showed
                assert f_calls == calls + 1  # then the query, once
                assert "keyword matches, embedding the query" in k_title
                assert "reranked" in r_title
                assert firsts[-3].endswith("zh.md")  # the keyword match (the model is random)

        asyncio.run(scenario())


def test_a_stale_selection_message_does_not_move_the_preview_off_the_selected_line(
        indexed, index_embedder):
    """The list is filled again in place while a selection message is still queued: the
    preview stays with the line selected now (it used to show the queued, older hit)."""
    from kbterm.tui.widgets.results import ResultsPane

    async def scenario() -> None:
        app = make_app(replace(indexed, search=replace(indexed.search, rerank=0)),
                       searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*"harbour")
            await settle(pilot, app, lambda: showing(app, "harbour") and app.previewed
                         is not None, what="results")
            pane = app.query_one(ResultsPane)
            selected = pane.highlighted
            other = next(it.hit for it in items(app) if it.hit.id != selected.id)
            pane.post_message(ResultsPane.Highlighted(other))  # sent before the list changed
            await pilot.pause(0.3)
            assert app.previewed.id == selected.id
            app.query_one("#results").index = items(app).index(
                next(it for it in items(app) if it.hit.id == other.id))
            await settle(pilot, app, lambda: app.previewed.id == other.id,
                         what="a real move to follow")

    asyncio.run(scenario())


def test_a_background_job_that_fails_says_so(indexed, index_embedder, monkeypatch):
    """A job's unexpected error (a bug, not a reported failure) reaches the status line;
    textual would swallow it (the jobs do not exit the app on error)."""
    from kbterm.tui import jobs

    def warm(searcher_of, post):
        raise RuntimeError("the disk fell off")

    monkeypatch.setattr(jobs, "warm", warm)

    async def scenario() -> None:
        app = make_app(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app, lambda: "the disk fell off" in app.last_error,
                         what="the warm job's error")
            assert app.last_error == "_warm failed: RuntimeError: the disk fell off"
            assert "the disk fell off" in str(app.query_one("#status").render())

    asyncio.run(scenario())


def test_missing_model_falls_back_to_keywords(indexed, tmp_path):
    from dataclasses import replace

    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder

    broken = Embedder(ModelSpec("embedder", str(tmp_path / "no-model"), device="cpu", dtype="float32"))
    config = replace(indexed, search=replace(indexed.search, rerank=0))
    searcher = Searcher(config, embedder=broken)

    async def scenario() -> None:
        app = make_app(config, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, app, lambda: "unavailable" in app.model_state)
            await pilot.press(*"xylophonic")
            await settle(pilot, app, lambda: showing(app, "xylophonic"))
            assert items(app)[0].hit.path.endswith("xylo.txt")
            status = str(app.query_one("#status").render())
            # (The bar shows the error's start; all of it is in app.last_error.)
            assert "keyword" in status and "unavailable" in status
            assert "not found" in app.last_error
            app.post_message(ErrorShown("[Errno 13] Permission denied: '/x/[draft].md'"))
            await pilot.pause(0.1)
            assert "[Errno 13]" in str(app.query_one("#status").render())

    asyncio.run(scenario())


def test_missing_reranker_keeps_the_fused_list_and_says_why(indexed, index_embedder,
                                                            tmp_path):
    from kbterm.models.base import ModelSpec
    from kbterm.models.reranker import Reranker

    broken = Reranker(ModelSpec("reranker", str(tmp_path / "no-reranker"), device="cpu", dtype="float32"))
    searcher = Searcher(indexed, embedder=index_embedder, reranker=broken)

    async def scenario() -> None:
        app = make_app(indexed, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*"tides")
            await settle(pilot, app, lambda: "reranker unavailable" in app.last_error
                         and showing(app, "tides") and app.final_seq == app.seq,
                         what="the reranker's error")
            assert showing(app, "tides") and not any(it.hit.rerank_score is not None
                                                     for it in items(app))
            assert "reranker unavailable" in str(app.query_one("#status").render())
            assert "no-reranker" in app.last_error

    asyncio.run(scenario())


def test_open_command(monkeypatch, tmp_path):
    from kbterm.retrieval import Hit
    from kbterm.tui.open import open_command

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
        app = make_app(indexed, searcher=Searcher(indexed, embedder=index_embedder))
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
        app = make_app(indexed, searcher=Searcher(indexed, embedder=index_embedder))
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

    model = Generator(ModelSpec("generator", str(tiny_model_dir), device="cpu", dtype="float32"),
                      max_new_tokens=5000)
    model.load()
    return model


def answer_app(indexed, index_embedder, reranker, generator):
    from dataclasses import replace

    from kbterm.answer import Asker

    config = replace(indexed, ask=replace(indexed.ask, min_rerank_score=0.0))
    searcher = Searcher(config, embedder=index_embedder, reranker=reranker)
    return make_app(config, searcher=searcher,
                     asker=Asker(config, searcher=searcher, generator=generator))


def test_answer_streams_with_sources_and_citations_move_the_preview(
        indexed, index_embedder, reranker, generator):
    async def scenario() -> None:
        app = answer_app(indexed, index_embedder, reranker, generator)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press(*"spring tides")
            await settle(pilot, app, lambda: showing(app, "spring tides", reranked=True))
            await pilot.press("enter")
            await settle(pilot, app, lambda: app.query_one(AnswerPane).state == DONE,
                         what="the answer")
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
            await settle(pilot, app, lambda: app.query_one(AnswerPane).state == STOPPED
                         and "stopped" in app.query_one("#answer").source, what="stopped")
            assert app.answer.cancelled and app.answer.text
            await settle(pilot, app, lambda: long_generator.last_generated_tokens > 0)
            assert long_generator.last_generated_tokens < 5000

    asyncio.run(scenario())


def test_image_or_video_query_with_path_completion(indexed, index_model_dir, corpus):
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder
    from kbterm.tui.suggest import PathSuggester

    folder = corpus / "images"
    video = corpus / "video" / "example.mp4"
    # (The contract's limits: a video file's frames are larger than the index embedder's.)
    embedder = Embedder(ModelSpec("embedder", str(index_model_dir), device="cpu",
                                  dtype="float32"))

    async def scenario() -> None:
        suggestion = await PathSuggester().get_suggestion(str(folder / "bea"))
        assert suggestion == str(folder / "beach.jpeg")
        assert await PathSuggester().get_suggestion(str(corpus / "ima")) == \
            str(corpus / "images") + "/"
        assert await PathSuggester().get_suggestion(str(video)[:-5]) == str(video)
        app = make_app(indexed, searcher=Searcher(indexed, embedder=embedder))
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

            # A video: the whole clip (1 frame a second, at most 64) is the query.
            app.query_one("#image").value = str(video)
            await settle(pilot, app, lambda: app.results is not None and bool(items(app))
                         and app.results.image == str(video), what="video results")
            assert all(it.hit.embedding_score is not None for it in items(app))

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
        app = make_app(config, searcher=searcher)
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
        app = make_app(indexed, searcher=Searcher(indexed, embedder=index_embedder))
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

        def score(self, query, documents, instruction=None, **kwargs):
            self.query = str(query)
            return super().score(query, documents, instruction, **kwargs)

        def _run(self, inputs, **kwargs):
            self.passes.append(self.query)
            self.entered.set()
            self.release.wait(30)
            return super()._run(inputs, **kwargs)

    reranker = Blocking(ModelSpec("reranker", str(tiny_model_dir), device="cpu", dtype="float32"),
                        batch_tokens=1, limits=small_vision_limits())  # one pair per pass
    reranker.share_prefix = False
    # (A long debounce: "rop" must not be searched on its own on a busy machine.)
    config = replace(indexed, tui=replace(indexed.tui, debounce_ms=800))
    searcher = Searcher(config, embedder=index_embedder, reranker=reranker)

    async def scenario() -> None:
        app = make_app(config, searcher=searcher)
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
    from kbterm.tui.widgets.preview import image_widget

    assert image_widget("none") is None
    assert image_widget("halfcell").__name__ == "HalfcellImage"
    config = replace(indexed, tui=replace(indexed.tui, images="none", results=3, debounce_ms=0),
                     search=replace(indexed.search, rerank=0))

    async def scenario() -> None:
        app = make_app(config, searcher=Searcher(config, embedder=index_embedder))
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

    missing = Generator(ModelSpec("generator", str(tmp_path / "no-such-model"), device="cpu", dtype="float32"))
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
                        reranker=Slow(ModelSpec("reranker", str(tiny_model_dir), device="cpu",
                                                dtype="float32"), limits=small_vision_limits()))
    app = make_app(config, searcher=searcher,
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
                         and app.query_one(AnswerPane).state == DONE, what="the answer")
            assert app.answer.evidence and all(h.rerank_score is not None
                                               for h in app.answer.evidence)
            assert showing(app, "tides", reranked=True)

            # A new keystroke while an answer waits: it is not answered, and the pane goes.
            await pilot.press("s")
            await settle(pilot, app, lambda: showing(app, "tidess"), what="fused list")
            await pilot.press("enter")
            assert "waiting for the reranker" in app.query_one("#answer").source
            await pilot.press("backspace")
            assert not app.query_one("#answer-pane").display and app.answer is None
            await settle(pilot, app, lambda: showing(app, "tides", reranked=True),
                         what="reranked")
            await pilot.pause(0.5)
            assert not app.query_one("#answer-pane").display and app.answer is None

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
        app = make_app(config, searcher=searcher)
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


# ---------------------------------------------------------------- issue 12: each defect


class Reversing(Searcher):
    """A reranker's re-sort that always moves the first hit last (held until ``gate``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()

    def rerank(self, results, *, k=10, enabled=True, cancel=None, budget_ms=0):
        self.gate.wait(30)
        hits = [replace(h) for h in reversed(results.hits[:k])]
        for n, hit in enumerate(hits):
            hit.rank, hit.rerank_score = n + 1, round(0.99 - 0.01 * n, 2)
        return replace(results, hits=hits, reranked=len(hits))


def highlighted(app):
    item = app.query_one("#results").highlighted_child
    return item.hit if item is not None else None


def test_after_the_rerank_the_new_first_hit_is_selected_and_previewed(indexed, index_embedder):
    searcher = Reversing(indexed, embedder=index_embedder)

    async def scenario() -> None:
        app = make_app(indexed, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            searcher.gate.clear()
            await pilot.press(*"tides rope")
            await settle(pilot, app, lambda: showing(app, "tides rope"), what="fused list")
            first = items(app)[0].hit
            assert highlighted(app).id == first.id and len(items(app)) > 2
            searcher.gate.set()
            await settle(pilot, app, lambda: showing(app, "tides rope", reranked=True))
            await pilot.pause(0.2)
            top = items(app)[0].hit
            assert top.id != first.id and items(app)[-1].hit.id == first.id
            assert app.query_one("#results").index == 0 and highlighted(app).id == top.id
            assert app.previewed.id == top.id
            assert top.citation() in str(app.query_one("#preview-title").render())

            # The user moves the selection before the rerank: their hit stays selected.
            searcher.gate.clear()
            app.query_one("#query").value = "harbour melody"
            await settle(pilot, app, lambda: showing(app, "harbour melody"), what="fused list")
            assert app.query_one("#results").index == 0  # a new query starts at the top
            app.query_one("#results").focus()
            await pilot.press("down", "down")
            chosen = highlighted(app)
            assert chosen.id == items(app)[2].hit.id
            searcher.gate.set()
            await settle(pilot, app, lambda: showing(app, "harbour melody", reranked=True))
            await pilot.pause(0.2)
            assert highlighted(app).id == chosen.id and items(app)[0].hit.id != chosen.id
            assert app.previewed.id == chosen.id

    asyncio.run(scenario())


def test_the_answer_follows_the_stream_and_marks_its_end(indexed, index_embedder, reranker,
                                                        long_generator):
    from kbterm.tui.widgets.answer import WRITING

    async def scenario() -> None:
        app = answer_app(indexed, index_embedder, reranker, long_generator)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press(*"rope")
            await settle(pilot, app, lambda: showing(app, "rope", reranked=True))
            await pilot.press("enter")
            pane = app.query_one(AnswerPane)
            await settle(pilot, app, lambda: pane.max_scroll_y > 3, what="a long answer")
            await pilot.pause(0.3)
            assert pane.state == WRITING and "writing" in shown_text(pane).splitlines()[0]
            assert pane.scroll_y == pane.max_scroll_y  # it follows the stream

            # Scrolled up, it stays where the user put it; at the end again, it follows.
            pane.focus()
            await pilot.press("home")
            grown = pane.max_scroll_y
            await settle(pilot, app, lambda: pane.max_scroll_y > grown + 2, what="more text")
            assert pane.scroll_y == 0
            await pilot.press("end")
            grown = pane.max_scroll_y
            await settle(pilot, app, lambda: pane.max_scroll_y > grown + 2, what="more text")
            await pilot.pause(0.2)
            assert pane.scroll_y == pane.max_scroll_y

            await pilot.press("escape")
            await settle(pilot, app, lambda: pane.state == STOPPED, what="stopped")
            assert "■ stopped" in shown_text(pane).splitlines()[0]

    asyncio.run(scenario())


def test_a_finished_answer_shows_its_end_and_a_done_mark_at_80x24(indexed, index_embedder,
                                                                  reranker, generator):
    async def scenario() -> None:
        app = answer_app(indexed, index_embedder, reranker, generator)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press(*"spring tides")
            await settle(pilot, app, lambda: showing(app, "spring tides", reranked=True))
            await pilot.press("enter")
            pane = app.query_one(AnswerPane)
            await settle(pilot, app, lambda: pane.state == DONE, what="the answer")
            await pilot.pause(0.3)
            assert pane.max_scroll_y > 0  # (longer than the pane: its end is below the fold)
            assert pane.scroll_y == pane.max_scroll_y
            shown = shown_text(pane)
            assert "✓ done" in shown.splitlines()[0]
            last = app.answer.sources()[-1][1]
            # The last source is on screen.
            assert os.path.basename(last.path)[:8] in region_text(app, pane)

    asyncio.run(scenario())


def test_a_new_query_or_filter_stops_and_hides_the_answer(indexed, index_embedder, reranker,
                                                         long_generator):
    async def scenario() -> None:
        app = answer_app(indexed, index_embedder, reranker, long_generator)
        async with app.run_test(size=(100, 30)) as pilot:
            pane = app.query_one(AnswerPane)
            await pilot.press(*"rope")
            await settle(pilot, app, lambda: showing(app, "rope", reranked=True))
            await pilot.press("enter")
            await settle(pilot, app, lambda: app.answer is not None and app.answer.text,
                         what="the first tokens")
            running = app.answer
            await pilot.press("s")  # the query changes while the answer is written
            assert not pane.display and app.answer is None
            await settle(pilot, app, lambda: showing(app, "ropes", reranked=True))
            await pilot.pause(0.5)
            assert not pane.display and app.answer is None and running.cancelled

            # A finished (here: stopped) answer goes too, when a filter changes.
            await pilot.press("enter")
            await settle(pilot, app, lambda: app.answer is not None and app.answer.text,
                         what="the first tokens")
            await pilot.press("escape")
            await settle(pilot, app, lambda: pane.state == STOPPED, what="stopped")
            assert pane.display
            await pilot.press("ctrl+f")
            app.query_one("#f-type").value = "markdown"
            await pilot.pause(0.1)
            assert not pane.display and app.answer is None
            await settle(pilot, app, lambda: app.results is not None and app.shown_seq == app.seq
                         and all(it.hit.file_type == "markdown" for it in items(app)),
                         what="the filtered list")
            assert not pane.display

    asyncio.run(scenario())


def test_f1_opens_the_help_anywhere_and_question_mark_only_when_not_text(indexed,
                                                                        index_embedder):
    def help_shown(app) -> bool:
        return bool(app.screen.query("#help"))

    async def scenario() -> None:
        app = make_app(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(80, 24)) as pilot:
            box = app.query_one("#query")
            assert "F1" in box.placeholder and "?" in box.placeholder
            await pilot.press("question_mark")  # the box is empty: the help
            assert help_shown(app) and box.value == ""
            text = shown_text(app.screen.query_one("#help"))
            assert "f1" in text and "ctrl+c" in text
            await pilot.press("question_mark")
            assert not help_shown(app)
            await pilot.press(*"why", "question_mark")  # text in the box: a question mark
            assert box.value == "why?" and not help_shown(app)
            await pilot.press("f1")  # F1 works from the box
            assert help_shown(app) and box.value == "why?"
            await pilot.press("f1")
            assert not help_shown(app)
            await pilot.press("ctrl+f", "tab")  # a filter box: ? is text (a glob)
            assert app.focused is app.query_one("#f-folder")
            await pilot.press("question_mark")
            assert app.query_one("#f-folder").value == "?" and not help_shown(app)
            await pilot.press("f1")
            assert help_shown(app)
            await pilot.press("escape")
            assert not help_shown(app)

    asyncio.run(scenario())


def test_ctrl_c_quits_and_q_is_text(indexed, index_embedder):
    async def scenario() -> None:
        app = make_app(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("q")
            assert app.query_one("#query").value == "q" and app.return_code is None
            await pilot.press("ctrl+c")
            await pilot.pause(0.1)
            assert app.return_code == 0

    asyncio.run(scenario())


def test_the_filter_bar_and_the_status_bar_fit_80_columns(indexed, index_embedder):
    from kbterm.tui.widgets.filters import PLACEHOLDERS

    error = "cannot read /home/ada/library/reports/2026/the-quarterly-report.pdf: encrypted"

    async def scenario() -> None:
        app = make_app(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app, lambda: "cpu" in app.model_state, what="the model")
            await pilot.press(*"tides")
            await settle(pilot, app, lambda: showing(app, "tides"))
            await pilot.press("ctrl+f")
            await pilot.pause(0.2)
            for box, placeholder in PLACEHOLDERS.items():
                assert shown_text(app.query_one(f"#{box}")) == placeholder, box
            assert region_text(app, app.query_one("#f-type")).startswith("any type")

            status = app.query_one("#status")
            line = shown_text(status)
            assert "files" in line and "chunks" in line and "watch: not running" in line
            assert "cpu" in line and "…" not in line  # all of it fits
            app.post_message(ErrorShown(error))
            await pilot.pause(0.2)
            line = shown_text(status)
            assert len(line) <= 78 and "\n" not in line
            # The watcher's segment goes first; the model's name and the error's start stay.
            assert "watch" not in line and os.path.basename(indexed.models.embedder.model) \
                in line
            assert error[:40] in line and line.endswith("…")

    asyncio.run(scenario())


def test_a_failed_index_says_type_to_search_not_add_folders(tmp_path, index_model_dir,
                                                            index_embedder):
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "broken.pdf").write_bytes(b"not a pdf at all")
    config = make_config(index_model_dir, tmp_path / "data", [folder])
    summary = run_index(config, embedder=index_embedder)
    assert summary.failed == 1 and not summary.indexed

    async def scenario() -> None:
        app = make_app(config, searcher=Searcher(config, embedder=index_embedder))
        async with app.run_test(size=(80, 24)) as pilot:
            message = app.query_one("#message")
            await settle(pilot, app, lambda: "could not be indexed" in shown_text(message),
                         what="the failure count", timeout=15)
            await pilot.pause(0.2)
            shown = flat(shown_text(message))
            assert shown.startswith("Type to search.") and "No index yet" not in shown
            assert "1 file could not be indexed: kbterm status says why." in shown
            status = shown_text(app.query_one("#status"))
            assert "1 failed" in status
            assert "unavailable" not in status and "no index" not in status
            await pilot.press(*"anything")
            await settle(pilot, app, lambda: "No results" in shown_text(message),
                         what="no results")
            assert "no index" not in shown_text(app.query_one("#status"))

    asyncio.run(scenario())


# ---------------------------------------------------------------- untrusted text

EVIL = "zebra \033]0;PWNED\007 \033]52;c;cHduZWQ=\007 \033[2J text"
RAW = ("\x1b]", "\x07", "\x9b", "\x1b[2J")


def screen_segments(app) -> list[str]:
    """The text of every segment the screen draws (what would go to the terminal, less
    Textual's own control codes)."""
    return [segment.text for row in screen_rows(app) for segment in row
            if not segment.control]


def terminal_output(app) -> str:
    """What the app would write to the terminal for the whole screen."""
    from rich.console import Console

    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(),
                      force_terminal=True, color_system="truecolor", legacy_windows=False)
    return app.screen._compositor.render_update(full=True).render_segments(console)


def assert_safe(app, where: str) -> str:
    text = "".join(screen_segments(app))
    for raw in RAW:
        assert raw not in text, f"{raw!r} drawn raw ({where})"
    assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in text), where
    output = terminal_output(app)
    assert "\x1b]" not in output and "\x07" not in output and "\x9b" not in output, where
    return text


def test_control_sequences_in_files_are_shown_escaped(tmp_path, index_model_dir,
                                                      index_embedder):
    from kbterm.answer import Asker

    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "note.md").write_text(f"# Zebra\n\n{EVIL}\n")
    (folder / "zebra\x1b]0;NAMED\x07.txt").write_text("zebra stripes\n")
    config = make_config(index_model_dir, tmp_path / "data", [folder])
    config = replace(config, search=replace(config.search, rerank=0),
                     ask=replace(config.ask, min_rerank_score=0.0))
    run_index(config, embedder=index_embedder)
    searcher = Searcher(config, embedder=index_embedder)

    class Echo(Asker):
        """Answers with the evil text itself (a model repeats what it read)."""

        def stream(self, answer, cancel=None):
            for piece in (EVIL[:9], EVIL[9:], " [1]"):
                answer.text += piece
                yield piece

    async def scenario() -> None:
        # (drop_controls=False: the widgets' own escaping is what is checked, not the
        # last guard.)
        app = make_app(config, searcher=searcher, asker=Echo(config, searcher=searcher),
                       drop_controls=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press(*"zebra")
            await settle(pilot, app, lambda: showing(app, "zebra") and len(items(app)) >= 2)
            text = assert_safe(app, "the list")
            assert "\\x1b]0;PWNED\\x07" in text  # the snippet, escaped
            for n, item in enumerate(items(app)):
                app.query_one("#results").index = n
                await pilot.pause(0.2)
                text = assert_safe(app, f"the preview of {item.hit.citation()!r}")
                assert "\\x1b]0;PWNED" in text or "\\x1b]0;NAMED" in text
            assert "zebra\\x1b]0;NAMED\\x07.txt" in "".join(screen_segments(app))
            await pilot.press("enter")  # the answer, with the note as its source
            await settle(pilot, app, lambda: app.query_one(AnswerPane).state == DONE,
                         what="the answer")
            await pilot.pause(0.2)
            text = assert_safe(app, "the answer")
            assert "\\x1b]52;c;cHduZWQ=" in text
            # (An error of at most half the bar's width is shown whole, whatever the model's
            # name beside it: EVIL, escaped, is 58 columns.)
            app.post_message(ErrorShown(EVIL))
            await pilot.pause(0.2)
            assert "\\x1b[2J" in shown_text(app.query_one("#status"))
            assert_safe(app, "the status bar")

    asyncio.run(scenario())


def test_the_last_guard_drops_control_characters_that_a_widget_would_draw(indexed,
                                                                         index_embedder):
    from textual.widgets import Static

    async def scenario() -> None:
        app = make_app(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(80, 24)) as pilot:
            await app.screen.mount(Static(f"raw: {EVIL}", markup=False, id="raw"))
            await pilot.pause(0.1)
            text = assert_safe(app, "a widget that forgot to escape")
            assert "raw: zebra" in text and "PWNED" in text

    asyncio.run(scenario())


def test_the_status_bar_says_which_host_each_role_uses():
    from kbterm.backends.base import Host
    from kbterm.tui.jobs import model_forms

    local = Host("in process", "/models/Qwen3-VL-Embedding-2B", "cpu", "bfloat16")
    assert model_forms(local, {"reranker": "in process", "generator": "in process"}) == \
        ("Qwen3-VL-Embedding-2B (cpu bfloat16)", "Qwen3-VL-Embedding-2B")
    served = Host("kbterm serve", "Qwen/Qwen3-VL-Embedding-2B", "cuda", "bfloat16",
                  url="http://127.0.0.1:8470")
    forms = model_forms(served, {"reranker": "kbterm serve", "generator": "server"})
    assert forms[0] == ("Qwen3-VL-Embedding-2B (kbterm serve, cuda bfloat16) · "
                        "rerank kbterm serve · answers server")
    assert forms[1:] == ("Qwen3-VL-Embedding-2B (kbterm serve, cuda bfloat16)",
                         "Qwen3-VL-Embedding-2B")
    timed = model_forms(local, {"reranker": "in process"}, latency=0.0123)
    assert timed == ("Qwen3-VL-Embedding-2B (cpu bfloat16, 12 ms a query)",
                     "Qwen3-VL-Embedding-2B (cpu bfloat16)", "Qwen3-VL-Embedding-2B")
