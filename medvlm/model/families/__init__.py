"""Model families: one per Hugging Face architecture medvlm trains, registered by name.

A :class:`ModelFamily` says everything the rest of medvlm needs to know about an architecture:

* which transformers class loads it and which ``config.json`` ``model_type`` values it covers;
* where its parts live — full parameter-name prefixes of the vision tower, the projector and the
  language model (with ``lm_head``) — from which the freeze plan, the modules bitsandbytes keeps in
  full precision, the default LoRA targets and the projector's learning-rate group are all derived;
* how its processor turns images into model inputs: the image token, how many positions each image
  takes (fixed, or from the image's size for AnyRes tiling and dynamic resolution), the text around
  an image block, the extra tensors (``image_sizes``, ``image_grid_thw``) and token-type ids;
* its default conversation template and the image placeholder its chat template writes;
* how to build a tiny random model of it offline (tests, the CPU demo), from a shared
  :class:`~medvlm.model.presets.TinyPreset`.

Adding an architecture is one new module in this package with a registered family (and its tiny
test configuration); nothing else lists family names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medvlm import registry
from medvlm.data.image_inputs import ImageTokens
from medvlm.errors import ModelError
from medvlm.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

    from medvlm.model.presets import TinyPreset

COMPONENTS = ("vision_tower", "projector", "language_model")
LORA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class ModelFamily:
    """One architecture. Subclasses (one module each) fill in the model-specific methods."""

    name: str
    model_types: tuple[str, ...]
    # component -> full parameter-name prefixes (each ending in '.', or an exact parameter name)
    prefixes: Mapping[str, tuple[str, ...]]
    # module names peft trains in full when the stage trains the projector (``modules_to_save``)
    projector_modules: tuple[str, ...]
    default_template: str = "vicuna_v1"
    # what of the image processor's output the model takes, per image
    image_inputs: tuple[str, ...] = ("pixel_values",)
    multi_image: bool = True
    # the collator adds ``input_ids == image token`` under this key (Qwen's mrope, Gemma's attention)
    token_type_key: str | None = None

    # -- transformers classes ------------------------------------------------------------------------
    def model_class(self) -> type[PreTrainedModel]:
        raise NotImplementedError

    def config_class(self) -> type:
        return self.model_class().config_class

    # -- processor -------------------------------------------------------------------------------------
    def load_processor(self, path: Path) -> ProcessorMixin:
        """The processor saved in ``path``; families whose transformers processor wants torchvision
        (video) load an image-only one on the PIL backend (see :mod:`medvlm.model.families.processors`)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)

    def conversion_processor(self, tokenizer: Any, image_settings: dict[str, Any], token_settings: dict[str, Any],
                             original: dict[str, Any]) -> ProcessorMixin:
        """The processor of an original LLaVA checkpoint converted to this family (``medvlm convert-llava``):
        the image processor (PIL backend) from ``image_settings``, tokens from ``token_settings``."""
        raise ModelError(f"original LLaVA checkpoints do not convert to the {self.name} family")

    def finish_processor(self, processor: ProcessorMixin, config: Any) -> ProcessorMixin:
        """Fill processor fields transformers needs and older saved processors lack."""
        return processor

    def image_tokens(self, processor: ProcessorMixin, config: Any) -> ImageTokens:
        """How many positions an image takes and the text standing for it."""
        raise NotImplementedError

    def dynamic_resolution(self) -> bool:
        """Whether the processor sizes images itself (AnyRes tiles, dynamic resolution): medvlm then
        only pads to a square under ``image_aspect_ratio: pad`` and never resizes first."""
        return False

    def base_side(self, processor: ProcessorMixin) -> int | None:
        """The square side ``image_aspect_ratio: resize`` squashes to and the planner's reference image
        has (None: the image processor's own input size)."""
        return None

    def image_placeholder(self, processor: ProcessorMixin) -> str:
        """What the saved chat template writes for an image (the processor expands it)."""
        return "<image>"

    def chat_template(self, template: str, processor: ProcessorMixin) -> str:
        """The Jinja chat template of medvlm's ``template`` (its default system prompt) for this family."""
        from medvlm.data.templates import get_template

        return self.place_images(get_template(template).jinja(), processor)

    def place_images(self, jinja: str, processor: ProcessorMixin) -> str:
        """A medvlm chat template with its images written as this family's placeholder."""
        placeholder = self.image_placeholder(processor)
        if placeholder == "<image>":
            return jinja
        return jinja.replace("'<image>\\n'", repr(placeholder + "\n"))

    # -- tiny random models ---------------------------------------------------------------------------
    def tokenizer_tokens(self) -> dict[str, str]:
        """Special tokens a tiny model's tokenizer needs (name -> token); ``image_token`` included."""
        return {"image_token": "<image>"}

    def build_tiny(self, preset: TinyPreset, tokenizer: PreTrainedTokenizerFast, chat_template: str,
                   seed: int) -> tuple[PreTrainedModel, ProcessorMixin]:
        raise NotImplementedError

    # -- vision features (contrastive pretraining of a tiny tower) -------------------------------------
    def vision_tower(self, model: PreTrainedModel) -> torch.nn.Module:
        return model.model.vision_tower

    def tower_features(self, tower: torch.nn.Module, config: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-image tower features ``[images, positions, hidden]`` as the projector reads them."""
        raise NotImplementedError

    def vision_hidden_size(self, config: Any) -> int:
        return config.vision_config.hidden_size

    # -- shapes for the memory planner -------------------------------------------------------------
    def text_config(self, config: Any) -> Any:
        return config.get_text_config()

    def extra_layer_bytes(self, mode: str) -> tuple[int, int, int, int]:
        """Bytes autograd saves per token in one decoder layer beyond a Llama layer's
        (:data:`medvlm.model.plan.LAYER_BYTES`), as (per hidden, per kv dim, per intermediate, constant)."""
        return (0, 0, 0, 0)

    # -- derived from the prefixes ---------------------------------------------------------------------
    def component_of(self, param_name: str) -> str | None:
        """The component a parameter belongs to; the longest matching prefix wins (Qwen's merger
        lies inside its vision module), peft's ``base_model.model.`` prefix is tolerated."""
        name = param_name.removeprefix(PEFT_PREFIX)
        best, length = None, -1
        for component, prefixes in self.prefixes.items():
            for prefix in prefixes:
                if (name.startswith(prefix) if prefix.endswith(".") else name == prefix) and len(prefix) > length:
                    best, length = component, len(prefix)
        return best

    @property
    def language_model_prefix(self) -> str:
        return self.prefixes["language_model"][0]

    def quantization_skip_modules(self) -> list[str]:
        """Modules bitsandbytes leaves unquantised, as full prefixes: the tower, the projector, lm_head."""
        keep = [prefix.rstrip(".") for component in ("vision_tower", "projector")
                for prefix in self.prefixes[component] if prefix.endswith(".")]
        return [*keep, "lm_head"]

    def lora_target_modules(self) -> str:
        """The default LoRA target: every attention and MLP linear of the language model."""
        return rf"{re.escape(self.language_model_prefix)}.*\.({'|'.join(LORA_LINEARS)})"


FAMILIES: Registry[ModelFamily] = registry.FAMILIES


def register_family(family: ModelFamily) -> ModelFamily:
    return FAMILIES.register(family.name)(family)


def get_family(name: str) -> ModelFamily:
    return FAMILIES.get(name)


def family_names() -> list[str]:
    return FAMILIES.names()


def family_for_model_type(model_type: str | None, where: str = "config.json") -> ModelFamily:
    for name in FAMILIES.names():
        family = FAMILIES.get(name)
        if model_type in family.model_types:
            return family
    known = sorted(t for n in FAMILIES.names() for t in FAMILIES.get(n).model_types)
    raise ModelError(f"{where}: model_type '{model_type}' is not an architecture medvlm trains; known: "
                     f"{', '.join(known)}")


def family_of(config: Any) -> ModelFamily:
    """The family of a loaded model's (or PeftModel's) config."""
    return family_for_model_type(getattr(config, "model_type", None), "model config")


def family_of_model(model: torch.nn.Module) -> ModelFamily | None:
    """The family of a model, or None for modules that are not a family's model (a contrastive wrapper)."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    return family_of(config)


def family_of_dir(path: Path, requested: str = "auto") -> ModelFamily:
    """The family of a model directory: ``model.family: auto`` reads ``config.json``'s model_type;
    a named family must agree with it."""
    config_file = path / "config.json"
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    found = family_for_model_type(model_type, str(config_file))
    if requested not in ("auto", found.name):
        get_family(requested)  # an unknown name gets the registry's message
        raise ModelError(f"{config_file}: model_type '{model_type}' is the '{found.name}' family, but the recipe "
                         f"says model.family={requested}")
    return found


def resolve_family(requested: str, path: str | Path | None) -> ModelFamily:
    """The family a recipe's model spec means: from the directory, or by name for a tiny preset."""
    if path:
        return family_of_dir(Path(path), requested)
    return get_family("llava" if requested == "auto" else requested)
