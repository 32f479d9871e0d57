"""Text that came out wrong or not at all (issue 13, part 8).

* A file mixing UTF-8 lines with lines in a legacy code page is decoded line by line: the UTF-8
  stays right and the others are read in their code page (it used to be decoded whole in one
  of the two: ``cafÃ©`` or ``caf\\ufffd``).  Files in one legacy code page read as before.
* A file or folder whose name is not valid UTF-8 is recorded as failed, under its name with
  the undecodable bytes written ``\\xNN``, and listed by ``kbterm status``; renamed, it is
  indexed and the escaped row leaves (with ``kbterm index`` and with the watcher).
* HTML nested deeper than libxml2 builds trees (256 levels, 2,048 with huge_tree) keeps its
  text: the part past the limit used to vanish.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from indexing_helpers import check_consistent, chunks, ledger, make_config, run_index
from kbterm.ingest import ParseContext, parse
from kbterm.ingest.text import SAMPLE_BYTES, open_text
from kbterm.scan import escape_path


def text_of(path: Path, kind: str = "text") -> str:
    return "".join(s.text for s in parse(path, kind, ParseContext()))


# --------------------------------------------------------------------------- mixed encodings

WESTERN = ["café", "naïve", "déjà", "très", "élève", "garçon", "Noël", "forêt", "hôtel",
           "Straße", "Müller", "señor", "año", "5 €", "«citation»", "—", "l’été", "ÉTÉ", "À",
           "the", "and", "text", "line", "of", "notes"]


def lines_of(rng: random.Random, words: list[str], count: int) -> list[str]:
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(count)]


def write_mix(path: Path, lines: list[str], encodings: list[str]) -> str:
    path.write_bytes(b"".join((line + "\n").encode(enc) for line, enc in zip(lines, encodings)))
    return "".join(line + "\n" for line in lines)


MIXES = {
    "random lines": lambda rng, n: [rng.choice(["utf-8", "cp1252"]) for _ in range(n)],
    "utf-8 then cp1252": lambda rng, n: ["utf-8"] * (n // 2) + ["cp1252"] * (n - n // 2),
    "cp1252 then utf-8": lambda rng, n: ["cp1252"] * (n // 2) + ["utf-8"] * (n - n // 2),
    "one utf-8 line": lambda rng, n: ["cp1252"] * (n - 1) + ["utf-8"],
    "one cp1252 line": lambda rng, n: ["utf-8"] * (n - 1) + ["cp1252"],
    "every tenth cp1252": lambda rng, n: ["cp1252" if i % 10 == 0 else "utf-8"
                                          for i in range(n)],
}


@pytest.mark.parametrize("mix", list(MIXES))
def test_utf8_and_cp1252_lines_each_decode_right(tmp_path, mix):
    rng = random.Random(13)
    lines = lines_of(rng, WESTERN, 200)
    expected = write_mix(tmp_path / "mix.txt", lines, MIXES[mix](rng, len(lines)))
    assert text_of(tmp_path / "mix.txt") == expected


def test_latin1_lines_past_the_detection_sample_decode_right(tmp_path):
    """The first 64 KiB are UTF-8, Latin-1 lines come after: they were U+FFFD."""
    rng = random.Random(8)
    latin1 = [w for w in WESTERN if all(ord(c) < 256 for c in w)]
    head = lines_of(rng, WESTERN, 2500)
    tail = lines_of(rng, latin1, 500)
    path = tmp_path / "late.txt"
    expected = write_mix(path, head + tail, ["utf-8"] * len(head) + ["latin-1"] * len(tail))
    assert len("".join(head).encode()) > SAMPLE_BYTES
    assert open_text(path)[0] == "utf-8"
    assert text_of(path) == expected


@pytest.mark.parametrize(("codepage", "sentences"), [
    ("cp1251", ["Привет, как дела? Всё хорошо, спасибо.", "Это обычный текст на русском.",
                "Съешь же ещё этих мягких французских булок"]),
    ("shift_jis", ["日本語のテキストです。", "これは普通の文章です。", "東京は日本の首都です。"]),
    ("gbk", ["这是一个普通的中文句子。", "我们今天去公园散步吧。", "北京是中国的首都城市。"]),
])
def test_utf8_beside_other_code_pages_decodes_line_by_line(tmp_path, codepage, sentences):
    rng = random.Random(3)
    lines = [rng.choice(sentences) for _ in range(120)]
    encodings = [rng.choice(["utf-8", codepage]) for _ in lines]
    expected = write_mix(tmp_path / "mix.txt", lines, encodings)
    assert text_of(tmp_path / "mix.txt") == expected


def test_mixed_lines_in_html_and_markdown(tmp_path):
    """The HTML parser decodes with the same rules, a declared UTF-8 charset included."""
    page = ("<html><head><meta charset='utf-8'><title>Menü</title></head><body>\n"
            "<p>Crème brûlée, UTF-8</p>\n", "<p>Crème brûlée, cp1252</p>\n", "</body></html>\n")
    path = tmp_path / "page.html"
    path.write_bytes(page[0].encode() + page[1].encode("cp1252") + page[2].encode())
    text = text_of(path, "html")
    assert "Crème brûlée, UTF-8" in text and "Crème brûlée, cp1252" in text
    path = tmp_path / "notes.md"
    path.write_bytes("# Café\n\nAu café.\n".encode() + "Déjà vu.\n".encode("cp1252"))
    assert text_of(path, "markdown") == "# Café\n\nAu café.\nDéjà vu.\n"


LEGACY = {
    "cp1252": "Une phrase en français, très jolie, déjà vue — 5 €.\nÇa coûte cher.\n" * 4,
    "cp1251": "Привет, как дела? Всё хорошо, спасибо. Это обычный текст.\n" * 5,
    "shift_jis": "日本語のテキストです。これは普通の文章です。\n東京は日本の首都です。\n" * 5,
    "gbk": "这是一个普通的中文句子。我们今天去公园散步吧。\n北京是中国的首都。\n" * 5,
    "euc_kr": "이것은 평범한 한국어 문장입니다. 서울은 한국의 수도입니다.\n" * 5,
    "utf-16": "UTF-16 mit BOM: Grüße, 日本語, Привет.\n" * 5,
}


@pytest.mark.parametrize("codepage", list(LEGACY))
def test_files_in_one_legacy_code_page_read_as_before(tmp_path, codepage):
    """Guard (these decoded right before): a single code page is not taken for a mix."""
    path = tmp_path / "legacy.txt"
    path.write_bytes(LEGACY[codepage].encode(codepage))
    assert text_of(path) == LEGACY[codepage]


def test_utf8_with_a_few_bad_bytes_keeps_them_as_replacement(tmp_path):
    """A line that holds UTF-8 characters is UTF-8 with bad bytes, not a cp1252 line."""
    path = tmp_path / "bad.txt"
    path.write_bytes("naïve café ".encode() + b"\xff\xfe" + " ünd weiter\n".encode())
    assert text_of(path) == "naïve café \ufffd\ufffd ünd weiter\n"


# --------------------------------------------------------------------------- file names


def bytes_path(folder: Path, name: bytes) -> str:
    """The str form of ``folder/name`` that os functions give for a name that is not UTF-8."""
    return os.fsdecode(os.fsencode(folder) + b"/" + name)


@pytest.fixture
def odd_names(tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "plain.txt").write_text("A plain note about sunflowers.\n")
    file_raw = bytes_path(folder, b"caf\xe9.txt")
    with open(file_raw, "w") as fh:
        fh.write("A note named in Latin-1 about espresso.\n")
    dir_raw = bytes_path(folder, b"d\xe9j\xe0")
    os.mkdir(dir_raw)
    with open(os.path.join(dir_raw, "inner.txt"), "w") as fh:
        fh.write("A note in a Latin-1 folder about lemons.\n")
    return folder, file_raw, dir_raw


def test_a_name_that_is_not_utf8_is_listed_with_its_reason_then_renamed(
        tmp_path, odd_names, index_model_dir, index_embedder):
    from kbterm.status import collect, render

    folder, file_raw, dir_raw = odd_names
    cfg = make_config(index_model_dir, tmp_path / "data", [folder])
    summary = run_index(cfg, embedder=index_embedder)
    records = ledger(cfg)
    file_row = records[str(folder / "caf\\xe9.txt")]
    dir_row = records[str(folder / "d\\xe9j\\xe0")]
    assert escape_path(file_raw) == file_row.path
    assert (file_row.status, file_row.file_type) == ("failed", "text")
    assert "not valid UTF-8" in file_row.reason and "rename" in file_row.reason
    assert (dir_row.status, dir_row.file_type) == ("failed", "folder")
    assert "nothing in it is indexed" in dir_row.reason
    assert records[str(folder / "plain.txt")].status == "indexed"
    assert summary.failed == 2
    status = collect(cfg)
    assert {f["path"] for f in status.failures} == {file_row.path, dir_row.path}
    shown = render(status)
    assert "caf\\xe9.txt: file name is not valid UTF-8" in shown
    check_consistent(cfg)

    # Unchanged: the next run keeps the rows as they are.
    again = run_index(cfg, embedder=index_embedder)
    assert again.indexed == again.removed == 0
    assert {f["path"] for f in collect(cfg).failures} == {file_row.path, dir_row.path}

    # Renamed to valid names: indexed, and the escaped rows leave.
    os.rename(file_raw, folder / "café.txt")
    os.rename(dir_raw, folder / "déjà")
    run_index(cfg, embedder=index_embedder)
    records = ledger(cfg)
    assert file_row.path not in records and dir_row.path not in records
    assert records[str(folder / "café.txt")].status == "indexed"
    assert records[str(folder / "déjà" / "inner.txt")].status == "indexed"
    assert any("espresso" in r["text"] for r in chunks(cfg, path=str(folder / "café.txt")))
    check_consistent(cfg)


def test_the_watcher_follows_a_name_that_is_not_utf8(tmp_path, index_model_dir,
                                                     index_embedder):
    """Created, it is listed as failed; renamed to a valid name, it is indexed and the escaped
    row leaves, without waiting for a sweep."""
    from kbterm.config import config_from_dict
    from kbterm.watch import Watcher

    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "plain.txt").write_text("A plain note about sunflowers.\n")
    cfg = config_from_dict({
        "data_dir": str(tmp_path / "data"), "library": {"folders": [str(folder)]},
        "models": {"device": "cpu", "dtype": "float32", **{role: {"model": str(index_model_dir)}
                                       for role in ("embedder", "reranker", "generator")}},
        "indexing": {"keep_versions_seconds": 0},
        "watch": {"debounce_seconds": 0.2, "batch_seconds": 1.0, "sweep_minutes": 0.0,
                  "unload_models_after_seconds": 0.0},
    })
    watcher = Watcher(cfg, embedder=index_embedder)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            watcher.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def until(predicate, what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert not errors, errors
            try:
                if predicate():
                    return
            except Exception:  # noqa: BLE001 - the ledger may be mid-write
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        until(lambda: watcher.state.last_sweep_at > 0, "the first sweep")
        raw = bytes_path(folder, b"caf\xe9.txt")
        with open(raw, "w") as fh:
            fh.write("A note named in Latin-1 about espresso.\n")
        escaped = escape_path(raw)
        until(lambda: ledger(cfg).get(escaped) is not None, "the escaped row")
        assert ledger(cfg)[escaped].status == "failed"
        os.rename(raw, folder / "café.txt")
        until(lambda: escaped not in ledger(cfg)
              and getattr(ledger(cfg).get(str(folder / "café.txt")), "status", "") == "indexed",
              "the rename")
    finally:
        watcher.stop()
        thread.join(60)
    assert not errors, errors
    check_consistent(cfg)


# --------------------------------------------------------------------------- deep HTML


def deep_page(depth: int, tags: tuple[str, ...] = ("div", "span", "section", "b")) -> str:
    opening = "".join(f"<{tags[i % len(tags)]} class='level{i}'>" for i in range(depth))
    closing = "".join(f"</{tags[i % len(tags)]}>" for i in reversed(range(depth)))
    return ("<!doctype html><html><head><title>Deep page</title></head><body>"
            "<p>Text at the top of the page.</p>" + opening
            + "The deepest sentence mentions a lighthouse keeper." + closing
            + "<p>Text after the deep part, about harbour seals.</p></body></html>\n")


@pytest.mark.parametrize("depth", [300, 2100, 5000])
def test_deeply_nested_html_keeps_its_deepest_text(tmp_path, depth):
    path = tmp_path / "deep.html"
    path.write_text(deep_page(depth))
    sections = list(parse(path, "html", ParseContext()))
    text = "".join(s.text for s in sections)
    assert "Text at the top of the page." in text
    assert "The deepest sentence mentions a lighthouse keeper." in text
    assert "Text after the deep part, about harbour seals." in text
    assert {s.title for s in sections} == {"Deep page"}


def test_deeply_nested_html_is_indexed(tmp_path, index_model_dir, index_embedder):
    folder = tmp_path / "library"
    folder.mkdir()
    (folder / "deep.html").write_text(deep_page(5000))
    cfg = make_config(index_model_dir, tmp_path / "data", [folder])
    run_index(cfg, embedder=index_embedder)
    assert ledger(cfg)[str(folder / "deep.html")].status == "indexed"
    texts = " ".join(r["text"] for r in chunks(cfg, path=str(folder / "deep.html")))
    assert "lighthouse keeper" in texts and "harbour seals" in texts
    check_consistent(cfg)
