"""A new user's first commands: folders, doctor's config path, the detached watcher started
from anywhere, and the small things the CLI says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_commands, subprocess_env, write_config_file
from indexing_helpers import kbterm, make_config, run_index
from kbterm.store import Store
from kbterm.watchstate import read_state

KBTERM = Path(sys.executable).parent / "kbterm"  # the console script a user runs


def run_script(args, cwd, env, timeout=180):
    return subprocess.run([str(KBTERM), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def home(tmp_path):
    """A home folder with no config yet, the platform paths inside it."""
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "a.md").write_text("# Kelp\n\nKelp forests grow fast.\n")
    return home


def home_env(home: Path, **extra: str) -> dict[str, str]:
    env = subprocess_env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                         XDG_DATA_HOME=str(home / ".local" / "share"), **extra)
    env.pop("KBTERM_DATA_DIR", None)
    env.pop("KBTERM_CONFIG", None)
    return env


def test_folders_add_creates_the_config_file_and_doctor_shows_its_path(home):
    env = home_env(home)
    config = home / ".config" / "kbterm" / "config.toml"
    doctor = run_script(["doctor"], home, env)
    assert doctor.returncode == 0, doctor.stderr
    assert f"config file   {config} (not created yet" in doctor.stdout
    assert "kbterm folders add PATH" in doctor.stdout

    # (The rest in one process: each command reads the config file afresh.)
    (proc, listing, doctor, again), _ = run_commands(
        [["folders", "add", str(home / "notes")], ["folders", "list"], ["doctor", "--json"],
         ["folders", "add", str(home / "notes" / ".." / "notes")]], env=env, cwd=home)
    assert proc.returncode == 0, proc.stderr
    assert f"created {config}" in proc.stdout and "added ~/notes" in proc.stdout
    assert "kbterm index" in proc.stderr
    text = config.read_text()
    assert text.startswith("# kbterm configuration.")
    assert '"~/notes"' in text and "[library]" in text
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert listing.stdout.splitlines() == ["~/notes"]
    assert json.loads(doctor.stdout)["config_file"] == str(config)
    assert "~/notes is listed already" in again.stdout
    assert text.count('"~/notes"') == 1  # (read after the second add: listed once)


def test_folders_keep_comments_refuse_bad_input_and_never_break_the_file(tmp_path):
    config = tmp_path / "config.toml"
    original = ("# my settings\n[search]\n# how many\ncandidates = 40\n\n"
                "[library]\nfolders = []  # empty for now\n")
    config.write_text(original)
    env = subprocess_env(KBTERM_CONFIG=str(config))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "file.txt").write_text("x")

    missing = run_script(["folders", "add", str(tmp_path / "nope")], tmp_path, env)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"kbterm: error: {tmp_path / 'nope'} does not exist: " \
                                     "kbterm folders add takes folders"
    not_dir = run_script(["folders", "add", str(tmp_path / "file.txt")], tmp_path, env)
    assert not_dir.returncode != 0
    assert config.read_text() == original

    ok = run_script(["folders", "add", str(tmp_path / "a"), str(tmp_path / "a" / "sub")],
                    tmp_path, env)
    assert ok.returncode == 0, ok.stderr
    assert "is inside" in ok.stderr  # a nested folder is worth a note
    text = config.read_text()
    assert "# my settings" in text and "# how many" in text and "candidates = 40" in text
    import tomllib

    assert tomllib.loads(text)["library"]["folders"] == [str(tmp_path / "a"),
                                                          str(tmp_path / "a" / "sub")]
    removed = run_script(["folders", "remove", str(tmp_path / "a" / "sub")], tmp_path, env)
    assert removed.returncode == 0, removed.stderr
    assert tomllib.loads(config.read_text())["library"]["folders"] == [str(tmp_path / "a")]
    typo = run_script(["folders", "remove", str(tmp_path / "b")], tmp_path, env)
    assert typo.returncode == 1 and "is not in [library] folders" in typo.stderr

    config.write_text("[library\nfolders = [")
    broken = run_script(["folders", "add", str(tmp_path / "a")], tmp_path, env)
    assert broken.returncode == 1 and "invalid TOML" in broken.stderr
    assert config.read_text() == "[library\nfolders = ["


def test_folders_remove_takes_the_folders_files_out_of_the_index(tmp_path, index_model_dir,
                                                                  index_embedder):
    keep, drop = tmp_path / "keep", tmp_path / "drop"
    for folder, word in ((keep, "kelp"), (drop, "coral")):
        folder.mkdir()
        (folder / f"{word}.md").write_text(f"# {word}\n\nAbout {word}.\n")
    data = tmp_path / "data"
    config = write_config_file(tmp_path / "c.toml", index_model_dir, data_dir=data)
    run_script(["folders", "add", str(keep), str(drop)], tmp_path, subprocess_env(
        KBTERM_CONFIG=str(config)))
    cfg = make_config(index_model_dir, data, [keep, drop])
    assert run_index(cfg, embedder=index_embedder).indexed == 2
    proc = run_script(["folders", "remove", str(drop)], tmp_path,
                      {**subprocess_env(KBTERM_CONFIG=str(config)), "KBTERM_DATA_DIR": str(data)})
    assert proc.returncode == 0, proc.stderr
    assert "1 file(s) left the index" in proc.stderr
    assert set(Store(data).ledger()) == {str(keep / "kelp.md")}


def test_detached_watcher_starts_from_a_folder_holding_a_kbterm_folder(tmp_path,
                                                                       index_model_dir,
                                                                       index_serve):
    """``cd ~ && kbterm watch --detach`` after cloning into ~/kbterm: the clone's folder must
    not shadow the installed package in the child."""
    home = tmp_path / "home"
    (home / "kbterm").mkdir(parents=True)  # the clone: no __init__.py at its top
    (home / "kbterm" / "README.md").write_text("a clone\n")
    notes = home / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Indexed by a watcher started from the home folder.\n")
    data = tmp_path / "data"
    config = write_config_file(tmp_path / "c.toml", index_model_dir, data_dir=data,
                               served=index_serve)
    env = subprocess_env(KBTERM_CONFIG=str(config))
    env.pop("KBTERM_DATA_DIR", None)
    proc = run_script(["watch", "--detach", str(notes)], home, env)
    assert proc.returncode == 0, proc.stderr
    state = read_state(data)
    try:
        assert state is not None and state.running
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and read_state(data).last_sweep_at == 0:
            time.sleep(0.1)
        assert str(notes / "a.txt") in Store(data).ledger()
    finally:
        stop = run_script(["watch", "--stop"], home, env)
    assert stop.returncode == 0, stop.stderr
    log = (data / "watch.log").read_text()
    assert "ImportError" not in log
    assert "sweep (start) done: indexed 1" in log
    first = log.splitlines()[0]
    assert first[:4].isdigit() and first[4] == "-" and first[10] == " "  # 2026-12-01 17:30:00


def test_kbterm_child_argv_keeps_the_current_folder_off_sys_path():
    from kbterm.child import kbterm_argv

    argv = kbterm_argv(["watch"])
    assert argv[:4] == [sys.executable, "-P", "-m", "kbterm"]


def test_ctrl_c_in_index_says_what_was_kept(tmp_path, index_model_dir, index_serve):
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(4):
        (folder / f"n{i}.md").write_text(f"# Note {i}\n\nText of note {i}.\n")
    data = tmp_path / "data"
    config = write_config_file(tmp_path / "c.toml", index_model_dir, data_dir=data,
                               served=index_serve)
    # The third file's parse is interrupted as a Ctrl-C would: the first two are committed.
    prelude = (
        "import kbterm.indexer as m\n"
        "m.COMMIT_FILES = 1\n"
        "m.EMBED_GROUP_TEXTS = 1\n"  # each file's text embedded at once: finished in turn
        "_sections = m.Indexer._sections\n"
        "def sections(self, job, item):\n"
        "    if job.found.path.endswith('n2.md'):\n"
        "        raise KeyboardInterrupt\n"
        "    yield from _sections(self, job, item)\n"
        "m.Indexer._sections = sections\n"
    )
    proc = kbterm(["--config", str(config), "index", str(folder)], prelude)
    _out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130
    assert "interrupted: kept what was finished: 2 file(s) indexed (2 chunks), 0 removed" in err
    assert sum(r.status == "indexed" for r in Store(data).ledger().values()) == 2


def test_search_and_ask_print_no_library_warning_and_ask_prints_timings(tmp_path,
                                                                         index_model_dir,
                                                                         index_embedder):
    """The models load in each command, as for a new user (no kbterm serve): the libraries
    must say nothing on the terminal.  (The index is built in-process: not the subject.)"""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# Zebra\n\nZebras have stripes.\n")
    data = tmp_path / "data"
    config = write_config_file(tmp_path / "c.toml", index_model_dir, data_dir=data,
                               extra="[ask]\nmin_rerank_score = 0.0\n",
                               generator="max_new_tokens = 4\n")
    assert run_index(make_config(index_model_dir, data, [folder]),
                     embedder=index_embedder).indexed == 1
    # Both commands in one fresh process (one import of torch, not two): search loads the
    # embedder and the reranker, ask the answer model; each library warns, if it does, the
    # first time, so the one process sees everything two would.
    code = ("import sys\nfrom kbterm.cli import main\n"
            "for args in (['search', 'zebra'], ['ask', 'What do zebras have?']):\n"
            "    try:\n"
            f"        main(['--config', {str(config)!r}, *args])\n"
            "    except SystemExit as exc:\n"
            "        assert not exc.code, exc.code\n"
            "    print('-- end of', args[0], file=sys.stderr, flush=True)\n")
    env = subprocess_env()
    env.pop("KBTERM_DATA_DIR", None)
    both = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert both.returncode == 0, both.stderr
    assert "Warning" not in both.stderr and "warn(" not in both.stderr, both.stderr
    err, rest = both.stderr.split("-- end of search\n")
    aerr = rest.split("-- end of ask\n")[0]
    assert "results in" in err
    last = aerr.strip().splitlines()[-1]
    assert last.startswith("answered from 1 sources in ") and "generate" in last, aerr


def test_refused_second_watcher_prints_only_the_refusal(tmp_path, index_model_dir):
    folder = tmp_path / "notes"
    folder.mkdir()
    data = tmp_path / "data"
    config = write_config_file(tmp_path / "c.toml", index_model_dir, data_dir=data)
    first = kbterm(["--config", str(config), "watch", str(folder)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = read_state(data)
            if state is not None and state.running:
                break
            time.sleep(0.1)
        second = kbterm(["--config", str(config), "watch", str(folder)])
        _out, err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert second.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("kbterm: error: ") and f"pid {first.pid}" in err


def test_progress_moves_within_a_long_pdf(tmp_path, index_model_dir, index_embedder):
    import pymupdf

    from kbterm.cli.indexing import IndexProgress

    folder = tmp_path / "docs"
    folder.mkdir()
    doc = pymupdf.open()
    for n in range(1, 6):
        doc.new_page().insert_text((72, 72), f"Page {n} of a report about tides.")
    doc.save(folder / "report.pdf")
    seen = []
    cfg = make_config(index_model_dir, tmp_path / "data", [folder])
    from kbterm.indexer import Indexer

    Indexer(cfg, embedder=index_embedder,
            progress=lambda *call: seen.append(call)).run()
    within = [c for c in seen if c[0] == "file"]
    # the text of every page, then the picture of every page (text first, pictures after)
    assert [c[1:] for c in within] == [(n, 5, f"page {n} of 5") for n in range(1, 6)] * 2
    phases = [c[0] for c in seen if c[0] in ("index", "pictures")]
    assert phases.index("pictures") > max(i for i, p in enumerate(phases) if p == "index")
    with IndexProgress(True) as bar:
        bar("index", 0, 1, str(folder / "report.pdf"))
        bar("file", 2, 5, "page 2 of 5")
        task = bar._progress.tasks[bar._tasks["file"]]
        assert (task.completed, task.total, task.fields["current"]) == (2, 5, "page 2 of 5")
        bar("index", 1, 2, str(folder / "other.pdf"))  # a new file: its bar starts again
        assert "file" not in bar._tasks


def test_watcher_status_line_names_the_file_once_with_its_position():
    from kbterm.watchstate import WatcherState

    state = WatcherState(pid=7, state="indexing", current="/docs/book.pdf",
                         within="page 12 of 285", running=True, responding=True)
    line = state.summary()
    assert line.count("book.pdf") == 1
    assert "book.pdf (page 12 of 285)" in line
