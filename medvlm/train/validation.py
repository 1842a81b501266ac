"""Validation loss of a model held in memory: the mean cross-entropy per supervised answer token.

Used where a stage's data has no short answer to score (captions, conversations) but a held-out
slice must still say how well an update learned it — choosing SAC's ratio per task
(:mod:`medvlm.runs.ratio`). Samples are encoded exactly as the stage trains on them.
"""

from __future__ import annotations

from typing import Any

import torch

from medvlm.data.collate import IGNORE_INDEX, Collator, ConversationEncoder, SupervisedDataset
from medvlm.data.images import ImagePreparer
from medvlm.data.records import Sample
from medvlm.data.templates import get_template
from medvlm.errors import DataError
from medvlm.model.build import num_image_tokens
from medvlm.recipe import DataSpec


def validation_dataset(samples: list[Sample], processor: Any, model_config: Any, data: DataSpec) -> SupervisedDataset:
    """The samples tokenised and masked as a stage with ``data`` trains on them."""
    encoder = ConversationEncoder(processor.tokenizer, get_template(data.template), num_image_tokens(model_config),
                                  data.max_length, data.system_prompt)
    return SupervisedDataset(samples, encoder, ImagePreparer(processor.image_processor, data.image_aspect_ratio))


@torch.no_grad()
def mean_answer_loss(model: torch.nn.Module, dataset: SupervisedDataset, pad_token_id: int,
                     batch_size: int = 32) -> float:
    """Σ CE over every supervised token / their number (batches weighted by their token counts, so the
    result does not depend on the batch size)."""
    if not len(dataset):
        raise DataError("the validation slice is empty (every sample too long?)")
    was_training = model.training
    model.eval()
    collate = Collator(pad_token_id)
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch = {key: value.to(device) for key, value in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        supervised = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        if supervised:
            total += float(model(**batch, use_cache=False).loss) * supervised
            tokens += supervised
    model.train(was_training)
    if tokens == 0:
        raise DataError("the validation slice has no supervised answer token")
    return total / tokens
