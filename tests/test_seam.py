"""The model seam: only kbterm/models imports transformers; torch only there and in the vector
scan; the consumers reach models through kbterm.backends' interfaces, never their internals."""

from __future__ import annotations

import ast
from pathlib import Path

import kbterm

PACKAGE = Path(kbterm.__file__).resolve().parent
MODELS = PACKAGE / "models"
TORCH_ALLOWED = {PACKAGE / "vectors.py"}  # torch as a fast float16 kernel for the vector scan
# What the in-process models have that no consumer may read (use the backend interface).
INTERNALS = ("runtime", "spec", "forward_calls", "_model", "_encoder", "_processor")
CONSUMERS = ["indexer.py", "retrieval.py", "answer.py", "doctor.py", "watch.py", "repair.py",
             "cli", "tui"]


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` names anywhere in the file (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_kbterm_models_imports_transformers():
    offenders = [str(p.relative_to(PACKAGE)) for p in python_files()
                 if MODELS not in p.parents and "transformers" in imported_modules(p)]
    assert offenders == []
    assert "transformers" in imported_modules(MODELS / "embedder.py")  # the scan sees imports


def test_only_kbterm_models_and_the_vector_scan_import_torch():
    offenders = [str(p.relative_to(PACKAGE)) for p in python_files()
                 if MODELS not in p.parents and p not in TORCH_ALLOWED
                 and "torch" in imported_modules(p)]
    assert offenders == []
    assert "torch" in imported_modules(PACKAGE / "vectors.py")


def consumer_files() -> list[Path]:
    files: list[Path] = []
    for name in CONSUMERS:
        path = PACKAGE / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def test_consumers_read_no_model_internals():
    found = []
    for path in consumer_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in INTERNALS:
                base = ast.unparse(node.value)
                if any(word in base for word in ("embedder", "reranker", "generator", "model")):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {base}.{node.attr}")
    assert found == []


def test_consumers_get_models_only_from_kbterm_backends():
    """Indexer, searcher, asker, TUI and doctor ask kbterm.backends for a role; none builds a
    model class or reaches for the in-process registry."""
    found = []
    for path in consumer_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in (
                    "kbterm.models.registry", "kbterm.models.embedder", "kbterm.models.reranker",
                    "kbterm.models.generator", "kbterm.models"):
                names = [a.name for a in node.names]
                if names != ["model_spec"]:  # a config's checkpoint settings, no model
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.module}")
    assert found == []
