"""Helpers shared by the indexing tests: configs pointing at the tiny model, ledger/chunk reads."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, subprocess_env
from kbterm.config import Config, config_from_dict
from kbterm.indexer import Indexer, Summary
from kbterm.store import Store


def make_config(model_dir: Path, data_dir: Path, folders: list[Path] | None = None,
                **indexing: Any) -> Config:
    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "library": {"folders": [str(f) for f in folders or []]},
        "models": {
            "device": "cpu", "dtype": "float32",
            "embedder": {"model": str(model_dir)},
            "reranker": {"model": str(model_dir)},
            "generator": {"model": str(model_dir)},
        },
        "indexing": {"keep_versions_seconds": 0, **indexing},
    }
    return config_from_dict(raw)


def run_index(config: Config, paths: list[Path] | None = None, embedder: Any = None,
              **kwargs: Any) -> Summary:
    return Indexer(config, embedder=embedder).run(paths, **kwargs)


def ledger(config: Config) -> dict[str, Any]:
    return Store(config.data_path).ledger()


def chunks(config: Config, **filters: Any) -> list[dict[str, Any]]:
    rows = Store(config.data_path).live_chunks()
    return [r for r in rows if all(r.get(k) == v for k, v in filters.items())]


def check_consistent(config: Config) -> None:
    """Every indexed file has exactly its ledger's chunk count, no row is orphaned or doubled."""
    store = Store(config.data_path)
    files = store.ledger()
    table = store.chunks_table
    raw = table.search().select(["id", "file_id", "generation", "path"]).limit(None) \
        .to_arrow().to_pylist() if table is not None else []
    ids = [r["id"] for r in raw]
    assert len(ids) == len(set(ids)), "duplicate chunk ids"
    by_id = {r.file_id: r for r in files.values()}
    per_file = Counter(r["file_id"] for r in raw)
    for row in raw:
        rec = by_id.get(row["file_id"])
        assert rec is not None, f"orphan chunk {row['id']} of {row['path']}"
        assert row["generation"] == rec.generation, f"stale generation in {row['path']}"
        assert row["path"] == rec.path
    for rec in files.values():
        assert not rec.staging, rec.path
        expected = rec.chunks if rec.status == "indexed" else 0
        assert per_file.get(rec.file_id, 0) == expected, (rec.path, rec.status, expected,
                                                          per_file.get(rec.file_id, 0))


# A prelude that pauses after every commit of the child's indexer (the tests' kill or signal
# must land while the run is still going: the tiny model is faster than a ledger read).
PACED = ("import time\nimport kbterm.indexer as m\n"
         "_commit, _drain = m.Indexer._commit, m.Indexer._drain_staged\n"
         "def _paced(self, *a, **k):\n    _commit(self, *a, **k)\n    time.sleep(0.3)\n"
         "def _paced_drain(self, item, *a, **k):\n    before = item.written\n"
         "    _drain(self, item, *a, **k)\n"
         "    if item.written != before:\n        time.sleep(0.3)\n"
         "m.Indexer._commit, m.Indexer._drain_staged = _paced, _paced_drain\n")


def kbterm(args: list[str], prelude: str = "", env_extra: dict[str, str] | None = None,
           **kwargs) -> subprocess.Popen:
    code = prelude + "\nfrom kbterm.cli import main; main()"
    env = subprocess_env(**(env_extra or {}))
    env.pop("KBTERM_DATA_DIR", None)
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"kbterm ended before the moment came: {out}{err}")
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - the table may be mid-creation
            pass
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def explicit_data_dir(monkeypatch):
    """For tests whose config names its data folder: KBTERM_DATA_DIR (set for every test by
    conftest.py) must not override it.  Use: ``pytestmark = pytest.mark.usefixtures(...)``
    after importing it."""
    monkeypatch.delenv("KBTERM_DATA_DIR", raising=False)
