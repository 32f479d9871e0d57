"""A file swapped between the scan and the read: by a symlink to a file outside the folders,
by a FIFO, by another file.  Driven deterministically: the swap happens inside the indexer's
own steps (right after the scan, right after the hash), never by timing."""

from __future__ import annotations

import os
import threading

import pytest

import kbterm.indexer as indexer_module
from indexing_helpers import (
    explicit_data_dir, check_consistent, chunks, ledger, make_config, run_index,
)

pytestmark = pytest.mark.usefixtures(explicit_data_dir.__name__)

SECRET = "the vault code is 7-4-1-9"


@pytest.fixture
def setup(tmp_path, index_model_dir):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "note.txt").write_text("An ordinary note about gardening.\n")
    (folder / "other.txt").write_text("Another ordinary note, about tomatoes.\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    cfg = make_config(index_model_dir, tmp_path / "data", [folder])
    return folder, outside / "secret.txt", cfg


def swap_after(monkeypatch, name: str, action):
    """Run ``action`` once, right after the indexer's ``name`` step returns."""
    real = getattr(indexer_module, name)
    done = []

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        if not done:
            done.append(True)
            action()
        return result

    monkeypatch.setattr(indexer_module, name, wrapped)


def run_with_deadline(cfg, embedder, seconds=120.0):
    """Index in a thread: a read that blocks would hang the test, so it must end in time."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(s=run_index(cfg, embedder=embedder)),
                              daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "indexing blocked on the swapped entry"
    return out["s"]


def to_symlink(path, target):
    def action():
        path.unlink()
        path.symlink_to(target)
    return action


def to_fifo(path):
    def action():
        path.unlink()
        os.mkfifo(path)
    return action


@pytest.mark.parametrize("step", ["scan", "content_hash"])
def test_swapped_to_a_symlink_outside_is_not_followed(setup, monkeypatch, index_embedder, step):
    folder, secret, cfg = setup
    swap_after(monkeypatch, step, to_symlink(folder / "note.txt", secret))
    summary = run_with_deadline(cfg, index_embedder)
    assert not any(SECRET in r["text"] for r in chunks(cfg))
    record = ledger(cfg)[str(folder / "note.txt")]
    assert record.status == "failed" and "symlink" in record.reason
    assert summary.indexed == 1  # other.txt
    # The next run sees the symlink for what it is.
    monkeypatch.undo()
    run_index(cfg, embedder=index_embedder)
    record = ledger(cfg)[str(folder / "note.txt")]
    assert record.status == "skipped" and "outside the indexed folders" in record.reason
    check_consistent(cfg)


@pytest.mark.parametrize("step", ["scan", "content_hash"])
def test_swapped_to_a_fifo_never_blocks(setup, monkeypatch, index_embedder, step):
    folder, _secret, cfg = setup
    swap_after(monkeypatch, step, to_fifo(folder / "note.txt"))
    summary = run_with_deadline(cfg, index_embedder)
    record = ledger(cfg)[str(folder / "note.txt")]
    assert record.status == "failed" and "FIFO" in record.reason, record.reason
    assert summary.indexed == 1
    check_consistent(cfg)


def test_replaced_by_another_file_after_the_hash_is_not_read_as_the_first(setup, monkeypatch,
                                                                          index_embedder):
    folder, _secret, cfg = setup
    note = folder / "note.txt"

    def replace_file():
        fresh = folder / "fresh.tmp"
        fresh.write_text("A different note that was never hashed.\n")
        os.replace(fresh, note)

    swap_after(monkeypatch, "content_hash", replace_file)
    run_with_deadline(cfg, index_embedder)
    record = ledger(cfg)[str(note)]
    assert record.status == "failed" and "replaced by another file" in record.reason
    monkeypatch.undo()
    run_index(cfg, embedder=index_embedder)  # the next run reads it properly
    assert any("never hashed" in r["text"] for r in chunks(cfg, path=str(note)))
    check_consistent(cfg)
