"""``kbterm watch`` with a real watchdog observer on temp folders and the tiny model.

Most tests run the watcher in a thread of this process (sharing the tiny embedder, so each
test costs seconds); the lock, kill -9, --detach/--stop and hand-over tests run the real
command in subprocesses.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import write_config_file
from indexing_helpers import (PACED, check_consistent, chunks, kbterm, ledger, make_config,
                              wait_for)
from kbterm.config import config_from_dict
from kbterm.lock import LockHeld
from kbterm.store import Store
from kbterm.watch import Pending, Watcher, limit_message
from kbterm.watchstate import read_state


@pytest.fixture(autouse=True)
def _explicit_data_dir(monkeypatch):
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)


def until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a table may be mid-creation
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}: {last!r}")


def watch_config(model_dir: Path, data: Path, folders: list[Path], **watch: Any):
    raw = {"debounce_seconds": 0.2, "batch_seconds": 1.0, "sweep_minutes": 0.0,
           "unload_models_after_seconds": 0.0, **watch}
    return config_from_dict({
        "data_dir": str(data), "library": {"folders": [str(f) for f in folders]},
        "models": {"device": "cpu", "dtype": "float32", **{r: {"model": str(model_dir)}
                                       for r in ("embedder", "reranker", "generator")}},
        "indexing": {"keep_versions_seconds": 0}, "watch": raw,
    })


class Running:
    """A watcher in a thread of this process."""

    def __init__(self, config, embedder, folders=None) -> None:
        self.config = config
        self.watcher = Watcher(config, folders, embedder=embedder)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.errors.append(exc)

    def __enter__(self) -> "Running":
        self.thread.start()
        until(lambda: self.errors or self.watcher.state.last_sweep_at > 0, what="start sweep")
        assert not self.errors, self.errors
        return self

    def __exit__(self, *exc: object) -> None:
        self.watcher.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the watcher did not stop"
        assert not self.errors, self.errors

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until every event so far is processed."""
        time.sleep(self.config.watch.debounce_seconds + 0.3)  # inotify -> handler -> pending
        until(lambda: not len(self.watcher.pending) and not self.watcher.busy
              and self.watcher.state.state in ("idle",), timeout, "the queue to drain")

    def indexed(self) -> dict[str, Any]:
        return {p: r for p, r in ledger(self.config).items() if r.status == "indexed"}

    def texts(self, path: Path) -> list[str]:
        return [r["text"] for r in chunks(self.config, path=str(path))]


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "notes"
    path.mkdir()
    return path


@pytest.fixture
def make_running(tmp_path, index_model_dir, index_embedder):
    def make(folders: list[Path], **watch: Any) -> Running:
        config = watch_config(index_model_dir, tmp_path / "data", folders, **watch)
        return Running(config, index_embedder)
    return make


# --------------------------------------------------------------------------- debouncing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_within_a_file_has_an_eta_from_its_rate():
    from kbterm.watch import eta
    from kbterm.watchstate import WatcherState

    assert eta(100.0, 3, 12, now=101.0) == ""  # too early to say
    assert eta(100.0, 3, 12, now=130.0) == ", 2 min left"  # 10 s a page, 9 to go
    assert eta(100.0, 1, 400, now=160.0) == ", 6.7 h left"
    state = WatcherState(pid=1, state="indexing", current="/d/book.pdf", step="pictures",
                         within="page 3 of 12, 2 min left", running=True, responding=True,
                         pictures_pending=1, picture_files=4)
    assert "book.pdf (pictures: page 3 of 12, 2 min left)" in state.summary()
    assert "text 100%, pictures 75%" in state.summary()


