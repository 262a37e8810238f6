"""Latency of the web app through its real HTTP API on loopback.

    python benchmarks/app.py [--model timm:deit_tiny_patch16_224] [--repeats 10] [--steps 14] [--threads 1]

Starts ``vitlens serve --model MODEL --port 0`` in a subprocess (random init for timm models: no downloads),
uploads one 224x224 PNG per request as the page does (multipart: the file + the settings JSON), and prints the
median wall time, client side, of:

1. ``POST /api/explain`` with ``rollout`` and no scores (target: < 1 s for deit_tiny on a 2-core CPU);
2. the same with deletion + insertion AUC (``--steps`` each, the app's default 14);
3. ``POST /api/predict`` (top-5 only);
4. 8 rollout requests sent at once against the same 8 one after the other (requests for one model are
   serialised by its lock, so at best equal: the ratio shows what the queueing costs).

Each HTTP time is put next to the same work done in this process without HTTP (``load_model`` with the same
seed, ``prepare`` of the same decoded image, ``get_explainer("rollout").explain``; for 2. also the two metric
calls), run alternately with the request so that drift in machine load hits both; the ratio is the app's
overhead (decoding, PNG encoding of the overlays, JSON). ``--threads N`` sets torch's intra-op threads on both
sides (``OMP_NUM_THREADS`` for the server), default 1: with several, the OpenMP threads of the process that
just finished keep spinning for a while and slow the other process's turn, so the in-process side is timed
badly (up to 20x on 2 cores); ``--threads 0`` keeps torch's default. The load average is printed with the
figures, as other jobs on the machine change them. Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image
from timing import interleaved, timed  # benchmarks/timing.py, next to this script

import vitlens
from vitlens.app.render import decode_map
from vitlens.app.uploads import decode_image
from vitlens.data import prepare

TARGET_S = 1.0


def start_server(model: str, threads: int | None) -> tuple[subprocess.Popen, str]:
    exe = Path(sys.executable).with_name("vitlens")
    cmd = [
        str(exe) if exe.exists() else sys.executable,
        *([] if exe.exists() else ["-m", "vitlens.cli"]),
        "serve",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})},
    )
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise SystemExit(f"the server did not start: {' '.join(cmd)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="timm:deit_tiny_patch16_224")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads here and in the server (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(buf, format="PNG")
    png = buf.getvalue()

    model = vitlens.load_model(args.model, seed=0)  # the server loads it the same way (serve --seed 0)
    x = prepare(decode_image(png).image, model.preprocessing).tensor[None]
    rollout = vitlens.get_explainer("rollout", model)
    deletion = vitlens.get_metric("deletion", steps=args.steps, baseline="zero", progress=False)
    insertion = vitlens.get_metric("insertion", steps=args.steps, baseline="zero", progress=False)

    def direct_rollout():
        rollout.explain(x)

    def direct_scored():
        maps = rollout.explain(x).maps
        deletion(model, x, maps)
        insertion(model, x, maps)

    proc, url = start_server(args.model, args.threads)
    rows = []
    try:
        with httpx.Client(base_url=url, timeout=300) as client:

            def request(path: str, settings: dict):
                r = client.post(
                    path, files={"image": ("x.png", png, "image/png")}, data={"settings": json.dumps(settings)}
                )
                r.raise_for_status()
                return r.json()

            base = {"model": args.model, "methods": ["rollout"]}
            out = request("/api/explain", {**base, "metrics": False})
            direct = rollout.explain(x).maps[0].numpy()
            same = np.array_equal(decode_map(out["methods"][0]["map"]), direct)

            d, h = interleaved(
                direct_rollout, lambda: request("/api/explain", {**base, "metrics": False}), args.repeats
            )
            rows.append(("explain rollout (no scores)", h, d))
            d, h = interleaved(
                direct_scored, lambda: request("/api/explain", {**base, "steps": args.steps}), args.repeats
            )
            rows.append((f"explain rollout + deletion/insertion ({args.steps} steps)", h, d))

            def direct_predict():
                with torch.inference_mode():
                    model.logits(x)

            d, h = interleaved(direct_predict, lambda: request("/api/predict", {"model": args.model}), args.repeats)
            rows.append(("predict (top-5)", h, d))

            one = lambda: request("/api/explain", {**base, "metrics": False})  # noqa: E731
            seq, par = [], []
            for _ in range(max(1, args.repeats // 3)):
                seq.append(timed(lambda: [one() for _ in range(8)]))
                with ThreadPoolExecutor(8) as pool:
                    par.append(timed(lambda pool=pool: list(pool.map(lambda _: one(), range(8)))))
            s_seq, s_par = statistics.median(seq), statistics.median(par)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"{args.model}, 224x224 PNG upload, CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch "
        f"thread(s)), medians of {args.repeats}; load average {load}"
    )
    print(f"HTTP maps equal to the in-process explainer's: {same}")
    print(f"{'request':52s} {'HTTP':>9s} {'in-process':>11s} {'ratio':>7s}")
    for name, http_s, direct_s in rows:
        print(f"{name:52s} {http_s:8.3f}s {direct_s:10.3f}s {http_s / direct_s:6.2f}x")
    print(f"8 rollout requests at once: {s_par:.3f} s; one after the other: {s_seq:.3f} s (ratio {s_par / s_seq:.2f})")
    verdict = "meets" if rows[0][1] < TARGET_S else "MISSES"
    print(f"explain rollout answers in {rows[0][1]:.3f} s: {verdict} the < {TARGET_S:.0f} s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
