"""CLIP-style contrastive pretraining of a vision tower on image–caption pairs.

Real LLaVA inherits a vision tower pretrained contrastively (CLIP, SigLIP) and keeps it frozen. A
tiny tower built from config has no such past, and trained from scratch inside the LLaVA objective
it collapses to image-independent features long before the language model learns to read them.
This stage gives tiny models the same starting point: a symmetric InfoNCE loss between the tower's
patch features (the very features LLaVA consumes: the ``vision_feature_layer`` output, CLS dropped
under the "default" strategy) and a bag-of-words caption encoder.

The image head flattens the patch features, so it is meant for small towers; towers of real
models come pretrained and never need this stage.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medvlm.data.collate import load_sample_pixels
from medvlm.data.images import ImagePreparer, PixelCache
from medvlm.data.records import Sample
from medvlm.errors import MedvlmError
from medvlm.model.build import num_image_tokens
from medvlm.model.prompting import TrainedPrompt
from medvlm.recipe import Recipe
from medvlm.rundir import StageDir
from medvlm.train.saving import save_final_model
from medvlm.train.setup import TrainingSetup

log = logging.getLogger("medvlm")

MAX_FLAT_FEATURES = 1 << 16


class ContrastiveVisionModel(nn.Module):
    """Wraps a LLaVA model's vision tower with the two projection heads of a CLIP objective."""

    def __init__(self, llava: nn.Module, vocab_size: int, embed_dim: int = 64) -> None:
        super().__init__()
        config = llava.config
        tokens = num_image_tokens(config)
        flat = tokens * config.vision_config.hidden_size
        if flat > MAX_FLAT_FEATURES:
            raise MedvlmError(f"contrastive pretraining is for tiny vision towers ({tokens} tokens × "
                              f"{config.vision_config.hidden_size} features is too large); real towers "
                              "come pretrained: start from a CLIP/SigLIP checkpoint instead")
        self.vision_tower = llava.model.vision_tower
        self.feature_layer = config.vision_feature_layer
        self.drop_cls = config.vision_feature_select_strategy == "default" and \
            config.vision_config.model_type == "clip_vision_model"
        self.image_head = nn.Linear(flat, embed_dim)
        self.text_embed = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean")
        self.text_head = nn.Linear(embed_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states[self.feature_layer]
        if self.drop_cls:
            hidden = hidden[:, 1:]
        return F.normalize(self.image_head(hidden.flatten(1)), dim=-1)

    def forward(self, pixel_values: torch.Tensor, text_ids: torch.Tensor,
                text_offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        images = self.image_features(pixel_values)
        texts = F.normalize(self.text_head(self.text_embed(text_ids, text_offsets)), dim=-1)
        logits = self.logit_scale.exp().clamp(max=100.0) * images @ texts.T
        target = torch.arange(len(images), device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return {"loss": loss, "logits": logits}


class CaptionPairs(Dataset):
    """(image, caption) pairs: the image of each sample and its first assistant turn."""

    def __init__(self, samples: list[Sample], tokenizer, preparer: ImagePreparer,
                 cache: PixelCache | None = None) -> None:
        self.samples = [s for s in samples if s.has_image and s.answer]
        self.cache = cache
        if not self.samples:
            raise MedvlmError("contrastive pretraining needs image–caption samples; the data has none")
        self.preparer = preparer
        self.captions = [tokenizer(s.answer.lower(), add_special_tokens=False)["input_ids"] or
                         [tokenizer.unk_token_id] for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    # Read by the modality/length sampler (all pairs have an image).
    @property
    def lengths(self) -> list[int]:
        return [len(c) for c in self.captions]

    @property
    def has_image(self) -> list[bool]:
        return [True] * len(self.samples)

    def num_tokens(self) -> int:
        return sum(self.lengths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        return {"pixel_values": load_sample_pixels(sample, self.preparer, self.cache)[0],
                "text": torch.tensor(self.captions[index])}


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(item["text"]) for item in items])
    return {"pixel_values": torch.stack([item["pixel_values"] for item in items]),
            "text_ids": torch.cat([item["text"] for item in items]),
            "text_offsets": torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])}


@dataclass
class ContrastiveSetup(TrainingSetup):
    """The tower stage: image–caption pairs; the LLaVA model whose tower trained (not the CLIP wrapper)
    is saved."""

    llava: nn.Module | None = None

    def save(self, trainer, processor, recipe: Recipe, out: StageDir, adapter: bool) -> None:
        if trainer.is_world_process_zero():
            save_final_model(self.llava, processor, TrainedPrompt.of(recipe.data), out)


def contrastive_setup(recipe: Recipe, model, processor, samples: list[Sample], preparer: ImagePreparer,
                      ) -> TrainingSetup:
    pairs = CaptionPairs(samples, processor.tokenizer, preparer, PixelCache(recipe.data.image_cache_mb << 20))
    log.info("data: %d image-caption pairs", len(pairs))
    return ContrastiveSetup(ContrastiveVisionModel(model, len(processor.tokenizer)), pairs, collate_pairs,
                            {"total": len(samples), "kept": len(pairs)}, counts_tokens=False, llava=model)
