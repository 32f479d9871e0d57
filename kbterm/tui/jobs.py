"""What the app runs off the UI thread (in its thread workers): plain functions that call the
headless core and report with messages (:mod:`kbterm.tui.messages`) through ``post``.

They never touch a widget; the app's handlers do, on the UI thread.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from textual.message import Message

from kbterm.tui import messages

if TYPE_CHECKING:
    from kbterm.answer import Answer, Asker
    from kbterm.backends.base import Host
    from kbterm.retrieval import Filters, Hit, Medium, Results, Searcher

Post = Callable[[Message], object]


def count(searcher: "Searcher", post: Post) -> None:
    """Report the index as the searcher last read it, and how many files failed."""
    from kbterm.store import STATUS_FAILED

    ledger = searcher.store.ledger()
    failed = sum(1 for record in ledger.values() if record.status == STATUS_FAILED)
    post(messages.IndexCounted(searcher.file_count, searcher.chunk_count, failed, bool(ledger)))


def warm(searcher_of: Callable[[], "Searcher"], post: Post) -> None:
    """Read the index and load the embedder (and the vector cache)."""
    from kbterm.errors import KbtermError
    from kbterm.retrieval import NoIndex

    post(messages.ModelState(("loading models…",)))
    searcher = searcher_of()
    try:
        searcher.refresh()
    except NoIndex:
        pass  # a ledger but no chunks yet (every file failed): nothing to search, yet
    except KbtermError as exc:
        post(messages.ErrorShown(str(exc)))
    try:
        count(searcher, post)
    except Exception:  # noqa: BLE001 - the count is a nicety; searching still says why
        pass
    try:
        from kbterm.backends import choose

        embedder = searcher.embedder
        embedder.warm()
        host = embedder.host()
        # torch, transformers and LanceDB leave millions of long-lived objects, and each
        # full garbage collection walked them all: 100-300 ms pauses in the middle of
        # showing results (BENCHMARKS.md).  Frozen, the collector skips them.
        gc.freeze()
        from kbterm.backends.latency import expected

        post(messages.ModelState(model_forms(host, {
            role: choose(searcher.config, role).kind for role in ("reranker", "generator")},
            expected(searcher.config.data_path, "embedder", host))))
    except KbtermError as exc:
        post(messages.ModelState(("embedder unavailable: keyword search", "keyword search")))
        post(messages.ErrorShown(str(exc)))


def model_forms(host: "Host", others: dict[str, str],
                latency: float | None = None) -> tuple[str, ...]:
    """The status bar's model line, long to short: the embedder and where it runs (and what
    a query costs there, once measured), then where the reranker and the answer model run
    when that is not in this process too."""
    name = os.path.basename(host.model.rstrip("/")) or host.model
    runtime = " ".join(p for p in (host.device, host.dtype) if p)
    where = ", ".join(p for p in ("" if host.kind == "in process" else host.kind, runtime) if p)
    short = f"{name} ({where})" if where else name
    if latency is not None:
        from kbterm.backends.latency import describe

        timed = f"{name} ({where + ', ' if where else ''}{describe(latency)} a query)"
        short_forms: tuple[str, ...] = (timed, short)
    else:
        short_forms = (short,)
    if all(kind == "in process" for kind in others.values()) and host.kind == "in process":
        return (*short_forms, name)
    rest = " · ".join(f"{'rerank' if role == 'reranker' else 'answers'} "
                      f"{'in process' if kind == 'in process' else kind}"
                      for role, kind in others.items())
    return (f"{short_forms[0]} · {rest}", *short_forms, name)


def recount(searcher: "Searcher", post: Post) -> None:
    """Catch the searcher up with the index (the watcher changed it), for the status bar."""
    from kbterm.errors import KbtermError

    try:
        searcher.refresh()
        count(searcher, post)
    except KbtermError:
        return


def copy_head(results: "Results", k: int) -> "Results":
    """The first ``k`` hits of ``results`` as their own list (reranking reorders the original)."""
    return replace(results, hits=[replace(h) for h in results.hits[:k]],
                   timings_ms=dict(results.timings_ms), warnings=list(results.warnings))


def search(searcher: "Searcher", seq: int, text: str, image: "Medium", filters: "Filters",
           *, k: int, rerank: bool, cancel: threading.Event, latest: Callable[[], int],
           post: Post) -> None:
    """Query ``seq`` in three stages: its keyword hits at once (no model call), the fused
    hits once the query is embedded, then reranked; nothing once ``latest()`` (the newest
    query's number) has moved on."""
    from kbterm.errors import Cancelled, KbtermError
    from kbterm.retrieval import NoIndex, Results

    try:
        if text.strip() and image is None:
            first = searcher.retrieve(text, k=k, filters=filters, keywords_only=True)
            if seq != latest():
                return
            if first.hits:  # (none: the fused list is the first one shown)
                post(messages.SearchDone(seq, copy_head(first, k), False))
        results = searcher.retrieve(text, image, k=k, filters=filters)
        if seq != latest():
            return  # a newer keystroke: this one is stale
        post(messages.SearchDone(seq, copy_head(results, k), False))
        if rerank:
            reranked = searcher.rerank(results, k=k, cancel=cancel,
                                       budget_ms=searcher.config.tui.rerank_budget_ms)
            if seq != latest():
                return
            post(messages.SearchDone(seq, reranked, True))
    except Cancelled:
        return  # a newer keystroke stopped it: that search shows its own results
    except NoIndex:  # a ledger without chunks (every file failed): no results
        post(messages.SearchDone(seq, Results(query=text, medium=image), True))
    except KbtermError as exc:
        post(messages.SearchFailed(seq, str(exc)))
    except Exception as exc:  # noqa: BLE001 - shown, never a traceback on screen
        post(messages.SearchFailed(seq, f"search failed: {type(exc).__name__}: {exc}"))


# Pixels of a preview picture: plenty for a terminal (a 4K screen's cells hold fewer), and
# a 200-megapixel photo is decoded at reduced size, never whole.
PREVIEW_PIXELS = 2_000_000


def picture(searcher: "Searcher", hit: "Hit", before: bool, post: Post) -> None:
    """Decode the picture of ``hit`` for the preview (a PDF text hit's page is rendered, or
    taken from the cache, first); an unreadable one is simply not shown."""
    try:
        from kbterm.ingest.image import load_preview

        path = hit.image_path or searcher.image_for(hit)
        if path is None:
            return
        image = load_preview(path, PREVIEW_PIXELS)
    except Exception as exc:  # noqa: BLE001 - gone, swapped, damaged, too large: no picture
        post(messages.ErrorShown(f"cannot show the picture: {exc}"))
        return
    post(messages.PictureLoaded(hit, image, before))


def generate(asker: "Asker", answer: "Answer", cancel: threading.Event, post: Post) -> None:
    """Write ``answer``, reporting at most 20 times a second, and once when it ends."""
    from kbterm.errors import KbtermError

    last = 0.0
    try:
        for _piece in asker.stream(answer, cancel=cancel):
            now = time.monotonic()
            if now - last > 0.05:
                last = now
                post(messages.AnswerProgress(answer))
    except KbtermError as exc:  # e.g. no answer model: said in the pane, with the sources
        answer.warnings.append(str(exc))
        post(messages.ErrorShown(str(exc)))
    except Exception as exc:  # noqa: BLE001 - shown, never a traceback on screen
        answer.warnings.append(f"answer failed: {type(exc).__name__}: {exc}")
        post(messages.ErrorShown(answer.warnings[-1]))
    finally:
        # (Asker.stream recorded whether the user stopped it; the event is set now either
        # way, which marks the answer as finished for Escape.)
        post(messages.AnswerProgress(answer, done=True))
        cancel.set()
