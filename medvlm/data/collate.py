"""Samples to batches: tokenisation, label masks, image tokens, batching order.

The label mask comes from one tokenisation of the whole rendered conversation: a token is
supervised when its character span overlaps an assistant reply (see :mod:`medvlm.data.templates`).
Image placeholders are expanded to the exact number of image-token positions the model fills (the
same for every image, or per image from its size for AnyRes and dynamic-resolution families: see
:class:`~medvlm.data.image_inputs.ImageTokens`), and those positions are never truncated away: an
over-long sample is cut on its trailing text when every image token and at least one supervised
token survive, otherwise it is rejected and counted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from medvlm.data.image_inputs import ImageTokens, concat_image_tensors
from medvlm.data.images import ImagePreparer, PixelCache, cache_key, image_size, load_image, resolve_image_path
from medvlm.data.records import IMAGE_PLACEHOLDER, Sample, Turn
from medvlm.data.templates import Rendered, Template, chunk_gap, expand_image_placeholders
from medvlm.errors import DataError

IGNORE_INDEX = -100


class TooLong(Exception):
    """A sample that cannot fit ``max_length`` without losing image tokens or all its targets."""


def place_image_placeholders(sample: Sample) -> list[Turn]:
    """Turns with exactly one placeholder per image; a lone one moves to the front of turn one.

    LLaVA data puts ``<image>`` before or after the first question; trainers move it to the front.
    A sample with one image and no placeholder gets one; a count mismatch is a data error.
    """
    turns = list(sample.turns)
    found = sum(turn.text.count(IMAGE_PLACEHOLDER) for turn in turns)
    if any(IMAGE_PLACEHOLDER in t.text for t in turns if t.role == "assistant"):
        raise DataError("an assistant turn contains <image>", record=sample.id, key="conversations")
    if len(sample.images) == 1 and found <= 1:
        first = turns[0]
        text = first.text.replace(IMAGE_PLACEHOLDER, "").strip()
        turns[0] = Turn(first.role, f"{IMAGE_PLACEHOLDER}\n{text}")
    elif found != len(sample.images):
        raise DataError(f"{found} <image> placeholder(s) for {len(sample.images)} image(s)",
                        record=sample.id, key="conversations")
    return turns


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


class ConversationEncoder:
    """Render → expand image placeholders → tokenise once with offsets → mask labels.

    ``image_token_count``: positions per image (an int: LLaVA-1.5's fixed block of image tokens), or
    the family's :class:`ImageTokens`; when counts depend on the image, ``encode`` needs each image's
    (height, width) as the processor receives it (:func:`sample_image_sizes`).
    """

    def __init__(self, tokenizer, template: Template, image_token_count: int | ImageTokens, max_length: int,
                 system_prompt: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.system_prompt = system_prompt
        if isinstance(image_token_count, int):
            token = getattr(tokenizer, "image_token", None) or IMAGE_PLACEHOLDER
            image_token_count = ImageTokens(token, fixed=image_token_count)
        self.image_tokens = image_token_count
        self.image_token_count = image_token_count.fixed  # None when it depends on the image
        self.image_token = image_token_count.token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.bos = tokenizer.bos_token or ""
        self.eos = tokenizer.eos_token or ""
        self.gap = chunk_gap(tokenizer, self.image_token)

    def _counts(self, sample: Sample, sizes: list[tuple[int, int]] | None) -> list[int]:
        limit = self.image_tokens.max_images
        if limit is not None and len(sample.images) > limit:
            raise DataError(f"{len(sample.images)} images in one sample; this model family takes at most {limit}",
                            record=sample.id, key="image")
        if not self.image_tokens.needs_sizes:
            return [self.image_tokens.count()] * len(sample.images)
        if sizes is None or len(sizes) != len(sample.images):
            raise DataError("this model's image-token count depends on each image's size; none given",
                            record=sample.id)
        return [self.image_tokens.count(size) for size in sizes]

    def _render(self, turns: list[Turn], counts: list[int], generation: bool) -> Rendered:
        rendered = self.template.render(turns, bos=self.bos, eos=self.eos, system=self.system_prompt,
                                        add_generation_prompt=generation, gap=self.gap)
        blocks = [self.image_tokens.block(count) for count in counts]
        # the plain template keeps only the image placeholders of its user turn: one block per image
        return expand_image_placeholders(rendered, blocks[0] if len(set(blocks)) == 1 else blocks)

    def _tokenize(self, rendered: Rendered, counts: list[int], sample_id: str) -> tuple[list[int], list[int]]:
        encoding = self.tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = encoding["input_ids"]
        expected = sum(counts)
        actual = sum(1 for token in ids if token == self.image_token_id)
        if actual != expected:
            raise DataError(f"tokenised to {actual} image tokens, expected {expected}: the tokenizer must "
                            f"treat '{self.image_token}' as one special token", record=sample_id)
        labels = [IGNORE_INDEX] * len(ids)
        spans = rendered.supervised
        for index, (start, end) in enumerate(encoding["offset_mapping"]):
            if end > start and any(start < span_end and end > span_start for span_start, span_end in spans):
                labels[index] = ids[index]
        return ids, labels

    def encode(self, sample: Sample, sizes: list[tuple[int, int]] | None = None) -> Encoded:
        """Training features; raises :class:`TooLong` when the sample cannot fit."""
        turns = place_image_placeholders(sample)
        counts = self._counts(sample, sizes)
        ids, labels = self._tokenize(self._render(turns, counts, False), counts, sample.id)
        if len(ids) <= self.max_length:
            return Encoded(ids, labels)
        image_positions = [i for i, token in enumerate(ids) if token == self.image_token_id]
        if image_positions and image_positions[-1] >= self.max_length:
            raise TooLong(f"image tokens end at position {image_positions[-1] + 1} > max_length "
                          f"{self.max_length}")
        kept = labels[: self.max_length]
        if all(label == IGNORE_INDEX for label in kept):
            raise TooLong(f"no answer token left within max_length {self.max_length} "
                          f"(sample has {len(ids)} tokens)")
        return Encoded(ids[: self.max_length], kept, truncated=True)

    def encode_prompt(self, sample: Sample, sizes: list[tuple[int, int]] | None = None) -> list[int]:
        """Token ids of the prompt for generating the reply to the last user turn."""
        turns = place_image_placeholders(sample)
        if turns and turns[-1].role == "assistant":
            turns = turns[:-1]
        counts = self._counts(sample, sizes)
        ids, _ = self._tokenize(self._render(turns, counts, True), counts, sample.id)
        return ids


def sample_image_sizes(sample: Sample, preparer: ImagePreparer | None) -> list[tuple[int, int]]:
    """(height, width) of each of a sample's images as the processor will receive them."""
    if preparer is None:
        raise DataError("sample has images but the model has no image processor", record=sample.id)
    dicom = sample.meta.extra.get("dicom")
    sizes = []
    for path in sample.images:
        resolved = resolve_image_path(path, sample.image_root, record=sample.id)
        sizes.append(preparer.input_size(*image_size(resolved, dicom, record=sample.id)))
    return sizes


@dataclass
class EncodeReport:
    total: int = 0
    kept: int = 0
    truncated: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (sample id, reason)

    def summary(self) -> dict[str, Any]:
        return {"total": self.total, "kept": self.kept, "truncated": self.truncated,
                "rejected": len(self.rejected), "rejected_examples": self.rejected[:10]}


class SupervisedDataset(Dataset):
    """Pre-tokenised training samples; images are decoded lazily in ``__getitem__``."""

    def __init__(self, samples: list[Sample], encoder: ConversationEncoder, preparer: ImagePreparer | None,
                 cache: PixelCache | None = None) -> None:
        self.encoder = encoder
        self.preparer = preparer
        self.cache = cache
        self.report = EncodeReport(total=len(samples))
        self.samples: list[Sample] = []
        self.features: list[Encoded] = []
        sized = encoder.image_tokens.needs_sizes
        for sample in samples:
            try:
                sizes = sample_image_sizes(sample, preparer) if sized and sample.images else None
                encoded = encoder.encode(sample, sizes)
            except TooLong as reason:
                self.report.rejected.append((sample.id, str(reason)))
                continue
            self.report.truncated += encoded.truncated
            self.samples.append(sample)
            self.features.append(encoded)
        self.report.kept = len(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        return [len(feature.input_ids) for feature in self.features]

    @property
    def has_image(self) -> list[bool]:
        return [sample.has_image for sample in self.samples]

    def num_tokens(self) -> int:
        return sum(self.lengths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample, feature = self.samples[index], self.features[index]
        item: dict[str, Any] = {"input_ids": torch.tensor(feature.input_ids),
                                "labels": torch.tensor(feature.labels)}
        if sample.images:
            item.update(load_sample_images(sample, self.preparer, self.cache))
        return item


def load_sample_images(sample: Sample, preparer: ImagePreparer | None,
                       cache: PixelCache | None = None) -> dict[str, torch.Tensor]:
    """The image tensors of a sample (``pixel_values`` with one entry per image, plus the family's
    ``image_sizes`` / ``image_grid_thw``), each image through ``cache`` when given."""
    if preparer is None:
        raise DataError("sample has images but the model has no image processor", record=sample.id)
    parts = []
    dicom = sample.meta.extra.get("dicom")  # per-source DICOM rendering, see medvlm.data.dicom
    for path in sample.images:
        resolved = resolve_image_path(path, sample.image_root, record=sample.id)
        key = cache_key(resolved, dicom)
        tensors = cache.get(key) if cache is not None else None
        if tensors is None:
            tensors = preparer.prepare([load_image(resolved, record=sample.id, dicom=dicom)])
            if cache is not None:
                cache.put(key, tensors)
        parts.append(tensors)
    return concat_image_tensors(parts)  # one image: no copy


def load_sample_pixels(sample: Sample, preparer: ImagePreparer | None,
                       cache: PixelCache | None = None) -> torch.Tensor:
    """Pixel tensor (one entry per image) of a sample, through ``cache`` when given."""
    return load_sample_images(sample, preparer, cache)["pixel_values"]


class Collator:
    """Pads a list of dataset items into a batch (right padding for training, left for generation).

    Image tensors of every item (``pixel_values`` and the family's extras) are joined in item order;
    ``token_types`` = (key, image token id) adds a 0/1 tensor marking image positions under ``key``
    (Qwen2.5-VL's ``mm_token_type_ids`` for its 3-D positions, Gemma 3's ``token_type_ids``).
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right",
                 token_types: tuple[str, int] | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side
        self.token_types = token_types

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(items), longest), dtype=torch.long)
        has_labels = "labels" in items[0]
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            where = slice(0, n) if self.padding_side == "right" else slice(longest - n, longest)
            input_ids[row, where] = item["input_ids"]
            attention[row, where] = 1
            if has_labels:
                labels[row, where] = item["labels"]
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if has_labels:
            batch["labels"] = labels
        if self.token_types is not None:
            key, image_token_id = self.token_types
            batch[key] = (input_ids == image_token_id).long()
        images = [{key: value for key, value in item.items() if key not in ("input_ids", "labels")}
                  for item in items if item.get("pixel_values") is not None]
        if images:
            batch.update(concat_image_tensors(images))
        return batch


class ModalityLengthGroupedSampler(Sampler[int]):
    """LLaVA's ``group_by_modality_length``: batches never mix image and text-only samples (except
    one final batch of leftovers), and within a mega-batch samples are sorted by length.

    Yields indices whose consecutive runs of ``batch_size`` form the batches, so it works under the
    DataLoader's (and accelerate's per-process) fixed-size batching. Deterministic from
    ``seed`` and the epoch (``set_epoch``), which keeps resumed runs on the same order.
    """

    def __init__(self, lengths: list[int], has_image: list[bool], batch_size: int, seed: int = 0,
                 megabatch_batches: int = 8) -> None:
        self.lengths = lengths
        self.has_image = has_image
        self.batch_size = batch_size
        self.seed = seed
        self.megabatch = batch_size * megabatch_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        full: list[list[int]] = []
        leftovers: list[int] = []
        for modality in (True, False):
            group = [i for i, flag in enumerate(self.has_image) if flag == modality]
            rng.shuffle(group)
            for start in range(0, len(group), self.megabatch):
                mega = sorted(group[start:start + self.megabatch], key=lambda i: -self.lengths[i])
                for b in range(0, len(mega), self.batch_size):
                    batch = mega[b:b + self.batch_size]
                    (full.append(batch) if len(batch) == self.batch_size else leftovers.extend(batch))
        rng.shuffle(full)
        leftovers.sort(key=lambda i: -self.lengths[i])
        tail = [leftovers[i:i + self.batch_size] for i in range(0, len(leftovers), self.batch_size)]
        return full + tail

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch


def padded_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of token positions that are padding when ``batches`` are padded to their longest item."""
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 0.0 if padded == 0 else 1.0 - real / padded


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
