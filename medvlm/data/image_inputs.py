"""What an image becomes in the token sequence, and how per-image tensors join into a batch.

Families differ in both: LLaVA-1.5 and Gemma 3 give every image the same number of positions;
LLaVA-NeXT / OneVision (AnyRes tiling) and Qwen2.5-VL (dynamic resolution) give each image as many
as its size asks for. :class:`ImageTokens` (built by the model family, see
:mod:`medvlm.model.families`) tells the collator how many and what text surrounds them, so the
label mask is computed on the exact sequence the model sees. Sizes are read from image headers
(:func:`image_size`), so encoding a data set never decodes its pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# EXIF orientations that swap width and height (rotated by 90 or 270 degrees)


@dataclass(frozen=True)
class ImageTokens:
    """The positions one image takes: ``prefix + token × count + suffix``.

    ``fixed``: the same count for every image; otherwise ``per_size(height, width)`` of the image as
    the processor receives it (after medvlm's aspect handling) gives the count. ``max_images``: the
    most images one sample may have (None: any number).
    """

    token: str
    fixed: int | None = None
    per_size: Callable[[int, int], int] | None = None
    prefix: str = ""
    suffix: str = ""
    max_images: int | None = None

    def __post_init__(self) -> None:
        if (self.fixed is None) == (self.per_size is None):
            raise ValueError("ImageTokens needs exactly one of fixed or per_size")

    @property
    def needs_sizes(self) -> bool:
        return self.fixed is None

    def count(self, size: tuple[int, int] | None = None) -> int:
        if self.fixed is not None:
            return self.fixed
        if size is None:
            raise ValueError("this family's image-token count depends on the image size")
        assert self.per_size is not None
        return int(self.per_size(*size))

    def block(self, count: int) -> str:
        return f"{self.prefix}{self.token * count}{self.suffix}"


def concat_image_tensors(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Join per-image (or per-sample) tensors along the first axis.

    Tensors that differ beyond the first axis are zero-padded to the largest shape first: AnyRes
    pixel tiles (``[images, tiles, 3, H, W]``) vary in their tile count, and the model reads only
    the tiles each image's ``image_sizes`` entry says it has — as transformers' own processor pads.
    """
    if len(parts) == 1:
        return parts[0]
    joined: dict[str, torch.Tensor] = {}
    for key in parts[0]:
        tensors = [part[key] for part in parts]
        shapes = {tuple(t.shape[1:]) for t in tensors}
        if len(shapes) > 1:
            biggest = [max(sizes) for sizes in zip(*shapes, strict=True)]
            padded = []
            for tensor in tensors:
                pad: list[int] = []
                for have, want in zip(reversed(tensor.shape[1:]), reversed(biggest), strict=True):
                    pad += [0, want - have]
                padded.append(torch.nn.functional.pad(tensor, pad))
            tensors = padded
        joined[key] = torch.cat(tensors, dim=0)
    return joined


def tensor_bytes(tensors: dict[str, torch.Tensor] | torch.Tensor) -> int:
    items = tensors.values() if isinstance(tensors, dict) else [tensors]
    return sum(t.element_size() * t.nelement() for t in items)
