"""A damaged or unusual data folder (issue 13, part 6): table files cut short, a version file
cut short, a damaged vector cache, a read-only data folder, a full disk.  Each is said in one
line with what to run, what can be repaired is (``kbterm index --repair``, and the cheap check
of every ``kbterm index``), readers work without writing, and nothing committed is lost.

Damage is made by the tests on indexes they build; a full disk is a tiny tmpfs (when this
process may mount one) or a commit made to fail with the error LanceDB gives."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import write_config_file
from indexing_helpers import (
    check_consistent,
    explicit_data_dir,
    kbterm,
    ledger,
    make_config,
    run_index,
)
from kbterm.errors import KbtermError
from kbterm.retrieval import Searcher
from kbterm.store import Store

pytestmark = pytest.mark.usefixtures(explicit_data_dir.__name__)

NOTES = {
    "tides.md": "# Tides\n\nSpring tides follow the new moon and the full moon.\n",
    "lamps.txt": "The lighthouse lamp is trimmed at dusk by the keeper.\n",
    "xylo.txt": "A xylophonic melody drifted over the harbour at night.\n",
    "rope.md": "# Rigging\n\nHemp rope swells when wet; nylon rope does not.\n",
    "salt.txt": "Cargo of salt and timber aboard the Albatross.\n",
    "gulls.txt": "Gulls wheel over the quay when the boats come in.\n",
}
MORE = {
    "fog.txt": "Fog rolled in over the breakwater before dawn.\n",
    "kelp.md": "# Kelp\n\nKelp forests shelter young fish along the coast.\n",
    "buoy.txt": "The bell buoy rang all night in the swell.\n",
}


def build(tmp_path: Path, model_dir: Path, embedder, notes=NOTES, data: Path | None = None):
    folder = tmp_path / "notes"
    folder.mkdir(exist_ok=True)
    for name, text in notes.items():
        (folder / name).write_text(text)
    cfg = make_config(model_dir, data or tmp_path / "data", [folder])
    summary = run_index(cfg, embedder=embedder)
    assert summary.failed == 0 and summary.indexed == len(notes)
    return cfg, folder


def config_file(tmp_path: Path, model_dir: Path, cfg, served: object) -> Path:
    """The config of ``cfg`` for the command line; its models are the shared ``kbterm serve``
    (``served``): these tests are about the data folder, not where the models run."""
    return write_config_file(tmp_path / "config.toml", model_dir,
                             extra="[indexing]\nkeep_versions_seconds = 0",
                             data_dir=cfg.data_path, served=served)


def run_cli(args: list[str], prelude: str = "", timeout: float = 600) -> tuple[int, str, str]:
    proc = kbterm(args, prelude=prelude)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def assert_one_line(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "panicked" not in err, err
    for needle in needles:
        assert needle in lines[0], err


def searchable(cfg, embedder, folder: Path, notes=NOTES) -> None:
    """Every note is found (by its own words, as a keyword hit) and the vector scores are the
    cosines of the stored vectors: the index is consistent and searchable."""
    searcher = Searcher(cfg, embedder=embedder)
    results = searcher.search("harbour tides lamp", k=50, rerank=False)
    assert {Path(h.path).name for h in results.hits} == set(notes)
    table = Store(cfg.data_path).chunks_table
    stored = {r["id"]: np.asarray(r["vector"], dtype=np.float32) for r in
              table.search().select(["id", "vector"]).limit(None).to_arrow().to_pylist()}
    query = embedder.embed(["harbour tides lamp"],
                           instruction=cfg.models.embedder.query_instruction)[0]
    assert {h.id for h in results.hits if h.embedding_score is not None} == set(stored)
    for hit in results.hits:
        assert hit.embedding_score == pytest.approx(float(stored[hit.id] @ query), abs=2e-3)
    for name, text in notes.items():
        word = max(text.split(), key=len).strip(".;#")
        hits = searcher.search(word, k=5, rerank=False).hits
        assert any(Path(h.path).name == name and h.keyword_score for h in hits), (name, word)


def cut(path: Path, keep: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * keep))


def newest_manifest(table: Path) -> Path:
    """The version file of a Lance table's latest version (named u64::MAX - version)."""
    return min((table / "_versions").glob("*.manifest"), key=lambda p: int(p.stem))


