"""Explanation metrics, registered by name (``vitlens.list_metrics()``); importing this package registers them.

metric = vitlens.get_metric("deletion", steps=196, baseline="blur")
res = metric(model, images, maps, target=None, masks=None, boxes=None)
res.scores   # float64 [B]; res.curves [B, S] and res.x [S] for curve metrics; res.extra {name: [B]}
"""

from . import faithfulness, localisation, sanity  # noqa: F401  (registration side effects)
from .base import Metric, MetricInputs, MetricResult, MetricWarning
from .localisation import otsu_threshold
from .registry import get_metric, list_metrics, metric_class, metric_info
from .sanity import rankdata, spearman

__all__ = [
    "Metric",
    "MetricInputs",
    "MetricResult",
    "MetricWarning",
    "get_metric",
    "list_metrics",
    "metric_class",
    "metric_info",
    "otsu_threshold",
    "rankdata",
    "spearman",
]
