"""Time every explainer as a ratio to a plain ``inference_mode`` forward of the same model, same run.

    python benchmarks/explainers.py [--models deit_tiny_patch16_224 vit_base_patch16_224] [--batch 16]

Random-init timm models (no downloads), CPU by default. Each timing is the median of ``--repeats`` runs after
one warm-up. The baseline is the model's own default forward (timm's fused attention on), so the ratio
includes the cost of switching to the explicit attention path. Targets (issue 2) are printed next to the
ratios; the script exits 1 if one is missed with ``--check``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from timing import interleaved  # benchmarks/timing.py, next to this script

import vitlens

TARGETS = {
    "raw_attention": 1.15,
    "rollout": 1.15,
    "grad_rollout": 2.5,
    "generic_attention": 2.5,
    "gradcam": 1.5,
    "attention_gradcam": 2.5,
}


def bench_model(name: str, batch: int, repeats: int, device: str) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    model = vitlens.load_model(f"timm:{name}").to(device)
    h, w = model.preprocessing.input_size
    x = torch.randn(batch, 3, h, w, device=device)

    def forward():
        with torch.inference_mode():
            model.module(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rows = []
    bases = []
    for method in vitlens.applicable_explainers(model):
        exp = vitlens.get_explainer(method, model)

        def run(exp=exp):
            exp(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        base, t = interleaved(forward, run, repeats)
        bases.append(base)
        rows.append((method, t, t / base))
    return [("forward (inference_mode)", statistics.median(bases), 1.0), *rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["deit_tiny_patch16_224", "vit_base_patch16_224"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target ratio is missed")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, batch {args.batch}")
    print("| model | method | seconds | ratio to forward | target | met |")
    print("|---|---|---:|---:|---:|:-:|")
    missed = []
    for name in args.models:
        for method, t, ratio in bench_model(name, args.batch, args.repeats, args.device):
            target = TARGETS.get(method)
            ok = "" if target is None else ("yes" if ratio <= target else "NO")
            if ok == "NO":
                missed.append((name, method, ratio))
            tgt = "" if target is None else f"≤ {target:.2f}×"
            print(f"| {name} | {method} | {t:.3f} | {ratio:.2f}× | {tgt} | {ok} |", flush=True)
    if missed:
        print("missed:", ", ".join(f"{m}/{e} {r:.2f}×" for m, e, r in missed))
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
