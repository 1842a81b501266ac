"""The modality- and length-grouped sampler."""

from __future__ import annotations

import random

from medvlm.data.collate import ModalityLengthGroupedSampler, padded_fraction, random_batches


def make(n: int = 103, seed: int = 0):
    rng = random.Random(seed)
    lengths = [rng.randint(10, 300) for _ in range(n)]
    has_image = [rng.random() < 0.7 for _ in range(n)]
    return lengths, has_image


def test_every_index_once_and_batches_single_modality_except_the_tail() -> None:
    lengths, has_image = make()
    sampler = ModalityLengthGroupedSampler(lengths, has_image, batch_size=4, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))
    batches = [order[i:i + 4] for i in range(0, len(order), 4)]
    image_batches = sum(has_image) // 4
    text_batches = (len(lengths) - sum(has_image)) // 4
    full = batches[: image_batches + text_batches]
    assert all(len({has_image[i] for i in batch}) == 1 for batch in full)
    assert len(full) == image_batches + text_batches


def test_deterministic_per_seed_and_epoch() -> None:
    lengths, has_image = make()
    a = ModalityLengthGroupedSampler(lengths, has_image, 4, seed=5)
    b = ModalityLengthGroupedSampler(lengths, has_image, 4, seed=5)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)


def test_length_grouping_cuts_padding() -> None:
    lengths, has_image = make(n=2000)
    grouped = ModalityLengthGroupedSampler(lengths, has_image, 16, seed=0).batches()
    shuffled = random_batches(len(lengths), 16, seed=0)
    assert padded_fraction(lengths, grouped) < 0.5 * padded_fraction(lengths, shuffled)


def test_padded_fraction_by_hand() -> None:
    assert padded_fraction([2, 4, 4], [[0, 1], [2]]) == 1 - 10 / 12
