"""UIR — Unsupervised Inquiry Regularization (LLaVA-c).

Text-only instructions ("inquiries"; labels unused) are mixed into every task's training data. On
a batch of inquiries the language-model loss has nothing to supervise; instead the student's last
hidden state (after the LLM's final norm) is pulled towards that of a frozen teacher, the model the
task started from (θ_{t−1}):

    L = CE(multimodal batches) + λ·MSE(h_θ(x), h_{θ_{t−1}}(x)) over inquiry batches.

The teacher runs only on inquiry rows, which carry no image and no supervised token (LLaVA-style
modality grouping keeps them in batches of their own). The MSE is a mean over real tokens by
default; ``masked=False`` averages over every position, padding included, as the research code did.
An inquiry is the first user turn of a source record, rendered as a lone user turn (no answer).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from medvlm.continual import TaskContext, TaskParts, draw_samples, register_guard
from medvlm.data.collate import IGNORE_INDEX
from medvlm.data.reading import read_spec
from medvlm.data.records import IMAGE_PLACEHOLDER, Sample, SampleMeta, Turn
from medvlm.errors import DataError, RecipeError
from medvlm.recipe import Recipe


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared difference over real tokens (``mask`` 1 = token) and hidden units; all
    positions when ``mask`` is None."""
    squared = (student.to(torch.float32) - teacher.to(torch.float32)).pow(2)
    if mask is None:
        return squared.mean()
    weights = mask.to(squared.dtype).unsqueeze(-1)
    return (squared * weights).sum() / (weights.sum() * squared.shape[-1]).clamp_min(1.0)


def last_hidden_state(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      ) -> torch.Tensor:
    """The LLM's last hidden state after its final norm (transformers ties ``hidden_states[-1]`` to
    it). Goes through the model's own forward, so DDP/DeepSpeed wrappers and LoRA layers apply;
    ``logits_to_keep=1`` skips the vocabulary projection of every other position."""
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                    logits_to_keep=1, use_cache=False)
    return outputs.hidden_states[-1]


def image_token_id(config: Any) -> int | None:
    value = getattr(config, "image_token_id", None)
    return value if value is not None else getattr(config, "image_token_index", None)


def inquiry_rows(inputs: dict[str, torch.Tensor], image_token: int | None) -> torch.Tensor:
    """Rows without a supervised token and without image tokens (a bool vector over the batch)."""
    ids = inputs["input_ids"]
    labels = inputs.get("labels")
    rows = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    if labels is not None:
        rows &= (labels == IGNORE_INDEX).all(dim=1)
    if image_token is not None:
        rows &= ~(ids == image_token).any(dim=1)
    return rows


class UIRLoss:
    """The loss plugin: λ·MSE between student and frozen-teacher hidden states on inquiry rows."""

    name = "uir"

    def __init__(self, teacher: torch.nn.Module, weight: float = 1.0, masked: bool = True) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight
        self.masked = masked
        self.image_token = image_token_id(teacher.config)

    def setup(self, trainer: Any) -> None:
        self.teacher.to(trainer.args.device)

    def __call__(self, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        rows = inquiry_rows(inputs, self.image_token)
        if not bool(rows.any()):
            return None
        ids, mask = inputs["input_ids"][rows], inputs["attention_mask"][rows]
        student = last_hidden_state(model, ids, mask)
        with torch.no_grad():
            teacher = last_hidden_state(self.teacher, ids, mask)
        return self.weight * hidden_mse(student, teacher, mask if self.masked else None)


def to_inquiry(sample: Sample, drop_images: bool, file: str | None) -> Sample | None:
    """The sample's first user turn as a text-only, answer-less sample (None when that turn is empty)."""
    if sample.images and not drop_images:
        raise DataError("UIR inquiries must be text-only, but this record has an image; name a text-only "
                        "source or set continual.uir.drop_images=true to use the questions of image samples",
                        file=file, record=sample.id, key="image")
    question = sample.turns[0].text.replace(IMAGE_PLACEHOLDER, "").strip()
    if not question:
        return None
    meta = SampleMeta(dataset=sample.meta.dataset, split=sample.meta.split, source_id=sample.meta.source_id,
                      language=sample.meta.language)
    return Sample(id=f"{sample.id}-inquiry", turns=[Turn("user", question)], meta=meta)


@register_guard("uir")
class UIRGuard:
    """Mixes inquiries into each task (``ratio`` per task sample) and adds :class:`UIRLoss`."""

    uses_teacher = True  # a frozen copy of θ_{t−1} beside the trained model (medvlm plan counts it)

    def __init__(self, recipe: Recipe) -> None:
        assert recipe.continual is not None
        self.spec = recipe.continual.uir
        if not self.spec.inquiries:
            raise RecipeError("method uses uir but continual.uir.inquiries names no text-only source")
        self._pool: list[Sample] | None = None
        self.empty_skipped = 0

    def pool(self) -> list[Sample]:
        if self._pool is None:
            pool: list[Sample] = []
            for source in self.spec.inquiries:
                samples = read_spec(source, image_check="none").samples  # inquiries are asked without images
                inquiries = [to_inquiry(s, self.spec.drop_images, source.path) for s in samples]
                self.empty_skipped += sum(inquiry is None for inquiry in inquiries)
                pool.extend(inquiry for inquiry in inquiries if inquiry is not None)
            if not pool:
                raise DataError("continual.uir.inquiries yielded no usable (non-empty) question")
            self._pool = pool
        return self._pool

    def prepare(self, task: TaskContext) -> TaskParts:
        count = max(1, round(self.spec.ratio * len(task.samples)))
        inquiries = draw_samples(self.pool(), count, random.Random(f"uir-{task.seed}-{task.index}"))
        plugin = UIRLoss(task.teacher(), weight=self.spec.weight, masked=self.spec.masked)
        return TaskParts([plugin], inquiries, {"inquiries": len(inquiries), "pool": len(self.pool()),
                                               "empty_questions_skipped": self.empty_skipped,
                                               "weight": self.spec.weight, "masked": self.spec.masked})

    def finish(self, task: TaskContext, model_dir) -> None:
        return None
