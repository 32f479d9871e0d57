"""The keyword index in every language (kbterm/keywords.py): Chinese, Japanese, Korean and Thai
notes found by their words, English as before, highlights of two-character words, and the
one-time upgrade of an index an older kbterm built."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexing_helpers import explicit_data_dir, make_config, run_index
from kbterm.keywords import KEYWORDS_VERSION, keyword_text, query_terms, term_spans
from kbterm.store import Store

pytestmark = pytest.mark.usefixtures(explicit_data_dir.__name__)

NOTES = {
    "zh.md": "# 手机\n\n我的智能手机的网络设置很简单：打开设置，选择无线网络。\n",
    "zh-tw.md": "# 會議\n\n明天下午三點開會，討論預算。\n",
    "ja.md": "# 設定\n\nスマートフォンのネットワーク設定を変更しました。\n",
    "ko.md": "# 저녁\n\n어제 저녁에 김치찌개를 먹었습니다. 정말 맛있었어요.\n",
    "th.md": "# อาหาร\n\nวันนี้ฉันกินข้าวผัดกับเพื่อนที่ตลาด\n",
    "en.md": "# Phone\n\nThe phone's network settings are under Settings, then Wireless.\n",
    "de.md": "# Küche\n\nDie Kartoffelsuppe köchelt zwei Stunden auf kleiner Flamme.\n",
    "fr.md": "# École\n\nLes élèves préparent une pièce de théâtre pour la fête.\n",
    "mixed.md": "# Trip\n\nWe took the 新幹線 from Tokyo; the ticket cost 14,000円.\n",
}

QUERIES = {
    "网络设置": "zh.md",
    "智能手机": "zh.md",
    "预算": None,  # simplified; the note is traditional (預算): no match is right
    "預算": "zh-tw.md",
    "ネットワーク設定": "ja.md",
    "김치찌개": "ko.md",  # the note says 김치찌개를 (with its object particle)
    "ข้าวผัด": "th.md",
    "settings": "en.md",
    "setting": "en.md",  # stemmed
    "kartoffelsuppe": "de.md",
    "新幹線": "mixed.md",
    "tokyo": "mixed.md",
    "eleves": "fr.md",  # typed without accents, and stemmed like the note's élèves
    "théâtre": "fr.md",
}


def test_unspaced_runs_become_bigrams_and_the_rest_is_unchanged():
    assert keyword_text("网络设置") == " 网络 络设 设置 "
    assert keyword_text("水") == " 水 "  # a lone character stays one token
    assert keyword_text("The phone's settings") == "The phone's settings"
    assert keyword_text("김치찌개를 먹었다").split() == ["김치", "치찌", "찌개", "개를", "먹었", "었다"]
    # Full-width letters and half-width kana are normalised first (NFKC).
    assert keyword_text("ＡＢＣ ｶﾀｶﾅ").split() == ["ABC", "カタ", "タカ", "カナ"]
    assert set(keyword_text("김치찌개").split()) <= set(keyword_text("김치찌개를").split())
    # Accents come off Latin letters (before LanceDB's stemmer), never off Hangul or Thai.
    assert keyword_text("Les élèves, München") == "Les eleves, Munchen"
    assert keyword_text("한국어") == " 한국 국어 "


def test_two_character_words_and_longer_ones_are_marked_whole():
    text = "我们讨论了智能手机的网络设置问题, and the settings."
    assert [text[a:b] for a, b in term_spans(text, "设置")] == ["设置"]
    assert [text[a:b] for a, b in term_spans(text, "网络设置 settings")] == ["网络设置", "settings"]
    assert term_spans("nothing here", "设置") == []
    assert query_terms("an ox settings") == ["settings"]  # 1-2 letter Latin words: unmarked
    from kbterm.tui.render import highlight

    shown = highlight("打开设置，选择无线网络。", "设置")
    marked = [shown.plain[s.start:s.end] for s in shown.spans if "yellow" in str(s.style)]
    assert marked == ["设置"]
    from kbterm.retrieval import snippet

    long = "开头的文字。" * 60 + "这里是网络设置的说明。" + "结尾的文字。" * 60
    assert "网络设置" in snippet(long, "网络设置")


@pytest.fixture(scope="module")
def notes_index(tmp_path_factory, index_model_dir, index_embedder):
    base = tmp_path_factory.mktemp("keywords")
    folder = base / "notes"
    folder.mkdir()
    for name, text in NOTES.items():
        (folder / name).write_text(text, encoding="utf-8")
    cfg = make_config(index_model_dir, base / "data", [folder])
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KBTERM_DATA_DIR", raising=False)
        summary = run_index(cfg, embedder=index_embedder)
    assert summary.indexed == len(NOTES)
    return cfg


def keyword_hits(cfg, query: str) -> list[str]:
    store = Store(cfg.data_path)
    ids = [row["id"] for row in store.keyword_search(query, 10)]
    path_of = {r["id"]: Path(r["path"]).name for r in
               store.chunks_table.search().select(["id", "path"]).to_list()}
    return [path_of[i] for i in ids]


@pytest.mark.parametrize("query", sorted(QUERIES))
def test_notes_in_every_language_are_found_by_their_words(notes_index, query):
    hits = keyword_hits(notes_index, query)
    want = QUERIES[query]
    if want is None:
        assert hits == []
    else:
        assert hits and hits[0] == want, hits


def test_the_index_records_its_recipe(notes_index):
    store = Store(notes_index.data_path)
    assert store.keyword_column() == "keywords" and store.keywords_current()
    assert store.read_meta().keyword_version == KEYWORDS_VERSION


def test_an_index_built_by_an_older_kbterm_gets_the_new_keywords_once(tmp_path,
                                                                      index_model_dir,
                                                                      index_embedder):
    from lancedb.index import FTS

    folder = tmp_path / "notes"
    folder.mkdir()
    for name in ("zh.md", "ko.md", "en.md"):
        (folder / name).write_text(NOTES[name], encoding="utf-8")
    cfg = make_config(index_model_dir, tmp_path / "data", [folder])
    run_index(cfg, embedder=index_embedder)
    # What kbterm 0.1 left: no keywords column, the full-text index on the text itself.
    store = Store(cfg.data_path)
    table = store.chunks_table
    for ix in table.list_indices():
        if ix.index_type == "FTS":
            table.drop_index(ix.name)
    table.drop_columns(["keywords"])
    table.create_index("text", config=FTS(), replace=True)
    meta = store.read_meta()
    meta.keyword_version = 0
    store.write_meta(meta)
    store = Store(cfg.data_path)
    assert store.keyword_column() == "text" and not store.keywords_current()
    assert keyword_hits(cfg, "settings") == ["en.md"]  # an old index still answers
    assert keyword_hits(cfg, "网络设置") == []  # ... but not in Chinese

    from kbterm.indexer import Indexer

    seen = []

    def progress(phase, done, total, current):
        if phase == "keywords":
            seen.append((phase, done, total))

    summary = Indexer(cfg, embedder=index_embedder, progress=progress).run()
    assert summary.unchanged == 3 and summary.model_calls == 0  # nothing embedded again
    assert seen[0] == ("keywords", 0, seen[-1][2]) and seen[-1][1] == seen[-1][2] > 0
    store = Store(cfg.data_path)
    assert store.keywords_current() and store.keyword_column() == "keywords"
    assert not any("text" in ix.columns for ix in store.chunks_table.list_indices()
                   if ix.index_type == "FTS")
    assert keyword_hits(cfg, "网络设置") == ["zh.md"]
    assert keyword_hits(cfg, "김치찌개") == ["ko.md"]
    assert keyword_hits(cfg, "settings") == ["en.md"]
    seen.clear()
    Indexer(cfg, embedder=index_embedder, progress=progress).run()
    assert seen == []  # once