def test_pending_debounces_each_path_and_batches_a_burst():
    clock = Clock()
    pending = Pending(0.5, 5.0, clock=clock)
    pending.add("/a")
    clock.now += 0.3
    pending.add("/a")  # still being written
    clock.now += 0.3
    assert pending.take() == []  # quiet for 0.3 s only
    assert 0 < pending.wait_time() <= 0.2 + 1e-9
    clock.now += 0.2
    assert pending.take() == ["/a"]
    assert pending.wait_time() is None

    # A burst: files keep arriving every 0.1 s; quiet ones wait for the burst to pause...
    for i in range(20):
        pending.add(f"/burst/{i:02d}")
        clock.now += 0.1
    assert pending.take() == []
    assert pending.wait_time() > 0  # never 0 while nothing can be taken: no busy loop
    clock.now += 0.5
    batch = pending.take()
    assert batch == [f"/burst/{i:02d}" for i in range(20)]  # ...then go together, oldest first


def test_pending_folder_takes_the_paths_inside_it():
    clock = Clock()
    pending = Pending(0.5, 5.0, clock=clock)
    pending.add("/root/moved-in")  # a folder moved in: its walk reads every file in it
    for i in range(5):
        pending.add(f"/root/moved-in/sub/f{i}.txt")
    pending.add("/root/moved-in-2/g.txt")  # a sibling whose name starts the same: kept
    clock.now += 0.1
    pending.add("/root/moved-in/late.txt")  # still being written: goes with the folder too
    clock.now += 0.5
    assert pending.take() == ["/root/moved-in", "/root/moved-in-2/g.txt"]
    assert len(pending) == 0


def test_pending_makes_progress_in_a_burst_that_never_pauses():
    clock = Clock()
    pending = Pending(0.5, 2.0, clock=clock)
    taken: list[list[str]] = []
    for i in range(100):  # an event every 0.05 s for 5 s
        pending.add(f"/f{i:03d}")
        clock.now += 0.05
        wait = pending.wait_time()
        assert wait is not None
        batch = pending.take()
        if batch:
            taken.append(batch)
        else:
            assert wait > 0
    assert 1 <= len(taken) <= 3  # released about every batch_seconds, not per file
    assert all(len(b) >= 20 for b in taken)
    clock.now += 0.5
    rest = pending.take()
    assert sorted(sum(taken, []) + rest) == [f"/f{i:03d}" for i in range(100)]


def test_scan_of_dirty_paths_sees_what_a_full_scan_sees(tmp_path):
    """For every file and folder of an awkward tree, scanning just that path finds exactly the
    files a full scan finds under it (ignore rules of the folders above included)."""
    from kbterm.scan import scan, scan_paths, within

    root = tmp_path / "root"
    files = [
        "a.txt", "b c.md", "b c/x.txt", "b/y.txt", "drafts/d.txt", "sub/drafts/e.txt",
        "sub/keep.md", "sub/skip.log.txt", ".hidden/h.txt", "node_modules/m.txt",
        "build/out.txt", "sub/build/in.txt", "data/index/z.txt", "deep/a/b/c/f.json",
        "deep/a/private/p.txt", "deep/a/private/public.txt",
    ]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    (root / ".kbignore").write_text("drafts/\n*.log.txt\n")
    (root / "deep" / "a" / ".kbignore").write_text("private/*\n!private/public.txt\n")
    patterns = ["/build", "*.tmp"]  # anchored at the root: sub/build stays
    roots = [str(root)]
    data = str(root / "data")
    full = sorted(f.path for f in scan(roots, patterns, data).found)
    assert str(root / "sub" / "build" / "in.txt") in full
    assert str(root / "deep" / "a" / "private" / "public.txt") in full
    assert not any(x in p for p in full for x in ("drafts", "skip.log", ".hidden",
                                                   "node_modules", "/root/build", "p.txt"))
    every = [str(root)] + [os.path.join(d, n) for d, dirs, names in os.walk(root)
                           for n in dirs + names]
    for path in every:
        got = sorted(f.path for f in scan_paths(roots, [path], patterns, data).found)
        assert got == [p for p in full if within(p, [path])], path
    # Several dirty paths at once, nested and overlapping: each file once.
    got = [f.path for f in scan_paths(roots, [str(root / "b c"), str(root / "b c" / "x.txt"),
                                             str(root / "b"), str(root / "b" / "y.txt"),
                                             str(root / "gone.txt")],
                                      patterns, data).found]
    assert sorted(got) == [str(root / "b c" / "x.txt"), str(root / "b" / "y.txt")]


