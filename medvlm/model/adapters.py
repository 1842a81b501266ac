"""LoRA / DoRA adapters through peft, and merging them back for the next stage or export.

LoRA targets the language model's linear layers (a regex over full module names); the projector,
when the stage trains it, is trained in full through ``modules_to_save`` so one checkpoint holds
the adapter and every other trainable weight together.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from medvlm.errors import ModelError
from medvlm.recipe import PeftSpec


def check_peft_plan(spec: PeftSpec, trainable: tuple[str, ...] | list[str]) -> None:
    """Reject combinations that would train nothing or silently train the wrong thing."""
    if spec.method == "none":
        return
    if "language_model" not in trainable:
        raise ModelError(f"peft.method={spec.method} adapts the language model, but this stage does not "
                         f"train it (trainable: {', '.join(trainable)}); use peft.method=none")
    if "vision_tower" in trainable:
        raise ModelError("LoRA on the vision tower is not supported: keep the vision tower frozen "
                         "(train.trainable without vision_tower) or use peft.method=none")


def apply_lora(model: torch.nn.Module, spec: PeftSpec, trainable: tuple[str, ...] | list[str]) -> PeftModel:
    check_peft_plan(spec, trainable)
    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=spec.target_modules,
        use_dora=spec.method == "dora", bias="none",
        modules_to_save=["multi_modal_projector"] if "projector" in trainable and spec.train_projector else None)
    peft_model = get_peft_model(model, config)
    if not any(p.requires_grad for n, p in peft_model.named_parameters() if "lora_" in n):
        raise ModelError(f"peft.target_modules '{spec.target_modules}' matched no module of the model")
    return peft_model


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with adapters folded into the weights (a no-op for non-peft models)."""
    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model
