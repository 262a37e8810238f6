"""Reading images into RGB and preparing them for a model.

``load_image`` accepts what users have on disk and keeps what the pixels mean:

* **8-bit** PNG/JPEG/BMP/WebP/TIFF: grayscale and palette images become 3 equal channels (palette through its
  colours), alpha is composited onto black, the EXIF orientation is applied.
* **16-bit and 32-bit** grayscale (PIL modes ``I;16``, ``I``, ``F``: 16-bit PNG, 16/32-bit and float TIFF) is
  mapped to 8 bits with a **percentile window**: the 0.5th percentile -> 0, the 99.5th -> 255, linear in between,
  clipped (:data:`WINDOW_PERCENTILES`). A 12-bit scan stored in a 16-bit container is thus not rendered almost
  black, and a few hot pixels do not compress the rest of the range. A constant image maps to 0.
* **DICOM** (suffix ``.dcm``/``.dicom``, or the ``DICM`` magic at byte 128, with or without a suffix) through
  pydicom; see :func:`dicom_to_rgb` for the exact steps (rescale, VOI window/LUT, MONOCHROME1 inversion).
* A **multi-frame** file (multi-page TIFF, animated PNG/GIF, multi-frame DICOM) gives its first frame and an
  :class:`~vitlens.errors.InputWarning`.

Unreadable, corrupt, truncated or oversized (more than :data:`MAX_PIXELS`, checked from the header before any
pixel is decoded) files raise :class:`~vitlens.errors.InputError` naming the file. :func:`read_image_info`
returns the RGB image together with what was done to it (format, bit depth, photometric interpretation, the
window used, number of frames, inversion), for the CLI's summary and the web app.

``prepare`` applies the model's preprocessing (resize the shorter side to ``input_size / crop_pct``,
centre crop, normalise) and records the geometry so that maps can be drawn on the displayed crop, or back on
the original image with :mod:`vitlens.data.geometry`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError, InputWarning
from ..models import Preprocessing

WINDOW_PERCENTILES = (0.5, 99.5)
MAX_PIXELS = 40_000_000
DICOM_SUFFIXES = (".dcm", ".dicom")

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_MODE_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


# ------------------------------------------------------------------------------------------ windows
def percentile_window(a: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> tuple[float, float]:
    """The (low, high) values of the percentile window of ``a`` (numpy's linear-interpolation percentiles)."""
    lo, hi = np.percentile(np.asarray(a, dtype=np.float64), percentiles)
    return float(lo), float(hi)


def linear_to_uint8(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo`` -> 0, ``hi`` -> 255, linear in between, clipped, rounded half up; ``hi <= lo`` gives zeros."""
    if not hi > lo:
        return np.zeros(np.shape(a), np.uint8)
    a = np.asarray(a, dtype=np.float64)
    return (np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def window_to_uint8(a: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> np.ndarray:
    """Map a high-bit-depth array to uint8 with a percentile window (constant images map to 0)."""
    return linear_to_uint8(a, *percentile_window(a, percentiles))


def _percentile_info(lo: float, hi: float) -> dict[str, Any]:
    return {"kind": "percentile", "percentiles": list(WINDOW_PERCENTILES), "low": lo, "high": hi}


# ------------------------------------------------------------------------------------------ PIL formats
def to_rgb_info(img: Image.Image) -> tuple[Image.Image, dict[str, Any] | None]:
    """:func:`to_rgb` and the window it used (``None`` unless the image is 16/32-bit or float)."""
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in _DEEP_MODES:
        a = np.asarray(img)
        lo, hi = percentile_window(a)
        return Image.fromarray(linear_to_uint8(a, lo, hi)).convert("RGB"), _percentile_info(lo, hi)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img, None
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB"), None
    return img.convert("RGB"), None  # L, 1, CMYK, YCbCr, LAB, HSV


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB preserving what the pixels mean (see module docstring)."""
    return to_rgb_info(img)[0]


def _warn_frames(name: str, frames: int) -> None:
    if frames > 1:
        warnings.warn(f"{name} has {frames} frames (pages); only the first is used", InputWarning, stacklevel=4)


def _limit_text(max_pixels: int) -> str:
    return f"the {max_pixels / 1e6:g} MP limit (raise it with --max-pixels / max_pixels=)"


@contextlib.contextmanager
def pil_pixel_limit(max_pixels: int):
    """PIL refuses images over twice ``Image.MAX_IMAGE_PIXELS`` as decompression bombs: raise its limit while a
    file under vitlens' own (larger) ``max_pixels`` is read."""
    saved = Image.MAX_IMAGE_PIXELS
    if saved is not None and max_pixels > saved:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _read_pil(p: Path, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, dict[str, Any]]:
    try:
        with pil_pixel_limit(max_pixels), Image.open(p) as im:
            if im.width * im.height > max_pixels:
                raise InputError(f"image {p}: {im.width}x{im.height} exceeds {_limit_text(max_pixels)}")
            fmt, mode = im.format or "?", im.mode
            frames = int(getattr(im, "n_frames", 1) or 1)
            _warn_frames(f"image {p}", frames)
            if frames > 1:
                im.seek(0)
            im.load()
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            rgb, window = to_rgb_info(ImageOps.exif_transpose(im))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise InputError(f"image {p}: cannot be read as an image ({type(e).__name__}: {e})") from e
    info = {
        "format": fmt,
        "mode": mode,
        "bits": _MODE_BITS.get(mode, 8),
        "photometric": None,
        "window": window,
        "frames": frames,
        "inverted": False,
        "orientation": orientation,
        "size": list(rgb.size),
    }
    return rgb, info


# ------------------------------------------------------------------------------------------ DICOM
def is_dicom(path: str | Path) -> bool:
    """A DICOM file by suffix (``.dcm``, ``.dicom``) or by the ``DICM`` magic at byte 128."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return is_dicom_bytes(head)


def is_dicom_bytes(data: bytes, name: str = "") -> bool:
    """Bytes of a DICOM file (the ``DICM`` magic at byte 128), or a name with a DICOM suffix."""
    return data[128:132] == b"DICM" or Path(name).suffix.lower() in DICOM_SUFFIXES


def read_dicom_dataset(src: str | Path | BinaryIO, name: str):
    """Parse a DICOM file (header and the still-encoded pixel data; nothing is decoded) -> ``pydicom.Dataset``.

    ``force=True`` also reads files without the 128-byte preamble (raw data sets named ``*.dcm``).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(src, force=True)
    except Exception as e:  # pydicom raises many types on damaged input (EOFError, struct.error, KeyError, ...)
        raise InputError(f"{name}: cannot be read as DICOM ({type(e).__name__}: {_first_line(e)})") from e
    if getattr(ds, "preamble", None) is None and not any(k in ds for k in ("SOPClassUID", "Rows", "PixelData")):
        raise InputError(f"{name}: is not a DICOM file (no DICM marker at byte 128 and no DICOM image elements)")
    return ds


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def dicom_frame_size(ds, name: str) -> tuple[int, int]:
    """(W, H) of a frame from *Rows*/*Columns*; :class:`InputError` if the data set holds no image."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(
            f"{name}: the DICOM file has no pixel data (truncated, or not an image: a report, a structured document?)"
        )
    try:
        h, w = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as e:
        raise InputError(f"{name}: the DICOM header has no valid Rows/Columns ({_first_line(e)})") from e
    if h <= 0 or w <= 0:
        raise InputError(f"{name}: the DICOM header declares a {w}x{h} image")
    return w, h


def _transfer_syntax(ds):
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is not False:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian


def dicom_decoder_problem(ds) -> str | None:
    """Why pydicom cannot decode this data set's transfer syntax here (a missing plugin), or ``None``."""
    from pydicom.pixels import get_decoder

    ts = _transfer_syntax(ds)
    try:
        decoder = get_decoder(ts)
    except (NotImplementedError, ValueError) as e:
        return f"pixel data in transfer syntax {ts.name} ({ts}) cannot be decoded by pydicom ({_first_line(e)})"
    if decoder.is_available:
        return None
    needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
    return f"pixel data compressed as {ts.name} ({ts}) needs a decoder that is not installed: {needs}"


def _first(value: Any) -> Any:
    """The first value of a DICOM multi-valued element (several windows: the first is the default view)."""
    if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
        return value
    return value[0]


def _voi_source(ds) -> str | None:
    """Which VOI transform :func:`pydicom.pixels.apply_voi_lut` will apply (``prefer_lut=True``)."""
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return None


def _apply_voi(values: np.ndarray, ds, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """VOI LUT or window of the modality values -> uint8, and what was used (see :func:`dicom_to_rgb`)."""
    from pydicom.pixels import apply_voi_lut

    source = _voi_source(ds)
    if source == "lut":
        item = ds.VOILUTSequence[0]
        n, first, bits = (int(v) for v in item.LUTDescriptor)
        if not np.issubdtype(values.dtype, np.integer):  # rescaled values index the LUT: nearest integer
            values = np.rint(values).astype(np.int64)
        out = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        lo, hi = 0.0, float(2**bits - 1)  # PS3.3 C.11.2.1.1: LUT entries have `bits` bits
        info = {
            "kind": "voi-lut",
            "entries": n or 65536,
            "first_mapped": first,
            "bits": bits,
            "explanation": str(item.get("LUTExplanation", "")) or None,
        }
        return linear_to_uint8(out, lo, hi), info
    if source == "window":
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                out = apply_voi_lut(values, ds, index=0, prefer_lut=True)
                # the output range pydicom scales to ([y_min, y_max] of the stored or rescaled values): probe it
                lo, hi = (float(v) for v in apply_voi_lut(np.array([-1e300, 1e300]), ds, index=0, prefer_lut=True))
        except ValueError as e:  # width < 1 for LINEAR, width <= 0, unknown function: fall back, loudly
            warnings.warn(
                f"{name}: the DICOM window cannot be applied ({_first_line(e)}); using the percentile window instead",
                InputWarning,
                stacklevel=4,
            )
        else:
            expl = ds.get("WindowCenterWidthExplanation")
            info = {
                "kind": "dicom-window",
                "center": float(_first(ds.WindowCenter)),
                "width": float(_first(ds.WindowWidth)),
                "function": function,
                "explanation": str(_first(expl)) if expl else None,
            }
            return linear_to_uint8(out, lo, hi), info
    lo, hi = percentile_window(values)
    return linear_to_uint8(values, lo, hi), _percentile_info(lo, hi)


def dicom_to_rgb(ds, name: str, *, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, dict[str, Any]]:
    """The first frame of a parsed DICOM data set as an 8-bit RGB image, as a reading workstation shows it.

    What pydicom (>= 3) does for us, and what we add, in order (DICOM PS3.3 C.11 "grayscale pipeline"):

    1. checks, before decoding: *Rows* x *Columns* at most ``max_pixels``; pixel data present; a decoder for
       the transfer syntax is installed (pydicom decodes native and RLE itself, JPEG / JPEG 2000 through Pillow;
       JPEG-LS and others need pylibjpeg, pyjpegls or GDCM: the error names what to install);
    2. ``Decoder.as_array(index=0, raw=True)`` decodes only the **first frame** (a multi-frame file gives an
       :class:`InputWarning`), handles signedness (*Pixel Representation*), *Bits Stored* and 4:2:2 sub-sampling;
    3. colour: ``YBR_FULL``/``YBR_FULL_422`` -> RGB with ``pydicom.pixels.convert_color_space``; ``PALETTE
       COLOR`` through ``apply_color_lut``; RGB with more than 8 bits is scaled by *Bits Stored*. No VOI for
       colour images (the standard defines it for grayscale only);
    4. grayscale: ``apply_modality_lut`` (*Modality LUT Sequence* or *Rescale Slope/Intercept*, C.11.1, e.g.
       Hounsfield units), then ``apply_voi_lut`` (C.11.2): the *VOI LUT Sequence* if present (its output of
       ``2**bits`` levels -> 0..255), otherwise *Window Center/Width* with the *VOI LUT Function* (LINEAR,
       LINEAR_EXACT, SIGMOID; C.11.2.1.2-3); with several windows the first (the default view). pydicom
       scales the window to the value range of the stored (or rescaled) pixels; that range is mapped to
       0..255, which is the standard's formula with y_min = 0, y_max = 255. Without any VOI information the
       percentile window of the module docstring is applied to the modality values;
    5. ``MONOCHROME1`` (minimum = white) is inverted **after** the VOI transform, so that high = bright as on
       a reading workstation. *Presentation LUT Shape* is not read (the DX/MG IODs tie it to the photometric
       interpretation).

    Returns the image (gray repeated in 3 channels) and an info dict (format, photometric, bits, signed,
    rescale, window used, frames, inverted, size, transfer syntax). Errors: :class:`InputError` naming ``name``.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space, get_decoder

    w, h = dicom_frame_size(ds, name)
    if w * h > max_pixels:
        raise InputError(f"{name}: {w}x{h} exceeds {_limit_text(max_pixels)}")
    problem = dicom_decoder_problem(ds)
    if problem:
        raise InputError(f"{name}: {problem}")
    ts = _transfer_syntax(ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _warn_frames(name, frames)
    try:
        if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
            from pydicom.dataset import FileMetaDataset

            ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ts
        arr, props = get_decoder(ts).as_array(ds, index=0, raw=True)
        photometric = str(props.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))).upper()
        bits_stored = int(ds.get("BitsStored", props.get("bits_stored", 8)) or 8)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        info: dict[str, Any] = {
            "format": "DICOM",
            "mode": photometric,
            "bits": bits_stored,
            "photometric": photometric,
            "signed": signed,
            "rescale": None,
            "window": None,
            "frames": frames,
            "inverted": False,
            "size": [w, h],
            "transfer_syntax": ts.name,
            "modality": str(ds.get("Modality", "")) or None,
        }
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            if arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if ds.get("ModalityLUTSequence"):
                info["rescale"] = {"kind": "modality-lut"}
            elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
                info["rescale"] = {"slope": float(ds.RescaleSlope), "intercept": float(ds.RescaleIntercept)}
            values = apply_modality_lut(arr, ds)
            gray, info["window"] = _apply_voi(values, ds, name)
            if photometric == "MONOCHROME1":
                gray = 255 - gray
                info["inverted"] = True
            rgb = np.repeat(gray[..., None], 3, axis=-1)
        elif photometric == "PALETTE COLOR":
            lut = apply_color_lut(arr, ds)
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
            rgb = linear_to_uint8(lut, 0.0, float(2**bits - 1)) if lut.dtype != np.uint8 else lut
        elif photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
            if arr.dtype != np.uint8:
                if photometric != "RGB":
                    raise InputError(f"{name}: {photometric} with {bits_stored} bits is not supported")
                arr = linear_to_uint8(arr, 0.0, float(2**bits_stored - 1))
            rgb = convert_color_space(arr, photometric, "RGB") if photometric != "RGB" else arr
        else:
            raise InputError(
                f"{name}: photometric interpretation {photometric or '(missing)'} is not supported "
                "(MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR are)"
            )
        if rgb.shape != (h, w, 3):
            raise InputError(f"{name}: decoded pixel data has shape {rgb.shape}, expected ({h}, {w}, 3)")
        return Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)), info
    except InputError:
        raise
    except Exception as e:  # damaged pixel data: pydicom raises ValueError, RuntimeError, KeyError, ...
        detail = f"{type(e).__name__}: {_first_line(e)}"
        raise InputError(f"{name}: the DICOM pixel data cannot be decoded ({detail})") from e


def _read_dicom(p: Path, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, dict[str, Any]]:
    return dicom_to_rgb(read_dicom_dataset(p, f"image {p}"), f"image {p}", max_pixels=max_pixels)


# ------------------------------------------------------------------------------------------ entry points
def read_image_info(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, dict[str, Any]]:
    """Read an image file as RGB and say how: ``(image, info)`` with info keys ``format``, ``mode`` (PIL mode,
    or the DICOM photometric interpretation), ``bits``, ``photometric``, ``window`` (``None`` or a dict: kind
    ``percentile`` with low/high, ``dicom-window`` with center/width/function, ``voi-lut``), ``frames``,
    ``inverted``, ``size`` (W, H) and format-specific extras (see the module docstring). Files of more than
    ``max_pixels`` pixels (default :data:`MAX_PIXELS`) are refused from their header, before decoding."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image {p}: no such file")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise InputError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
    if is_dicom(p):
        return _read_dicom(p, max_pixels)
    return _read_pil(p, max_pixels)


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as RGB (see module docstring)."""
    return read_image_info(path)[0]


@dataclass
class PreparedImage:
    tensor: torch.Tensor  # [C, H, W], normalised for the model
    display: np.ndarray  # uint8 [H, W, 3]: the crop the model sees, for overlays
    original_size: tuple[int, int]  # (W, H) of the file
    resized_size: tuple[int, int]  # (W, H) after the resize, before the crop
    crop_box: tuple[int, int, int, int]  # (left, top, right, bottom) in the resized image


def prepare(img: Image.Image, pre: Preprocessing) -> PreparedImage:
    """Resize the shorter side to ``input_size / crop_pct``, centre-crop ``input_size``, normalise."""
    th, tw = pre.input_size
    w, h = img.size
    if pre.crop_pct >= 1.0:
        rw, rh = tw, th  # plain resize to the input size, as for crop_pct = 1 in timm eval transforms
    else:
        short = round(min(th, tw) / pre.crop_pct)
        scale = short / min(w, h)
        rw, rh = max(tw, round(w * scale)), max(th, round(h * scale))
    resized = img.resize((rw, rh), _RESAMPLE.get(pre.interpolation, Image.Resampling.BILINEAR))
    left, top = (rw - tw) // 2, (rh - th) // 2
    crop = resized.crop((left, top, left + tw, top + th))
    display = np.asarray(crop, dtype=np.uint8).copy()
    arr = display.astype(np.float32) / 255.0
    if pre.in_chans == 1:
        arr = arr.mean(axis=-1, keepdims=True)
    t = torch.from_numpy(arr).permute(2, 0, 1)
    return PreparedImage(pre.normalise(t), display, (w, h), (rw, rh), (left, top, left + tw, top + th))


def to_unit_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images ``[..., H, W, C]`` -> float32 ``[..., C, H, W]`` in [0, 1] (then ``Preprocessing.normalise``)."""
    if images.dtype != np.uint8 or images.ndim < 3:
        raise InputError(f"expected uint8 images [..., H, W, C], got {images.dtype} of shape {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).float().div_(255.0)


def load_batch(paths: list[str | Path], pre: Preprocessing) -> tuple[torch.Tensor, list[PreparedImage]]:
    """Load and prepare several files as one ``[B, C, H, W]`` batch."""
    prepared = [prepare(load_image(p), pre) for p in paths]
    return torch.stack([p.tensor for p in prepared]), prepared
