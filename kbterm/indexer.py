"""``kbterm index``: bring the index in step with the folders, embedding only what changed.

A run:

1. takes the writer lock, checks that the index was built with the configured embedding model,
   and cleans up after a run that was killed (:meth:`Store.recover`);
2. walks the folders (:mod:`kbterm.scan`) and compares each file with its ledger row: the same
   size and mtime means unchanged (no read, no model call); otherwise the content hash decides
   between *touched* (same bytes: only the ledger row changes), *renamed* (the bytes of a file
   that is gone: its chunks are re-pointed, nothing is embedded) and *changed or new*;
3. removes files gone from disk;
4. parses, chunks and embeds the changed files, batching the embedder's inputs across files, and
   reuses the vector of every chunk whose content it has embedded before (editing one page of a
   300-page PDF embeds that page again, not the book);
5. commits finished files in batches (so a killed run loses at most the last few seconds of
   work);
6. then embeds the pictures (PDF page images, photos, video segments) of the files whose text
   step 4 committed, and of files an earlier run left with pictures pending: **text first,
   pictures after** (see kbterm.store).  Each picture is committed as it is embedded, so a
   run that stops (Ctrl-C, kill, ``pause``) resumes where it was, without embedding again
   what landed;
7. compacts the tables and deletes old versions.

Nothing here imports textual; torch loads only when something needs embedding.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from kbterm.errors import KbtermError
from kbterm.ingest import (
    FILE_TYPES,
    PICTURE_TYPES,
    ParseContext,
    ParseError,
    Section,
    describe,
    parse,
)
from kbterm.lock import WriterLock
from kbterm.safeopen import fd_path, open_checked
from kbterm.scan import Found, Noted, scan, scan_paths, within, within_set
from kbterm.store import (
    STATUS_FAILED,
    STATUS_INDEXED,
    STATUS_SKIPPED,
    FileRecord,
    DiskFull,
    IndexMeta,
    Store,
    disk_full,
)

if TYPE_CHECKING:
    from kbterm.config import Config
    from kbterm.models.encoding import VisionLimits
    from kbterm.ingest.chunking import Chunker
    from kbterm.backends.base import EmbeddingBackend

log = logging.getLogger(__name__)

# Inputs handed to the embedder at once (it batches them by its token budget).
EMBED_GROUP_TEXTS = 64
EMBED_GROUP_VISUALS = 8
# Commit finished files when this many rows or files wait, or after this many seconds.
COMMIT_ROWS = 2048
COMMIT_FILES = 256
COMMIT_SECONDS = 5.0
# A file with more chunks than this is written in several commits (staged; see kbterm.store).
STAGE_ROWS = 4096
HASH_BLOCK = 1 << 20
# Vectors of a changed file's old chunks are loaded for reuse up to this many rows (memory).
REUSE_MAX_ROWS = 16384
# Vectors kept by chunk key for content that comes again in the same run (16 MB at 2,048
# dimensions); older ones are found in the table.
RECENT_VECTORS = 2048
# Earlier versions whose picture rows a changed file keeps (hidden) for reuse.
RETIRED_KEEP = 2

ProgressFn = Callable[[str, int, int, str], None]  # (phase, done, total, current path)


def content_hash(path: str, identity: tuple[int, int] | None = None) -> str:
    """A digest of the file's bytes (read in blocks: bounded memory).  With ``identity``, only
    if ``path`` is still the regular file the scan saw (:func:`~kbterm.safeopen.open_checked`)."""
    h = hashlib.blake2b(digest_size=16)
    with os.fdopen(open_checked(path, identity), "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _key(kind: str, data: str) -> str:
    return kind + ":" + hashlib.blake2b(data.encode("utf-8", "surrogatepass"),
                                        digest_size=16).hexdigest()


def _fatal(exc: BaseException) -> bool:
    """Errors that stop the run (the model is missing or broken), not just one file."""
    from kbterm.errors import InputError

    return isinstance(exc, KbtermError) and not isinstance(exc, (InputError, ParseError))


class _WriteFailed(Exception):
    """A write to the index failed while a file was being read (not the file's fault)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _writing(fn: Callable[..., Any], *args: Any) -> Any:
    """Run an index write from inside a file's parse loop, so that its failure is told
    apart from the file's own (which only fails that file)."""
    try:
        return fn(*args)
    except (KbtermError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised as itself by the parse loop
        raise _WriteFailed(exc) from exc


class _Paused(Exception):
    """The pictures step stops for newer work (``pause``)."""


def _retired(old: FileRecord | None) -> str:
    """The generations whose picture rows a new version of ``old``'s file keeps for reuse."""
    if old is None or old.file_type not in PICTURE_TYPES:
        return ""
    gens = old.retired_generations
    if old.status == STATUS_INDEXED and old.generation:
        gens = [g for g in gens if g != old.generation] + [old.generation]
    return " ".join(gens[-RETIRED_KEEP:])


def new_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class Summary:
    """What a run did."""

    indexed: int = 0
    unchanged: int = 0
    renamed: int = 0
    failed: int = 0
    skipped: int = 0
    removed: int = 0
    chunks_written: int = 0
    embedded: int = 0  # vectors computed
    reused: int = 0  # vectors taken over from earlier chunks with the same content
    model_calls: int = 0  # embedder forward passes
    recovered: int = 0  # rows a killed run left behind, removed
    pictures_pending: int = 0  # files whose text is in and whose pictures still wait
    picture_files: int = 0  # indexed files with pictures under the roots (pending included)
    paused: bool = False  # the pictures step stopped for newer work (``pause``)
    seconds: float = 0.0
    interrupted: bool = False
    repair: str = ""  # what a repair of the index did first (kbterm index --repair)
    warnings: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def brief(self) -> str:
        """Only what changed ("indexed 3, removed 1 in 0.4 s"), for the watcher's log."""
        parts = [f"{name} {n}" for name, n in (
            ("indexed", self.indexed), ("renamed", self.renamed), ("removed", self.removed),
            ("failed", self.failed), ("skipped", self.skipped)) if n]
        text = ", ".join(parts or ["nothing changed"]) + f" in {self.seconds:.1f} s"
        if self.embedded or self.reused:
            text += f" ({self.embedded} chunks embedded, {self.reused} reused)"
        if self.pictures_pending:
            text += f"; pictures pending for {self.pictures_pending} file(s)"
        return text

    def line(self) -> str:
        parts = [f"indexed {self.indexed}", f"unchanged {self.unchanged}"]
        if self.renamed:
            parts.append(f"renamed {self.renamed}")
        parts += [f"failed {self.failed}", f"skipped {self.skipped}", f"removed {self.removed}"]
        text = ", ".join(parts) + f" in {self.seconds:.1f} s"
        if self.embedded or self.reused:
            text += f" ({self.embedded} chunks embedded, {self.reused} reused)"
        if self.pictures_pending:
            text += (f"; pictures pending for {self.pictures_pending} file(s): their text is "
                     "searchable, run kbterm index again to go on")
        return text


@dataclass
class _Job:
    """One file to (re)index."""

    found: Found
    record: FileRecord  # the ledger row it will get
    previous: FileRecord | None
    reuse_from: list[str]  # file ids whose vectors may be reused
    pictures: bool = False  # the pictures step of a file whose text is in


@dataclass
class _InFlight:
    job: _Job
    rows: list[dict[str, Any]] = field(default_factory=list)
    waiting: int = 0
    parsed: bool = False
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    staged: bool = False
    written: int = 0  # rows already appended (staged files)

    @property
    def ready(self) -> bool:
        return self.parsed and self.waiting == 0 and not self.error


class Indexer:
    """Indexes folders into the store of ``config``'s data folder."""

    def __init__(
        self,
        config: "Config",
        *,
        embedder: "EmbeddingBackend | None" = None,
        progress: ProgressFn | None = None,
        command: str = "kbterm index",
    ) -> None:
        self.config = config
        self.store = Store(config.data_path)
        self._embedder = embedder
        self._chunker: "Chunker | None" = None
        self.progress = progress or (lambda phase, done, total, current: None)
        self.command = command
        self.model_id = config.models.embedder.model
        self.dimension_setting = config.models.embedder.dimension
        self._fts_ready = False
        self.last_summary: Summary | None = None
        # Vectors this indexer embedded lately, by chunk key (content seen again reuses them).
        self._recent: OrderedDict[str, Any] = OrderedDict()
        self.repair_report: Any = None  # what the last session's repair did (kbterm.repair)
        self._pause: Callable[[], bool] = lambda: False
        self._auto_pixels: int | None = None  # the device's default picture size, once known
        # Text first, pictures after (False: each file's text and pictures together, as
        # kbterm 0.1 did; the benchmarks' baseline).
        self.text_first = True

    # ------------------------------------------------------------------ models

    @property
    def embedder(self) -> "EmbeddingBackend":
        if self._embedder is None:
            from kbterm.backends import get_embedder

            self._embedder = get_embedder(self.config)
        return self._embedder

    @property
    def chunker(self) -> "Chunker":
        if self._chunker is None:
            from kbterm.ingest.chunking import Chunker

            self._chunker = Chunker(self.embedder.tokenizer())
        return self._chunker

    def _calls(self) -> int:
        return self._embedder.calls if self._embedder is not None else 0

    # ------------------------------------------------------------------ the run

    def run(self, paths: Sequence[str | Path] | None = None, *, rebuild: bool = False,
            retry_failed: bool = False, verify: bool = False, repair: bool = False) -> Summary:
        """Index ``paths`` (default: the configured folders) and return what was done.
        ``verify``: hash every file, not only those whose size or time changed.  ``repair``:
        read every row of the index back first and repair what is damaged
        (:mod:`kbterm.repair`; a damaged table found by the cheap check of every run is
        repaired without it)."""
        roots = self.roots(paths)
        with self.session(rebuild=rebuild, repair=repair) as recovered:
            summary = self.sync(roots, retry_failed=retry_failed, verify=verify)
            summary.recovered = recovered
            if self.repair_report is not None:
                summary.repair = self.repair_report.line()
        return summary

    def roots(self, paths: Sequence[str | Path] | None = None) -> list[str]:
        """Absolute, resolved folders (or files) to index: ``paths`` or the configured ones."""
        roots = [os.path.realpath(os.path.expanduser(str(p)))
                 for p in (paths or self.config.folder_paths())]
        if not roots:
            raise KbtermError(
                "nothing to index: name a folder (kbterm index ~/Documents) "
                "or list folders under [library] in the config"
            )
        return roots

    @contextmanager
    def session(self, *, rebuild: bool = False, repair: bool = False) -> Iterator[int]:
        """Hold the writer lock for one or more :meth:`sync` calls (``kbterm watch`` holds one
        for its whole life).  On entry: a check that the index can be read (damage found is
        repaired, see :mod:`kbterm.repair`; ``repair`` reads every row back first), the model
        check and the clean-up after a killed run; yields how many rows that clean-up removed.
        A full disk or a damaged table met on the way is one line (:meth:`_one_line`)."""
        self.store.ensure_writable()
        with WriterLock(self.config.data_path, self.command), self._one_line():
            self.repair_report = None
            if rebuild:
                self._fts_ready = False
                self.store.drop()
                self.store.ensure_writable()
            elif self.store.path.is_dir():
                self._check_or_repair(repair)
            self.store.check_model(self.model_id, self.dimension_setting)
            self._upgrade_keywords()
            marker = self.store.path / "run.json"
            recovered = 0
            if marker.exists() and self.store.exists:
                recovered = self.store.recover()
                if recovered:
                    log.info("removed %d chunk rows left by an interrupted run", recovered)
            self.store.create_files_table()
            marker.write_text(f'{{"pid": {os.getpid()}, "started_at": {time.time()}}}')
            try:
                yield recovered
            finally:
                marker.unlink(missing_ok=True)

    def _upgrade_keywords(self) -> None:
        """An index whose keyword index another kbterm built (another recipe: see
        kbterm.keywords) gets this one's, once, before anything else is written."""
        if not self.store.exists or self.store.chunks_table is None:
            return
        try:
            self._fts_ready = self.store.ensure_fts_index(
                lambda done, total: self.progress("keywords", done, total, ""))
        except DiskFull:
            raise
        except Exception as exc:  # noqa: BLE001 - keyword search degrades, indexing does not
            log.warning("could not rebuild the keyword index: %s", exc)

    def sync(self, roots: Sequence[str], dirty: Sequence[str] | None = None, *,
             retry_failed: bool = False, optimize: bool = True,
             verify: bool = False, pause: Callable[[], bool] | None = None) -> Summary:
        """Bring ``roots`` in step with the disk (inside :meth:`session`).

        With ``dirty`` (files or folders under ``roots`` that may have changed, as a watcher
        reports them) only those paths are looked at: the same ignore rules apply, a path gone
        from disk leaves the index, and a file that moved between two dirty paths is re-pointed.
        An event can mean an edit that kept the size and the time (a tool that restores the
        mtime), so a dirty file's content is always hashed; with ``verify`` every file's is.

        ``pause``: asked between pictures; once it says True, the pictures still to embed are
        left pending for the next call (a watcher's newer events go first).
        """
        started = time.monotonic()
        self._pause = pause or (lambda: False)
        summary = self.last_summary = Summary()  # kept when interrupted: what was saved
        calls_before = self._calls()
        try:
            with self._one_line():
                self._run(list(roots), dirty, summary, retry_failed, optimize,
                          hash_all=verify or dirty is not None)
        except KeyboardInterrupt:
            summary.interrupted = True
            raise
        finally:
            summary.model_calls = self._calls() - calls_before
            summary.seconds = time.monotonic() - started
        return summary

    @contextmanager
    def _one_line(self) -> Iterator[None]:
        """A full disk, or a LanceDB failure on a damaged table, as the one-line error that
        says what to do (nothing committed before is lost: every commit is atomic)."""
        from kbterm.store import is_disk_full

        try:
            yield
        except (KbtermError, KeyboardInterrupt):
            raise
        except Exception as exc:
            if is_disk_full(exc):
                raise disk_full(self.config.data_path) from None
            text = str(exc)
            if type(exc).__name__ in ("RustPanic", "PanicException") or (
                    text.startswith("lance error") and ("(IO)" in text or "Not found" in text)):
                raise self.store.translate(exc) from None
            raise

    def _check_or_repair(self, full: bool) -> None:
        """Repair the index when the cheap check finds it damaged, or always with ``full``
        (which reads every row back); the report is kept in :attr:`repair_report`."""
        from kbterm.repair import quick_check, repair

        problem = "" if full else quick_check(self.store)
        if not (full or problem):
            return
        if problem:
            log.info("%s; repairing it now", problem.split("; run: ")[0])
        report = repair(self.store, self.model_id, self.dimension_setting)
        self.repair_report = report
        if report.changed:
            self._fts_ready = False
        log.info("%s", report.line())

    def forget(self, folders: Sequence[str], keep: Sequence[str] = ()) -> int:
        """Remove from the index every file under ``folders`` that is not under ``keep`` (the
        folders still listed), without embedding anything; returns how many files left."""
        folders = [os.path.realpath(os.path.expanduser(f)) for f in folders]
        keep = [os.path.realpath(os.path.expanduser(k)) for k in keep]
        if not self.store.exists:
            return 0
        with self.session():
            gone = [r for p, r in self.store.ledger().items()
                    if within(p, folders) and not within(p, keep)]
            self.store.remove(gone)
            if gone:
                self._keyframe_gc()
        return len(gone)

    @property
    def models_loaded(self) -> bool:
        return self._embedder is not None and self._embedder.loaded

    def release_models(self) -> bool:
        """Free the embedder's weights (they load again on the next file); whether any were."""
        embedder, self._chunker = self._embedder, None
        if embedder is None or not embedder.loaded:
            return False
        return embedder.release()

    def _run(self, roots: list[str], dirty: Sequence[str] | None, summary: Summary,
             retry_failed: bool, optimize: bool, hash_all: bool = False) -> None:
        cfg = self.config.indexing
        self.progress("scan", 0, 0, "")
        if dirty is None:
            scope = roots
            result = scan(roots, cfg.ignore, str(self.config.data_path))
        else:
            scope = [p for p in dirty if within(p, roots)]
            result = scan_paths(roots, scope, cfg.ignore, str(self.config.data_path))
        found = len(result.found)
        self.progress("scan", found, found, "")
        summary.warnings.extend(result.warnings)
        ledger = self.store.ledger()
        scope_set = {s.rstrip(os.sep) or os.sep for s in scope}
        in_scope = {p: r for p, r in ledger.items() if within_set(p, scope_set)}
        seen = {f.path for f in result.found} | {n.path for n in result.noted}

        # Noted entries (symlinks, unstatable files) go to the ledger as they are.
        noted_records = []
        for n in result.noted:
            old = ledger.get(n.path)
            if old and old.status == n.status and old.reason == n.reason:
                continue
            noted_records.append(self._noted_record(n, old))
        # Files gone from disk (not under a folder we could not list).
        unreadable = set(result.unreadable)
        missing = {
            p: r for p, r in in_scope.items()
            if p not in seen and not within_set(p, unreadable)
        }
        by_hash: dict[str, list[FileRecord]] = {}
        for r in missing.values():
            if r.status == STATUS_INDEXED and r.content_hash:
                by_hash.setdefault(r.content_hash, []).append(r)
        indexed_hashes: dict[str, list[str]] = {}
        for r in ledger.values():
            if r.status == STATUS_INDEXED and r.content_hash:
                indexed_hashes.setdefault(r.content_hash, []).append(r.file_id)

        # Which files changed: size and mtime first, then the content hash.
        settings = {kind: self.settings(kind) for kind in set(FILE_TYPES.values())}
        candidates = []
        for f in result.found:
            old = ledger.get(f.path)
            if old and self._unchanged(f, old, settings[f.file_type], retry_failed) \
                    and not (hash_all and old.status == STATUS_INDEXED) \
                    and not self._within_time_resolution(f, old):
                # (a file whose pictures are pending counts once they are in)
                summary.unchanged += not old.pictures
            else:
                candidates.append((f, old))
        touched: list[FileRecord] = []
        moves: list[tuple[FileRecord, str]] = []
        jobs: list[_Job] = []
        for i, (f, old) in enumerate(candidates):
            self.progress("check", i, len(candidates), f.path)
            if f.size == 0:
                touched.append(self._plain_record(f, old, STATUS_SKIPPED, "empty file"))
                summary.skipped += 1
                continue
            try:
                digest = content_hash(f.path, f.identity)
            except OSError as exc:
                reason = f"cannot read: {exc.strerror or exc}"
                touched.append(self._plain_record(f, old, STATUS_FAILED, reason))
                summary.failed += 1
                summary.failures.append((f.path, reason))
                continue
            if old and old.status == STATUS_INDEXED and old.content_hash == digest \
                    and old.file_type == f.file_type and old.settings == settings[f.file_type]:
                # Checked now: a later edit within the same mtime tick is caught next time.
                touched.append(replace(old, size=f.size, mtime_ns=f.mtime_ns,
                                       indexed_at=time.time()))
                summary.unchanged += 1
                continue
            gone = by_hash.get(digest)
            if old is None and gone and gone[0].file_type == f.file_type \
                    and gone[0].settings == settings[f.file_type]:
                source = gone.pop(0)
                del missing[source.path]
                moves.append((replace(source, size=f.size, mtime_ns=f.mtime_ns), f.path))
                summary.renamed += 1
                continue
            record = FileRecord(
                file_id=old.file_id if old else new_id(), path=f.path, file_type=f.file_type,
                size=f.size, mtime_ns=f.mtime_ns, content_hash=digest,
                generation=new_id()[:8], settings=settings[f.file_type],
            )
            if f.file_type in PICTURE_TYPES and self.text_first:  # its text now, pictures after
                record.pictures, record.retired = "pending", _retired(old)
            # A file whose indexing was interrupted left its finished rows staged: resume
            # from them (their vectors are reused) as from an earlier version.
            reuse = ([old.file_id] if old and (old.status == STATUS_INDEXED or old.staging)
                     else []) + indexed_hashes.get(digest, [])[:1]
            jobs.append(_Job(f, record, old, reuse))
        self.progress("check", len(candidates), len(candidates), "")

        # Cheap changes first: ledger-only updates, renames, removals.
        self.store.upsert_files(touched + noted_records)
        summary.skipped += sum(1 for r in noted_records if r.status == STATUS_SKIPPED)
        for r in noted_records:
            if r.status == STATUS_FAILED:
                summary.failed += 1
                summary.failures.append((r.path, r.reason))
        if moves:
            self.store.repoint(moves)
        # Files gone from disk leave the index; those whose vectors a job may reuse (a file
        # renamed over another, a copy) leave once the jobs are done.
        sources = {i for job in jobs for i in job.reuse_from}
        later = [r for r in missing.values() if r.file_id in sources]
        self.store.remove([r for r in missing.values() if r.file_id not in sources])
        summary.removed += len(missing)

        if jobs:
            self._index(jobs, summary)
        self.store.remove(later)
        pictures, pending, total = self._picture_jobs(roots)
        if pictures:
            self.progress("pictures", 0, len(pictures), "")
            self._index(pictures, summary)
            _, pending, total = self._picture_jobs(roots)
        summary.pictures_pending, summary.picture_files = pending, total
        if summary.indexed or summary.removed or summary.renamed or touched:
            self._keyframe_gc()
        try:
            # Once it exists it stays (rows are folded in by optimize): a watcher's batches
            # need not list the table's indices every time.
            self._fts_ready = self._fts_ready or self.store.ensure_fts_index()
        except Exception as exc:  # noqa: BLE001 - keyword search degrades, indexing does not
            log.warning("could not build the keyword index (search falls back to vectors): %s",
                        exc)
            summary.warnings.append(f"keyword index not built: {exc}")
        if optimize:
            self.store.optimize(cfg.keep_versions_seconds)
        meta = self.store.read_meta()
        if meta is not None:
            meta.last_run_at = time.time()
            self.store.write_meta(meta)

    def _picture_jobs(self, roots: Sequence[str]) -> tuple[list[_Job], int, int]:
        """The pictures step of every file under ``roots`` whose text is in and whose pictures
        are pending (this run's, and those an earlier run left), when the file on disk is
        still the one whose text was indexed; how many files are pending in all, and how many
        indexed files under ``roots`` have pictures."""
        roots_set = {r.rstrip(os.sep) or os.sep for r in roots}
        with_pictures = [r for r in self.store.ledger().values()
                         if r.status == STATUS_INDEXED and r.file_type in PICTURE_TYPES
                         and within_set(r.path, roots_set)]
        pending = sorted((r for r in with_pictures if r.pictures), key=lambda r: r.path)
        jobs = []
        for rec in pending:
            try:
                st = os.stat(rec.path, follow_symlinks=False)
            except OSError:
                continue  # gone: the next scan removes it
            if st.st_size != rec.size or st.st_mtime_ns != rec.mtime_ns:
                continue  # changed since: the next scan indexes it again, text first
            found = Found(rec.path, rec.file_type, st.st_size, st.st_mtime_ns,
                          st.st_dev, st.st_ino)
            jobs.append(_Job(found, replace(rec), rec, [rec.file_id], pictures=True))
        return jobs, len(pending), len(with_pictures)

    def picture_pixels(self, file_type: str) -> int:
        """The most pixels a PDF page image (``file_type`` "pdf") or a photo is indexed with:
        ``indexing.page_max_pixels`` / ``image_max_pixels``, or the default for the device
        that embeds (:mod:`kbterm.resolution`), within the embedder's own limit."""
        cfg = self.config.indexing
        chosen = cfg.page_max_pixels if file_type == "pdf" else cfg.image_max_pixels
        return min(chosen or self.default_pixels(), self.embedder.limits.image_max_pixels)

    def default_pixels(self) -> int:
        """The index's default picture size: chosen for the embedding device when the index is
        made, then kept in its meta.json (an index older than the setting: the contract's
        maximum, what it was made with), so that moving it does not re-embed every picture."""
        if self._auto_pixels is None:
            from kbterm.resolution import CONTRACT_MAX_PIXELS, default_pixels

            meta = self.store.read_meta() if self.store.path.is_dir() else None
            if meta is not None:
                self._auto_pixels = meta.picture_pixels or CONTRACT_MAX_PIXELS
            else:
                self._auto_pixels = default_pixels(self._embedding_device())
        return self._auto_pixels

    def _embedding_device(self) -> str:
        """The device the embedder runs on; a model of this process is not loaded for it."""
        backend = self.embedder
        spec = getattr(backend, "spec", None)
        if spec is not None and not backend.loaded:
            from kbterm.models.runtime import choose_runtime

            return choose_runtime(spec.device, spec.dtype).device
        host = getattr(backend, "host", None)
        return host().device if host else ""

    def limits(self, file_type: str) -> "VisionLimits":
        """The vision limits a file of ``file_type`` is parsed with."""
        limits = self.embedder.limits
        if file_type in ("pdf", "image"):
            limits = replace(limits, image_max_pixels=self.picture_pixels(file_type))
        return limits

    def settings(self, file_type: str) -> str:
        """The settings that shape a file's chunks: a file indexed with other settings (another
        chunk size, segment length or pixel limit) is indexed again."""
        limits = self.limits(file_type)
        cfg = self.config.indexing
        if file_type == "image":
            return f"pixels={limits.image_min_pixels}-{limits.image_max_pixels}"
        if file_type == "video":
            return (f"segment={cfg.video_segment_seconds:g};fps={limits.fps:g};"
                    f"frames={limits.max_frames};pixels={limits.frame_max_pixels}")
        chunk = self._chunk_config(file_type)
        text = f"chunk={chunk.size}/{chunk.overlap}"
        if file_type == "pdf":
            text += f";pixels={limits.image_min_pixels}-{limits.image_max_pixels}"
        return text

    @staticmethod
    def _within_time_resolution(f: Found, old: FileRecord) -> bool:
        """Whether the file's mtime is so close to when it was last read that an edit made
        after the read could carry the same mtime (FAT keeps 2 s, many filesystems whole
        seconds): then its content is hashed, not trusted from size and time."""
        if old.status != STATUS_INDEXED or not old.indexed_at:
            return False
        coarse = f.mtime_ns % 1_000_000_000 == 0
        resolution_ns = 2_000_000_000 if coarse else 100_000_000
        return f.mtime_ns >= int(old.indexed_at * 1e9) - resolution_ns

    def _unchanged(self, f: Found, old: FileRecord, settings: str, retry_failed: bool) -> bool:
        if old.size != f.size or old.mtime_ns != f.mtime_ns or old.file_type != f.file_type:
            return False
        if old.status == STATUS_INDEXED and old.settings != settings:
            return False
        if old.staging:
            return False
        if old.status == STATUS_FAILED and (retry_failed or "permission" in old.reason.lower()):
            return False
        return True

    def _noted_record(self, n: Noted, old: FileRecord | None) -> FileRecord:
        return self._unindexed(old, FileRecord(
            file_id="", path=n.path, file_type=n.file_type, status=n.status, reason=n.reason,
            indexed_at=time.time(),
        ))

    def _plain_record(self, f: Found, old: FileRecord | None, status: str,
                      reason: str) -> FileRecord:
        return self._unindexed(old, FileRecord(
            file_id="", path=f.path, file_type=f.file_type, size=f.size, mtime_ns=f.mtime_ns,
            status=status, reason=reason, indexed_at=time.time(),
        ))

    def _unindexed(self, old: FileRecord | None, record: FileRecord) -> FileRecord:
        """A ledger row for a path that now has no chunks (skipped or failed)."""
        if old is not None and old.status == STATUS_INDEXED:
            # Its chunks must go: the path no longer holds what they say.
            self.store.remove([old])
            old = None
        record.file_id = old.file_id if old is not None else new_id()
        return record

    # ------------------------------------------------------------------ parse, embed, commit

    def _index(self, jobs: list[_Job], summary: Summary) -> None:
        self._ensure_chunks_table()
        queue: list[tuple[_InFlight, dict[str, Any], Any]] = []
        inflight: list[_InFlight] = []
        ready: list[_InFlight] = []
        last_commit = time.monotonic()
        queued_at = 0.0  # when the oldest queued input was queued

        def embed_queue() -> None:
            self._embed(queue, summary)
            queue.clear()
            for item in list(inflight):
                # (a file's pictures land as they are embedded; once all are parsed, the
                # file is committed with the others that are ready)
                if item.staged and not item.error and not (item.job.pictures and item.parsed):
                    self._drain_staged(item)
                # A file still being parsed is settled by the parse loop, not here.
                if item.parsed and (item.error or item.ready):
                    inflight.remove(item)
                    if item.error:
                        self._fail(item, summary)
                    else:
                        ready.append(item)

        def commit(force: bool = False) -> None:
            nonlocal last_commit
            rows = sum(len(i.rows) for i in ready)
            if not ready or not (force or rows >= COMMIT_ROWS or len(ready) >= COMMIT_FILES
                                 or time.monotonic() - last_commit >= COMMIT_SECONDS):
                return
            self._commit(ready, summary)
            ready.clear()
            last_commit = time.monotonic()

        total = len(jobs)
        phase = "pictures" if jobs and jobs[0].pictures else "index"
        try:
            for n, job in enumerate(jobs):
                if job.pictures and self._pause():
                    summary.paused = True
                    break  # the rest stays pending: newer work goes first
                self.progress(phase, n, total, job.found.path)
                item = _InFlight(job, staged=job.pictures)
                inflight.append(item)
                reuse = self.store.chunk_vectors(job.reuse_from) \
                    if self._reuse_rows(job) <= REUSE_MAX_ROWS else {}
                try:
                    for section in self._sections(job, item):
                        if item.error:  # one of its inputs could not be embedded
                            break
                        for row, model_input in self._rows(job, section):
                            vector = reuse.get(row["chunk_key"])
                            if vector is not None:
                                row["vector"] = vector
                                summary.reused += 1
                            else:
                                if not queue:
                                    queued_at = time.monotonic()
                                queue.append((item, row, model_input))
                                item.waiting += 1
                            item.rows.append(row)
                            if not item.staged and len(item.rows) > STAGE_ROWS:
                                _writing(self._stage, item)
                            # Full, or holding rows of a file read before this one for
                            # long (a finished file must not wait for a long one): embed,
                            # then commit what is finished.
                            if self._queue_full(queue) or (
                                    queue and queue[0][0] is not item
                                    and time.monotonic() - queued_at >= COMMIT_SECONDS):
                                _writing(embed_queue)
                                _writing(commit)
                                if job.pictures and self._pause():
                                    raise _Paused
                except _Paused:  # what landed stays; the file's pictures stay pending
                    inflight.remove(item)
                    summary.paused = True
                    break
                except _WriteFailed as exc:  # the index's fault, not the file's: stop
                    raise exc.error from None
                except ParseError as exc:
                    item.error = str(exc)
                except (OSError, MemoryError) as exc:
                    item.error = describe(exc)
                except KbtermError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the run
                    log.debug("parsing %s failed", job.found.path, exc_info=True)
                    item.error = describe(exc)
                item.parsed = True
                if item.error:
                    queue[:] = [q for q in queue if q[0] is not item]
                    item.waiting = 0
                    inflight.remove(item)
                    self._fail(item, summary)
                elif item.ready:
                    inflight.remove(item)
                    ready.append(item)
                commit()
            embed_queue()
            commit(force=True)
            self.progress(phase, total, total, "")
        except BaseException:
            # Finished files are complete: keep them.  Staged rows of unfinished ones go (the
            # pictures that landed stay: the next run resumes after them).
            queue.clear()
            for item in inflight:
                if item.staged and not item.job.pictures:
                    self.store.drop_staged(item.job.record)
            ready[:] = [i for i in ready if i.ready]
            if ready:
                self._commit(ready, summary)
            raise

    def _reuse_rows(self, job: _Job) -> int:
        prev = job.previous
        if prev is None or prev.file_id not in job.reuse_from:
            return 0
        return prev.chunks + (self.store.count_staged(prev) if prev.staging else 0)

    def _queue_full(self, queue: list[tuple[_InFlight, dict[str, Any], Any]]) -> bool:
        visuals = sum(1 for _i, row, _m in queue if row["modality"] != "text")
        return len(queue) >= EMBED_GROUP_TEXTS or visuals >= EMBED_GROUP_VISUALS

    def _sections(self, job: _Job, item: _InFlight) -> Iterator[Section]:
        ctx = ParseContext(
            limits=self.limits(job.record.file_type),
            video_segment_seconds=self.config.indexing.video_segment_seconds,
            warnings=item.warnings,
            stage="pictures" if job.pictures else "text" if job.record.pictures else "",
        )
        try:  # the file the scan saw, and nothing a swap of its name put there since
            fd = open_checked(job.found.path, job.found.identity)
        except OSError as exc:
            raise ParseError(f"cannot read: {exc.strerror or exc}") from None
        try:
            for section in parse(fd_path(fd), job.found.file_type, ctx):
                if ctx.total:  # a PDF's pages, a video's time: progress within the file
                    self.progress("file", int(ctx.done), int(ctx.total) or 1, ctx.position())
                yield section
        finally:
            os.close(fd)

    def _chunk_config(self, file_type: str) -> Any:
        chunking = self.config.indexing.chunking
        return getattr(chunking, file_type, chunking.text)

    def _rows(self, job: _Job, section: Section) -> Iterator[tuple[dict[str, Any], Any]]:
        """Chunk rows (without vectors) and the model input of each."""
        from kbterm.models.inputs import Video

        rec = job.record
        base = {
            "file_id": rec.file_id, "generation": rec.generation, "path": rec.path,
            "file_type": rec.file_type, "title": section.title, "page": section.page,
            "line_start": None, "line_end": None, "start_s": section.start_s,
            "end_s": section.end_s, "preview": "", "model": self.model_id,
            "dim": self.embedder.dimension,
        }
        if section.kind == "text":
            chunk_cfg = self._chunk_config(rec.file_type)
            for chunk in self.chunker.split(section.text, chunk_cfg.size, chunk_cfg.overlap,
                                            section.line_start):
                row = dict(base, modality="text", text=chunk.text, line_start=chunk.line_start,
                           line_end=chunk.line_end, chunk_key=_key("text", chunk.text))
                yield row, chunk.text
        elif section.kind == "image" and section.image is not None:
            key = "image:" + (section.fingerprint or _key("image", repr(section.image.size)))
            title = section.title or Path(rec.path).name
            yield dict(base, modality="image", text="", title=title, chunk_key=key), section.image
        elif section.kind == "video" and section.frames:
            key = "video:" + (section.fingerprint or
                              _key("video", f"{rec.content_hash}:{section.start_s}"))
            preview = self._save_keyframe(rec, section)
            title = section.title or Path(rec.path).name
            yield (dict(base, modality="video", text="", title=title, chunk_key=key,
                        preview=preview),
                   Video(list(section.frames), fps=self.embedder.limits.fps))

    def _save_keyframe(self, rec: FileRecord, section: Section) -> str:
        if section.keyframe is None:
            return ""
        folder = self.store.keyframes / rec.content_hash[:2]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{rec.content_hash}-{int((section.start_s or 0) * 1000):09d}.jpg"
        if not path.exists():
            image = section.keyframe
            image.thumbnail((960, 960))
            tmp = path.with_suffix(".tmp")
            image.save(tmp, "JPEG", quality=85)
            os.replace(tmp, path)
        return str(path)

    def _embed(self, queue: list[tuple[_InFlight, dict[str, Any], Any]], summary: Summary) -> None:
        """Embed the queued inputs; an input that fails fails its file, not the batch.

        Content seen before is not embedded again: an input whose chunk key (its text's or
        its pixels' fingerprint) some row of the index holds, or that this run embedded
        lately, takes that vector, and identical inputs within the queue are embedded once
        (2,000 identical PDF pages cost one page)."""
        live = [q for q in queue if not q[0].error]
        if not live:
            return
        keys = {row["chunk_key"] for _i, row, _m in live if row.get("chunk_key")}
        known = {k: self._recent[k] for k in keys if k in self._recent}
        if len(known) < len(keys):
            known.update(self.store.vectors_for_keys(sorted(keys - known.keys())))
        firsts: dict[str, tuple[_InFlight, dict[str, Any], Any]] = {}
        copies: list[tuple[_InFlight, dict[str, Any], Any]] = []
        fresh = []
        for entry in live:
            key = entry[1].get("chunk_key")
            if key and key in known:
                entry[1]["vector"] = known[key]
                entry[0].waiting -= 1
                summary.reused += 1
            elif key and key in firsts:
                copies.append(entry)
            else:
                if key:
                    firsts[key] = entry
                fresh.append(entry)
        self._embed_fresh(fresh, summary)
        for item, row, _m in copies:
            first = firsts[row["chunk_key"]]
            if item.error or first[1].get("vector") is None:
                item.error = item.error or first[0].error or "cannot embed"
                continue
            row["vector"] = first[1]["vector"]
            item.waiting -= 1
            summary.reused += 1
        for key, (_i, row, _m) in firsts.items():
            if row.get("vector") is not None:
                self._recent[key] = row["vector"]
                self._recent.move_to_end(key)
        while len(self._recent) > RECENT_VECTORS:
            self._recent.popitem(last=False)
        for item, _r, _m in live:
            if item.error:
                item.waiting = 0

    def _embed_fresh(self, live: list[tuple[_InFlight, dict[str, Any], Any]],
                     summary: Summary) -> None:
        if not live:
            return
        try:
            vectors = self.embedder.embed([m for _i, _r, m in live])
            pairs = list(zip(live, vectors))
        except Exception as exc:  # noqa: BLE001 - find the input that fails, fail its file
            if _fatal(exc):
                raise
            pairs = []
            for entry in live:
                if entry[0].error:
                    continue
                try:
                    pairs.append((entry, self.embedder.embed([entry[2]])[0]))
                except Exception as exc:  # noqa: BLE001
                    if _fatal(exc):
                        raise
                    entry[0].error = f"cannot embed {entry[1]['modality']}: {describe(exc)}"
        for (item, row, _m), vec in pairs:
            if item.error:
                continue
            row["vector"] = vec
            item.waiting -= 1
            summary.embedded += 1

    # ------------------------------------------------------------------ writing

    def _ensure_chunks_table(self) -> None:
        """Create the chunks table (and meta.json) the first time something is embedded."""
        if self.store.chunks_table is not None:
            return
        dim = self.embedder.dimension
        pixels = self.default_pixels()
        self.store.create_chunks_table(dim)
        self.store.write_meta(IndexMeta(self.model_id, dim, self.dimension_setting,
                                        picture_pixels=pixels))

    def _finish_record(self, item: _InFlight) -> FileRecord:
        rec = item.job.record
        n = item.written + len(item.rows)
        text_rows = item.job.previous.chunks if item.job.pictures else 0
        rec.chunks = text_rows + n
        rec.indexed_at = time.time()
        if rec.chunks == 0 and not (rec.pictures and not item.job.pictures):
            rec.status, rec.reason = STATUS_SKIPPED, "no text or pictures found in the file"
        else:
            rec.status = STATUS_INDEXED
            earlier = rec.reason.split("; ") if item.job.pictures and rec.reason else []
            rec.reason = "; ".join(dict.fromkeys(earlier + item.warnings))[:2000]
        return rec

    def _commit(self, ready: list[_InFlight], summary: Summary) -> None:
        pictures = [i for i in ready if i.job.pictures]
        if pictures:  # the rest of their pictures, then the files are done, in two commits
            self.store.add_pictures([r for i in pictures for r in self._with_ids(i)])
            records = []
            for item in pictures:
                item.written += len(item.rows)
                item.rows = []
                records.append(self._finish_record(item))
            self.store.finish_pictures(records)
            self._count(pictures, summary)
        staged = [i for i in ready if i.staged and not i.job.pictures]
        plain = [i for i in ready if not i.staged]
        if plain:
            records = [self._finish_record(i) for i in plain]
            rows = [r for i in plain for r in self._with_ids(i)]
            self.store.replace(records, rows)
            self._count(plain, summary)
        for item in staged:
            self._drain_staged(item, final=True)
            rec = self._finish_record(item)
            self.store.finish_staged(rec)
            self._count([item], summary)

    def _count(self, items: list[_InFlight], summary: Summary) -> None:
        for i in items:
            rec = i.job.record
            summary.chunks_written += i.written if i.job.pictures else rec.chunks
            if rec.pictures and not i.job.pictures:
                continue  # counted once its pictures are in
            if rec.status == STATUS_SKIPPED:
                summary.skipped += 1
            else:
                summary.indexed += 1
            summary.warnings.extend(f"{rec.path}: {w}" for w in i.warnings)

    def _with_ids(self, item: _InFlight, rows: list[dict[str, Any]] | None = None
                  ) -> list[dict[str, Any]]:
        """``rows`` (default: all the item holds, which follow those already written) with
        their ids: file, generation, position in the file."""
        rec = item.job.record
        rows = item.rows if rows is None else rows
        mark = "p" if item.job.pictures else ""  # (a file's pictures are numbered apart)
        for n, row in enumerate(rows, start=item.written):
            row["id"] = f"{rec.file_id}:{rec.generation}:{mark}{n}"
        return rows

    def _stage(self, item: _InFlight) -> None:
        """A very large file: hide its new generation, then write it in several commits."""
        rec = item.job.record
        old = item.job.previous
        if old is not None and old.staging:
            # Rows an interrupted run staged: their vectors are in this job's reuse map; once
            # the new generation is the staged one they must not show.
            self.store.drop_staged(replace(old))
        placeholder = replace(old) if old is not None and old.file_id == rec.file_id else \
            replace(rec, size=-1, mtime_ns=-1, status="indexing", generation="")
        placeholder.staging = rec.generation
        self.store.upsert_files([placeholder])
        rec.staging = rec.generation
        item.staged = True
        self._drain_staged(item)

    def _drain_staged(self, item: _InFlight, final: bool = False) -> None:
        """Append the leading rows of a staged file that have their vectors."""
        done = 0
        for row in item.rows:
            if row.get("vector") is None:
                break
            done += 1
        if not final and done < (1 if item.job.pictures else COMMIT_ROWS):
            return
        head = item.rows[:done]
        if head:
            write = self.store.add_pictures if item.job.pictures else self.store.append_chunks
            write(self._with_ids(item, head))
            item.written += done
            item.rows = item.rows[done:]

    def _fail(self, item: _InFlight, summary: Summary) -> None:
        rec = item.job.record
        if item.job.pictures and item.job.previous.chunks:
            # Its text stays searchable; the pictures that could be embedded stay too.
            item.rows = [r for r in item.rows if r.get("vector") is not None]
            item.warnings.append(f"pictures not all indexed: {item.error}")
            item.error = ""
            self._commit([item], summary)
            summary.warnings.append(f"{rec.path}: pictures not all indexed")
            return
        if item.staged and not item.job.pictures:
            self.store.drop_staged(rec)
        old = item.job.previous
        record = FileRecord(
            file_id=rec.file_id, path=rec.path, file_type=rec.file_type, size=rec.size,
            mtime_ns=rec.mtime_ns, content_hash=rec.content_hash, status=STATUS_FAILED,
            reason=item.error, indexed_at=time.time(), generation=rec.generation,
        )
        # The file's old chunks go with the failed version (replace with no rows).
        if old is not None:
            self.store.replace([record], [])
        else:
            self.store.upsert_files([record])
        summary.failed += 1
        summary.failures.append((rec.path, item.error))

    def _keyframe_gc(self) -> None:
        """Delete keyframes of videos no longer in the index."""
        folder = self.store.keyframes
        if not folder.is_dir():
            return
        hashes = {r.content_hash for r in self.store.ledger().values()
                  if r.file_type == "video" and r.status == STATUS_INDEXED}
        for sub in folder.iterdir():
            for image in sub.glob("*.jpg"):
                if image.name.split("-", 1)[0] not in hashes:
                    image.unlink(missing_ok=True)
