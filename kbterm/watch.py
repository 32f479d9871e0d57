"""``kbterm watch``: keep the index in step with the folders as files change.

The watcher holds the writer lock of its data folder for its whole life (:class:`Indexer`
session), then:

1. reconciles: a full sweep, exactly like ``kbterm index`` (so a restart after ``kill -9``
   cleans up the interrupted write and works off whatever changed while it was down);
2. follows watchdog (inotify) events.  Each event marks a path *dirty*; a path is indexed once
   it has been quiet for ``watch.debounce_seconds``, and quiet paths are gathered into one batch
   while a burst goes on (up to ``watch.batch_seconds``), so 5,000 files from a ``git checkout``
   become a few batched writes.  A batch is an :meth:`Indexer.sync` of just the dirty paths:
   the same ignore rules, change detection, vector reuse and crash-safe commits as a full run;
   a file that moved between two dirty paths is re-pointed, not embedded again;
3. sweeps every ``watch.sweep_minutes`` and after an event-queue overflow, catching whatever
   events missed; when the inotify watch limit is reached it says so (with the sysctl to raise)
   and relies on sweeps for that folder;
4. publishes its state (:mod:`kbterm.watchstate`) for ``kbterm status`` and the TUI, serves
   paths handed over by ``kbterm index``, releases the models after an idle time and compacts
   the tables once things are quiet.

Nothing busy-waits: the main thread sleeps until the next deadline (a debounce, a sweep, a
heartbeat) or an event; with no events the process wakes only to check that its folders are
still the ones it watches.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from kbterm.errors import KbtermError
from kbterm.indexer import Indexer, Summary
from kbterm.ingest import file_type
from kbterm.scan import KBIGNORE, escape_path, storable, within, within_set
from kbterm.watchstate import (
    HEARTBEAT_SECONDS,
    PID_FILE,
    REQUESTS_DIR,
    WatcherState,
    write_state,
)

if TYPE_CHECKING:
    from kbterm.config import Config
    from kbterm.backends.base import EmbeddingBackend

log = logging.getLogger(__name__)

ROOT_CHECK_SECONDS = 2.0  # how often the watched folders themselves are checked (a stat each)
MAX_BATCH_PATHS = 2000  # dirty paths per batch (memory stays bounded in a huge burst)
OPTIMIZE_EVERY_BATCHES = 50  # compact during a long stream of edits, not only when idle
RETRY_SECONDS = (2.0, 5.0, 15.0, 60.0)  # after a batch failed as a whole (model missing, ...)
LIMIT_SWEEP_SECONDS = 60.0  # sweep interval for a folder the kernel would not let us watch
PUBLISH_SECONDS = 0.5  # the state file is rewritten at most this often while indexing

StateFn = Callable[[WatcherState], None]


def eta(started: float, done: float, total: float, now: float | None = None) -> str:
    """", 3 min left" from the rate so far within a file ("" too early to say)."""
    now = time.monotonic() if now is None else now
    elapsed = now - started
    if not (0 < done < total) or elapsed < 2:
        return ""
    left = elapsed / done * (total - done)
    return f", {left:.0f} s left" if left < 90 else f", {left / 60:.0f} min left" \
        if left < 5400 else f", {left / 3600:.1f} h left"


class Pending:
    """Dirty paths, debounced per path and released in batches (thread-safe).

    A path is *quiet* once ``debounce`` seconds passed since its last event.  Quiet paths are
    released together once no event at all arrived for ``debounce`` seconds, or once the oldest
    of them has waited ``batch_seconds`` (a burst that never pauses still makes progress).
    """

    def __init__(self, debounce: float, batch_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.debounce = debounce
        self.batch_seconds = max(batch_seconds, debounce)
        self.clock = clock
        self.cond = threading.Condition()
        self._paths: dict[str, tuple[float, float]] = {}  # path -> (first event, last event)
        self._last_event = float("-inf")

    def __len__(self) -> int:
        return len(self._paths)

    def add(self, path: str, delay: float = 0.0) -> None:
        """Record an event on ``path``.  Not an event but a retry or a sweep of a folder:
        ``delay`` shifts when it is due (later for a retry; ``-debounce``: due at once)."""
        now = self.clock()
        due = now + delay
        with self.cond:
            first = self._paths.get(path, (due, due))[0]
            was_empty = not self._paths
            self._paths[path] = (min(first, due), due)
            if delay == 0:
                self._last_event = max(self._last_event, now)
            if was_empty:  # the loop sleeps until the next deadline otherwise: no need to wake
                self.cond.notify_all()

    def _quiet(self, now: float) -> list[tuple[str, float]]:
        return [(p, first) for p, (first, last) in self._paths.items()
                if now - last >= self.debounce]

    def due(self, now: float | None = None) -> bool:
        """Whether :meth:`take` would return paths now."""
        now = self.clock() if now is None else now
        with self.cond:
            quiet = self._quiet(now)
            return bool(quiet) and (now - self._last_event >= self.debounce
                                    or min(f for _p, f in quiet) + self.batch_seconds <= now)

    def take(self, now: float | None = None, limit: int = MAX_BATCH_PATHS) -> list[str]:
        """The paths due now (oldest first, at most ``limit``), removed from the set."""
        now = self.clock() if now is None else now
        with self.cond:
            quiet = self._quiet(now)
            if not quiet:
                return []
            settled = now - self._last_event >= self.debounce
            if not settled and min(f for _p, f in quiet) + self.batch_seconds > now:
                return []
            quiet.sort(key=lambda item: item[1])
            batch = [p for p, _f in quiet[:limit]]
            for p in batch:
                del self._paths[p]
            # Paths inside a folder of the batch go with it: its walk reads them as they are
            # now, and any later write makes a new event.
            taken = set(batch)
            for p in [p for p in self._paths if within_set(os.path.dirname(p), taken)]:
                del self._paths[p]
            return [p for p in batch if not within_set(os.path.dirname(p), taken)]

    def wait_time(self, now: float | None = None) -> float | None:
        """Seconds until :meth:`take` may return something (None: nothing is pending)."""
        now = self.clock() if now is None else now
        with self.cond:
            if not self._paths:
                return None
            quiet = self._quiet(now)
            if not quiet:
                return max(0.0, min(last for _f, last in self._paths.values())
                           + self.debounce - now)
            settle = self._last_event + self.debounce
            force = min(f for _p, f in quiet) + self.batch_seconds
            return max(0.0, min(settle, force) - now)


class _Handler:
    """watchdog handler: events become dirty paths (runs on watchdog's thread; never raises)."""

    RELEVANT = frozenset({"created", "modified", "moved", "deleted", "closed"})

    def __init__(self, watcher: "Watcher") -> None:
        self.watcher = watcher

    def dispatch(self, event: Any) -> None:
        try:
            if event.event_type not in self.RELEVANT:
                return
            if event.is_directory and event.event_type in ("modified", "closed"):
                return  # a folder's own mtime: its entries have their own events
            for raw in (event.src_path, getattr(event, "dest_path", "")):
                if raw:
                    self.watcher.note(os.fsdecode(raw), event.is_directory)
        except Exception:  # noqa: BLE001 - a bad event must not stop watchdog's thread
            log.exception("could not handle %r", event)


class _RequestHandler:
    """watchdog handler for the hand-over folder (``kbterm index`` while the watcher runs)."""

    def __init__(self, watcher: "Watcher") -> None:
        self.watcher = watcher

    def dispatch(self, event: Any) -> None:
        path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
        if path.endswith(".json") and event.event_type in ("created", "moved", "closed"):
            self.watcher.wake(requests=True)


class _WatchdogLog(logging.Handler):
    """Turns watchdog's log of a lost-events condition into a sweep."""

    def __init__(self, watcher: "Watcher") -> None:
        super().__init__(logging.WARNING)
        self.watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "overflow" in message.lower():
            self.watcher.lost_events(
                "the inotify event queue overflowed and events were lost; sweeping. If it "
                "happens often, raise it: sudo sysctl fs.inotify.max_queued_events="
                f"{max(2 * _sysctl('max_queued_events', 16384), 65536)}")
        elif record.levelno >= logging.ERROR:
            self.watcher.lost_events(f"watchdog: {message}", restart=True)


def _sysctl(name: str, default: int) -> int:
    try:
        return int(Path(f"/proc/sys/fs/inotify/{name}").read_text().strip())
    except (OSError, ValueError):
        return default


def limit_message(root: str, exc: OSError, sweep_seconds: float) -> str:
    """What to tell the user when the kernel refuses more inotify watches."""
    every = f"every {sweep_seconds / 60:g} min" if sweep_seconds else "at start"
    if exc.errno == errno.EMFILE:
        name, value = "max_user_instances", _sysctl("max_user_instances", 128)
        raise_to = max(2 * value, 1024)
    else:
        name, value = "max_user_watches", _sysctl("max_user_watches", 8192)
        raise_to = max(2 * value, 524288)
    return (
        f"inotify {'instance' if exc.errno == errno.EMFILE else 'watch'} limit reached while "
        f"watching {root} (fs.inotify.{name} = {value}): changes there are picked up by a "
        f"sweep {every} instead of at once. Raise the limit: sudo sysctl "
        f"fs.inotify.{name}={raise_to} (to keep it, put fs.inotify.{name}={raise_to} in "
        "/etc/sysctl.d/90-kbterm.conf), then restart kbterm watch"
    )


class Watcher:
    """Follows ``folders`` (default: the configured ones) until :meth:`stop`."""

    def __init__(
        self,
        config: "Config",
        folders: Sequence[str | Path] | None = None,
        *,
        embedder: "EmbeddingBackend | None" = None,
        on_state: StateFn | None = None,
        log_file: str | None = None,
    ) -> None:
        self.config = config
        self.data_dir = Path(config.data_path)
        self.indexer = Indexer(config, embedder=embedder, progress=self._progress,
                               command="kbterm watch")
        self.roots = self.indexer.roots(folders)
        w = config.watch
        self.pending = Pending(w.debounce_seconds, w.batch_seconds)
        self.sweep_seconds = w.sweep_minutes * 60.0
        self.unload_after = w.unload_models_after_seconds
        self.on_state = on_state or (lambda state: None)
        self.state = WatcherState(pid=os.getpid(), roots=list(self.roots),
                                  log_file=log_file or "")
        self.requests_dir = self.data_dir / REQUESTS_DIR
        self._data_real = os.path.realpath(self.data_dir)
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._sweep_reasons: list[str] = []
        self._requests_waiting = True  # look once at start
        self._observer_broken = False
        self._limited: set[str] = set()  # roots the kernel would not let us watch
        self._watches: dict[str, tuple[Any, tuple[int, int]]] = {}  # root -> (watch, (dev, ino))
        self._missing: set[str] = set()
        self._observer: Any = None
        self._busy = False
        self._pictures_paused = False  # a sync left pictures for newer work: go on with them
        self._phase, self._file_started = "", time.monotonic()  # the file in progress
        self._last_publish = 0.0
        self._last_work = time.monotonic()
        self._optimize_at: float | None = None
        self._batches_since_optimize = 0
        self._failures = 0
        self._previous_hook: Callable[[Any], None] = threading.excepthook

    # ------------------------------------------------------------------ from other threads

    @property
    def busy(self) -> bool:
        """Whether a batch or sweep is writing right now (a signal then interrupts it)."""
        return self._busy

    def stop(self) -> None:
        """Ask the watcher to finish (from any thread or a signal handler)."""
        self._stop.set()
        self.wake()

    def wake(self, requests: bool = False) -> None:
        if requests:
            self._requests_waiting = True
        with self.pending.cond:
            self.pending.cond.notify_all()

    def request_sweep(self, reason: str) -> None:
        self._sweep_reasons.append(reason)
        self.wake()

    def lost_events(self, message: str, restart: bool = False) -> None:
        """Events were lost (a queue overflow; with ``restart``, watchdog's thread failed):
        say so, and sweep (restarting the observer first)."""
        log.warning("%s", message)
        with self._state_lock:
            self.state.notice = message
        if restart:
            self._observer_broken = True
        self.request_sweep("events were lost")

    def note(self, path: str, is_dir: bool) -> None:
        """An event on ``path``: mark it dirty unless it can never matter."""
        if within(path, [self._data_real]) or within(path, [str(self.data_dir)]):
            return
        root = max((r for r in self.roots if within(path, [r])), key=len, default=None)
        if root is None:
            return
        rel = os.path.relpath(path, root)
        parts = [] if rel == "." else rel.split(os.sep)
        if parts and parts[-1] == KBIGNORE:
            self.pending.add(os.path.dirname(path))  # the rules of that folder changed
            return
        if any(p.startswith(".") for p in parts):
            return  # hidden (editor swap files such as .notes.md.swp land here)
        if not is_dir and file_type(path) is None:
            return  # a file kbterm has no parser for (a temp file, 4913, ...)
        self.pending.add(path)
        if not storable(path):
            # A name that is not UTF-8 is in the ledger under its escaped form (kbterm.scan):
            # that row must follow the event too (gone when the file is renamed or deleted).
            self.pending.add(escape_path(path))

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Watch until :meth:`stop` (raises :class:`~kbterm.lock.LockHeld` if another writer
        holds the data folder)."""
        with self.indexer.session() as recovered:
            log.info("watching %s (data in %s)", ", ".join(self.roots), self.config.data_path)
            if recovered:
                log.info("cleaned up %d rows an interrupted run left", recovered)
            pid_file = self.data_dir / PID_FILE
            pid_file.write_text(f"{os.getpid()}\n")
            self.state.started_at = self.state.heartbeat = time.time()
            self._publish(force=True)
            # watchdog warns (with a dump of its state) when a new folder's watch was already
            # added by the walk that announced it: harmless, and not for the user's log.
            warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
            watchdog_log = _WatchdogLog(self)
            logging.getLogger("watchdog").addHandler(watchdog_log)
            previous_hook = self._previous_hook = threading.excepthook
            threading.excepthook = self._thread_died
            heartbeat = threading.Thread(target=self._heartbeat, name="kbterm-heartbeat",
                                         daemon=True)
            heartbeat.start()
            try:
                self._start_observer()
                self._sweep("start")
                self._loop()
            except KeyboardInterrupt:
                log.info("stopping: finished files are saved")
            finally:
                self._stop.set()
                threading.excepthook = previous_hook
                logging.getLogger("watchdog").removeHandler(watchdog_log)
                self._stop_observer()
                heartbeat.join(timeout=2)
                self.state.state, self.state.current = "stopped", ""
                self._publish(force=True)
                pid_file.unlink(missing_ok=True)
                log.info("stopped")

    def _loop(self) -> None:
        next_root_check = time.monotonic() + ROOT_CHECK_SECONDS
        last_sweep = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_root_check:
                self._check_roots()
                next_root_check = now + ROOT_CHECK_SECONDS
            if self._requests_waiting:
                self._requests_waiting = False
                self._serve_requests()
                continue
            interval = self._sweep_interval()
            if interval and now - last_sweep >= interval:
                self._sweep_reasons.append("periodic")
            if self._sweep_reasons:
                reasons, self._sweep_reasons = self._sweep_reasons, []
                self._sweep(", ".join(sorted(set(reasons))))
                last_sweep = time.monotonic()
                continue
            batch = self.pending.take()
            if batch:
                self._batch(batch)
                continue
            if self._pictures_paused:
                self._pictures()
                continue
            self._idle_work(now)
            waits = [next_root_check - now, HEARTBEAT_SECONDS]
            if interval:
                waits.append(last_sweep + interval - now)
            pending = self.pending.wait_time()
            if pending is not None:
                waits.append(pending)
            if self._optimize_at is not None:
                waits.append(self._optimize_at - now)
            if self.unload_after and self.state.models_loaded:
                waits.append(self._last_work + self.unload_after - now)
            self._set(state="idle" if not len(self.pending) else "waiting", current="")
            with self.pending.cond:
                if not (self._stop.is_set() or self._sweep_reasons or self._requests_waiting):
                    self.pending.cond.wait(max(0.01, min(waits)))

    def _sweep_interval(self) -> float:
        if self._limited:
            return min(self.sweep_seconds or LIMIT_SWEEP_SECONDS, LIMIT_SWEEP_SECONDS)
        return self.sweep_seconds

    def _sweep(self, reason: str) -> None:
        if self._observer_broken:
            self._restart_observer()
        # Missing folders too: their files leave the index, as with `kbterm index`.
        log.info("sweep (%s) of %s", reason, ", ".join(self.roots))
        self._set(state="sweeping")
        summary = self._sync(lambda: self.indexer.sync(self.roots, optimize=False,
                                                       pause=self._newer_work), retry=None)
        if summary is not None:
            self._set(last_sweep_at=time.time())
            log.info("sweep (%s) done: %s", reason, summary.brief())

    def _batch(self, paths: list[str]) -> None:
        self._set(state="indexing")
        self._sync(lambda: self.indexer.sync(self.roots, paths, optimize=False,
                                             pause=self._newer_work), retry=paths)

    def _pictures(self) -> None:
        """Go on with the pictures a sync left pending for newer work (no path is scanned)."""
        self._set(state="indexing")
        self._sync(lambda: self.indexer.sync(self.roots, [], optimize=False,
                                             pause=self._newer_work), retry=None)

    def _newer_work(self) -> bool:
        """Whether something should go before the pictures still to embed: a saved note never
        waits behind a video (the pictures left go on afterwards)."""
        return (self._stop.is_set() or self._requests_waiting or bool(self._sweep_reasons)
                or self.pending.due())

    def _sync(self, run: Callable[[], Summary], retry: list[str] | None) -> Summary | None:
        """Run one sync, keeping the books; a failure is logged and retried, never fatal."""
        self._busy = True
        try:
            summary = run()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - the watcher outlives a failed batch
            self._failures += 1
            delay = RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS)) - 1]
            message = str(exc) if isinstance(exc, KbtermError) else f"{type(exc).__name__}: {exc}"
            log.error("indexing failed (retrying in %g s): %s", delay, message,
                      exc_info=not isinstance(exc, KbtermError))
            self._set(last_error=message, last_error_at=time.time())
            for path in retry or []:
                self.pending.add(path, delay=delay)
            if retry is None:
                threading.Timer(delay, self.request_sweep, args=("retry",)).start()
            return None
        finally:
            self._busy = False
        self._failures = 0
        self._pictures_paused = summary.paused and not self._stop.is_set()
        self._account(summary)
        return summary

    def _account(self, summary: Summary) -> None:
        now = time.monotonic()
        changed = summary.indexed + summary.renamed + summary.removed + summary.failed
        models = self.indexer.models_loaded
        if summary.model_calls or models:
            self._last_work = now
        with self._state_lock:
            s = self.state
            s.files_done += summary.indexed + summary.renamed + summary.removed
            s.failed += summary.failed
            s.batches += 1
            s.last_batch_at = time.time()
            s.models_loaded = models
            s.pictures_pending, s.picture_files = summary.pictures_pending, summary.picture_files
            for path, reason in summary.failures:
                s.last_error, s.last_error_at = f"{path}: {reason}", time.time()
        if changed:
            log.info("%s", summary.brief())
            for path, reason in summary.failures:
                log.warning("failed: %s: %s", path, reason)
            self._batches_since_optimize += 1
            self._optimize_at = now + self.config.indexing.keep_versions_seconds + 0.5
            if self._batches_since_optimize >= OPTIMIZE_EVERY_BATCHES:
                self._optimize()
        self._publish(force=True)

    def _idle_work(self, now: float) -> None:
        if self._optimize_at is not None and now >= self._optimize_at:
            self._optimize()
        if (self.unload_after and self.state.models_loaded
                and now - self._last_work >= self.unload_after):
            if self.indexer.release_models():
                log.info("models released after %g s idle", self.unload_after)
            self._set(models_loaded=False)

    def _optimize(self) -> None:
        self._optimize_at = None
        self._batches_since_optimize = 0
        try:
            self.indexer.store.optimize(self.config.indexing.keep_versions_seconds)
        except Exception as exc:  # noqa: BLE001 - hygiene must not stop the watcher
            log.warning("compacting the index failed: %s", exc)

    # ------------------------------------------------------------------ hand-over requests

    def _serve_requests(self) -> None:
        folder = self.requests_dir
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json"), key=_mtime):
            try:
                request = json.loads(path.read_text(encoding="utf-8"))
                rid, paths = str(request["id"]), [str(p) for p in request["paths"]]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable request %s: %s", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            log.info("indexing %d path(s) handed over by kbterm index", len(paths))
            self._set(state="indexing")
            answer: dict[str, Any]
            self._busy = True
            try:
                roots = self.indexer.roots(paths) if paths else self.roots
                summary = self.indexer.sync(roots, retry_failed=bool(request.get("retry_failed")),
                                            optimize=False)
                answer = asdict(summary)
                self._account(summary)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - answer with the error
                answer = {"error": str(exc)}
            finally:
                self._busy = False
            done = folder / f"{rid}.done"
            tmp = folder / f".{rid}.done.tmp"
            tmp.write_text(json.dumps(answer), encoding="utf-8")
            os.replace(tmp, done)
            path.unlink(missing_ok=True)
            with self._state_lock:
                self.state.handled = (self.state.handled + [rid])[-50:]
            self._publish(force=True)
        cutoff = time.time() - 3600
        for old in folder.glob("*.done"):
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
            except OSError:
                pass

    # ------------------------------------------------------------------ observing

    def _start_observer(self) -> None:
        from watchdog.observers import Observer

        self._watches.clear()
        try:
            observer = Observer()
            observer.start()
        except OSError as exc:  # no inotify instance to be had
            message = limit_message(", ".join(self.roots), exc,
                                    self._sweep_interval() or LIMIT_SWEEP_SECONDS)
            log.warning("%s", message)
            self._limited.update(self.roots)
            self._set(notice=message)
            return
        self._observer = observer
        for root in self.roots:
            self._watch(root)
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._observer.schedule(_RequestHandler(self), str(self.requests_dir),
                                    recursive=False, event_filter=_request_filter())
        except OSError as exc:
            log.warning("cannot watch %s (%s): requests are seen at the next wake-up",
                        self.requests_dir, exc)

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            try:
                observer.stop()
                observer.join(timeout=5)
            except Exception:  # noqa: BLE001
                log.debug("stopping the observer failed", exc_info=True)

    def _restart_observer(self) -> None:
        log.warning("restarting the file watcher")
        self._observer_broken = False
        self._stop_observer()
        self._start_observer()

    def _watch(self, root: str) -> None:
        """Start watching ``root`` (recursively), or note why it cannot be."""
        try:
            st = os.stat(root)
        except OSError:
            if root not in self._missing:
                log.warning("%s does not exist (yet): watching for it to appear", root)
            self._missing.add(root)
            self._set(missing_roots=sorted(self._missing))
            return
        self._missing.discard(root)
        self._set(missing_roots=sorted(self._missing))
        if not stat.S_ISDIR(st.st_mode):
            log.warning("%s is not a folder: it is not watched", root)
            return
        if self._observer is None:
            self._limited.add(root)
            return
        try:
            watch = self._observer.schedule(_Handler(self), root, recursive=True,
                                            event_filter=_event_filter())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                message = limit_message(root, exc, self._sweep_interval() or LIMIT_SWEEP_SECONDS)
                log.warning("%s", message)
                self._limited.add(root)
                self._set(notice=message)
            else:
                log.warning("cannot watch %s: %s", root, exc)
            return
        self._limited.discard(root)
        self._watches[root] = (watch, (st.st_dev, st.st_ino))

    def _unwatch(self, root: str) -> None:
        entry = self._watches.pop(root, None)
        if entry is not None and self._observer is not None:
            try:
                self._observer.unschedule(entry[0])
            except Exception:  # noqa: BLE001 - its emitter may have stopped by itself
                pass

    def _check_roots(self) -> None:
        """Notice a watched folder deleted, moved away or replaced (inotify does not follow)."""
        for root in self.roots:
            try:
                st = os.stat(root)
                ident: tuple[int, int] | None = (st.st_dev, st.st_ino) \
                    if stat.S_ISDIR(st.st_mode) else None
            except OSError:
                ident = None
            entry = self._watches.get(root)
            if ident is None:
                if root not in self._missing:
                    log.warning("%s is gone: its files leave the index; watching for it to "
                                "come back", root)
                    self._unwatch(root)
                    self._missing.add(root)
                    self._set(missing_roots=sorted(self._missing))
                    self.pending.add(root, delay=-self.pending.debounce)
                continue
            if entry is not None and entry[1] == ident:
                continue
            came_back = root in self._missing or entry is not None
            if root in self._limited and not came_back:
                continue  # the kernel would not let us watch it: sweeps cover it
            self._unwatch(root)
            self._watch(root)
            if came_back:
                log.info("%s is back: indexing it", root)
                self.pending.add(root, delay=-self.pending.debounce)

    def _thread_died(self, args: Any) -> None:
        from watchdog.utils import BaseThread

        if not isinstance(args.thread, BaseThread):
            self._previous_hook(args)
            return
        exc = args.exc_value
        name = getattr(args.thread, "name", "") or ""
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EMFILE):
            self._limited.update(self.roots)
            message = limit_message(", ".join(self.roots), exc, LIMIT_SWEEP_SECONDS)
        else:
            message = f"watchdog: the file-event thread {name} stopped: {exc!r}"
        self.lost_events(message, restart=True)

    # ------------------------------------------------------------------ state

    def _progress(self, phase: str, done: int, total: int, current: str) -> None:
        with self._state_lock:
            if phase == "file":
                self.state.within = current + eta(self._file_started, done, total)
            else:
                if current != self.state.current or phase != self._phase:
                    self.state.within = ""
                    self._file_started = time.monotonic()
                self.state.current, self._phase = current, phase
                self.state.step = "pictures" if phase == "pictures" else "text"
        self._publish()

    def _set(self, **changes: Any) -> None:
        with self._state_lock:
            changed = any(getattr(self.state, k) != v for k, v in changes.items())
            for key, value in changes.items():
                setattr(self.state, key, value)
        if changed:
            self._publish(force=True)

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_publish < PUBLISH_SECONDS:
            return
        self._last_publish = now
        with self._state_lock:
            self.state.queue = len(self.pending)
            self.state.heartbeat = time.time()
            try:
                write_state(self.data_dir, self.state)
            except OSError as exc:
                log.debug("cannot write the watcher state: %s", exc)
            snapshot = WatcherState(**asdict(self.state))
        snapshot.running = snapshot.responding = snapshot.state != "stopped"
        self.on_state(snapshot)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._publish(force=True)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _event_filter() -> list[type]:
    from watchdog.events import (
        DirCreatedEvent,
        DirDeletedEvent,
        DirMovedEvent,
        FileClosedEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileModifiedEvent,
        FileMovedEvent,
    )

    # Not opened / closed-without-writing: reading a file to index it makes no events.
    return [FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, FileMovedEvent, DirMovedEvent,
            FileDeletedEvent, DirDeletedEvent, FileClosedEvent]


def _request_filter() -> list[type]:
    from watchdog.events import FileCreatedEvent, FileMovedEvent

    return [FileCreatedEvent, FileMovedEvent]
