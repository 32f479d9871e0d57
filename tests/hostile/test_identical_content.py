"""Identical content is embedded once: the same chunk (by its content fingerprint) within a
file, across files, and across runs reuses one vector."""

from __future__ import annotations

import pymupdf
import pytest

from indexing_helpers import check_consistent, explicit_data_dir, make_config, run_index
from kbterm.store import Store

pytestmark = pytest.mark.usefixtures(explicit_data_dir.__name__)


def chunks(cfg) -> list[dict]:
    return Store(cfg.data_path).live_chunks(["id", "page", "modality", "vector"])


def pdf(path, pages: list[str]) -> None:
    doc = pymupdf.open()
    for text in pages:
        doc.new_page(width=300, height=200).insert_text((36, 72), text)
    doc.save(path)


def test_a_pdf_of_identical_pages_is_embedded_once(tmp_path, index_model_dir, index_embedder):
    folder = tmp_path / "docs"
    folder.mkdir()
    pdf(folder / "same.pdf", ["This page says the same thing."] * 300)
    cfg = make_config(index_model_dir, tmp_path / "data", [folder])
    calls = index_embedder.forward_calls
    summary = run_index(cfg, embedder=index_embedder)
    rows = chunks(cfg)
    assert len(rows) == 600 and {r["page"] for r in rows} == set(range(1, 301))
    assert summary.embedded == 2 and summary.reused == 598  # one text, one page image
    assert index_embedder.forward_calls - calls <= 2
    vectors = {r["modality"]: r["vector"] for r in rows}
    for r in rows:
        assert list(r["vector"]) == list(vectors[r["modality"]])
    check_consistent(cfg)


def test_the_same_page_in_another_file_later_reuses_its_vector(tmp_path, index_model_dir,
                                                               index_embedder):
    folder = tmp_path / "docs"
    folder.mkdir()
    pdf(folder / "a.pdf", ["A page both reports share.", "Only in the first report."])
    cfg = make_config(index_model_dir, tmp_path / "data", [folder])
    first = run_index(cfg, embedder=index_embedder)
    assert first.embedded == 4
    pdf(folder / "b.pdf", ["A page both reports share.", "Only in the second report."])
    second = run_index(cfg, embedder=index_embedder)
    assert second.indexed == 1
    assert (second.embedded, second.reused) == (2, 2)  # its first page, text and image
    shared = [r for r in chunks(cfg) if r["page"] == 1 and r["modality"] == "text"]
    assert len(shared) == 2 and list(shared[0]["vector"]) == list(shared[1]["vector"])
    check_consistent(cfg)
