"""The results store of a study run: one Parquet file per finished unit of work, written atomically.

A unit is (dataset, model, explainer, batch of images). Its rows (one per image × metric output) go to
``results/<unit>.parquet``, its maps to ``maps/<unit>.npz``, and a ``units/<unit>.json`` marker says it is
done (or skipped, with the reason) — written last, after the data, each by write-to-temp-then-rename. A
run killed at any point therefore leaves only whole units behind; rerunning computes the missing ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = [
    "dataset", "model", "explainer", "explainer_key", "explainer_params", "metric", "metric_key", "output",
    "image_id", "image", "value", "curve", "true", "predicted", "target", "correct",
]


def unit_id(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class ResultsStore:
    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        for sub in ("results", "maps", "units"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------------------------------- units
    def status(self, uid: str) -> dict[str, Any] | None:
        p = self.root / "units" / f"{uid}.json"
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except ValueError:  # a marker is written atomically; a broken one means tampering: redo the unit
            return None

    def _atomic(self, path: Path, write) -> None:
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        os.replace(tmp, path)

    def write_unit(self, uid: str, rows: list[dict[str, Any]], maps: np.ndarray, image_ids: list[int],
                   info: dict[str, Any]) -> None:
        import pandas as pd

        df = pd.DataFrame(rows, columns=COLUMNS)
        self._atomic(self.root / "results" / f"{uid}.parquet", lambda p: df.to_parquet(p, index=False))
        self._atomic(
            self.root / "maps" / f"{uid}.npz",
            lambda p: np.savez_compressed(open(p, "wb"), maps=maps.astype(np.float32), image_ids=np.array(image_ids)),
        )
        self.mark(uid, {"status": "done", **info})

    def mark(self, uid: str, info: dict[str, Any]) -> None:
        self._atomic(self.root / "units" / f"{uid}.json", lambda p: p.write_text(json.dumps(info, default=str)))

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
