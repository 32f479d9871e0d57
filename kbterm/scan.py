"""Walking the indexed folders: which files kbterm reads, and which it notes but does not follow.

* Hidden files and folders (a leading ``.``), ``.git``, ``node_modules``, the data folder itself
  and anything matching ``indexing.ignore`` or a ``.kbignore`` file are left out.
  ``.kbignore`` holds glob patterns, one per line, for its folder and everything below it
  (``#`` comments, ``dir/`` for folders only, ``/pattern`` anchored to that folder,
  ``!pattern`` to take a file back).
* Symlinks are never followed (so a loop cannot trap the walk, and a link cannot lead the index
  outside the folders the user chose); each one is recorded with what it points at.
* Files kbterm has no parser for are not recorded at all.
* A file or folder whose name is not valid UTF-8 cannot be a ledger path (LanceDB and Arrow
  keep valid UTF-8 only): it is recorded as failed under its name with the undecodable bytes
  written ``\\xNN`` (:func:`escape_path`), with the reason, so ``kbterm status`` lists it;
  renamed, it is indexed under its new name and the escaped row leaves with the old name.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from kbterm.ingest import file_type

log = logging.getLogger(__name__)

KBIGNORE = ".kbignore"
ALWAYS_SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__"})


@dataclass(frozen=True)
class Found:
    """A regular file kbterm can read."""

    path: str
    file_type: str
    size: int
    mtime_ns: int
    dev: int = 0  # st_dev and st_ino as the scan saw them: what the read must find
    ino: int = 0

    @property
    def identity(self) -> tuple[int, int] | None:
        return (self.dev, self.ino) if self.ino else None


@dataclass(frozen=True)
class Noted:
    """An entry recorded in the ledger without being read (a symlink, an unreadable entry)."""

    path: str
    file_type: str
    status: str  # "skipped" or "failed"
    reason: str


@dataclass
class ScanResult:
    found: list[Found] = field(default_factory=list)
    noted: list[Noted] = field(default_factory=list)
    # Folders that could not be listed: ledger entries under them are not treated as deleted.
    unreadable: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    base: str  # folder the pattern is relative to
    pattern: str
    negate: bool = False
    dir_only: bool = False
    anchored: bool = False


def parse_rules(lines: Sequence[str], base: str) -> list[Rule]:
    rules = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = line.startswith("/") or "/" in line
        line = line.lstrip("/")
        if line:
            rules.append(Rule(base, line, negate, dir_only, anchored))
    return rules


def ignored(rules: Sequence[Rule], path: str, is_dir: bool) -> bool:
    """Whether ``path`` is ignored (the last matching rule decides, as in .gitignore)."""
    name = os.path.basename(path)
    result = False
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        if rule.anchored:
            if not (path == rule.base or path.startswith(rule.base.rstrip(os.sep) + os.sep)):
                continue
            target = os.path.relpath(path, rule.base)
        else:
            target = name
        if fnmatch.fnmatchcase(target, rule.pattern):
            result = not rule.negate
    return result


def within(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def within_set(path: str, paths: set[str] | frozenset[str]) -> bool:
    """``within(path, paths)`` for many paths: the path or one of its folders is in the set
    (cost: the depth of ``path``, not the size of the set)."""
    while True:
        if path in paths:
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def storable(path: str) -> bool:
    """Whether a path is valid Unicode (names with undecodable bytes cannot be stored)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape_path(path: str) -> str:
    """``path`` as valid UTF-8: the bytes of its name that are not UTF-8 (which ``os`` gives as
    lone surrogates) written ``\\xNN``, as Python shows them.  A storable path is unchanged."""
    try:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    except UnicodeError:  # a surrogate that does not stand for a byte
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


UNSTORABLE_FILE = ("file name is not valid UTF-8 (shown with its undecodable bytes as \\xNN); "
                   "rename it to index it")
UNSTORABLE_FOLDER = ("folder name is not valid UTF-8 (shown with its undecodable bytes as "
                     "\\xNN); nothing in it is indexed until it is renamed")


def _unstorable(path: str, is_dir: bool, result: ScanResult) -> None:
    """Record an entry whose name is not valid UTF-8 as failed, under :func:`escape_path`."""
    shown = escape_path(path)
    if os.path.lexists(shown):  # a real entry already has that name: it keeps the ledger row
        result.warnings.append(f"{shown}: {UNSTORABLE_FOLDER if is_dir else UNSTORABLE_FILE} "
                               "(not recorded: another entry has the escaped name)")
        return
    if is_dir:
        result.noted.append(Noted(shown, "folder", "failed", UNSTORABLE_FOLDER))
        return
    kind = file_type(path)
    if kind is not None:  # a file kbterm would not read anyway stays unrecorded
        result.noted.append(Noted(shown, kind, "failed", UNSTORABLE_FILE))


