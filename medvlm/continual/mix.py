"""Plain model mix, the simplest consolidator: θ_t = (1−α)·θ_{t−1} + α·θ̂_t (fp32 arithmetic)."""

from __future__ import annotations

import torch

from medvlm.continual import ConsolidationConfig, StateDict, check_compatible, register_consolidator


@register_consolidator("mix")
def mix_state(previous: StateDict, current: StateDict, config: ConsolidationConfig) -> StateDict:
    """Interpolate every floating-point tensor; integer buffers come from the current model."""
    check_compatible(previous, current)
    alpha = float(config.alpha)
    result: StateDict = {}
    for key, before in previous.items():
        after = current[key]
        if torch.is_floating_point(before):
            mixed = (1.0 - alpha) * before.to(torch.float32) + alpha * after.to(torch.float32)
            result[key] = mixed.to(before.dtype)
        else:
            result[key] = after.clone()
    config.stats.update({"method": "mix", "alpha": alpha})
    return result
