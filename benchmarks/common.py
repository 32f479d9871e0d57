"""What the benchmark scripts share: a config naming the tiny random checkpoint for every model
role, the environment of the ``kbterm`` subprocesses they time, and the tests' corpus."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

ROLES = ("embedder", "reranker", "generator")
REPO = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def corpus() -> Path:
    """The corpus the tests use (``tests/corpus_builder.py``: the files vendored in tests/data and
    the generated PDFs, text and videos), built once a process in a temporary folder that is
    removed at exit."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from corpus_builder import build_corpus

    root = Path(tempfile.mkdtemp(prefix="kbterm-corpus-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_corpus(root / "corpus")


def model_config(model: Path, data: Path, **extra: Any) -> dict[str, Any]:
    """Config dict (for ``config_from_dict``): ``model`` on the CPU in every role, index in
    ``data``."""
    return {"data_dir": str(data),
            "models": {"device": "cpu", "dtype": "float32", **{r: {"model": str(model)} for r in ROLES}}, **extra}


def write_config(path: Path, model: Path, data: Path) -> Path:
    """The same config as a TOML file, for ``kbterm --config``."""
    path.write_text(f'data_dir = "{data}"\n[models]\ndevice = "cpu"\ndtype = "float32"\n'
                    + "".join(f'[models.{r}]\nmodel = "{model}"\n' for r in ROLES))
    return path


def kbterm_env() -> dict[str, str]:
    """Offline, and no KBTERM_DATA_DIR overriding the config's data folder."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("KBTERM_DATA_DIR", None)
    return env
