"""Gemma 3 (``Gemma3ForConditionalGeneration``; MedGemma is one): a fixed block per image.

Every image is resized to the SigLIP tower's square input (pan-and-scan crops off), its patch
features average-pooled to ``mm_tokens_per_image`` soft tokens, and written as
``\\n\\n<start_of_image>`` + soft tokens + ``<end_of_image>\\n\\n``; image positions attend to each
other both ways, which the model reads from ``token_type_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, ProcessorMixin
from transformers.models.gemma3.configuration_gemma3 import Gemma3TextConfig
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

from medvlm.data.image_inputs import ImageTokens
from medvlm.model.families import ModelFamily, register_family
from medvlm.model.families.common import HALF, seeded_model, tiny_text_kwargs
from medvlm.model.families.llava import LLAVA_PREFIXES

GEMMA_TOKENS = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                "turn_start_token": "<start_of_turn>", "eos_token": "<end_of_turn>"}


@dataclass(frozen=True)
class Gemma3(ModelFamily):
    def model_class(self) -> type[Gemma3ForConditionalGeneration]:
        return Gemma3ForConditionalGeneration

    def image_tokens(self, processor: ProcessorMixin, config: Any) -> ImageTokens:
        tokenizer = processor.tokenizer
        return ImageTokens(tokenizer.image_token, fixed=config.mm_tokens_per_image,
                           prefix=f"\n\n{tokenizer.boi_token}", suffix=f"{tokenizer.eoi_token}\n\n")

    def image_placeholder(self, processor: ProcessorMixin) -> str:
        return processor.tokenizer.boi_token

    def tokenizer_tokens(self) -> dict[str, str]:
        return dict(GEMMA_TOKENS)

    def build_tiny(self, preset, tokenizer, chat_template: str, seed: int):
        side = preset.image_size
        patches = side // preset.patch_size
        pooled = max(1, patches // 2)  # 2×2 average pooling, as 64×64 SigLIP patches pool to 16×16
        image_processor = Gemma3ImageProcessorPil(size={"height": side, "width": side}, do_pan_and_scan=False,
                                                  image_mean=HALF, image_std=HALF)
        processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                    image_seq_length=pooled * pooled, chat_template=chat_template or None)
        text = tiny_text_kwargs(preset, tokenizer)
        head_dim = preset.text_hidden // preset.text_heads
        text.update(head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=64, tie_word_embeddings=True)
        vision = dict(model_type="siglip_vision_model", hidden_size=preset.vision_hidden,
                      intermediate_size=preset.vision_hidden * 2, num_hidden_layers=preset.vision_layers,
                      num_attention_heads=4, image_size=side, patch_size=preset.patch_size)
        ids = tokenizer.convert_tokens_to_ids
        config = Gemma3Config(text_config=Gemma3TextConfig(**text), vision_config=vision,
                              mm_tokens_per_image=pooled * pooled, boi_token_index=ids(GEMMA_TOKENS["boi_token"]),
                              eoi_token_index=ids(GEMMA_TOKENS["eoi_token"]),
                              image_token_index=ids(GEMMA_TOKENS["image_token"]), tie_word_embeddings=True)
        return seeded_model(Gemma3ForConditionalGeneration, config, tokenizer.pad_token_id, seed), processor

    def extra_layer_bytes(self, mode: str) -> tuple[int, int, int, int]:
        # Gemma 3 layers add two RMSNorms around attention and MLP and q/k norms, all in float32.
        # Fitted with saved-tensor hooks against Llama layers of five shapes (192-token sequences);
        # weights trained (full) or frozen (stage 1, adapters).
        return (26, 24, 0, 394) if mode == "full" else (14, 20, 0, 394)

    def tower_features(self, tower, config, inputs):
        return tower(inputs["pixel_values"]).last_hidden_state


GEMMA3 = register_family(Gemma3("gemma3", model_types=("gemma3",), prefixes=LLAVA_PREFIXES,
                                projector_modules=("multi_modal_projector",), default_template="gemma",
                                token_type_key="token_type_ids"))
