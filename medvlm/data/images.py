"""Image files to model-ready pixels.

Paths from data files are resolved inside their image root only: a record cannot make medvlm read
``../../etc/passwd`` or an absolute path elsewhere. Images are decoded with Pillow (EXIF orientation
applied, grey-scale and palette images converted to RGB), DICOM files through
:mod:`medvlm.data.dicom`, then shaped per LLaVA's ``image_aspect_ratio``:

* ``pad``: pad to a square filled with the image processor's mean colour, then resize (LLaVA-1.5);
* ``resize``: squash to the square input size;
* ``crop``: the processor's own resize and centre crop (original CLIP preprocessing).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from medvlm.errors import DataError

AspectMode = Literal["pad", "resize", "crop"]


def resolve_image_path(path: str, root: str | os.PathLike | None, *, file: str | None = None,
                       record: str | None = None) -> Path:
    """The file ``path`` names, confined to ``root``; escapes and absolute paths are refused."""
    if root is None:
        return Path(path)
    root_path = Path(root).resolve()
    candidate = Path(path)
    if candidate.is_absolute():
        raise DataError(f"image path '{path}' is absolute; image paths must be relative to the image "
                        f"root {root_path}", file=file, record=record, key="image")
    resolved = (root_path / candidate).resolve()
    if resolved != root_path and root_path not in resolved.parents:
        raise DataError(f"image path '{path}' leaves the image root {root_path}", file=file,
                        record=record, key="image")
    return resolved


def load_image(path: str | os.PathLike, *, file: str | None = None, record: str | None = None) -> Image.Image:
    """Decode one image (or DICOM) file to an RGB PIL image."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        from medvlm.data.dicom import load_dicom_image  # optional dependency, imported on demand

        return load_dicom_image(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}", file=file, record=record, key="image")
    try:
        with Image.open(path) as handle:
            handle.load()
            image = ImageOps.exif_transpose(handle)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}", file=file, record=record, key="image") from None
    if image.mode in ("I;16", "I;16B", "I"):  # 16-bit grey: scale to 8 bit before RGB conversion
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    return image.convert("RGB")


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad the shorter side symmetrically (LLaVA's ``expand2square``)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class ImagePreparer:
    """Turns PIL images into the pixel tensor the model's vision tower expects."""

    def __init__(self, image_processor, aspect: AspectMode = "pad") -> None:
        self.image_processor = image_processor
        self.aspect = aspect
        mean = getattr(image_processor, "image_mean", None) or [0.5, 0.5, 0.5]
        self.fill = tuple(int(round(255 * m)) for m in mean)
        crop = getattr(image_processor, "crop_size", None)
        size = getattr(image_processor, "size", None)
        target = crop if (getattr(image_processor, "do_center_crop", False) and crop) else size
        self.side = _side_of(target)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        if self.aspect == "pad":
            images = [expand_to_square(image, self.fill) for image in images]
        if self.aspect in ("pad", "resize") and self.side:
            images = [image.resize((self.side, self.side), Image.BICUBIC) for image in images]
        kwargs = {} if self.aspect == "crop" else {"do_pad": False}
        return self.image_processor(images, return_tensors="pt", **kwargs)["pixel_values"]


def _side_of(size) -> int | None:
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else lambda key, default=None: getattr(size, key, default)
    return get("height") or get("shortest_edge")


class PixelCache:
    """Prepared pixel tensors by image path, least recently used evicted beyond ``max_bytes``.

    Training revisits each image every epoch and VQA sets ask several questions per image; decoding
    and preprocessing once saves most of the input pipeline's time on small models.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, key: str) -> torch.Tensor | None:
        tensor = self._items.get(key)
        if tensor is not None:
            self._items.move_to_end(key)
        return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.element_size() * tensor.nelement()
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = tensor
        self.used += size
        while self.used > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.used -= evicted.element_size() * evicted.nelement()
