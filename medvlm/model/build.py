"""Load or build a model of any family medvlm trains (:mod:`medvlm.model.families`).

Also the freeze plan: which of the three components (vision tower, projector, language model)
each curriculum stage trains, from the family's parameter prefixes; and the data-side objects a
family's model needs (image-token counts, image preparation, collation).
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import PreTrainedModel, ProcessorMixin

from medvlm.data.collate import Collator, ConversationEncoder
from medvlm.data.image_inputs import ImageTokens
from medvlm.data.images import ImagePreparer
from medvlm.data.templates import Template
from medvlm.errors import PICKLE_REFUSED, ModelError, first_line, shorten
from medvlm.io import read_json
from medvlm.model.families import (
    COMPONENTS,
    ModelFamily,
    family_of,
    family_of_dir,
    family_of_model,
    resolve_family,
)
from medvlm.model.families.llava import LLAVA, llava_image_token_count
from medvlm.recipe import ModelSpec, Recipe

log = logging.getLogger("medvlm")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

STAGE_TRAINABLE: dict[str, tuple[str, ...]] = {
    "contrastive": ("vision_tower",),  # CLIP-style pretraining of a tiny tower (medvlm.train.contrastive)
    "pretrain": ("projector", "language_model"),  # a base LLaVA on top of a pretrained tower
    "align": ("projector",),  # LLaVA-Med stage 1
    "instruct": ("projector", "language_model"),  # stage 2: vision tower always frozen
    "finetune": ("projector", "language_model"),  # stage 3
}



def trainable_components(recipe: Recipe) -> tuple[str, ...]:
    """The components a recipe's stage trains: ``train.trainable`` when given, else the stage's plan."""
    return tuple(recipe.train.trainable) if recipe.train.trainable else STAGE_TRAINABLE[recipe.train.stage]


ORIGINAL_LLAVA_TYPES = {"llava_llama", "llava_mistral", "llava_mpt", "llava_qwen", "llava_med"}


def component_of(param_name: str, family: ModelFamily | None = None) -> str | None:
    """Which component a parameter belongs to (peft's ``base_model.model.`` prefix tolerated);
    ``family`` defaults to LLaVA-1.5."""
    return (family or LLAVA).component_of(param_name)


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
    unknown = wanted - set(COMPONENTS)
    if unknown:
        raise ModelError(f"unknown component(s) {sorted(unknown)}; known: {sorted(COMPONENTS)}")
    family = family_of_model(model) or LLAVA
    return summarize(model, lambda name: family.component_of(name) in wanted)


def summarize(model: torch.nn.Module, decide=None) -> FreezeSummary:
    """Count trainable/total parameters per component; ``decide(name)`` sets requires_grad first."""
    family = family_of_model(model) or LLAVA
    trainable: dict[str, int] = {}
    total: dict[str, int] = {}
    for name, param in model.named_parameters():
        if decide is not None:
            param.requires_grad_(bool(decide(name)))
        component = family.component_of(name) or "other"
        total[component] = total.get(component, 0) + param.numel()
        if param.requires_grad:
            trainable[component] = trainable.get(component, 0) + param.numel()
    return FreezeSummary(trainable, total)


def num_image_tokens(model_config) -> int:
    """Image-token positions per image of a LLaVA-1.5 model (other families: :func:`image_tokens_for`)."""
    return llava_image_token_count(model_config)


def check_llava_dir(path: Path, family: str = "auto", trust_remote_code: bool = False) -> ModelFamily:
    """The family of a Hugging Face model directory, or a :class:`ModelError` saying what it is instead
    (original LLaVA checkpoints are told to convert).

    A config naming its own code (``auto_map``) is refused unless ``trust_remote_code``: the classes
    transformers ships would otherwise load the weights into an architecture the directory says is
    not its own.
    """
    config_file = path / "config.json"
    if not path.is_dir():
        raise ModelError(f"{path}: model directory not found")
    if not config_file.is_file():
        raise ModelError(f"{path}: no config.json; expected a Hugging Face model directory")
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise ModelError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    if config.get("auto_map") and not trust_remote_code:
        raise ModelError(f"{config_file}: key 'auto_map': the directory ships its own model code "
                         f"({shorten(config['auto_map'])}); medvlm loads the classes transformers ships. "
                         "Remove auto_map if these are standard weights, or set model.trust_remote_code: "
                         "true to run that code")
    model_type = config.get("model_type")
    if model_type in ORIGINAL_LLAVA_TYPES or "mm_vision_tower" in config:
        raise ModelError(
            f"{config_file}: model_type '{model_type}' is an original LLaVA/LLaVA-Med checkpoint, not the "
            f"Hugging Face llava format; convert it first: medvlm convert-llava {path} DST")
    return family_of_dir(path, family)


def ensure_processor_fields(processor: ProcessorMixin, model_config) -> ProcessorMixin:
    """Fill the processor fields transformers 5 needs to expand image tokens correctly."""
    return family_of(model_config).finish_processor(processor, model_config)


# -- what the data side needs from a model ------------------------------------------------------------


def image_tokens_for(model_config, processor: ProcessorMixin) -> ImageTokens:
    """How many positions each image takes in this model, and the text standing for them."""
    return family_of(model_config).image_tokens(processor, model_config)


def encoder_for(model_config, processor: ProcessorMixin, template: Template, max_length: int,
                system_prompt: str | None = None) -> ConversationEncoder:
    """The conversation encoder of a model: its tokenizer and its family's image blocks."""
    return ConversationEncoder(processor.tokenizer, template, image_tokens_for(model_config, processor), max_length,
                               system_prompt)


def preparer_for(model_config, processor: ProcessorMixin, aspect: str = "pad") -> ImagePreparer:
    """Image preparation for a model's processor (AnyRes / dynamic-resolution families size images
    themselves)."""
    family = family_of(model_config)
    return ImagePreparer(processor.image_processor, aspect, dynamic=family.dynamic_resolution(),  # type: ignore[arg-type]
                         side=family.base_side(processor), keys=family.image_inputs)


def collator_for(model_config, processor: ProcessorMixin, padding_side: str = "right") -> Collator:
    """The batch collator of a model: padding, image tensors, and the family's token-type ids."""
    family = family_of(model_config)
    token_types = None
    if family.token_type_key is not None:
        token_id = processor.tokenizer.convert_tokens_to_ids(image_tokens_for(model_config, processor).token)
        token_types = (family.token_type_key, token_id)
    return Collator(processor.tokenizer.pad_token_id, padding_side=padding_side, token_types=token_types)


def chat_template_for(model_config, processor: ProcessorMixin, template: str) -> str:
    """The chat template saved with a model trained on ``template`` (the family's image placeholder)."""
    return family_of(model_config).chat_template(template, processor)


def load_pretrained(path: str | Path, *, dtype: str = "float32", attn_implementation: str = "sdpa",
                    trust_remote_code: bool = False, quantization=None, family: str = "auto",
                    **kwargs) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Model and processor of a local Hugging Face model directory, loaded through its family.

    ``quantization`` (a ``BitsAndBytesConfig``, see :mod:`medvlm.model.quant`) loads the language
    model's linear layers in 4 or 8 bits, placed on this process's device; what stays unquantised
    comes from the family's prefixes, so the quantisation config is finished here.
    """
    path = Path(path)
    if quantization is None and _is_bare_adapter_dir(path):
        return _load_merged_adapter(path, dtype=dtype, attn_implementation=attn_implementation,
                                    trust_remote_code=trust_remote_code)
    architecture = check_llava_dir(path, family, trust_remote_code)
    if trust_remote_code:
        log.warning("WARNING: model.trust_remote_code is true: Python code shipped in %s will run with your "
                    "permissions; use it only for a directory whose code you have read", path.resolve())
    if quantization is not None:
        from medvlm.model.quant import for_family, quantized_device_map

        kwargs = {"quantization_config": for_family(quantization, architecture),
                  "device_map": quantized_device_map(), **kwargs}
    try:
        model = architecture.model_class().from_pretrained(
            path, dtype=DTYPES[dtype], attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code, **kwargs)
        processor = architecture.load_processor(path)
    except (OSError, SafetensorError) as exc:  # a missing or truncated weights / tokenizer file
        raise ModelError(f"{path}: cannot load model or processor: {first_line(exc)}") from None
    except (ValueError, TypeError, StrictDataclassError) as exc:  # a damaged tokenizer.json, a missing tokenizer,
        # config values of the wrong type: transformers' own message, named, as one line
        raise ModelError(f"{path}: cannot load model or processor ({first_line(exc)})") from None
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met an object that is no plain tensor
        raise ModelError(f"{path}: a pickled weights file (pytorch_model.bin) {PICKLE_REFUSED}; use safetensors "
                         "weights") from None
    except RuntimeError as exc:
        if "mismatch" not in str(exc):
            raise
        raise ModelError(f"{path}: the weights do not match config.json ({first_line(exc)})") from None
    if quantization is not None:
        from medvlm.model.quant import avoid_cpu_packing_bug

        avoid_cpu_packing_bug(model)
    return model, ensure_processor_fields(processor, model.config)


def has_processor(path: Path) -> bool:
    return (path / "processor_config.json").is_file() or (path / "preprocessor_config.json").is_file()


def saved_processor(path: Path, fallback: ProcessorMixin, model_config) -> ProcessorMixin:
    """The processor saved with adapter weights (checkpoints carry one), else the base model's."""
    if has_processor(path):
        return ensure_processor_fields(family_of(model_config).load_processor(path), model_config)
    return fallback


def _is_bare_adapter_dir(path: Path) -> bool:
    from medvlm.model.adapters import is_adapter_dir

    return is_adapter_dir(path) and not (path / "config.json").is_file()


def _load_merged_adapter(path: Path, **options) -> tuple[PreTrainedModel, ProcessorMixin]:
    """An adapter directory (``peft.merge_at_end: false`` runs, adapter exports): base + adapter, merged."""
    from medvlm.model.adapters import ADAPTER_CONFIG, adapter_base, merge_adapter

    base = adapter_base(path)
    if not base:
        raise ModelError(f"{path / ADAPTER_CONFIG}: names no base model directory (base_model_name_or_path)")
    model, processor = load_pretrained(base, **options)
    model = merge_adapter(model, path)
    return model, saved_processor(path, processor, model.config)


def load_model(spec: ModelSpec, template: str = "vicuna_v1", quantization=None,
               ) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The model a recipe names: a local HF model directory or a tiny preset of ``model.family``
    (optionally quantised)."""
    if spec.path:
        return load_pretrained(spec.path, dtype=spec.dtype, attn_implementation=spec.attn_implementation,
                               trust_remote_code=spec.trust_remote_code, quantization=quantization,
                               family=spec.family)
    if spec.preset:
        from medvlm.model.tiny import build_tiny

        model, processor = build_tiny(spec.preset, seed=spec.init_seed, vocab_size=spec.tokenizer_vocab_size,
                                      template=template, family=resolve_family(spec.family, None).name)
        model.config._attn_implementation = spec.attn_implementation
        model = model.to(DTYPES[spec.dtype])
        if quantization is not None:
            # bitsandbytes quantises while loading: give the tiny model a directory to load from.
            with tempfile.TemporaryDirectory(prefix="medvlm-preset-") as tmp:
                model.save_pretrained(tmp)
                processor.save_pretrained(tmp)
                model, _ = load_pretrained(tmp, dtype=spec.dtype, attn_implementation=spec.attn_implementation,
                                           quantization=quantization)
            model.config._name_or_path = model.name_or_path = ""  # the temporary directory is gone
        return model, processor
    raise ModelError("the recipe names no model: set model.path (a local Hugging Face model directory) "
                     "or model.preset (e.g. tiny-clip-llama)")
