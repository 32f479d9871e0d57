"""Snapshots of the TUI's main screens (pytest-textual-snapshot; SVGs in ``__snapshots__``).

The screens are real: a real index of real files, the real searcher (with the tiny model)
filling the status bar and the source previews.  Two things are pinned so that a snapshot only
changes when the screen does:

- the results list: the tiny model's scores are random and near-tied, so after the app's own
  search has finished, each test shows the same hits (real chunks, from the real searcher) in
  path order with fixed scores, through the app's own ``show_results``;
- paths: ``HOME`` is the snapshot library's parent, so they read ``~/library/...``.

Review a changed screen with ``pytest tests/test_tui_snapshots.py`` (the report shows both
images) and accept it with ``--snapshot-update``.  The SVGs depend on textual's rendering, so
they are checked with the textual release they were recorded with and skipped with another.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from importlib.metadata import version

import pytest

from indexing_helpers import make_config, run_index
from kbterm.retrieval import Searcher

pytest.importorskip("textual")

from kbterm.answer import Answer  # noqa: E402
from kbterm.tui.app import KbtermApp, make_app  # noqa: E402
from kbterm.tui.widgets.answer import AnswerPane  # noqa: E402
from kbterm.tui.widgets.filters import FilterBar  # noqa: E402

RECORDED_WITH = "8.2"  # textual major.minor the SVGs were recorded with

pytestmark = pytest.mark.skipif(
    ".".join(version("textual").split(".")[:2]) != RECORDED_WITH,
    reason=f"snapshots recorded with textual {RECORDED_WITH}.x: re-record them with "
           "pytest tests/test_tui_snapshots.py --snapshot-update and review the SVGs")

TIDES = """# Tides

The tide table for the harbour, kept by the harbour master.

## Spring tides

Spring tides follow the new moon and the full moon,
when the sun and the moon pull in line.

## Neap tides

Neap tides come at the quarter moons.
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory, corpus, index_model_dir):
    """``~`` for these tests: a library of real files, indexed, and a model folder with the
    model's real name (shown in the status bar)."""
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder
    from kbterm.models.encoding import VisionLimits

    home = tmp_path_factory.mktemp("snap") / "ada"
    library = home / "library"
    library.mkdir(parents=True)
    (library / "tides.md").write_text(TIDES)
    (library / "rope.txt").write_text("Hemp rope swells when wet; nylon rope does not.\n")
    shutil.copy(corpus / "images" / "beach.jpeg", library / "beach.jpeg")
    shutil.copy(corpus / "pdf" / "small-table.pdf", library / "table.pdf")
    (home / "models").mkdir()
    model = home / "models" / "Qwen3-VL-Embedding-2B"
    model.symlink_to(index_model_dir, target_is_directory=True)
    config = make_config(model, home / "data", [library])
    limits = VisionLimits(image_max_pixels=16 * 32 * 32, frame_max_pixels=4 * 32 * 32,
                          total_pixels=64 * 32 * 32)
    embedder = Embedder(ModelSpec("embedder", str(model), device="cpu", dtype="float32"), limits=limits)
    embedder.load()
    run_index(config, embedder=embedder)
    return home, config, embedder


@pytest.fixture
def app_for(home, monkeypatch):
    home_dir, config, embedder = home
    monkeypatch.setenv("HOME", str(home_dir))
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)
    config = replace(config, search=replace(config.search, rerank=0))

    def make() -> KbtermApp:
        return make_app(config, searcher=Searcher(config, embedder=embedder))

    return make


