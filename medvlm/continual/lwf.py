"""LwF — Learning without Forgetting: keep the answers' output distribution close to the teacher's.

λ·T²·KL(p_teacher^T ‖ p_student^T) averaged over the answer positions of the current task's batch,
where p^T = softmax(logits / T) and the teacher is a frozen copy of θ_{t−1}. Positions are those
whose next token is supervised (the logits that produce the answer). T² keeps gradient magnitudes
comparable across temperatures (Hinton et al.).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from medvlm.continual import TaskContext, TaskParts, register_guard
from medvlm.data.collate import IGNORE_INDEX
from medvlm.recipe import Recipe


def answer_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float = 1.0) -> torch.Tensor | None:
    """T²·KL(teacher ‖ student) per answer position, averaged; None when nothing is supervised."""
    answer = labels[:, 1:] != IGNORE_INDEX
    if not bool(answer.any()):
        return None
    student = student_logits[:, :-1][answer].to(torch.float32) / temperature
    teacher = teacher_logits[:, :-1][answer].to(torch.float32) / temperature
    kl = F.kl_div(F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1), log_target=True,
                  reduction="batchmean")
    return kl * temperature**2


class LwFLoss:
    name = "lwf"

    def __init__(self, teacher: torch.nn.Module, weight: float = 0.5, temperature: float = 1.0) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight
        self.temperature = temperature

    def setup(self, trainer: Any) -> None:
        self.teacher.to(trainer.args.device)

    def __call__(self, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        labels = inputs.get("labels")
        if outputs is None or labels is None or not bool((labels[:, 1:] != IGNORE_INDEX).any()):
            return None
        model_inputs = {k: v for k, v in inputs.items()
                        if k in ("input_ids", "attention_mask", "pixel_values")}
        with torch.no_grad():
            teacher_logits = self.teacher(**model_inputs, use_cache=False).logits
        term = answer_kl(outputs.logits, teacher_logits, labels, self.temperature)
        return None if term is None else self.weight * term


@register_guard("lwf")
class LwFGuard:
    uses_teacher = True  # a frozen copy of θ_{t−1} beside the trained model (medvlm plan counts it)

    def __init__(self, recipe: Recipe) -> None:
        assert recipe.continual is not None
        self.spec = recipe.continual.lwf

    def prepare(self, task: TaskContext) -> TaskParts:
        plugin = LwFLoss(task.teacher(), self.spec.weight, self.spec.temperature)
        return TaskParts([plugin], report={"weight": self.spec.weight, "temperature": self.spec.temperature})

    def finish(self, task: TaskContext, model_dir) -> None:
        return None
