"""The results store of a study run: one Parquet file per finished unit of work, written atomically.

A unit is (dataset, model, explainer, batch of images). Its rows (one per image × metric output) go to
``results/<unit>.parquet``, its maps to ``maps/<unit>.npz``, and a ``units/<unit>.json`` marker says it is
done (or skipped, with the reason) — written last, after the data, each atomically
(:func:`vitlens.files.atomic_write`). A run killed at any point therefore leaves only whole units behind;
rerunning computes the missing ones.

The crops the model saw (uint8 ``[B, H, W, 3]``), with their image ids, names and evidence masks on the model
grid, go to ``crops/<crops id>.npz`` once per (dataset, model, batch), shared by the units of every explainer
on that batch; the report draws its heatmap grids from them without loading a model or reading the data set.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write, atomic_write_text

COLUMNS = [
    "dataset",
    "model",
    "explainer",
    "explainer_key",
    "explainer_params",
    "metric",
    "metric_key",
    "output",
    "image_id",
    "image",
    "value",
    "curve",
    "true",
    "predicted",
    "target",
    "correct",
]


def unit_id(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class ResultsStore:
    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        for sub in ("results", "maps", "units", "crops"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def remove_partial(self) -> int:
        """Delete the temporary files of writes that a killed process left behind (never read); returns how many.
        Call only while no other process writes to this run (rank 0, before the workers start)."""
        stale = [p for sub in ("results", "maps", "units", "crops") for p in (self.root / sub).glob(".*.tmp*")]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    # ---------------------------------------------------------------------------------------- units
    def status(self, uid: str) -> dict[str, Any] | None:
        p = self.root / "units" / f"{uid}.json"
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except ValueError:  # a marker is written atomically; a broken one means tampering: redo the unit
            return None

    def write_unit(
        self, uid: str, rows: list[dict[str, Any]], maps: np.ndarray, image_ids: list[int], info: dict[str, Any]
    ) -> None:
        import pandas as pd

        df = pd.DataFrame(rows, columns=COLUMNS)
        atomic_write(self.root / "results" / f"{uid}.parquet", lambda f: df.to_parquet(f, index=False))
        atomic_write(
            self.root / "maps" / f"{uid}.npz",
            lambda f: np.savez_compressed(f, maps=maps.astype(np.float32), image_ids=np.array(image_ids)),
        )
        self.mark(uid, {"status": "done", **info})

    def mark(self, uid: str, info: dict[str, Any]) -> None:
        atomic_write_text(self.root / "units" / f"{uid}.json", json.dumps(info, default=str))

    def has_crops(self, crops_id: str) -> bool:
        return (self.root / "crops" / f"{crops_id}.npz").is_file()

    def write_crops(
        self, crops_id: str, display: np.ndarray, image_ids: list[int], keys: list[str], evidence: np.ndarray | None
    ) -> None:
        """The model-input crops of one batch (uint8 ``[B, H, W, 3]``), their ids and names, and the evidence
        mask on the model grid (bool ``[B, H, W]``) when the data set has one."""
        arrays = {
            "display": np.ascontiguousarray(display, dtype=np.uint8),
            "image_ids": np.array(image_ids),
            "keys": np.array(keys, dtype=str),
        }
        if evidence is not None:
            arrays["evidence"] = np.asarray(evidence, dtype=bool)
        atomic_write(self.root / "crops" / f"{crops_id}.npz", lambda f: np.savez_compressed(f, **arrays))

    # ---------------------------------------------------------------------------------------- reading
    def units(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted((self.root / "units").glob("*.json")):
            try:
                out.append({"unit": p.stem, **json.loads(p.read_text())})
            except ValueError:
                continue
        return out

    def frame(self):
        """All rows of finished units as one pandas DataFrame."""
        import pandas as pd

        done = [u["unit"] for u in self.units() if u.get("status") == "done"]
        frames = [pd.read_parquet(self.root / "results" / f"{uid}.parquet") for uid in done]
        if not frames:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat(frames, ignore_index=True)

    def maps(self, uid: str) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.root / "maps" / f"{uid}.npz") as z:
            return z["maps"], z["image_ids"]

    def crops(self, crops_id: str) -> dict[str, np.ndarray] | None:
        """What :meth:`write_crops` stored (``display``, ``image_ids``, ``keys``, ``evidence``), or None."""
        path = self.root / "crops" / f"{crops_id}.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
