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
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medvlm.data.collate import load_sample_images
from medvlm.data.image_inputs import concat_image_tensors
from medvlm.data.images import ImagePreparer, PixelCache
from medvlm.data.records import Sample
from medvlm.errors import MedvlmError
from medvlm.model.families import family_of
from medvlm.model.prompting import TrainedPrompt
from medvlm.recipe import Recipe
from medvlm.rundir import StageDir
from medvlm.train.saving import save_final_model
from medvlm.train.setup import TrainingSetup

log = logging.getLogger("medvlm")

MAX_FLAT_FEATURES = 1 << 16


class ContrastiveVisionModel(nn.Module):
    accepts_loss_kwargs = False  # the Trainer must not pass num_items_in_batch into **images

    """Wraps a model's vision tower with the two projection heads of a CLIP objective.

    ``example``: the image tensors of one sample, to size the image head (the tower's feature count
    for the data's images; the family says how its tower reads them).
    """

    def __init__(self, model: nn.Module, vocab_size: int, example: dict[str, torch.Tensor],
                 embed_dim: int = 64) -> None:
        super().__init__()
        self.model_config = model.config
        self.family = family_of(model.config)
        self.vision_tower = self.family.vision_tower(model)
        with torch.no_grad():
            features = self.family.tower_features(self.vision_tower, self.model_config, example)
        tokens, hidden = features.shape[-2:]
        flat = tokens * hidden
        if flat > MAX_FLAT_FEATURES:
            raise MedvlmError(f"contrastive pretraining is for tiny vision towers ({tokens} tokens × "
                              f"{hidden} features is too large); real towers "
                              "come pretrained: start from a CLIP/SigLIP checkpoint instead")
        self.image_head = nn.Linear(flat, embed_dim)
        self.text_embed = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean")
        self.text_head = nn.Linear(embed_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def image_features(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.family.tower_features(self.vision_tower, self.model_config, images)
        return F.normalize(self.image_head(hidden.flatten(1)), dim=-1)

    def forward(self, text_ids: torch.Tensor, text_offsets: torch.Tensor,
                **images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = self.image_features(images)
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
        return {"images": self.images(index), "text": torch.tensor(self.captions[index])}

    def images(self, index: int) -> dict[str, torch.Tensor]:
        """The tensors of the sample's first image (a pair is one image and its caption)."""
        sample = self.samples[index]
        return load_sample_images(replace(sample, images=sample.images[:1]), self.preparer, self.cache)


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(item["text"]) for item in items])
    return {**concat_image_tensors([item["images"] for item in items]),
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
    return ContrastiveSetup(ContrastiveVisionModel(model, len(processor.tokenizer), pairs.images(0)), pairs,
                            collate_pairs,
                            {"total": len(samples), "kept": len(pairs)}, counts_tokens=False, llava=model)
