"""Indexing benchmarks (issue #3).  Every figure is compared with a baseline run in the same
process on the same machine.

(a) PDF pipeline: kbterm's PDF parser (text of every page + every page rendered within the
    contract's max_pixels, as PIL images ready for the model; model excluded) over ``book.pdf``
    (the 285-page book tests/corpus_builder.py generates) vs plain PyMuPDF text extraction +
    rendering of the same pages at the same zoom.  Target: overhead ratio <= 1.25.
(b) A second ``kbterm index`` over 1,000 unchanged files (the real command, in a subprocess,
    Python start-up included): seconds (target <= 2 s) and model calls (must be 0); the
    baseline is the first, full run over the same files.
(c) LanceDB versions on disk after 1,000 single-file updates (each a separate index run that
    re-embeds one changed file), with kbterm's clean-up vs the same runs with clean-up disabled:
    right after the burst, and after the next run once keep_versions_seconds have passed; plus
    a vector search's latency on each table afterwards.

    python benchmarks/bench_indexing.py                # all three
    python benchmarks/bench_indexing.py --only a --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import corpus, kbterm_env, model_config, write_config  # noqa: E402


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# --------------------------------------------------------------------------- (a)


def bench_pdf(repeats: int) -> dict:
    import pymupdf

    from kbterm.ingest import ParseContext
    from kbterm.ingest.pdf import page_size, parse_pdf

    pdf = corpus() / "pdf" / "book.pdf"
    with pymupdf.open(pdf) as doc:
        pages = len(doc)
    ctx = ParseContext()
    max_pixels = ctx.limits.image_max_pixels

    def kbterm_pipeline() -> None:
        n = 0
        for section in parse_pdf(pdf, ParseContext()):
            n += 1
        assert n > pages

    def plain_pymupdf(to_pil: bool = False) -> None:
        from PIL import Image

        with pymupdf.open(pdf) as doc:
            for page in doc:
                page.get_text()
                # the same pixel size as kbterm's page images
                w, h = page_size(page.rect.width, page.rect.height, max_pixels)
                matrix = pymupdf.Matrix(w / page.rect.width, h / page.rect.height)
                pix = page.get_pixmap(matrix=matrix, alpha=False)
                assert pix.samples_mv
                if to_pil:  # what a model needs: a PIL image
                    Image.frombytes("RGB", (pix.width, pix.height), pix.samples_mv)

    kbterm_pipeline()  # warm-up (font caches)
    plain_pymupdf()
    base, base_pil, ours = [], [], []
    for _ in range(repeats):  # interleaved, so drift hits all alike
        base.append(median_time(plain_pymupdf, 1))
        base_pil.append(median_time(lambda: plain_pymupdf(True), 1))
        ours.append(median_time(kbterm_pipeline, 1))
    b, bp, o = statistics.median(base), statistics.median(base_pil), statistics.median(ours)
    return {"pages": pages, "baseline_s": b, "kbterm_s": o, "ratio": o / b,
            "baseline_pil_s": bp, "ratio_pil": o / bp, "max_pixels": max_pixels}


# --------------------------------------------------------------------------- (b), (c)


def kbterm_cmd(config: Path, *args: str) -> tuple[float, dict]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "kbterm", "--config", str(config), "index", "--json", *args],
        capture_output=True, text=True, env=kbterm_env(), cwd=REPO, check=True,
    ).stdout
    return time.perf_counter() - t, json.loads(out)


def bench_unchanged(work: Path, model: Path, files: int, repeats: int) -> dict:
    folder = work / "many"
    for i in range(files):
        sub = folder / f"d{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"note-{i:04d}.txt").write_text(f"Note {i}. The tide came in at {i % 24}:00.\n")
    config = write_config(work / "b.toml", model, work / "data-b")
    first_s, first = kbterm_cmd(config, str(folder))
    assert first["indexed"] == files, first
    seconds, calls = [], []
    for _ in range(repeats):
        s, summary = kbterm_cmd(config, str(folder))
        assert summary["unchanged"] == files and summary["indexed"] == 0, summary
        seconds.append(s)
        calls.append(summary["model_calls"])
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import kbterm.cli"], check=True, cwd=REPO)
    startup = time.perf_counter() - t
    return {"files": files, "first_run_s": first_s, "first_run_model_calls":
            first["model_calls"], "second_run_s": statistics.median(seconds),
            "second_run_model_calls": max(calls), "python_startup_s": startup,
            "ratio": statistics.median(seconds) / first_s}


def bench_versions(work: Path, model: Path, updates: int) -> dict:
    import numpy as np

    from kbterm.config import config_from_dict
    from kbterm.indexer import Indexer
    from kbterm.models.registry import get_embedder
    from kbterm.store import Store

    results = {}
    for arm in ("cleanup", "no_cleanup"):
        folder = work / f"upd-{arm}"
        folder.mkdir()
        for i in range(20):
            (folder / f"f{i}.txt").write_text(f"File {i} about lamps.\n")
        config = config_from_dict(model_config(model, work / f"data-{arm}"))
        embedder = get_embedder(config)
        Indexer(config, embedder=embedder).run([folder])
        store = Store(config.data_path)
        query = np.random.default_rng(0).standard_normal(embedder.dimension).astype("float32")

        def search_ms() -> float:
            table = store.chunks_table
            table.search(query).limit(10).to_list()
            return 1000 * median_time(lambda: table.search(query).limit(10).to_list(), 50)

        before = search_ms()
        original = Store.optimize
        if arm == "no_cleanup":
            Store.optimize = lambda self, keep_seconds, force=False: False  # type: ignore
        t = time.perf_counter()
        try:
            for i in range(updates):
                (folder / f"f{i % 20}.txt").write_text(f"File {i % 20}, edit {i}.\n")
                summary = Indexer(config, embedder=embedder).run([folder])
                assert summary.indexed == 1, summary
            elapsed = time.perf_counter() - t
            result = {"updates": updates, "seconds": elapsed, "search_ms_before": before,
                      "versions_after_burst": store.versions(),
                      "search_ms_after_burst": search_ms()}
            # The next run, once the burst's versions are past keep_versions_seconds.
            time.sleep(config.indexing.keep_versions_seconds + 1)
            assert Indexer(config, embedder=embedder).run([folder]).unchanged == 20
            result.update(versions_after_next_run=store.versions(),
                          search_ms_after_next_run=search_ms(),
                          disk_bytes=store.disk_bytes())
        finally:
            Store.optimize = original  # type: ignore
        results[arm] = result
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["a", "b", "c"], action="append")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=1000)
    args = parser.parse_args()
    only = set(args.only or ["a", "b", "c"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    report = {}
    if "a" in only:
        report["pdf"] = r = bench_pdf(args.repeats)
        print(f"(a) PDF {r['pages']} pages: PyMuPDF text + pixmap {r['baseline_s']:.2f} s, "
              f"+ PIL image {r['baseline_pil_s']:.2f} s, kbterm {r['kbterm_s']:.2f} s; ratios "
              f"{r['ratio']:.3f} and {r['ratio_pil']:.3f}", flush=True)
    if only & {"b", "c"}:
        from kbterm.models.random_checkpoint import build_random_checkpoint

        work = Path(tempfile.mkdtemp(prefix="kbterm-bench-"))
        try:
            model = build_random_checkpoint(work / "model")
            if "b" in only:
                report["unchanged"] = r = bench_unchanged(work, model, args.files, args.repeats)
                print(f"(b) {r['files']} unchanged files: second run {r['second_run_s']:.2f} s "
                      f"({r['second_run_model_calls']} model calls); first run "
                      f"{r['first_run_s']:.2f} s ({r['first_run_model_calls']} calls); "
                      f"python start-up {r['python_startup_s']:.2f} s", flush=True)
            if "c" in only:
                report["versions"] = r = bench_versions(work, model, args.updates)
                for arm, v in r.items():
                    print(f"(c) {arm}: {v['updates']} updates in {v['seconds']:.1f} s; versions "
                          f"right after {v['versions_after_burst']}, after the next run "
                          f"{v['versions_after_next_run']}; search before "
                          f"{v['search_ms_before']:.2f} ms, after {v['search_ms_after_burst']:.2f}"
                          f" ms, after the next run {v['search_ms_after_next_run']:.2f} ms; "
                          f"{v['disk_bytes'] / 1e6:.2f} MB on disk", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
