"""Indexing that respects the machine (issue #16): the plan's estimate against the run it plans,
and the time until every text chunk of a mixed folder is searchable, text first vs the order of
kbterm 0.1 (each file's text and pictures together), same run.

(a) ``kbterm index --plan --json`` then ``kbterm index --json``, each a fresh process (as a user
    runs them), on a small folder: notes, a PDF, a photo.  The plan measures the host's rates
    the first time (a probe passage and picture; kept in latency.json) and counts the work; the
    ratio is the run's time over the plan's estimate (target within 25%).  On the tiny random
    checkpoint, and with ``--checkpoint`` on another one (the 2B-shaped checkpoint
    ``bench_2b_cpu.py --keep`` leaves, in float32).
(b) In one process, the real ``Indexer`` over a mixed folder (notes, the corpus's book excerpt,
    a photo, a video) with the tiny checkpoint at the contract's vision limits; a reader polls
    the table every 20 ms and notes when the last text chunk became visible.  Baseline: the same
    run with ``Indexer.text_first = False`` (kbterm 0.1's order).

    python benchmarks/bench_plan.py
    python benchmarks/bench_plan.py --only a --checkpoint /tmp/q2b --pages 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, corpus, kbterm_env

sys.path.insert(0, str(REPO / "tests"))


def small_folder(dest: Path, pages: int) -> Path:
    from corpus_builder import book_excerpt

    dest.mkdir(parents=True)
    text = (corpus() / "text" / "handbook.txt").read_text(encoding="utf-8").split()
    for i in range(3):
        (dest / f"note-{i}.md").write_text(f"# Note {i}\n\n" + " ".join(text[i * 300:i * 300 + 300]))
    book_excerpt(corpus(), dest / "book.pdf", pages)
    shutil.copy(corpus() / "images" / "photo_1.jpg", dest)
    return dest


def config_file(path: Path, model: Path, data: Path, folder: Path) -> Path:
    path.write_text(f'data_dir = "{data}"\n[library]\nfolders = ["{folder}"]\n'
                    '[models]\ndevice = "cpu"\ndtype = "float32"\n'
                    f'[models.embedder]\nmodel = "{model}"\nbackend = "local"\n')
    return path


def kbterm(*args: str) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kbterm", *args], capture_output=True,
                          text=True, env=kbterm_env(), cwd=REPO, check=True)
    return time.perf_counter() - start, json.loads(proc.stdout)


def plan_vs_run(model: Path, work: Path, pages: int) -> dict:
    folder = small_folder(work / "library", pages)
    config = config_file(work / "c.toml", model, work / "data", folder)
    measure_s, _ = kbterm("--config", str(config), "index", "--plan", "--json")  # measures
    plan_s, plan = kbterm("--config", str(config), "index", "--plan", "--json")
    run_s, summary = kbterm("--config", str(config), "index", "--json", "--no-progress")
    return {"estimate_s": plan["seconds"], "estimate_text_s": plan["text_seconds"],
            "run_process_s": run_s, "run_sync_s": summary["seconds"],
            "ratio": run_s / plan["seconds"], "embeddings": plan["embeddings"],
            "embedded": summary["embedded"], "plan_measuring_s": measure_s,
            "plan_s": plan_s, "rates": plan["rates"], "pages": plan["pages"],
            "passages": plan["passages"], "visual_tokens": plan["visual_tokens"]}


def searchable(model: Path, work: Path, text_first: bool) -> dict:
    from corpus_builder import book_excerpt

    from kbterm.config import config_from_dict
    from kbterm.indexer import Indexer
    from kbterm.store import Store

    folder = work / "mixed"
    if not folder.exists():
        folder.mkdir()
        text = (corpus() / "text" / "handbook.txt").read_text(encoding="utf-8").split()
        for i in range(20):
            (folder / f"note-{i:02d}.md").write_text(" ".join(text[i * 200:i * 200 + 200]))
        book_excerpt(corpus(), folder / "book.pdf", 40)
        for name in ("photo_1.jpg", "photo_2.jpg", "docpage_0.jpg"):
            shutil.copy(corpus() / "images" / name, folder)
        shutil.copy(corpus() / "video" / "example.mp4", folder)
    data = work / ("data-text-first" if text_first else "data-old-order")
    config = config_from_dict({"data_dir": str(data), "library": {"folders": [str(folder)]},
                               "models": {"device": "cpu", "dtype": "float32",
                                          "embedder": {"model": str(model),
                                                       "backend": "local"}}})
    from kbterm.backends import get_embedder

    embedder = get_embedder(config)
    embedder.embed(["warm up"])  # loaded before the clock starts, in both orders
    indexer = Indexer(config, embedder=embedder)
    indexer.text_first = text_first
    store = Store(data)
    seen: dict[str, float] = {}
    done = threading.Event()

    def run() -> None:
        try:
            seen["summary"] = indexer.run().seconds
        finally:
            done.set()

    start = time.perf_counter()
    threading.Thread(target=run).start()
    counts = []
    while not done.is_set():
        try:
            rows = store.live_chunks(["modality"])
        except Exception:  # noqa: BLE001 - the table may not exist yet
            rows = []
        counts.append((time.perf_counter() - start, sum(r["modality"] == "text" for r in rows)))
        time.sleep(0.02)
    total = time.perf_counter() - start
    final = sum(r["modality"] == "text" for r in store.live_chunks(["modality"]))
    when = next(t for t, n in counts + [(total, final)] if n >= final)
    return {"all_text_searchable_s": when, "run_s": total, "text_chunks": final}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["a", "b"])
    parser.add_argument("--checkpoint", type=Path, help="(a) on this checkpoint too")
    parser.add_argument("--pages", type=int, default=3, help="(a) pages of the PDF")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from kbterm.models.random_checkpoint import build_random_checkpoint

    work = Path(tempfile.mkdtemp(prefix="kbterm-bench-plan-"))
    report = {}
    try:
        tiny = build_random_checkpoint(
            work / "tiny", vocab_size=4000,
            training_text=(corpus() / "text" / "handbook.txt").read_text().splitlines())
        if args.only in (None, "a"):
            models = [("tiny", tiny)] + ([("checkpoint", args.checkpoint)]
                                         if args.checkpoint else [])
            for name, model in models:
                r = report[f"plan_{name}"] = plan_vs_run(model, work / f"a-{name}", args.pages)
                print(f"(a) {name}: estimate {r['estimate_s']:.1f} s, run {r['run_process_s']:.1f}"
                      f" s (sync {r['run_sync_s']:.1f} s): run / estimate {r['ratio']:.2f}; "
                      f"{r['embeddings']} embeddings planned, {r['embedded']} embedded",
                      flush=True)
        if args.only in (None, "b"):
            old = searchable(tiny, work, text_first=False)
            new = searchable(tiny, work, text_first=True)
            report["searchable"] = {"old_order": old, "text_first": new,
                                    "ratio": old["all_text_searchable_s"]
                                    / new["all_text_searchable_s"]}
            print(f"(b) every text chunk searchable after {new['all_text_searchable_s']:.1f} s "
                  f"text first vs {old['all_text_searchable_s']:.1f} s in the old order "
                  f"({report['searchable']['ratio']:.1f}x sooner); whole runs "
                  f"{new['run_s']:.1f} s vs {old['run_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
