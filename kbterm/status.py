"""``kbterm status``: what is in the index, what failed and why."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from kbterm.ingest import PICTURE_TYPES
from kbterm.store import STATUS_FAILED, STATUS_INDEXED, Store
from kbterm.watchstate import WatcherState, read_state


@dataclass
class IndexStatus:
    data_dir: str
    exists: bool
    embedding_model: str = ""
    dimension: int = 0
    configured_model: str = ""
    model_matches: bool = True
    files: int = 0
    chunks: int = 0
    files_by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    chunks_by_modality: dict[str, int] = field(default_factory=dict)
    chunks_by_type: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    disk_bytes: int = 0
    last_indexed_at: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)
    watcher: dict[str, Any] | None = None  # the watcher's published state (kbterm.watchstate)
    # Files whose text is in and whose pictures (pages, photo, segments) are still to embed,
    # of the indexed files that have pictures.
    pictures_pending: int = 0
    picture_files: int = 0
    time_left: str = ""  # about how long the work left takes (kbterm.plan), when known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect(config: Any) -> IndexStatus:
    store = Store(config.data_path)
    status = IndexStatus(data_dir=str(config.data_path), exists=store.exists,
                         configured_model=config.models.embedder.model)
    watcher = read_state(config.data_path)
    status.watcher = watcher.to_dict() if watcher is not None else None
    if not store.exists:
        return status
    meta = store.read_meta()
    if meta is not None:
        status.embedding_model, status.dimension = meta.embedding_model, meta.dimension
        wanted = config.models.embedder.dimension
        status.model_matches = (
            meta.embedding_model == config.models.embedder.model
            and wanted in (meta.dimension_setting, meta.dimension)
        )
        status.last_indexed_at = meta.last_run_at
    ledger = store.ledger()
    status.files = len(ledger)
    by_type: dict[str, Counter[str]] = {}
    for record in ledger.values():
        by_type.setdefault(record.file_type, Counter())[record.status] += 1
        status.last_indexed_at = max(status.last_indexed_at, record.indexed_at)
        if record.status == STATUS_INDEXED and record.file_type in PICTURE_TYPES:
            status.picture_files += 1
            status.pictures_pending += bool(record.pictures)
        if record.status == STATUS_FAILED:
            status.failures.append({"path": record.path, "reason": record.reason})
        elif record.reason:
            status.warnings.append({"path": record.path, "status": record.status,
                                    "reason": record.reason})
    status.files_by_type = {k: dict(v) for k, v in sorted(by_type.items())}
    rows = store.live_chunks(["modality", "file_type"], ledger=ledger)
    status.chunks = len(rows)
    status.chunks_by_modality = dict(sorted(Counter(r["modality"] for r in rows).items()))
    status.chunks_by_type = dict(sorted(Counter(r["file_type"] for r in rows).items()))
    status.failures.sort(key=lambda f: f["path"])
    status.disk_bytes = store.disk_bytes()
    status.versions = store.versions()
    return status


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def watcher_lines(data: dict[str, Any] | None) -> list[str]:
    if data is None:
        return ["watcher    not running (start it with: kbterm watch --detach)"]
    info = WatcherState(**data)
    lines = [f"watcher    {info.summary()}"]
    if info.running and info.last_error:
        when = time.strftime("%H:%M:%S", time.localtime(info.last_error_at))
        lines.append(f"           last error at {when}: {info.last_error}")
    if info.running and info.notice:
        lines.append(f"           {info.notice}")
    return lines


def render(status: IndexStatus, max_failures: int = 20) -> str:
    if not status.exists:
        return "\n".join([
            f"no index yet in {status.data_dir}",
            "add folders with: kbterm index ~/Documents (or list them under [library])",
            *watcher_lines(status.watcher)])
    lines = [f"index      {status.data_dir} ({human_bytes(status.disk_bytes)} on disk)"]
    model = status.embedding_model or "(nothing embedded yet)"
    if status.dimension:
        model += f", dimension {status.dimension}"
    lines.append(f"model      {model}")
    if not status.model_matches:
        lines.append(f"           the config names {status.configured_model}: "
                     "run `kbterm index --rebuild`")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.last_indexed_at)) \
        if status.last_indexed_at else "never"
    lines.append(f"indexed    {when}")
    lines.append(f"files      {status.files}   chunks {status.chunks}")
    if status.pictures_pending:
        done = 100 * (status.picture_files - status.pictures_pending) // status.picture_files
        lines.append(f"pictures   pending for {status.pictures_pending} of "
                     f"{status.picture_files} files with pictures (text 100%, pictures "
                     f"{done}%): their text is searchable; kbterm index or watch goes on")
        if status.time_left:
            lines.append(f"           {status.time_left}")
    lines.extend(watcher_lines(status.watcher))
    lines.append("")
    statuses = ("indexed", "skipped", "failed")
    lines.append(f"  {'type':<10}" + "".join(f"{s:>9}" for s in statuses) + f"{'chunks':>9}")
    for kind, counts in status.files_by_type.items():
        lines.append(f"  {kind:<10}" + "".join(f"{counts.get(s, 0):>9}" for s in statuses)
                     + f"{status.chunks_by_type.get(kind, 0):>9}")
    if status.chunks_by_modality:
        lines.append("  chunks by modality: " + ", ".join(
            f"{k} {v}" for k, v in status.chunks_by_modality.items()))
    if status.failures:
        lines.append("")
        lines.append(f"failed ({len(status.failures)})")
        for f in status.failures[:max_failures]:
            lines.append(f"  {f['path']!s}: {f['reason']}")
        if len(status.failures) > max_failures:
            lines.append(f"  ... and {len(status.failures) - max_failures} more "
                         "(kbterm status --all)")
    return "\n".join(lines)
