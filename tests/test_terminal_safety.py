"""Untrusted text (file names, file contents, errors) never reaches the terminal as raw control
sequences: every command shows them as visible escapes; ``--json`` stays exact."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env, write_config_file
from kbterm.textsafe import is_safe, json_dumps, one_line, visible

HOSTILE = "zebra \x1b]0;PWNED\x07 \x1b]52;c;cHduZWQ=\x07 \x1b[2J text"
RAW = (b"\x1b", b"\x07", b"\xc2\x9b", b"\xe2\x80\xae")  # ESC, BEL, C1 CSI, RLO (as UTF-8)


def assert_no_raw_controls(data: bytes) -> None:
    for raw in RAW:
        assert raw not in data, (raw, data[:2000])


def test_visible_escapes_every_control_but_newline_and_tab():
    assert visible(HOSTILE) == ("zebra \\x1b]0;PWNED\\x07 \\x1b]52;c;cHduZWQ=\\x07 "
                                "\\x1b[2J text")
    assert visible("a\tb\nc\r\nd\re") == "a\tb\nc\nd\\x0de"
    assert visible("\x9b31m \u202eevil\u202c \x7f") == "\\x9b31m \\u202eevil\\u202c \\x7f"
    assert visible("café 网络设置 ✓") == "café 网络设置 ✓"
    assert one_line("two\nlines\tand tab") == "two\\x0alines\\x09and tab"
    assert is_safe("plain text\n") and not is_safe(HOSTILE)


def test_json_stays_exact_and_safe():
    data = {"text": HOSTILE + " \x9b \u202e é 中文", "n": 1}
    text = json_dumps(data)
    assert json.loads(text) == data
    assert_no_raw_controls(text.encode())
    assert "é 中文" in text  # readable, not \\u-escaped


def test_log_messages_are_escaped():
    from kbterm.cli.base import SafeLogFilter

    record = logging.LogRecord("kbterm", logging.INFO, __file__, 1, "indexed %s", (HOSTILE,),
                               None)
    assert SafeLogFilter().filter(record)
    assert record.getMessage() == "indexed " + visible(HOSTILE)


@pytest.fixture(scope="module")
def hostile_index(tmp_path_factory, index_model_dir, index_serve):
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "notes"
    folder.mkdir()
    (folder / "esc.md").write_text(HOSTILE + "\n")
    (folder / "name \x1b]0;TITLE\x07.md").write_text("zebra in a file with a hostile name\n")
    (folder / "broken \x1b[2J.pdf").write_bytes(b"%PDF-1.7 not really")
    data = root / "data"
    config = write_config_file(root / "c.toml", index_model_dir, data_dir=data,
                               extra="[ask]\nmin_rerank_score = 0.0\n",
                               generator="max_new_tokens = 4\n", served=index_serve)
    proc = run(["--config", str(config), "index", "--no-progress", str(folder)])
    return config, proc


def run(args, tty: bool = True):
    """Run kbterm with stdout and stderr on a pseudo-terminal (as a user sees it: click strips
    some escapes when writing to a pipe, and a test on a pipe would miss what a terminal gets)
    and return its raw bytes (both streams in one, as ``stdout``; ``stderr`` empty)."""
    env = subprocess_env(COLUMNS="200")
    env.pop("KBTERM_DATA_DIR", None)
    argv = [sys.executable, "-c", "from kbterm.cli import main; main()", *args]
    if not tty:
        return subprocess.run(argv, capture_output=True, env=env, cwd=REPO, timeout=300)
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=env, cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=300)
    return subprocess.CompletedProcess(argv, code, b"".join(chunks), b"")


def test_index_reports_failures_with_escaped_names(hostile_index):
    _config, proc = hostile_index
    assert proc.returncode == 0, proc.stderr
    assert_no_raw_controls(proc.stdout + proc.stderr)
    assert b"failed: " in proc.stdout and b"broken \\x1b[2J.pdf" in proc.stdout


@pytest.mark.parametrize("args", [
    ["search", "zebra"],
    ["search", "zebra", "--no-rerank"],
    ["ask", "zebra?"],
    ["status", "--all"],
])
def test_commands_show_hostile_text_escaped(hostile_index, args):
    config, _ = hostile_index
    proc = run(["--config", str(config), *args])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert_no_raw_controls(out)
    if args[0] == "search":
        assert b"\\x1b]0;PWNED\\x07" in proc.stdout  # the snippet, visibly escaped
        assert b"name \\x1b]0;TITLE\\x07.md" in proc.stdout
    if args[0] == "status":
        assert b"broken \\x1b[2J.pdf" in proc.stdout
    if args[0] == "ask":
        assert b"\\x1b]0;" in proc.stdout  # a source's file name


def test_search_json_is_exact(hostile_index):
    config, _ = hostile_index
    proc = run(["--config", str(config), "search", "zebra", "--json", "--no-rerank"], tty=False)
    assert proc.returncode == 0, proc.stderr
    assert_no_raw_controls(proc.stdout)
    results = json.loads(proc.stdout)["results"]
    contents = {r["content"].strip() for r in results}
    assert HOSTILE in contents
    assert any(r["metadata"]["source"].endswith("name \x1b]0;TITLE\x07.md") for r in results)
