"""The index on disk: a LanceDB database with a ``chunks`` table and a ``files`` ledger.

Layout of the data folder::

    index/             LanceDB database: chunks.lance, files.lance
    index/meta.json    which embedding model and dimension built the vectors
    keyframes/         one JPEG per video segment, for previews
    writer.lock        held by the one process that writes (see kbterm.lock)

**What a reader may see.**  Every chunk row carries the ``file_id`` of its file and the
``generation`` it was written in.  A chunk is *live* when its file is in the ledger and its
generation is not the file's ``staging`` generation.  Ordinary updates replace a batch of files'
chunks in one LanceDB commit (``merge_insert`` that inserts the new rows and deletes the old ones),
so a reader never sees a file half-indexed or doubled.  A file too large for one commit is
*staged*: its ledger row names the new generation as ``staging`` first (hiding those rows), the
rows are appended in several commits, then one commit deletes the old rows and the ledger clears
``staging``.  A crash at any point leaves rows that :meth:`Store.recover` removes on the next run.

**Text first, pictures after.**  A PDF, photo or video is indexed in two steps: its text rows
are committed first, under a ledger row that says ``pictures = "pending"``; its pictures (page
images, the photo, video segments) are appended to the same generation as they are embedded
(:meth:`Store.add_pictures`, live at once, idempotent by row id), and :meth:`Store.finish_pictures`
ends the file.  The picture rows of the file's previous version stay in the table under
their old generation, named in the ledger's ``retired``: hidden from readers, kept by
:meth:`Store.recover`, so that pages that did not change reuse their vectors, then deleted.

This module opens no connection at import time and never imports torch.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from kbterm.errors import KbtermError
from kbterm.paths import make_private_dir

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

CHUNKS = "chunks"
FILES = "files"
# Deletes name at most this many ids in one SQL filter.
IN_LIST_MAX = 500
# Compact and clean up once a table has this many versions (checked after a run).
OPTIMIZE_AFTER_VERSIONS = 16

STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"


class IndexUnusable(KbtermError):
    """The index folder cannot be used (not writable, damaged)."""


class IndexMismatch(KbtermError):
    """The index was built with another embedding model or dimension."""


class IndexDamaged(IndexUnusable):
    """A table of the index cannot be read: a file cut short, missing or garbled."""


class DiskFull(KbtermError):
    """The disk holding the data folder has no space left."""


KEYWORD_INDEX = "keyword"
KEYWORDS_BATCH = 4096  # rows per commit when the keyword text is computed again
TABLE_NAMES = {CHUNKS: "chunks table", FILES: "files ledger", KEYWORD_INDEX: "keyword index"}


def os_errno(exc: BaseException | None) -> int | None:
    """The errno behind ``exc`` or what led to it (LanceDB says it as ``(os error 28)``)."""
    for _ in range(8):
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno:
            return exc.errno
        found = re.search(r"\(os error (\d+)\)", str(exc))
        if found:
            return int(found.group(1))
        exc = exc.__cause__ or exc.__context__
    return None


def is_disk_full(exc: BaseException) -> bool:
    return os_errno(exc) in (errno.ENOSPC, errno.EDQUOT)


def is_not_writable(exc: BaseException) -> bool:
    return os_errno(exc) in (errno.EROFS, errno.EACCES, errno.EPERM)


def disk_full(data_dir: Path) -> DiskFull:
    return DiskFull(f"the disk holding {data_dir} is full: what was being written was not "
                    "saved (everything saved before is kept); free space and run kbterm index "
                    "again")


def lance_reason(exc: BaseException) -> str:
    """A LanceDB error as a short phrase: no Rust source location, no error-class noise."""
    if type(exc).__name__ in ("RustPanic", "PanicException"):
        return "its files cannot be decoded"
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = re.sub(r"^lance error: ", "", text)
    text = re.sub(r"LanceError\(\w+\): ", "", text)
    text = re.sub(r",\s*/\S+\.rs:\d+:\d+.*$", "", text)
    low = text.lower()
    if "not found" in low:
        text = "a file of it is missing: " + re.sub(r"^not found:\s*", "", text, flags=re.I)
    elif any(s in low for s in ("fill whole buffer", "invalid range", "out of range",
                                "unexpected eof", "early eof")):
        text = "a file of it is cut short"
    return text[:200] or type(exc).__name__


LANCE_MAGIC = b"LANC"  # the last bytes of every Lance data file and manifest


def manifest_version(name: str) -> int:
    """The table version a ``_versions/*.manifest`` file holds (either naming scheme)."""
    number = int(name.split(".", 1)[0])
    # The newer scheme names version v as u64::MAX - v (20 digits), so listings sort newest
    # first.
    return (2**64 - 1 - number) if len(name.split(".", 1)[0]) == 20 else number


def manifests(folder: Path) -> list[Path]:
    """The manifest files of the table in ``folder``, newest version first."""
    try:
        names = [e.name for e in os.scandir(folder / "_versions")
                 if e.name.endswith(".manifest") and e.name.split(".", 1)[0].isdigit()]
    except OSError:
        return []
    return [folder / "_versions" / n for n in sorted(names, key=manifest_version, reverse=True)]


def manifest_problem(folder: Path) -> str:
    """Why the latest version of the table in ``folder`` cannot be opened ('' when it looks
    whole): a manifest cut short has lost its trailing magic bytes."""
    found = manifests(folder)
    if not found:
        return ""
    try:
        with open(found[0], "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - len(LANCE_MAGIC)))
            tail = fh.read()
    except FileNotFoundError:
        return ""  # replaced meanwhile (a rebuild): the open that follows decides
    except OSError as exc:
        return f"cannot read {found[0].name}: {exc.strerror or exc}"
    if size < 16 or tail != LANCE_MAGIC:
        return f"its version file {found[0].name} is cut short or garbled"
    return ""


def sql_str(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(sql_str(v) for v in values)})"


def _groups(values: Sequence[Any], size: int = IN_LIST_MAX) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _writing(method: Any) -> Any:
    """A write that meets a full disk (or a folder it may not write) raises the one-line
    :class:`DiskFull` (:class:`IndexUnusable`): a KbtermError, so the indexer stops the run
    instead of blaming the file it was reading when a commit failed."""
    import functools

    @functools.wraps(method)
    def write(self: "Store", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except KbtermError:
            raise
        except Exception as exc:
            if is_disk_full(exc) or is_not_writable(exc):
                raise self.translate(exc) from None
            raise

    return write


@dataclass
class FileRecord:
    """One row of the ``files`` ledger: what kbterm knows of a file on disk."""

    file_id: str
    path: str
    file_type: str
    size: int = 0
    mtime_ns: int = 0
    content_hash: str = ""
    status: str = STATUS_INDEXED
    reason: str = ""
    chunks: int = 0
    indexed_at: float = 0.0
    generation: str = ""
    staging: str = ""  # a generation whose rows are still being written (hidden from readers)
    settings: str = ""  # the chunking/vision settings its chunks were made with
    pictures: str = ""  # "pending": the text is in, the pictures are still to be embedded
    retired: str = ""  # generations (space-separated) of earlier picture rows, hidden, kept

    @property
    def retired_generations(self) -> list[str]:
        return self.retired.split()

    @property
    def hidden_generations(self) -> set[str]:
        """Generations of this file's rows that no reader may see."""
        return ({self.staging} if self.staging else set()) | set(self.retired.split())


def files_schema() -> "pa.Schema":
    import pyarrow as pa

    return pa.schema([
        pa.field("file_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("file_type", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("content_hash", pa.string()),
        pa.field("status", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("chunks", pa.int32()),
        pa.field("indexed_at", pa.float64()),
        pa.field("generation", pa.string()),
        pa.field("staging", pa.string()),
        pa.field("settings", pa.string()),
        pa.field("pictures", pa.string()),
        pa.field("retired", pa.string()),
    ])


# Ledger columns added after kbterm 0.1 (an older ledger gets them, null, on the next run).
LEDGER_ADDED = ("pictures", "retired")


def chunks_schema(dim: int) -> "pa.Schema":
    import pyarrow as pa

    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("file_id", pa.string(), nullable=False),
        pa.field("generation", pa.string(), nullable=False),
        pa.field("path", pa.string()),
        pa.field("file_type", pa.string()),
        pa.field("modality", pa.string()),  # text | image | video
        pa.field("text", pa.string()),
        pa.field("keywords", pa.string()),  # what the keyword index reads (kbterm.keywords)
        pa.field("title", pa.string()),
        pa.field("page", pa.int32()),  # 1-based PDF page
        pa.field("line_start", pa.int32()),
        pa.field("line_end", pa.int32()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("preview", pa.string()),  # keyframe JPEG of a video segment
        pa.field("chunk_key", pa.string()),  # digest of what was embedded (vector reuse)
        pa.field("model", pa.string()),
        pa.field("dim", pa.int32()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ])


def with_keywords(rows: Sequence[dict[str, Any]], schema: "pa.Schema") -> list[dict[str, Any]]:
    """``rows`` with their ``keywords`` (from their text) when the table has that column."""
    if "keywords" not in schema.names:
        return list(rows)
    from kbterm.keywords import keyword_text

    return [row if row.get("keywords") is not None else
            {**row, "keywords": keyword_text(row.get("text") or "")} for row in rows]


CHUNK_COLUMNS = [
    "id", "file_id", "generation", "path", "file_type", "modality", "text", "title", "page",
    "line_start", "line_end", "start_s", "end_s", "preview", "chunk_key", "model", "dim",
]


@dataclass
class IndexMeta:
    """Which model built the vectors (``index/meta.json``)."""

    embedding_model: str
    dimension: int  # the size of the stored vectors
    dimension_setting: int = 0  # models.embedder.dimension when built (0 = full size)
    created_at: float = field(default_factory=time.time)
    last_run_at: float = 0.0
    keyword_version: int = 0  # kbterm.keywords.KEYWORDS_VERSION of the keyword index
    # The default pixels of a page or photo chosen for the device when the index was made
    # (kbterm.resolution; 0: an index made before the setting: the contract's maximum).
    picture_pixels: int = 0


class Store:
    """The LanceDB index in ``data_dir``; tables are created on the first write."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "index"
        self.keyframes = self.data_dir / "keyframes"
        self._db: Any = None
        self._tables: dict[str, Any] = {}  # name -> open table (only tables that exist)

    # ------------------------------------------------------------------ opening

    @property
    def exists(self) -> bool:
        return (self.path / f"{FILES}.lance").is_dir()

    def ensure_writable(self) -> None:
        """Create the data folder; raise a one-line error when it cannot be written."""
        try:
            make_private_dir(self.data_dir)
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(self.data_dir) from None
            raise IndexUnusable(
                f"cannot write the index in {self.data_dir}: {exc.strerror or exc}; "
                "set data_dir in the config or KBTERM_DATA_DIR to a writable folder"
            ) from None

    def _connect(self) -> Any:
        if self._db is None:
            # LanceDB's own log (its Rust side, on stderr) is for its developers: a damaged
            # file would add its warnings to kbterm's one-line error.  LANCEDB_LOG=warn shows it.
            os.environ.setdefault("LANCEDB_LOG", "error")
            from kbterm.lancedb_import import import_lancedb

            self._db = import_lancedb().connect(str(self.path))
        return self._db

    def reopen(self) -> None:
        """Forget the open tables: they were replaced (``--rebuild``, ``--repair``), compacted
        or cleaned up under this process, and are opened again at their latest version."""
        self._db = None
        self._tables.clear()

    def _table(self, name: str) -> Any:
        problem = manifest_problem(self.path / f"{name}.lance")
        if problem:  # checked first: LanceDB panics on a cut manifest, noisily
            raise self.damaged(name, problem)
        db = self._connect()
        try:
            return db.open_table(name)
        except (ValueError, FileNotFoundError):
            return None
        except Exception as exc:  # noqa: BLE001 - LanceDB's errors (and panics) vary
            raise self.translate(exc, name) from None

    def _latest(self, name: str) -> Any:
        """An open table at its latest version (another process may have written), or None."""
        table = self._tables.get(name)
        if table is not None:
            try:
                table.checkout_latest()
                return table
            except Exception:  # noqa: BLE001 - replaced or removed under us: open it again
                self._tables.pop(name, None)
        table = self._tables[name] = self._table(name)
        return table

    # ------------------------------------------------------------------ errors

    def damaged(self, name: str, reason: str) -> IndexDamaged:
        return IndexDamaged(f"the index in {self.data_dir} is damaged: its "
                            f"{TABLE_NAMES.get(name, name)} cannot be read ({reason}); "
                            "run: kbterm index --repair")

    def translate(self, exc: BaseException, name: str = "") -> KbtermError:
        """The one-line error for a LanceDB failure on table ``name``."""
        if isinstance(exc, KbtermError):
            return exc
        if is_disk_full(exc):
            return disk_full(self.data_dir)
        if is_not_writable(exc):
            return IndexUnusable(f"cannot use the index in {self.data_dir}: "
                                 f"{os.strerror(os_errno(exc) or 0)}; check its permissions")
        return self.damaged(name or CHUNKS, lance_reason(exc))

    def _read(self, name: str, read: Any) -> Any:
        """``read()`` (which opens what it reads through :attr:`chunks_table` or
        :attr:`files_table`), once more on fresh tables if it fails: a table replaced,
        compacted or cleaned up under this process reads again at its latest version.  A
        second failure is the one-line error (:meth:`translate`)."""
        try:
            return read()
        except KbtermError:
            raise
        except Exception as exc:  # noqa: BLE001 - LanceDB's errors vary
            if is_disk_full(exc) or is_not_writable(exc):
                raise self.translate(exc, name) from None
            log.debug("reading the %s failed (%s); opening it again", name, exc)
        self.reopen()
        try:
            return read()
        except KbtermError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.translate(exc, name) from None

    @property
    def files_table(self) -> Any:
        return self._latest(FILES)

    @property
    def chunks_table(self) -> Any:
        return self._latest(CHUNKS)

    @_writing
    def create_files_table(self) -> None:
        """Create the ledger (empty) if it is missing."""
        table = self._table(FILES)
        if table is None:
            self._connect().create_table(FILES, schema=files_schema())
        else:
            names = set(table.schema.names)
            missing = [f for f in files_schema() if f.name in LEDGER_ADDED and f.name not in names]
            if missing:
                table.add_columns(missing)
        self._tables.pop(FILES, None)

    @_writing
    def create_chunks_table(self, dim: int) -> None:
        """Create the chunks table for vectors of ``dim`` values if it is missing."""
        if self._table(CHUNKS) is None:
            self._connect().create_table(CHUNKS, schema=chunks_schema(dim))
        self._tables.pop(CHUNKS, None)

    def drop(self) -> None:
        """Delete the whole index (``kbterm index --rebuild``)."""
        self._db = None
        self._tables.clear()
        for folder in (self.path, self.keyframes):
            if folder.exists():
                shutil.rmtree(folder)

    # ------------------------------------------------------------------ meta

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def read_meta(self) -> IndexMeta | None:
        try:
            raw = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise IndexDamaged(f"{self.meta_path} is damaged ({exc}); "
                               "run: kbterm index --repair") from None
        known = {f.name for f in fields(IndexMeta)}
        try:
            return IndexMeta(**{k: v for k, v in raw.items() if k in known})
        except TypeError:  # valid JSON, but not what kbterm wrote
            raise IndexDamaged(f"{self.meta_path} is damaged (fields missing); "
                               "run: kbterm index --repair") from None

    @_writing
    def write_meta(self, meta: IndexMeta) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(meta), indent=2), encoding="utf-8")
        os.replace(tmp, self.meta_path)

    def check_model(self, model: str, dimension_setting: int) -> IndexMeta | None:
        """Raise :class:`IndexMismatch` when the index was built with another model/dimension."""
        meta = self.read_meta()
        if meta is None:
            return None
        same_dimension = (dimension_setting == meta.dimension_setting
                          or dimension_setting == meta.dimension)
        if meta.embedding_model != model or not same_dimension:
            had = f"{meta.embedding_model} (dimension {meta.dimension})"
            want = model + (f" (dimension {dimension_setting})" if dimension_setting
                            else " (its full dimension)")
            raise IndexMismatch(
                f"the index was built with {had} but the config names {want}; "
                "re-embed everything with: kbterm index --rebuild"
            )
        return meta

    # ------------------------------------------------------------------ reading

    def ledger(self) -> dict[str, FileRecord]:
        """Every ledger row, by path."""

        def read() -> list[dict[str, Any]]:
            table = self.files_table
            return [] if table is None else table.to_arrow().to_pylist()

        data = self._read(FILES, read)
        return {row["path"]: FileRecord(**_nonnull(row)) for row in data}

    def live_chunks(
        self,
        columns: Sequence[str] | None = None,
        where: str | None = None,
        ledger: dict[str, FileRecord] | None = None,
    ) -> list[dict[str, Any]]:
        """Chunk rows a reader may see (see the module docstring), as dicts."""
        if self.chunks_table is None:
            return []
        ledger = self.ledger() if ledger is None else ledger
        hidden = {(r.file_id, g) for r in ledger.values() for g in r.hidden_generations}
        known = {r.file_id for r in ledger.values()}
        cols = list(columns or CHUNK_COLUMNS)
        for needed in ("file_id", "generation"):
            if needed not in cols:
                cols.append(needed)

        def read() -> list[dict[str, Any]]:
            table = self.chunks_table
            if table is None:
                return []
            query = table.search().select(cols)
            if where:
                query = query.where(where)
            return query.limit(None).to_arrow().to_pylist()

        rows = self._read(CHUNKS, read)
        return [
            r for r in rows
            if r["file_id"] in known and (r["file_id"], r["generation"]) not in hidden
        ]

    def chunks_by_id(self, ids: Sequence[str], columns: Sequence[str]) -> list[Any]:
        """The chunk rows with these ids (any generation; readers apply the live rule), as
        Arrow tables of at most :data:`IN_LIST_MAX` rows."""

        def read() -> list[Any]:
            table = self.chunks_table
            if table is None:
                return []
            return [table.search().where(sql_in("id", group)).select(list(columns))
                    .limit(None).to_arrow() for group in _groups(list(ids))]

        return self._read(CHUNKS, read)

    def chunk_vectors(self, file_ids: Sequence[str]) -> dict[str, Any]:
        """chunk_key -> vector of the given files' rows (for reuse when a file changes)."""
        return self._vectors_where("file_id", file_ids)

    def vectors_for_keys(self, keys: Sequence[str]) -> dict[str, Any]:
        """chunk_key -> vector of any row holding one of ``keys`` (the same content, in any
        file, was embedded before: its vector serves again)."""
        return self._vectors_where("chunk_key", keys)

    def known_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` some row of the index holds (their vectors would be reused)."""
        if self.chunks_table is None or not keys:
            return set()

        def read() -> list[Any]:
            table = self.chunks_table
            return [table.search().where(sql_in("chunk_key", group)).select(["chunk_key"])
                    .limit(None).to_arrow() for group in _groups(list(keys))]

        return {k for data in self._read(CHUNKS, read)
                for k in data.column("chunk_key").to_pylist() if k}

    def _vectors_where(self, column: str, values: Sequence[str]) -> dict[str, Any]:
        if self.chunks_table is None or not values:
            return {}
        import numpy as np

        def read() -> list[Any]:
            table = self.chunks_table
            return [table.search().where(sql_in(column, group))
                    .select(["chunk_key", "vector"]).limit(None).to_arrow()
                    for group in _groups(list(values))]

        out: dict[str, Any] = {}
        for data in self._read(CHUNKS, read):
            if not data.num_rows:
                continue
            column = data.column("vector").combine_chunks()
            vectors = np.asarray(column.flatten()).reshape(len(column), -1)
            for key, vec in zip(data.column("chunk_key").to_pylist(), vectors):
                if key:
                    out[key] = vec
        return out

    # ------------------------------------------------------------------ writing

    @_writing
    def replace(self, records: Sequence[FileRecord], rows: Sequence[dict[str, Any]]) -> None:
        """Make ``records`` the ledger rows of their files and ``rows`` their chunks.

        Chunks first, in one commit that inserts the new rows and deletes every other row of
        these files; then the ledger in one commit.  Between the two a reader sees the new chunks
        under the old ledger row, which is complete and consistent.
        """
        if not records:
            return
        ids = [r.file_id for r in records]
        chunks = self.chunks_table
        if rows or chunks.count_rows(sql_in("file_id", ids)):
            import pyarrow as pa

            data = pa.Table.from_pylist(with_keywords(rows, chunks.schema), schema=chunks.schema)
            (
                chunks.merge_insert("id")
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(sql_in("file_id", ids) + _keeping(records))
                .execute(data)
            )
        self.upsert_files(records)

    @_writing
    def upsert_files(self, records: Sequence[FileRecord], remove_ids: Sequence[str] = ()) -> None:
        """Insert or update ledger rows (by file_id) and delete ``remove_ids``, in one commit."""
        import pyarrow as pa

        if not records and not remove_ids:
            return
        table = self.files_table
        data = pa.Table.from_pylist([asdict(r) for r in records], schema=files_schema())
        builder = (table.merge_insert("file_id")
                   .when_matched_update_all().when_not_matched_insert_all())
        if remove_ids:
            builder = builder.when_not_matched_by_source_delete(sql_in("file_id", remove_ids))
        builder.execute(data)

    @_writing
    def append_chunks(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows (of a staged generation: hidden until :meth:`finish_staged`)."""
        import pyarrow as pa

        if rows:
            table = self.chunks_table
            table.add(pa.Table.from_pylist(with_keywords(rows, table.schema),
                                           schema=table.schema))

    @_writing
    def finish_staged(self, record: FileRecord) -> None:
        """Make a staged generation the file's content: delete its other rows, clear staging."""
        self.chunks_table.delete(
            f"file_id = {sql_str(record.file_id)} AND generation != {sql_str(record.staging)}"
            + _keeping([record])
        )
        record.generation, record.staging = record.staging, ""
        self.upsert_files([record])

    @_writing
    def add_pictures(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append picture rows of files whose text is in (live at once).  Rows whose id is in
        the table already (a run that resumes) are not added again."""
        import pyarrow as pa

        if rows:
            table = self.chunks_table
            data = pa.Table.from_pylist(with_keywords(rows, table.schema), schema=table.schema)
            table.merge_insert("id").when_not_matched_insert_all().execute(data)

    @_writing
    def finish_pictures(self, records: Sequence[FileRecord]) -> None:
        """Files whose pictures are all in: their retired rows go, then the ledger says so."""
        retired = [r for r in records if r.retired]
        if retired:
            self.chunks_table.delete(" OR ".join(
                f"(file_id = {sql_str(r.file_id)} AND {sql_in('generation', r.retired_generations)})"
                for r in retired))
        for r in records:
            r.pictures, r.retired = "", ""
        self.upsert_files(records)

    @_writing
    def drop_staged(self, record: FileRecord) -> None:
        """Forget a staged generation (the file failed or the run stopped)."""
        if record.staging:
            self.chunks_table.delete(
                f"file_id = {sql_str(record.file_id)} AND generation = {sql_str(record.staging)}"
            )
            record.staging = ""

    @_writing
    def repoint(self, moves: Sequence[tuple[FileRecord, str]]) -> None:
        """Renamed files: the same chunks under a new path (no embedding)."""
        if not moves:
            return
        chunks = self.chunks_table
        for record, new_path in moves:
            chunks.update(where=f"file_id = {sql_str(record.file_id)}", values={"path": new_path})
            record.path = new_path
        self.upsert_files([r for r, _ in moves])

    @_writing
    def remove(self, records: Sequence[FileRecord]) -> None:
        """Files gone from disk: their chunks, then their ledger rows."""
        ids = [r.file_id for r in records]
        if not ids:
            return
        chunks = self.chunks_table
        if chunks is not None:
            for group in _groups(ids):
                chunks.delete(sql_in("file_id", group))
        for group in _groups(ids):
            self.upsert_files([], remove_ids=list(group))

    @_writing
    def recover(self) -> int:
        """After a killed run: remove the chunk rows no reader may see and no run can resume
        from (rows of files the ledger does not know, rows of a generation that is neither a
        file's own nor its staged one); returns how many.  A staged generation stays: its
        finished rows are reused when the file is indexed again (the next run resumes)."""
        chunks, ledger = self.chunks_table, self.ledger()
        if chunks is None:
            return 0
        wanted = {r.file_id: ({r.generation} | r.hidden_generations) - {""}
                  for r in ledger.values()}
        present = chunks.search().select(["file_id", "generation"]).limit(None).to_arrow()
        stale: dict[str, set[str]] = {}
        for file_id, generation in zip(present.column("file_id").to_pylist(),
                                       present.column("generation").to_pylist()):
            if generation not in wanted.get(file_id, ()):
                stale.setdefault(file_id, set()).add(generation)
        before = chunks.count_rows()
        orphans = sorted(f for f in stale if f not in wanted)
        for group in _groups(orphans):
            chunks.delete(sql_in("file_id", group))
        for file_id, generations in stale.items():
            if file_id in wanted:
                chunks.delete(f"file_id = {sql_str(file_id)} AND "
                              + sql_in("generation", sorted(generations)))
        return before - chunks.count_rows()

    def count_staged(self, record: FileRecord) -> int:
        """Rows of ``record``'s staged generation (an interrupted run's finished part)."""
        table = self.chunks_table
        if table is None or not record.staging:
            return 0
        return table.count_rows(f"file_id = {sql_str(record.file_id)} AND "
                                f"generation = {sql_str(record.staging)}")

    # ------------------------------------------------------------------ keyword index

    def keyword_column(self) -> str | None:
        """The column the full-text (BM25) index is on: ``keywords`` (kbterm.keywords), or
        ``text`` in an index an older kbterm wrote and no writer upgraded yet; None: none."""
        table = self.chunks_table
        if table is None:
            return None
        try:
            columns = {c for ix in table.list_indices() if ix.index_type == "FTS"
                       for c in ix.columns}
        except Exception:  # noqa: BLE001 - an index listing problem: treat as missing
            return None
        return "keywords" if "keywords" in columns else "text" if "text" in columns else None

    def has_fts_index(self) -> bool:
        """Whether the chunks table has its full-text index."""
        return self.keyword_column() is not None

    def keywords_current(self) -> bool:
        """Whether the keyword index is this kbterm's (column, recipe and index)."""
        from kbterm.keywords import KEYWORDS_VERSION

        meta = self.read_meta()
        return (meta is not None and meta.keyword_version == KEYWORDS_VERSION
                and self.keyword_column() == "keywords")

    @_writing
    def ensure_fts_index(self, progress: Callable[[int, int], None] | None = None) -> bool:
        """Create the full-text (BM25) index over the chunks' keyword text if it is missing or
        was built with another recipe (then the keywords are computed again first, with
        ``progress(done, total)``); whether the index exists now (not while the table is empty).

        Rows added later are searched before they are indexed and folded into the index by
        :meth:`optimize`, so the index is created once, by the writer."""
        table = self.chunks_table
        if table is None or table.count_rows() == 0:
            return False
        if self.keywords_current():
            return True
        self.upgrade_keywords(progress)
        return True

    @_writing
    def upgrade_keywords(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Compute every row's keyword text again, index it, and record the recipe.

        Idempotent and safe to interrupt: the old index (on ``text`` or on old keywords)
        answers until the new one is built, and the recipe is recorded last, so a run cut
        short is simply done again by the next writer."""
        import pyarrow as pa
        from lancedb.index import FTS

        from kbterm.keywords import FTS_SETTINGS, KEYWORDS_VERSION, keyword_text

        log.info("building the keyword index (kbterm.keywords recipe %d)", KEYWORDS_VERSION)
        table = self.chunks_table
        if "keywords" not in table.schema.names:
            table.add_columns(pa.field("keywords", pa.string()))
            self._tables.pop(CHUNKS, None)
            table = self.chunks_table
        total, done = table.count_rows(), 0
        if progress is not None:
            progress(0, total)
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            if batch:
                data = pa.Table.from_pylist(batch, schema=pa.schema(
                    [pa.field("id", pa.string(), nullable=False),
                     pa.field("keywords", pa.string())]))
                table.merge_insert("id").when_matched_update_all().execute(data)
                batch.clear()

        for rows in table.search().select(["id", "text", "keywords"]).to_batches(
                KEYWORDS_BATCH):
            for row in rows.to_pylist():
                words = keyword_text(row["text"] or "")
                if words != row["keywords"]:
                    batch.append({"id": row["id"], "keywords": words})
            if len(batch) >= KEYWORDS_BATCH:
                flush()
            done += rows.num_rows
            if progress is not None:
                progress(min(done, total), total)
        flush()
        table.create_index("keywords", config=FTS(**FTS_SETTINGS), replace=True)
        for ix in table.list_indices():
            if ix.index_type == "FTS" and "text" in ix.columns:
                table.drop_index(ix.name)
        meta = self.read_meta()
        if meta is not None:
            meta.keyword_version = KEYWORDS_VERSION
            self.write_meta(meta)
        self._tables.pop(CHUNKS, None)

    def keyword_search(self, text: str, limit: int, column: str | None = None
                       ) -> list[dict[str, Any]]:
        """BM25 matches of ``text`` (``id`` and ``_score``), best first: through the full-text
        index on ``column`` (:meth:`keyword_column`, looked up when not given; of the keyword
        text, which the query is turned into as well), read again on fresh tables if it was
        rebuilt under this process (raises :class:`IndexDamaged` when it cannot be read)."""
        from kbterm.keywords import keyword_text

        def read() -> list[dict[str, Any]]:
            table = self.chunks_table
            nonlocal column
            column = column or self.keyword_column()
            if table is None or column is None:
                return []
            query = keyword_text(text) if column == "keywords" else text
            if not query.strip():
                return []
            return (table.search(query, query_type="fts", fts_columns=column)
                    .select(["id", "_score"]).limit(limit).to_list())

        return self._read(KEYWORD_INDEX, read)

    # ------------------------------------------------------------------ hygiene

    def versions(self) -> dict[str, int]:
        """Table versions kept on disk, per table."""
        out = {}
        for name in (CHUNKS, FILES):
            folder = self.path / f"{name}.lance" / "_versions"
            out[name] = sum(1 for p in folder.iterdir() if p.suffix == ".manifest") \
                if folder.is_dir() else 0
        return out

    @_writing
    def optimize(self, keep_seconds: int, force: bool = False) -> bool:
        """Compact small data files and delete versions older than ``keep_seconds``.

        Runs on a table once :data:`OPTIMIZE_AFTER_VERSIONS` versions were written since its
        last clean-up, or when versions kept back by ``keep_seconds`` last time have aged past
        it (so a burst of updates is cleaned up by the next run after it); always with
        ``force``.  Returns whether it ran on any table.
        """
        import warnings

        state_path = self.path / "hygiene.json"
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        on_disk = self.versions()
        now, ran = time.time(), False
        for name in (CHUNKS, FILES):
            table = self.chunks_table if name == CHUNKS else self.files_table
            if table is None:
                continue
            last = state.get(name, {})
            written = table.version - int(last.get("version", 0))
            aged = on_disk[name] > 2 and now - float(last.get("at", 0)) > keep_seconds
            if not (force or written >= OPTIMIZE_AFTER_VERSIONS
                    or (aged and on_disk[name] > OPTIMIZE_AFTER_VERSIONS // 2)):
                continue
            with warnings.catch_warnings():
                # LanceDB warns that concurrent readers of old versions fail; keep_seconds is
                # that grace period, chosen by the user.
                warnings.simplefilter("ignore", UserWarning)
                table.optimize(cleanup_older_than=timedelta(seconds=keep_seconds))
            state[name] = {"version": table.version, "at": now}
            ran = True
        if ran:
            tmp = state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state), encoding="utf-8")
            os.replace(tmp, state_path)
        return ran

    def disk_bytes(self) -> int:
        total = 0
        for folder in (self.path, self.keyframes):
            for root, _dirs, files in os.walk(folder):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(root, name)).st_size
                    except OSError:
                        pass
        return total


def _keeping(records: Sequence[FileRecord]) -> str:
    """A delete filter's tail that spares the retired picture rows of ``records``."""
    kept = [f"(file_id = {sql_str(r.file_id)} AND {sql_in('generation', r.retired_generations)})"
            for r in records if r.retired]
    return f" AND NOT (modality != 'text' AND ({' OR '.join(kept)}))" if kept else ""


def _nonnull(row: dict[str, Any]) -> dict[str, Any]:
    """Ledger rows with nulls replaced by the dataclass defaults."""
    defaults = {f.name: f.default for f in fields(FileRecord)}
    return {k: (defaults.get(k) if v is None else v) for k, v in row.items() if k in defaults}
