"""Load or build the one model type medvlm trains: ``LlavaForConditionalGeneration``.

Also the freeze plan: which of the three components (vision tower, projector, language model)
each curriculum stage trains.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration, ProcessorMixin

from medvlm.errors import ModelError
from medvlm.recipe import ModelSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Parameter-name prefixes of each component (HF llava layout).
COMPONENT_PREFIXES: dict[str, tuple[str, ...]] = {
    "vision_tower": ("model.vision_tower.",),
    "projector": ("model.multi_modal_projector.",),
    "language_model": ("model.language_model.", "lm_head."),
}

STAGE_TRAINABLE: dict[str, tuple[str, ...]] = {
    "contrastive": ("vision_tower",),  # CLIP-style pretraining of a tiny tower (medvlm.train.contrastive)
    "pretrain": ("projector", "language_model"),  # a base LLaVA on top of a pretrained tower
    "align": ("projector",),  # LLaVA-Med stage 1
    "instruct": ("projector", "language_model"),  # stage 2: vision tower always frozen
    "finetune": ("projector", "language_model"),  # stage 3
}

ORIGINAL_LLAVA_TYPES = {"llava_llama", "llava_mistral", "llava_mpt", "llava_qwen", "llava_med"}


def component_of(param_name: str) -> str | None:
    """Which component a parameter belongs to (peft's ``base_model.model.`` prefix tolerated)."""
    name = param_name.removeprefix("base_model.model.")
    for component, prefixes in COMPONENT_PREFIXES.items():
        if name.startswith(prefixes):
            return component
    return None


@dataclass
class FreezeSummary:
    trainable: dict[str, int]
    total: dict[str, int]

    def describe(self) -> str:
        parts = [f"{name}: {self.trainable.get(name, 0):,}/{count:,}" for name, count in self.total.items()]
        return "trainable parameters — " + ", ".join(parts)


def apply_freeze_plan(model: torch.nn.Module, trainable: Iterable[str]) -> FreezeSummary:
    """Set ``requires_grad`` so exactly the named components train."""
    wanted = set(trainable)
    unknown = wanted - set(COMPONENT_PREFIXES)
    if unknown:
        raise ModelError(f"unknown component(s) {sorted(unknown)}; known: {sorted(COMPONENT_PREFIXES)}")
    return summarize(model, lambda name: component_of(name) in wanted)


def summarize(model: torch.nn.Module, decide=None) -> FreezeSummary:
    """Count trainable/total parameters per component; ``decide(name)`` sets requires_grad first."""
    trainable: dict[str, int] = {}
    total: dict[str, int] = {}
    for name, param in model.named_parameters():
        if decide is not None:
            param.requires_grad_(bool(decide(name)))
        component = component_of(name) or "other"
        total[component] = total.get(component, 0) + param.numel()
        if param.requires_grad:
            trainable[component] = trainable.get(component, 0) + param.numel()
    return FreezeSummary(trainable, total)


def num_image_tokens(model_config) -> int:
    """Image-token positions per image, as the model's forward expects them."""
    vision = model_config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    has_cls = vision.model_type == "clip_vision_model"
    strategy = model_config.vision_feature_select_strategy
    return patches + int(has_cls) - int(strategy == "default" and has_cls)


def check_llava_dir(path: Path) -> None:
    config_file = path / "config.json"
    if not path.is_dir():
        raise ModelError(f"{path}: model directory not found")
    if not config_file.is_file():
        raise ModelError(f"{path}: no config.json; expected a Hugging Face llava model directory")
    config = json.loads(config_file.read_text())
    model_type = config.get("model_type")
    if model_type in ORIGINAL_LLAVA_TYPES or "mm_vision_tower" in config:
        raise ModelError(
            f"{config_file}: model_type '{model_type}' is an original LLaVA/LLaVA-Med checkpoint, not the "
            f"Hugging Face llava format; convert it first: medvlm convert-llava {path} DST")
    if model_type != "llava":
        raise ModelError(f"{config_file}: model_type is '{model_type}', expected 'llava' "
                         "(LlavaForConditionalGeneration)")


def ensure_processor_fields(processor: ProcessorMixin, model_config) -> ProcessorMixin:
    """Fill the processor fields transformers 5 needs to expand ``<image>`` correctly."""
    vision = model_config.vision_config
    if getattr(processor, "patch_size", None) is None:
        processor.patch_size = vision.patch_size
    if getattr(processor, "vision_feature_select_strategy", None) is None:
        processor.vision_feature_select_strategy = model_config.vision_feature_select_strategy
    if vision.model_type == "clip_vision_model" and not getattr(processor, "num_additional_image_tokens", 0):
        processor.num_additional_image_tokens = 1
    return processor


def load_pretrained(path: str | Path, *, dtype: str = "float32", attn_implementation: str = "sdpa",
                    trust_remote_code: bool = False, **kwargs) -> tuple[LlavaForConditionalGeneration, ProcessorMixin]:
    path = Path(path)
    check_llava_dir(path)
    try:
        model = LlavaForConditionalGeneration.from_pretrained(
            path, dtype=DTYPES[dtype], attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code, **kwargs)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise ModelError(f"{path}: cannot load model or processor: {exc}") from None
    return model, ensure_processor_fields(processor, model.config)


def load_model(spec: ModelSpec, template: str = "vicuna_v1") -> tuple[LlavaForConditionalGeneration, ProcessorMixin]:
    """The model a recipe names: a local HF llava directory or a tiny preset."""
    if spec.path:
        return load_pretrained(spec.path, dtype=spec.dtype, attn_implementation=spec.attn_implementation,
                               trust_remote_code=spec.trust_remote_code)
    if spec.preset:
        from medvlm.model.tiny import build_tiny

        model, processor = build_tiny(spec.preset, seed=spec.init_seed, vocab_size=spec.tokenizer_vocab_size,
                                      template=template)
        model.config._attn_implementation = spec.attn_implementation
        return model.to(DTYPES[spec.dtype]), processor
    raise ModelError("the recipe names no model: set model.path (a local Hugging Face llava directory) "
                     "or model.preset (e.g. tiny-clip-llama)")
