"""Text first, pictures after (issue #16): every text chunk is committed before the first
picture; a run killed between the two steps, or among the pictures, resumes with nothing lost,
nothing doubled and nothing embedded twice; a search meanwhile finds the text."""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from corpus_builder import book_excerpt
from indexing_helpers import (
    check_consistent,
    chunks,
    kbterm,
    ledger,
    make_config,
    run_index,
)
from test_index_robustness import write_config


@pytest.fixture(autouse=True)
def _explicit_data_dir(monkeypatch):
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)


def library(folder: Path, corpus: Path, pages: int, files: tuple[str, ...]) -> Path:
    """Three notes, the first ``pages`` pages of the corpus's book, and ``files`` of the
    corpus."""
    folder.mkdir()
    for i in range(3):
        (folder / f"note-{i}.md").write_text(f"# Note {i}\n\nThe lighthouse keeper {i} logs "
                                             "the tide and the fog.\n" * 4)
    book_excerpt(corpus, folder / "book.pdf", pages)
    for name in files:
        shutil.copy(corpus / name, folder)
    return folder


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, corpus) -> Path:
    """Notes, two PDFs, a photo and a video."""
    return library(tmp_path_factory.mktemp("mixed") / "library", corpus, 4,
                   ("pdf/slides.pdf", "images/photo_1.jpg", "video/example.mp4"))


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory, corpus) -> Path:
    """Notes, a 3-page PDF and a photo (the kill tests embed at the contract's limits)."""
    return library(tmp_path_factory.mktemp("small") / "library", corpus, 3,
                   ("images/photo_1.jpg",))


@pytest.fixture(scope="module")
def never_killed(tmp_path_factory, small_folder, index_model_dir, index_serve):
    """What a run never killed puts in the index (through the serve, as the killed run)."""
    from kbterm.config import load_config

    base = tmp_path_factory.mktemp("clean")
    config = load_config(write_config(base / "c.toml", index_model_dir, base / "data",
                                      served=index_serve))
    summary = run_index(config, [small_folder])
    return config, summary


def content(config) -> Counter:
    """What the index holds, whatever the ids and generations: one entry per live row."""
    return Counter((Path(r["path"]).name, r["modality"], r["page"], r["start_s"], r["text"])
                   for r in chunks(config))


def test_every_text_chunk_is_committed_before_the_first_picture(tmp_path, mixed_folder,
                                                               index_model_dir, index_embedder):
    import lancedb

    config = make_config(index_model_dir, tmp_path / "data", [mixed_folder],
                         keep_versions_seconds=3600)  # (every table version stays readable)
    summary = run_index(config, embedder=index_embedder)
    assert summary.failed == 0 and summary.pictures_pending == 0
    assert summary.indexed == 7
    final = chunks(config)
    texts = sum(r["modality"] == "text" for r in final)
    pictures = len(final) - texts
    assert texts and pictures >= 8  # PDF pages, the photo, the video's segments
    table = lancedb.connect(str(tmp_path / "data" / "index")).open_table("chunks")
    seen = []
    for version in sorted(v["version"] for v in table.list_versions()):
        table.checkout(version)
        rows = table.to_arrow().select(["modality"]).column("modality").to_pylist()
        seen.append((rows.count("text"), len(rows) - rows.count("text")))
    first_picture = next(i for i, (_t, p) in enumerate(seen) if p)
    assert seen[first_picture][0] == texts, seen  # all the text was in before
    assert seen[first_picture][1] < pictures, seen  # and the pictures came over several commits
    check_consistent(config)
    assert all(not r.pictures and not r.retired for r in ledger(config).values())


KILLER = """
import os, signal
import kbterm.indexer as m
m.EMBED_GROUP_VISUALS = 1  # one picture per embedding call: a commit after each
_sync, asked = m.Indexer.sync, [0]
def _kill_at_pause_number_{n}():
    asked[0] += 1
    if asked[0] >= {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    return False
def sync(self, *args, **kwargs):
    kwargs["pause"] = _kill_at_pause_number_{n}
    return _sync(self, *args, **kwargs)
m.Indexer.sync = sync
"""


