"""How much memory a model's forward needs per image, for chunking batched forwards by a memory budget.

:func:`activation_bytes` runs one forward of one image and sums the bytes of every module's output (forward
hooks on all submodules, in ``inference_mode``). That sum counts each intermediate tensor once, as if
nothing were freed, so it is an upper bound of the live memory of an inference forward (which frees
activations as it goes) and does not depend on the device: the same chunk size on the CPU and on a GPU. The
perturbation metrics divide their memory budget by it (:func:`chunk_for_budget`); an out-of-memory error
still halves the chunk (``vitlens.metrics.faithfulness.run_chunked``).
"""

from __future__ import annotations

import torch

from .base import Model

_CACHE: dict[tuple[int, tuple[int, ...], str], int] = {}


def _tensor_bytes(out) -> int:
    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, (tuple, list)):
        return sum(_tensor_bytes(o) for o in out)
    if isinstance(out, dict):
        return sum(_tensor_bytes(o) for o in out.values())
    return 0


def activation_bytes(model: Model, input_shape: tuple[int, int, int]) -> int:
    """Bytes of all module outputs of a forward of one ``[C, H, W]`` image (cached per model, shape, precision)."""
    key = (id(model.module), tuple(input_shape), model.precision)
    if key in _CACHE:
        return _CACHE[key]
    total = 0

    def hook(_m, _a, out):
        nonlocal total
        total += _tensor_bytes(out)

    handles = [m.register_forward_hook(hook) for m in model.module.modules()]
    try:
        x = torch.zeros((1, *input_shape), device=model.device)
        with torch.inference_mode(), model.evaluating():
            model.forward(x)
    finally:
        for h in handles:
            h.remove()
    _CACHE[key] = max(1, total + x.numel() * x.element_size())
    return _CACHE[key]


def chunk_for_budget(model: Model, input_shape: tuple[int, int, int], memory_mb: float) -> int:
    """How many images of ``input_shape`` one forward may take within ``memory_mb`` MiB (at least 1)."""
    return max(1, int(memory_mb * 2**20 // activation_bytes(model, input_shape)))
