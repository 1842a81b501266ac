"""Tiny LLaVA models built from config, with a tokenizer trained offline.

Tests and the CPU demo need real ``LlavaForConditionalGeneration`` models that train in seconds and
need no download: a small CLIP- or SigLIP-style vision tower, a small Llama- or Mistral-style text
model, and a byte-level BPE tokenizer trained on the synthetic corpus (so it can still encode any
text, Chinese SLAKE questions included). They go through exactly the code paths a 7B model does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MistralConfig,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from medvlm.data.records import IMAGE_PLACEHOLDER
from medvlm.data.synthetic import corpus_texts
from medvlm.data.templates import LLAVA_MED_SYSTEM, LLAVA_V1_SYSTEM, TEMPLATES
from medvlm.errors import ModelError

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class TinyPreset:
    vision: str  # clip | siglip
    text: str  # llama | mistral
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 3
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 352
    projector_act: str = "gelu"


PRESETS: dict[str, TinyPreset] = {
    "tiny-clip-llama": TinyPreset("clip", "llama"),
    "tiny-siglip-mistral": TinyPreset("siglip", "mistral"),
    "tiny-clip-mistral": TinyPreset("clip", "mistral"),
    "tiny-siglip-llama": TinyPreset("siglip", "llama"),
    # Smallest usable model, for fast unit tests.
    "micro-clip-llama": TinyPreset("clip", "llama", image_size=16, vision_hidden=32, vision_layers=2,
                                   text_hidden=32, text_layers=2, text_heads=2, text_kv_heads=1,
                                   text_intermediate=64),
}


def build_tokenizer(vocab_size: int = 1024, extra_texts: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the synthetic corpus and template text.

    Deterministic: the same inputs give the same vocabulary, so tiny models rebuild identically.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [SPECIAL_TOKENS["pad_token"], SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"],
                SPECIAL_TOKENS["unk_token"], IMAGE_PLACEHOLDER]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # (the "curious human" system text: the vocabulary, and so every tiny model, stays as it was built)
    texts = corpus_texts() + [LLAVA_V1_SYSTEM, LLAVA_MED_SYSTEM,
                              "USER: ASSISTANT: [INST] [/INST] ### Human: Assistant:",
                              "Answer the question using a single word or phrase.",
                              "Please choose from the following two options: [yes, no]"] + (extra_texts or [])
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=4096,
                                   extra_special_tokens={"image_token": IMAGE_PLACEHOLDER},
                                   **SPECIAL_TOKENS)


def _vision_config(preset: TinyPreset) -> CLIPVisionConfig | SiglipVisionConfig:
    common = dict(hidden_size=preset.vision_hidden, intermediate_size=preset.vision_hidden * 2,
                  num_hidden_layers=preset.vision_layers, num_attention_heads=4,
                  image_size=preset.image_size, patch_size=preset.patch_size)
    if preset.vision == "clip":
        return CLIPVisionConfig(projection_dim=preset.vision_hidden, **common)
    return SiglipVisionConfig(**common)


def _text_config(preset: TinyPreset, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig | MistralConfig:
    common = dict(vocab_size=len(tokenizer), hidden_size=preset.text_hidden,
                  intermediate_size=preset.text_intermediate, num_hidden_layers=preset.text_layers,
                  num_attention_heads=preset.text_heads, num_key_value_heads=preset.text_kv_heads,
                  max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                  tie_word_embeddings=False)
    if preset.text == "llama":
        return LlamaConfig(**common)
    return MistralConfig(sliding_window=None, **common)


def build_processor(preset: TinyPreset, tokenizer: PreTrainedTokenizerFast,
                    template: str = "vicuna_v1") -> LlavaProcessor:
    clip = preset.vision == "clip"
    side = {"height": preset.image_size, "width": preset.image_size}
    image_processor = LlavaImageProcessorPil(
        size=side, crop_size=side, do_center_crop=False, do_pad=True,
        image_mean=CLIP_MEAN if clip else [0.5, 0.5, 0.5], image_std=CLIP_STD if clip else [0.5, 0.5, 0.5])
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=preset.patch_size,
        vision_feature_select_strategy="default" if clip else "full",
        num_additional_image_tokens=1 if clip else 0,
        chat_template=TEMPLATES.get(template).jinja())


def build_tiny(name: str, seed: int = 0, vocab_size: int = 1024,
               template: str = "vicuna_v1") -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Random-init tiny LLaVA with its processor; the same (name, seed) always gives the same weights."""
    if name not in PRESETS:
        raise ModelError(f"unknown tiny preset '{name}'; known: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    tokenizer = build_tokenizer(vocab_size)
    processor = build_processor(preset, tokenizer, template)
    clip = preset.vision == "clip"
    config = LlavaConfig(
        vision_config=_vision_config(preset), text_config=_text_config(preset, tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER),
        image_seq_length=(preset.image_size // preset.patch_size) ** 2,
        projector_hidden_act=preset.projector_act,
        vision_feature_select_strategy="default" if clip else "full", vision_feature_layer=-2)
    config.pad_token_id = tokenizer.pad_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, processor
