"""Search benchmarks (issue #5).  Every figure is compared with baselines measured in the same
run on the same machine.

(a) Vector candidate retrieval (query embedding excluded) over N chunks of dimension 2048
    (unit vectors, float32 at the source), 100 candidates per query as the searcher takes them:
    kbterm's float16 matrix scan + float32 rescoring (``kbterm.vectors.nearest``) vs LanceDB's
    flat (index-free) search of the same vectors vs a NumPy float32 brute-force scan, with
    recall@10 of each against exact float64 search.  Queries are noisy copies of random
    chunks (cosine about 0.7 with their source; the other nine neighbours are near-ties, the
    hard case for any shortcut).  Run at 100,000 and 1,000,000 chunks.
    The keyword half (``--only k``): LanceDB's BM25 index over N chunks of ~80 words, 100
    candidates per 3-word query.
(b) ``kbterm search`` end to end with the small random model on a small index (the text
    files, images and a PDF of the tests' corpus, see tests/corpus_builder.py): per-query time
    split into embed / retrieve / rerank (median of warm queries in one process), and one cold
    CLI run (Python, imports and model loading included).

    python benchmarks/bench_search.py                      # both, 100k and 1M
    python benchmarks/bench_search.py --only a --sizes 100000 --queries 50
    python benchmarks/bench_search.py --only k        # the keyword half of (a) alone
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

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import corpus, kbterm_env, model_config, write_config  # noqa: E402

DIM = 2048
CANDIDATES = 100


def unit_rows(rng: np.random.Generator, n: int, dim: int, block: int = 65536) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):
        x = rng.standard_normal((min(block, n - start), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + len(x)] = x
    return out


def exact_top(x: np.ndarray, q: np.ndarray, k: int, block: int = 131072) -> np.ndarray:
    """Exact top-k in float64 (the reference for recall)."""
    best = np.empty(0, dtype=np.int64)
    best_s = np.empty(0)
    q64 = q.astype(np.float64)
    for start in range(0, len(x), block):
        s = x[start:start + block].astype(np.float64) @ q64
        idx = np.argpartition(-s, k)[:k] + start
        best = np.concatenate([best, idx])
        best_s = np.concatenate([best_s, s[idx - start]])
    order = np.argsort(-best_s)[:k]
    return best[order]


def recall(found: list[int], truth: np.ndarray) -> float:
    return len(set(found[:10]) & set(truth[:10].tolist())) / 10


def timed(fn, repeats: int):
    times, out = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        out.append(fn())
        times.append(time.perf_counter() - t)
    return times, out


def bench_vectors(n: int, queries: int, lancedb_queries: int, work: Path) -> dict:
    from kbterm.vectors import nearest

    rng = np.random.default_rng(n)
    x = unit_rows(rng, n, DIM)
    picks = rng.integers(0, n, queries)
    qs = []
    for p in picks:
        q = x[p] + 1.0 * rng.standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)
        qs.append((q / np.linalg.norm(q)).astype(np.float32))
    truth = [exact_top(x, q, 10) for q in qs]

    # kbterm: the float16 matrix as the cache holds it, every row live.
    m16 = x.astype(np.float16)
    rows = np.arange(n, dtype=np.int64)
    nearest(m16, rows, qs[0], CANDIDATES)  # warm-up
    k_times, k_recall = [], []
    for q, t in zip(qs, truth):
        s = time.perf_counter()
        found = nearest(m16, rows, q, CANDIDATES)
        k_times.append(time.perf_counter() - s)
        k_recall.append(recall([i for i, _ in found], t))

    # NumPy float32 brute force (the same candidates: argpartition + sort).
    def numpy_search(q: np.ndarray) -> list[int]:
        s = x @ q
        idx = np.argpartition(-s, CANDIDATES)[:CANDIDATES]
        return idx[np.argsort(-s[idx])].tolist()

    numpy_search(qs[0])
    n_times, n_recall = [], []
    for q, t in zip(qs, truth):
        s = time.perf_counter()
        found = numpy_search(q)
        n_times.append(time.perf_counter() - s)
        n_recall.append(recall(found, t))
    del m16

    # LanceDB flat search over the same vectors.
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(work / f"lance-{n}"))
    schema = pa.schema([pa.field("row", pa.int64()),
                        pa.field("vector", pa.list_(pa.float32(), DIM))])
    table = None
    for start in range(0, n, 65536):
        block = x[start:start + 65536]
        data = pa.table({
            "row": pa.array(np.arange(start, start + len(block))),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), DIM),
        }, schema=schema)
        if table is None:
            table = db.create_table("v", data=data, schema=schema)
        else:
            table.add(data)

    def lance_search(q: np.ndarray) -> list[int]:
        res = (table.search(q).distance_type("cosine").select(["row"]).limit(CANDIDATES)
               .to_arrow())
        return res.column("row").to_pylist()

    lance_search(qs[0])
    l_times, l_recall = [], []
    for q, t in list(zip(qs, truth))[:lancedb_queries]:
        s = time.perf_counter()
        found = lance_search(q)
        l_times.append(time.perf_counter() - s)
        l_recall.append(recall(found, t))
    del x
    shutil.rmtree(work / f"lance-{n}", ignore_errors=True)

    def summary(times: list[float], recalls: list[float]) -> dict:
        return {"p50_ms": 1000 * statistics.median(times),
                "p95_ms": 1000 * float(np.percentile(times, 95)), "queries": len(times),
                "recall_at_10": float(np.mean(recalls))}

    return {"chunks": n, "dim": DIM, "kbterm": summary(k_times, k_recall),
            "numpy_f32": summary(n_times, n_recall), "lancedb_flat": summary(l_times, l_recall)}


def bench_keywords(n: int, queries: int, work: Path) -> dict:
    """BM25 candidates from LanceDB's full-text index over ``n`` chunks of ~80 words (words
    drawn Zipf-like from a 20,000-word vocabulary), as the searcher asks for them."""
    import lancedb
    import pyarrow as pa
    from lancedb.index import FTS

    rng = np.random.default_rng(7)
    vocab = np.array([f"w{i}{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}" for i in range(20000)])
    ranks = np.arange(1, len(vocab) + 1)
    p = (1 / ranks) / (1 / ranks).sum()
    db = lancedb.connect(str(work / f"fts-{n}"))
    table = None
    for start in range(0, n, 50000):
        m = min(50000, n - start)
        words = vocab[rng.choice(len(vocab), size=(m, 80), p=p)]
        texts = [" ".join(row) for row in words]
        data = pa.table({"id": pa.array([str(i) for i in range(start, start + m)]),
                         "text": pa.array(texts)})
        table = db.create_table("t", data=data) if table is None else table
        if start:
            table.add(data)
    t = time.perf_counter()
    table.create_index("text", config=FTS(), replace=True)
    build = time.perf_counter() - t
    qs = [" ".join(vocab[rng.choice(len(vocab), 3, p=p)]) for _ in range(queries)]

    def search(q: str) -> int:
        return len(table.search(q, query_type="fts").select(["id", "_score"])
                   .limit(CANDIDATES).to_list())

    search(qs[0])
    times: list[float] = []
    for q in qs:
        s = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - s)
    shutil.rmtree(work / f"fts-{n}", ignore_errors=True)
    return {"chunks": n, "p50_ms": 1000 * statistics.median(times),
            "p95_ms": 1000 * float(np.percentile(times, 95)), "index_build_s": build}


def bench_end_to_end(work: Path, queries: int) -> dict:
    from kbterm.config import config_from_dict
    from kbterm.indexer import Indexer
    from kbterm.models.random_checkpoint import build_random_checkpoint
    from kbterm.retrieval import Searcher

    model = build_random_checkpoint(work / "model")
    folder = work / "library"
    folder.mkdir()
    source = corpus()
    for p in sorted((source / "text").iterdir())[:20]:
        if p.is_file():
            shutil.copy(p, folder / p.name)
    for p in sorted((source / "images").iterdir())[:6]:
        shutil.copy(p, folder / p.name)
    shutil.copy(source / "pdf" / "small-table.pdf", folder / "small-table.pdf")
    data = work / "data-e2e"
    config = config_from_dict(model_config(model, data))
    summary = Indexer(config).run([folder])
    searcher = Searcher(config)
    texts = ["how are pages rendered to images", "table of boiling points", "a sunny beach",
             "embedding instructions for queries", "video frames per second",
             "python library for PDF", "reranker scores", "what is a pixmap",
             "transparent image on white", "chat template roles"]
    searcher.search(texts[0], k=10)  # warm: models loaded, cache built
    split = {"embed": [], "retrieve": [], "rerank": [], "total": []}
    no_rerank = []
    for i in range(queries):
        r = searcher.search(texts[i % len(texts)], k=10)
        for key in ("embed", "retrieve", "rerank"):
            split[key].append(r.timings_ms[key])
        split["total"].append(r.total_ms)
        no_rerank.append(searcher.search(texts[i % len(texts)], k=10, rerank=False).total_ms)
    config_file = write_config(work / "e2e.toml", model, data)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "kbterm", "--config", str(config_file),
                          "search", texts[1], "--json"], capture_output=True, text=True,
                         env=kbterm_env(), cwd=REPO, check=True).stdout
    cold = time.perf_counter() - t
    cold_split = json.loads(out)["timings_ms"]
    return {"chunks": searcher.chunk_count, "files": summary.indexed, "queries": queries,
            "warm_ms": {k: statistics.median(v) for k, v in split.items()},
            "warm_no_rerank_ms": statistics.median(no_rerank),
            "cold_cli_s": cold, "cold_cli_split_ms": cold_split}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["a", "b", "k"], action="append")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--lancedb-queries", type=int, default=5)
    args = parser.parse_args()
    only = set(args.only or ["a", "k", "b"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    report: dict = {}
    work = Path(tempfile.mkdtemp(prefix="kbterm-bench-search-"))
    try:
        if "a" in only:
            report["vectors"] = []
            for n in args.sizes:
                r = bench_vectors(n, args.queries, args.lancedb_queries, work)
                report["vectors"].append(r)
                k, npy, lance = r["kbterm"], r["numpy_f32"], r["lancedb_flat"]
                print(f"(a) {n:,} x {DIM}: kbterm p50 {k['p50_ms']:.1f} ms (recall@10 "
                      f"{k['recall_at_10']:.3f}); NumPy f32 {npy['p50_ms']:.1f} ms "
                      f"({npy['recall_at_10']:.3f}); LanceDB flat {lance['p50_ms']:.0f} ms "
                      f"({lance['recall_at_10']:.3f})", flush=True)
        if "k" in only:
            report["keywords"] = []
            for n in args.sizes:
                r = bench_keywords(n, args.queries, work)
                report["keywords"].append(r)
                print(f"(a) {n:,} chunks, BM25 (LanceDB FTS) {CANDIDATES} candidates: p50 "
                      f"{r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms (index built in "
                      f"{r['index_build_s']:.1f} s)", flush=True)
        if "b" in only:
            report["end_to_end"] = r = bench_end_to_end(work, args.queries)
            w = r["warm_ms"]
            print(f"(b) {r['chunks']} chunks: warm search {w['total']:.0f} ms = embed "
                  f"{w['embed']:.0f} + retrieve {w['retrieve']:.0f} + rerank {w['rerank']:.0f};"
                  f" without rerank {r['warm_no_rerank_ms']:.0f} ms; cold CLI "
                  f"{r['cold_cli_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
