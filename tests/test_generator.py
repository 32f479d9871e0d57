"""The answer generator on a tiny random Qwen3-VL checkpoint: streaming and cancelling."""

from __future__ import annotations

import threading

from kbterm.models.generator import SYSTEM_PROMPT, Evidence


def evidence(corpus):
    return [
        Evidence(1, "notes.md, lines 1-4", text="The launch is on Tuesday."),
        Evidence(2, "slides.pdf, page 3", image=corpus / "images" / "docpage_2.jpg"),
    ]


def test_messages_hold_labelled_evidence_and_the_question(generator, corpus):
    msgs = generator.messages("When is the launch?", evidence(corpus))
    assert msgs[0]["content"][0]["text"] == SYSTEM_PROMPT
    parts = msgs[1]["content"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    assert texts[0] == "[1] notes.md, lines 1-4:\n"
    assert "The launch is on Tuesday.\n" in texts
    assert "[2] slides.pdf, page 3:\n" in texts
    assert [p["type"] for p in parts].count("image") == 1
    assert texts[-1] == "\nQuestion: When is the launch?"


def test_stream_yields_text_and_stops_at_max_new_tokens(generator, corpus):
    pieces = list(generator.stream("When is the launch?", evidence(corpus), max_new_tokens=12))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip()
    assert 1 <= generator.last_generated_tokens <= 12


def test_cancel_stops_between_tokens(generator, corpus):
    full = list(generator.stream("When is the launch?", evidence(corpus), max_new_tokens=48))
    full_tokens = generator.last_generated_tokens
    assert full
    cancel = threading.Event()
    stream = generator.stream("When is the launch?", evidence(corpus), max_new_tokens=48,
                              cancel=cancel)
    first = next(stream)
    stream.cancel()
    rest = list(stream)
    assert stream.cancelled
    assert first
    assert generator.last_generated_tokens < full_tokens
    # greedy decoding: what was written before the cancel is the start of the full answer
    assert "".join(full).startswith(first + "".join(rest))


def test_closing_the_stream_early_stops_generation(generator, corpus):
    stream = generator.stream("When is the launch?", evidence(corpus), max_new_tokens=48)
    next(stream)
    stream.close()
    assert stream.cancelled
    assert generator.last_generated_tokens < 48


def test_over_long_evidence_gives_way_to_the_question(generator, monkeypatch):
    from kbterm.models import generator as generator_module

    long = [Evidence(i, f"doc{i}.txt", text="filler words " * 200) for i in range(1, 4)]
    monkeypatch.setattr(generator._encoder, "max_length", 300)
    inputs = generator._inputs(generator.messages("What is the launch date?", long))
    text = generator._processor.tokenizer.decode(inputs["input_ids"][0])
    assert inputs["input_ids"].shape[1] <= 300
    assert text.endswith("Question: What is the launch date?<|im_end|>\n<|im_start|>assistant\n")
    assert generator_module.CONTEXT_LENGTH == 32768
