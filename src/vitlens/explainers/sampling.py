"""Sampling explainers that need only the model's outputs (black-box), at pixel resolution.

``rise`` (Petsiuk, Das, Saenko 2018, BMVC, "RISE: Randomized Input Sampling for Explanation of Black-box
Models"): ``S_c = 1/(K·p) Σ_i P_c(x ⊙ M_i) · M_i`` over K random masks ``M_i``, each a binary ``s × s``
grid (cells on with probability p) bilinearly upsampled to ``(s+1)·C`` with ``C = ⌈H/s⌉`` and cropped to
``H × W`` at a random shift in ``[0, C)`` — Sec. 3.2 of the paper and the authors' ``generate_masks``.
``P_c`` is the softmax probability of the target class, as in the paper.

Implementation: the binary grids and shifts of all K masks are drawn up front from a ``torch.Generator``
seeded with ``seed`` (K·s² + 2K numbers, on the CPU, so the masks are the same on every device and for every
batch size, and the global RNG is not touched). The (mask, image) pairs are then processed in chunks of
``batch_size`` inputs: only the masks of the current chunk are upsampled, so memory is
O(batch_size · C·H·W) whatever K is, and the whole explanation costs ``⌈K·B / batch_size⌉`` forwards of
``batch_size`` images plus one forward for the logits.

Deviations from the authors' code: the upsampling is ``torch.nn.functional.interpolate`` (bilinear,
half-pixel centres, edge values clamped) where the authors call ``skimage.transform.resize(order=1,
mode="reflect")``, which mirrors at the border; the two agree except within half a grid cell of the
up-sized mask's edge. The masks multiply the *normalised* input (0 = the data set's mean colour), as in the
authors' code (their tensors are normalised before masking).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ExplainerError
from .base import Explainer, Explanation, check_int, check_range
from .gradients import logits_and_target
from .registry import register


def rise_grids(n_masks: int, grid_size: int, p: float, hw: tuple[int, int], seed: int):
    """The random part of every RISE mask: binary grids ``[K, s, s]`` (float) and shifts ``[K, 2]`` (long),
    in ``[0, C_H) × [0, C_W)``, drawn from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    grids = (torch.rand((n_masks, grid_size, grid_size), generator=g) < p).float()
    ch, cw = math.ceil(hw[0] / grid_size), math.ceil(hw[1] / grid_size)
    shifts = torch.stack(
        [torch.randint(0, ch, (n_masks,), generator=g), torch.randint(0, cw, (n_masks,), generator=g)], dim=1
    )
    return grids, shifts


def upsample_masks(grids: torch.Tensor, shifts: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Masks ``[k, H, W]`` in [0, 1]: each ``s × s`` grid bilinearly upsampled to ``(s+1)·C`` and cropped
    to ``H × W`` at its shift."""
    k, s, _ = grids.shape
    h, w = hw
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    up = F.interpolate(grids[:, None].float(), size=((s + 1) * ch, (s + 1) * cw), mode="bilinear", align_corners=False)
    up = up[:, 0]
    rows = shifts[:, :1].to(up.device) + torch.arange(h, device=up.device)  # [k, H]
    cols = shifts[:, 1:].to(up.device) + torch.arange(w, device=up.device)  # [k, W]
    idx = torch.arange(k, device=up.device)[:, None, None]
    return up[idx, rows[:, :, None], cols[:, None, :]]


def rise_masks(
    n_masks: int, grid_size: int, p: float, hw: tuple[int, int], seed: int, device=None, start: int = 0, stop=None
) -> torch.Tensor:
    """Masks ``start:stop`` (default all) of the RISE mask set defined by the parameters, ``[k, H, W]``."""
    grids, shifts = rise_grids(n_masks, grid_size, p, hw, seed)
    stop = n_masks if stop is None else stop
    return upsample_masks(grids[start:stop].to(device), shifts[start:stop], hw)


@register
class RISE(Explainer):
    """RISE (Petsiuk et al. 2018): ``1/(K·p) Σ_i P_c(x ⊙ M_i) M_i`` over K random upsampled grid masks.

    Parameters (paper defaults for ResNet-50 on ImageNet): ``n_masks`` K = 4000, ``grid_size`` s = 7,
    ``p`` = 0.5 (probability that a grid cell is kept), ``batch_size`` = images per masked forward,
    ``seed`` for the masks. Maps are >= 0 (probabilities times masks).
    """

    name = "rise"
    citation = "Petsiuk, Das, Saenko 2018 (BMVC), 'RISE: Randomized Input Sampling for Explanation'"
    class_specific = True
    resolution = "pixel"

    def __init__(
        self, model, n_masks: int = 4000, grid_size: int = 7, p: float = 0.5, batch_size: int = 64, seed: int = 0
    ) -> None:
        super().__init__(model)
        self.n_masks = check_int("n_masks", n_masks, 1)
        self.grid_size = check_int("grid_size", grid_size, 1)
        self.p = check_range("p", p, 0.0, 1.0)
        if self.p == 0.0:
            raise ExplainerError("p=0.0 is out of range (0, 1]: every mask would hide the whole image")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)

    def masks(self, hw: tuple[int, int], device=None, start: int = 0, stop=None) -> torch.Tensor:
        """This explainer's masks ``start:stop`` for inputs of size ``hw``, ``[k, H, W]``."""
        return rise_masks(self.n_masks, self.grid_size, self.p, hw, self.seed, device, start, stop)

    def _explain(self, x, target):
        b, _c, h, w = x.shape
        if self.grid_size > min(h, w):
            raise ExplainerError(f"grid_size={self.grid_size} is larger than the {h}x{w} input")
        logits, t = logits_and_target(self, x, target)
        grids, shifts = rise_grids(self.n_masks, self.grid_size, self.p, (h, w), self.seed)
        grids = grids.to(x.device)
        sal = torch.zeros(b, h * w, device=x.device, dtype=torch.float32)
        total = self.n_masks * b  # (mask, image) pairs, mask-major: pair q = mask q // b, image q % b
        with self.model.evaluating(), torch.no_grad():
            for q0 in range(0, total, self.batch_size):
                q = torch.arange(q0, min(q0 + self.batch_size, total), device=x.device)
                k0, k1 = q0 // b, (int(q[-1]) // b) + 1
                m = upsample_masks(grids[k0:k1], shifts[k0:k1], (h, w))  # [k, H, W] float32
                mk, img = q // b - k0, q % b
                inp = x[img] * m[mk, None].to(x.dtype)
                prob = self.model.forward(inp).float().softmax(dim=-1).gather(1, t[img, None])  # [q, 1]
                weight = F.one_hot(img, b).float() * prob  # [q, B]: a matmul, deterministic (no atomics)
                sal += weight.T @ m[mk].reshape(len(q), h * w)
        sal = sal / (self.n_masks * self.p)
        return Explanation(sal.view(b, h, w), logits, t)
