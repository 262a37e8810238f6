"""The one device and precision rule: ``"auto"`` is the first CUDA device when there is one, then Apple's MPS,
else the CPU; a precision (``fp32`` | ``bf16`` | ``fp16``) is ``torch.autocast`` around model forwards.

Every entry point that takes a device (explain, studies, the demo, the web app, training, foreground masks)
resolves it here, so that an unknown name or a request for a device this machine lacks is one clear
:class:`~vitlens.errors.InputError` instead of an error deep inside torch.

Random draws do not depend on the device: seeded methods (RISE masks, SmoothGrad noise, cascading
randomisation, random-init weights) draw on the CPU from their own ``torch.Generator`` or a forked CPU RNG
and move the result, so a map computed on a GPU uses the same masks and noise as on the CPU.
"""

from __future__ import annotations

import contextlib

import torch

from .errors import InputError

DEVICE_HELP = "auto | cpu | cuda[:N] | mps"
#: model-forward precisions: ``fp32`` (no autocast), ``bf16`` / ``fp16`` (``torch.autocast`` around the forward)
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str):
    """The context a forward in ``precision`` runs in on ``device`` (nothing for fp32)."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) | ``"cpu"`` | ``"cuda[:N]"`` | ``"mps"`` | a ``torch.device`` -> a device present here."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError, TypeError) as e:
            raise InputError(f"device {device!r} is not valid; use {DEVICE_HELP}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not mps_available():
            raise InputError(f"device {str(device)!r} requested but MPS (Apple GPU) is not available; use --device cpu")
    elif dev.type != "cpu":
        raise InputError(f"device {str(device)!r} is not supported; use {DEVICE_HELP}")
    return dev


def peak_memory(device: torch.device) -> int | None:
    """Peak memory allocated on ``device`` since the last :func:`reset_peak_memory` (bytes; CUDA only, else None)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA (or MPS) out-of-memory error."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
