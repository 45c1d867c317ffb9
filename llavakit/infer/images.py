"""Turning what a caller names as an image into a PIL image, under the operator's rules.

Accepted: PIL images, `data:image/...;base64,` URLs, raw base64, local paths / `file://` URLs
(only when local files are allowed) and http(s) URLs (only when remote fetching is allowed).
A server never reads a path or fetches a URL a client names unless its operator said so.
"""

from __future__ import annotations

import base64
import binascii
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from llavakit.image import ImageLoadError, load_image
from llavakit.infer.defaults import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS


class ImageSourceError(ValueError):
    """An image reference that is refused or cannot be read; safe to show to the client."""


@dataclass(frozen=True)
class ImagePolicy:
    """What image references are allowed, and how large an image may be."""

    allow_local_files: bool = True
    allow_remote_urls: bool = False
    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    timeout_s: float = 10.0


def resolve_image(source, policy: ImagePolicy = ImagePolicy()) -> Image.Image:
    """An RGB image from any accepted reference, or ImageSourceError saying why not."""
    if isinstance(source, Image.Image):
        return load_image(source, max_pixels=policy.max_pixels)
    if not isinstance(source, (str, Path)):
        raise ImageSourceError(f"unsupported image reference of type {type(source).__name__}")
    text = str(source)
    try:
        if text.startswith("data:"):
            return _from_bytes(_data_url_bytes(text), policy)
        if text.startswith(("http://", "https://")):
            if not policy.allow_remote_urls:
                raise ImageSourceError("remote image URLs are disabled on this server")
            return _from_bytes(_fetch(text, policy), policy)
        if text.startswith("file://") or isinstance(source, Path) or _looks_like_path(text):
            if not policy.allow_local_files:
                raise ImageSourceError("local image files are disabled on this server")
            path = Path(text.removeprefix("file://"))
            return load_image(path, max_pixels=policy.max_pixels)
        return _from_bytes(base64.b64decode(text, validate=True), policy)
    except ImageLoadError as error:
        raise ImageSourceError(str(error)) from None
    except (binascii.Error, ValueError) as error:
        if isinstance(error, ImageSourceError):
            raise
        raise ImageSourceError(
            f"image is neither a URL, a path nor valid base64: {error}"
        ) from None


def _looks_like_path(text: str) -> bool:
    return (
        "/" in text
        or "\\" in text
        or Path(text).suffix.lower()
        in {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    )


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        raise ImageSourceError("data URLs must look like data:image/<type>;base64,<payload>")
    return base64.b64decode(payload, validate=True)


def _fetch(url: str, policy: ImagePolicy) -> bytes:
    with urllib.request.urlopen(url, timeout=policy.timeout_s) as response:  # noqa: S310
        data = response.read(policy.max_bytes + 1)
    return data


def _from_bytes(data: bytes, policy: ImagePolicy) -> Image.Image:
    if len(data) > policy.max_bytes:
        raise ImageSourceError(f"image is larger than the {policy.max_bytes}-byte limit")
    return load_image(data, max_pixels=policy.max_pixels)
