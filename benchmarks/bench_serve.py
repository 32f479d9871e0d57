"""``kbterm search`` as a fresh process, with and without a warm ``kbterm serve`` (issue #14).

(a) baseline: ``kbterm --config C search QUERY --json`` with no serve running: the process
    imports torch and transformers and loads the embedder and the reranker itself;
(b) the same command while ``kbterm serve`` (started with ``--detach --port 0`` before the
    timing, stopped after it) hosts the models: ``models.*.backend = "auto"`` finds it through
    ``serve.json`` and the search process only sends HTTP requests.

Both use the tiny random checkpoint (``build_random_checkpoint`` defaults) on the CPU in
float32, over a small folder of the tests' corpus (three text files and a photo) indexed with
``kbterm index`` first.  Each mode: one untimed warm-up run (the OS file cache, the serve's
first requests), then the median of ``--repeats`` wall-clock runs.  The hits of every run are
compared (same paths, same chunks, same order).  Then one more run of each mode under
``python -X importtime`` with an import hook reports what the search process imports (torch?
transformers?) and the chain that first imports torch.

    python benchmarks/bench_serve.py              # about 4 minutes
    python benchmarks/bench_serve.py --repeats 9
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, corpus, kbterm_env, write_config

QUERY = "how are pages rendered to images"
TARGET_S = 0.5

# Run kbterm's CLI in this process, reporting (on stderr, one JSON line) the heavy packages in
# sys.modules at exit and the stack that first imported each of them.
WRAPPER = r"""
import builtins, json, runpy, sys, traceback
WATCH = ("torch", "transformers", "lancedb", "pyarrow", "tokenizers", "PIL", "numpy", "httpx")
first = {}
_orig = builtins.__import__
def _hook(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.split(".")[0]
    if level == 0 and top in WATCH and top not in first and top not in sys.modules:
        stack = [f for f in traceback.extract_stack()[:-1]
                 if "/kbterm/" in f.filename and "/site-packages/" not in f.filename]
        first[top] = [f"{f.filename.split('/kbterm/', 1)[-1]}:{f.lineno} {f.name}"
                      for f in stack]
    return _orig(name, globals, locals, fromlist, level)
builtins.__import__ = _hook
sys.argv = ["kbterm"] + sys.argv[1:]
try:
    runpy.run_module("kbterm", run_name="__main__")
finally:
    print("KBTERM-IMPORTS " + json.dumps({
        "loaded": sorted(m for m in WATCH if m in sys.modules),
        "first": {m: first.get(m) for m in WATCH if m in sys.modules}}), file=sys.stderr)
"""


def kbterm(config: Path, *args: str, check: bool = True,
           timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kbterm", "--config", str(config), *args],
                          capture_output=True, text=True, env=kbterm_env(), cwd=REPO,
                          check=check, timeout=timeout)


def hits_of(stdout: str) -> tuple[list[str], list[str], dict[str, float]]:
    data = json.loads(stdout)
    return ([r["metadata"]["source"] for r in data["results"]],
            [r["id"] for r in data["results"]], data.get("timings_ms", {}))


def timed_searches(config: Path, repeats: int) -> dict:
    """One warm-up run, then ``repeats`` timed runs of the search command."""
    runs = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        out = kbterm(config, "search", QUERY, "--json").stdout
        wall = time.perf_counter() - start
        paths, ids, timings = hits_of(out)
        runs.append({"wall": wall, "paths": paths, "ids": ids, "timings": timings})
        print(f"  run {i}{' (warm-up)' if i == 0 else ''}: {wall:.2f} s", file=sys.stderr)
    timed = runs[1:]
    keys = sorted({k for r in timed for k in r["timings"]})
    return {"warmup_s": runs[0]["wall"],
            "walls": [r["wall"] for r in timed],
            "median_s": statistics.median(r["wall"] for r in timed),
            "timings_ms": {k: statistics.median(r["timings"].get(k, 0.0) for r in timed)
                           for k in keys},
            "paths": [r["paths"] for r in runs], "ids": [r["ids"] for r in runs]}


def imports_of_search(config: Path, work: Path) -> dict:
    """What one search process imports (and the import times of the big packages)."""
    wrapper = work / "import_probe.py"
    wrapper.write_text(WRAPPER)
    proc = subprocess.run([sys.executable, "-X", "importtime", str(wrapper), "--config",
                           str(config), "search", QUERY, "--json"], capture_output=True,
                          text=True, env=kbterm_env(), cwd=REPO, check=True)
    report: dict = {}
    cumulative: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if line.startswith("KBTERM-IMPORTS "):
            report = json.loads(line.split(" ", 1)[1])
        elif line.startswith("import time:"):
            parts = line.split("|")
            if len(parts) == 3 and parts[1].strip().isdigit():
                name = parts[2].rstrip()
                bare = name.strip()
                if bare in ("torch", "transformers", "lancedb", "lancedb.embeddings",
                            "lance_namespace", "pyarrow", "kbterm.cli"):
                    # the first (outermost) import of the package
                    cumulative.setdefault(bare, int(parts[1]) / 1e6)
    report["import_s"] = cumulative
    return report


def startup_reference(repeats: int) -> dict:
    """Seconds of bare imports in a fresh process (for scale): kbterm's CLI, lancedb, torch."""
    out = {}
    for label, code in (("python -c pass", "pass"),
                        ("import kbterm.cli", "import kbterm.cli"),
                        ("import lancedb", "import lancedb"),
                        ("import torch", "import torch")):
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=kbterm_env(), cwd=REPO)
            walls.append(time.perf_counter() - start)
        out[label] = statistics.median(walls)
    return out


