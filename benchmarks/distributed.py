"""Study throughput with 1 and N CPU workers (torchrun, gloo), one thread each, measured side by side.

    python benchmarks/distributed.py [--workers 2] [--n 48] [--check]

Runs the same small study (builtin cells ViT + CNN; rollout, Grad-CAM, saliency; deletion and pointing game)
into fresh run directories: once as a plain ``vitlens bench`` with ``OMP_NUM_THREADS=1``, once under
``torchrun --nproc-per-node N`` (torchrun also sets one thread per worker). Throughput is units per second
over the span in which units were computed (from the first unit's start to the last unit's end, read from
``logs/rank*.jsonl``), so process start-up and model loading are left out of both. Target: N=2 workers on
a 2-core machine reach >= 1.7x the units/s of one worker; ``--check`` exits 1 when missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TARGET = 1.7


def study(n: int) -> dict:
    return {
        "name": "throughput",
        "seed": 0,
        "batch_size": 4,
        "datasets": [
            {"name": "cells", "builtin": "cells", "n": n, "models": ["builtin:cells_vit", "builtin:cells_cnn"]}
        ],
        "explainers": ["rollout", "gradcam", "saliency"],
        "metrics": ["pointing_game", {"name": "deletion", "params": {"steps": 16}}],
    }


def units_per_second(run_dir: Path) -> tuple[int, float, float]:
    entries = [json.loads(line) for p in (run_dir / "logs").glob("rank*.jsonl") for line in p.read_text().splitlines()]
    done = [e for e in entries if e["status"] == "done"]
    start = min(e["finished"] - e["seconds"] for e in done)
    span = max(e["finished"] for e in done) - start
    return len(done), span, len(done) / span


def run(cfg: Path, out: Path, workers: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vitlens", "bench", str(cfg), "--out", str(out), "--quiet", "--device", "cpu"]
    if workers > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}", *cmd[1:]]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n", type=int, default=48, help="images (units = 2 models x 3 explainers x n / 4)")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = root / "study.yaml"
        cfg.write_text(yaml.safe_dump(study(args.n)))
        rows = []
        for w in (1, args.workers):
            wall = run(cfg, root / f"w{w}", w)
            n, span, ups = units_per_second(root / f"w{w}")
            rows.append((w, n, span, ups, wall))
    base = rows[0][3]
    print(f"{os.cpu_count()} CPU cores; one thread per worker")
    print("| workers | units | compute span s | units/s | speed-up | wall s (incl. start-up) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w, n, span, ups, wall in rows:
        print(f"| {w} | {n} | {span:.1f} | {ups:.2f} | {ups / base:.2f}× | {wall:.1f} |")
    ok = rows[-1][3] / base >= TARGET
    print(f"target: {args.workers} workers >= {TARGET}x one worker: {'met' if ok else 'MISSED'}")
    return 1 if (args.check and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
