"""The explainer contract (see DESIGN.md) and the machinery every explainer shares.

``explainer(images, target=None) -> maps``: ``images`` is a float ``[B, C, H, W]`` batch already normalised
for the model; ``target`` is None (predicted class), an int, or a LongTensor[B]; ``maps`` is float32
``[B, h, w]`` on the patch grid (pixel grid for gradient/perturbation methods), finite, and >= 0 unless the
method is signed. Class-specific gradients are taken of the target logit ``y_c`` (pre-softmax), as in
Chefer et al. and vit-explain. Maps are returned unnormalised.

Precision: under a model precision of ``bf16``/``fp16`` (:meth:`vitlens.models.Model.to`), the model forwards
run in ``torch.autocast`` and every recorded attention map, feature and gradient is promoted to float32
before an explainer computes with it. Methods that propagate relevance through every tensor of every block
(``exact_precision``: Chefer 2021, generic attention, AttnLRP, AG-CAM, LeGrad — products of many Jacobian-like
factors, ill-conditioned in 8-bit mantissas) run their forward in float32 whatever the setting.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import ExplainerError
from ..models import Model, load_model
from ..registry import ParamRanges, check_number
from ..registry import check_choice as _check_choice

Target = int | torch.Tensor | Sequence[int] | None


@dataclass
class Explanation:
    """Maps with the logits and targets of the same forward pass (saves the caller a second forward)."""

    maps: torch.Tensor  # float32 [B, h, w]
    logits: torch.Tensor  # [B, num_classes], detached
    target: torch.Tensor  # LongTensor [B]: the class each map explains


class Explainer:
    """Base class. Subclasses set the class attributes and implement :meth:`_explain`."""

    name: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    class_specific: ClassVar[bool] = False
    signed: ClassVar[bool] = False
    needs_attention: ClassVar[bool] = False
    needs_trace: ClassVar[bool] = False  # reads every tensor inside the blocks (Model.trace_blocks)
    #: forwards in float32 whatever the model's precision (default: the relevance-propagation methods)
    exact_precision: ClassVar[bool | None] = None
    resolution: ClassVar[str] = "patch"  # "patch" (token/feature grid) or "pixel"
    #: numeric bounds of parameters, read by :meth:`check_param` and shown by the web app's form fields
    param_ranges: ClassVar[ParamRanges] = {}

    def __init__(self, model: Model | Any) -> None:
        self.model = model if isinstance(model, Model) else load_model(model)
        if self.needs_attention:
            self.model.require_attention(f"explainer {self.name!r}")
        if self.needs_trace:
            self.model.require_trace(f"explainer {self.name!r}")
        if self.class_specific and self.model.num_classes == 0:
            raise ExplainerError(
                f"explainer {self.name!r} is class-specific, but {self.model.name!r} has no classification head "
                "(num_classes=0, e.g. a DINO/MAE backbone); load it with num_classes=N and a fine-tuned checkpoint"
            )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})" if params else f"{type(self).__name__}()"

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p not in ("self", "model")]

    def params(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self.param_names()}

    def check_param(self, name: str, value: Any) -> float:
        """``value`` checked against the class's declared ``param_ranges[name]``, as a float."""
        lo, hi, hi_open = self.param_ranges[name]
        return check_range(name, value, lo, hi, hi_open=hi_open)

    def __call__(self, images: torch.Tensor, target: Target = None) -> torch.Tensor:
        return self.explain(images, target).maps

    def explain(self, images: torch.Tensor, target: Target = None) -> Explanation:
        x = self.model.check_images(images)
        if target is not None:  # fail before the (expensive) forward
            self.model.resolve_target(x.new_zeros(x.shape[0], 1), target)
        exact = self.needs_trace if self.exact_precision is None else self.exact_precision
        with self.model.full_precision() if exact else contextlib.nullcontext():
            out = self._explain(x, target)
        maps = out.maps.detach().float()
        if not torch.isfinite(maps).all():
            raise ExplainerError(f"explainer {self.name!r} produced non-finite values (model {self.model.name!r})")
        return Explanation(maps=maps, logits=out.logits.detach(), target=out.target)

    def _explain(self, x: torch.Tensor, target: Target) -> Explanation:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ helpers
    def _target_score(self, logits: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum over the batch of the target logits, targets). Images are independent in eval mode, so
        one backward of the sum gives each image's own gradient."""
        t = self.model.resolve_target(logits, target)
        return logits.gather(1, t[:, None]).sum(), t


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """An explainer parameter among ``choices`` (:func:`vitlens.registry.check_choice`, ExplainerError)."""
    _check_choice(name, value, choices, error=ExplainerError)


def check_range(name: str, value: Any, lo: float, hi: float, *, hi_open: bool = False) -> float:
    """An explainer parameter as a float in ``[lo, hi]`` (``[lo, hi)`` when ``hi_open``)."""
    return float(check_number(name, value, lo, hi, hi_open=hi_open, coerce=True, error=ExplainerError))


def check_int(name: str, value: Any, lo: int, hi: int | None = None, *, optional: bool = False) -> int | None:
    """An explainer parameter as an int in ``[lo, hi]`` (bools rejected), or None when ``optional``."""
    if value is None and optional:
        return None
    return check_number(name, value, lo, hi, integer=True, error=ExplainerError)
