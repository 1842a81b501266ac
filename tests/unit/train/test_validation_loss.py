"""SAC's loss metric (``sac.auto.metric: loss``) scores held-out samples as the stage trains on them,
for every family (AnyRes sizes, dynamic resolution, token types)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvlm.data.collate import IGNORE_INDEX
from medvlm.model.build import collator_for
from medvlm.model.families import get_family
from medvlm.model.tiny import build_tiny
from medvlm.recipe import DataSpec
from medvlm.train.validation import mean_answer_loss, validation_dataset
from tests.helpers.families import FAMILIES, conversation, write_pictures


@pytest.mark.parametrize("name", FAMILIES)
def test_mean_answer_loss_is_the_token_weighted_loss_of_the_training_batches(name: str, tmp_path: Path) -> None:
    family = get_family(name)
    model, processor = build_tiny("micro-clip-llama", family=name, template=family.default_template)
    model.eval()
    images = write_pictures(tmp_path, [(40, 24), (24, 40), (32, 32)])
    samples = [conversation([image], tmp_path, f"s{index}") for index, image in enumerate(images)]
    data = DataSpec(template=family.default_template, image_aspect_ratio="pad", max_length=4096)
    dataset = validation_dataset(samples, processor, model.config, data)
    collate = collator_for(model.config, processor)
    loss = mean_answer_loss(model, dataset, collate, batch_size=2)
    # by hand: each sample alone through the model, weighted by its supervised tokens
    total, tokens = 0.0, 0
    with torch.no_grad():
        for index in range(len(dataset)):
            batch = collate([dataset[index]])
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**batch, use_cache=False).loss) * n
            tokens += n
    assert tokens > 0 and loss == pytest.approx(total / tokens, rel=1e-4)
