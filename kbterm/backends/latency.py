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


# ---------------------------------------------------------------------- indexing rates
#
# What embedding costs per token when indexing (kbterm.plan): measured by embedding two probe
# passages and one probe picture, once per host, and kept beside the latencies.

PROBE_TEXT_TOKENS = 256
PROBE_PICTURE = 640  # pixels a side: 400 visual tokens (a page has 1,000-1,800)


def probe_passage(tokenizer: Any, seed: int, tokens: int = PROBE_TEXT_TOKENS) -> str:
    """A passage of about ``tokens`` tokens of ordinary words (different for each seed)."""
    words = (PROBE_PASSAGE + " " + PROBE_QUERY).split()
    text, n = "", 0
    while n < tokens:
        text += " ".join(words[(seed + i) % len(words)] for i in range(64)) + " "
        seed += 7
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return text


def probe_picture() -> Any:
    """A picture with some structure (bands and a gradient), the size of a small photo."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:PROBE_PICTURE, 0:PROBE_PICTURE]
    pixels = np.stack([(x * 255 // PROBE_PICTURE), (y * 255 // PROBE_PICTURE),
                       ((x // 16 + y // 16) % 2) * 255], axis=-1).astype("uint8")
    return Image.fromarray(pixels, "RGB")


def measure_rates(backend: Any) -> dict[str, float]:
    """Seconds per text token and per visual token of ``backend``, and what loading its model
    costs (a model kbterm loads, with the imports it needs; 0 for a server)."""
    load = 0.0
    if type(backend).__module__.startswith("kbterm.models") and not backend.loaded:
        start = time.perf_counter()
        backend.load()
        load = time.perf_counter() - start
    small = probe_picture().resize((128, 128))
    backend.embed(["warm up", small])  # (first calls allocate; not timed)
    start = time.perf_counter()
    backend.embed(["warm up again"])
    call = time.perf_counter() - start
    tokenizer = backend.tokenizer()
    passages = [probe_passage(tokenizer, seed) for seed in (0, 1)]
    tokens = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in passages)
    start = time.perf_counter()
    backend.embed(passages)
    text_token = (time.perf_counter() - start) / tokens
    picture = probe_picture()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        backend.embed([picture])
        times.append(time.perf_counter() - start)
    seconds = min(times)
    visual = (PROBE_PICTURE // 32) ** 2
    return {"text_token": text_token, "visual_token": max(seconds - call, seconds / 2) / visual,
            "load": load}


def rates(data_dir: Path, backend: Any, key: str, measure: bool = True
          ) -> dict[str, float] | None:
    """The indexing rates of ``backend``, kept under ``key`` (its host as the config names it:
    reading them must not load a model): kept ones, else (``measure``) measured now and kept.
    None when unknown and not measured."""
    key = "embedder-rates|" + key
    entry = _read(data_dir).get(key)
    if isinstance(entry, dict) and "text_token" in entry:
        return {k: float(entry[k]) for k in ("text_token", "visual_token", "load") if k in entry}
    if not measure:
        return None
    measured = measure_rates(backend)
    from kbterm.paths import make_private_dir

    make_private_dir(data_dir)
    data = _read(data_dir)
    data[key] = dict(measured, measured_at=time.time())
    path = data_dir / LATENCY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)
    return measured
