"""Memory of the kbterm processes of one user at once, with and without ``kbterm serve``
(issue #14): summed peak RSS, each process loading its own models vs one server hosting them.

The processes, alive at the same time:

* the watcher: ``kbterm watch --detach`` on the indexed folder;
* the TUI, substituted by a long-lived Python process that builds a ``Searcher`` and an
  ``Asker`` (the objects the app builds), runs one search and one answer, and stays alive with
  its models loaded (Textual itself is left out: it would add the same few MiB to both modes,
  and a headless app cannot be driven from a script without a terminal);
* three CLI calls started together: ``kbterm search``, ``kbterm ask`` and ``kbterm index`` of a
  second folder of new files (with the watcher running, ``kbterm index`` hands its paths over to
  the watcher, which embeds them: that is kbterm's behaviour, so the CLI process itself stays
  small in both modes and the embedding shows up in the watcher).

(a) baseline: every process loads the models it uses in process (``backend = "auto"`` and no
    serve running); (b) ``kbterm serve --detach --port 0`` is started first and hosts the three
    roles; every other process finds it (``auto``) and sends HTTP requests.  The serve's own RSS
    is in (b)'s sum.

Each process's peak is its ``VmHWM`` (``/proc/<pid>/status``; ``ru_maxrss`` would carry the
parent's over fork and exec): the CLI calls run under a small wrapper that reads it at exit;
the long-lived processes are read once the CLI calls are done.  The sum of peaks is an upper
bound of what was resident at once, so the script also samples the sum of ``VmRSS`` of all the
processes every 0.1 s (the simultaneous peak).  Each mode gets its own data folder with the same
files indexed the same way beforehand.

The checkpoint is a random Qwen3-VL big enough that weights dominate: 12 text layers of hidden
1024 (16 heads, 8 KV heads, MLP 2048), a 2-layer vision tower of hidden 256, and a byte-level
BPE trained on the corpus's long text (16,000 tokens asked; the trainer stops at about 2,700):
about 125 M parameters, ~500 MB in float32 (the embedder and the reranker keep the base model,
without the LM head's ~11 MB), on the CPU in float32.  Answers are capped at 32 new tokens, the reranker at 10 candidates, and
``ask.min_rerank_score`` is 0 (random weights give random scores): the same in both modes.

    python benchmarks/bench_hosts_memory.py          # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, corpus, kbterm_env, write_config

QUERY = "how does the embedding model handle images and text"
MiB = 2 ** 20

# kbterm's CLI in this process; its own VmHWM / VmRSS on stderr when it exits.
CLI_WRAPPER = r"""
import json, runpy, sys
def _report():
    with open("/proc/self/status") as fh:
        st = {l.split(":")[0]: int(l.split()[1]) * 1024 for l in fh
              if l.startswith(("VmHWM:", "VmRSS:"))}
    mods = [m for m in ("torch", "transformers", "lancedb") if m in sys.modules]
    print("KBTERM-MEM " + json.dumps({"hwm": st["VmHWM"], "rss": st["VmRSS"], "modules": mods}),
          file=sys.stderr, flush=True)
sys.argv = ["kbterm"] + sys.argv[1:]
try:
    runpy.run_module("kbterm", run_name="__main__")
finally:
    _report()
"""

# The TUI's models and searchers, without Textual: one search, one answer, then wait on stdin.
TUI_STANDIN = r"""
import json, sys, time
from kbterm.answer import Asker
from kbterm.config import load_config
from kbterm.retrieval import Searcher
config = load_config(sys.argv[1])
searcher = Searcher(config)
asker = Asker(config, searcher=searcher)
t = time.perf_counter()
results = searcher.search(sys.argv[2], k=10)
answer = asker.prepare(sys.argv[2])
text = "".join(asker.stream(answer))
mods = [m for m in ("torch", "transformers", "lancedb") if m in sys.modules]
print(json.dumps({"ready": True, "hits": len(results.hits), "answer_chars": len(text),
                  "seconds": time.perf_counter() - t, "modules": mods}), flush=True)
sys.stdin.read()  # stay alive, models loaded, until the benchmark closes stdin
"""


def proc_status(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh
                    if line.startswith(("VmHWM:", "VmRSS:"))}
    except (OSError, ValueError):
        return {}


def mapped_libraries(pid: int) -> list[str]:
    """Which of torch / lancedb a running process has loaded (their native libraries mapped)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return [name for name, lib in (("torch", "libtorch_cpu"), ("lancedb", "_lancedb"))
            if lib in maps]


