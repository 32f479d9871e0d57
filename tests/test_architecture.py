"""The headless core never imports textual; importing the CLI never imports torch."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kbterm

REPO = Path(__file__).resolve().parent.parent


def core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(kbterm.__path__, prefix="kbterm."):
        if info.name.startswith("kbterm.tui"):
            continue
        names.append(info.name)
    return names


def test_there_are_core_modules_to_check():
    names = core_modules()
    assert "kbterm.cli" in names and "kbterm.models.embedder" in names


@pytest.mark.parametrize("module", core_modules())
def test_core_module_does_not_import_textual(module):
    code = f"import sys, {module}; print('textual' in sys.modules, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    textual_loaded, torch_loaded = proc.stdout.split()
    assert textual_loaded == "False"
    if module in ("kbterm", "kbterm.cli", "kbterm.config", "kbterm.paths", "kbterm.errors",
                  "kbterm.models", "kbterm.models.inputs", "kbterm.store", "kbterm.scan",
                  "kbterm.lock", "kbterm.indexer", "kbterm.status") \
            or module.startswith("kbterm.ingest"):
        assert torch_loaded == "False", f"{module} imports torch at import time"


def test_import_linter_contract():
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.exists():
        exe = shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extra"
    proc = subprocess.run([str(exe)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_import_linter_contract_lists_every_core_module():
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contract = config["tool"]["importlinter"]["contracts"][0]
    listed = set(contract["source_modules"])
    top_level = {
        "kbterm." + info.name
        for info in pkgutil.iter_modules(kbterm.__path__)
        if info.name not in ("tui", "__main__")
    }
    assert top_level <= listed, f"add {sorted(top_level - listed)} to the import-linter contract"
