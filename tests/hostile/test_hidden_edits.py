"""Content changes that size and mtime miss: a same-size edit whose mtime is restored, or that
lands within a coarse filesystem's mtime resolution of the last index."""

from __future__ import annotations

import os
import time

import pytest

from indexing_helpers import explicit_data_dir, chunks, make_config, run_index
from kbterm.indexer import Indexer

pytestmark = pytest.mark.usefixtures(explicit_data_dir.__name__)


def same_size_edit(path, old: str, new: str, mtime_ns: int) -> None:
    assert len(old.encode()) == len(new.encode())
    path.write_text(new)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def texts(cfg, path) -> str:
    return " ".join(r["text"] for r in chunks(cfg, path=str(path)))


def test_restored_mtime_is_found_by_verify_and_by_a_watcher_event(tmp_path, index_model_dir,
                                                                  index_embedder):
    folder = tmp_path / "notes"
    folder.mkdir()
    note = folder / "note.txt"
    note.write_text("The meeting is on Monday.\n")
    old_ns = time.time_ns() - 3600 * 10**9  # an hour ago: not near any index time
    os.utime(note, ns=(old_ns, old_ns))
    cfg = make_config(index_model_dir, tmp_path / "data", [folder])
    run_index(cfg, embedder=index_embedder)
    same_size_edit(note, "The meeting is on Monday.\n", "The meeting is on Friday.\n", old_ns)

    assert run_index(cfg, embedder=index_embedder).indexed == 0  # size and time say nothing
    assert "Monday" in texts(cfg, note)
    verified = Indexer(cfg, embedder=index_embedder).run(verify=True)
    assert verified.indexed == 1 and "Friday" in texts(cfg, note)

    # A watcher's event on the path hashes it as well.
    same_size_edit(note, "The meeting is on Friday.\n", "The meeting is on Sunday.\n", old_ns)
    indexer = Indexer(cfg, embedder=index_embedder)
    with indexer.session():
        summary = indexer.sync([str(folder)], [str(note)])
    assert summary.indexed == 1 and "Sunday" in texts(cfg, note)
    # ... and an event on an unchanged file embeds nothing.
    with indexer.session():
        again = indexer.sync([str(folder)], [str(note)])
    assert (again.indexed, again.model_calls) == (0, 0)


def test_an_edit_within_a_coarse_mtime_tick_of_the_last_index_is_found(tmp_path,
                                                                       index_model_dir,
                                                                       index_embedder):
    folder = tmp_path / "notes"
    folder.mkdir()
    note = folder / "note.txt"
    tick = (time.time_ns() // 10**9) * 10**9  # whole seconds, as FAT or HFS+ keep them
    note.write_text("Version one of the plan.\n")
    os.utime(note, ns=(tick, tick))
    cfg = make_config(index_model_dir, tmp_path / "data", [folder])
    run_index(cfg, embedder=index_embedder)
    same_size_edit(note, "Version one of the plan.\n", "Version two of the plan.\n", tick)
    summary = run_index(cfg, embedder=index_embedder)
    assert summary.indexed == 1 and "two" in texts(cfg, note)
    # Hashed once more at most: a run long after the tick trusts size and time again.
    later = run_index(cfg, embedder=index_embedder)
    assert (later.indexed, later.model_calls) == (0, 0)
