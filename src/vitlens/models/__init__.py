"""Model adapters: the only place in vitlens that knows architectures (see DESIGN.md)."""

from .base import HEAD_FUSIONS, AttentionRecording, FeatureRecording, Model, Preprocessing
from .builtin import list_builtin
from .loading import load_model, load_state_dict, wrap_module

__all__ = [
    "HEAD_FUSIONS",
    "AttentionRecording",
    "FeatureRecording",
    "Model",
    "Preprocessing",
    "list_builtin",
    "load_model",
    "load_state_dict",
    "wrap_module",
]
