"""The ``[library] folders`` list, edited in the config file (``kbterm folders add/remove``).

The file keeps its comments and layout (tomlkit); a file that does not exist yet is created with
a short header.  The new text is validated as a whole config before it replaces the old one,
atomically (temp file, then rename), so a mistake never leaves a broken or half-written config.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kbterm.config import config_from_dict
from kbterm.errors import ConfigError, InputError
from kbterm.paths import config_path, display_path
from kbterm.scan import within

HEADER = """\
# kbterm configuration. Every key is optional; config.example.toml (in kbterm's repository)
# documents them all. `kbterm folders add PATH` and `kbterm folders remove PATH` edit the
# [library] folders below.
"""


@dataclass
class FolderChange:
    """What an add or remove did, for the command to report."""

    config_file: Path
    created: bool = False  # the config file did not exist before
    changed: list[str] = field(default_factory=list)  # folders added or removed, as written
    unchanged: list[str] = field(default_factory=list)  # already there / not there
    notes: list[str] = field(default_factory=list)  # worth saying (nested folders, ...)
    folders: list[str] = field(default_factory=list)  # the list after the change


def _normal(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _written(path: str) -> str:
    """How a folder is written into the file: absolute, the home folder as ``~``."""
    return display_path(_normal(path))


def _read(path: Path) -> tuple[object, bool]:
    import tomlkit

    if not path.exists():
        return tomlkit.parse(HEADER), True
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        return tomlkit.parse(text), False
    except Exception as exc:  # noqa: BLE001 - tomlkit raises its own ParseError subclasses
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix it by hand, "
                          "kbterm does not rewrite a file it cannot read") from None


def _folders_array(doc: object) -> object:
    import tomlkit

    library = doc.get("library")  # type: ignore[attr-defined]
    if library is None:
        library = tomlkit.table()
        doc.add("library", library)  # type: ignore[attr-defined]
    folders = library.get("folders")
    if folders is None:
        folders = tomlkit.array()
        folders.multiline(True)
        library["folders"] = folders
        folders = library["folders"]
    if not isinstance(folders, list):
        raise ConfigError("library.folders in the config file is not a list; fix it by hand")
    return folders


def _save(path: Path, doc: object) -> None:
    """Validate ``doc`` as a config, then replace ``path`` with it atomically."""
    import tomlkit

    text = tomlkit.dumps(doc)
    config_from_dict(doc.unwrap(), path)  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def target_file(explicit: str | None = None) -> Path:
    """The config file ``kbterm folders`` edits: the one kbterm reads."""
    return config_path(explicit)[0]


def add_folders(paths: list[str], explicit: str | None = None,
                data_dir: Path | None = None) -> FolderChange:
    """Add ``paths`` (existing folders) to ``[library] folders``."""
    file = target_file(explicit)
    doc, created = _read(file)
    array = _folders_array(doc)
    change = FolderChange(file, created=created)
    present = [_normal(str(f)) for f in array]  # type: ignore[attr-defined]
    for raw in paths:
        real = _normal(raw)
        if not os.path.isdir(real):
            what = "is not a folder" if os.path.exists(real) else "does not exist"
            raise InputError(f"{raw} {what}: kbterm folders add takes folders")
        if data_dir is not None and within(real, [_normal(str(data_dir))]):
            raise InputError(f"{raw} is inside kbterm's data folder ({data_dir})")
        if real in present:
            change.unchanged.append(_written(real))
            continue
        for other in present:
            if within(real, [other]):
                change.notes.append(f"{_written(real)} is inside {display_path(other)}, "
                                    "which is indexed already")
            elif within(other, [real]):
                change.notes.append(f"{display_path(other)} is inside {_written(real)}; "
                                    "it is indexed once")
        array.append(_written(real))  # type: ignore[attr-defined]
        present.append(real)
        change.changed.append(_written(real))
    if change.changed or created:
        _save(file, doc)
    change.folders = [str(f) for f in array]  # type: ignore[attr-defined]
    return change


def remove_folders(paths: list[str], explicit: str | None = None) -> FolderChange:
    """Remove ``paths`` from ``[library] folders`` (the folder need not exist any more)."""
    file = target_file(explicit)
    if not file.exists():
        return FolderChange(file, unchanged=[_written(p) for p in paths])
    doc, _ = _read(file)
    array = _folders_array(doc)
    change = FolderChange(file)
    for raw in paths:
        real = _normal(raw)
        hits = [i for i, f in enumerate(array) if _normal(str(f)) == real]  # type: ignore[arg-type]
        if not hits:
            # Not listed (any more): its files may still be in the index, which the caller
            # clears; say so only when it is a typo.
            change.unchanged.append(_written(real))
            continue
        for i in reversed(hits):
            del array[i]  # type: ignore[attr-defined]
        change.changed.append(_written(real))
    if change.changed:
        _save(file, doc)
    change.folders = [str(f) for f in array]  # type: ignore[attr-defined]
    return change
