"""Build small random Qwen3-VL checkpoints for tests and benchmarks.

A real Qwen3-VL checkpoint is gigabytes; the code that loads and runs one is the same for a
checkpoint of a few hundred kilobytes.  :func:`build_random_checkpoint` writes such a checkpoint
(config, random weights from a fixed seed, a byte-level BPE tokenizer with the Qwen special
tokens, a ``Qwen3VLProcessor`` with a Qwen-style chat template) so that tests and benchmarks
exercise the real ``from_pretrained`` path without downloading anything.  Random weights give
meaningless rankings: use these checkpoints for shapes, invariances and plumbing, never relevance.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The Qwen chat form: <|im_start|>{role}\n{content}<|im_end|>\n, media parts as vision markers.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

_TRAINING_TEXT = [
    "yes", "no", "yes no yes no", "Represent the user's input.",
    "Retrieve images or text relevant to the user's query.",
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided.",
    'Note that the answer can only be "yes" or "no".',
    "<Instruct>: Given a search query, retrieve relevant candidates that answer the query.",
    "<Query>: <Document>: NULL system user assistant",
    "The quick brown fox jumps over the lazy dog. A knowledge base lives in the terminal.",
    "Photos, slides, scanned pages and video frames share one vector space.",
    "Answer the question from the evidence and cite sources as [1], [2], page, seconds.",
    "0 1 2 3 4 5 6 7 8 9 10 seconds minutes page file report pdf mp4",
]


def _build_tokenizer(vocab_size: int, training_text: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Role names are single tokens in Qwen's tokenizer (the reranker keeps the last five tokens,
    # "<|im_end|>\n<|im_start|>assistant\n", when it truncates): make them frequent enough here.
    roles = ["system\n", "user\n", "assistant\n"] * 50
    tok.train_from_iterator(_TRAINING_TEXT * 4 + roles + list(training_text or []), trainer=trainer)
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    vocab = fast.get_vocab()
    for word in ("yes", "no"):
        if word not in vocab:
            raise RuntimeError(f"tiny tokenizer has no single token for {word!r}")
    if len(fast.tokenize("<|im_end|>\n<|im_start|>assistant\n")) != 5:
        raise RuntimeError("tiny tokenizer splits the generation prompt into more than 5 tokens")
    return fast


def build_random_checkpoint(
    path: str | Path,
    *,
    text_hidden: int = 64,
    text_layers: int = 2,
    text_heads: int = 4,
    kv_heads: int = 2,
    vision_hidden: int = 32,
    vision_depth: int = 1,
    vision_heads: int = 2,
    vocab_size: int = 400,
    training_text: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a random Qwen3-VL checkpoint (model + processor) to ``path`` and return it.

    The checkpoint is a ``Qwen3VLForConditionalGeneration``: it serves as embedder (its base
    model), reranker (base model + LM-head rows of ``yes``/``no``) and generator alike.
    ``training_text`` (extra lines for the tokenizer) with a larger ``vocab_size`` gives realistic
    token counts, as benchmarks want; the default tokenizer is close to byte level.
    """
    import torch
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(vocab_size, training_text)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}

    head_dim = text_hidden // text_heads
    # M-RoPE splits head_dim/2 rotary frequencies over (time, height, width).
    half = head_dim // 2
    mrope = [half - 2 * (half // 4), half // 4, half // 4]
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=text_hidden * 2,
            num_hidden_layers=text_layers,
            num_attention_heads=text_heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            max_position_embeddings=32768,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope,
                "mrope_interleaved": True,
            },
            pad_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            num_heads=vision_heads,
            out_hidden_size=text_hidden,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)

    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16, temporal_patch_size=2, merge_size=2,
            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
            min_pixels=4 * 32 * 32, max_pixels=1800 * 32 * 32,
        ),
        video_processor=Qwen3VLVideoProcessor(
            patch_size=16, temporal_patch_size=2, merge_size=2,
            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)
    return path
