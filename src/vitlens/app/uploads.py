"""Uploaded image files: size limits checked before any pixel is decoded, then the vitlens image loaders.

Order of checks, cheapest first, so that no untrusted file is decoded before it is known to be small:

1. the request body (``Content-Length``, then the bytes actually received) is capped by the ASGI middleware
   in :mod:`vitlens.app.api` at :data:`MAX_UPLOAD_BYTES` plus a little room for the form fields;
2. the file itself: at most :data:`MAX_UPLOAD_BYTES` (20 MB);
3. the image header: ``Image.open`` only parses the header, so ``width x height`` is known before decoding;
   more than :data:`MAX_PIXELS` (40 megapixels) is refused. This is what stops decompression bombs: a PNG of
   zeros of 100 megapixels is ~100 kB on disk but ~300 MB once decoded. PIL's own bomb guard (an error past
   twice ``Image.MAX_IMAGE_PIXELS``) is caught and reported the same way;
4. decoding (at most :data:`MAX_CONCURRENT_DECODES` at a time, which bounds the memory of parallel uploads),
   EXIF orientation, then :func:`vitlens.data.images.to_rgb` (grayscale, RGBA, palette; 16-bit with the
   0.5-99.5 percentile window), exactly as ``vitlens explain`` reads files.

Only PNG, JPEG, TIFF, BMP and WebP are opened (``Image.open(formats=...)``): no other PIL decoder sees
untrusted bytes. Every failure is an :class:`UploadError` with an HTTP status and a one-line message for the
page; no stack trace reaches the user.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ..data.images import MAX_PIXELS, to_rgb
from ..errors import InputError

MAX_UPLOAD_BYTES = 20_000_000  # 20 MB
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
MAX_CONCURRENT_DECODES = 2

_DECODES = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)


class UploadError(InputError):
    """An upload the app refuses; ``status`` is the HTTP status to answer with (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB
    name: str
    sha256: str
    size: tuple[int, int]  # (W, H) of the file
    mode: str  # PIL mode of the file before conversion, e.g. "I;16", "L", "RGB"
    format: str


def mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def check_size(n_bytes: int, name: str = "the file") -> None:
    if n_bytes > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name} is {mb(n_bytes)}; the limit is {mb(MAX_UPLOAD_BYTES)}", status=413)
    if n_bytes == 0:
        raise UploadError(f"{name} is empty")


def decode_image(data: bytes, name: str = "upload") -> DecodedImage:
    """Bytes of an image file -> RGB image, refusing oversized, unsupported and corrupt files (see module doc)."""
    check_size(len(data), name)
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as im:  # parses the header only
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise UploadError(
                    f"{name} is {w}x{h} pixels ({w * h / 1e6:.1f} megapixels); the limit is "
                    f"{MAX_PIXELS / 1e6:.0f} megapixels",
                    status=413,
                )
            fmt, mode = im.format or "?", im.mode
            with _DECODES:
                im.load()
                rgb = to_rgb(ImageOps.exif_transpose(im))
    except UploadError:
        raise
    except Image.DecompressionBombError as e:
        raise UploadError(f"{name} declares too many pixels (a decompression bomb?): {e}", status=413) from e
    except UnidentifiedImageError as e:
        raise UploadError(
            f"{name} is not a PNG, JPEG, TIFF, BMP or WebP image (or is damaged beyond reading)", status=415
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UploadError(f"{name} is corrupt or truncated and cannot be decoded ({first})") from e
    return DecodedImage(rgb, name, hashlib.sha256(data).hexdigest(), (w, h), mode, fmt)
