"""A damaged index brought back to a consistent, searchable state (``kbterm index --repair``).

What can be damaged in ``<data>/index`` and what is done about it:

- **A table's latest version file** (``_versions/*.manifest``) cut short or garbled: it is
  deleted and the table opens at the version before (rolled back); with no version left the
  table is lost and starts empty.
- **Data files** (``data/*.lance``) or deletion files cut short, missing or unreadable: every row
  that can still be read, all columns, is kept (the table is read in windows of row offsets; a
  window that fails is narrowed down to the rows that fail), the rest is lost.  The table is
  then written again from the rows kept, in one commit (an overwrite streamed from the old
  version), so a reader sees the damaged version or the repaired one, never half of it.
- **The full-text index**: dropped; the run that follows builds it again.
- **meta.json**: written again from the rows (their model, the table's vector size).

Then the two tables are made to agree, the ledger being what each file holds:

- a file whose chunks all survived is left alone;
- a file that lost chunks keeps those that survived and is marked changed (size and mtime
  unknown, no content hash), so the index run that follows embeds it again, reusing the
  vector of every surviving chunk with the same content: only what was lost is embedded;
- a file whose ledger row was lost but whose chunks survived gets its row back from its chunks
  (path, type, generation, count), marked changed: the run reads the file again and takes all
  its vectors over (nothing is embedded unless the file changed meanwhile).  The ledger is
  rebuilt from the chunks, not from a scan, because the chunks are what is expensive to make;
  failed and skipped files have no chunks and are simply tried again by the run;
- chunk rows no ledger row accounts for, or of a generation that is no longer a file's, go.

Everything here runs under the writer lock, inside :meth:`kbterm.indexer.Indexer.session`.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

from kbterm.errors import KbtermError
from kbterm.store import (
    CHUNKS,
    FILES,
    KEYWORD_INDEX,
    STATUS_INDEXED,
    TABLE_NAMES,
    FileRecord,
    IndexDamaged,
    IndexMeta,
    Store,
    _nonnull,
    files_schema,
    is_disk_full,
    lance_reason,
    manifest_problem,
    manifests,
    os_errno,
    sql_in,
)

log = logging.getLogger(__name__)

WINDOW = 2048  # rows read at once while verifying
NARROW = ["id", "file_id", "generation", "path", "file_type", "model"]


def quick_check(store: Store) -> str:
    """Why the index needs repairing, in one line ('' when nothing is found).

    Cheap enough for every ``kbterm index``: it opens each table's latest version, reads the
    ledger and two short columns of every chunk (which reads the footer of every data file,
    where a file cut short breaks) and probes the full-text index.  Damage inside a data file
    that leaves its footer whole is found by the full check of :func:`repair`."""
    try:
        store.read_meta()
        store.ledger()
        if store.chunks_table is not None:
            store._read(CHUNKS, lambda: store.chunks_table.search()
                        .select(["file_id", "generation"]).limit(None).to_arrow())
            if store.has_fts_index():
                store.keyword_search("kbterm", 1)
    except IndexDamaged as exc:
        return str(exc)
    return ""


@dataclass
class _Salvage:
    """What could be read of one table."""

    problem: str = ""  # why it is damaged ('' when whole)
    rolled_back: int = 0  # damaged latest versions dropped
    lost_table: bool = False  # no readable version left
    total: int = 0  # rows its version holds
    good: list[tuple[int, int]] = field(default_factory=list)  # readable offset ranges
    rows: list[dict[str, Any]] = field(default_factory=list)  # readable rows (some columns)

    @property
    def damaged(self) -> bool:
        return bool(self.problem)

    @property
    def readable(self) -> int:
        return sum(b - a for a, b in self.good)


@dataclass
class RepairReport:
    """What :func:`repair` found and did."""

    damaged: dict[str, str] = field(default_factory=dict)  # table -> what was wrong
    files: int = 0  # ledger rows after the repair
    chunks_kept: int = 0
    chunks_lost: int = 0
    rows_dropped: int = 0  # chunk rows no file accounts for
    files_restored: int = 0  # ledger rows rebuilt from chunks
    files_to_embed: int = 0  # files that lost chunks: embedded again by the next run
    fts_dropped: bool = False
    meta_written: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.damaged or self.rows_dropped or self.files_restored
                    or self.files_to_embed or self.fts_dropped or self.meta_written)

    def line(self) -> str:
        if not self.changed:
            return (f"verified the index: nothing is damaged ({self.files} files, "
                    f"{self.chunks_kept} chunks read back)")
        what = "; ".join(f"{TABLE_NAMES.get(k, k)}: {v}" for k, v in self.damaged.items())
        parts = [f"kept {self.chunks_kept} chunks"]
        if self.chunks_lost:
            parts.append(f"{self.chunks_lost} lost")
        if self.files_restored:
            parts.append(f"{self.files_restored} ledger rows rebuilt from their chunks")
        if self.files_to_embed:
            parts.append(f"{self.files_to_embed} files to embed again")
        if self.rows_dropped:
            parts.append(f"{self.rows_dropped} stray rows removed")
        if self.fts_dropped:
            parts.append("keyword index rebuilt")
        if self.meta_written:
            parts.append("meta.json written again")
        return f"repaired the index ({what or 'its tables disagreed'}): " + ", ".join(parts)


# ---------------------------------------------------------------------- reading what can be read

# Failures that say nothing about the files (the machine, not the data): a read that fails
# so stops the repair instead of counting rows as lost.
ENVIRONMENTAL = {errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM,
                 errno.EACCES, errno.EPERM, errno.EROFS, errno.EINTR, errno.EAGAIN}


def _environmental(exc: BaseException) -> bool:
    return is_disk_full(exc) or os_errno(exc) in ENVIRONMENTAL


def _ok(read: Callable[[int, int], Any], a: int, b: int) -> bool:
    try:
        read(a, b)
        return True
    except KbtermError:
        raise
    except Exception as exc:  # noqa: BLE001 - LanceDB's errors vary; a failure is the answer
        if _environmental(exc):
            raise
        return False


def readable_ranges(read: Callable[[int, int], Any], total: int, window: int = WINDOW,
                    first_error: list[str] | None = None) -> list[tuple[int, int]]:
    """The offset ranges ``[a, b)`` of ``range(total)`` that ``read(a, b)`` reads.

    Windows that read are kept whole; in one that fails, the first row that fails is found by
    halving, then the damaged stretch that starts there is crossed by doubling steps and its end
    found by halving again (damage comes in stretches: a data file holds consecutive rows), so a
    damaged region costs a few dozen reads, not one per row."""
    good: list[tuple[int, int]] = []
    start = 0
    while start < total:
        end = min(start + window, total)
        try:
            read(start, end)
            good.append((start, end))
            start = end
            continue
        except KbtermError:
            raise
        except Exception as exc:  # noqa: BLE001
            if _environmental(exc):
                raise
            if first_error is not None and not first_error:
                first_error.append(lance_reason(exc))
        lo, hi = start, end  # [start, lo) reads, [start, hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _ok(read, start, mid):
                lo = mid
            else:
                hi = mid
        if lo > start:
            good.append((start, lo))
        bad = last_bad = lo  # row `bad` fails; find the first row after it that reads
        step = 1
        while True:
            probe = bad + step
            if probe >= total:
                start = total
                break
            if _ok(read, probe, probe + 1):
                lo2, hi2 = last_bad, probe
                while hi2 - lo2 > 1:
                    mid = (lo2 + hi2) // 2
                    if _ok(read, mid, mid + 1):
                        hi2 = mid
                    else:
                        lo2 = mid
                start = hi2
                break
            last_bad = probe
            step *= 2
    return good


def _roll_back(store: Store, name: str, salvage: _Salvage) -> Any:
    """Open table ``name``, dropping latest versions that cannot be opened; None when no
    version is left (then the table folder is removed)."""
    import shutil

    folder = store.path / f"{name}.lance"
    if not folder.is_dir():
        return None
    while True:
        problem = manifest_problem(folder)
        if not problem:
            store.reopen()
            try:
                return store._connect().open_table(name)
            except (ValueError, FileNotFoundError):
                problem = "its latest version cannot be opened"
            except Exception as exc:  # noqa: BLE001 - LanceDB's errors (and panics) vary
                if _environmental(exc):  # the machine, not the file: nothing to roll back
                    raise store.translate(exc, name) from None
                problem = lance_reason(exc)
        found = manifests(folder)
        if not found:
            break
        salvage.problem = salvage.problem or problem
        log.info("the %s's version file %s cannot be read: rolling back to the version "
                 "before", TABLE_NAMES[name], found[0].name)
        found[0].unlink()
        (folder / "_versions" / "latest_version_hint.json").unlink(missing_ok=True)
        salvage.rolled_back += 1
    salvage.lost_table = True
    salvage.problem = salvage.problem or "no version of it can be opened"
    shutil.rmtree(folder, ignore_errors=True)
    store.reopen()
    return None


def _salvage(store: Store, name: str, columns: Sequence[str] | None) -> tuple[Any, _Salvage]:
    """Read every row of table ``name`` that can be read (all its columns), keeping
    ``columns`` of each (all when None)."""
    salvage = _Salvage()
    table = _roll_back(store, name, salvage)
    if table is None:
        return None, salvage
    try:
        salvage.total = table.count_rows()
    except Exception as exc:  # noqa: BLE001
        if is_disk_full(exc):
            raise
        salvage.problem = salvage.problem or lance_reason(exc)
        return table, salvage
    keep = list(columns) if columns is not None else None
    by_offset: dict[int, dict[str, Any]] = {}

    def read(a: int, b: int) -> None:
        data = table.take_offsets(list(range(a, b))).to_arrow()  # every column: verified
        if data.num_rows != b - a:
            raise ValueError(f"{data.num_rows} rows read of {b - a}")
        for n, row in enumerate((data.select(keep) if keep else data).to_pylist(), start=a):
            by_offset[n] = row

    errors: list[str] = []
    try:
        salvage.good = readable_ranges(read, salvage.total, first_error=errors)
    except KbtermError:
        raise
    except Exception as exc:  # noqa: BLE001 - the machine failed, not the files
        raise store.translate(exc, name) from None
    if salvage.readable < salvage.total:
        salvage.problem = salvage.problem or (
            f"{salvage.total - salvage.readable} of {salvage.total} rows unreadable: "
            f"{errors[0] if errors else 'read error'}")
    # Exactly the rows of the readable ranges (each was read by a call that succeeded), once
    # per id.
    key = "id" if name == CHUNKS else "file_id"
    seen: set[Any] = set()
    for a, b in salvage.good:
        for n in range(a, b):
            row = by_offset[n]
            if row[key] not in seen:
                seen.add(row[key])
                salvage.rows.append(row)
    return table, salvage


# ---------------------------------------------------------------------- reconciling

def reconcile(records: Sequence[FileRecord], rows: Sequence[dict[str, Any]]
              ) -> tuple[list[FileRecord], list[FileRecord], set[str], int, int]:
    """Make the ledger ``records`` and the chunk ``rows`` (``id``, ``file_id``,
    ``generation``, ``path``, ``file_type``) agree (see the module docstring).

    Returns (the new ledger, the records that changed or are new, the ids of the chunk rows to
    keep, how many files are to be embedded again, how many ledger rows were rebuilt)."""
    by_file: dict[str, Counter[str]] = {}
    sample: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        by_file.setdefault(row["file_id"], Counter())[row["generation"]] += 1
        sample.setdefault((row["file_id"], row["generation"]), row)
    ledger: dict[str, FileRecord] = {}
    for rec in records:
        ledger[rec.file_id] = rec
    keep: dict[str, set[str]] = {}
    changed: list[FileRecord] = []
    to_embed = restored = 0
    for file_id, rec in list(ledger.items()):
        gens = by_file.get(file_id, Counter())
        wanted: set[str] = set()
        if rec.staging and gens[rec.staging]:
            wanted.add(rec.staging)  # hidden, and resumed by the next run
        wanted.update(g for g in rec.retired_generations if gens[g])  # reused by that run
        if rec.status == STATUS_INDEXED:
            have = gens[rec.generation]
            # (a file whose pictures are pending has its text rows and some of its pictures)
            if have == rec.chunks or (rec.pictures and have >= rec.chunks):
                wanted.add(rec.generation)
            else:
                others = {g: n for g, n in gens.items()
                          if g not in (rec.generation, rec.staging, *rec.retired_generations)}
                generation = rec.generation if have else max(others, key=others.get, default="")
                if generation:
                    wanted.add(generation)
                new = replace(rec, generation=generation or rec.generation,
                              chunks=gens[generation] if generation else 0,
                              size=-1, mtime_ns=-1, content_hash="")
                ledger[file_id] = new
                changed.append(new)
                to_embed += 1
        keep[file_id] = wanted
    taken = {rec.path for rec in ledger.values()}
    for file_id, gens in by_file.items():
        if file_id in ledger:
            continue
        generation, count = gens.most_common(1)[0]
        row = sample[(file_id, generation)]
        if row["path"] in taken:
            continue  # that path has a ledger row of its own: these rows are left over
        new = FileRecord(file_id=file_id, path=row["path"], file_type=row["file_type"] or "",
                         size=-1, mtime_ns=-1, content_hash="", status=STATUS_INDEXED,
                         chunks=count, indexed_at=time.time(), generation=generation)
        ledger[file_id] = new
        changed.append(new)
        keep[file_id] = {generation}
        taken.add(new.path)
        restored += 1
    keep_ids = {r["id"] for r in rows if r["generation"] in keep.get(r["file_id"], ())}
    return list(ledger.values()), changed, keep_ids, to_embed, restored


# ---------------------------------------------------------------------- writing it back

def _rewrite_chunks(store: Store, table: Any, salvage: _Salvage, keep_ids: set[str]) -> None:
    """Overwrite the chunks table with its kept rows, in one commit, streamed window by
    window from the version being repaired."""
    import pyarrow as pa

    schema = table.schema
    written: set[str] = set()

    def batches() -> Iterator[Any]:
        for a, b in salvage.good:
            for start in range(a, b, WINDOW):
                data = table.take_offsets(list(range(start, min(start + WINDOW, b)))).to_arrow()
                mask = []
                for chunk_id in data.column("id").to_pylist():
                    mask.append(chunk_id in keep_ids and chunk_id not in written)
                    written.add(chunk_id)
                yield from data.filter(pa.array(mask, type=pa.bool_())).cast(schema).to_batches()

    table.add(pa.RecordBatchReader.from_batches(schema, batches()), mode="overwrite")


def repair(store: Store, model: str, dimension_setting: int = 0) -> RepairReport:
    """Verify both tables, every row and column, and repair what is damaged (see the module
    docstring); the run that follows embeds what was lost."""
    report = RepairReport()
    files_table, files = _salvage(store, FILES, None)
    chunks_table, chunks = _salvage(store, CHUNKS, NARROW)
    for name, salvage in ((FILES, files), (CHUNKS, chunks)):
        if salvage.damaged:
            report.damaged[name] = salvage.problem
            log.info("the %s is damaged: %s", TABLE_NAMES[name], salvage.problem)
    records = [FileRecord(**_nonnull(row)) for row in files.rows]
    ledger, changed, keep_ids, to_embed, restored = reconcile(records, chunks.rows)
    report.files_to_embed, report.files_restored = to_embed, restored
    report.chunks_kept = len(keep_ids)
    report.chunks_lost = max(0, chunks.total - chunks.readable)
    report.rows_dropped = len(chunks.rows) - len(keep_ids)

    # Chunks first: between the two commits a reader sees the kept chunks under the old
    # ledger, as after any commit of the indexer.
    if chunks_table is not None:
        if chunks.damaged:
            _rewrite_chunks(store, chunks_table, chunks, keep_ids)
        elif report.rows_dropped:
            drop = [r["id"] for r in chunks.rows if r["id"] not in keep_ids]
            for start in range(0, len(drop), 500):
                chunks_table.delete(sql_in("id", drop[start:start + 500]))
    import pyarrow as pa

    if files.damaged or files_table is None:
        store.reopen()
        store.create_files_table()
        data = pa.Table.from_pylist([asdict(r) for r in ledger], schema=files_schema())
        store.files_table.add(data, mode="overwrite")
    elif changed:
        store.upsert_files(changed)
    report.files = len(ledger)
    store.reopen()

    if not chunks.damaged and store.chunks_table is not None:
        _check_fts(store, report)
    _check_meta(store, chunks.rows, model, dimension_setting, report)
    store.reopen()
    return report


def _check_fts(store: Store, report: RepairReport) -> None:
    """Drop a full-text index that cannot be searched (the run builds it again)."""
    if not store.has_fts_index():
        return
    try:
        store.keyword_search("kbterm", 1)
        return
    except IndexDamaged as exc:
        log.warning("the keyword index cannot be read (%s): building it again", exc)
    table = store.chunks_table
    for index in table.list_indices():
        if index.index_type == "FTS":
            table.drop_index(index.name)
    report.fts_dropped = True
    report.damaged.setdefault(KEYWORD_INDEX, "it cannot be read")


def _check_meta(store: Store, rows: Sequence[dict[str, Any]], model: str,
                dimension_setting: int, report: RepairReport) -> None:
    """Write meta.json again when it is damaged (or missing beside chunks)."""
    try:
        if store.read_meta() is not None or store.chunks_table is None:
            return
    except IndexDamaged as exc:
        log.warning("%s", exc)
    table = store.chunks_table
    if table is None:
        store.meta_path.unlink(missing_ok=True)
        return
    models = Counter(r.get("model") or "" for r in rows)
    built_with = models.most_common(1)[0][0] if models else model
    dim = table.schema.field("vector").type.list_size
    setting = dimension_setting if dimension_setting in (0, dim) and built_with == model else dim
    store.write_meta(IndexMeta(built_with or model, dim, setting))
    report.meta_written = True
    report.damaged.setdefault("meta", "meta.json was unreadable")