@pytest.mark.parametrize("pause", [1, 3], ids=["between-the-steps", "among-the-pictures"])
def test_kill_9_then_resume(tmp_path, small_folder, never_killed, index_model_dir,
                            index_embedder, index_serve, pause):
    """The killed run embeds through the shared ``kbterm serve``, and so does the run that
    resumes (the same vision limits: other limits are other pictures, embedded again).  The
    kill comes at the indexer's ``pause`` question, asked before each file's pictures and
    after each picture is committed: a real SIGKILL at a known point."""
    from kbterm.config import load_config

    data = tmp_path / "data"
    path = write_config(tmp_path / "c.toml", index_model_dir, data, served=index_serve)
    proc = kbterm(["--config", str(path), "index", "--no-progress", str(small_folder)],
                  KILLER.format(n=pause))
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    config = load_config(path)

    files = ledger(config)
    assert len(files) == 5 and all(r.status == "indexed" for r in files.values())
    pending = {Path(p).name for p, r in files.items() if r.pictures}
    landed = [r for r in chunks(config) if r["modality"] != "text"]
    if pause == 1:  # between the steps: all the text, no picture
        assert pending == {"book.pdf", "photo_1.jpg"} and not landed
    else:  # two of the book's three pages
        assert pending == {"book.pdf", "photo_1.jpg"} and len(landed) == 2
    # Meanwhile a search finds the text, the PDF's too.
    from kbterm.retrieval import Searcher

    found = Searcher(config).retrieve("lighthouse keeper", k=5)
    assert any(Path(h.path).name.startswith("note-") for h in found.hits)
    assert sum(Path(r["path"]).name == "book.pdf" for r in chunks(config, modality="text")) >= 3

    summary = run_index(config, [small_folder])
    assert summary.pictures_pending == 0 and summary.failed == 0 and summary.indexed == 2
    # Nothing lost, nothing doubled: the same rows as a run never killed.
    clean, reference = never_killed
    assert content(config) == content(clean)
    check_consistent(config)
    # Nothing embedded twice: the pictures that had landed were not embedded again.
    pictures = {r["chunk_key"] for r in chunks(clean) if r["modality"] != "text"}
    assert len(pictures) == 4
    assert summary.embedded == len(pictures) - len({r["chunk_key"] for r in landed})
    assert reference.embedded > summary.embedded


def test_a_pause_leaves_the_pictures_pending_and_the_next_run_goes_on(tmp_path, mixed_folder,
                                                                       index_model_dir,
                                                                       index_embedder):
    from kbterm.indexer import Indexer

    config = make_config(index_model_dir, tmp_path / "data", [mixed_folder])
    indexer = Indexer(config, embedder=index_embedder)
    roots = indexer.roots()
    with indexer.session():
        first = indexer.sync(roots, pause=lambda: True)  # newer work waits at every picture
    assert first.pictures_pending == 4 and first.indexed == 3  # the notes
    assert not [r for r in chunks(config) if r["modality"] != "text"]
    from kbterm.status import collect, render

    report = collect(config)
    assert report.pictures_pending == 4
    assert "pictures   pending for 4 of 4 files with pictures" in render(report)
    assert "pictures pending for 4 file(s)" in first.line()
    # Once the host's rates are known, status says about how long the rest takes.
    from kbterm.backends.latency import rates
    from kbterm.plan import rates_key, time_left

    assert time_left(config) == ""
    rates(config.data_path, index_embedder, rates_key(config, index_embedder))
    left = time_left(config)
    assert left.startswith("about ") and " of indexing left on " in left
    second = run_index(config, embedder=index_embedder)
    assert second.pictures_pending == 0 and second.indexed == 4 and second.unchanged == 3
    assert collect(config).pictures_pending == 0
    check_consistent(config)


def test_a_lower_page_resolution_re_embeds_just_the_pictures(tmp_path, corpus, index_model_dir):
    """indexing.page_max_pixels: the pages are drawn smaller (other pictures, embedded again);
    the text keeps its vectors.  The embedder has the contract's limits here (the setting
    works within them)."""
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder
    from kbterm.indexer import Indexer

    folder = tmp_path / "library"
    folder.mkdir()
    book_excerpt(corpus, folder / "book.pdf", 2)
    (folder / "note.md").write_text("# Note\n\nAbout tides.\n")
    embedder = Embedder(ModelSpec("embedder", str(index_model_dir), device="cpu",
                                  dtype="float32"))
    config = make_config(index_model_dir, tmp_path / "data", [folder],
                         page_max_pixels=64 * 32 * 32)
    first = Indexer(config, embedder=embedder)
    first.run()
    assert first.picture_pixels("pdf") == 64 * 32 * 32
    pages = {r["page"]: r["chunk_key"] for r in chunks(config, modality="image")}
    texts = {r["chunk_key"] for r in chunks(config, modality="text")}
    assert len(pages) == 2 and texts

    lower = make_config(index_model_dir, tmp_path / "data", [folder],
                        page_max_pixels=16 * 32 * 32)
    summary = run_index(lower, embedder=embedder)
    assert summary.indexed == 1 and summary.unchanged == 1  # the note is not touched
    assert summary.embedded == 2  # the two pages; the book's text is reused
    again = {r["page"]: r["chunk_key"] for r in chunks(lower, modality="image")}
    assert again.keys() == pages.keys() and not set(again.values()) & set(pages.values())
    assert {r["chunk_key"] for r in chunks(lower, modality="text")} == texts
    check_consistent(lower)
    # Left at 0, the default is the device's (this CPU), kept in the index's meta.json.
    from kbterm.resolution import CPU_DEFAULT_PIXELS
    from kbterm.store import Store

    notes = tmp_path / "notes"
    notes.mkdir()
    shutil.copy(folder / "note.md", notes)
    fresh = make_config(index_model_dir, tmp_path / "fresh", [notes])
    auto = Indexer(fresh, embedder=embedder)
    auto.run()
    assert auto.default_pixels() == CPU_DEFAULT_PIXELS
    assert Store(fresh.data_path).read_meta().picture_pixels == CPU_DEFAULT_PIXELS