# --------------------------------------------------------------------------- file events


def test_create_modify_delete(folder, make_running, index_embedder):
    (folder / "first.txt").write_text("The lighthouse keeper logs the storm.\n")
    with make_running([folder]) as run:
        assert set(run.indexed()) == {str(folder / "first.txt")}  # the start sweep

        (folder / "second.md").write_text("# Tides\n\nSpring tides follow the new moon.\n")
        until(lambda: str(folder / "second.md") in run.indexed(), what="created file")
        assert any("new moon" in t for t in run.texts(folder / "second.md"))

        (folder / "first.txt").write_text("The keeper now records fog, not storms.\n")
        until(lambda: any("fog" in t for t in run.texts(folder / "first.txt")),
              what="modified file")
        assert not any("lighthouse" in t for t in run.texts(folder / "first.txt"))

        (folder / "second.md").unlink()
        until(lambda: str(folder / "second.md") not in ledger(run.config), what="deleted")
        run.settle()
        assert set(run.indexed()) == {str(folder / "first.txt")}
        check_consistent(run.config)
        state = read_state(run.config.data_path)
        assert state.running and state.responding and state.pid == os.getpid()
        assert state.files_done >= 4 and state.queue == 0


def test_a_saved_note_does_not_wait_behind_a_pdfs_pictures(folder, make_running, corpus,
                                                            monkeypatch):
    """The pictures step yields to newer events: the note is indexed while the book's pages
    are still being embedded, and the pages go on afterwards."""
    import kbterm.indexer as indexer
    from corpus_builder import book_excerpt

    monkeypatch.setattr(indexer, "EMBED_GROUP_VISUALS", 1)  # a commit after each page
    drain = indexer.Indexer._drain_staged

    def paced(self, item, *args, **kwargs):  # each page lands a little later (a wider window)
        before = item.written
        drain(self, item, *args, **kwargs)
        if item.job.pictures and item.written != before:
            time.sleep(0.15)

    monkeypatch.setattr(indexer.Indexer, "_drain_staged", paced)
    with make_running([folder]) as run:
        book = folder / "book.pdf"
        book_excerpt(corpus, book, 16)
        store = Store(run.config.data_path)
        until(lambda: (r := ledger(run.config).get(str(book))) is not None and r.pictures
              and store.chunks_table.count_rows("modality = 'image'") >= 2, what="pages landing")
        (folder / "note.md").write_text("# Saved\n\nThe keeper saved this note.\n")
        until(lambda: str(folder / "note.md") in run.indexed(), what="the note")
        # (reads retry: the watcher may be compacting the table under this reader)
        state = until(lambda: ledger(run.config)[str(book)].pictures or "done", what="ledger")
        assert state == "pending"  # the book waited
        until(lambda: not ledger(run.config)[str(book)].pictures, timeout=120,
              what="the book's pages")
        run.settle()
        assert until(lambda: len(chunks(run.config, path=str(book), modality="image")) or -1,
                     what="chunks") == 16
        check_consistent(run.config)
        state = read_state(run.config.data_path)
        assert state.picture_files == 1 and state.pictures_pending == 0