# ---------------------------------------------------------------- tables cut short


def test_a_cut_data_file_is_one_line_and_the_next_index_reembeds_only_its_rows(
        tmp_path, index_model_dir, index_embedder, index_serve):
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    for name, text in MORE.items():  # a second data file: the one that will be cut
        (folder / name).write_text(text)
    assert run_index(cfg, embedder=index_embedder).indexed == len(MORE)
    data_files = sorted((cfg.data_path / "index" / "chunks.lance" / "data").glob("*.lance"),
                        key=lambda p: p.stat().st_mtime_ns)
    cut(data_files[-1])
    conf = config_file(tmp_path, index_model_dir, cfg, index_serve)

    for args in (["status"], ["search", "harbour", "--no-rerank"]):
        code, _out, err = run_cli(["--config", str(conf), *args])
        assert code == 1
        assert_one_line(err, "is damaged", "chunks table", "run: kbterm index --repair")

    # A plain `kbterm index` finds it (it used to report success) and repairs it: the rows of
    # the cut file are embedded again, nothing else.
    summary = run_index(cfg, embedder=index_embedder)
    assert "repaired the index" in summary.repair and "3 lost" in summary.repair
    assert summary.embedded == len(MORE) and summary.failed == 0
    check_consistent(cfg)
    searchable(cfg, index_embedder, folder, {**NOTES, **MORE})
    assert run_index(cfg, embedder=index_embedder).repair == ""  # whole again: no repair


def test_a_cut_version_file_rolls_back_and_repair_reembeds_what_it_lost(
        tmp_path, index_model_dir, index_embedder, index_serve):
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    (folder / "lamps.txt").write_text("The lighthouse lamp burns whale oil on stormy nights.\n")
    assert run_index(cfg, embedder=index_embedder).indexed == 1
    newest = newest_manifest(cfg.data_path / "index" / "chunks.lance")
    cut(newest)  # the commit that held the edit of lamps.txt
    conf = config_file(tmp_path, index_model_dir, cfg, index_serve)

    code, _out, err = run_cli(["--config", str(conf), "status"])
    assert code == 1  # (LanceDB used to panic here, with a Rust backtrace)
    assert_one_line(err, "is damaged", "chunks table", newest.name, "kbterm index --repair")

    summary = run_index(cfg, embedder=index_embedder, repair=True)
    assert "repaired the index" in summary.repair and "1 files to embed again" in summary.repair
    assert summary.embedded == 1 and summary.reused == 0
    check_consistent(cfg)
    notes = dict(NOTES, **{"lamps.txt": "whale"})
    searchable(cfg, index_embedder, folder, notes)


def test_a_cut_ledger_is_rebuilt_from_the_chunks_without_embedding(
        tmp_path, index_model_dir, index_embedder, index_serve):
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    (folder / "broken.txt").write_bytes(b"\x00\x01binary\x00" * 50)  # a failed file, too
    run_index(cfg, embedder=index_embedder)
    for data_file in (cfg.data_path / "index" / "files.lance" / "data").glob("*.lance"):
        cut(data_file, 0.3)
    conf = config_file(tmp_path, index_model_dir, cfg, index_serve)

    code, out, err = run_cli(["--config", str(conf), "index", "--repair", "--json",
                              str(folder)])
    assert code == 0, err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert "files ledger" in summary["repair"] and "rebuilt from their chunks" in summary["repair"]
    assert summary["embedded"] == 0 and summary["reused"] == len(NOTES)
    check_consistent(cfg)
    files = ledger(cfg)
    assert {Path(p).name for p, r in files.items() if r.status == "indexed"} == set(NOTES)
    assert files[str(folder / "broken.txt")].status in ("failed", "skipped")
    searchable(cfg, index_embedder, folder)


