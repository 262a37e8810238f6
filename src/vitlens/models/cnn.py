"""Adapter for convolutional baselines (timm or torchvision ResNet-50 and any CNN classifier).

Grad-CAM reads the output of a named module, by default the last convolutional stage: timm's
``feature_info[-1]`` module where it exists (``layer4`` for ResNets), else ``layer4``, else the last
``nn.Conv2d``. Attention methods do not apply and say so.
"""

from __future__ import annotations

from torch import nn

from ..errors import ExplainerError
from .base import Model, Preprocessing, module_by_name


def default_cam_layer(module: nn.Module) -> str:
    info = getattr(module, "feature_info", None)
    if info is not None:
        try:
            return info[-1]["module"]
        except (TypeError, KeyError, IndexError):
            pass
    names = dict(module.named_modules())
    if "layer4" in names:
        return "layer4"
    convs = [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ExplainerError("the model has no Conv2d layer; pass layer='<module name>' for Grad-CAM")
    return convs[-1]


def infer_num_classes(module: nn.Module) -> int:
    if hasattr(module, "num_classes") and isinstance(module.num_classes, int):
        return module.num_classes
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ExplainerError("cannot tell the number of classes: the model has no nn.Linear head")
    return linears[-1].out_features


class CNNModel(Model):
    family = "cnn"

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        preprocessing: Preprocessing,
        num_classes: int | None = None,
        class_names=None,
    ) -> None:
        super().__init__(
            module,
            name=name,
            num_classes=num_classes if num_classes is not None else infer_num_classes(module),
            preprocessing=preprocessing,
            class_names=class_names,
        )

    def grid_size(self, input_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        hw = input_hw or self.preprocessing.input_size
        info = getattr(self.module, "feature_info", None)
        red = 32
        if info is not None:
            try:
                red = int(info[-1]["reduction"])
            except (TypeError, KeyError, IndexError):
                pass
        return -(-int(hw[0]) // red), -(-int(hw[1]) // red)

    def lrp_sites(self, method: str = "attnlrp"):
        raise ExplainerError(
            f"{method} (Achtibat et al. 2024) defines LRP rules for transformer operations (attention, LayerNorm, "
            f"GELU); {self.name!r} is a CNN (BatchNorm, ReLU, pooling), for which it has no rules; use 'gradcam' "
            "or a gradient method"
        )

    def feature_site(self, layer, input_hw):
        name = default_cam_layer(self.module) if layer is None else layer
        if not isinstance(name, str):
            raise ExplainerError(f"for CNN {self.name!r}, layer must be a module name such as 'layer4', got {layer!r}")
        return module_by_name(self.module, name), "output", _check_bchw


def _check_bchw(t):
    if t.ndim != 4:
        raise ExplainerError(f"Grad-CAM layer output has shape {tuple(t.shape)}, expected [B, C, h, w]")
    return t
