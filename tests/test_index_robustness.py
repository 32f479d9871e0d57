"""Bad input never stops a run; kill -9 in the middle leaves a consistent index that the next run
completes.  These run the real ``kbterm`` command in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env, write_config_file
from indexing_helpers import (
    PACED,
    chunks,
    check_consistent,
    kbterm,
    ledger,
    make_config,
    run_index,
    wait_for,
)
from kbterm.store import Store


@pytest.fixture(autouse=True)
def _explicit_data_dir(monkeypatch):
    """These tests name their data folder in the config: KBTERM_DATA_DIR must not override it."""
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)


def write_config(path: Path, model_dir: Path, data_dir: Path, extra: str = "",
                 served: object = None) -> Path:
    return write_config_file(path, model_dir, "[indexing]\nkeep_versions_seconds = 0\n" + extra,
                             data_dir=data_dir, served=served)


def make_bad_folder(root: Path, corpus: Path) -> dict[str, str]:
    """A folder of awkward files; returns name -> expected status."""
    import pymupdf

    root.mkdir(parents=True)
    expected = {}
    shutil.copy(corpus / "pdf" / "small-table.pdf", root / "good.pdf")
    expected["good.pdf"] = "indexed"
    (root / "empty.txt").write_bytes(b"")
    expected["empty.txt"] = "skipped"
    (root / "empty.pdf").write_bytes(b"")
    expected["empty.pdf"] = "skipped"
    data = (corpus / "pdf" / "report-short.pdf").read_bytes()
    (root / "truncated.pdf").write_bytes(data[: len(data) // 3])
    expected["truncated.pdf"] = "failed|indexed"
    doc = pymupdf.open(corpus / "pdf" / "small-table.pdf")
    doc.save(root / "locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u",
             owner_pw="o")
    doc.close()
    expected["locked.pdf"] = "failed"
    (root / "binary.txt").write_bytes((corpus / "images" / "beach.jpeg").read_bytes())
    expected["binary.txt"] = "failed"
    (root / "latin.txt").write_bytes(b"caf\xe9 na\xefve \xff\xfe valid text after bad bytes\n")
    expected["latin.txt"] = "indexed"
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    expected["broken.jpg"] = "failed"
    (root / "broken.mp4").write_bytes(os.urandom(4096))
    expected["broken.mp4"] = "failed"
    shutil.copy(corpus / "images" / "photo_1.jpg", root / "photo with spaces ✓.jpg")
    expected["photo with spaces ✓.jpg"] = "indexed"
    (root / "line\nbreak.md").write_text("# Title\n\nA file whose name has a newline.\n")
    expected["line\nbreak.md"] = "indexed"
    (root / "ünïcødé 日本.txt").write_text("Unicode names are fine.\n")
    expected["ünïcødé 日本.txt"] = "indexed"
    (root / "dangling.txt").symlink_to(root / "does-not-exist.txt")
    expected["dangling.txt"] = "failed"
    (root / "loop.txt").symlink_to(root / "loop.txt")
    expected["loop.txt"] = "failed"
    outside = root.parent / "outside.txt"
    outside.write_text("outside the indexed folder\n")
    (root / "escape.txt").symlink_to(outside)
    expected["escape.txt"] = "skipped"
    (root / "secret.txt").write_text("nobody may read this\n")
    os.chmod(root / "secret.txt", 0)
    expected["secret.txt"] = "failed"
    return expected


def _drop_dac_override() -> None:
    """In a child run as root: drop the capabilities that let root read any file, so that a
    file without read permission is unreadable as it is for a normal user."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def can_drop_dac_override() -> bool:
    """Whether a file without read permission is unreadable to our children."""
    if os.geteuid() != 0:
        return True
    with tempfile.NamedTemporaryFile() as probe:
        os.chmod(probe.name, 0)
        try:
            proc = subprocess.run([sys.executable, "-c", f"open({probe.name!r}).read()"],
                                  preexec_fn=_drop_dac_override, capture_output=True)
        except (OSError, subprocess.SubprocessError):
            return False
    return proc.returncode != 0


def test_bad_input_is_recorded_and_the_rest_indexed(corpus, index_model_dir, index_serve):
    """Root reads every file; the child drops that power so file permissions apply.  The
    child embeds through the shared ``kbterm serve`` (its tokenizer: the copied model)."""
    as_root = os.geteuid() == 0
    permissions_apply = can_drop_dac_override()
    base = Path(tempfile.mkdtemp(prefix="kbterm-bad-"))
    try:
        os.chmod(base, 0o777)
        model = base / "model"
        shutil.copytree(index_model_dir, model)
        root = base / "folder"
        expected = make_bad_folder(root, corpus)
        data = base / "data"
        config = write_config(base / "config.toml", model, data, served=index_serve)
        for p in [base, *base.rglob("*")]:
            if not p.is_symlink() and p.name != "secret.txt":
                os.chmod(p, 0o777 if p.is_dir() else 0o666)
        kwargs: dict = {}
        if as_root and permissions_apply:
            kwargs["preexec_fn"] = _drop_dac_override
        if not permissions_apply:  # root that cannot give up reading everything
            expected["secret.txt"] = "indexed"
        proc = kbterm(["--config", str(config), "index", str(root)], **kwargs)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert "warning" in err and "kbterm status" in err
        assert out.startswith("indexed "), out

        files = Store(data).ledger()
        got = {Path(p).name: r for p, r in files.items()}
        assert set(got) == set(expected), sorted(set(got) ^ set(expected))
        for name, status in expected.items():
            assert got[name].status in status.split("|"), (name, got[name])
            if got[name].status != "indexed":
                assert got[name].reason, name
        reasons = {name: got[name].reason.lower() for name in got}
        assert "password" in reasons["locked.pdf"]
        assert "binary" in reasons["binary.txt"]
        assert "empty" in reasons["empty.txt"]
        if permissions_apply:
            assert "permission" in reasons["secret.txt"]
        assert "broken symlink" in reasons["dangling.txt"]
        assert "loop" in reasons["loop.txt"]
        assert "outside" in reasons["escape.txt"]
        assert "video" in reasons["broken.mp4"]
        assert "image" in reasons["broken.jpg"]
        cfg = make_config(model, data)
        latin = chunks(cfg, path=str(root / "latin.txt"))
        assert latin and "caf" in latin[0]["text"] and "valid text after bad bytes" in \
            latin[0]["text"]
        assert chunks(cfg, path=str(root / "line\nbreak.md"))
        check_consistent(cfg)

        status = kbterm(["--config", str(config), "status"], **kwargs)
        sout, serr = status.communicate(timeout=300)
        assert status.returncode == 0, serr
        assert "failed (" in sout and "locked.pdf" in sout and "password" in sout.lower()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_usage_errors_exit_2_and_unusable_data_dir_exits_1(tmp_path, index_model_dir):
    config = write_config(tmp_path / "c.toml", index_model_dir, tmp_path / "data")
    proc = kbterm(["--config", str(config), "index", str(tmp_path / "missing")])
    proc.communicate(timeout=300)
    assert proc.returncode == 2
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data folder should be")
    bad = write_config(tmp_path / "bad.toml", index_model_dir, blocker / "data")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha\n")
    proc = kbterm(["--config", str(bad), "index", str(folder)])
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "cannot write the index" in err and "Traceback" not in err


