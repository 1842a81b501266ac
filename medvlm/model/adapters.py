"""LoRA / DoRA / QLoRA adapters through peft: the plan check, wrapping, saving, merging.

LoRA targets the language model's linear layers (a regex over full module names, by default the
model family's attention and MLP linears); the projector, when the stage trains it, is trained in
full through ``modules_to_save`` (the family's projector modules), so every adapter
checkpoint holds the adapter *and* every other trainable weight together: resuming, evaluating
or merging any checkpoint needs nothing else but the base model.

QLoRA is LoRA on a base whose language-model linears bitsandbytes holds in 4-bit NF4 (optionally
double-quantised) or 8 bits (:mod:`medvlm.model.quant`).

Every combination that cannot work is rejected by :func:`check_peft_plan` before any weights load.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from medvlm.errors import ModelError
from medvlm.io import read_json
from medvlm.model.families import ModelFamily, family_of_model
from medvlm.model.families.llava import LLAVA
from medvlm.recipe import PeftSpec

PROJECTOR_MODULE = "multi_modal_projector"  # LLaVA-1.5's; other families name their own
ADAPTER_CONFIG = "adapter_config.json"
# Measured with transformers 5.23: from_pretrained(adapter_dir) renames the DoRA magnitude vectors
# and silently leaves them at their initial values; peft's PeftModel.from_pretrained loads them.
DORA_NATIVE_LOADING = ("transformers' own adapter loading silently drops DoRA magnitude vectors, so a DoRA "
                       "adapter directory would load wrongly without medvlm")


def check_peft_plan(spec: PeftSpec, trainable: tuple[str, ...] | list[str], *,
                    zero_stage: int | None = None) -> None:
    """Reject combinations that would fail late, train nothing, or silently train the wrong thing."""
    if spec.method == "none":
        return
    if "language_model" not in trainable:
        raise ModelError(f"peft.method={spec.method} adapts the language model, but this stage does not "
                         f"train it (trainable: {', '.join(trainable)}); use peft.method=none")
    if "vision_tower" in trainable:
        raise ModelError("LoRA on the vision tower is not supported: keep the vision tower frozen "
                         "(train.trainable without vision_tower) or use peft.method=none")
    try:
        re.compile(spec.target_modules or "")
    except re.error as exc:
        raise ModelError(f"peft.target_modules is not a valid regular expression: {exc}") from None
    if uses_dora(spec) and not spec.merge_at_end:
        raise ModelError(DORA_NATIVE_LOADING + "; keep peft.merge_at_end=true for DoRA")
    if spec.method == "qlora":
        from medvlm.model.quant import require_bitsandbytes

        if not spec.merge_at_end:
            raise ModelError("peft.merge_at_end=false keeps only the adapter as the run's model, but a QLoRA "
                             "adapter was fitted to quantised weights and is merged into the dequantised base "
                             "(RUN/adapter keeps the adapter either way); keep peft.merge_at_end=true")

        if zero_stage == 3:
            raise ModelError(
                f"peft.method=qlora ({spec.bits}-bit) cannot run under DeepSpeed ZeRO-3: ZeRO-3 partitions "
                "parameters across GPUs, and bitsandbytes' quantised weights cannot be partitioned and "
                "regathered by it. Use ZeRO-2 (recipes/deepspeed/zero2.json) or plain DDP (torchrun) with "
                "QLoRA, or peft.method=lora with ZeRO-3")
        require_bitsandbytes()


def uses_dora(spec: PeftSpec) -> bool:
    return spec.method == "dora" or spec.dora


def target_modules(spec: PeftSpec, family: ModelFamily | None = None) -> str:
    """The recipe's LoRA target regex, or the family's default (its language-model linears)."""
    return spec.target_modules or (family or LLAVA).lora_target_modules()


def lora_config(spec: PeftSpec, trainable: tuple[str, ...] | list[str],
                family: ModelFamily | None = None) -> LoraConfig:
    family = family or LLAVA
    return LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=target_modules(spec, family),
        use_dora=uses_dora(spec), bias="none",
        modules_to_save=list(family.projector_modules) if "projector" in trainable and spec.train_projector
        else None)


def apply_lora(model: torch.nn.Module, spec: PeftSpec, trainable: tuple[str, ...] | list[str], *,
               gradient_checkpointing: bool = False) -> PeftModel:
    """Wrap ``model`` with the recipe's adapters; quantised models get peft's k-bit preparation first."""
    check_peft_plan(spec, trainable)
    from medvlm.model.quant import is_quantized, prepare_for_kbit_training

    if is_quantized(model):
        model = prepare_for_kbit_training(model, gradient_checkpointing)
    family = family_of_model(model) or LLAVA
    peft_model = get_peft_model(model, lora_config(spec, trainable, family))
    if not any(p.requires_grad for n, p in peft_model.named_parameters() if "lora_" in n):
        raise ModelError(f"peft.target_modules '{target_modules(spec, family)}' matched no module of the model")
    return peft_model


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def set_base_reference(model: PeftModel, base: str | Path | None) -> None:
    """Record where the base model lives in every adapter config this model saves."""
    for config in model.peft_config.values():
        config.base_model_name_or_path = str(base) if base else None


def adapter_settings(path: str | Path) -> dict:
    return read_json(Path(path) / ADAPTER_CONFIG)


def adapter_base(path: str | Path) -> str | None:
    """The base model directory an adapter directory names (None when it names none)."""
    return adapter_settings(path).get("base_model_name_or_path") or None


def merge_adapter(base: torch.nn.Module, adapter_dir: str | Path) -> torch.nn.Module:
    """Fold the adapter (and its fully trained modules) of ``adapter_dir`` into a plain ``base``.

    ``base`` must not be quantised (see :func:`medvlm.model.quant.dequantized`): merging into
    bitsandbytes layers would re-quantise the merged weights and lose the update's precision.
    """
    from medvlm.model.quant import is_quantized

    if is_quantized(base):
        raise ModelError("merge the adapter into a dequantised copy of the base, not the quantised model")
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
