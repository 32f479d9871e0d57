"""A long-lived reader across a rebuild, a compaction and a version clean-up (issue 13, part 7).

The TUI (and a future server) keep one :class:`~kbterm.retrieval.Searcher` open for hours while
`kbterm index --rebuild`, `kbterm watch` and the indexer's hygiene replace, compact and clean
up the tables under it.  Each test opens a Searcher, has the tables replaced, and searches
again: the results must be those of a Searcher opened afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_config_file
from indexing_helpers import explicit_data_dir, kbterm, make_config, run_index
from kbterm.retrieval import Searcher
from kbterm.store import CHUNKS, Store

pytestmark = pytest.mark.usefixtures(explicit_data_dir.__name__)

NOTES = {
    "tides.md": "# Tides\n\nSpring tides follow the new moon and the full moon.\n",
    "lamps.txt": "The lighthouse lamp is trimmed at dusk by the keeper.\n",
    "xylo.txt": "A xylophonic melody drifted over the harbour at night.\n",
    "rope.md": "# Rigging\n\nHemp rope swells when wet; nylon rope does not.\n",
}
QUERY = "harbour lamp at dusk"


def build(tmp_path: Path, model_dir: Path, embedder):
    """An index written in several commits (several data files and versions)."""
    folder = tmp_path / "notes"
    folder.mkdir()
    cfg = make_config(model_dir, tmp_path / "data", [folder])
    for name, text in NOTES.items():
        (folder / name).write_text(text)
        run_index(cfg, embedder=embedder)
    (folder / "lamps.txt").write_text("The lighthouse lamp burns whale oil at dusk.\n")
    run_index(cfg, embedder=embedder)
    return cfg, folder


def seen(results) -> list[tuple]:
    return [(h.id, h.path, round(h.embedding_score or 0, 4), h.keyword_score is not None,
             h.content) for h in results.hits]


def same_as_a_new_searcher(searcher: Searcher, cfg, embedder) -> None:
    got = searcher.search(QUERY, k=20, rerank=False)
    fresh = Searcher(cfg, embedder=embedder).search(QUERY, k=20, rerank=False)
    assert seen(got) == seen(fresh)
    assert {Path(h.path).name for h in got.hits} == set(NOTES)
    assert all(h.content for h in got.hits)  # (a stale chunk list has no text to show)
    assert searcher.file_count == len(NOTES)


def tui_count(searcher: Searcher) -> tuple[int, int, int]:
    """What the app's status bar is told (kbterm.tui.jobs.count: the ledger, the counts)."""
    pytest.importorskip("textual")
    from kbterm.tui import jobs

    posted = []
    jobs.recount(searcher, posted.append)
    (message,) = posted
    return message.files, message.chunks, message.failed


def test_a_searcher_survives_a_rebuild_by_another_process(tmp_path, index_model_dir,
                                                          index_embedder, index_serve):
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    searcher = Searcher(cfg, embedder=index_embedder)
    before = searcher.search(QUERY, k=20, rerank=False)
    conf = write_config_file(tmp_path / "config.toml", index_model_dir, data_dir=cfg.data_path,
                             served=index_serve)  # (the other process: through kbterm serve)
    proc = kbterm(["--config", str(conf), "index", "--rebuild", str(folder)])
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err

    same_as_a_new_searcher(searcher, cfg, index_embedder)  # it used to fail: "Not found"
    assert {h.id for h in searcher.search(QUERY, k=20, rerank=False).hits}.isdisjoint(
        {h.id for h in before.hits})  # (new generations: the chunk list was read again)
    assert tui_count(searcher) == (len(NOTES), len(NOTES), 0)


def test_a_searcher_survives_a_rebuild_in_its_own_process(tmp_path, index_model_dir,
                                                          index_embedder):
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    searcher = Searcher(cfg, embedder=index_embedder)
    before = searcher.search(QUERY, k=20, rerank=False)
    run_index(cfg, embedder=index_embedder, rebuild=True)
    # The new tables' version numbers may equal the old ones: the searcher used to keep its
    # old chunk list (hits without text, ids the table no longer has).
    same_as_a_new_searcher(searcher, cfg, index_embedder)
    assert {h.id for h in searcher.search(QUERY, k=20, rerank=False).hits}.isdisjoint(
        {h.id for h in before.hits})
    assert tui_count(searcher) == (len(NOTES), len(NOTES), 0)


def test_a_searcher_survives_compaction_and_version_cleanup(tmp_path, index_model_dir,
                                                            index_embedder):
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    searcher = Searcher(cfg, embedder=index_embedder)
    searcher.search(QUERY, rerank=False)
    data_files = set((cfg.data_path / "index" / "chunks.lance" / "data").glob("*.lance"))
    (folder / "xylo.txt").write_text("A xylophonic melody drifted over the harbour at dawn.\n")
    run_index(cfg, embedder=index_embedder)
    assert Store(cfg.data_path).optimize(0, force=True)  # keep_versions_seconds = 0
    assert data_files - set((cfg.data_path / "index" / "chunks.lance" / "data")
                            .glob("*.lance"))  # files the searcher had read are gone
    same_as_a_new_searcher(searcher, cfg, index_embedder)
    assert tui_count(searcher) == (len(NOTES), len(NOTES), 0)


def test_a_compaction_between_opening_a_table_and_reading_it(tmp_path, index_model_dir,
                                                             index_embedder):
    """The race, made deterministic: the clean-up deletes the files of the version the reader
    has just checked out, before it reads them."""
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    searcher = Searcher(cfg, embedder=index_embedder)
    searcher.search(QUERY, rerank=False)
    (folder / "rope.md").write_text("# Rigging\n\nManila rope swells when wet.\n")
    run_index(cfg, embedder=index_embedder)

    store = searcher.store
    real = store._latest
    armed = [True]

    def latest(name):
        table = real(name)
        if name == CHUNKS and armed and table is not None:
            armed.clear()
            assert Store(cfg.data_path).optimize(0, force=True)
        return table

    store._latest = latest
    same_as_a_new_searcher(searcher, cfg, index_embedder)
    assert not armed  # the clean-up did run inside the searcher's refresh