@pytest.mark.parametrize("moment", ["between-commits", "while-staging"])
def test_kill_9_then_run_again(tmp_path, corpus, index_model_dir, index_embedder, index_serve,
                               moment):
    """The killed run embeds through the shared ``kbterm serve`` (the subject is the index's
    durability, not where the model runs); the resuming run is in-process."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(40):
        (folder / f"note-{i:02d}.txt").write_text(f"Note {i}: " + "tide and lamp " * 40 + "\n")
    big = folder / "big.txt"
    big.write_text("".join(f"Paragraph {i} about storms.\n" * 6 for i in range(150)))
    data = tmp_path / "data"
    config = write_config(tmp_path / "c.toml", index_model_dir, data,
                          "[indexing.chunking.text]\nsize = 32\noverlap = 4\n", served=index_serve)
    # Each commit (of finished files, or of a staged file's rows) is followed by a pause, so
    # the moment lasts long enough to be seen and the kill lands inside it.
    prelude = (
        PACED + "m.COMMIT_FILES = 4\nm.COMMIT_SECONDS = 0.0\nm.STAGE_ROWS = 8\n"
        "m.COMMIT_ROWS = 8\n"
    )
    proc = kbterm(["--config", str(config), "index", "--no-progress", str(folder)], prelude)
    store = Store(data)
    try:
        if moment == "between-commits":
            wait_for(lambda: sum(r.status == "indexed" for r in store.ledger().values()) >= 8,
                     proc)
        else:
            wait_for(lambda: any(r.staging for r in store.ledger().values())
                     and store.chunks_table.count_rows("generation = '"
                                                       + next(r.staging for r in
                                                              store.ledger().values()
                                                              if r.staging) + "'") > 0,
                     proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done_before = {p for p, r in store.ledger().items() if r.status == "indexed"}
    assert (data / "index" / "run.json").exists()

    # A reader right after the kill sees only complete files.
    cfg = make_config(index_model_dir, data, [folder],
                      chunking={"text": {"size": 32, "overlap": 4}})
    for path in done_before:
        assert len(chunks(cfg, path=path)) == ledger(cfg)[path].chunks

    summary = run_index(cfg, embedder=index_embedder)
    assert summary.unchanged >= len(done_before)
    assert summary.indexed + summary.unchanged == 41
    files = ledger(cfg)
    assert len(files) == 41 and all(r.status == "indexed" for r in files.values())
    check_consistent(cfg)
    assert not (data / "index" / "run.json").exists()
    again = run_index(cfg, embedder=index_embedder)
    assert again.unchanged == 41 and again.model_calls == 0


def test_ctrl_c_keeps_finished_files_and_exits_130(tmp_path, index_model_dir, index_embedder,
                                                   index_serve):
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(60):
        (folder / f"note-{i:02d}.txt").write_text(f"Note {i}: " + "gull and buoy " * 60 + "\n")
    data = tmp_path / "data"
    config = write_config(tmp_path / "c.toml", index_model_dir, data,
                          "[indexing.chunking.text]\nsize = 32\noverlap = 4\n", served=index_serve)
    # Each commit is followed by a pause, so the run is still going when the signal lands
    # (the tiny model indexes the 60 notes faster than the test can read the ledger).
    prelude = PACED + "m.COMMIT_FILES = 4\nm.COMMIT_SECONDS = 0.0\n"
    proc = kbterm(["--config", str(config), "index", "--no-progress", str(folder)], prelude)
    store = Store(data)
    try:
        wait_for(lambda: sum(r.status == "indexed" for r in store.ledger().values()) >= 4, proc)
        proc.send_signal(signal.SIGINT)
    finally:
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (data / "index" / "run.json").exists()  # a clean stop
    cfg = make_config(index_model_dir, data, [folder],
                      chunking={"text": {"size": 32, "overlap": 4}})
    check_consistent(cfg)
    kept = sum(r.status == "indexed" for r in ledger(cfg).values())
    assert 4 <= kept < 60
    summary = run_index(cfg, embedder=index_embedder)
    assert summary.unchanged == kept and summary.indexed == 60 - kept
