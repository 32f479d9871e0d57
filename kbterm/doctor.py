"""``kbterm doctor``: what kbterm would use, and whether it is there."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from kbterm.config import Config
from kbterm.models.registry import model_spec
from kbterm.models.runtime import ROLES, cached_model_path, choose_runtime, fetch_command


@dataclass
class ModelStatus:
    role: str
    model: str
    local_path: str | None
    device: str
    dtype: str
    attention: str

    @property
    def available(self) -> bool:
        return self.local_path is not None


@dataclass
class Report:
    config_file: str
    data_dir: str
    python: str
    packages: dict[str, str]
    cuda: bool
    models: list[ModelStatus]

    def to_dict(self) -> dict:
        return {
            "config_file": self.config_file,
            "data_dir": self.data_dir,
            "python": self.python,
            "packages": self.packages,
            "cuda": self.cuda,
            "models": [
                {**m.__dict__, "available": m.available} for m in self.models
            ],
        }


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def config_file_line(config: Config, explicit: str | None = None) -> str:
    """The config file kbterm reads, and whether it exists yet."""
    from kbterm.paths import config_path

    if config.source is not None:
        return str(config.source)
    path, _named = config_path(explicit)
    return (f"{path} (not created yet: defaults apply; `kbterm folders add PATH` creates "
            "it, or copy config.example.toml there)")


def diagnose(config: Config, explicit_config: str | None = None) -> Report:
    """Gather the report (imports torch to ask for CUDA; loads no model)."""
    import torch

    cuda = torch.cuda.is_available()
    statuses = []
    for role in ROLES:
        spec = model_spec(config, role)
        local = cached_model_path(spec.model, spec.source)
        rt = choose_runtime(spec.device, spec.dtype, has_cuda=cuda)
        statuses.append(
            ModelStatus(role, spec.model, str(local) if local else None,
                        rt.device, rt.dtype, rt.attn_implementation)
        )
    packages = {n: _version(n) for n in ("torch", "transformers", "lancedb", "textual",
                                          "qwen-vl-utils", "flash-attn")}
    return Report(
        config_file=config_file_line(config, explicit_config),
        data_dir=str(config.data_path),
        python=f"{platform.python_version()} ({sys.executable})",
        packages=packages,
        cuda=cuda,
        models=statuses,
    )


def render(report: Report) -> str:
    """The report as text for a terminal."""
    lines = [
        f"config file   {report.config_file}",
        f"data dir      {report.data_dir}",
        f"python        {report.python}",
        "packages      " + ", ".join(f"{k} {v}" for k, v in report.packages.items()),
        f"cuda          {'available' if report.cuda else 'not available (CPU)'}",
        "",
        "models",
    ]
    for m in report.models:
        where = m.local_path if m.available else f"not downloaded (fetch: {fetch_command(m.role)})"
        lines.append(f"  {m.role:<10} {m.model}")
        lines.append(f"  {'':<10} {where}")
        lines.append(f"  {'':<10} runs on {m.device}, {m.dtype}, attention {m.attention}")
    return "\n".join(lines)


@dataclass
class LoadCheck:
    role: str
    ok: bool
    detail: str


def check_loading(config: Config) -> list[LoadCheck]:
    """Load each configured model and run one tiny inference with it (downloads if allowed)."""
    import time

    from kbterm.errors import KbtermError
    from kbterm.models.registry import get_embedder, get_generator, get_reranker

    smoke = {
        "embedder": lambda: get_embedder(config).embed(["kbterm"]).shape[1],
        "reranker": lambda: get_reranker(config).score("kbterm", ["a terminal tool"])[0],
        "generator": lambda: "".join(get_generator(config).stream("Say hello.", [],
                                                                  max_new_tokens=4)),
    }
    getters = {"embedder": get_embedder, "reranker": get_reranker, "generator": get_generator}
    results = []
    for role in ROLES:
        model = getters[role](config)
        try:
            start = time.perf_counter()
            model.load()
            loaded = time.perf_counter()
            smoke[role]()
            ran = time.perf_counter()
        except KbtermError as exc:
            results.append(LoadCheck(role, False, str(exc)))
            continue
        finally:
            model.release()
        results.append(LoadCheck(
            role, True,
            f"loaded in {loaded - start:.1f} s, first call {ran - loaded:.2f} s "
            f"({model.runtime.device}, {model.runtime.dtype})",
        ))
    return results
