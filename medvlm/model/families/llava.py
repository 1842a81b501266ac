"""LLaVA-1.5 (``LlavaForConditionalGeneration``): one fixed block of image tokens per image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MistralConfig,
    ProcessorMixin,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from medvlm.data.image_inputs import ImageTokens
from medvlm.model.families import ModelFamily, register_family
from medvlm.model.families.common import (
    CLIP_MEAN,
    CLIP_STD,
    HALF,
    is_clip,
    llava_tower_features,
    seeded_model,
    tiny_text_config,
    tiny_vision_config,
)

LLAVA_PREFIXES = {
    "vision_tower": ("model.vision_tower.",),
    "projector": ("model.multi_modal_projector.",),
    "language_model": ("model.language_model.", "lm_head."),
}


def llava_image_token_count(config: Any) -> int:
    """Image-token positions per image (one tile), as a LLaVA-style forward expects them."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    clip = is_clip(vision)
    return patches + int(clip) - int(config.vision_feature_select_strategy == "default" and clip)


def ensure_llava_processor_fields(processor: ProcessorMixin, config: Any) -> ProcessorMixin:
    """Fill the processor fields transformers 5 needs to expand ``<image>`` correctly."""
    vision = config.vision_config
    if getattr(processor, "patch_size", None) is None:
        processor.patch_size = vision.patch_size
    if getattr(processor, "vision_feature_select_strategy", None) is None:
        processor.vision_feature_select_strategy = config.vision_feature_select_strategy
    if is_clip(vision) and not getattr(processor, "num_additional_image_tokens", 0):
        processor.num_additional_image_tokens = 1
    return processor


def image_token_of(processor: ProcessorMixin) -> str:
    return getattr(processor, "image_token", None) or processor.tokenizer.image_token


def llava_med_v15_config():
    """LLaVA-Med v1.5 shapes (Mistral-7B text, CLIP ViT-L/14-336, mlp2x_gelu projector; vocabulary
    with ``<image>`` and ``<pad>`` added, padded to 64 as the converted checkpoints are)."""
    text = MistralConfig(vocab_size=32064, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                         rope_theta=1e6, rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=32000,
                       projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default", image_seq_length=576)


@dataclass(frozen=True)
class Llava(ModelFamily):
    def model_class(self) -> type[LlavaForConditionalGeneration]:
        return LlavaForConditionalGeneration

    def finish_processor(self, processor: ProcessorMixin, config: Any) -> ProcessorMixin:
        return ensure_llava_processor_fields(processor, config)

    def conversion_processor(self, tokenizer: Any, image_settings: dict[str, Any], token_settings: dict[str, Any],
                             original: dict[str, Any]) -> ProcessorMixin:
        image_processor = LlavaImageProcessorPil(do_pad=original.get("image_aspect_ratio") == "pad", **image_settings)
        return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, **token_settings)

    def image_tokens(self, processor: ProcessorMixin, config: Any) -> ImageTokens:
        return ImageTokens(image_token_of(processor), fixed=llava_image_token_count(config))

    def build_tiny(self, preset, tokenizer, chat_template: str, seed: int):
        clip = preset.vision == "clip"
        side = {"height": preset.image_size, "width": preset.image_size}
        image_processor = LlavaImageProcessorPil(
            size=side, crop_size=side, do_center_crop=False, do_pad=True,
            image_mean=CLIP_MEAN if clip else HALF, image_std=CLIP_STD if clip else HALF)
        processor = LlavaProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=preset.patch_size,
            vision_feature_select_strategy="default" if clip else "full",
            num_additional_image_tokens=1 if clip else 0, chat_template=chat_template)
        config = LlavaConfig(
            vision_config=tiny_vision_config(preset), text_config=tiny_text_config(preset, tokenizer),
            image_token_index=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
            image_seq_length=(preset.image_size // preset.patch_size) ** 2,
            projector_hidden_act=preset.projector_act,
            vision_feature_select_strategy="default" if clip else "full", vision_feature_layer=-2)
        return seeded_model(LlavaForConditionalGeneration, config, tokenizer.pad_token_id, seed), processor

    def tower_features(self, tower, config, inputs):
        return llava_tower_features(tower, config, inputs["pixel_values"])


LLAVA = register_family(Llava("llava", model_types=("llava",), prefixes=LLAVA_PREFIXES,
                              projector_modules=("multi_modal_projector",)))