def test_a_damaged_keyword_index_is_rebuilt_by_repair(tmp_path, index_model_dir, index_embedder):
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    for part in (cfg.data_path / "index" / "chunks.lance" / "_indices").glob("*/*"):
        cut(part)
    results = Searcher(cfg, embedder=index_embedder).search("xylophonic", rerank=False)
    assert any("keyword search unavailable" in w and "--repair" in w for w in results.warnings)
    assert results.hits  # the vectors still answer

    summary = run_index(cfg, embedder=index_embedder, repair=True)
    assert "keyword index rebuilt" in summary.repair and summary.embedded == 0
    check_consistent(cfg)
    searchable(cfg, index_embedder, folder)


def test_a_damaged_meta_file_is_written_again(tmp_path, index_model_dir, index_embedder):
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    meta = cfg.data_path / "index" / "meta.json"
    before = json.loads(meta.read_text())
    meta.write_text(meta.read_text()[:20])
    summary = run_index(cfg, embedder=index_embedder)
    assert "meta.json written again" in summary.repair and summary.embedded == 0
    after = json.loads(meta.read_text())
    assert (after["embedding_model"], after["dimension"]) == \
        (before["embedding_model"], before["dimension"])
    searchable(cfg, index_embedder, folder)


# ---------------------------------------------------------------- the vector cache


