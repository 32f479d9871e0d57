"""The keyword index in every language: recall on a small labelled mixed-language set, and BM25
latency at 100k chunks, for kbterm's recipe (kbterm/keywords.py) against LanceDB's tokenizers
on the raw text (``simple``, kbterm 0.1's; ``icu``), and the recipe's settings one by one
(stemming, ASCII folding, stop words), all in one run.

    python benchmarks/bench_keywords.py [--chunks 100000] [--queries 200]

The labelled set (``DOCS``/``QUERIES`` below) is 48 notes in eight languages with one known
answer per query; queries use other inflections than the notes (plural, participle, accents
dropped, a particle missing) where the language has them.  It is small and written for this
benchmark: its numbers rank the settings, they do not estimate recall on anyone's notes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kbterm.keywords import FTS_SETTINGS, keyword_text  # noqa: E402
from kbterm.lancedb_import import import_lancedb  # noqa: E402

DOCS = {
    # English
    "en-1": "The running club meets every Tuesday at the harbour for a ten kilometre run.",
    "en-2": "Our quarterly budget review showed that travel expenses doubled this year.",
    "en-3": "To reset the router, hold the small button on its back for thirty seconds.",
    "en-4": "Grandmother's apple pie needs cinnamon, butter and a very hot oven.",
    "en-5": "The library extended its opening hours during the examination period.",
    "en-6": "Migrating birds stopped over in the wetlands before crossing the sea.",
    # German
    "de-1": "Die Kartoffelsuppe köchelt zwei Stunden auf kleiner Flamme.",
    "de-2": "Der Zug nach München fällt wegen Bauarbeiten am Wochenende aus.",
    "de-3": "Unsere Steuererklärung müssen wir bis Ende Juli beim Finanzamt abgeben.",
    "de-4": "Die Kinder spielten im Garten Fußball, bis es dunkel wurde.",
    "de-5": "Das Fahrrad braucht neue Bremsen und einen frischen Schlauch.",
    "de-6": "Im Museum hängen Gemälde aus dem neunzehnten Jahrhundert.",
    # French
    "fr-1": "Le café du coin sert des croissants chauds tous les matins.",
    "fr-2": "Nous avons réservé un hôtel près de la gare pour les vacances d'été.",
    "fr-3": "La réunion du conseil municipal est reportée à jeudi prochain.",
    "fr-4": "Les élèves préparent une pièce de théâtre pour la fête de l'école.",
    "fr-5": "Il faut arroser les tomates du potager deux fois par semaine.",
    "fr-6": "Le médecin a prescrit des antibiotiques pendant dix jours.",
    # Spanish
    "es-1": "La panadería abre a las siete y vende pan recién horneado.",
    "es-2": "El vuelo a Madrid salió con dos horas de retraso por la niebla.",
    "es-3": "Mi hermana estudia ingeniería en la universidad de Valencia.",
    "es-4": "Los vecinos organizaron una fiesta en la plaza del pueblo.",
    "es-5": "Hay que renovar el pasaporte antes de viajar a México.",
    "es-6": "El jardín botánico tiene una colección de cactus del desierto.",
    # Chinese
    "zh-1": "我的智能手机的网络设置很简单，打开设置就能选择无线网络。",
    "zh-2": "明天下午三点在会议室讨论明年的预算。",
    "zh-3": "这家餐厅的北京烤鸭非常有名，需要提前预订。",
    "zh-4": "周末我们去爬山，山顶的风景特别美。",
    "zh-5": "图书馆新到了一批关于人工智能的书籍。",
    "zh-6": "医生建议我每天多喝水，早点睡觉。",
    # Japanese
    "ja-1": "スマートフォンのネットワーク設定を変更しました。",
    "ja-2": "来週の月曜日に東京で会議があります。",
    "ja-3": "駅前の新しいラーメン屋はとても人気があります。",
    "ja-4": "桜の季節には公園でお花見をします。",
    "ja-5": "図書館で日本の歴史についての本を借りました。",
    "ja-6": "台風のため、明日の授業は休みになりました。",
    # Korean
    "ko-1": "어제 저녁에 김치찌개를 먹었습니다. 정말 맛있었어요.",
    "ko-2": "다음 주에 부산으로 출장을 갑니다.",
    "ko-3": "도서관에서 한국 역사에 관한 책을 빌렸어요.",
    "ko-4": "주말마다 한강 공원에서 자전거를 탑니다.",
    "ko-5": "새로 산 노트북의 배터리가 오래갑니다.",
    "ko-6": "회의실 예약은 인트라넷에서 할 수 있습니다.",
    # Thai
    "th-1": "วันนี้ฉันกินข้าวผัดกับเพื่อนที่ตลาด",
    "th-2": "รถไฟไปเชียงใหม่ออกตอนหกโมงเย็น",
    "th-3": "ห้องสมุดเปิดถึงสองทุ่มทุกวัน",
    "th-4": "คุณหมอแนะนำให้ดื่มน้ำมากๆ",
    "th-5": "เราจะประชุมเรื่องงบประมาณพรุ่งนี้",
    "th-6": "ทะเลที่ภูเก็ตสวยมากในฤดูหนาว",
}

QUERIES = [
    # One word each, in another form than the note's: a plural or participle (stemming), or
    # typed without its accents (ASCII folding).
    ("runs", "en-1"), ("budgets", "en-2"), ("resetting", "en-3"), ("pies", "en-4"),
    ("extending", "en-5"), ("migrate", "en-6"), ("expense", "en-2"), ("birds", "en-6"),
    ("Kartoffelsuppe", "de-1"), ("Munchen", "de-2"), ("Steuererklarung", "de-3"),
    ("Fussball", "de-4"), ("Fahrrad", "de-5"), ("Gemalde", "de-6"),
    ("cafe", "fr-1"), ("hotel", "fr-2"), ("reunion", "fr-3"), ("theatre", "fr-4"),
    ("eleves", "fr-4"), ("potager", "fr-5"), ("medecin", "fr-6"),
    ("panaderia", "es-1"), ("vuelos", "es-2"), ("ingenieria", "es-3"), ("fiesta", "es-4"),
    ("Mexico", "es-5"), ("jardin", "es-6"), ("botanico", "es-6"),
    ("网络设置", "zh-1"), ("智能手机", "zh-1"), ("预算", "zh-2"), ("北京烤鸭", "zh-3"),
    ("爬山", "zh-4"), ("人工智能", "zh-5"), ("喝水", "zh-6"),
    ("ネットワーク設定", "ja-1"), ("東京 会議", "ja-2"), ("ラーメン", "ja-3"), ("お花見", "ja-4"),
    ("歴史", "ja-5"), ("台風", "ja-6"),
    ("김치찌개", "ko-1"), ("부산 출장", "ko-2"), ("한국 역사", "ko-3"), ("자전거", "ko-4"),
    ("배터리", "ko-5"), ("회의실 예약", "ko-6"),
    ("ข้าวผัด", "th-1"), ("เชียงใหม่", "th-2"), ("ห้องสมุด", "th-3"), ("ดื่มน้ำ", "th-4"),
    ("งบประมาณ", "th-5"), ("ภูเก็ต", "th-6"),
]

# name -> (column read by the index, FTS keyword arguments)
VARIANTS = {
    "simple on text (kbterm 0.1)": ("text", {}),
    "icu on text": ("text", {"base_tokenizer": "icu"}),
    "kbterm keywords": ("keywords", FTS_SETTINGS),
    "  without stemming": ("keywords", {**FTS_SETTINGS, "stem": False}),
    "  without ASCII folding": ("keywords", {**FTS_SETTINGS, "ascii_folding": False}),
    "  keeping stop words": ("keywords", {**FTS_SETTINGS, "remove_stop_words": False}),
}

FILLER_WORDS = ("note meeting budget tide harbour report review plan kelp garden train "
                "ticket phone battery library school river market lamp rope salt").split()
FILLER_HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"


def filler(n: int, rng: random.Random) -> list[str]:
    """``n`` distractor chunks: English words and runs of common Chinese characters."""
    out = []
    for _ in range(n):
        words = [rng.choice(FILLER_WORDS) for _ in range(rng.randint(20, 60))]
        han = "".join(rng.choice(FILLER_HAN) for _ in range(rng.randint(10, 40)))
        out.append(" ".join(words) + " " + han)
    return out


def build(db, name: str, texts: list[str], ids: list[str], column: str, settings: dict):
    import pyarrow as pa
    from lancedb.index import FTS

    data = {"id": ids, "text": texts}
    if column == "keywords":
        data["keywords"] = [keyword_text(t) for t in texts]
    table = db.create_table(name, pa.table(data), mode="overwrite")
    table.create_index(column, config=FTS(**settings), replace=True)
    return table


def search(table, column: str, query: str, k: int = 10) -> list[str]:
    text = keyword_text(query) if column == "keywords" else query
    if not text.strip():
        return []
    return [r["id"] for r in table.search(text, query_type="fts", fts_columns=column)
            .select(["id", "_score"]).limit(k).to_list()]


def recall(db, chunks: int, rng: random.Random) -> dict[str, dict[str, float]]:
    """hits@10 and MRR per language group, per variant (the labelled notes among
    ``chunks`` distractors)."""
    noise = filler(chunks, rng)
    ids = list(DOCS) + [f"noise-{i}" for i in range(len(noise))]
    texts = list(DOCS.values()) + noise
    out: dict[str, dict[str, float]] = {}
    for name, (column, settings) in VARIANTS.items():
        try:
            table = build(db, "recall", texts, ids, column, settings)
        except Exception as exc:  # noqa: BLE001 - a tokenizer this LanceDB lacks
            print(f"{name}: unavailable ({exc})")
            continue
        groups: dict[str, list[float]] = {}
        for query, answer in QUERIES:
            hits = search(table, column, query)
            rank = hits.index(answer) + 1 if answer in hits else 0
            lang = "cjk+th" if answer[:2] in ("zh", "ja", "ko", "th") else "en/de/fr/es"
            groups.setdefault(lang, []).append(1.0 / rank if rank else 0.0)
        out[name] = {f"{lang} hits@10": sum(1 for r in rr if r) / len(rr) for lang, rr in
                     groups.items()}
        out[name].update({f"{lang} MRR": statistics.mean(rr) for lang, rr in groups.items()})
    return out


def latency(db, chunks: int, queries: int, rng: random.Random) -> dict[str, float]:
    """BM25 p50 (ms) over ``chunks`` chunks: kbterm's recipe vs simple on the raw text."""
    noise = filler(chunks, rng)
    ids = [f"c{i}" for i in range(len(noise))]
    sample = [q for q, _ in QUERIES] + [" ".join(rng.sample(FILLER_WORDS, 2))
                                        for _ in range(20)]
    out = {}
    for name in ("simple on text (kbterm 0.1)", "kbterm keywords"):
        column, settings = VARIANTS[name]
        table = build(db, "latency", noise, ids, column, settings)
        search(table, column, "harbour")  # warm
        times = []
        for i in range(queries):
            q = sample[i % len(sample)]
            t0 = time.perf_counter()
            search(table, column, q)
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    import os

    os.environ.setdefault("LANCEDB_LOG", "error")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--recall-noise", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    lancedb = import_lancedb()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        db = lancedb.connect(str(Path(tmp) / "db"))
        print(f"recall: {len(QUERIES)} queries, {len(DOCS)} labelled notes among "
              f"{args.recall_noise:,} distractors")
        results = recall(db, args.recall_noise, rng)
        cols = sorted({c for r in results.values() for c in r})
        print(f"{'':30}" + "".join(f"{c:>22}" for c in cols))
        for name, row in results.items():
            print(f"{name:30}" + "".join(f"{row.get(c, 0):>22.2f}" for c in cols))
        print(f"\nBM25 p50 over {args.chunks:,} chunks ({args.queries} queries)")
        lat = latency(db, args.chunks, args.queries, rng)
        base = lat["simple on text (kbterm 0.1)"]
        for name, ms in lat.items():
            print(f"  {name:30} {ms:7.2f} ms  ({ms / base:.2f}x)")


if __name__ == "__main__":
    main()
