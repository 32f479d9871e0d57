"""What a running ``kbterm watch`` publishes, and how others read it.

The watcher writes ``watcher.json`` in the data folder (atomically: a reader never sees half a
file) whenever its state changes and at least every :data:`HEARTBEAT_SECONDS`.  ``kbterm
status``, the TUI and ``kbterm watch --stop`` read it with :func:`read_state`, which also says
whether the watcher is alive: its process exists and its heartbeat is fresh.

``kbterm index`` hands its paths to a running watcher through :func:`hand_over`: a request
file in ``watch-requests/`` that the watcher picks up, and a ``.done`` file it answers with.

This module is light on purpose (no watchdog, no LanceDB): the TUI polls it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

HEARTBEAT_SECONDS = 5.0
STATE_FILE = "watcher.json"
PID_FILE = "watch.pid"
REQUESTS_DIR = "watch-requests"


@dataclass
class WatcherState:
    """The watcher's published state."""

    pid: int = 0
    state: str = "starting"  # starting, sweeping, indexing, idle, stopped
    roots: list[str] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)
    started_at: float = 0.0
    heartbeat: float = 0.0
    queue: int = 0  # paths waiting (debounce or batch)
    current: str = ""  # file being indexed
    within: str = ""  # how far into it ("page 12 of 285, 3 min left"), when the parser says
    step: str = ""  # "text" or "pictures": which step of the run the current file is in
    files_done: int = 0  # files indexed, renamed or removed since start
    failed: int = 0
    batches: int = 0
    last_batch_at: float = 0.0
    last_sweep_at: float = 0.0
    last_error: str = ""
    last_error_at: float = 0.0
    models_loaded: bool = False
    pictures_pending: int = 0  # files whose text is in and whose pictures still wait
    picture_files: int = 0  # indexed files that have pictures
    notice: str = ""  # a lasting condition the user should act on (inotify limit, ...)
    log_file: str = ""
    handled: list[str] = field(default_factory=list)  # ids of hand-over requests done

    # Set by read_state, not written:
    running: bool = False
    responding: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, now: float | None = None) -> str:
        """One line for ``kbterm status`` and the TUI status bar."""
        now = time.time() if now is None else now
        if not self.running:
            return "not running (start it with: kbterm watch --detach)"
        text = f"{self.state} (pid {self.pid})"
        if not self.responding:
            text = f"not responding (pid {self.pid}, last heartbeat " \
                   f"{now - self.heartbeat:.0f} s ago)"
        if self.queue:
            text += f", {self.queue} queued"
        if self.current and self.state == "indexing":
            text += f", {os.path.basename(self.current)}"
            where = [w for w in ("pictures" if self.step == "pictures" else "", self.within) if w]
            if where:
                text += f" ({': '.join(where)})"
        text += f", {self.files_done} files updated"
        if self.pictures_pending and self.picture_files:
            done = 100 * (self.picture_files - self.pictures_pending) // self.picture_files
            text += f", text 100%, pictures {done}%"
        if self.failed:
            text += f", {self.failed} failed"
        if self.missing_roots:
            text += f"; waiting for {', '.join(self.missing_roots)}"
        return text


def state_path(data_dir: Path) -> Path:
    return Path(data_dir) / STATE_FILE


def write_state(data_dir: Path, state: WatcherState) -> None:
    path = state_path(data_dir)
    data = state.to_dict()
    data.pop("running", None)
    data.pop("responding", None)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (a child that exited and was not reaped yet) is not running.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def read_state(data_dir: Path, now: float | None = None) -> WatcherState | None:
    """The last published state (None if no watcher ever ran here), with ``running`` (the
    process is alive and did not say it stopped) and ``responding`` (fresh heartbeat)."""
    try:
        raw = json.loads(state_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = {f.name for f in fields(WatcherState)}
    state = WatcherState(**{k: v for k, v in raw.items() if k in names})
    now = time.time() if now is None else now
    state.running = state.state != "stopped" and pid_alive(state.pid)
    state.responding = state.running and now - state.heartbeat <= 3 * HEARTBEAT_SECONDS + 5
    if not state.running and state.state != "stopped":
        state.state = "dead"
    return state


# --------------------------------------------------------------------------- hand-over


@dataclass
class Request:
    """Paths ``kbterm index`` asks the running watcher to index."""

    id: str
    paths: list[str]
    retry_failed: bool = False


def hand_over(data_dir: Path, paths: Sequence[str], retry_failed: bool = False) -> Request:
    """Queue ``paths`` for the running watcher (it picks the file up at once)."""
    folder = Path(data_dir) / REQUESTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    request = Request(uuid.uuid4().hex[:12], [str(p) for p in paths], retry_failed)
    tmp = folder / f".{request.id}.tmp"
    tmp.write_text(json.dumps(asdict(request)), encoding="utf-8")
    os.replace(tmp, folder / f"{request.id}.json")
    return request


def request_result(data_dir: Path, request_id: str) -> dict[str, Any] | None:
    """The watcher's answer to a request (its summary), once it has one."""
    path = Path(data_dir) / REQUESTS_DIR / f"{request_id}.done"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
