"""One writer per data folder: an exclusive ``flock`` on ``writer.lock``.

The lock file holds the pid, command and start time of its holder, so a refused writer can say
who holds it.  The kernel releases the lock when its process dies, even by ``kill -9``: a stale
lock file never blocks anyone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kbterm.errors import KbtermError
from kbterm.paths import make_private_dir


class LockHeld(KbtermError):
    """Another process is writing to this data folder."""


class WriterLock:
    """``with WriterLock(data_dir, "kbterm index"):`` ... (non-blocking; raises LockHeld)."""

    def __init__(self, data_dir: Path, command: str) -> None:
        self.path = Path(data_dir) / "writer.lock"
        self.command = command
        self._fd: int | None = None

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        import fcntl

        make_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = self.holder()
            who = f"pid {info.get('pid', '?')} ({info.get('command', 'kbterm')})"
            since = info.get("started_at")
            when = time.strftime(" since %H:%M:%S", time.localtime(since)) if since else ""
            advice = "stop it with: kbterm watch --stop" \
                if info.get("command") == "kbterm watch" else "wait for it to finish or stop it"
            raise LockHeld(
                f"another kbterm is writing to {self.path.parent}: {who}{when}; {advice}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({
            "pid": os.getpid(), "command": self.command, "started_at": time.time(),
            "argv": sys.argv,
        }).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
