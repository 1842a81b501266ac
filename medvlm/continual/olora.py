"""O-LoRA — orthogonal subspaces: every task trains a new LoRA adapter whose A matrices are pushed to
be orthogonal to those of earlier tasks,

    λ₁·Σ_layers Σ_{i<t} Σ |A_i·A_tᵀ|  (+ λ₂·‖LoRA parameters‖², optional),

so each task writes into its own low-rank subspace. The earlier adapters stay fixed: the continual
runner folds each into the weights after its task, which computes the same function as keeping them
side by side. Earlier A's come from each task's saved adapter (``train/adapter``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from medvlm.continual import TaskContext, TaskParts, register_guard
from medvlm.errors import ModelError, RecipeError
from medvlm.recipe import Recipe
from medvlm.rundir import TaskDir

ADAPTER_FILE = "adapter_model.safetensors"


def lora_key(name: str) -> str:
    """A LoRA parameter name without peft's wrapper prefix and adapter segment, so names saved in an
    adapter file and names in a live PeftModel compare equal."""
    name = name.removeprefix("base_model.model.")
    for adapter in (".default.",):
        name = name.replace(adapter, ".")
    return name


def read_lora_a(adapter_dir: Path) -> dict[str, torch.Tensor]:
    file = adapter_dir / ADAPTER_FILE
    if not file.is_file():
        raise ModelError(f"{adapter_dir}: no {ADAPTER_FILE}; O-LoRA needs each earlier task's adapter")
    return {lora_key(k): v.to(torch.float32) for k, v in load_file(str(file)).items() if ".lora_A." in k}


def orthogonality(earlier: list[dict[str, torch.Tensor]], current: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_i Σ_layers Σ |A_i·A_tᵀ| over the layers both hold."""
    total = None
    for previous in earlier:
        for key, a_t in current.items():
            if key in previous:
                value = (previous[key] @ a_t.to(torch.float32).transpose(0, 1)).abs().sum()
                total = value if total is None else total + value
    if total is None:
        raise ModelError("O-LoRA found no LoRA layer shared with the earlier adapters")
    return total


class OLoRAPenalty:
    name = "olora"

    def __init__(self, earlier: list[dict[str, torch.Tensor]], weight: float, l2: float = 0.0) -> None:
        self.earlier = earlier
        self.weight = weight
        self.l2 = l2
        self.lora_a: dict[str, torch.nn.Parameter] = {}
        self.lora_params: list[torch.nn.Parameter] = []

    def setup(self, trainer: Any) -> None:
        named = [(name, p) for name, p in trainer.model.named_parameters()
                 if p.requires_grad and ".lora_" in name]
        self.lora_a = {lora_key(name): p for name, p in named if ".lora_A." in name}
        self.lora_params = [p for _, p in named]
        if not self.lora_a:
            raise ModelError("O-LoRA: the model being trained has no LoRA A matrices "
                             "(peft.method must be lora)")
        device = next(iter(self.lora_a.values())).device
        self.earlier = [{k: v.to(device) for k, v in adapter.items()} for adapter in self.earlier]

    def __call__(self, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        term = self.weight * orthogonality(self.earlier, self.lora_a) if self.earlier else None
        if self.l2 > 0:
            l2 = self.l2 * sum(p.to(torch.float32).pow(2).sum() for p in self.lora_params)
            term = l2 if term is None else term + l2
        return term


@register_guard("o-lora")
class OLoRAGuard:
    def __init__(self, recipe: Recipe) -> None:
        assert recipe.continual is not None
        if recipe.peft.method != "lora":
            raise RecipeError(f"method uses o-lora, which trains a LoRA adapter per task; peft.method is "
                              f"'{recipe.peft.method}' (use lora)")
        self.spec = recipe.continual.olora

    def prepare(self, task: TaskContext) -> TaskParts:
        earlier = [read_lora_a(TaskDir(d).train.adapter) for d in task.earlier_task_dirs]
        if not earlier and self.spec.l2 == 0:
            return TaskParts(report={"earlier_adapters": 0})
        report = {"earlier_adapters": len(earlier), "weight": self.spec.weight, "l2": self.spec.l2}
        return TaskParts([OLoRAPenalty(earlier, self.spec.weight, self.spec.l2)], report=report)

    def finish(self, task: TaskContext, model_dir: Path) -> None:
        return None
