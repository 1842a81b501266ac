"""Image files to model-ready pixels.

Paths from data files are resolved inside their image root only: a record cannot make medvlm read
``../../etc/passwd`` or an absolute path elsewhere. Images are decoded with Pillow (EXIF orientation
applied, grey-scale and palette images converted to RGB), DICOM files through
:mod:`medvlm.data.dicom`, then shaped per LLaVA's ``image_aspect_ratio``:

* ``pad``: pad to a square filled with the image processor's mean colour, then resize (LLaVA-1.5);
* ``resize``: squash to the square input size;
* ``crop``: the processor's own resize and centre crop (original CLIP preprocessing);
* ``native``: the original image, sized by the processor itself (AnyRes tiling, dynamic resolution).

A ``.dcm``/``.dicom`` path (or any file with the DICOM marker) is accepted wherever an image path
is; per-source DICOM settings (window, channels, frame) travel with each sample in
``meta.extra["dicom"]``. :func:`check_images` validates every image a data set references before
training (missing, unreadable, or outside its root), so bad images are counted and reported up front
instead of failing mid-epoch.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from medvlm.data.image_inputs import tensor_bytes
from medvlm.errors import DataError

if TYPE_CHECKING:
    from medvlm.data.records import Sample

AspectMode = Literal["pad", "resize", "crop", "native"]
ImageCheckMode = Literal["none", "exists", "header", "decode"]
DICOM_SUFFIXES = (".dcm", ".dicom")


def max_image_pixels() -> int:
    """Pixels an image may have before decoding (``MEDVLM_MAX_IMAGE_PIXELS``; default Pillow's warning
    threshold, ~89 M, e.g. 9459 × 9459): a few-KB PNG can declare a gigapixel canvas (a
    decompression bomb) and exhaust memory while it decodes. Whole-slide pathology images are tiled
    before they reach a VLM, so nothing real comes near the bound."""
    return int(os.environ.get("MEDVLM_MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS or 89_478_485))


def open_image(source: str | os.PathLike | IO[bytes], max_pixels: int | None = None) -> Image.Image:
    """Open (not decode) an image, refusing one over ``max_pixels`` (default :func:`max_image_pixels`)
    with a message naming it.

    Pillow's own bomb warning is silenced here: the size check below replaces it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(source)
    width, height = image.size
    limit = max_pixels or max_image_pixels()
    if width * height > limit:
        image.close()
        name = "the image" if hasattr(source, "read") else f"image {source}"
        hint = "; raise MEDVLM_MAX_IMAGE_PIXELS if it is genuine" if max_pixels is None else ""
        raise DataError(f"{name} is {width}×{height} = {width * height:,} pixels, over the limit of "
                        f"{limit:,} (a decompression bomb?){hint}")
    return image


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