def versions() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__.split("+")[0],
            "transformers": transformers.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON too")
    args = parser.parse_args()

    from kbterm.models.random_checkpoint import build_random_checkpoint

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="kbterm-bench-serve-"))
    config = None
    try:
        model = build_random_checkpoint(work / "model")
        library = work / "library"
        library.mkdir()
        source = corpus()
        for rel in ("text/handbook.txt", "text/qwen3-vl-embedding-readme.md",
                    "text/subtitles-unicode.srt", "images/beach.jpeg"):
            shutil.copy(source / rel, library / Path(rel).name)
        data = work / "data"
        config = write_config(work / "kbterm.toml", model, data)
        start = time.perf_counter()
        indexed = kbterm(config, "index", str(library), "--json").stdout
        summary = json.loads(indexed)
        print(f"indexed {summary.get('indexed')} files in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)

        print("(a) no serve running", file=sys.stderr)
        assert not (data / "serve.json").exists()
        local = timed_searches(config, args.repeats)
        local_imports = imports_of_search(config, work)

        print("(b) kbterm serve running", file=sys.stderr)
        start = time.perf_counter()
        kbterm(config, "serve", "--detach", "--port", "0")
        serve_start = time.perf_counter() - start
        try:
            state = json.loads((data / "serve.json").read_text())
            served = timed_searches(config, args.repeats)
            served_imports = imports_of_search(config, work)
            stats = subprocess.run(
                [sys.executable, "-c",
                 "import json, sys, urllib.request\n"
                 "req = urllib.request.Request(sys.argv[1] + '/kbterm/v1/stats',"
                 " headers={'Authorization': 'Bearer ' + sys.argv[2]})\n"
                 "print(urllib.request.urlopen(req, timeout=10).read().decode())",
                 state["url"], state["token"]], capture_output=True, text=True, check=True)
            serve_stats = json.loads(stats.stdout)
        finally:
            kbterm(config, "serve", "--stop", check=False)
        reference = startup_reference(args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    all_paths = local["paths"] + served["paths"]
    all_ids = local["ids"] + served["ids"]
    same_paths = all(p == all_paths[0] for p in all_paths)
    same_ids = all(i == all_ids[0] for i in all_ids)
    ratio = served["median_s"] / local["median_s"]
    result = {"date": time.strftime("%Y-%m-%d"), **versions(), "repeats": args.repeats,
              "chunks_indexed": summary.get("chunks_written"), "query": QUERY,
              "local": local, "served": served, "ratio": ratio, "serve_start_s": serve_start,
              "same_paths": same_paths, "same_ids": same_ids, "hits": len(all_paths[0]),
              "local_imports": local_imports, "served_imports": served_imports,
              "serve_stats": serve_stats, "reference_s": reference,
              "load_average": [load_before, os.getloadavg()[0]]}

    def split(t: dict) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in t.items())

    print(f"\nMeasured {result['date']}, torch {result['torch']}, transformers "
          f"{result['transformers']}; median of {args.repeats} runs after a warm-up run; "
          f"{result['chunks_indexed']} chunks; load average {load_before:.2f} before, "
          f"{result['load_average'][1]:.2f} after.\n")
    print("| `kbterm search QUERY --json`, fresh process | wall (median) | runs | "
          "in-process split, ms (median) | ratio |")
    print("|---|---:|---|---|---:|")
    for label, r in (("no serve: models load in the process (baseline)", local),
                     ("warm `kbterm serve` running", served)):
        runs = ", ".join(f"{w:.2f}" for w in r["walls"])
        print(f"| {label} | {r['median_s']:.2f} s | {runs} | {split(r['timings_ms'])} | "
              f"{r['median_s'] / local['median_s']:.2f} |")
    verdict = "met" if served["median_s"] <= TARGET_S else "not met"
    print(f"\nTarget <= {TARGET_S} s wall with the warm serve: **{verdict}** "
          f"({served['median_s']:.2f} s).  `kbterm serve --detach` took {serve_start:.1f} s.")
    print(f"Same hits in every run (both modes, warm-ups included): paths "
          f"{'yes' if same_paths else 'NO'}, chunk ids {'yes' if same_ids else 'NO'} "
          f"({result['hits']} hits).")
    for label, imp in (("no serve", local_imports), ("serve running", served_imports)):
        print(f"\nImports of one search process ({label}): {', '.join(imp.get('loaded', []))}")
        print("  import time (s, -X importtime, cumulative): "
              + ", ".join(f"{k} {v:.2f}" for k, v in imp["import_s"].items()))
        for mod in ("torch", "transformers"):
            chain = (imp.get("first") or {}).get(mod)
            if chain:
                print(f"  {mod} first imported by: " + " -> ".join(chain))
    print("\nFresh-process reference (median): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in reference.items()))
    print(f"serve stats after the runs: {json.dumps(serve_stats)}")
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
