"""``kbterm doctor``: what kbterm would use, and whether it is there."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from kbterm.backends.probe import ProbeResult
from kbterm.config import Config
from kbterm.errors import KbtermError
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
    backend: str = "local"  # "local" or "server"
    host: str = "in process"  # "in process", "kbterm serve" or "server"
    url: str = ""
    why: str = ""  # why this backend
    runtime_why: str = ""  # why this device and dtype
    latency_s: float | None = None  # expected latency of one call (cached measurement)

    @property
    def available(self) -> bool:
        return self.local_path is not None or self.backend == "server"


@dataclass
class Report:
    config_file: str
    data_dir: str
    python: str
    packages: dict[str, str]
    cuda: bool | None  # None: not asked (every model runs on a server; torch not imported)
    models: list[ModelStatus]
    probes: list[Any] = field(default_factory=list)

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
            "servers": [p.__dict__ for p in self.probes],
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


def diagnose(config: Config, explicit_config: str | None = None, *,
             probe_servers: bool = True, compare: bool = False) -> Report:
    """Gather the report: the local runtime each role would get, or the server it uses (which
    is probed).  Loads no model (torch is imported, through kbterm.models, to ask for CUDA,
    only when some model would run in this process), unless ``compare``: then a server's answers are compared with the in-process model's when
    the checkpoint is on this machine."""
    from kbterm.backends import choose, get_embedder, get_generator, get_reranker
    from kbterm.backends.latency import expected
    from kbterm.backends.probe import probe
    from kbterm.models.runtime import cuda_available

    choices = {role: choose(config, role) for role in ROLES}
    cuda = (cuda_available() if any(c.backend != "server" for c in choices.values())
            else None)
    getters = {"embedder": get_embedder, "reranker": get_reranker, "generator": get_generator}
    statuses, probes = [], []
    for role in ROLES:
        spec = model_spec(config, role)
        local = cached_model_path(spec.model, spec.source)
        choice = choices[role]
        status = ModelStatus(role, spec.model, str(local) if local else None, "", "", "",
                             choice.backend, choice.kind, choice.url, choice.why)
        if choice.backend == "server":
            backend = getters[role](config)
            try:
                host = backend.host()
            except KbtermError as exc:
                status.device = status.dtype = ""
                probes.append(ProbeResult(role, False, [str(exc)]))
            else:
                status.device, status.dtype, status.runtime_why = host.device, host.dtype, host.why
                status.latency_s = expected(config.data_path, role, host)
                if probe_servers:
                    reference = None
                    if compare and local is not None and role != "generator":
                        from kbterm.backends import local_backend

                        reference = local_backend(config, role)
                    try:
                        probes.append(probe(role, backend,
                                            config.models.embedder.query_instruction, reference))
                    finally:
                        if reference is not None:
                            reference.release()
        else:
            from kbterm.backends.base import Host

            rt = choose_runtime(spec.device, spec.dtype, has_cuda=cuda)
            status.device, status.dtype, status.attention = (rt.device, rt.dtype,
                                                              rt.attn_implementation)
            status.runtime_why = rt.reason
            status.latency_s = expected(config.data_path, role,
                                        Host("in process", spec.model, rt.device, rt.dtype))
        statuses.append(status)
    packages = {n: _version(n) for n in ("torch", "transformers", "lancedb", "textual",
                                          "qwen-vl-utils", "flash-attn", "uvicorn", "httpx")}
    return Report(
        config_file=config_file_line(config, explicit_config),
        data_dir=str(config.data_path),
        python=f"{platform.python_version()} ({sys.executable})",
        packages=packages,
        cuda=cuda,
        models=statuses,
        probes=probes,
    )


def render(report: Report) -> str:
    """The report as text for a terminal."""
    from kbterm.backends.latency import describe

    lines = [
        f"config file   {report.config_file}",
        f"data dir      {report.data_dir}",
        f"python        {report.python}",
        "packages      " + ", ".join(f"{k} {v}" for k, v in report.packages.items()),
        "cuda          " + ("not checked (every model runs on a server)" if report.cuda is None
                             else "available" if report.cuda else "not available (CPU)"),
        "",
        "models",
    ]
    for m in report.models:
        lines.append(f"  {m.role:<10} {m.model}")
        if m.backend == "server":
            runtime = ", ".join(p for p in (m.device, m.dtype) if p) or "runtime not reported"
            lines.append(f"  {'':<10} {m.host} at {m.url} ({m.why})")
            lines.append(f"  {'':<10} runs on {runtime}")
        else:
            where = m.local_path if m.available else \
                f"not downloaded (fetch: {fetch_command(m.role)})"
            lines.append(f"  {'':<10} {where}")
            lines.append(f"  {'':<10} in process ({m.why})")
            lines.append(f"  {'':<10} runs on {m.device}, {m.dtype}, attention {m.attention}")
        if m.runtime_why:
            lines.append(f"  {'':<10} why: {m.runtime_why}")
        lines.append(f"  {'':<10} expected latency {describe(m.latency_s)}")
    if report.probes:
        lines += ["", "servers"]
        for p in report.probes:
            verdict = "ok" if p.ok else "LOOKS WRONG" if p.facts else "error"
            lines.append(f"  {p.role:<10} {verdict}" + (f": {'; '.join(p.facts)}" if p.facts
                                                       else ""))
            lines.extend(f"  {'':<10} ! {f}" for f in p.findings)
    return "\n".join(lines)


@dataclass
class LoadCheck:
    role: str
    ok: bool
    detail: str


def check_loading(config: Config) -> list[LoadCheck]:
    """Load each configured model (or reach its server), run one tiny inference, and measure
    the role's everyday call on this host (cached for the doctor, the TUI and the indexer)."""
    import time

    from kbterm.backends import get_embedder, get_generator, get_reranker
    from kbterm.backends.latency import describe, measure_and_record

    getters = {"embedder": get_embedder, "reranker": get_reranker, "generator": get_generator}
    query = config.models.embedder.query_instruction
    results = []
    for role in ROLES:
        backend = getters[role](config)
        try:
            start = time.perf_counter()
            backend.warm()
            loaded = time.perf_counter()
            seconds = measure_and_record(config.data_path, role, backend, query)
            host = backend.host()
        except KbtermError as exc:
            results.append(LoadCheck(role, False, str(exc)))
            continue
        finally:
            backend.release()
        verb = "loaded" if host.kind == "in process" else "reached"
        results.append(LoadCheck(
            role, True,
            f"{verb} in {loaded - start:.1f} s, one call {describe(seconds)} "
            f"({host.describe()})",
        ))
    return results
