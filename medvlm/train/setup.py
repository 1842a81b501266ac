"""What a stage trains: the model as the recipe prepares it, and the data the Trainer feeds it.

:func:`prepare_model` is shared by :func:`medvlm.train.stage.run_stage` and the memory measurements
(:mod:`medvlm.train.memtrack`), so what is measured is what trains. A stage kind that trains on other
data than conversations (the contrastive tower stage) provides its own :class:`TrainingSetup`,
chosen once in :func:`medvlm.train.stage.run_stage`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import ProcessorMixin

from medvlm.data.collate import SupervisedDataset
from medvlm.data.images import ImagePreparer, PixelCache
from medvlm.data.records import Sample
from medvlm.data.templates import get_template
from medvlm.errors import DataError
from medvlm.model.adapters import apply_lora, set_base_reference
from medvlm.model.build import (
    DTYPES,
    FreezeSummary,
    apply_freeze_plan,
    collator_for,
    encoder_for,
    load_model,
    summarize,
)
from medvlm.model.prompting import TrainedPrompt
from medvlm.model.quant import quantization_config
from medvlm.recipe import Recipe
from medvlm.rundir import StageDir
from medvlm.train.saving import save_trained

log = logging.getLogger("medvlm")


def prepare_model(recipe: Recipe, trainable: tuple[str, ...]) -> tuple[torch.nn.Module, ProcessorMixin, FreezeSummary]:
    """The recipe's model, quantised, frozen and wrapped in adapters as its stage trains it."""
    quantization = quantization_config(recipe.peft, DTYPES[recipe.model.dtype])
    model, processor = load_model(recipe.model, template=recipe.data.template, quantization=quantization)
    if recipe.peft.method == "none":
        freeze = apply_freeze_plan(model, trainable)
    else:
        apply_freeze_plan(model, ())  # peft decides what its model trains
        model = apply_lora(model, recipe.peft, trainable, gradient_checkpointing=recipe.train.gradient_checkpointing)
        set_base_reference(model, Path(recipe.model.path).resolve() if recipe.model.path else None)
        freeze = summarize(model)
    if recipe.train.gradient_checkpointing:
        model.enable_input_require_grads()
    return model, processor, freeze


@dataclass
class TrainingSetup:
    """What the Trainer trains on (the module it optimises, the dataset and its collator) and how the
    stage's result is saved."""

    train_model: torch.nn.Module
    dataset: Any
    collator: Any
    report: dict[str, Any]
    counts_tokens: bool = True  # the Trainer counts non-padding input tokens

    def save(self, trainer, processor, recipe: Recipe, out: StageDir, adapter: bool) -> None:
        save_trained(trainer, processor, TrainedPrompt.of(recipe.data), out, adapter=adapter)


def supervised_setup(recipe: Recipe, model, processor, samples: list[Sample], preparer: ImagePreparer,
                     ) -> TrainingSetup:
    """Conversations, tokenised with the recipe's template and label mask."""
    encoder = encoder_for(model.config, processor, get_template(recipe.data.template), recipe.data.max_length,
                          recipe.data.system_prompt)
    dataset = SupervisedDataset(samples, encoder, preparer, PixelCache(recipe.data.image_cache_mb << 20))
    if not len(dataset):
        raise DataError(f"every sample was rejected as too long for max_length {recipe.data.max_length}",
                        file=recipe.source_file)
    log.info("data: %d samples (%d truncated, %d rejected as too long)", len(dataset),
             dataset.report.truncated, len(dataset.report.rejected))
    return TrainingSetup(model, dataset, collator_for(model.config, processor), dataset.report.summary())
