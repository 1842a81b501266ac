"""Images a client sends to the server: where they may come from and how they are decoded.

* ``data:`` URLs (base64) are always accepted — the only form a browser or a remote client needs.
* A local path (plain, or a ``file://`` URL) only when the server was started with ``--image-root``,
  and only inside it: the path is resolved (``..`` and symbolic links followed) and must stay under
  the root, so a request cannot read any other file of the machine.
* ``http(s)://`` URLs only with ``--allow-remote-images``: otherwise the server makes no request to
  an address a client chooses.

Every source is size-limited before decoding (bytes, then pixels from the image header). DICOM is
recognised by its ``DICM`` marker (or an ``application/dicom`` data URL) and rendered through
:mod:`medvlm.data.dicom` with the window the request names — the same PHI-free path training uses;
nothing from the file's header is logged or returned.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from PIL import Image, UnidentifiedImageError

from medvlm.data.images import open_rgb
from medvlm.errors import DataError, MedvlmError

DICOM_MIME = "application/dicom"


class RequestError(MedvlmError):
    """A request the server refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.param, self.kind = status, param, kind


@dataclass(frozen=True)
class MediaPolicy:
    image_root: Path | None = None
    allow_remote: bool = False
    max_image_bytes: int = 10 << 20
    max_image_pixels: int = 40_000_000
    remote_timeout_s: float = 10.0


@dataclass(frozen=True)
class ImageBytes:
    data: bytes
    dicom: bool


def is_dicom_bytes(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def read_image(url: str, policy: MediaPolicy, param: str = "image_url") -> ImageBytes:
    """The bytes an image reference names, within the policy's limits."""
    if url.startswith("data:"):
        return _data_url(url, policy, param)
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("http", "https"):
        return _remote(url, policy, param)
    if scheme not in ("", "file"):
        raise RequestError(f"unsupported image URL scheme '{scheme}'; send a data: URL", param=param)
    return _local(unquote(urlsplit(url).path) if scheme == "file" else url, policy, param)


def _data_url(url: str, policy: MediaPolicy, param: str) -> ImageBytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise RequestError("a data URL must be base64: data:<type>;base64,<data>", param=param)
    mime = header[len("data:"):-len(";base64")].lower()
    if mime and not (mime.startswith("image/") or mime in (DICOM_MIME, "application/octet-stream")):
        raise RequestError(f"data URL type '{mime}' is not an image or DICOM", param=param)
    if len(payload) * 3 // 4 > policy.max_image_bytes:
        raise RequestError(f"image is larger than the limit of {policy.max_image_bytes:,} bytes", status=413,
                           param=param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("the data URL's base64 payload is invalid", param=param) from None
    return ImageBytes(data, mime == DICOM_MIME or is_dicom_bytes(data))


def _local(path: str, policy: MediaPolicy, param: str) -> ImageBytes:
    if policy.image_root is None:
        raise RequestError("local image paths are disabled; start the server with --image-root DIR or send a "
                           "data: URL", status=403, param=param, kind="permission_error")
    root = policy.image_root.resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise RequestError(f"image path '{path}' is outside the server's image root", status=403, param=param,
                           kind="permission_error")
    if not resolved.is_file():
        raise RequestError(f"image file '{path}' not found under the image root", status=404, param=param,
                           kind="not_found_error")
    if resolved.stat().st_size > policy.max_image_bytes:
        raise RequestError(f"image is larger than the limit of {policy.max_image_bytes:,} bytes", status=413,
                           param=param)
    data = resolved.read_bytes()
    return ImageBytes(data, resolved.suffix.lower() in (".dcm", ".dicom") or is_dicom_bytes(data))


def _remote(url: str, policy: MediaPolicy, param: str) -> ImageBytes:
    if not policy.allow_remote:
        raise RequestError("remote image URLs are disabled on this server (start it with --allow-remote-images); "
                           "send the image as a data: URL", param=param)
    import httpx

    chunks, size = [], 0
    try:
        with httpx.stream("GET", url, timeout=policy.remote_timeout_s, follow_redirects=False) as response:
            if response.status_code != 200:
                raise RequestError(f"fetching the image URL answered HTTP {response.status_code}", param=param)
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > policy.max_image_bytes:
                    raise RequestError(f"image is larger than the limit of {policy.max_image_bytes:,} bytes",
                                       status=413, param=param)
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise RequestError(f"cannot fetch the image URL: {type(exc).__name__}", param=param) from None
    data = b"".join(chunks)
    return ImageBytes(data, is_dicom_bytes(data))


def decode_image(image: ImageBytes, policy: MediaPolicy, dicom: Mapping[str, Any] | str | None = None,
                 param: str = "image_url") -> Image.Image:
    """An RGB image from uploaded bytes; DICOM through :mod:`medvlm.data.dicom` with ``dicom`` settings."""
    if image.dicom:
        return _decode_dicom(image.data, dicom, param)
    if dicom:
        raise RequestError("DICOM settings were given for an image that is not DICOM", param=param)
    try:
        return open_rgb(io.BytesIO(image.data), max_pixels=policy.max_image_pixels)
    except DataError as exc:  # over the pixel limit
        raise RequestError(exc.detail, param=param) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(f"cannot decode the image: {exc}", param=param) from None


def _decode_dicom(data: bytes, settings: Mapping[str, Any] | str | None, param: str) -> Image.Image:
    from medvlm.data.dicom import load_dicom_image

    # pydicom reads from a path; the upload lives in a private temporary file only while it decodes
    handle, name = tempfile.mkstemp(suffix=".dcm", prefix="medvlm-upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        return load_dicom_image(name, settings)  # type: ignore[arg-type]
    except DataError as exc:
        raise RequestError(str(exc).replace(name, "the uploaded DICOM file"), param=param) from None
    finally:
        os.unlink(name)


def png_data_url(image: Image.Image, max_side: int = 768) -> str:
    """The image as a PNG data URL, scaled down to ``max_side`` (the web page's preview)."""
    image = image.copy()
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
