"""Finished work survives a kill: files done while a long one is still being embedded are
committed on time, and a large staged file resumes from its committed rows."""

from __future__ import annotations

import signal

import pymupdf
import pytest

from conftest import write_config_file
from indexing_helpers import (
    PACED,
    explicit_data_dir, check_consistent, kbterm, make_config, run_index, wait_for,
)
from kbterm.store import Store

pytestmark = pytest.mark.usefixtures(explicit_data_dir.__name__)


def test_small_files_are_committed_while_a_long_pdf_is_still_being_read(tmp_path,
                                                                         index_model_dir,
                                                                         index_serve):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"a{i}.md").write_text(f"# Note {i}\n\nA short note, number {i}.\n")
    doc = pymupdf.open()
    for n in range(60):
        doc.new_page().insert_text((72, 72), f"Page {n} of a long report.")
    doc.save(folder / "z-long.pdf")
    data = tmp_path / "data"
    config = write_config_file(tmp_path / "c.toml", index_model_dir, data_dir=data,
                               served=index_serve)
    # The PDF's pages come slowly, as a real 150-page PDF's do on a CPU; the run is killed
    # while it is still being read.
    prelude = (
        "import time\n"
        "import kbterm.indexer as m\n"
        "m.COMMIT_SECONDS = 0.5\n"
        "import kbterm.ingest.pdf as pdf\n"
        "_parse = pdf.parse_pdf\n"
        "def slow(path, ctx):\n"
        "    for section in _parse(path, ctx):\n"
        "        time.sleep(0.25)\n"
        "        yield section\n"
        "pdf.parse_pdf = slow\n"
    )
    proc = kbterm(["--config", str(config), "index", "--no-progress", str(folder)], prelude)
    store = Store(data)
    try:
        wait_for(lambda: sum(r.status == "indexed" for r in store.ledger().values()) >= 3,
                 proc, timeout=120)
        assert proc.poll() is None  # the PDF is still being read
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    indexed = {p.rsplit("/", 1)[-1] for p, r in store.ledger().items() if r.status == "indexed"}
    assert {"a0.md", "a1.md", "a2.md"} <= indexed and "z-long.pdf" not in indexed


def test_a_killed_staged_file_resumes_from_its_committed_rows(tmp_path, index_model_dir,
                                                              index_embedder, index_serve):
    """The killed run embeds through the shared ``kbterm serve``; the resuming run is
    in-process and must reuse the killed run's rows, not embed them again."""
    folder = tmp_path / "big"
    folder.mkdir()
    lines = [f"Line {i}: the harbour log notes ship number {i * 7919 % 100003}."
             for i in range(1200)]
    (folder / "log.txt").write_text("\n".join(lines) + "\n")
    data = tmp_path / "data"
    chunking = "[indexing.chunking.text]\nsize = 32\noverlap = 0\n"
    config = write_config_file(tmp_path / "c.toml", index_model_dir, chunking, data_dir=data,
                               served=index_serve)
    prelude = PACED + "m.STAGE_ROWS = 50\nm.COMMIT_ROWS = 40\n"
    proc = kbterm(["--config", str(config), "index", "--no-progress", str(folder)], prelude)
    store = Store(data)

    def staged_rows() -> int:
        record = next(iter(store.ledger().values()))
        return store.count_staged(record) if record.staging else 0

    try:
        wait_for(lambda: staged_rows() >= 200, proc, timeout=180)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    kept = staged_rows()
    assert kept >= 200
    cfg = make_config(index_model_dir, data, [folder], chunking={"text": {"size": 32,
                                                                          "overlap": 0}})
    summary = run_index(cfg, embedder=index_embedder)
    assert summary.indexed == 1 and summary.recovered == 0
    assert summary.reused >= kept  # the killed run's finished rows were not embedded again
    assert summary.embedded + summary.reused == summary.chunks_written
    check_consistent(cfg)
