"""Shared fixtures: a tiny random Qwen3-VL checkpoint, model handles, an isolated environment."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest

from corpus_builder import build_corpus, tokenizer_training_lines

REPO = Path(__file__).resolve().parent.parent

# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set (it is on these machines): the
# suite starts a hundred kbterm processes, and each would compile kbterm's sources again
# (0.2-0.3 s of CPU apiece).  The commands the tests start inherit this environment.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


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
    the ones tests/corpus_builder.py generates.  Shared by the xdist workers."""
    return built_once(tmp_path_factory, "corpus", lambda path: build_corpus(path / "corpus"))


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


def workers_folder(tmp_path_factory) -> Path | None:
    """The folder all pytest-xdist workers of this run have in common (None when not under
    xdist): the parent of each worker's own temporary folder."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    return tmp_path_factory.getbasetemp().parent


@contextmanager
def locked(path: Path):
    """Hold an exclusive lock on ``path`` (across the workers' processes)."""
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)``'s result, built once per run: under pytest-xdist the first worker
    that asks builds it in the :func:`workers_folder`, the others wait for it and reuse it
    (it is never written to afterwards)."""
    root = workers_folder(tmp_path_factory)
    if root is None:
        return build(tmp_path_factory.mktemp(name))
    target, result = root / name, root / f"{name}.done"
    with locked(root / f"{name}.lock"):
        if not result.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            result.write_text(str(build(target)))
    return Path(result.read_text())


SEVERAL = """
import contextlib, io, json, sys
from kbterm.cli import main
out = []
for args in json.loads(sys.argv[1]):
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    out.append([args, code, stdout.getvalue(), stderr.getvalue()])
out.append(sorted(m for m in ("torch", "transformers", "textual") if m in sys.modules))
sys.__stdout__.write(json.dumps(out))
"""


def run_commands(commands: list[list[str]], env: dict[str, str] | None = None,
                 cwd: Path = REPO, timeout: float = 300):
    """Run several kbterm commands, in order, in one Python process (each as ``kbterm ARGS``
    through the CLI's entry point): one interpreter start instead of one per command.
    Returns a :class:`subprocess.CompletedProcess` per command, and the heavy modules the
    process had imported at the end."""
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-c", SEVERAL, json.dumps(commands)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env or subprocess_env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    *results, imported = json.loads(proc.stdout)
    return [subprocess.CompletedProcess(args, code, out, err)
            for args, code, out, err in results], imported


@pytest.fixture(scope="session")
def index_model_dir(tmp_path_factory) -> Path:
    """A tiny random checkpoint whose tokenizer has a realistic vocabulary (trained on the
    corpus's long generated text and the vendored README), so a 285-page book is about as many
    tokens as with Qwen's own tokenizer.  Built once per run, shared by the workers (the
    session's ``kbterm serve`` hosts this same folder)."""
    from kbterm.models.random_checkpoint import build_random_checkpoint

    return built_once(tmp_path_factory, "index-qwen3-vl", lambda path: build_random_checkpoint(
        path, vocab_size=4000, training_text=tokenizer_training_lines()))


@pytest.fixture(scope="session")
def index_serve(tmp_path_factory, index_model_dir):
    """One ``kbterm serve`` hosting the index checkpoint, for command-line tests whose subject
    is not where the models run: each command then starts in a second instead of importing
    torch and loading three models (``write_config_file(..., served=index_serve)``).  Under
    pytest-xdist the first worker that asks starts it for all of them, and the controller
    stops it when the run ends (:func:`pytest_sessionfinish`)."""
    import subprocess

    from kbterm.serve.state import read_state, wait_ready

    pool = workers_folder(tmp_path_factory)
    root = pool / SERVE_FOLDER if pool else tmp_path_factory.mktemp(SERVE_FOLDER)
    data = root / "data"
    proc = None
    with locked(pool / f"{SERVE_FOLDER}.lock") if pool else nullcontext():
        state = read_state(data) if pool else None
        if state is None:
            root.mkdir(exist_ok=True)
            config = write_config_file(root / "serve.toml", index_model_dir,
                                       "[serve]\nport = 0\n", data_dir=data)
            env = {k: v for k, v in os.environ.items() if k != "KBTERM_DATA_DIR"}
            proc = subprocess.Popen(
                [sys.executable, "-m", "kbterm", "--config", str(config), "serve",
                 "--log-file", str(root / "serve.log")], env=env, cwd=REPO,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=bool(pool))  # (it outlives this worker's session)
            state = wait_ready(data, proc.pid, timeout=300)
            assert state is not None, (root / "serve.log").read_text()
    os.environ[SERVE_KEY_ENV] = state.token  # inherited by the commands the tests start
    yield state
    if proc is not None and not pool:
        proc.terminate()
        proc.wait(timeout=60)


SERVE_FOLDER = "index-serve"


def pytest_sessionfinish(session) -> None:
    """In the pytest-xdist controller: stop the workers' shared ``kbterm serve``."""
    if hasattr(session.config, "workerinput"):
        return  # a worker
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:
        return
    from kbterm.serve.state import read_state

    state = read_state(factory.getbasetemp() / SERVE_FOLDER / "data", ready_only=False)
    if state is not None:
        os.kill(state.pid, signal.SIGTERM)


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
