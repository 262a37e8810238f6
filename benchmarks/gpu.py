"""Images/s of every explainer and of insertion+deletion at one step per patch, as ratios to plain batched
forwards of the same model in the same run, in fp32 and bf16 (built for a GPU; runs anywhere).

    python benchmarks/gpu.py [--model vit_base_patch16_224] [--batch 32] [--device auto] [--check]

Random-init timm model (no downloads). For each precision the baseline is a batched ``inference_mode``
forward through the model adapter in that precision (autocast included), timed interleaved with each method
(benchmarks/timing.py). Insertion + deletion at 196 steps on N images are compared with the
ceil(N·392 / B) forwards of B perturbed images they need (B = the metrics' chunk). The goals are the
issue's: rollout and raw attention <= 1.15x, gradient methods <= 2.5x, chefer2021 <= 6.5x,
insertion+deletion <= 1.2x. ``--check`` exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from timing import interleaved, timed  # benchmarks/timing.py, next to this script

import vitlens
from vitlens.devices import resolve_device

GOALS = {
    "raw_attention": 1.15,
    "rollout": 1.15,
    "grad_rollout": 2.5,
    "attention_gradcam": 2.5,
    "generic_attention": 2.5,
    "gradcam": 2.5,
    "saliency": 2.5,
    "input_x_gradient": 2.5,
    "isaw": 2.5,
    "chefer2021": 6.5,
    "attnlrp": 6.5,
}
CURVES_GOAL = 1.2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_curves(model, xc: torch.Tensor, chunk: int, repeats: int, gen) -> tuple[int, int, float, float]:
    """(steps, forwards, seconds of the forwards, seconds of insertion+deletion at one step per patch)."""
    device = model.device
    h, w = xc.shape[-2:]
    steps = model.grid_size()[0] * model.grid_size()[1]
    maps = vitlens.get_explainer("rollout", model)(xc)
    metrics = [vitlens.get_metric(m, steps=steps, batch_size=chunk, progress=False) for m in ("insertion", "deletion")]
    n_fwd = math.ceil(len(xc) * 2 * steps / chunk)
    xb = torch.randn(chunk, 3, h, w, generator=gen).to(device)

    def forwards():
        with torch.inference_mode():
            for _ in range(n_fwd):
                model.logits(xb)
        sync(device)

    def curves():
        for m in metrics:
            m(model, xc, maps)
        sync(device)

    base, t = interleaved(forwards, curves, repeats)
    return steps, n_fwd, base, t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--img-size", type=int, help="timm img_size (default: the model's, 224)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--curve-images", type=int, default=8, help="images for insertion+deletion")
    ap.add_argument("--curve-batch", type=int, default=256, help="perturbed images per forward (the metrics' chunk)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--methods", nargs="+", default=list(GOALS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    kwargs = {"img_size": args.img_size} if args.img_size else {}
    model = vitlens.load_model(f"timm:{args.model}", seed=0, **kwargs).to(device)
    h, w = model.preprocessing.input_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, h, w, generator=gen).to(device)
    xc = x[: args.curve_images]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"{args.model} at {h}x{w}, batch {args.batch}, {name}, torch {torch.__version__}")
    print("| precision | method | images/s | ratio to forwards | goal | met |")
    print("|---|---|---:|---:|---:|:-:|")
    missed = []

    def row(prec, label, seconds, n_images, ratio, goal):
        ok = ratio <= goal
        if not ok:
            missed.append(f"{prec}/{label} {ratio:.2f}x")
        print(
            f"| {prec} | {label} | {n_images / seconds:.1f} | {ratio:.2f}× | ≤ {goal:.2f}× | {'yes' if ok else 'NO'} |"
        )

    for prec in args.precisions:
        model.to(precision=prec)

        def forward():
            with torch.inference_mode():
                model.logits(x)
            sync(device)

        forward()  # warm-up
        tf = min(timed(forward) for _ in range(args.repeats))
        print(f"| {prec} | forward | {args.batch / tf:.1f} | 1.00× | | |", flush=True)
        for method in args.methods:
            exp = vitlens.get_explainer(method, model)

            def run(exp=exp):
                exp(x)
                sync(device)

            base, t = interleaved(forward, run, args.repeats)
            row(prec, method, t, args.batch, t / base, GOALS[method])
        steps, n_fwd, base, t = bench_curves(model, xc, args.curve_batch, max(1, args.repeats - 1), gen)
        label = f"insertion+deletion, {steps} steps ({n_fwd} forwards of {args.curve_batch})"
        row(prec, label, t, len(xc), t / base, CURVES_GOAL)
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    if missed:
        print("missed:", ", ".join(missed))
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