def test_editor_saves_and_temp_files(folder, make_running):
    target = folder / "essay.md"
    target.write_text("# Essay\n\nFirst draft about harbours.\n")
    with make_running([folder]) as run:
        # Atomic save: write a temp file, rename it over the original (most editors).
        tmp = folder / ".essay.md.swx"
        tmp.write_text("# Essay\n\nSecond draft about estuaries.\n")
        os.replace(tmp, target)
        until(lambda: any("estuaries" in t for t in run.texts(target)), what="atomic save")
        # Backup-rename save (vim's default): original renamed to essay.md~, new file written.
        os.rename(target, folder / "essay.md~")
        target.write_text("# Essay\n\nThird draft about lagoons.\n")
        (folder / "essay.md~").unlink()
        # Temp and partial files never reach the index; a finished download does.
        for name in ("notes.txt.swp", "notes.txt~", "report.tmp", "paper.pdf.part",
                     "video.mp4.crdownload", ".hidden.txt", "4913"):
            (folder / name).write_text("scratch")
        part = folder / "data.json.part"
        part.write_text('{"title": "tide tables", "rows": 3}')
        os.rename(part, folder / "data.json")
        until(lambda: str(folder / "data.json") in run.indexed(), what="finished download")
        run.settle()
        until(lambda: any("lagoons" in t for t in run.texts(target)), what="backup save")
        assert set(ledger(run.config)) == {str(target), str(folder / "data.json")}
        assert len(run.texts(target)) == 1
        check_consistent(run.config)


def test_renames_and_moves_embed_nothing(folder, make_running, index_embedder):
    (folder / "sub").mkdir()
    (folder / "a.txt").write_text("Anchors and chains are stored below deck.\n")
    (folder / "sub" / "b.txt").write_text("The bosun inspects the rigging daily.\n")
    with make_running([folder]) as run:
        ids = {p: r.file_id for p, r in run.indexed().items()}
        calls = index_embedder.forward_calls
        os.rename(folder / "a.txt", folder / "renamed.txt")  # rename
        os.rename(folder / "sub" / "b.txt", folder / "b-moved.txt")  # move between folders
        until(lambda: set(run.indexed()) == {str(folder / "renamed.txt"),
                                             str(folder / "b-moved.txt")}, what="renames")
        run.settle()
        assert index_embedder.forward_calls == calls  # re-pointed, not embedded
        files = run.indexed()
        assert files[str(folder / "renamed.txt")].file_id == ids[str(folder / "a.txt")]
        assert run.texts(folder / "renamed.txt") == [
            "Anchors and chains are stored below deck."]
        check_consistent(run.config)


def test_folders_moved_within_in_and_out(tmp_path, folder, make_running, index_embedder):
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "trip").mkdir()
    for i in range(3):
        (folder / "trip" / f"day{i}.txt").write_text(f"Day {i}: sailed past island {i}.\n")
    (outside / "incoming").mkdir()
    (outside / "incoming" / "log.md").write_text("# Log\n\nIncoming folder, indexed on arrival.\n")
    with make_running([folder]) as run:
        calls = index_embedder.forward_calls
        os.rename(folder / "trip", folder / "voyage")  # within: re-pointed
        until(lambda: sorted(run.indexed()) == [str(folder / "voyage" / f"day{i}.txt")
                                                for i in range(3)], what="folder rename")
        run.settle()
        assert index_embedder.forward_calls == calls

        os.rename(folder / "voyage", outside / "voyage")  # out: leaves the index
        os.rename(outside / "incoming", folder / "incoming")  # in: indexed
        until(lambda: set(ledger(run.config)) == {str(folder / "incoming" / "log.md")},
              what="folders moved out and in")
        run.settle()
        assert any("arrival" in t for t in run.texts(folder / "incoming" / "log.md"))
        check_consistent(run.config)


def test_watched_folder_deleted_and_recreated(folder, make_running):
    (folder / "a.txt").write_text("Before the folder was deleted.\n")
    with make_running([folder]) as run:
        shutil.rmtree(folder)
        until(lambda: not ledger(run.config), what="files of the deleted folder removed")
        until(lambda: read_state(run.config.data_path).missing_roots == [str(folder)])
        folder.mkdir()
        (folder / "b.txt").write_text("After it came back.\n")
        until(lambda: set(run.indexed()) == {str(folder / "b.txt")}, what="re-created folder")
        (folder / "c.txt").write_text("And it is watched again.\n")
        until(lambda: str(folder / "c.txt") in run.indexed(), what="events after re-creation")
        assert read_state(run.config.data_path).missing_roots == []
        check_consistent(run.config)


