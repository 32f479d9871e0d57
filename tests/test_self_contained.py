"""The tests and benchmarks need nothing outside the repository: no sibling folder, no file
whose licence forbids vendoring it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import corpus_builder
from conftest import REPO, subprocess_env

# Spelled in pieces so that this file does not match its own patterns.
OUTSIDE = [
    re.compile(re.escape(".." + "/" + "shared")),
    re.compile(re.escape("shared" + "/" + "corpus")),
    re.compile(r"parent\s*/\s*['\"]" + "shared"),  # the repository's parent, then shared
    re.compile("/work/" + "shared"),
]
SOURCE_SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".json", ".sh", ".tcss"}


def _source_files() -> list[Path]:
    files = []
    for top in ("tests", "benchmarks"):
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and path.suffix in SOURCE_SUFFIXES and "__pycache__" not in \
                    path.parts and "__snapshots__" not in path.parts:
                files.append(path)
    return files


def test_no_test_or_benchmark_reads_outside_the_repository():
    files = _source_files()
    assert REPO / "tests" / "conftest.py" in files and REPO / "benchmarks" / "common.py" in files
    hits = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                 .splitlines(), 1):
            if any(p.search(line) for p in OUTSIDE):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hits == []


def test_conftest_and_builder_paths_stay_inside_the_repository():
    import conftest

    for module in (conftest, corpus_builder):
        for name, value in vars(module).items():
            if isinstance(value, Path):
                resolved = value.resolve()
                assert resolved == REPO or REPO in resolved.parents, (module.__name__, name)


def test_vendored_files_are_listed_with_their_licence_and_none_is_generated_kind():
    data = REPO / "tests" / "data"
    sources = (data / "SOURCES.md").read_text(encoding="utf-8")
    vendored = [p for p in sorted(data.rglob("*")) if p.is_file()
                and p.parent.name in ("images", "text")]
    assert vendored
    for path in vendored:
        name = path.relative_to(data).as_posix()
        listed = name in sources or re.sub(r"_\d+\.", "_0.", name) in sources
        assert listed, f"{name} is not in tests/data/SOURCES.md"
    # PDFs, HTML and videos are generated at test time (PyMuPDF's are AGPL; videos unclear).
    kinds = {p.suffix.lower() for p in data.rglob("*") if p.is_file()}
    assert not kinds & {".pdf", ".html", ".htm", ".mp4", ".webm", ".mkv", ".avi", ".mov"}
    for licence in ("Apache-2.0.txt", "MIT-moviepy.txt"):
        assert (data / "LICENSES" / licence).is_file()


def _repository_files() -> list[str]:
    """Tracked and untracked (not ignored) files of the working tree."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_a_copy_of_the_repository_without_siblings_runs_the_corpus_tests(tmp_path):
    """The repository copied alone (as a clone would be, with no sibling folders) runs a test
    file that uses the corpus fixture."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        import pytest

        pytest.skip("needs a git checkout to list the repository's files")
    clone = tmp_path / "alone" / "kbterm"
    for name in _repository_files():
        src = REPO / name
        if src.is_file():  # a file deleted in the working tree is still in the index
            dest = clone / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["kbterm"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'child-tmp'}", "tests/test_ingest_text.py"],
        cwd=clone, capture_output=True, text=True, timeout=600,
        env=subprocess_env(PYTHONDONTWRITEBYTECODE="1"),
    )
    tail = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert re.search(r"\b\d+ passed\b", proc.stdout) and "error" not in proc.stdout.lower(), tail
