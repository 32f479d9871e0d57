"""Coalescing: requests that arrive together run in the same batched forward passes.

Each role that batches has one worker thread.  It takes the first waiting request, waits
``wait_s`` for more (or until ``max_items`` wait), and runs them all in one call of the model,
which plans its batches by token budget over all of them.  While a call runs, new requests queue
up and form the next one, so under load the batches grow on their own.  A call that fails is
run again request by request, so that one bad input fails only its own request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``submit(x)`` gives a future of ``run([x, ...])[i]``, run together with others."""

    def __init__(self, run: Callable[[Sequence[T]], Sequence[R]], *, name: str,
                 wait_s: float = 0.005, max_items: int = 64,
                 size: Callable[[T], int] = lambda _x: 1) -> None:
        self._run = run
        self._size = size
        self.wait_s = wait_s
        self.max_items = max_items
        self._queue: queue.Queue[tuple[T, Future[R]] | None] = queue.Queue()
        self.calls = 0  # model calls made (each one or more requests)
        self.requests = 0
        self._thread = threading.Thread(target=self._work, name=f"kbterm-serve-{name}",
                                        daemon=True)
        self._thread.start()

    def submit(self, item: T) -> "Future[R]":
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _take(self) -> list[tuple[T, Future[R]]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        size = self._size(first[0])
        deadline = time.monotonic() + self.wait_s
        while size < self.max_items:
            timeout = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=timeout) if timeout > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                self._queue.put(None)  # close after this batch
                break
            batch.append(entry)
            size += self._size(entry[0])
        return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [(x, f) for x, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            self.requests += len(live)
            try:
                self.calls += 1
                results = self._run([x for x, _f in live])
            except BaseException as exc:  # noqa: BLE001 - isolate the failing request
                if len(live) == 1:
                    live[0][1].set_exception(exc)
                    continue
                log.info("a batch of %d failed (%s); running them one by one", len(live), exc)
                for x, f in live:
                    try:
                        self.calls += 1
                        f.set_result(self._run([x])[0])
                    except BaseException as one:  # noqa: BLE001
                        f.set_exception(one)
                continue
            for (_x, f), result in zip(live, results):
                f.set_result(result)
