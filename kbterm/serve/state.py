"""The state file a running ``kbterm serve`` publishes, and how clients find it.

``serve.json`` in the data folder (private to this user, mode 0600 in a 0700 folder) says where
the server listens, which checkpoint it runs for each role, and the per-run token clients send:
another user of the machine can neither read it nor use the server.  A state file whose process
is gone is stale and ignored.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "serve.json"
SOCKET_FILE = "serve.sock"


@dataclass
class ServeState:
    pid: int
    url: str  # http://127.0.0.1:PORT or unix:///…/serve.sock
    token: str  # the per-run key clients send (Authorization: Bearer)
    models: dict[str, str] = field(default_factory=dict)  # role -> checkpoint spec
    started_at: float = 0.0
    version: str = ""
    ready: bool = False  # set once the server accepts requests


def state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_FILE


def new_token() -> str:
    return secrets.token_urlsafe(24)


def write_state(data_dir: Path, state: ServeState) -> None:
    from kbterm.paths import make_private_dir

    make_private_dir(data_dir)
    path = state_path(data_dir)
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f)
    tmp.replace(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not ours
    return True


def read_state(data_dir: Path, *, ready_only: bool = True) -> ServeState | None:
    """The running server's state, or None (no file, stale, not ours, not ready yet)."""
    path = state_path(data_dir)
    try:
        st = path.stat()
        if st.st_uid != os.getuid():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        state = ServeState(**raw)
    except (OSError, ValueError, TypeError):
        return None
    if not pid_alive(state.pid) or (ready_only and not state.ready):
        return None
    return state


def clear_state(data_dir: Path, pid: int) -> None:
    """Remove the state file if it is this process's (a newer server's stays)."""
    path = state_path(data_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def wait_ready(data_dir: Path, pid: int, timeout: float) -> ServeState | None:
    """Wait until the server ``pid`` says it is ready (None if it died or timed out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(data_dir, ready_only=False)
        if state is not None and state.pid == pid and state.ready:
            return state
        if not pid_alive(pid):
            return None
        time.sleep(0.1)
    return None