def test_kbignore_and_data_folder_inside_the_watched_folder(tmp_path, index_model_dir,
                                                            index_embedder):
    folder = tmp_path / "home"
    (folder / "drafts").mkdir(parents=True)
    (folder / "drafts" / "d.txt").write_text("A draft that will be ignored.\n")
    (folder / "keep.txt").write_text("A note that stays.\n")
    # The data folder lives inside the watched folder: its own writes must not be events.
    config = watch_config(index_model_dir, folder / "kb-data", [folder])
    with Running(config, index_embedder) as run:
        assert len(run.indexed()) == 2
        (folder / ".kbignore").write_text("drafts/\n")
        until(lambda: set(run.indexed()) == {str(folder / "keep.txt")}, what=".kbignore")
        (folder / "drafts" / "new.txt").write_text("Ignored as soon as it is written.\n")
        run.settle()
        batches = read_state(config.data_path).batches
        time.sleep(2.0)  # no feedback loop from the index's own files
        assert read_state(config.data_path).batches == batches
        assert set(run.indexed()) == {str(folder / "keep.txt")}


def test_burst_of_500_files_is_a_few_batched_writes(folder, make_running):
    with make_running([folder]) as run:
        store = Store(run.config.data_path)
        before = {name: _version(store, name) for name in ("chunks", "files")}
        batches_before = run.watcher.state.batches
        errors: list[BaseException] = []
        seen_max: list[int] = []
        stop = threading.Event()

        def reader() -> None:  # the TUI / kbterm ask reading while the watcher writes
            reader_store = Store(run.config.data_path)
            while not stop.is_set():
                try:
                    rows = reader_store.live_chunks(["path"])
                    counts: dict[str, int] = {}
                    for r in rows:
                        counts[r["path"]] = counts.get(r["path"], 0) + 1
                    seen_max.append(max(counts.values(), default=0))
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
                time.sleep(0.02)

        thread = threading.Thread(target=reader)
        thread.start()
        for i in range(500):
            (folder / f"n{i:03d}.txt").write_text(f"Note {i} about buoy number {i}.\n")
        until(lambda: len(run.indexed()) == 500, 120, "500 files")
        run.settle()
        stop.set()
        thread.join()
        assert not errors, errors[:3]
        assert seen_max and max(seen_max) == 1  # no file ever doubled for a reader
        batches = run.watcher.state.batches - batches_before
        commits = sum(_version(store, n) - before[n] for n in before)
        assert batches <= 5, batches
        assert commits <= 20, commits  # 500 files, not 500 transactions
        check_consistent(run.config)


def _version(store: Store, name: str) -> int:
    table = store.chunks_table if name == "chunks" else store.files_table
    return table.version if table is not None else 0


# --------------------------------------------------------------------------- resilience


def test_lost_events_are_caught_by_a_sweep(folder, make_running):
    with make_running([folder]) as run:
        real_note = run.watcher.note
        run.watcher.note = lambda path, is_dir: None  # events lost (as in a queue overflow)
        (folder / "missed.txt").write_text("Written while events were lost.\n")
        time.sleep(1.0)
        assert str(folder / "missed.txt") not in ledger(run.config)
        run.watcher.note = real_note
        # watchdog logs the kernel's overflow; the watcher turns it into a sweep.
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
        until(lambda: str(folder / "missed.txt") in run.indexed(), what="sweep")
        state = read_state(run.config.data_path)
        assert "max_queued_events" in state.notice


