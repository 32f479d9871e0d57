"""Shared fixtures: a tiny random Qwen3-VL checkpoint, model handles, an isolated environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corpus_builder import build_corpus, tokenizer_training_lines

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test reads the user's config or data, or reaches the Hub."""
    monkeypatch.delenv("KBTERM_CONFIG", raising=False)
    monkeypatch.setenv("KBTERM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random Qwen3-VL checkpoint (text hidden 64, vision hidden 32) built for this session."""
    from kbterm.models.random_checkpoint import build_random_checkpoint

    return build_random_checkpoint(tmp_path_factory.mktemp("tiny-qwen3-vl"))


@pytest.fixture(scope="session")
def embedder(tiny_model_dir):
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder

    model = Embedder(ModelSpec("embedder", str(tiny_model_dir), device="cpu", dtype="float32"))
    model.load()
    return model


@pytest.fixture(scope="session")
def reranker(tiny_model_dir):
    from kbterm.models.base import ModelSpec
    from kbterm.models.reranker import Reranker

    model = Reranker(ModelSpec("reranker", str(tiny_model_dir), device="cpu", dtype="float32"))
    model.load()
    return model


@pytest.fixture(scope="session")
def generator(tiny_model_dir):
    from kbterm.models.base import ModelSpec
    from kbterm.models.generator import Generator

    model = Generator(ModelSpec("generator", str(tiny_model_dir), device="cpu", dtype="float32"), max_new_tokens=16)
    model.load()
    return model


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """The test corpus, built once a session in a temporary folder (never written to):
    images/, pdf/, text/, video/ with the files of tests/data (vendored, see SOURCES.md) and
    the ones tests/corpus_builder.py generates."""
    return build_corpus(tmp_path_factory.mktemp("corpus") / "corpus")


SERVE_KEY_ENV = "KBTERM_TEST_SERVE_KEY"


def write_config_file(path: Path, model_dir: Path, extra: str = "",
                      data_dir: Path | None = None, generator: str = "",
                      served: object = None) -> Path:
    """A config file whose three roles use ``model_dir`` on the CPU (``extra``: more TOML
    tables; ``generator``: more keys of [models.generator]; ``served``: the state of a
    ``kbterm serve`` hosting ``model_dir`` that the three roles then use)."""
    head = f'data_dir = "{data_dir}"\n' if data_dir else ""
    host = (f'backend = "server"\nurl = "{served.url}"\napi_key_env = "{SERVE_KEY_ENV}"\n'
            if served is not None else "")
    roles = "".join(f'[models.{role}]\nmodel = "{model_dir}"\n{host}'
                    for role in ("embedder", "reranker", "generator")) + generator
    path.write_text(f'{head}[models]\ndevice = "cpu"\ndtype = "float32"\n{roles}{extra}\n')
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def index_model_dir(tmp_path_factory) -> Path:
    """A tiny random checkpoint whose tokenizer has a realistic vocabulary (trained on the
    corpus's long generated text and the vendored README), so a 285-page book is about as many
    tokens as with Qwen's own tokenizer."""
    from kbterm.models.random_checkpoint import build_random_checkpoint

    return build_random_checkpoint(tmp_path_factory.mktemp("index-qwen3-vl"),
                                   vocab_size=4000, training_text=tokenizer_training_lines())


@pytest.fixture(scope="session")
def index_serve(tmp_path_factory, index_model_dir):
    """One ``kbterm serve`` hosting the index checkpoint, for command-line tests whose subject
    is not where the models run: each command then starts in a second instead of importing
    torch and loading three models (``write_config_file(..., served=index_serve)``)."""
    import subprocess
    import sys

    from kbterm.serve.state import wait_ready

    root = tmp_path_factory.mktemp("index-serve")
    data = root / "data"
    config = write_config_file(root / "serve.toml", index_model_dir, "[serve]\nport = 0\n",
                               data_dir=data)
    env = {k: v for k, v in os.environ.items() if k != "KBTERM_DATA_DIR"}
    proc = subprocess.Popen([sys.executable, "-m", "kbterm", "--config", str(config), "serve",
                             "--log-file", str(root / "serve.log")], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = wait_ready(data, proc.pid, timeout=300)
    assert state is not None, (root / "serve.log").read_text()
    os.environ[SERVE_KEY_ENV] = state.token  # inherited by the commands the tests start
    yield state
    proc.terminate()
    proc.wait(timeout=60)


@pytest.fixture(scope="session")
def index_embedder(index_model_dir):
    """The tiny embedder with small vision limits, so indexing tests that render hundreds of
    PDF pages stay fast (the code path is the same as with the contract's limits)."""
    from kbterm.models.base import ModelSpec
    from kbterm.models.embedder import Embedder

    model = Embedder(ModelSpec("embedder", str(index_model_dir), device="cpu", dtype="float32"),
                     limits=small_vision_limits())
    model.load()
    return model


def small_vision_limits():
    """Vision limits far below the contract's, for tests whose subject is not the pictures'
    size (the code path is the same: only fewer patches go through the vision tower)."""
    from kbterm.models.encoding import VisionLimits

    return VisionLimits(image_max_pixels=16 * 32 * 32, frame_max_pixels=4 * 32 * 32,
                        total_pixels=64 * 32 * 32)


@pytest.fixture(scope="session")
def small_reranker(tiny_model_dir):
    """The tiny reranker with :func:`small_vision_limits`: the TUI tests rerank photos, PDF
    pages and a video on every query."""
    from kbterm.models.base import ModelSpec
    from kbterm.models.reranker import Reranker

    model = Reranker(ModelSpec("reranker", str(tiny_model_dir), device="cpu", dtype="float32"),
                     limits=small_vision_limits())
    model.load()
    return model
