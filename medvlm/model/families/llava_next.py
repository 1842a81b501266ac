"""LLaVA-NeXT / v1.6 (``LlavaNextForConditionalGeneration``): AnyRes high-resolution tiling.

Each image is resized into the best of the ``image_grid_pinpoints`` resolutions, cut into tiles
of the tower's input size plus one downscaled view of the whole image; the tiles' features are
stitched back together, the padding the resize added is removed again ("unpad"), and a learned
``image_newline`` ends every row. So the number of positions depends on the image's size: counted
here by transformers' own processor arithmetic, per image, from its (height, width).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor, ProcessorMixin
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from medvlm.data.image_inputs import ImageTokens
from medvlm.model.families import ModelFamily, register_family
from medvlm.model.families.common import (
    CLIP_MEAN,
    CLIP_STD,
    HALF,
    seeded_model,
    tiny_text_config,
    tiny_vision_config,
)
from medvlm.model.families.llava import ensure_llava_processor_fields, image_token_of

NEXT_PREFIXES = {
    "vision_tower": ("model.vision_tower.",),
    # the row-end embedding belongs with the projector: both turn tower features into LM inputs
    "projector": ("model.multi_modal_projector.", "model.image_newline"),
    "language_model": ("model.language_model.", "lm_head."),
}


def tiny_pinpoints(side: int) -> list[list[int]]:
    """AnyRes resolutions for a tiny tower of input ``side``: 1×2, 2×1, 2×2, 1×3 and 3×1 tiles."""
    return [[side * h, side * w] for h, w in ((1, 2), (2, 1), (2, 2), (1, 3), (3, 1))]


def anyres_token_counter(processor: ProcessorMixin) -> Any:
    """(height, width) → image positions, with the processor's own arithmetic (tiles at its
    pinpoints, unpadding, row ends, the base view; CLS dropped under the "default" strategy)."""
    image_processor = processor.image_processor
    tile = image_processor.crop_size if getattr(image_processor, "do_center_crop", False) else image_processor.size
    side_h, side_w = (tile["height"], tile["width"]) if isinstance(tile, dict) else (tile.height, tile.width)

    def count(height: int, width: int) -> int:
        tokens = processor._get_number_of_features(height, width, side_h, side_w)
        return tokens - int(processor.vision_feature_select_strategy == "default")

    return count


def original_pinpoints(original: dict[str, Any]) -> list[list[int]]:
    """An original checkpoint's AnyRes grid: listed as (width, height) there, (height, width) in transformers."""
    pinpoints = original["image_grid_pinpoints"]
    if isinstance(pinpoints, str):
        import ast

        pinpoints = ast.literal_eval(pinpoints)
    return [[int(height), int(width)] for width, height in pinpoints]


@dataclass(frozen=True)
class LlavaNext(ModelFamily):
    def model_class(self) -> type[LlavaNextForConditionalGeneration]:
        return LlavaNextForConditionalGeneration

    def conversion_processor(self, tokenizer: Any, image_settings: dict[str, Any], token_settings: dict[str, Any],
                             original: dict[str, Any]) -> ProcessorMixin:
        image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=original_pinpoints(original), do_pad=True,
                                                     **image_settings)
        return LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, **token_settings)

    def finish_processor(self, processor: ProcessorMixin, config: Any) -> ProcessorMixin:
        return ensure_llava_processor_fields(processor, config)

    def dynamic_resolution(self) -> bool:
        return True

    def image_tokens(self, processor: ProcessorMixin, config: Any) -> ImageTokens:
        return ImageTokens(image_token_of(processor), per_size=anyres_token_counter(processor))

    def build_tiny(self, preset, tokenizer, chat_template: str, seed: int):
        clip = preset.vision == "clip"
        side = preset.image_size
        pinpoints = tiny_pinpoints(side)
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pinpoints,
            image_mean=CLIP_MEAN if clip else HALF, image_std=CLIP_STD if clip else HALF)
        strategy = "default" if clip else "full"
        processor = LlavaNextProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=preset.patch_size,
            vision_feature_select_strategy=strategy, num_additional_image_tokens=1 if clip else 0,
            chat_template=chat_template or None)
        config = LlavaNextConfig(
            vision_config=tiny_vision_config(preset), text_config=tiny_text_config(preset, tokenizer),
            image_token_index=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
            image_grid_pinpoints=pinpoints, image_seq_length=(side // preset.patch_size) ** 2,
            projector_hidden_act=preset.projector_act, vision_feature_select_strategy=strategy,
            vision_feature_layer=-2)
        return seeded_model(LlavaNextForConditionalGeneration, config, tokenizer.pad_token_id, seed), processor

    def tower_features(self, tower, config, inputs):
        base_view = inputs["pixel_values"][:, 0]  # the whole image at the tower's input size
        hidden = tower(base_view, output_hidden_states=True).hidden_states[config.vision_feature_layer]
        return hidden[:, 1:] if config.vision_feature_select_strategy == "default" else hidden


LLAVA_NEXT = register_family(LlavaNext("llava_next", model_types=("llava_next",), prefixes=NEXT_PREFIXES,
                                       projector_modules=("multi_modal_projector",),
                                       image_inputs=("pixel_values", "image_sizes")))
