"""Where kbterm keeps its configuration and its data."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "kbterm"
CONFIG_ENV = "KBTERM_CONFIG"
DATA_DIR_ENV = "KBTERM_DATA_DIR"


def default_config_path() -> Path:
    """The per-user config file (``~/.config/kbterm/config.toml`` on Linux)."""
    from platformdirs import user_config_path

    return user_config_path(APP_NAME, appauthor=False) / "config.toml"


def default_data_dir() -> Path:
    """The per-user data folder that holds the index (``~/.local/share/kbterm`` on Linux)."""
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False)


def config_path(explicit: str | os.PathLike[str] | None = None) -> tuple[Path, bool]:
    """The config file to read and whether the user named it (``--config`` or ``KBTERM_CONFIG``).

    A file the user named must exist; the default one may be absent (defaults apply).
    """
    if explicit:
        return Path(explicit).expanduser(), True
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser(), True
    return default_config_path(), False


def resolve_data_dir(configured: str = "") -> Path:
    """``KBTERM_DATA_DIR`` beats the config's ``data_dir``, which beats the platform default."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if configured:
        return Path(configured).expanduser()
    return default_data_dir()


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create the data folder (and its parents) readable by this user only (0700): the index
    holds the text of every indexed file.  An existing data folder open to others, and owned
    by this user, is made private too."""
    import logging
    import stat

    folder = Path(path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        st = folder.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid() and stat.S_ISDIR(st.st_mode):
            os.chmod(folder, 0o700)
            logging.getLogger(__name__).info(
                "%s was readable by other users: made it private (0700)", folder)
    return folder


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` for people: the home folder as ``~``."""
    text = os.fspath(path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and (text == home or text.startswith(home.rstrip("/") + "/")):
        return "~" + text[len(home.rstrip("/")):]
    return text