def kbterm(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kbterm", "--config", str(config), *args],
                          capture_output=True, text=True, env=kbterm_env(), cwd=REPO,
                          check=check, timeout=1800)


class Sampler(threading.Thread):
    """Sums VmRSS of the registered processes every 0.1 s; keeps the largest sum."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pids: set[int] = set()
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            total = sum(proc_status(pid).get("VmRSS", 0) for pid in list(self.pids))
            self.peak = max(self.peak, total)
            time.sleep(0.1)


def write_bench_config(path: Path, model: Path, data: Path) -> Path:
    write_config(path, model, data)
    with path.open("a") as fh:  # appended under [models.generator], then new tables
        fh.write("max_new_tokens = 32\n[search]\nrerank = 10\n[ask]\nmin_rerank_score = 0.0\n")
    return path


def run_mode(mode: str, work: Path, model: Path, library: Path, new_files: list[Path]) -> dict:
    """One scenario in its own data folder; returns each process's peak and RSS."""
    data = work / f"data-{mode}"
    config = write_bench_config(work / f"kbterm-{mode}.toml", model, data)
    t = time.perf_counter()
    kbterm(config, "index", str(library))
    print(f"[{mode}] library indexed in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    incoming = work / f"incoming-{mode}"
    incoming.mkdir()
    for f in new_files:
        shutil.copy(f, incoming / f.name)
    sampler = Sampler()
    sampler.start()
    procs: dict[str, dict] = {}
    serve_pid = watch_pid = None
    standin = None
    timings: dict[str, float] = {}
    try:
        if mode == "serve":
            t = time.perf_counter()
            kbterm(config, "serve", "--detach", "--port", "0")
            serve_pid = json.loads((data / "serve.json").read_text())["pid"]
            sampler.pids.add(serve_pid)
            print(f"[{mode}] kbterm serve ready in {time.perf_counter() - t:.0f} s",
                  file=sys.stderr)
        out = kbterm(config, "watch", str(library), "--detach").stdout
        watch_pid = int(re.search(r"pid (\d+)", out).group(1))
        sampler.pids.add(watch_pid)
        t = time.perf_counter()
        standin = subprocess.Popen([sys.executable, "-c", TUI_STANDIN, str(config), QUERY],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   env=kbterm_env(), cwd=REPO)
        sampler.pids.add(standin.pid)
        line = standin.stdout.readline()
        if not line:
            raise SystemExit(f"the TUI stand-in died (code {standin.wait()})")
        standin_info = json.loads(line)
        print(f"[{mode}] TUI stand-in searched and answered in "
              f"{time.perf_counter() - t:.0f} s", file=sys.stderr)

        wrapper = work / "mem_wrapper.py"
        wrapper.write_text(CLI_WRAPPER)
        calls = {"kbterm search": ["search", QUERY, "--json"],
                 "kbterm ask": ["ask", QUERY, "--json"],
                 "kbterm index": ["index", str(incoming), "--json"]}
        t = time.perf_counter()
        running = {}
        for name, args in calls.items():
            p = subprocess.Popen([sys.executable, str(wrapper), "--config", str(config), *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=kbterm_env(), cwd=REPO)
            sampler.pids.add(p.pid)
            running[name] = p
        for name, p in running.items():
            stdout, stderr = p.communicate(timeout=1800)
            mem = next((json.loads(l.split(" ", 1)[1]) for l in stderr.splitlines()
                        if l.startswith("KBTERM-MEM ")), None)
            if p.returncode or mem is None:
                raise SystemExit(f"{name} failed (code {p.returncode}):\n{stderr[-2000:]}")
            procs[name] = {"hwm": mem["hwm"], "rss": mem["rss"], "modules": mem["modules"]}
            if name == "kbterm index":
                procs[name]["summary"] = json.loads(stdout)
        timings["cli_calls_s"] = time.perf_counter() - t
        print(f"[{mode}] the three CLI calls took {timings['cli_calls_s']:.0f} s",
              file=sys.stderr)
        time.sleep(0.5)  # let the sampler see the long-lived processes once more
        for name, pid in (("kbterm watch", watch_pid), ("TUI stand-in", standin.pid),
                          ("kbterm serve", serve_pid)):
            if pid is not None:
                st = proc_status(pid)
                procs[name] = {"hwm": st["VmHWM"], "rss": st["VmRSS"],
                               "modules": mapped_libraries(pid)}
        procs["TUI stand-in"]["modules"] = standin_info["modules"]
        timings["standin_s"] = standin_info["seconds"]
    finally:
        sampler.stop.set()
        sampler.join()
        if standin is not None:
            standin.stdin.close()
            standin.wait(timeout=60)
        if watch_pid is not None:
            kbterm(config, "watch", "--stop", check=False)
        if serve_pid is not None:
            kbterm(config, "serve", "--stop", check=False)
    return {"processes": procs, "sum_hwm": sum(p["hwm"] for p in procs.values()),
            "simultaneous_peak": sampler.peak, "timings": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON too")
    parser.add_argument("--layers", type=int, default=12, help="text layers of the checkpoint")
    parser.add_argument("--hidden", type=int, default=1024, help="text hidden size")
    args = parser.parse_args()

    import torch
    import transformers

    from kbterm.models.random_checkpoint import build_random_checkpoint

    work = Path(tempfile.mkdtemp(prefix="kbterm-bench-hosts-"))
    try:
        source = corpus()
        model = build_random_checkpoint(
            work / "model", text_hidden=args.hidden, text_layers=args.layers, text_heads=16,
            kv_heads=8, vision_hidden=256, vision_depth=2, vision_heads=4, vocab_size=16000,
            training_text=(source / "text" / "handbook.txt").read_text("utf-8").splitlines())
        weights = sum(f.stat().st_size for f in model.glob("*.safetensors"))
        vocab = len(json.loads((model / "tokenizer.json").read_text())["model"]["vocab"])
        print(f"checkpoint: {weights / 1e6:.0f} MB of float32 weights, tokenizer of {vocab} "
              "tokens", file=sys.stderr)
        library = work / "library"
        library.mkdir()
        for rel in ("text/qwen3-vl-embedding-readme.md", "text/subtitles-unicode.srt",
                    "images/beach.jpeg", "images/photo_0.jpg"):
            shutil.copy(source / rel, library / Path(rel).name)
        new_files = [source / "text" / "bom-over-meta.html", source / "images" / "photo_1.jpg"]
        results = {mode: run_mode(mode, work, model, library, new_files)
                   for mode in ("local", "serve")}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    local, serve = results["local"], results["serve"]
    print(f"\nMeasured {time.strftime('%Y-%m-%d')}, torch {torch.__version__.split('+')[0]}, "
          f"transformers {transformers.__version__}, Python {platform.python_version()}; "
          f"checkpoint {weights / 1e6:.0f} MB (float32, {weights / 4e6:.0f} M parameters, "
          f"tokenizer of {vocab} tokens); load average {os.getloadavg()[0]:.2f}.\n")
    print("| process | (a) models in each process: peak (VmHWM) | RSS after | "
          "(b) one `kbterm serve`: peak | RSS after | loaded (a) / (b) |")
    print("|---|---:|---:|---:|---:|---|")
    names = ["kbterm watch", "TUI stand-in", "kbterm search", "kbterm ask", "kbterm index",
             "kbterm serve"]
    for name in names:
        a, b = local["processes"].get(name), serve["processes"].get(name)

        def cell(p: dict | None, key: str) -> str:
            return f"{p[key] / MiB:,.0f} MiB" if p else "(none)"

        mods = " / ".join((", ".join(p.get("modules", [])) or "neither") if p else "-"
                          for p in (a, b))
        print(f"| {name} | {cell(a, 'hwm')} | {cell(a, 'rss')} | {cell(b, 'hwm')} | "
              f"{cell(b, 'rss')} | {mods} |")
    print(f"| **sum of peaks** | **{local['sum_hwm'] / MiB:,.0f} MiB** | | "
          f"**{serve['sum_hwm'] / MiB:,.0f} MiB** | | ratio (b)/(a) "
          f"**{serve['sum_hwm'] / local['sum_hwm']:.2f}** |")
    print(f"| largest sum of RSS at one moment (sampled every 0.1 s) | "
          f"{local['simultaneous_peak'] / MiB:,.0f} MiB | | "
          f"{serve['simultaneous_peak'] / MiB:,.0f} MiB | | ratio "
          f"{serve['simultaneous_peak'] / local['simultaneous_peak']:.2f} |")
    for mode in ("local", "serve"):
        s = results[mode]["processes"]["kbterm index"].get("summary", {})
        t = results[mode]["timings"]
        print(f"({mode}) kbterm index of the new folder (handed to the watcher): indexed "
              f"{s.get('indexed')}, embedded {s.get('embedded')}, chunks "
              f"{s.get('chunks_written')}; the three CLI calls took {t['cli_calls_s']:.0f} s, "
              f"the TUI stand-in's search + answer {t['standin_s']:.0f} s")
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