@pytest.mark.parametrize("damage", ["garbled", "cut"])
def test_a_damaged_vector_cache_is_never_served(tmp_path, index_model_dir, index_embedder,
                                                 caplog, damage):
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    first = Searcher(cfg, embedder=index_embedder).search("harbour", k=50, rerank=False)
    (generation,) = (cfg.data_path / "cache").glob("v-*")
    vectors = generation / "vectors.f16"
    if damage == "garbled":
        with open(vectors, "r+b") as fh:
            fh.seek(64)
            fh.write(np.full(200, 9132, dtype=np.float16).tobytes())
    else:
        cut(vectors, 0.6)
    with caplog.at_level(logging.WARNING, logger="kbterm.vectors"):
        again = Searcher(cfg, embedder=index_embedder).search("harbour", k=50, rerank=False)
    assert [(h.id, round(h.embedding_score, 4)) for h in again.hits] == \
        [(h.id, round(h.embedding_score, 4)) for h in first.hits]
    assert all(-1.01 <= h.embedding_score <= 1.01 for h in again.hits)
    assert any("vector cache" in r.getMessage() and "damaged" in r.getMessage()
               and "building it again" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kbterm.vectors"):  # rebuilt: quiet again
        Searcher(cfg, embedder=index_embedder).search("harbour", rerank=False)
    assert not caplog.records


# ---------------------------------------------------------------- a read-only data folder


@contextmanager
def read_only(folder: Path):
    """``folder`` read-only for this process: permissions, or (root ignores them) a read-only
    bind mount of it onto itself."""
    if os.geteuid() != 0:
        modes = {}
        for root, dirs, files in os.walk(folder):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                modes[name] = os.stat(name).st_mode
                os.chmod(name, modes[name] & ~0o222)
        try:
            yield
        finally:
            for name, mode in modes.items():
                os.chmod(name, mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot make a folder read-only here (root, and mount is not permitted)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")
        yield
    finally:
        # Lazily: a memory map of the vector cache may still hold a file open.
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.parametrize("cache", ["complete", "missing"])
def test_search_status_and_the_app_work_on_a_read_only_data_folder(
        tmp_path, corpus, index_model_dir, index_embedder, caplog, monkeypatch, cache,
        index_serve):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where page previews go instead
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    shutil.copy(corpus / "pdf" / "small-table.pdf", folder / "table.pdf")  # (page previews)
    assert run_index(cfg, embedder=index_embedder).indexed == 1
    files = len(NOTES) + 1
    expected = Searcher(cfg, embedder=index_embedder).search("harbour", k=50, rerank=False)
    if cache == "missing":
        shutil.rmtree(cfg.data_path / "cache")
    conf = config_file(tmp_path, index_model_dir, cfg, index_serve)
    before = sorted(str(p) for p in cfg.data_path.rglob("*"))
    with read_only(cfg.data_path):
        with caplog.at_level(logging.WARNING):
            searcher = Searcher(cfg, embedder=index_embedder)
            got = searcher.search("harbour", k=50, rerank=False)
            assert [(h.id, round(h.embedding_score, 4)) for h in got.hits] == \
                [(h.id, round(h.embedding_score, 4)) for h in expected.hits]
            assert not got.warnings
            assert searcher.file_count == files
            pages = [h for h in got.hits if h.file_type == "pdf" and h.modality == "image"]
            assert pages and all(h.image_path and os.path.isfile(h.image_path) for h in pages)
            if cache == "missing":  # rendered again, into a private temporary folder
                assert all(h.image_path.startswith(str(tmp_path / f"kbterm-{os.getuid()}-pages"))
                           for h in pages)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

        code, out, err = run_cli(["--config", str(conf), "status"])
        assert code == 0 and err.strip() == "", err
        assert f"files      {files}" in out

        app_sees(cfg, index_embedder, files)
    assert sorted(str(p) for p in cfg.data_path.rglob("*")) == before  # nothing was written


def app_sees(cfg, embedder, files: int) -> None:
    """The app on this data folder: counts in the status bar, results, no error."""
    import asyncio

    pytest.importorskip("textual")
    from kbterm.tui.app import make_app

    async def scenario() -> None:
        app = make_app(cfg, searcher=Searcher(cfg, embedder=embedder))
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(600):
                await pilot.pause(0.05)
                if f"{files} files" in str(app.query_one("#status").render()):
                    break
            await pilot.press(*"harbour")
            for _ in range(600):
                await pilot.pause(0.05)
                if app.results is not None and app.results.query == "harbour" \
                        and app.shown_items():
                    break
            assert app.shown_items(), "no results shown"
            assert f"{files} files" in str(app.query_one("#status").render())
            assert app.last_error == ""

    asyncio.run(scenario())


# ---------------------------------------------------------------- a full disk

LANCE_ENOSPC = ("lance error: LanceError(IO): No space left on device (os error 28), "
                "/root/.cargo/registry/src/index.crates.io-0/lance-file-13.0.0/src/writer/"
                "structural.rs:258:9")


def test_a_full_disk_is_one_line_and_keeps_what_was_committed(tmp_path, index_model_dir,
                                                              index_embedder, index_serve):
    """The commit fails as LanceDB fails on a full disk (deterministic), in the CLI."""
    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    for name, text in MORE.items():
        (folder / name).write_text(text)
    conf = config_file(tmp_path, index_model_dir, cfg, index_serve)
    prelude = (
        "import kbterm.store as s\n"
        "def full(self, *a, **k):\n"
        f"    raise RuntimeError({LANCE_ENOSPC!r})\n"
        "s.Store.replace = full\n"
    )
    code, _out, err = run_cli(["--config", str(conf), "index", str(folder)], prelude=prelude)
    assert code == 1
    assert_one_line(err, f"the disk holding {cfg.data_path} is full",
                    "free space and run kbterm index again")
    check_consistent(cfg)
    assert {Path(p).name for p in ledger(cfg)} == set(NOTES)  # what was committed is kept
    searchable(cfg, index_embedder, folder)

    # And a Python write (meta.json) that meets the full disk.
    real = Store.write_meta

    def full(self, meta):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.meta_path))

    Store.write_meta = full
    try:
        with pytest.raises(KbtermError, match="is full"):
            run_index(cfg, embedder=index_embedder)
    finally:
        Store.write_meta = real
    summary = run_index(cfg, embedder=index_embedder)
    check_consistent(cfg)
    searchable(cfg, index_embedder, folder, {**NOTES, **MORE})
    assert summary.failed == 0


