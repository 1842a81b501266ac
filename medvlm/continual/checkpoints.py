"""Consolidation at the level of model directories (what ``medvlm consolidate`` and the continual
runner call).

Weights are compared on *loaded* state dicts: transformers 5 saves llava checkpoints under the
legacy key layout, so reading safetensors keys directly would pair the wrong tensors. The result is
written with ``save_pretrained`` (plus the processor) into a staging directory renamed into place,
so it is a normal Hugging Face llava directory and never half-written.

``current`` may also be a peft LoRA adapter directory trained on top of ``previous``: the update is
then known exactly in factored form (Δ = scale·B·A) and SAC takes its fast path on those tensors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medvlm.continual import ConsolidationConfig, LowRankDelta, StateDict, get_consolidator
from medvlm.errors import ModelError
from medvlm.io import check_replaceable
from medvlm.model.adapters import is_adapter_dir
from medvlm.model.build import component_of, load_pretrained
from medvlm.model.export import save_llava_dir
from medvlm.model.families import family_of_model
from medvlm.model.prompting import read_trained_prompt
from medvlm.rundir import CONSOLIDATION

log = logging.getLogger("medvlm")


def stored_dtype(model_dir: str | Path) -> str:
    """The dtype a llava directory was saved in (so consolidation neither widens nor narrows it)."""
    config_file = Path(model_dir) / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError):
        return "float32"
    for holder in (config, config.get("text_config") or {}):
        value = holder.get("dtype") or holder.get("torch_dtype")
        if value in ("float32", "bfloat16", "float16"):
            return value
    return "float32"


def lora_factors(peft_model: torch.nn.Module) -> dict[str, LowRankDelta]:
    """Exact factors of every plain-LoRA update, keyed by the merged model's state-dict name.

    DoRA, fan-in-fan-out layers and LoRA with bias are not pure low-rank updates and are left out
    (their tensors take the dense path). Several adapters on one layer are stacked: Σ s_i·B_i·A_i =
    [s_1·B_1 … s_k·B_k]·[A_1; …; A_k].
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    factors: dict[str, LowRankDelta] = {}
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLinear) or module.fan_in_fan_out or module.merged:
            continue
        adapters = [a for a in module.active_adapters if a in module.lora_A]
        if not adapters or any(module.use_dora.get(a, False) or getattr(module, "lora_bias", {}).get(a, False)
                               for a in adapters):
            continue
        b = torch.cat([module.lora_B[a].weight.detach().to(torch.float32) * float(module.scaling[a])
                       for a in adapters], dim=1)
        a = torch.cat([module.lora_A[a].weight.detach().to(torch.float32) for a in adapters], dim=0)
        factors[f"{name.removeprefix('base_model.model.')}.weight"] = LowRankDelta(b, a, 1.0)
    return factors


@dataclass
class Update:
    """θ_{t−1} and θ̂_t as state dicts (read from ``previous_dir`` and ``current_dir``), a model object
    to load the result into, and its processor."""

    model: torch.nn.Module
    processor: Any
    previous: StateDict
    current: StateDict
    low_rank: dict[str, LowRankDelta]
    previous_dir: Path
    current_dir: Path


def _snapshot(model: torch.nn.Module) -> StateDict:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def load_update(previous_dir: str | Path, current_dir: str | Path) -> Update:
    """Load the two ends of one task's update (``current_dir``: a llava directory or a LoRA adapter)."""
    dtype = stored_dtype(previous_dir)
    model, processor = load_pretrained(previous_dir, dtype=dtype)
    previous = _snapshot(model)
    if is_adapter_dir(current_dir):
        from peft import PeftModel

        base, _ = load_pretrained(previous_dir, dtype=dtype)
        try:
            adapted = PeftModel.from_pretrained(base, str(current_dir))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{current_dir}: cannot load the adapter on top of {previous_dir}: {exc}",
                             ) from None
        low_rank = lora_factors(adapted)
        current = adapted.merge_and_unload().state_dict()
    else:
        trained, processor = load_pretrained(current_dir, dtype=dtype)
        low_rank, current = {}, trained.state_dict()
    check_same_shapes(previous, current, previous_dir, current_dir)
    return Update(model, processor, previous, current, low_rank, Path(previous_dir), Path(current_dir))


