"""Builtin checkpoints shipped inside the package (``load_model("builtin:<name>")``).

Each lives in ``vitlens/models/weights/<name>/`` as ``model.safetensors`` plus ``card.json`` (architecture,
classes, preprocessing, test accuracy, training config), the same layout ``vitlens train`` writes.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError

WEIGHTS_DIR = Path(__file__).parent / "weights"


def list_builtin() -> list[str]:
    """Names of the builtin models shipped with this installation."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "card.json").is_file())


def builtin_path(name: str) -> Path:
    names = list_builtin()
    if name not in names:
        avail = ", ".join(names) if names else "none are shipped in this version"
        raise ModelError(f"unknown builtin model {name!r}; available: {avail}")
    return WEIGHTS_DIR / name
