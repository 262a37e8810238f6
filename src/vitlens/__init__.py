"""vitlens: explain Vision Transformer decisions and measure whether the explanations are faithful.

Usage::

    import vitlens
    model = vitlens.load_model("timm:deit_tiny_patch16_224", pretrained=False)
    explain = vitlens.get_explainer("rollout", model, head_fusion="max", discard_ratio=0.9)
    maps = explain(images)                        # float32 [B, h, w] on the patch grid
    heat = vitlens.upsample(maps, images.shape[-2:])
"""

from .errors import DataError, ExplainerError, InputError, MetricError, ModelError, VitlensError
from .explainers import (
    Explainer,
    Explanation,
    applicable_explainers,
    explainer_info,
    get_explainer,
    list_explainers,
)
from .maps import minmax, upsample
from .metrics import get_metric, list_metrics, metric_info
from .models import Model, Preprocessing, list_builtin, load_model
from .version import __version__

__all__ = [
    "DataError",
    "Explainer",
    "ExplainerError",
    "Explanation",
    "InputError",
    "MetricError",
    "Model",
    "ModelError",
    "Preprocessing",
    "VitlensError",
    "__version__",
    "applicable_explainers",
    "explainer_info",
    "get_explainer",
    "get_metric",
    "list_builtin",
    "list_explainers",
    "list_metrics",
    "load_model",
    "metric_info",
    "minmax",
    "upsample",
]
