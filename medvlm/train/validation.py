"""Validation loss of a model held in memory: the mean cross-entropy per supervised answer token.

Used where a stage's data has no short answer to score (captions, conversations) but a held-out
slice must still say how well an update learned it — choosing SAC's ratio per task
(:mod:`medvlm.runs.ratio`). Samples are encoded, sized and collated exactly as the stage trains on
them (the model family's encoder, image preparation and collator, as :mod:`medvlm.train.setup` uses).
"""

from __future__ import annotations

from typing import Any

import torch

from medvlm.data.collate import IGNORE_INDEX, Collator, SupervisedDataset
from medvlm.data.records import Sample
from medvlm.data.templates import get_template
from medvlm.errors import DataError
from medvlm.model.build import encoder_for, preparer_for
from medvlm.recipe import DataSpec


def validation_dataset(samples: list[Sample], processor: Any, model_config: Any, data: DataSpec) -> SupervisedDataset:
    """The samples tokenised and masked as a stage with ``data`` trains on them."""
    encoder = encoder_for(model_config, processor, get_template(data.template), data.max_length, data.system_prompt)
    return SupervisedDataset(samples, encoder, preparer_for(model_config, processor, data.image_aspect_ratio))


@torch.no_grad()
def mean_answer_loss(model: torch.nn.Module, dataset: SupervisedDataset, collate: Collator,
                     batch_size: int = 32) -> float:
    """Σ CE over every supervised token / their number (batches weighted by their token counts, so the
    result does not depend on the batch size); ``collate`` is the stage's collator
    (:func:`medvlm.model.build.collator_for`)."""
    if not len(dataset):
        raise DataError("the validation slice is empty (every sample too long?)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch = {key: value.to(device, model.dtype) if value.is_floating_point() else value.to(device)
                 for key, value in batch.items()}
        supervised = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        if supervised:
            total += float(model(**batch, use_cache=False).loss) * supervised
            tokens += supervised
    model.train(was_training)
    if tokens == 0:
        raise DataError("the validation slice has no supervised answer token")
    return total / tokens
