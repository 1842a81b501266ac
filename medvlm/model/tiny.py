"""Tiny models of every family built from config, with a tokenizer trained offline.

Tests and the CPU demo need real transformers models that train in seconds and need no download: a
small vision tower, a small text model, and a byte-level BPE tokenizer trained on the synthetic
corpus (so it can still encode any text, Chinese SLAKE questions included). A preset fixes the sizes;
the model family (:mod:`medvlm.model.families`, LLaVA-1.5 by default) builds its own architecture
at those sizes. They go through exactly the code paths a 7B model does.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from medvlm.data.records import IMAGE_PLACEHOLDER
from medvlm.data.synthetic import corpus_texts
from medvlm.data.templates import LLAVA_MED_SYSTEM, LLAVA_V1_SYSTEM
from medvlm.errors import ModelError
from medvlm.model.presets import PRESETS

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}




def build_tokenizer(vocab_size: int = 1024, extra_texts: list[str] | None = None,
                    tokens: dict[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the synthetic corpus and template text.

    ``tokens``: the family's special tokens by name (default: LLaVA's ``image_token`` ``<image>``); a
    family may also rename the standard ones (Qwen's ``eos_token`` is ``<|im_end|>``).
    Deterministic: the same inputs give the same vocabulary, so tiny models rebuild identically.
    """
    tokens = tokens or {"image_token": IMAGE_PLACEHOLDER}
    base = {name: tokens.get(name, token) for name, token in SPECIAL_TOKENS.items()}  # a family may rename eos
    extra = {name: token for name, token in tokens.items() if name not in SPECIAL_TOKENS}
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [base["pad_token"], base["bos_token"], base["eos_token"], base["unk_token"], *extra.values()]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # (the "curious human" system text: the vocabulary, and so every tiny model, stays as it was built)
    texts = corpus_texts() + [LLAVA_V1_SYSTEM, LLAVA_MED_SYSTEM,
                              "USER: ASSISTANT: [INST] [/INST] ### Human: Assistant:",
                              "Answer the question using a single word or phrase.",
                              "Please choose from the following two options: [yes, no]"] + (extra_texts or [])
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=4096,
                                   extra_special_tokens=extra, **base)


def build_tiny(name: str, seed: int = 0, vocab_size: int = 1024, template: str = "vicuna_v1",
               family: str = "llava"):
    """Random-init tiny model of ``family`` with its processor; the same (name, family, seed) always
    gives the same weights."""
    from medvlm.model.families import get_family

    if name not in PRESETS:
        raise ModelError(f"unknown tiny preset '{name}'; known: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    architecture = get_family(family)
    tokenizer = build_tokenizer(vocab_size, tokens=architecture.tokenizer_tokens())
    model, processor = architecture.build_tiny(preset, tokenizer, "", seed)
    processor.chat_template = architecture.chat_template(template, processor)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, processor