def test_periodic_sweep(folder, make_running):
    with make_running([folder], sweep_minutes=0.02) as run:  # every 1.2 s
        run.watcher.note = lambda path, is_dir: None
        first = run.watcher.state.last_sweep_at
        (folder / "quiet.txt").write_text("Only a sweep can find me.\n")
        until(lambda: str(folder / "quiet.txt") in run.indexed(), 30, "periodic sweep")
        until(lambda: run.watcher.state.last_sweep_at > first, 10, "the sweep's bookkeeping")


def test_watch_limit_reached_says_what_to_do_and_sweeps(folder, make_running, monkeypatch):
    import errno

    from watchdog.observers.api import BaseObserver

    real = BaseObserver.schedule

    def refuse(self, handler, path, **kw):
        if Path(path) == folder:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return real(self, handler, path, **kw)

    monkeypatch.setattr(BaseObserver, "schedule", refuse)
    (folder / "a.txt").write_text("Indexed by the start sweep even without a watch.\n")
    with make_running([folder], sweep_minutes=0.02) as run:
        assert str(folder / "a.txt") in run.indexed()
        notice = read_state(run.config.data_path).notice
        assert "fs.inotify.max_user_watches" in notice and "sudo sysctl" in notice
        (folder / "b.txt").write_text("Found by the fallback sweep.\n")
        until(lambda: str(folder / "b.txt") in run.indexed(), 30, "fallback sweep")
    message = limit_message("/x", OSError(errno.EMFILE, "limit"), 600)
    assert "max_user_instances" in message and "every 10 min" in message


def test_a_failed_watchdog_thread_restarts_the_observer_and_sweeps(folder, make_running):
    import errno

    from watchdog.utils import BaseThread

    class Dying(BaseThread):
        def run(self) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    with make_running([folder]) as run:
        real_note = run.watcher.note
        run.watcher.note = lambda path, is_dir: None
        (folder / "x.txt").write_text("Only the recovery sweep sees this file.\n")
        dying = Dying()
        dying.start()
        dying.join()
        until(lambda: str(folder / "x.txt") in run.indexed(), 30, "recovery sweep")
        assert "fs.inotify.max_user_watches" in read_state(run.config.data_path).notice
        run.watcher.note = real_note
        (folder / "y.txt").write_text("Events flow again after the restart.\n")
        until(lambda: str(folder / "y.txt") in run.indexed(), 30, "events after restart")


def test_models_load_for_work_and_are_released_when_idle(folder, make_running, index_embedder):
    with make_running([folder], unload_models_after_seconds=1.0) as run:
        (folder / "a.txt").write_text("Work arrives, the model loads.\n")
        until(lambda: str(folder / "a.txt") in run.indexed(), what="indexed")
        until(lambda: not index_embedder.loaded, 30, "model released")
        until(lambda: not read_state(run.config.data_path).models_loaded)
        (folder / "b.txt").write_text("More work, the model loads again.\n")
        until(lambda: str(folder / "b.txt") in run.indexed(), what="indexed after release")
    index_embedder.load()


def test_second_writer_is_refused_while_the_watcher_runs(tmp_path, folder, make_running,
                                                         index_model_dir):
    with make_running([folder]) as run:
        with pytest.raises(LockHeld, match=rf"pid {os.getpid()} \(kbterm watch\)"):
            Watcher(run.config, embedder=None).run()
        config = write_config_file(tmp_path / "c.toml", index_model_dir,
                                   data_dir=run.config.data_path)
        proc = kbterm(["--config", str(config), "watch", str(folder)])
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1
        assert "kbterm watch" in err and str(os.getpid()) in err and "Traceback" not in err
        proc = kbterm(["--config", str(config), "index", "--rebuild", str(folder)])
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "kbterm watch" in err


def test_kbterm_index_hands_its_paths_to_the_watcher(tmp_path, folder, make_running,
                                                     index_model_dir):
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.md").write_text("# Elsewhere\n\nA folder the watcher does not follow.\n")
    with make_running([folder]) as run:
        config = write_config_file(tmp_path / "c.toml", index_model_dir,
                                   data_dir=run.config.data_path)
        proc = kbterm(["--config", str(config), "index", "--json", str(other)])
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "is running" in err
        assert json.loads(out)["indexed"] == 1
        assert str(other / "x.md") in run.indexed()
        assert read_state(run.config.data_path).handled


