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
untrusted bytes. **DICOM** (the ``DICM`` magic at byte 128, or a ``.dcm``/``.dicom`` name) goes through the
same functions as ``vitlens explain`` (:func:`vitlens.data.images.dicom_to_rgb`: rescale, VOI window or LUT,
MONOCHROME1 inversion, first frame), with the same order of checks: a deflated data set must inflate to at
most :data:`MAX_INFLATED_BYTES` (checked with a bounded inflate before pydicom inflates it), the header is
parsed (the pixel data stays encoded), *Rows* x *Columns* is checked against :data:`MAX_PIXELS` (413), a
transfer syntax without an installed decoder is refused (415), and only then is the first frame decoded.
Every failure is an :class:`UploadError` with an HTTP status and a one-line message for the page; no stack
trace reaches the user.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from ..data.images import (
    MAX_PIXELS,
    dicom_decoder_problem,
    dicom_frame_size,
    dicom_to_rgb,
    is_dicom_bytes,
    pil_pixel_limit,
    read_dicom_dataset,
    to_rgb_info,
)
from ..errors import InputError
from ..files import sha256_bytes

MAX_UPLOAD_BYTES = 20_000_000  # 20 MB
MAX_INFLATED_BYTES = 200_000_000  # a Deflated Explicit VR Little Endian data set, once inflated
_DEFLATED_TS = b"1.2.840.10008.1.2.1.99"
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
    mode: str  # PIL mode of the file before conversion, e.g. "I;16", "L", "RGB"; DICOM: "MONOCHROME2 12-bit"
    format: str
    info: dict[str, Any] | None = None  # how it was read (window, frames, ...): see vitlens.data.read_image_info


def mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def check_size(n_bytes: int, name: str = "the file") -> None:
    if n_bytes > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name} is {mb(n_bytes)}; the limit is {mb(MAX_UPLOAD_BYTES)}", status=413)
    if n_bytes == 0:
        raise UploadError(f"{name} is empty")


def _too_many(name: str, w: int, h: int, max_pixels: int) -> UploadError:
    return UploadError(
        f"{name} is {w}x{h} pixels ({w * h / 1e6:.1f} megapixels); the limit is {max_pixels / 1e6:g} megapixels "
        "(vitlens serve --max-pixels)",
        status=413,
    )


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Bytes of an image file -> RGB image, refusing oversized (more than ``max_pixels``), unsupported and
    corrupt files (see module doc)."""
    check_size(len(data), name)
    if is_dicom_bytes(data, name):
        return decode_dicom(data, name, max_pixels)
    try:
        with pil_pixel_limit(max_pixels), Image.open(io.BytesIO(data), formats=FORMATS) as im:  # the header only
            w, h = im.size
            if w * h > max_pixels:
                raise _too_many(name, w, h, max_pixels)
            fmt, mode = im.format or "?", im.mode
            with _DECODES:
                im.load()
                rgb, window = to_rgb_info(ImageOps.exif_transpose(im))
    except UploadError:
        raise
    except Image.DecompressionBombError as e:
        raise UploadError(f"{name} declares too many pixels (a decompression bomb?): {e}", status=413) from e
    except UnidentifiedImageError as e:
        raise UploadError(
            f"{name} is not a PNG, JPEG, TIFF, BMP, WebP or DICOM image (or is damaged beyond reading)", status=415
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UploadError(f"{name} is corrupt or truncated and cannot be decoded ({first})") from e
    info = {"format": fmt, "mode": mode, "window": window, "size": [w, h]}
    return DecodedImage(rgb, name, sha256_bytes(data), (w, h), mode, fmt, info)


def _check_deflated(data: bytes, name: str) -> None:
    """A Deflated Explicit VR Little Endian upload must inflate to at most :data:`MAX_INFLATED_BYTES` (pydicom
    inflates the whole data set in memory, without a limit); the file meta group gives where the stream starts."""
    if data[128:132] != b"DICM" or _DEFLATED_TS not in data[132:4096]:
        return
    if data[132:138] != b"\x02\x00\x00\x00UL":  # (0002,0000) File Meta Information Group Length, explicit VR
        raise UploadError(f"{name} is a deflated DICOM file without a file meta group length", status=415)
    start = 144 + struct.unpack("<I", data[140:144])[0]
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflater.decompress(data[start:], MAX_INFLATED_BYTES)
    except zlib.error as e:
        raise UploadError(f"{name} is a corrupt deflated DICOM file ({e})") from e
    if inflater.unconsumed_tail:
        raise UploadError(
            f"{name} inflates to more than {mb(MAX_INFLATED_BYTES)}; the limit is {mb(MAX_INFLATED_BYTES)}", status=413
        )


def decode_dicom(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Bytes of a DICOM file -> RGB image, read as ``vitlens explain`` reads it (see the module docstring)."""
    check_size(len(data), name)
    _check_deflated(data, name)
    with _DECODES:
        try:
            ds = read_dicom_dataset(io.BytesIO(data), name)  # parses the header; the pixel data stays encoded
            w, h = dicom_frame_size(ds, name)
        except InputError as e:
            raise UploadError(f"{e} (corrupt, truncated or not an image)") from e
        if w * h > max_pixels:
            raise _too_many(name, w, h, max_pixels)
        problem = dicom_decoder_problem(ds)
        if problem:
            raise UploadError(f"{name}: {problem}", status=415)
        try:
            rgb, info = dicom_to_rgb(ds, name, max_pixels=max_pixels)
        except InputError as e:
            raise UploadError(str(e)) from e
    mode = f"{info['photometric']} {info['bits']}-bit"
    return DecodedImage(rgb, name, sha256_bytes(data), (w, h), mode, "DICOM", info)
