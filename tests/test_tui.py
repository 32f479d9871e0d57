"""The TUI driven by Textual's Pilot, over the real headless core and the tiny model."""

from __future__ import annotations

import asyncio
import shutil
import threading

import pytest

from indexing_helpers import make_config, run_index
from kbterm.retrieval import Searcher

pytest.importorskip("textual")

from kbterm.tui.app import KbtermApp, ResultItem  # noqa: E402


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
    (folder / "rope.md").write_text("# Rigging\n\nHemp rope swells when wet.\n")
    shutil.copy(corpus / "images" / "beach.jpeg", folder / "beach.jpeg")
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
    return [c for c in app.query_one("#results").children if isinstance(c, ResultItem)]


def test_type_then_results_then_reranked_with_preview(indexed, index_embedder, reranker):
    searcher = Searcher(indexed, embedder=index_embedder, reranker=reranker)

    async def scenario() -> None:
        app = KbtermApp(indexed, searcher=searcher)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(*"xylophonic")
            await settle(pilot, app, lambda: items(app) and any(
                it.reranked for it in items(app)))
            shown = [it.hit for it in items(app)]
            assert "reranked" in app.query_one("#results").border_title
            assert [h.rank for h in shown] == list(range(1, len(shown) + 1))
            head = [h.rerank_score for h in shown if h.rerank_score is not None]
            assert len(head) == len(shown) and head == sorted(head, reverse=True)
            xylo = next(n for n, h in enumerate(shown) if h.path.endswith("xylo.txt"))
            assert shown[xylo].keyword_score is not None
            app.query_one("#results").index = xylo
            await pilot.pause(0.2)
            preview = str(app.query_one("#preview-text").render())
            assert "xylophonic" in preview
            title = str(app.query_one("#preview-title").render())
            assert "xylo.txt" in title
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
            await settle(pilot, app, lambda: bool(items(app)))
            assert items(app)[0].hit.path.endswith("xylo.txt")
            status = str(app.query_one("#status").render())
            assert "keyword" in status and "not found" in status
            app._set_error("[Errno 13] Permission denied: '/x/[draft].md'")  # not markup
            await pilot.pause(0.1)
            assert "[Errno 13]" in str(app.query_one("#status").render())

    asyncio.run(scenario())


def test_help_lists_the_keys(indexed, index_embedder):
    async def scenario() -> None:
        app = KbtermApp(indexed, searcher=Searcher(indexed, embedder=index_embedder))
        async with app.run_test(size=(80, 24)) as pilot:
            app.query_one("#results").focus()
            await pilot.press("question_mark")
            await pilot.pause(0.2)
            text = str(app.screen.query_one("#help").render())
            assert "ctrl+o" in text and "search" in text
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
            await settle(pilot, app, lambda: any(it.reranked for it in items(app)))
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
            await settle(pilot, app, lambda: any(it.reranked for it in items(app)))
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
            await settle(pilot, app, lambda: bool(items(app)), what="image results")
            hits = [it.hit for it in items(app)]
            beach = next(h for h in hits if h.path.endswith("beach.jpeg"))
            assert beach.embedding_score is not None and beach.keyword_score is None
            assert app.results.image == str(folder / "beach.jpeg")

    asyncio.run(scenario())
