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


# Third-party libraries the core imports that pull in neither textual nor torch: the probe
# below imports them once, so that each forked child imports only kbterm's own modules.
PRELOAD = ["numpy", "pyarrow", "lancedb", "click", "PIL.Image", "fitz", "httpx", "tomlkit",
           "watchdog.observers", "lxml.html", "charset_normalizer", "xxhash", "starlette",
           "uvicorn", "rich"]
# Modules that must not import torch either (the model layer loads it on first use only).
TORCH_FREE = ("kbterm", "kbterm.cli", "kbterm.config", "kbterm.paths", "kbterm.errors",
              "kbterm.models", "kbterm.models.inputs", "kbterm.store", "kbterm.scan",
              "kbterm.lock", "kbterm.indexer", "kbterm.status", "kbterm.retrieval",
              "kbterm.answer", "kbterm.watch", "kbterm.doctor")
TORCH_FREE_PACKAGES = ("kbterm.ingest", "kbterm.backends", "kbterm.serve")

PROBE = """
import importlib, json, os, sys
preload, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in preload:
    importlib.import_module(name)
assert "textual" not in sys.modules and "torch" not in sys.modules, "a preload is heavy"
out = {}
for module in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child starting from the clean parent: import one module, report
        os.close(read)
        try:
            importlib.import_module(module)
            result = ["textual" in sys.modules, "torch" in sys.modules, ""]
        except BaseException as exc:
            result = [None, None, repr(exc)]
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out[module] = json.loads(f.read())
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


def test_core_modules_do_not_import_textual_and_the_light_ones_not_torch():
    """Each core module imported alone (in a fork of a clean interpreter)."""
    import json

    modules = core_modules()
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(PRELOAD), json.dumps(modules)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert set(results) == set(modules)
    failed = {m: err for m, (_t, _torch, err) in results.items() if err}
    assert failed == {}
    assert [m for m, (textual, _t, _e) in results.items() if textual] == []
    torch_free = [m for m in modules if m in TORCH_FREE or m.startswith(TORCH_FREE_PACKAGES)]
    assert len(torch_free) > 20
    assert [m for m in torch_free if results[m][1]] == []


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
