"""TIES-style trimmed update: keep only the largest-magnitude fraction of each tensor's update.

TIES-merging (Yadav et al., NeurIPS 2023) merges task vectors τ = θ̂ − θ in three steps: trim each τ
to its top-k entries by magnitude, elect one sign per parameter, and average the entries that agree.
In a task sequence one new task vector arrives per step, so election and the disjoint mean are the
identity and the trim is what remains:

    θ_t = θ_{t−1} + λ · trim_k(θ̂_t − θ_{t−1})

where trim_k keeps the ⌈k·numel⌉ entries of largest |Δ| in every floating-point tensor (ties at the
threshold broken by position, so exactly that many) and zeroes the rest. Like SAC it damps a task's
update to protect the earlier ones, by sparsity instead of spectral smoothing: the many small
changes go and the few large ones stay. k = 1 and λ = 1 give θ̂_t; k = 1, λ = α is model mix.
Settings: ``continual.ties.density`` (k, TIES' default 0.2) and ``continual.ties.scale`` (λ).
Arithmetic is fp32 whatever the storage dtype; results are cast back.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from medvlm.continual import ConsolidationConfig, StateDict, check_compatible, register_consolidator, register_settings
from medvlm.recipe import Section


@register_settings("ties")
class TiesSpec(Section):
    density: float = Field(0.2, gt=0, le=1, description="k: the fraction of each tensor's update kept")
    scale: float = Field(1.0, gt=0, description="λ: the kept update is multiplied by this")


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """``delta`` with all but its ⌈density·numel⌉ largest-magnitude entries set to zero."""
    keep = math.ceil(round(density * delta.numel(), 9))  # 0.3·10 is 3.0000000000000004 in floats: keep 3
    if keep >= delta.numel():
        return delta
    flat = delta.flatten()
    kept = torch.zeros_like(flat)
    top = torch.topk(flat.abs(), keep, sorted=False).indices
    kept[top] = flat[top]
    return kept.reshape(delta.shape)


@register_consolidator("ties")
def ties_state(previous: StateDict, current: StateDict, config: ConsolidationConfig) -> StateDict:
    """Trim every floating-point tensor's update; integer buffers come from the current model."""
    check_compatible(previous, current)
    settings = config.settings if isinstance(config.settings, TiesSpec) else TiesSpec()
    result: StateDict = {}
    changed, kept, total = 0, 0, 0
    for key, before in previous.items():
        after = current[key]
        if not torch.is_floating_point(before):
            result[key] = after.clone()
            continue
        delta = trim(after.to(torch.float32) - before.to(torch.float32), settings.density)
        result[key] = (before.to(torch.float32) + settings.scale * delta).to(before.dtype)
        nonzero = int(torch.count_nonzero(delta))
        changed, kept, total = changed + bool(nonzero), kept + nonzero, total + delta.numel()
    config.stats.update({"method": "ties", "density": settings.density, "scale": settings.scale,
                         "tensors_changed": changed, "entries_kept": kept, "entries": total})
    return result