def scan(roots: Sequence[str], patterns: Sequence[str], data_dir: str) -> ScanResult:
    """Walk ``roots`` (absolute, resolved paths of folders or files)."""
    result = ScanResult()
    data_dir = os.path.realpath(data_dir)
    for root in roots:
        if not storable(root):
            result.warnings.append(f"{escape_path(root)}: the folder's name is not valid "
                                   "UTF-8, so it cannot be indexed; rename it")
            continue
        try:
            st = os.stat(root)
        except OSError as exc:
            result.warnings.append(f"{root}: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(root, parse_rules(patterns, root), roots, data_dir, result)
        else:
            _entry(root, st, result)
    return result


def scan_paths(roots: Sequence[str], paths: Sequence[str], patterns: Sequence[str],
               data_dir: str) -> ScanResult:
    """Scan only ``paths`` (files or folders under ``roots``) as a full scan would see them.

    The rules of every folder above a path apply (hidden folders, ``indexing.ignore`` anchored
    at its root, the ``.kbignore`` files on the way down), so a watcher that hands over the
    paths of its events indexes exactly what :func:`scan` of the roots would.  A path that is
    gone, or is now ignored, is simply not found (its ledger rows count as deleted).
    """
    result = ScanResult()
    data_dir = os.path.realpath(data_dir)
    for path in _outermost(paths):
        root = max((r for r in roots if within(path, [r])), key=len, default=None)
        if root is None:
            continue
        if path == root:
            sub = scan([root], patterns, data_dir)
            result.found += sub.found
            result.noted += sub.noted
            result.unreadable += sub.unreadable
            result.warnings += [w for w in sub.warnings if os.path.exists(root)]
            continue
        rules = _rules_above(root, path, patterns, data_dir, result)
        if rules is None:
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            kind = file_type(path)
            if kind:
                result.noted.append(Noted(path, kind, "failed",
                                          f"cannot stat: {exc.strerror or exc}"))
            else:
                result.unreadable.append(path)
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        if ignored(rules, path, is_dir):
            continue
        if stat.S_ISLNK(st.st_mode):
            _symlink(path, roots, result)
        elif is_dir:
            if os.path.basename(path) not in ALWAYS_SKIPPED_DIRS:
                _walk(path, rules, roots, data_dir, result)
        else:
            _entry(path, st, result)
    # Several dirty paths under one folder whose name is not UTF-8 note that folder once.
    result.noted = list({n.path: n for n in result.noted}.values())
    return result


def _outermost(paths: Sequence[str]) -> list[str]:
    """``paths`` without those inside another of them (a folder's walk covers its files)."""
    unique = set(paths)
    return sorted(p for p in unique if not within_set(os.path.dirname(p), unique))


def _rules_above(root: str, path: str, patterns: Sequence[str], data_dir: str,
                 result: ScanResult) -> list[Rule] | None:
    """The ignore rules in force for ``path`` (below ``root``), or None when a folder above it,
    or the path itself, is left out (hidden, always skipped, ignored, the data folder)."""
    rules = parse_rules(patterns, root)
    parts = os.path.relpath(path, root).split(os.sep)
    folder = root
    for i, name in enumerate(parts):
        rules = _with_kbignore(folder, rules, result)
        child = os.path.join(folder, name)
        last = i == len(parts) - 1
        if name.startswith("."):
            return None
        if not storable(child):
            try:
                is_dir = stat.S_ISDIR(os.lstat(child).st_mode)
            except OSError:  # gone: its escaped row is dealt with as its own dirty path
                return None
            if not ignored(rules, child, is_dir):
                _unstorable(child, is_dir, result)
            return None
        if within(child, [data_dir]):
            return None
        if not last and (name in ALWAYS_SKIPPED_DIRS or ignored(rules, child, True)):
            return None
        folder = child
    return rules


def _with_kbignore(folder: str, rules: list[Rule], result: ScanResult) -> list[Rule]:
    """``rules`` plus those of ``folder``'s ``.kbignore``, if it has one."""
    kbignore = os.path.join(folder, KBIGNORE)
    if not os.path.isfile(kbignore):
        return rules
    try:
        with open(kbignore, encoding="utf-8", errors="replace") as fh:
            return rules + parse_rules(fh.read().splitlines(), folder)
    except OSError as exc:
        result.warnings.append(f"{kbignore}: {exc.strerror or exc}")
        return rules


def _walk(root: str, base_rules: list[Rule], roots: Sequence[str], data_dir: str,
          result: ScanResult) -> None:
    stack: list[tuple[str, list[Rule]]] = [(root, base_rules)]
    while stack:
        folder, rules = stack.pop()
        if within(folder, [data_dir]):
            continue
        rules = _with_kbignore(folder, rules, result)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.unreadable.append(folder)
            result.warnings.append(f"cannot list {folder}: {exc.strerror or exc}")
            continue
        subfolders = []
        for entry in entries:
            name, path = entry.name, entry.path
            if name.startswith("."):
                continue
            if not storable(path):
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if not ignored(rules, path, is_dir):
                    _unstorable(path, is_dir, result)
                continue
            try:
                is_link = entry.is_symlink()
                is_dir = (not is_link) and entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir and name in ALWAYS_SKIPPED_DIRS:
                continue
            if ignored(rules, path, is_dir):
                continue
            if is_link:
                _symlink(path, roots, result)
            elif is_dir:
                subfolders.append(path)
            else:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    kind = file_type(path)
                    if kind:
                        result.noted.append(Noted(path, kind, "failed",
                                                  f"cannot stat: {exc.strerror or exc}"))
                    continue
                _entry(path, st, result)
        for sub in reversed(subfolders):
            stack.append((sub, rules))


def _entry(path: str, st: os.stat_result, result: ScanResult) -> None:
    if not stat.S_ISREG(st.st_mode):
        return
    kind = file_type(path)
    if kind is None:
        return
    result.found.append(Found(path, kind, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino))


def _symlink(path: str, roots: Sequence[str], result: ScanResult) -> None:
    kind = file_type(path) or "symlink"
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    try:
        real = os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            result.noted.append(Noted(path, kind, "failed", f"symlink loop ({target})"))
        else:
            result.noted.append(Noted(path, kind, "failed", f"broken symlink to {target}"))
        return
    if not within(real, roots):
        result.noted.append(Noted(path, kind, "skipped",
                                  f"symlink leads outside the indexed folders ({real})"))
        return
    if os.path.isdir(real) or file_type(real) is not None:
        result.noted.append(Noted(path, kind, "skipped", f"symlink to {real} (indexed there)"))
