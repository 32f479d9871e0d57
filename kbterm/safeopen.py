"""Opening a file that the scan checked, and only that file.

The scan looks at each entry with ``lstat``: a regular file, not a symlink.  Between the scan
and the read the entry can be swapped (by the user's tools or by someone hostile): replaced by
a symlink to a file outside the indexed folders, by a FIFO (a plain ``open`` then blocks for
ever, holding the writer lock), or by another file.  :func:`open_checked` opens without
following a symlink and without blocking, then checks the *opened descriptor*: a regular file,
with the device and inode the scan saw.  Parsers then read it through :func:`fd_path`, a path
that names the open descriptor itself, so no later swap of the name can change what they read.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
          | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))


class Swapped(OSError):
    """The entry is no longer the regular file the scan saw; the message says what it is."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_checked(path: str, identity: tuple[int, int] | None = None) -> int:
    """A read-only descriptor of ``path``, which must be a regular file (not a symlink, FIFO,
    device or folder) and, when ``identity`` (``st_dev``, ``st_ino``) is given, the very file
    the scan saw.  Raises :class:`Swapped` with the reason, or the ``OSError`` of ``open``."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Swapped(errno.ELOOP, "replaced by a symlink since the scan; not followed") \
                from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Swapped(errno.EINVAL, f"now {_kind(st.st_mode)}, not a regular file; not read")
        if identity is not None and (st.st_dev, st.st_ino) != identity:
            raise Swapped(errno.ESTALE, "replaced by another file since the scan; "
                                        "it is read at the next run")
        if _FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)  # a regular file: reads behave as usual from here on
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_path(fd: int) -> Path:
    """A path that opens the descriptor's own file (``/proc/self/fd/N`` on Linux,
    ``/dev/fd/N`` on macOS and the BSDs), whatever its name points at now."""
    proc = Path(f"/proc/self/fd/{fd}")
    return proc if proc.parent.is_dir() else Path(f"/dev/fd/{fd}")


@contextmanager
def checked_path(path: str, identity: tuple[int, int] | None = None) -> Iterator[Path]:
    """``with checked_path(p, (dev, ino)) as safe:`` parse ``safe`` instead of ``p``."""
    fd = open_checked(path, identity)
    try:
        yield fd_path(fd)
    finally:
        os.close(fd)