def check_same_shapes(previous: StateDict, current: StateDict, previous_dir: str | Path,
                      current_dir: str | Path) -> None:
    """Consolidation pairs tensors by name: two models of different architectures or sizes cannot be
    merged, and are refused before any arithmetic (a KeyError or shape error deep in SAC otherwise)."""
    only = sorted(set(previous) ^ set(current))
    if only:
        raise ModelError(f"{current_dir} is not a finetuned successor of {previous_dir}: {len(only)} tensor(s) "
                         f"are in only one of them (e.g. {only[0]})")
    resized = [key for key in previous if previous[key].shape != current[key].shape]
    if resized:
        key = resized[0]
        raise ModelError(f"{current_dir} is not a finetuned successor of {previous_dir}: {len(resized)} tensor(s) "
                         f"differ in shape (e.g. {key}: {tuple(previous[key].shape)} vs {tuple(current[key].shape)})")


def consolidated_state(update: Update, partial: StateDict, keys: set[str]) -> StateDict:
    """The whole model's state: ``partial`` (the consolidated ``keys``) and θ_{t−1} for every other tensor."""
    return {key: partial[key] if key in keys else value for key, value in update.previous.items()}


def trained_keys(update: Update, components: tuple[str, ...] | None, stats: dict[str, Any]) -> set[str]:
    """The state-dict keys of the components a stage trained (all keys when ``components`` is None).

    Consolidation leaves every other tensor at θ_{t−1} exactly, so SAC on a projector-only stage
    touches only the projector. Tensors outside them that differ between θ_{t−1} and θ̂_t (a frozen
    weight should not move) are counted in ``stats["frozen_changed"]``: nonzero means the stage
    trained more than it said.
    """
    if components is None:
        return set(update.previous)
    family = family_of_model(update.model)  # parameter names differ by family (Qwen2.5-VL's merger, ...)
    keys = {key for key in update.previous if component_of(key, family) in components}
    stats["components"] = sorted(components)
    stats["frozen_changed"] = sum(not torch.equal(update.previous[k], update.current[k])
                                  for k in update.previous if k not in keys)
    if stats["frozen_changed"]:
        log.warning("%s: %d tensor(s) outside the trained components %s changed; consolidation keeps them "
                    "at the previous model's values", update.current_dir, stats["frozen_changed"],
                    ", ".join(sorted(components)))
    return keys


def save_consolidated(update: Update, state: StateDict, output_dir: str | Path, record: dict[str, Any], *,
                      overwrite: bool = False) -> None:
    """Load ``state`` into the update's model and write it (with ``consolidation.json``) to ``output_dir``,
    prompted as the stage's model was trained (its ``prompt.json``); neither input is ever replaced."""
    update.model.load_state_dict(state, strict=True)
    save_llava_dir(update.model, update.processor, output_dir, read_trained_prompt(update.current_dir),
                   records={CONSOLIDATION: record}, overwrite=overwrite,
                   protect=(update.previous_dir, update.current_dir))


def consolidate_checkpoints(method: str, previous_dir: str | Path, current_dir: str | Path,
                            output_dir: str | Path, config: ConsolidationConfig, *,
                            components: tuple[str, ...] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """θ_t = consolidator(θ_{t−1}, θ̂_t) written to ``output_dir``; returns the consolidation stats.

    ``components`` (e.g. ``("projector",)`` for an alignment stage) limits consolidation to the
    tensors the stage trained; every other tensor is θ_{t−1}'s. ``output_dir`` must not be (or
    contain) either input; a directory of other files is replaced only with ``overwrite`` (checked
    before any weights load).
    """
    check_replaceable(output_dir, overwrite=overwrite, protect=(previous_dir, current_dir))
    consolidator = get_consolidator(method)
    update = load_update(previous_dir, current_dir)
    if not config.low_rank:
        config.low_rank = update.low_rank
    keys = trained_keys(update, components, config.stats)
    partial = consolidator({k: update.previous[k] for k in keys}, {k: update.current[k] for k in keys}, config)
    summary = {key: value for key, value in config.stats.items() if key != "tensors"}
    record = {"previous": str(previous_dir), "current": str(current_dir), **summary,
              "tensors": config.stats.get("tensors", {})}
    save_consolidated(update, consolidated_state(update, partial, keys), output_dir, record, overwrite=overwrite)
    log.info("consolidated (%s) %s + %s -> %s", method, previous_dir, current_dir, output_dir)
    return summary
