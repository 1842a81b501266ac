"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): images at their own (dynamic) resolution.

The processor resizes each image to multiples of ``patch_size × merge_size`` within its pixel
budget, cuts it into patches (``pixel_values``: every image's patches in one flat tensor, sized by
``image_grid_thw``), and the tower's merger turns each 2×2 group into one position: so an image
takes ``t·h·w / merge²`` positions between ``<|vision_start|>`` and ``<|vision_end|>``. The text
model places them with 3-D rotary positions, computed from ``mm_token_type_ids``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import ProcessorMixin, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from medvlm.data.image_inputs import ImageTokens
from medvlm.model.families import ModelFamily, register_family
from medvlm.model.families.common import (
    CLIP_MEAN,
    CLIP_STD,
    image_only,
    load_image_processor_only,
    seeded_model,
    tiny_text_kwargs,
)

QWEN_PREFIXES = {
    "vision_tower": ("model.visual.",),
    "projector": ("model.visual.merger.",),  # inside the visual module: the longest prefix wins
    "language_model": ("model.language_model.", "lm_head."),
}
QWEN_TOKENS = {"image_token": "<|image_pad|>", "vision_start_token": "<|vision_start|>",
               "vision_end_token": "<|vision_end|>", "video_token": "<|video_pad|>",
               "turn_start_token": "<|im_start|>", "eos_token": "<|im_end|>"}
REFERENCE_MERGED_SIDE = 16  # planner's reference image: 16×16 positions (448 px for Qwen2.5-VL's 14-px patches)


def mrope_section(head_dim: int) -> list[int]:
    """Rotary frequencies per (time, height, width) axis, in Qwen2.5-VL's 1/4, 3/8, 3/8 split."""
    half = head_dim // 2
    time = half // 4
    height = (half - time) // 2
    return [time, height, half - time - height]


@dataclass(frozen=True)
class Qwen2_5_VL(ModelFamily):
    def model_class(self) -> type[Qwen2_5_VLForConditionalGeneration]:
        return Qwen2_5_VLForConditionalGeneration

    def load_processor(self, path: Path) -> ProcessorMixin:
        return load_image_processor_only(Qwen2_5_VLProcessor, path)

    def dynamic_resolution(self) -> bool:
        return True

    def image_tokens(self, processor: ProcessorMixin, config: Any) -> ImageTokens:
        image_processor = processor.image_processor
        merge = image_processor.merge_size ** 2

        def count(height: int, width: int) -> int:
            return image_processor.get_number_of_image_patches(height, width, {}) // merge

        return ImageTokens(processor.image_token, per_size=count, prefix=QWEN_TOKENS["vision_start_token"],
                           suffix=QWEN_TOKENS["vision_end_token"])

    def base_side(self, processor: ProcessorMixin) -> int | None:
        image_processor = processor.image_processor
        budget = image_processor.size["longest_edge"] if isinstance(image_processor.size, dict) \
            else image_processor.size.longest_edge
        side = image_processor.patch_size * image_processor.merge_size * REFERENCE_MERGED_SIDE
        return min(side, int(math.isqrt(budget)))

    def image_placeholder(self, processor: ProcessorMixin) -> str:
        return f"{QWEN_TOKENS['vision_start_token']}{processor.image_token}{QWEN_TOKENS['vision_end_token']}"

    def tokenizer_tokens(self) -> dict[str, str]:
        return dict(QWEN_TOKENS)

    def build_tiny(self, preset, tokenizer, chat_template: str, seed: int):
        patch, merge = max(2, preset.patch_size // 2), 2
        side = preset.image_size
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=patch, merge_size=merge, temporal_patch_size=2, min_pixels=(patch * merge) ** 2,
            max_pixels=(2 * side) ** 2, image_mean=CLIP_MEAN, image_std=CLIP_STD)
        processor = image_only(Qwen2_5_VLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                                     chat_template=chat_template or None)
        text = tiny_text_kwargs(preset, tokenizer)
        head_dim = preset.text_hidden // preset.text_heads
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                                   "mrope_section": mrope_section(head_dim)}
        vision = dict(depth=preset.vision_layers, hidden_size=preset.vision_hidden,
                      intermediate_size=preset.vision_hidden * 2, num_heads=4, patch_size=patch,
                      spatial_merge_size=merge, temporal_patch_size=2, window_size=2 * patch * merge,
                      out_hidden_size=preset.text_hidden, fullatt_block_indexes=[preset.vision_layers - 1])
        ids = tokenizer.convert_tokens_to_ids
        config = Qwen2_5_VLConfig(
            text_config=text, vision_config=vision, image_token_id=ids(QWEN_TOKENS["image_token"]),
            video_token_id=ids(QWEN_TOKENS["video_token"]),
            vision_start_token_id=ids(QWEN_TOKENS["vision_start_token"]),
            vision_end_token_id=ids(QWEN_TOKENS["vision_end_token"]), tie_word_embeddings=False)
        return seeded_model(Qwen2_5_VLForConditionalGeneration, config, tokenizer.pad_token_id, seed), processor

    def vision_tower(self, model):
        return model.model.visual

    def tower_features(self, tower, config, inputs):
        grid = inputs["image_grid_thw"]
        hidden = tower(inputs["pixel_values"], grid_thw=grid).last_hidden_state
        return hidden.reshape(len(grid), -1, hidden.shape[-1])  # images of one size (contrastive pairs)

    def vision_hidden_size(self, config: Any) -> int:
        return config.vision_config.hidden_size


QWEN2_5_VL = register_family(Qwen2_5_VL("qwen2_5_vl", model_types=("qwen2_5_vl",), prefixes=QWEN_PREFIXES,
                                        projector_modules=("merger",), default_template="chatml",
                                        token_type_key="mm_token_type_ids",
                                        image_inputs=("pixel_values", "image_grid_thw")))