class FullDisk:
    """A chunks table on a full disk: every commit fails as LanceDB's does; reads work."""

    def __init__(self, table) -> None:
        self._table = table

    def __getattr__(self, name):
        return getattr(self._table, name)

    def _full(self, *args, **kwargs):
        raise RuntimeError(LANCE_ENOSPC)

    merge_insert = add = delete = update = _full


def test_a_full_disk_is_never_blamed_on_the_file_being_read(tmp_path, index_model_dir,
                                                            index_embedder, monkeypatch):
    """A commit made while a file is being read (a finished file waiting behind it) fails on
    the full disk: the run stops, and the file being read is not recorded as failed (it would
    not be tried again once space is freed)."""
    import kbterm.indexer as indexer_module
    from kbterm.store import CHUNKS

    cfg, folder = build(tmp_path, index_model_dir, index_embedder)
    long = {f"log{n}.txt": " ".join(f"entry{n}-{i} tide" for i in range(600)) + "\n"
            for n in range(3)}  # more chunks than one embedding group each
    for name, text in long.items():
        (folder / name).write_text(text)
    monkeypatch.setattr(indexer_module, "EMBED_GROUP_TEXTS", 4)
    monkeypatch.setattr(indexer_module, "COMMIT_SECONDS", 0.0)  # commit as soon as one waits
    real = Store._latest

    def latest(self, name):
        table = real(self, name)
        return FullDisk(table) if name == CHUNKS and table is not None else table

    monkeypatch.setattr(Store, "_latest", latest)
    with pytest.raises(KbtermError, match=f"the disk holding {cfg.data_path} is full"):
        run_index(cfg, embedder=index_embedder)
    monkeypatch.setattr(Store, "_latest", real)
    assert not [p for p, r in ledger(cfg).items() if r.status != "indexed"]
    check_consistent(cfg)

    summary = run_index(cfg, embedder=index_embedder)  # space freed
    assert summary.failed == 0 and summary.indexed == len(long)
    check_consistent(cfg)
    assert {Path(p).name for p, r in ledger(cfg).items() if r.status == "indexed"} == \
        set(NOTES) | set(long)


@contextmanager
def tiny_disk(folder: Path, size: str = "4m"):
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the disk holding ``folder`` but ``leave`` bytes."""
    filler = folder / "filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def test_a_really_full_disk_keeps_the_index_and_its_readers(tmp_path, index_model_dir,
                                                           index_embedder):
    """A real full disk (a 4 MB tmpfs): the run stops with the one-line error, the index keeps
    every commit before it, search still works (the vector cache cannot be written: it is held
    in memory), and once space is freed the next run finishes the work."""
    with tiny_disk(tmp_path / "disk") as disk:
        cfg, folder = build(tmp_path, index_model_dir, index_embedder, data=disk / "data")
        big = {f"log{n}.txt": " ".join(f"entry{n}-{i} tide" for i in range(1200)) + "\n"
               for n in range(6)}
        for name, text in big.items():
            (folder / name).write_text(text)
        filler = fill(disk, 24 * 1024)
        with pytest.raises(KbtermError, match=f"the disk holding {cfg.data_path} is full"):
            run_index(cfg, embedder=index_embedder)
        check_consistent(cfg)
        assert set(NOTES) <= {Path(p).name for p in ledger(cfg)}
        searchable(cfg, index_embedder, folder)

        filler.unlink()
        summary = run_index(cfg, embedder=index_embedder)
        assert summary.failed == 0
        check_consistent(cfg)
        assert {Path(p).name for p, r in ledger(cfg).items()
                if r.status == "indexed"} == set(NOTES) | set(big)
