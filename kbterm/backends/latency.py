"""What one call of each role costs on its host, measured once and kept in the data folder.

A role's *expected latency* is the wall time of its everyday call on the host it runs on: one
search query embedded, one (query, passage) pair reranked, the first token of an answer.
``kbterm doctor --load`` and ``kbterm serve`` measure it (after a warm-up call); the doctor
and the TUI's status bar show it; the planning issues build on it.  The cache is keyed by role,
host, model, device and dtype, so a new GPU or a new dtype is measured anew.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kbterm.backends.base import Host

LATENCY_FILE = "latency.json"
PROBE_QUERY = "where did I note the meeting about the budget?"
PROBE_PASSAGE = ("The budget meeting moved to Thursday; notes are in the shared folder under "
                 "planning, with the slides from the last review.")


def cache_key(role: str, host: Host) -> str:
    return "|".join((role, host.kind, host.url, host.model, host.device, host.dtype))


def _read(data_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((data_dir / LATENCY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def expected(data_dir: Path, role: str, host: Host) -> float | None:
    """The cached latency of ``role`` on ``host`` in seconds, or None if never measured."""
    entry = _read(data_dir).get(cache_key(role, host))
    return float(entry["seconds"]) if isinstance(entry, dict) and "seconds" in entry else None


def record(data_dir: Path, role: str, host: Host, seconds: float) -> None:
    from kbterm.paths import make_private_dir

    make_private_dir(data_dir)
    data = _read(data_dir)
    data[cache_key(role, host)] = {"seconds": seconds, "measured_at": time.time()}
    path = data_dir / LATENCY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def call(role: str, backend: Any, query_instruction: str | None = None) -> None:
    """One everyday call of ``role``."""
    if role == "embedder":
        backend.embed([PROBE_QUERY], instruction=query_instruction)
    elif role == "reranker":
        backend.score(PROBE_QUERY, [PROBE_PASSAGE])
    else:
        stream = backend.stream("Say hello.", [], max_new_tokens=1)
        try:
            next(stream, None)
        finally:
            stream.close()


def measure(role: str, backend: Any, query_instruction: str | None = None,
            repeats: int = 3) -> float:
    """The best of ``repeats`` timed calls, after one warm-up call."""
    call(role, backend, query_instruction)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call(role, backend, query_instruction)
        best = min(best, time.perf_counter() - start)
    return best


def measure_and_record(data_dir: Path, role: str, backend: Any,
                       query_instruction: str | None = None) -> float:
    seconds = measure(role, backend, query_instruction)
    record(data_dir, role, backend.host(), seconds)
    return seconds


def describe(seconds: float | None) -> str:
    if seconds is None:
        return "not measured yet (kbterm doctor --load)"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
