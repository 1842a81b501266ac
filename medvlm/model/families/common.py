"""Pieces several families share: tiny vision and text sub-configs, CLIP-style tower features, and
loading processors without torchvision."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import CLIPVisionConfig, LlamaConfig, MistralConfig, ProcessorMixin, SiglipVisionConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from medvlm.model.presets import TinyPreset

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]


def tiny_vision_config(preset: TinyPreset) -> CLIPVisionConfig | SiglipVisionConfig:
    common = dict(hidden_size=preset.vision_hidden, intermediate_size=preset.vision_hidden * 2,
                  num_hidden_layers=preset.vision_layers, num_attention_heads=4,
                  image_size=preset.image_size, patch_size=preset.patch_size)
    if preset.vision == "clip":
        return CLIPVisionConfig(projection_dim=preset.vision_hidden, **common)
    return SiglipVisionConfig(**common)


def tiny_text_kwargs(preset: TinyPreset, tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    return dict(vocab_size=len(tokenizer), hidden_size=preset.text_hidden,
                intermediate_size=preset.text_intermediate, num_hidden_layers=preset.text_layers,
                num_attention_heads=preset.text_heads, num_key_value_heads=preset.text_kv_heads,
                max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                tie_word_embeddings=False)


def tiny_text_config(preset: TinyPreset, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig | MistralConfig:
    common = tiny_text_kwargs(preset, tokenizer)
    if preset.text == "llama":
        return LlamaConfig(**common)
    return MistralConfig(sliding_window=None, **common)


def seeded_model(model_class: type[torch.nn.Module], config: Any, pad_token_id: int | None,
                 seed: int) -> torch.nn.Module:
    """A random-init tiny model, the same bits for the same ``seed`` whatever ran before (the global
    random state is left as it was)."""
    config.pad_token_id = pad_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config)


def is_clip(vision_config: Any) -> bool:
    return vision_config.model_type == "clip_vision_model"


def llava_tower_features(tower: torch.nn.Module, config: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """The tower's patch features at ``vision_feature_layer`` (CLS dropped under "default"), the
    features every LLaVA-style projector reads."""
    hidden = tower(pixel_values, output_hidden_states=True).hidden_states[config.vision_feature_layer]
    if config.vision_feature_select_strategy == "default" and is_clip(config.vision_config):
        hidden = hidden[:, 1:]
    return hidden


@functools.cache
def torchvision_works() -> bool:
    """Whether torchvision imports: the registry's CPU wheel installs beside the CPU torch here but
    fails at import ("operator torchvision::nms does not exist")."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: use the image-only processor
        return False
    return True


@functools.cache
def image_only(processor_class: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``processor_class`` without its video processor, which needs torchvision.

    transformers reads a processor's parts from its ``__init__`` signature, so this subclass (same
    class name, so saved ``processor_config.json`` files name the real class and plain transformers
    loads them) takes only the image processor and the tokenizer; the image processor loads on its
    PIL backend when torchvision is missing.
    """

    # transformers reads the parts from the __init__ signature and the settings it saves and reloads
    # (num_image_tokens, vision_aspect_ratio, ...) from the code object's argument names, so the
    # stand-in has a real __init__ with the parent's arguments, video_processor left out
    signature = inspect.signature(processor_class.__init__)
    names = [name for name, p in signature.parameters.items()
             if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name not in ("self", "video_processor")]
    defaults = {name: signature.parameters[name].default for name in names}
    arguments = ", ".join(f"{name}=_defaults[{name!r}]" for name in names)
    passed = ", ".join(f"{name}={name}" for name in names)
    namespace: dict[str, Any] = {"_defaults": defaults, "_parent": processor_class}
    exec(f"def __init__(self, {arguments}, **kwargs):\n"  # noqa: S102 - generated from the parent's signature
         f"    _parent.__init__(self, {passed}, video_processor=None, **kwargs)\n", namespace)
    return type(processor_class.__name__, (processor_class,),
                {"__init__": namespace["__init__"], "__module__": __name__, "__doc__": image_only.__doc__})


def load_image_processor_only(processor_class: type[ProcessorMixin], path: Path) -> ProcessorMixin:
    """The saved processor; without torchvision, its image-only version (no video processor)."""
    if torchvision_works():
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)
    return image_only(processor_class).from_pretrained(path)
