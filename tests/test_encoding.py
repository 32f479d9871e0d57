"""Model input rules that need no model: content order, instructions, frames, truncation, batching."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbterm.errors import InputError
from kbterm.models.encoding import plan_batches, thin_frames, truncation_keep, with_punctuation
from kbterm.models.inputs import Image, Video, to_content


def test_content_sorts_parts_into_videos_images_texts():
    content = to_content(["caption", Path("a.png"), Video(Path("v.mp4")), "more", Image("b.jpg")])
    assert content.texts == ["caption", "more"]
    assert [i.source for i in content.images] == [Path("a.png"), "b.jpg"]
    assert [v.source for v in content.videos] == [Path("v.mp4")]
    assert to_content("just text").texts == ["just text"]
    assert to_content([]).empty


def test_content_rejects_unknown_things():
    with pytest.raises(InputError, match="not an image or video"):
        to_content(Path("notes.docx"))
    with pytest.raises(InputError, match="cannot use int"):
        to_content(3)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Represent the user's input", "Represent the user's input."),
        ("Find slides about tax", "Find slides about tax."),
        ("Is this relevant?", "Is this relevant?"),
        ("Retrieve the page.", "Retrieve the page."),
        ("检索相关文档。", "检索相关文档。"),  # CJK full stop is punctuation (Po)
        ("Quote \u201cthis\u201d", "Quote \u201cthis\u201d"),  # closing quote is Pf
        ("  trailing space  ", "trailing space."),
    ],
)
def test_instruction_punctuation_rule(given, expected):
    assert with_punctuation(given) == expected


def test_thin_frames_uses_linspace_indices():
    frames = list(range(100))
    thinned = thin_frames(frames, 64)
    assert len(thinned) == 64
    assert thinned[0] == 0 and thinned[-1] == 99
    import numpy as np

    assert thinned == list(np.linspace(0, 99, 64).astype(int))
    assert thin_frames(frames[:10], 64) == frames[:10]


def test_truncation_keeps_special_tokens_and_drops_ordinary_from_the_end():
    special = {0, 1}
    ids = [0, 10, 11, 1, 12, 13, 14, 1, 15, 0]
    assert truncation_keep(ids, special, 10) is None
    keep = truncation_keep(ids, special, 7)
    kept = [ids[i] for i in keep]
    assert len(kept) == 7
    assert kept == [0, 10, 11, 1, 12, 1, 0]  # all four specials, first three ordinary ones


def test_truncation_keeps_the_tail():
    special = {0}
    ids = [0, 10, 11, 12, 13, 14, 0, 20, 21, 22, 23]
    keep = truncation_keep(ids, special, 6, keep_tail=3)
    kept = [ids[i] for i in keep]
    assert kept[-3:] == [21, 22, 23]
    assert kept == [0, 10, 0, 21, 22, 23]


def test_plan_batches_respects_the_token_budget():
    lengths = [5, 100, 7, 98, 6, 50, 400]
    batches = plan_batches(lengths, budget=200)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert longest * len(batch) <= 200 or len(batch) == 1
    assert batches[0] == [6]  # longer than the budget: alone
    # similar lengths end up together
    assert {0, 2, 4} <= set(batches[-1])
    assert plan_batches([], 100) == []