async def wait(pilot, predicate, what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        await pilot.pause(0.05)
        if predicate():
            return
    app = pilot.app
    workers = ", ".join(f"{w.name}={w.state.name}" for w in app.workers)
    raise AssertionError(f"timed out waiting for {what} (last error: "
                         f"{getattr(app, 'last_error', '')!r}; previewed: "
                         f"{getattr(app, 'previewed', None)!r}; workers: {workers})")


async def search_and_pin(pilot, query: str, select: str | None = None) -> None:
    """Type ``query``, let the app's search finish, then show its hits pinned (path order,
    fixed scores) and select the hit whose citation starts with ``select``."""
    app = pilot.app
    await wait(pilot, lambda: "cpu" in app.model_state, "the model")
    await pilot.press(*query)
    # Its search must have ended (reranked, or failed): a rerank landing after the pin would
    # re-sort and move the selection to its first hit.
    await wait(pilot, lambda: app.results is not None and app.results.query == query
               and app.shown_seq == app.seq and app.final_seq == app.seq,
               "the app's own search to end")
    filters = app.query_one(FilterBar).read()[0]
    results = app.searcher.retrieve(query, k=20, rerank=False, filters=filters)
    hits = sorted(results.hits, key=lambda h: (h.path, h.modality, h.page or 0,
                                               h.line_start or 0))
    for n, hit in enumerate(hits):
        hit.rank = n + 1
        hit.embedding_score = round(0.91 - 0.04 * n, 2)
        hit.rerank_score = round(0.97 - 0.09 * n, 2)
    results.hits, results.reranked = hits, len(hits)
    await app.show_results(app.seq, results, True)
    if select is not None:
        view = app.query_one("#results")
        view.index = next(n for n, h in enumerate(hits) if h.citation().startswith(select))
    view = app.query_one("#results")
    view.focus()
    await pilot.pause(0.3)


def test_start_with_an_empty_index(snap_compare, tmp_path, index_model_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = make_config(index_model_dir, tmp_path / "kbterm-data", [])
    assert snap_compare(make_app(config), terminal_size=(80, 24))


def test_results_with_a_text_preview_at_80x24(snap_compare, app_for):
    async def run_before(pilot) -> None:
        await search_and_pin(pilot, "spring tides", select="tides.md")

    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=run_before)


def test_image_preview_on_a_wide_terminal(snap_compare, app_for):
    async def run_before(pilot) -> None:
        await search_and_pin(pilot, "beach", select="beach.jpeg")
        # The picture is decoded off the UI thread.
        await wait(pilot, lambda: bool(pilot.app.query(".preview-image")), "the photo")
        await pilot.pause(0.3)

    assert snap_compare(app_for(), terminal_size=(130, 34), run_before=run_before)


def test_pdf_page_preview(snap_compare, app_for):
    async def run_before(pilot) -> None:
        await search_and_pin(pilot, "table", select="table.pdf, page 1")
        await wait(pilot, lambda: bool(pilot.app.query(".preview-image")), "the page")
        await pilot.pause(0.3)

    assert snap_compare(app_for(), terminal_size=(100, 30), run_before=run_before)


async def show_answer(pilot) -> None:
    """A finished answer (fixed text) from the pinned hits, shown as the app shows one."""
    app = pilot.app
    await search_and_pin(pilot, "spring tides", select="tides.md")
    hits = [it.hit for it in app.query("ResultItem")]
    evidence = [h for h in hits if h.path.endswith(("tides.md", "rope.txt"))][:3]
    tides = next(n for n, h in enumerate(evidence, 1) if h.path.endswith("tides.md"))
    answer = Answer(question="spring tides", evidence=evidence,
                    text=f"Spring tides follow the **new moon** and the **full moon** "
                         f"[{tides}], when the sun and the moon pull in line [{tides}].")
    app.answer = answer
    pane = app.query_one(AnswerPane)
    await pane.begin(answer)
    await pane.finish(answer)
    await pilot.pause(0.3)


def test_answer_with_sources(snap_compare, app_for):
    assert snap_compare(app_for(), terminal_size=(100, 30), run_before=show_answer)


def test_answer_at_80x24_shows_its_end(snap_compare, app_for):
    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=show_answer)


def test_filters_and_status_bar_at_80x24(snap_compare, app_for):
    async def run_before(pilot) -> None:
        app = pilot.app
        await pilot.press("ctrl+f")
        app.query_one("#query").focus()
        await search_and_pin(pilot, "tides", select="tides.md")

    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=run_before)


def test_filters_on_a_narrow_terminal(snap_compare, app_for):
    async def run_before(pilot) -> None:
        app = pilot.app
        await pilot.press("ctrl+f")
        app.query_one("#f-type").value = "markdown"
        app.query_one("#f-after").value = "2020-01-01"
        app.query_one("#query").focus()
        await search_and_pin(pilot, "tides", select="tides.md")

    assert snap_compare(app_for(), terminal_size=(60, 30), run_before=run_before)


def test_help(snap_compare, app_for):
    async def run_before(pilot) -> None:
        await wait(pilot, lambda: "cpu" in pilot.app.model_state, "the model")
        pilot.app.query_one("#results").focus()
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=run_before)
