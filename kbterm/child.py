"""Starting kbterm as a child process (``kbterm watch --detach``).

The child runs ``python -P -m kbterm``: ``-P`` keeps the current directory off ``sys.path``, so
a folder named ``kbterm`` where the user happens to stand (``~`` after cloning into
``~/kbterm``) can never shadow the installed package.  It starts in the data folder, in a
session of its own, with nothing on stdin.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Sequence


def kbterm_argv(args: Sequence[str]) -> list[str]:
    """The command line that runs ``kbterm ARGS`` with this Python and this kbterm."""
    return [sys.executable, "-P", "-m", "kbterm", *args]


def start_kbterm(args: Sequence[str], cwd: Path, stdout: IO[Any] | int | None = None,
                 **kwargs: Any) -> subprocess.Popen:
    """Start ``kbterm ARGS`` in the background (stdout and stderr to ``stdout``)."""
    return subprocess.Popen(kbterm_argv(args), cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=stdout, start_new_session=True,
                            close_fds=True, **kwargs)
