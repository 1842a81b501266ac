"""Shared bits of the model-family tests: which families have tiny models, test images, samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medvlm.data.records import Sample, SampleMeta, Turn
from medvlm.model.families import family_names

# Every registered family builds tiny models; the list is read from the registry, not repeated.
FAMILIES = family_names()


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def write_pictures(root: Path, sizes: list[tuple[int, int]]) -> list[str]:
    names = []
    for index, (width, height) in enumerate(sizes):
        name = f"img{index}_{width}x{height}.png"
        picture(width, height, index).save(root / name)
        names.append(name)
    return names


def conversation(images: list[str], root: Path, sample_id: str = "s1") -> Sample:
    placeholders = "".join("<image>\n" for _ in images) if len(images) > 1 else ""
    turns = [Turn("user", f"{placeholders}What is shown?"), Turn("assistant", "A chest X-ray."),
             Turn("user", "Is there a lesion?"), Turn("assistant", "Yes, in the left lung.")]
    return Sample(id=sample_id, turns=turns, meta=SampleMeta(dataset="t", split="train"), images=images,
                  image_root=str(root))
