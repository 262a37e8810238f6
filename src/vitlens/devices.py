"""The one device rule: ``"auto"`` is the first CUDA device when there is one, else the CPU.

Every entry point that takes a device (training, foreground masks, later studies and explanations) resolves
it here, so that an unknown name or a CUDA request on a machine without CUDA is one clear
:class:`~vitlens.errors.InputError` instead of an error deep inside torch.
"""

from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` | ``"cpu"`` | ``"cuda[:N]"`` | a ``torch.device`` -> a ``torch.device`` that exists here."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError, TypeError) as e:
            raise InputError(f"device {device!r} is not valid; use auto, cpu or cuda[:N]") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev
