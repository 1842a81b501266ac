"""EWC — Elastic Weight Consolidation with a diagonal Fisher, classic or online.

After task t the diagonal (empirical) Fisher of the final model θ_t is estimated from squared
per-sample log-likelihood gradients on the task's training data,

    F_j = mean_n (∂ log p(y_n | x_n; θ) / ∂θ_j)²,   log p(y|x) = Σ over answer tokens,

and later tasks pay λ/2·Σ_j F_j (θ_j − θ*_j)². Online EWC keeps one running Fisher F ← γF + F_new
anchored at the latest θ*; classic EWC keeps one (F_k, θ*_k) term per earlier task. The estimate is
saved per task (``ewc.safetensors``) so an interrupted sequence resumes without recomputing it.

EWC anchors parameters that train in full; with LoRA the trained tensors are new every task, so
the recipe must use ``peft.method: none``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from medvlm.continual import TaskContext, TaskParts, register_guard
from medvlm.data.collate import IGNORE_INDEX, SupervisedDataset
from medvlm.data.records import Sample
from medvlm.data.templates import get_template
from medvlm.errors import ModelError, RecipeError
from medvlm.model.build import (
    apply_freeze_plan,
    collator_for,
    encoder_for,
    load_pretrained,
    preparer_for,
    trainable_components,
)
from medvlm.recipe import Recipe

FisherTerm = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]  # (F, θ*) by parameter name


def diagonal_fisher(model: torch.nn.Module, items: Iterable[Any],
                    log_likelihood: Callable[[torch.nn.Module, Any], torch.Tensor],
                    params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """mean over items of (∂ log_likelihood(model, item) / ∂θ)² for each named parameter (fp32)."""
    fisher = {name: torch.zeros_like(param, dtype=torch.float32) for name, param in params.items()}
    count = 0
    for item in items:
        grads = torch.autograd.grad(log_likelihood(model, item), list(params.values()), allow_unused=True)
        for name, grad in zip(params, grads, strict=True):
            if grad is not None:
                fisher[name] += grad.detach().to(torch.float32).pow(2)
        count += 1
    if count == 0:
        raise ModelError("the Fisher estimate needs at least one sample")
    return {name: value / count for name, value in fisher.items()}


def answer_log_likelihood(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ log p(answer tokens) of a one-sample batch (the model's loss is the mean CE over them)."""
    supervised = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return -model(**batch, use_cache=False).loss * supervised


def sample_batches(samples: list[Sample], processor: Any, model_config: Any, recipe: Recipe,
                   ) -> Iterator[dict[str, torch.Tensor]]:
    """One-sample training batches, encoded exactly as the stage encodes them."""
    data = recipe.data
    encoder = encoder_for(model_config, processor, get_template(data.template), data.max_length, data.system_prompt)
    preparer = preparer_for(model_config, processor, data.image_aspect_ratio)
    dataset = SupervisedDataset(samples, encoder, preparer)
    collate = collator_for(model_config, processor)
    for index in range(len(dataset)):
        yield collate([dataset[index]])


def penalty(terms: list[FisherTerm], params: dict[str, torch.nn.Parameter]) -> torch.Tensor:
    """Σ_terms Σ_j F_j (θ_j − θ*_j)² over the bound parameters (without λ/2)."""
    total = None
    for fisher, anchor in terms:
        for name, param in params.items():
            if name in fisher:
                value = (fisher[name] * (param.to(torch.float32) - anchor[name]).pow(2)).sum()
                total = value if total is None else total + value
    if total is None:
        raise ModelError("EWC has no parameter to anchor")
    return total


class EWCPenalty:
    """The loss plugin: λ/2·Σ F_j (θ_j − θ*_j)², bound to the Trainer's model parameters by name."""

    name = "ewc"

    def __init__(self, terms: list[FisherTerm], weight: float) -> None:
        self.terms = terms
        self.weight = weight
        self.params: dict[str, torch.nn.Parameter] = {}

    def setup(self, trainer: Any) -> None:
        names = set().union(*(fisher.keys() for fisher, _ in self.terms))
        self.params = {name: param for name, param in trainer.model.named_parameters()
                       if name in names and param.requires_grad}
        if not self.params:
            raise ModelError("EWC matched no trainable parameter of the model (it anchors parameters that "
                             "train in full: use peft.method=none)")
        device = next(iter(self.params.values())).device
        self.terms = [({k: v.to(device) for k, v in fisher.items()},
                       {k: v.to(device) for k, v in anchor.items()}) for fisher, anchor in self.terms]

    def __call__(self, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor:
        return 0.5 * self.weight * penalty(self.terms, self.params)


def _save_term(path: Path, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> None:
    tensors = {f"fisher.{k}": v.contiguous() for k, v in fisher.items()}
    tensors.update({f"anchor.{k}": v.to(torch.float32).contiguous() for k, v in anchor.items()})
    staging = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(staging))
    staging.replace(path)


def _load_term(path: Path) -> FisherTerm:
    tensors = load_file(str(path))
    fisher = {k.removeprefix("fisher."): v for k, v in tensors.items() if k.startswith("fisher.")}
    anchor = {k.removeprefix("anchor."): v for k, v in tensors.items() if k.startswith("anchor.")}
    return fisher, anchor


@register_guard("ewc")
class EWCGuard:
    FILE = "ewc.safetensors"

    def __init__(self, recipe: Recipe) -> None:
        assert recipe.continual is not None
        if recipe.peft.method != "none":
            raise RecipeError(f"method uses ewc, which anchors parameters trained in full; peft.method is "
                              f"'{recipe.peft.method}' (use none)")
        self.spec = recipe.continual.ewc

    def prepare(self, task: TaskContext) -> TaskParts:
        if not task.earlier_task_dirs:
            return TaskParts(report={"terms": 0})
        if self.spec.online:
            terms = [_load_term(task.earlier_task_dirs[-1] / self.FILE)]
        else:
            terms = [_load_term(d / self.FILE) for d in task.earlier_task_dirs]
        return TaskParts([EWCPenalty(terms, self.spec.weight)],
                         report={"terms": len(terms), "weight": self.spec.weight, "online": self.spec.online})

    def finish(self, task: TaskContext, model_dir: Path) -> None:
        target = task.task_dir / self.FILE
        if target.is_file():
            return
        model, processor = load_pretrained(model_dir, dtype=task.stage.model.dtype)
        apply_freeze_plan(model, trainable_components(task.stage))
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        chosen = list(task.samples)
        random.Random(f"ewc-{task.seed}-{task.index}").shuffle(chosen)
        model.eval()  # no dropout in the estimate
        batches = sample_batches(chosen[: self.spec.fisher_samples], processor, model.config, task.stage)
        fisher = diagonal_fisher(model, batches, answer_log_likelihood, params)
        if self.spec.online and task.earlier_task_dirs:
            previous, _ = _load_term(task.earlier_task_dirs[-1] / self.FILE)
            fisher = {k: self.spec.gamma * previous[k] + v for k, v in fisher.items()}
        _save_term(target, fisher, {k: p.detach() for k, p in params.items()})
