"""``kbterm index`` end to end with the tiny model: change detection, renames, deletes, bad
input, consistency after kills, rebuilds, LanceDB hygiene."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from indexing_helpers import chunks, check_consistent, ledger, make_config, run_index
from kbterm.indexer import Indexer
from kbterm.lock import LockHeld, WriterLock
from kbterm.store import IndexMismatch, Store


@pytest.fixture(autouse=True)
def _explicit_data_dir(monkeypatch):
    """These tests name their data folder in the config: KBTERM_DATA_DIR must not override it."""
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)


@pytest.fixture
def notes(tmp_path, corpus):
    folder = tmp_path / "notes"
    folder.mkdir()
    shutil.copy(corpus / "text" / "qwen3-vl-embedding-readme.md", folder / "readme.md")
    shutil.copy(corpus / "text" / "subtitles-unicode.srt", folder / "subs.srt")
    (folder / "plan.txt").write_text("Buy a lantern.\nWalk to the lighthouse at dusk.\n")
    sub = folder / "deep" / "deeper"
    sub.mkdir(parents=True)
    # Over two chunks of 512 tokens with any tokenizer (about 15 tokens a line).
    (sub / "log.txt").write_text("The keeper wrote every storm into the log.\n" * 80)
    return folder


@pytest.fixture
def cfg(tmp_path, index_model_dir, notes):
    return make_config(index_model_dir, tmp_path / "data", [notes])


def test_index_then_nothing_changed_costs_no_model_call(cfg, notes, index_embedder):
    first = run_index(cfg, embedder=index_embedder)
    assert first.indexed == 4 and first.failed == 0 and first.embedded > 0
    check_consistent(cfg)
    rows = chunks(cfg)
    assert {Path(r["path"]).name for r in rows} == {"readme.md", "subs.srt", "plan.txt",
                                                    "log.txt"}
    plan = [r for r in rows if r["path"].endswith("plan.txt")]
    assert plan[0]["text"].startswith("Buy a lantern.") and plan[0]["line_start"] == 1
    assert plan[0]["line_end"] == 2 and plan[0]["modality"] == "text"
    assert all(r["model"] == str(cfg.models.embedder.model) and r["dim"] == 64 for r in rows)

    calls = index_embedder.forward_calls
    second = run_index(cfg, embedder=index_embedder)
    assert (second.indexed, second.unchanged, second.model_calls) == (0, 4, 0)
    assert index_embedder.forward_calls == calls


def test_markdown_chunks_carry_heading_and_line_ranges(cfg, notes, index_embedder):
    run_index(cfg, embedder=index_embedder)
    lines = (notes / "readme.md").read_text(encoding="utf-8").split("\n")
    md = [r for r in chunks(cfg) if r["path"].endswith("readme.md")]
    assert len(md) > 3
    for row in md:
        # The chunk's text is found in the file starting at the line it names.
        first_line = row["text"].split("\n", 1)[0].strip()
        assert first_line in lines[row["line_start"] - 1], row
        assert row["line_end"] >= row["line_start"]
    assert any(" > " in r["title"] or r["title"] for r in md)


def test_changed_file_is_replaced_and_unchanged_chunks_reuse_vectors(cfg, notes,
                                                                      index_embedder):
    run_index(cfg, embedder=index_embedder)
    log = notes / "deep" / "deeper" / "log.txt"
    before = chunks(cfg, path=str(log))
    assert len(before) >= 2
    log.write_text(log.read_text() + "A new line about the foghorn.\n")
    summary = run_index(cfg, embedder=index_embedder)
    assert summary.indexed == 1 and summary.unchanged == 3
    assert summary.reused >= 1  # the first chunk did not change
    after = chunks(cfg, path=str(log))
    assert any("foghorn" in r["text"] for r in after)
    assert len({r["generation"] for r in after}) == 1
    assert {r["generation"] for r in before}.isdisjoint({r["generation"] for r in after})
    check_consistent(cfg)


def test_touch_without_change_updates_ledger_only(cfg, notes, index_embedder):
    run_index(cfg, embedder=index_embedder)
    path = notes / "plan.txt"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    summary = run_index(cfg, embedder=index_embedder)
    assert summary.indexed == 0 and summary.model_calls == 0 and summary.unchanged == 4
    assert ledger(cfg)[str(path)].mtime_ns == st.st_mtime_ns + 5_000_000_000


def test_rename_and_move_repoint_without_embedding(cfg, notes, index_embedder):
    run_index(cfg, embedder=index_embedder)
    old = notes / "plan.txt"
    ids_before = {r["id"] for r in chunks(cfg, path=str(old))}
    moved_dir = notes / "archive"
    moved_dir.mkdir()
    new = moved_dir / "plan renamed ü.txt"
    old.rename(new)
    (notes / "deep").rename(notes / "moved-deep")
    calls = index_embedder.forward_calls
    summary = run_index(cfg, embedder=index_embedder)
    assert summary.renamed == 2 and summary.indexed == 0 and summary.removed == 0
    assert index_embedder.forward_calls == calls
    assert {r["id"] for r in chunks(cfg, path=str(new))} == ids_before
    assert not chunks(cfg, path=str(old))
    files = ledger(cfg)
    assert str(new) in files and str(old) not in files
    assert str(notes / "moved-deep" / "deeper" / "log.txt") in files
    check_consistent(cfg)


def test_deleted_files_leave_the_index(cfg, notes, index_embedder):
    run_index(cfg, embedder=index_embedder)
    (notes / "subs.srt").unlink()
    shutil.rmtree(notes / "deep")
    summary = run_index(cfg, embedder=index_embedder)
    assert summary.removed == 2
    assert {Path(p).name for p in ledger(cfg)} == {"readme.md", "plan.txt"}
    assert not [r for r in chunks(cfg) if "log.txt" in r["path"] or "subs" in r["path"]]
    check_consistent(cfg)


def test_indexing_a_subfolder_does_not_remove_the_rest(cfg, notes, index_embedder):
    run_index(cfg, embedder=index_embedder)
    summary = run_index(cfg, [notes / "deep"], embedder=index_embedder)
    assert summary.removed == 0 and summary.unchanged == 1
    assert len(ledger(cfg)) == 4


def test_hidden_ignored_and_kbignore(tmp_path, index_model_dir, index_embedder):
    root = tmp_path / "root"
    for rel in ["keep.txt", ".hidden/secret.txt", "node_modules/pkg/readme.md",
                "drafts/draft.txt", "drafts/keep-me.txt", "build/out.txt", "x.swp",
                "notes.tmp", ".dotfile.txt", "sub/data.json"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {rel}\n")
    (root / ".kbignore").write_text("# comment\ndrafts/\n!keep-me.txt\n")
    (root / "sub" / ".kbignore").write_text("*.json\n")
    config = make_config(index_model_dir, tmp_path / "data", [root],
                         ignore=["*.swp", "*.tmp", "/build"])
    run_index(config, embedder=index_embedder)
    names = sorted(os.path.relpath(p, root) for p in ledger(config))
    assert names == ["keep.txt"]


def test_data_dir_inside_an_indexed_folder_is_skipped(tmp_path, index_model_dir,
                                                      index_embedder):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("alpha\n")
    config = make_config(index_model_dir, root / "kbdata", [root])
    run_index(config, embedder=index_embedder)
    run_index(config, embedder=index_embedder)
    assert list(ledger(config)) == [str(root / "a.txt")]


def test_model_change_is_detected_and_rebuild_reembeds(tmp_path, notes, index_model_dir,
                                                       index_embedder):
    config = make_config(index_model_dir, tmp_path / "data", [notes])
    run_index(config, embedder=index_embedder)
    other_dir = tmp_path / "other-model"
    shutil.copytree(index_model_dir, other_dir)
    other = make_config(other_dir, tmp_path / "data", [notes])
    with pytest.raises(IndexMismatch, match="kbterm index --rebuild"):
        Indexer(other).run()
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder

    embedder = Embedder(ModelSpec("embedder", str(other_dir), device="cpu", dtype="float32"),
                        limits=index_embedder.limits)
    summary = Indexer(other, embedder=embedder).run(rebuild=True)
    assert summary.indexed == 4 and summary.embedded > 0
    meta = Store(other.data_path).read_meta()
    assert meta is not None and meta.embedding_model == str(other_dir)
    assert {r["model"] for r in chunks(other)} == {str(other_dir)}
    check_consistent(other)


def test_lock_refuses_a_second_writer(cfg, index_embedder):
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    with WriterLock(cfg.data_path, "kbterm watch"):
        with pytest.raises(LockHeld, match=rf"pid {os.getpid()} \(kbterm watch\)"):
            run_index(cfg, embedder=index_embedder)
    run_index(cfg, embedder=index_embedder)  # released: works


def test_concurrent_reader_never_sees_a_file_half_indexed_or_doubled(cfg, notes,
                                                                     index_embedder):
    run_index(cfg, embedder=index_embedder)
    log = notes / "deep" / "deeper" / "log.txt"
    versions = ["Short version.\n", "The keeper wrote every storm into the log.\n" * 60]
    allowed = {len(chunks(cfg, path=str(log)))}
    counts: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        store = Store(cfg.data_path)
        while not stop.is_set():
            counts.append(sum(1 for r in store.live_chunks(["path"]) if r["path"] == str(log)))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(4):
            log.write_text(versions[i % 2])
            os.utime(log, ns=(time.time_ns(), time.time_ns() + i))
            run_index(cfg, embedder=index_embedder)
            allowed.add(len(chunks(cfg, path=str(log))))
    finally:
        stop.set()
        thread.join()
    assert counts and set(counts) <= allowed, (set(counts), allowed)
    check_consistent(cfg)


def test_many_single_file_updates_leave_few_versions(cfg, notes, index_embedder):
    run_index(cfg, embedder=index_embedder)
    plan = notes / "plan.txt"
    for i in range(25):
        plan.write_text(f"Plan number {i}.\n")
        run_index(cfg, embedder=index_embedder)
    versions = Store(cfg.data_path).versions()
    # Without clean-up each run leaves 2-3 versions per table (75 here).
    assert versions["chunks"] <= 20 and versions["files"] <= 20, versions
    assert [r["text"] for r in chunks(cfg, path=str(plan))] == ["Plan number 24."]
    check_consistent(cfg)


def test_large_file_is_staged_and_committed_whole(cfg, notes, index_embedder, monkeypatch):
    import kbterm.indexer as indexer_module

    monkeypatch.setattr(indexer_module, "STAGE_ROWS", 4)
    monkeypatch.setattr(indexer_module, "COMMIT_ROWS", 3)
    big = notes / "big.txt"
    big.write_text("".join(f"Paragraph {i} about tides and lamps.\n" * 8 for i in range(40)))
    config = make_config(cfg.models.embedder.model, cfg.data_path, [notes],
                         chunking={"text": {"size": 32, "overlap": 4}})
    summary = run_index(config, embedder=index_embedder)
    assert summary.failed == 0
    rows = chunks(config, path=str(big))
    assert len(rows) == ledger(config)[str(big)].chunks > 8
    check_consistent(config)


def test_a_file_that_turns_empty_or_into_a_symlink_loses_its_chunks(tmp_path, cfg, notes,
                                                                      index_embedder):
    run_index(cfg, embedder=index_embedder)
    plan, log = notes / "plan.txt", notes / "deep" / "deeper" / "log.txt"
    plan.write_bytes(b"")
    log.unlink()
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not in the library\n")
    log.symlink_to(outside)
    run_index(cfg, embedder=index_embedder)
    files = ledger(cfg)
    assert (files[str(plan)].status, files[str(plan)].reason) == ("skipped", "empty file")
    assert files[str(log)].status == "skipped" and "outside" in files[str(log)].reason
    assert not chunks(cfg, path=str(plan)) and not chunks(cfg, path=str(log))
    check_consistent(cfg)


def test_an_input_the_model_rejects_fails_its_file_only(cfg, index_embedder):
    from kbterm.indexer import Summary, _InFlight, _Job
    from kbterm.models.inputs import Video
    from kbterm.scan import Found
    from kbterm.store import FileRecord

    def inflight(name: str) -> _InFlight:
        found = Found(f"/x/{name}", "text", 1, 1)
        return _InFlight(_Job(found, FileRecord("id-" + name, found.path, "text"), None, []))

    good, bad = inflight("good.txt"), inflight("bad.mp4")
    rows = [{"modality": "text"}, {"modality": "video"}, {"modality": "text"}]
    queue = [(good, rows[0], "a good sentence"), (bad, rows[1], Video([])),
             (good, rows[2], "another good sentence")]
    good.waiting, bad.waiting = 2, 1
    summary = Summary()
    Indexer(cfg, embedder=index_embedder)._embed(queue, summary)
    assert good.waiting == 0 and not good.error and summary.embedded == 2
    assert rows[0]["vector"].shape == (64,) and rows[2]["vector"].shape == (64,)
    assert "vector" not in rows[1]
    assert bad.error.startswith("cannot embed video") and "frame" in bad.error


def test_changed_chunk_settings_reindex_the_files_they_shape(tmp_path, cfg, notes, corpus,
                                                            index_model_dir, index_embedder):
    shutil.copy(corpus / "images" / "photo_2.jpg", notes)
    run_index(cfg, embedder=index_embedder)
    before = len(chunks(cfg, path=str(notes / "readme.md")))
    smaller = make_config(index_model_dir, cfg.data_path, [notes],
                          chunking={"markdown": {"size": 128, "overlap": 16}})
    summary = run_index(smaller, embedder=index_embedder)
    assert summary.indexed == 1 and summary.unchanged == 4  # only the Markdown file
    after = chunks(smaller, path=str(notes / "readme.md"))
    assert len(after) > before
    assert ledger(smaller)[str(notes / "readme.md")].settings == "chunk=128/16"
    again = run_index(smaller, embedder=index_embedder)
    assert again.indexed == 0 and again.model_calls == 0
    check_consistent(smaller)


def test_dimension_change_is_detected_and_rebuild_uses_the_new_size(tmp_path, notes):
    from kbterm.models.random_checkpoint import build_random_checkpoint

    model_dir = build_random_checkpoint(tmp_path / "wide-model", text_hidden=128)
    full = make_config(model_dir, tmp_path / "data", [notes])
    run_index(full)
    assert {r["dim"] for r in chunks(full)} == {128}
    same = make_config(model_dir, tmp_path / "data", [notes])
    same.models.embedder.dimension = 128  # the size it has: nothing to do
    assert run_index(same).unchanged == 4
    short = make_config(model_dir, tmp_path / "data", [notes])
    short.models.embedder.dimension = 64
    with pytest.raises(IndexMismatch, match=r"dimension 128\).*dimension 64"):
        run_index(short)
    from kbterm.status import collect

    assert not collect(short).model_matches
    summary = run_index(short, rebuild=True)
    assert summary.indexed == 4
    rows = chunks(short)
    assert {r["dim"] for r in rows} == {64}
    assert Store(short.data_path).read_meta().dimension == 64
    check_consistent(short)


def test_status_counts_files_and_chunks_per_type_and_status(tmp_path, cfg, notes,
                                                            index_embedder):
    from kbterm.status import collect, render

    empty = collect(cfg)
    assert not empty.exists and "kbterm index" in render(empty)
    (notes / "broken.json").write_bytes(b"\x00\x01binary\x00" * 50)
    run_index(cfg, embedder=index_embedder)
    report = collect(cfg)
    assert report.exists and report.files == 5
    assert report.files_by_type["text"] == {"indexed": 3}  # .txt and .srt
    assert report.files_by_type["json"] == {"failed": 1}
    assert report.files_by_type["markdown"] == {"indexed": 1}
    assert report.chunks == len(chunks(cfg)) == sum(report.chunks_by_type.values())
    assert report.chunks_by_modality == {"text": report.chunks}
    assert report.failures[0]["path"].endswith("broken.json")
    assert "binary" in report.failures[0]["reason"]
    assert report.embedding_model == str(cfg.models.embedder.model) and report.dimension == 64
    assert report.disk_bytes > 0 and report.last_indexed_at > 0 and report.model_matches
    text = render(report)
    assert "failed (1)" in text and "broken.json" in text and "dimension 64" in text
