"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): AnyRes on a SigLIP tower with a
Qwen2 language model.

Like LLaVA-NeXT, with OneVision's ``anyres_max_N`` rule: when the unpadded tile grid holds more
than N tiles' worth of features it is downsampled back to about N (bilinear), so large images stay
affordable. Counted, per image, by transformers' own processor arithmetic.

Multi-image samples are not supported yet: transformers' OneVision gives every image of a
multi-image sample only its base view (no tiles), which needs the sample's images prepared together;
such samples are refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
    ProcessorMixin,
)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

from medvlm.data.image_inputs import ImageTokens
from medvlm.model.families import register_family
from medvlm.model.families.common import (
    HALF,
    image_only,
    load_image_processor_only,
    seeded_model,
    tiny_text_kwargs,
    tiny_vision_config,
)
from medvlm.model.families.llava_next import NEXT_PREFIXES, LlavaNext, anyres_token_counter

ONEVISION_TOKENS = {"image_token": "<image>", "video_token": "<video>", "turn_start_token": "<|im_start|>",
                    "eos_token": "<|im_end|>"}
TINY_MAX_TILES = 4  # tiny grids go to 3×3 tiles, so the anyres_max rule is exercised


@dataclass(frozen=True)
class LlavaOnevision(LlavaNext):
    def model_class(self) -> type[LlavaOnevisionForConditionalGeneration]:
        return LlavaOnevisionForConditionalGeneration

    def load_processor(self, path: Path) -> ProcessorMixin:
        return load_image_processor_only(LlavaOnevisionProcessor, path)

    def finish_processor(self, processor: ProcessorMixin, config: Any) -> ProcessorMixin:
        return processor

    def image_tokens(self, processor: ProcessorMixin, config: Any) -> ImageTokens:
        return ImageTokens(processor.image_token, per_size=anyres_token_counter(processor), max_images=1)

    def tokenizer_tokens(self) -> dict[str, str]:
        return dict(ONEVISION_TOKENS)

    def build_tiny(self, preset, tokenizer, chat_template: str, seed: int):
        side = preset.image_size
        pinpoints = [[side * h, side * w] for h in (1, 2, 3) for w in (1, 2, 3)]
        tokens_per_tile = (side // preset.patch_size) ** 2
        image_processor = LlavaOnevisionImageProcessorPil(size={"height": side, "width": side},
                                                          image_grid_pinpoints=pinpoints, image_mean=HALF,
                                                          image_std=HALF)
        processor = image_only(LlavaOnevisionProcessor)(
            image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=tokens_per_tile,
            vision_feature_select_strategy="full", vision_aspect_ratio=f"anyres_max_{TINY_MAX_TILES}",
            chat_template=chat_template or None)
        text = {"model_type": "qwen2", **tiny_text_kwargs(preset, tokenizer)}
        config = LlavaOnevisionConfig(
            vision_config=tiny_vision_config(replace(preset, vision="siglip")), text_config=text,
            image_token_index=tokenizer.convert_tokens_to_ids(ONEVISION_TOKENS["image_token"]),
            video_token_index=tokenizer.convert_tokens_to_ids(ONEVISION_TOKENS["video_token"]),
            image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full", vision_feature_layer=-1,
            vision_aspect_ratio=f"anyres_max_{TINY_MAX_TILES}", projector_hidden_act=preset.projector_act)
        return seeded_model(LlavaOnevisionForConditionalGeneration, config, tokenizer.pad_token_id, seed), processor


LLAVA_ONEVISION = register_family(LlavaOnevision(
    "llava_onevision", model_types=("llava_onevision",), prefixes=NEXT_PREFIXES,
    projector_modules=("multi_modal_projector",), default_template="chatml", multi_image=False,
    image_inputs=("pixel_values", "image_sizes", "batch_num_images")))
