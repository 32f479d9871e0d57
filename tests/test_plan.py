"""``kbterm index --plan`` (issue #16): its counts equal what the run then embeds; it writes
nothing; its time comes from rates measured on the embedding host."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_commands
from corpus_builder import book_excerpt
from indexing_helpers import chunks, make_config, run_index
from kbterm.indexer import Indexer
from kbterm.plan import PER_RUN_SECONDS, Planner, Rates, estimate
from test_index_robustness import write_config


@pytest.fixture(autouse=True)
def _explicit_data_dir(monkeypatch):
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)


@pytest.fixture
def folder(tmp_path, corpus) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    for i in range(3):
        (folder / f"note-{i}.md").write_text(f"# Note {i}\n\n" + f"Tide table {i}. " * 200)
    (folder / "copy.md").write_text((folder / "note-0.md").read_text())  # the same passages
    book_excerpt(corpus, folder / "book.pdf", 3)
    shutil.copy(corpus / "images" / "photo_1.jpg", folder)
    shutil.copy(corpus / "video" / "example.mp4", folder)
    return folder


def plan(config, embedder):
    indexer = Indexer(config, embedder=embedder)
    return Planner(indexer).count(indexer.roots())


def test_the_plan_counts_what_the_run_embeds(tmp_path, folder, index_model_dir, index_embedder):
    config = make_config(index_model_dir, tmp_path / "data", [folder])
    work = plan(config, index_embedder)
    assert not (tmp_path / "data" / "index").exists()  # the plan wrote nothing
    assert work.files == 7 and work.unchanged == 0 and not work.unreadable
    summary = run_index(config, embedder=index_embedder)
    assert summary.embedded == work.embeddings
    rows = Counter(r["modality"] for r in chunks(config))
    copies = len(chunks(config, path=str(folder / "copy.md")))
    assert copies >= 2 and rows["text"] == work.passages + copies  # copy.md's: embedded once
    pages = [r for r in chunks(config, modality="image") if r["page"] is not None]
    assert len(pages) == work.pages == 3
    assert rows["image"] - len(pages) == work.photos == 1
    assert rows["video"] == work.segments >= 1
    assert work.text_tokens > 0 and work.page_tokens > 0 and work.segment_tokens > 0

    # After the run: nothing to do.  After an edit: the new passages only.
    again = plan(config, index_embedder)
    assert (again.files, again.unchanged, again.embeddings) == (0, 7, 0)
    note = folder / "note-1.md"
    note.write_text(note.read_text() + "\nA new closing line about the spring tide.\n")
    edited = plan(config, index_embedder)
    assert edited.files == 1 and edited.reused >= 1
    assert run_index(config, embedder=index_embedder).embedded == edited.embeddings


def test_the_estimate_adds_the_measured_costs():
    from kbterm.plan import Work

    work = Work(files=2, passages=3, text_tokens=1000, pages=2, page_tokens=2000,
                page_pixels=2_000_000)
    rates = Rates(text_token=0.01, visual_token=0.1, draw_pixel=1e-6, load=5.0)
    est = estimate(work, rates)
    assert est.text_seconds == pytest.approx(5.0 + PER_RUN_SECONDS + 2 * 0.02 + 10.0)
    assert est.picture_seconds == pytest.approx(200.0 + 2.0 + 2 * 0.02)
    assert estimate(work, rates, page_tokens=1000, page_pixels=1_000_000).picture_seconds \
        == pytest.approx(100.0 + 1.0 + 2 * 0.02)


def test_kbterm_index_plan_measures_the_host_once_and_writes_no_index(tmp_path, folder,
                                                                      index_model_dir,
                                                                      index_serve):
    data = tmp_path / "data"
    config = write_config(tmp_path / "c.toml", index_model_dir, data, served=index_serve)
    args = ["--config", str(config), "index", "--plan", str(folder)]
    (first, as_json, text), _ = run_commands([args, args + ["--json"], args])
    assert first.returncode == 0, first.stderr
    assert "measuring the embedding speed" in first.stderr
    assert "measuring" not in as_json.stderr  # kept in latency.json
    data_json = json.loads(as_json.stdout)
    assert data_json["embeddings"] == data_json["passages"] + 3 + 1 + data_json["segments"]
    assert data_json["rates"]["text_token"] > 0 and data_json["rates"]["visual_token"] > 0
    assert data_json["seconds"] == pytest.approx(data_json["text_seconds"]
                                                 + data_json["picture_seconds"])
    assert "to index   7 files (0 unchanged)" in text.stdout
    assert "3 page images" in text.stdout and "(searchable first)" in text.stdout
    assert "pages at 1,843,200 pixels" in text.stdout  # what another resolution would cost
    assert not (data / "index").exists() and (data / "latency.json").exists()


def test_a_large_run_says_first_what_it_will_do(tmp_path, index_model_dir, index_embedder):
    from kbterm.backends.latency import rates
    from kbterm.plan import LARGE_FILES, rates_key, run_header

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(LARGE_FILES):
        (folder / f"n{i:03d}.txt").write_text(f"Note {i} about the harbour. " * 20)
    config = make_config(index_model_dir, tmp_path / "data", [folder])
    indexer = Indexer(config, embedder=index_embedder)
    lines = run_header(indexer, indexer.roots())
    assert lines[0].startswith(f"plan: {LARGE_FILES} files to index: about ")
    assert "kbterm index --plan" in lines[1]  # no rates known yet: not measured in a run
    rates(config.data_path, index_embedder, rates_key(config, index_embedder))  # measured
    lines = run_header(indexer, indexer.roots())
    assert lines[1].strip().startswith("about ") and "(the text first: about" in lines[1]
    small = make_config(index_model_dir, tmp_path / "small", [folder / "n000.txt"])
    assert run_header(Indexer(small, embedder=index_embedder), [str(folder / "n000.txt")]) == []
