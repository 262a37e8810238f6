"""A learning-rate grid: one resumable run per rate, the best by validation accuracy copied to the output."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ..errors import VitlensError
from ..files import atomic_write, atomic_write_json
from ..models.loading import CARD_NAME, WEIGHTS_NAME, load_card_dir
from .config import TrainConfig
from .loop import train

GRID_NAME = "grid.json"


def lr_dir_name(lr: float) -> str:
    return f"lr-{lr:g}"


def train_grid(
    cfg: TrainConfig, lrs: list[float], out: str | Path, *, resume: bool = True, progress: bool = True, workers: int = 0
) -> dict[str, Any]:
    """One run per learning rate in ``OUT/lr-<rate>/`` (each resumable; finished ones are not recomputed),
    then the run with the best validation accuracy (on a tie the lower validation loss at its best epoch,
    then the first in ``lrs`` order) is copied to
    ``OUT`` (``card.json`` + ``model.safetensors``: ``vitlens.load_model(OUT)`` loads it) and every run's
    validation and test accuracy is written to ``OUT/grid.json``. Selection never looks at test accuracy.
    Returns the winner's card (with a ``grid`` entry)."""

    lrs = [float(v) for v in lrs]
    if not lrs or any(not (v > 0 and math.isfinite(v)) for v in lrs):
        raise VitlensError(f"learning-rate grid {lrs}: give one or more positive learning rates")
    if len({lr_dir_name(v) for v in lrs}) != len(lrs):
        raise VitlensError(f"learning-rate grid {lrs}: a rate is listed twice")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cards = []
    for i, lr in enumerate(lrs):
        if progress:
            print(f"learning rate {lr:g} ({i + 1}/{len(lrs)})", flush=True)
        cards.append(
            train(
                dataclasses.replace(cfg, lr=lr),
                out / lr_dir_name(lr),
                resume=resume,
                progress=progress,
                workers=workers,
            )
        )

    def rank(i: int) -> tuple[float, float, int]:
        loss = cards[i].get("val_loss")
        return cards[i]["val_accuracy"], -(math.inf if loss is None else loss), -i

    best = max(range(len(lrs)), key=rank)
    runs = [
        {
            "lr": lr,
            "dir": lr_dir_name(lr),
            "val_accuracy": c["val_accuracy"],
            "val_loss": c.get("val_loss"),
            "test_accuracy": c["test_accuracy"],
            "best_epoch": c["best_epoch"],
            "epochs_run": c["epochs_run"],
        }
        for lr, c in zip(lrs, cards, strict=True)
    ]
    grid = {"metric": "val_accuracy", "selected_lr": lrs[best], "selected_dir": lr_dir_name(lrs[best]), "runs": runs}
    src = out / lr_dir_name(lrs[best])
    atomic_write(out / WEIGHTS_NAME, lambda f: f.write((src / WEIGHTS_NAME).read_bytes()))
    card = {**cards[best], "name": out.name, "grid": grid}
    atomic_write_json(out / GRID_NAME, grid)
    atomic_write_json(out / CARD_NAME, card)
    load_card_dir(out, name=out.name)  # the directory must load as a model
    return card