# --------------------------------------------------------------------------- processes


def test_kill_9_in_a_burst_then_restart(tmp_path, folder, index_model_dir, index_serve):
    """The watchers embed through the shared ``kbterm serve``: the subject is what a kill
    leaves in the index, not where the model runs."""
    data = tmp_path / "data"
    config = write_config_file(
        tmp_path / "c.toml", index_model_dir,
        "[indexing]\nkeep_versions_seconds = 0\n[indexing.chunking.text]\nsize = 32\n"
        "overlap = 4\n[watch]\ndebounce_seconds = 0.2\nbatch_seconds = 1.0\n", data_dir=data,
        served=index_serve)
    prelude = PACED + "m.COMMIT_FILES = 8\nm.COMMIT_SECONDS = 0.0\n"
    proc = kbterm(["--config", str(config), "watch", str(folder)], prelude)
    try:
        wait_for(lambda: read_state(data).last_sweep_at > 0, proc, 120)
        for i in range(120):
            (folder / f"n{i:03d}.txt").write_text(f"Note {i}: " + "kelp and coral " * 50)
        store = Store(data)
        wait_for(lambda: 8 <= sum(r.status == "indexed" for r in store.ledger().values())
                 < 120, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    for i in range(120, 130):  # more work while it is down
        (folder / f"n{i:03d}.txt").write_text(f"Note {i}: written while the watcher was down")
    (folder / "n000.txt").unlink()
    cfg = make_config(index_model_dir, data, [folder],
                      chunking={"text": {"size": 32, "overlap": 4}})
    done = {p: r.chunks for p, r in ledger(cfg).items() if r.status == "indexed"}
    for path, n in done.items():  # a reader right after the kill sees whole files only
        assert len(chunks(cfg, path=path)) == n

    proc = kbterm(["--config", str(config), "watch", str(folder)])
    try:
        wanted = {str(folder / f"n{i:03d}.txt") for i in range(1, 130)}
        wait_for(lambda: {p for p, r in store.ledger().items() if r.status == "indexed"}
                 == wanted and read_state(data).state == "idle", proc)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    check_consistent(cfg)
    assert read_state(data).state == "stopped"
    assert not (data / "index" / "run.json").exists()


def test_detach_status_and_stop(tmp_path, folder, index_model_dir, index_serve):
    data = tmp_path / "data"
    config = write_config_file(tmp_path / "c.toml", index_model_dir,
                               "[watch]\ndebounce_seconds = 0.2\n", data_dir=data,
                               served=index_serve)
    (folder / "a.txt").write_text("Indexed by a watcher in the background.\n")
    proc = kbterm(["--config", str(config), "watch", "--detach", str(folder)])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    state = read_state(data)
    assert state.running and state.pid != proc.pid and f"pid {state.pid}" in out
    try:
        until(lambda: read_state(data).last_sweep_at > 0, 120, "start sweep")
        proc = kbterm(["--config", str(config), "status", "--json"])
        out, err = proc.communicate(timeout=120)
        report = json.loads(out)
        assert report["watcher"]["running"] and report["watcher"]["pid"] == state.pid
        assert report["files"] == 1
        proc = kbterm(["--config", str(config), "status"])
        out, _ = proc.communicate(timeout=120)
        assert f"watcher    idle (pid {state.pid})" in out
    finally:
        proc = kbterm(["--config", str(config), "watch", "--stop"])
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped" in out
    after = read_state(data)
    assert not after.running and after.state == "stopped"
    assert "watching" in (data / "watch.log").read_text()
    proc = kbterm(["--config", str(config), "watch", "--stop"])
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "no kbterm watch is running" in err
