"""The kbterm command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import run_commands, subprocess_env, write_config_file

REPO = Path(__file__).resolve().parent.parent


def run(args, env=None, code=None, **kwargs):
    proc = subprocess.run(
        [sys.executable, "-c", code or "from kbterm.cli import main; main()", *args],
        capture_output=True, text=True, env=env or subprocess_env(), timeout=300, cwd=REPO,
        **kwargs,
    )
    return proc


def write_config(tmp_path, model_dir, extra=""):
    return write_config_file(tmp_path / "config.toml", model_dir, extra,
                             generator="max_new_tokens = 4\n")


def test_help_does_not_import_torch_or_textual():
    code = (
        "import sys\n"
        "from kbterm.cli import cli\n"
        "cli.main(args=['--help'], prog_name='kbterm', standalone_mode=False)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'textual', 'lancedb') "
        "if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    proc = run([], code=code)
    assert proc.returncode == 0, proc.stderr
    assert "doctor" in proc.stdout and "pull" in proc.stdout
    assert "HEAVY=\n" in proc.stdout


def test_console_script_help():
    exe = Path(sys.executable).parent / "kbterm"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "Usage: kbterm" in proc.stdout


def test_doctor_reports_models_device_data_dir_and_versions(tmp_path, tiny_model_dir):
    config = write_config(tmp_path, tiny_model_dir)
    env = subprocess_env(KBTERM_CONFIG=str(config), KBTERM_DATA_DIR=str(tmp_path / "kb"),
                         HF_HUB_CACHE=str(tmp_path / "hub"))
    (proc, text), _ = run_commands([["doctor", "--json"], ["doctor"]], env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["config_file"] == str(config)
    assert report["data_dir"] == str(tmp_path / "kb")
    assert set(report["packages"]) >= {"torch", "transformers", "lancedb"}
    assert report["packages"]["torch"][0].isdigit()
    roles = {m["role"]: m for m in report["models"]}
    assert set(roles) == {"embedder", "reranker", "generator"}
    for m in roles.values():
        assert m["available"] is True and m["local_path"] == str(tiny_model_dir)
        assert (m["device"], m["dtype"], m["attention"]) == ("cpu", "float32", "sdpa")
    assert "runs on cpu, float32, attention sdpa" in text.stdout


def test_doctor_load_runs_every_model(tmp_path, tiny_model_dir, capsys):
    """In this process (torch is imported here already); the next test runs --load in a
    subprocess."""
    from kbterm.cli import main

    config = write_config(tmp_path, tiny_model_dir)
    try:
        main(["--config", str(config), "doctor", "--load"])
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr()
    out = capsys.readouterr().out
    for role in ("embedder", "reranker", "generator"):
        assert f"{role:<10} ok: loaded in" in out


def test_offline_missing_model_is_one_line_with_the_fetch_command(tmp_path, tiny_model_dir):
    config = tmp_path / "config.toml"
    config.write_text(
        "[models]\ndevice = \"cpu\"\ndtype = \"float32\"\n"
        "[models.embedder]\nmodel = \"Qwen/Qwen3-VL-Embedding-2B\"\n"
        f"[models.reranker]\nmodel = \"{tiny_model_dir}\"\n"
        f"[models.generator]\nmodel = \"{tiny_model_dir}\"\n"
    )
    env = subprocess_env(KBTERM_CONFIG=str(config), HF_HUB_OFFLINE="1",
                         HF_HUB_CACHE=str(tmp_path / "empty-hub"))
    proc = run(["doctor", "--load"], env=env)
    assert proc.returncode == 1
    assert ("embedder   error: embedder model Qwen/Qwen3-VL-Embedding-2B is not downloaded and "
            "kbterm is offline; fetch it with: kbterm pull embedder") in proc.stdout
    assert "reranker   ok: loaded in" in proc.stdout
    assert "generator  ok: loaded in" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    # (--load shows the listing first.)
    assert "not downloaded (fetch: kbterm pull embedder)" in proc.stdout


def test_config_error_is_one_line_without_traceback(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[search]\ncandidats = 3\n")
    proc = run(["--config", str(config), "doctor"])
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"kbterm: error: {config}: unknown key 'search.candidats' "
        "(did you mean 'search.candidates'?)"
    )


def test_usage_error_exits_2():
    proc = run(["pull", "everything"])
    assert proc.returncode == 2
    assert "Invalid value" in proc.stderr


def test_index_progress_bar_tracks_phases_rate_and_current_file():
    from kbterm.cli.indexing import IndexProgress

    with IndexProgress(True) as progress:
        progress("scan", 0, 0, "")
        progress("index", 0, 10, "/docs/a.pdf")
        progress("index", 4, 10, "/docs/sub/line\nbreak.pdf")
        task = progress._progress.tasks[progress._tasks["index"]]
        assert (task.completed, task.total) == (4, 10)
        assert task.fields["current"] == "line break.pdf"
        assert task.fields["rate"].endswith("files/s")
        assert task.description == "indexing text"
