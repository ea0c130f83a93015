"""The smoke model's tokenizer: a byte-level BPE trained on game text, loaded as a Qwen2 tokenizer."""

from __future__ import annotations

import json

from ragdistill.models.chat_template import chatml_template

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on game text, as a Qwen2 tokenizer with a marked ChatML template.

    The BPE is trained behind Qwen2's own normalizer and pre-tokenizer, because AutoTokenizer loads any
    Qwen2-config checkpoint with Qwen2Tokenizer: training and every later load then split text alike.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    proto = Qwen2Tokenizer().backend_tokenizer
    core = Tokenizer(models.BPE())
    core.normalizer = proto.normalizer
    core.pre_tokenizer = proto.pre_tokenizer
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    model = json.loads(core.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2Tokenizer(
        vocab=model["vocab"], merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = chatml_template(None)
    return tok