def is_dicom_path(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    from medvlm.data.dicom import is_dicom_file

    return path.suffix == "" and is_dicom_file(path)


def load_image(path: str | os.PathLike, *, file: str | None = None, record: str | None = None,
               dicom: Mapping[str, Any] | None = None) -> Image.Image:
    """Decode one image (or DICOM) file to an RGB PIL image.

    ``dicom``: :class:`medvlm.data.dicom.DicomSettings` fields for DICOM files (ignored otherwise).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}", file=file, record=record, key="image")
    if is_dicom_path(path):
        from medvlm.data.dicom import load_dicom_image  # pydicom is imported on demand

        try:
            return load_dicom_image(path, dicom)
        except DataError as exc:
            raise DataError(str(exc), file=file, record=record, key="image") from None
    try:
        return open_rgb(path)
    except DataError as exc:
        raise DataError(exc.detail, file=file, record=record, key="image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}", file=file, record=record, key="image") from None


def open_rgb(source: str | os.PathLike | IO[bytes], max_pixels: int | None = None) -> Image.Image:
    """Decode an image file or stream with Pillow: EXIF orientation applied, then RGB.

    Images over ``max_pixels`` (default :func:`max_image_pixels`) are refused from their header,
    before any pixel is decoded (:func:`open_image`). Raises Pillow's own errors for undecodable
    data; callers say which file or request was bad.
    """
    with open_image(source, max_pixels) as handle:
        handle.load()
        image = ImageOps.exif_transpose(handle)
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: 16-bit and float grey rescaled, transparency composited on black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if image.mode != "F" and low >= 0 and high <= 255:
            scaled = values  # 8-bit content stored in a wide mode
        else:  # 12/16-bit grey (X-ray PNGs, TIFFs): stretch what is used, not the nominal 65535
            scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(np.rint(scaled).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def cache_key(path: Path, dicom: Mapping[str, Any] | None) -> str:
    """Prepared pixels depend on the DICOM settings too, so they are part of the cache key."""
    if dicom and is_dicom_path(path):
        from medvlm.data.dicom import DicomSettings

        return f"{path}|{DicomSettings.parse(dicom).key()}"
    return str(path)


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
    """Turns PIL images into the tensors the model's vision tower expects.

    ``dynamic``: the family's processor sizes images itself (AnyRes tiling, dynamic resolution, see
    :meth:`medvlm.model.families.ModelFamily.dynamic_resolution`): ``pad`` then only pads to a
    square and ``crop``/``native`` hand the image over as it is; ``resize`` still squashes to the
    square input size. ``native`` is the processor's own preprocessing of the original image.
    """

    def __init__(self, image_processor, aspect: AspectMode = "pad", dynamic: bool = False,
                 side: int | None = None, keys: tuple[str, ...] = ("pixel_values",)) -> None:
        self.image_processor = image_processor
        self.aspect = aspect
        self.dynamic = dynamic
        self.keys = keys
        mean = getattr(image_processor, "image_mean", None) or [0.5, 0.5, 0.5]
        self.fill = tuple(int(round(255 * m)) for m in mean)
        crop = getattr(image_processor, "crop_size", None)
        size = getattr(image_processor, "size", None)
        target = crop if (getattr(image_processor, "do_center_crop", False) and crop) else size
        self.side = side or _side_of(target)

    def _resizes(self) -> bool:
        return bool(self.side) and (self.aspect == "resize" or (self.aspect == "pad" and not self.dynamic))

    def shape(self, images: list[Image.Image]) -> list[Image.Image]:
        """The images as medvlm hands them to the processor (``image_aspect_ratio``)."""
        if self.aspect == "pad":
            images = [expand_to_square(image, self.fill) for image in images]
        if self._resizes():
            images = [image.resize((self.side, self.side), Image.BICUBIC) for image in images]
        return images

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the processor receives for an image of this size (see :meth:`shape`)."""
        if self._resizes():
            return self.side, self.side
        if self.aspect == "pad":
            side = max(height, width)
            return side, side
        return height, width

    def prepare(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The model inputs the processor makes of ``images`` (``keys``: ``pixel_values`` and the
        family's ``image_sizes`` / ``image_grid_thw``)."""
        kwargs = {"do_pad": False} if self.aspect in ("pad", "resize") and not self.dynamic else {}
        out = self.image_processor(self.shape(images), return_tensors="pt", **kwargs)
        return {key: out[key] for key in self.keys}

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return self.prepare(images)["pixel_values"]


def _side_of(size) -> int | None:
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else lambda key, default=None: getattr(size, key, default)
    return get("height") or get("shortest_edge")


class PixelCache:
    """Prepared image tensors by image path, least recently used evicted beyond ``max_bytes``.

    Training revisits each image every epoch and VQA sets ask several questions per image; decoding
    and preprocessing once saves most of the input pipeline's time on small models.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._items: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        tensors = self._items.get(key)
        if tensors is not None:
            self._items.move_to_end(key)
        return tensors

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        size = tensor_bytes(tensors)
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = tensors
        self.used += size
        while self.used > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.used -= tensor_bytes(evicted)


# --------------------------------------------------------------------------------------------------
# Validating the images a data set references
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageCheck:
    """What :func:`check_images` found: counts over distinct image files, and the bad samples."""

    mode: str
    referenced: int = 0
    present: int = 0
    missing: int = 0
    unreadable: int = 0
    refused: int = 0  # outside the image root, or absolute
    dicom_files: int = 0
    dicom_modalities: Counter = field(default_factory=Counter)
    bad: dict[str, tuple[str, str]] = field(default_factory=dict)  # sample id -> (record, message)

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "referenced": self.referenced, "present": self.present, "missing": self.missing,
                "unreadable": self.unreadable, "refused": self.refused, "dicom_files": self.dicom_files,
                "dicom_modalities": dict(self.dicom_modalities.most_common())}


def _probe(path: Path, mode: str, dicom: Mapping[str, Any] | None) -> tuple[str, str | None, str | None]:
    """(status, message, DICOM modality) for one file: status present | missing | unreadable."""
    if not path.is_file():
        return "missing", f"image file not found: {path}", None
    if mode == "exists":
        return "present", None, None
    try:
        if is_dicom_path(path):
            from medvlm.data.dicom import dicom_info, read_dicom

            info = read_dicom(path, dicom)[1] if mode == "decode" else dicom_info(path)
            return "present", None, info.modality or "unknown"
        if mode == "decode":
            load_image(path)
        else:
            with open_image(path):  # opening reads and checks the header only
                pass
    except DataError as exc:
        return "unreadable", exc.detail, None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return "unreadable", f"cannot decode image {path}: {exc}", None
    return "present", None, None


def check_images(samples: list[Sample], mode: ImageCheckMode = "header") -> ImageCheck:
    """Check every image the samples reference (each distinct file once).

    ``exists``: the file is there; ``header``: Pillow (or pydicom) can parse its header; ``decode``:
    it decodes fully. Paths that leave their image root are refused whatever the mode.
    """
    check = ImageCheck(mode=mode)
    if mode == "none":
        return check
    seen: dict[str, tuple[str, str | None]] = {}
    for sample in samples:
        record = sample.meta.source_id or sample.id
        dicom = sample.meta.extra.get("dicom")
        for name in sample.images:
            try:
                path = resolve_image_path(name, sample.image_root)
            except DataError as exc:
                check.refused += 1
                check.bad.setdefault(sample.id, (record, str(exc).removeprefix("key 'image': ")))
                continue
            key = cache_key(path, dicom)
            if key not in seen:
                status, message, modality = _probe(path, mode, dicom)
                seen[key] = (status, message)
                check.referenced += 1
                setattr(check, status, getattr(check, status) + 1)
                if modality is not None:
                    check.dicom_files += 1
                    check.dicom_modalities[modality] += 1
            status, message = seen[key]
            if status != "present":
                check.bad.setdefault(sample.id, (record, message or status))
    return check


def drop_bad_images(samples: list[Sample], check: ImageCheck, report: Any, *, file: str | None) -> list[Sample]:
    """Report each sample with a bad image (raising under the error policy) and return the rest."""
    for sample in samples:
        if sample.id in check.bad:
            record, message = check.bad[sample.id]
            report.problem(message, file=file, record=record, key="image")
    return [sample for sample in samples if sample.id not in check.bad]


_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def image_size(path: Path, dicom: Mapping[str, Any] | None = None, *, record: str | None = None) -> tuple[int, int]:
    """(height, width) of an image file as :func:`medvlm.data.images.load_image` would decode it,
    read from the header (EXIF rotation applied); DICOM files are rendered (their settings may crop)."""
    if is_dicom_path(path):
        width, height = load_image(path, record=record, dicom=dicom).size
        return height, width
    try:
        with open_image(path) as handle:
            width, height = handle.size
            orientation = handle.getexif().get(0x0112)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}", record=record, key="image") from None
    except DataError as exc:  # over the pixel limit
        raise DataError(exc.detail, record=record, key="image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}", record=record, key="image") from None
    return (width, height) if orientation in _TRANSPOSED else (height, width)
