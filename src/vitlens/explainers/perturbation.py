"""Perturbation explainers: occlusion (Zeiler & Fergus 2014), computed by Captum's ``Occlusion``.

Pixel maps with the conventions of :mod:`vitlens.explainers.gradients` (baselines in pixel terms converted
with the model's ``mean``/``std``, the target logit as the explained score); sampling methods that perturb
with random masks (RISE) are in :mod:`vitlens.explainers.sampling`.
"""

from __future__ import annotations

import math

import torch

from ..errors import ExplainerError
from .base import Explanation, check_int
from .gradients import PixelExplainer, baseline_tensor, captum_attr, check_baseline, logits_and_target
from .registry import register


def _pair(name: str, value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (check_int(name, value[0], 1), check_int(name, value[1], 1))
    v = check_int(name, value, 1)
    return (v, v)


@register
class Occlusion(PixelExplainer):
    """Occlusion (Zeiler & Fergus 2014): slide a ``window`` over the image with ``stride``, replace it by
    ``baseline`` and record the drop of the target logit ``y_c(x) − y_c(x_occluded)``; each pixel gets the
    mean drop over the windows that cover it. Signed.

    Captum's ``Occlusion`` builds the occluded copies (windows at the border are clipped so every pixel is
    covered), evaluates ``perturbations_per_eval = batch_size // B`` of them per forward and averages.
    Defaults: ``window`` = one patch (input size / the model's patch grid: 16 px for a /16 ViT, 32 px for
    ResNet-50 and Swin), ``stride`` = ``window`` (each patch occluded once; Zeiler & Fergus slide with overlap,
    pass e.g. ``stride=8`` for that), ``baseline="zero"`` (the data set's mean colour, the paper's grey
    square). Deviation: the paper plots the drop of the class *probability*; vitlens uses the logit.
    Cost: one forward per window position per image.
    """

    name = "occlusion"
    citation = "Zeiler & Fergus 2014 (ECCV), 'Visualizing and Understanding Convolutional Networks'"
    signed = True

    def __init__(
        self,
        model,
        window: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        baseline: str | float = "zero",
        batch_size: int = 64,
    ) -> None:
        super().__init__(model)
        self.window = _pair("window", window)
        self.stride = _pair("stride", stride)
        self.baseline = check_baseline("baseline", baseline)
        self.batch_size = check_int("batch_size", batch_size, 1)
        if self.window is not None and self.stride is not None:
            if self.stride[0] > self.window[0] or self.stride[1] > self.window[1]:
                raise ExplainerError(f"stride={stride!r} must not exceed window={window!r} (pixels would be skipped)")

    def geometry(self, hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """(window, stride) in pixels for an input of size ``hw``."""
        if self.window is None:
            gh, gw = self.model.grid_size(tuple(hw))
            window = (math.ceil(hw[0] / gh), math.ceil(hw[1] / gw))
        else:
            window = self.window
        if window[0] > hw[0] or window[1] > hw[1]:
            raise ExplainerError(f"occlusion window {window} is larger than the {hw[0]}x{hw[1]} input")
        stride = self.stride if self.stride is not None else window
        if stride[0] > window[0] or stride[1] > window[1]:
            raise ExplainerError(f"occlusion stride {stride} must not exceed the window {window}")
        return window, stride

    def _explain(self, x, target):
        attr = captum_attr(self.name)
        window, stride = self.geometry(tuple(x.shape[-2:]))
        logits, t = logits_and_target(self, x, target)
        with self.model.evaluating(), torch.no_grad():
            a = attr.Occlusion(self.model.forward).attribute(
                x.detach(),
                sliding_window_shapes=(x.shape[1], *window),
                strides=(x.shape[1], *stride),
                baselines=baseline_tensor(self.model, self.baseline, x),
                target=t,
                perturbations_per_eval=max(1, self.batch_size // x.shape[0]),
            )
        return Explanation(a.mean(dim=1), logits, t)
