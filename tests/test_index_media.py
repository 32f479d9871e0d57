"""PDFs, images and videos through the whole indexer: exact pages, time ranges, keyframes."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from corpus_builder import book_excerpt
from indexing_helpers import check_consistent, chunks, ledger, make_config, run_index


@pytest.fixture(autouse=True)
def _explicit_data_dir(monkeypatch):
    """These tests name their data folder in the config: KBTERM_DATA_DIR must not override it."""
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)


def unique_line(pdf: Path, page_no: int) -> str:
    """A line of text that appears on ``page_no`` (1-based) and on no other page."""
    import pymupdf

    with pymupdf.open(pdf) as doc:
        texts = [page.get_text() for page in doc]
    for line in texts[page_no - 1].splitlines():
        line = line.strip()
        if 25 <= len(line) <= 60 and sum(line in t for t in texts) == 1:
            return line
    raise AssertionError("no unique line on that page")


BOOK_PAGES = 60  # the first pages of the corpus's book (tests/corpus_builder.py)


@pytest.fixture(scope="module")
def book_index(tmp_path_factory, corpus, index_model_dir, index_embedder):
    base = tmp_path_factory.mktemp("book")
    folder = base / "library"
    folder.mkdir()
    book_excerpt(corpus, folder / "book.pdf", BOOK_PAGES)
    shutil.copy(corpus / "pdf" / "paper.pdf", folder)
    config = make_config(index_model_dir, base / "data", [folder])
    summary = run_index(config, embedder=index_embedder)
    return config, folder, summary


def test_pdf_chunk_cites_the_exact_page(book_index):
    config, folder, summary = book_index
    assert summary.indexed == 2 and summary.failed == 0
    pdf = folder / "book.pdf"
    for page_no in (37, 1, BOOK_PAGES):
        phrase = unique_line(pdf, page_no)  # every page of the generated book has one
        hits = [r for r in chunks(config, path=str(pdf)) if phrase in r["text"]]
        assert hits, (page_no, phrase)
        assert {r["page"] for r in hits} == {page_no}, (phrase, [r["page"] for r in hits])


def test_every_pdf_page_is_also_an_image_chunk(book_index):
    config, folder, _ = book_index
    rows = chunks(config, path=str(folder / "book.pdf"))
    images = Counter(r["page"] for r in rows if r["modality"] == "image")
    assert sorted(images) == list(range(1, BOOK_PAGES + 1)) and set(images.values()) == {1}
    texts = [r for r in rows if r["modality"] == "text"]
    assert {r["page"] for r in texts} == set(range(1, BOOK_PAGES + 1))  # text on every page
    assert ledger(config)[str(folder / "book.pdf")].chunks == len(rows)
    check_consistent(config)


def test_scanned_pdf_page_is_indexed_through_its_image(tmp_path, corpus, index_model_dir,
                                                       index_embedder):
    import pymupdf

    folder = tmp_path / "scans"
    folder.mkdir()
    doc = pymupdf.open()
    for name in ("docpage_0.jpg", "docpage_1.jpg"):
        page = doc.new_page()
        page.insert_image(page.rect, filename=str(corpus / "images" / name))
    doc.save(folder / "scan.pdf")
    config = make_config(index_model_dir, tmp_path / "data", [folder])
    summary = run_index(config, embedder=index_embedder)
    assert summary.indexed == 1
    rows = chunks(config)
    assert [(r["modality"], r["page"]) for r in rows] == [("image", 1), ("image", 2)]


def test_images_and_videos(tmp_path, corpus, index_model_dir, index_embedder):
    folder = tmp_path / "media"
    folder.mkdir()
    for name in ("photo_0.jpg", "beach.jpeg", "docpage_2.jpg"):
        shutil.copy(corpus / "images" / name, folder)
    for name in ("example.mp4", "no_duration.webm"):
        shutil.copy(corpus / "video" / name, folder)
    config = make_config(index_model_dir, tmp_path / "data", [folder], video_segment_seconds=2)
    summary = run_index(config, embedder=index_embedder)
    assert summary.failed == 0 and summary.indexed == 5, summary.failures
    images = chunks(config, modality="image")
    assert sorted(Path(r["path"]).name for r in images) == ["beach.jpeg", "docpage_2.jpg",
                                                           "photo_0.jpg"]
    for name in ("example.mp4", "no_duration.webm"):
        rows = sorted(chunks(config, path=str(folder / name)), key=lambda r: r["start_s"])
        assert rows and all(r["modality"] == "video" for r in rows), name
        assert rows[0]["start_s"] == 0
        for a, b in zip(rows, rows[1:]):
            assert a["end_s"] == pytest.approx(b["start_s"])
            assert b["end_s"] - b["start_s"] <= 2.0 + 1e-6
        assert rows[-1]["end_s"] > rows[-1]["start_s"]
        for r in rows:
            assert Path(r["preview"]).is_file() and r["preview"].endswith(".jpg")
    # A removed video takes its keyframes with it.
    previews = [r["preview"] for r in chunks(config, path=str(folder / "example.mp4"))]
    (folder / "example.mp4").unlink()
    run_index(config, embedder=index_embedder)
    assert not any(Path(p).exists() for p in previews)
    check_consistent(config)


def test_editing_one_pdf_page_reembeds_only_that_page(tmp_path, corpus, index_model_dir,
                                                      index_embedder):
    import pymupdf

    folder = tmp_path / "docs"
    folder.mkdir()
    pdf = folder / "report.pdf"
    shutil.copy(corpus / "pdf" / "report.pdf", pdf)
    config = make_config(index_model_dir, tmp_path / "data", [folder])
    run_index(config, embedder=index_embedder)
    before = len(chunks(config))
    with pymupdf.open(corpus / "pdf" / "report.pdf") as doc:
        pages = len(doc)
        doc[pages - 1].insert_text((72, 72), "An annotation added on the last page.")
        doc.save(pdf)
    summary = run_index(config, embedder=index_embedder)
    assert summary.indexed == 1
    assert summary.reused >= before - 4, (summary.reused, before)
    assert 1 <= summary.embedded <= 4
    assert any("annotation added" in r["text"] for r in chunks(config, page=pages))
