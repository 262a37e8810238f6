"""Time every explainer as a ratio to a plain ``inference_mode`` forward of the same model, same run.

    python benchmarks/explainers.py [--models deit_tiny_patch16_224 vit_base_patch16_224] [--batch 16]

Random-init timm models (no downloads), CPU by default. Each timing is the median of ``--repeats`` runs after
one warm-up. The baseline is the model's own default forward (timm's fused attention on), so the ratio
includes the cost of switching to the explicit attention path. Targets are printed next to the
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
    "chefer2021": 6.5,
    "attnlrp": 3.0,
    "agcam": 2.5,  # forward + a backward through the MLPs and attention outputs only
    "isaw": 2.5,  # forward + backward, like grad_rollout
    "legrad": 2.5,  # forward + one short backward per layer
    # one exact max-flow per patch (benchmarks/attention_flow.py): ~3 s per 197-token image on one CPU thread,
    # whatever the model width, so its ratio to a forward falls with model size (deit_tiny 60-100x, vit_base ~5x)
    "attention_flow": 150.0,
}


# Pixel-level gradient / perturbation baselines (explainers/gradients.py, perturbation.py, sampling.py).
# Their cost is a number of
# forwards (+ backwards) set by their parameters, so the benchmark runs them with the settings below and the
# targets count forward-equivalents: a forward + input-gradient backward costs <= 3 forwards; occlusion's default
# window is one patch (196 positions for /16 models at 224) and costs one forward per position (+2); rise with K
# masks costs about K forwards (+1). The rise target of the issue (K masks <= 1.1 x ceil(N*K/B) batched forwards)
# is measured separately by bench_rise.
PARAMS = {
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 8},
    "rise": {"n_masks": 32},
}
TARGETS.update(
    {
        "saliency": 3.0,
        "input_x_gradient": 3.0,
        "integrated_gradients": 1 + 8 * 3.0,
        "smoothgrad": 1 + 8 * 3.0,
        "occlusion": 1.1 * (196 + 2),
        "rise": 1.1 * (32 + 1),
    }
)
RISE_TARGET = 1.1


def bench_model(
    name: str, batch: int, repeats: int, device: str, methods: list[str] | None = None
) -> list[tuple[str, float, float]]:
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
        if methods and method not in methods:
            continue
        exp = vitlens.get_explainer(method, model, **PARAMS.get(method, {}))

        def run(exp=exp):
            exp(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        base, t = interleaved(forward, run, repeats)
        bases.append(base)
        rows.append((method, t, t / base))
    return [("forward (inference_mode)", statistics.median(bases), 1.0), *rows]


def bench_rise(
    name: str, batch: int, repeats: int, device: str, n_masks: int, rise_batch: int
) -> tuple[str, float, float]:
    """rise with K masks on N images vs ceil(N*K/B) inference_mode forwards of B images (B = rise's batch_size),
    interleaved in the same run. The forwards see one fixed random batch: the ratio is rise's own overhead
    (mask generation, masking, softmax, accumulation, its extra forward for the logits)."""
    torch.manual_seed(0)
    model = vitlens.load_model(f"timm:{name}").to(device)
    h, w = model.preprocessing.input_size
    x = torch.randn(batch, 3, h, w, device=device)
    xb = torch.randn(rise_batch, 3, h, w, device=device)
    n_fwd = -(-batch * n_masks // rise_batch)
    exp = vitlens.get_explainer("rise", model, n_masks=n_masks, batch_size=rise_batch)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def forwards():
        with torch.inference_mode():
            for _ in range(n_fwd):
                model.module(xb)
        sync()

    def run():
        exp(x)
        sync()

    base, t = interleaved(forwards, run, repeats)
    return f"rise K={n_masks} vs {n_fwd} forwards of B={rise_batch}", t, t / base


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["deit_tiny_patch16_224", "vit_base_patch16_224"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--methods", nargs="+", help="only these explainers (default: every applicable one)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target ratio is missed")
    ap.add_argument("--rise-masks", type=int, default=256, help="K for the rise measurement (0 = skip it)")
    ap.add_argument("--rise-batch", type=int, default=64, help="rise's batch_size B (images per masked forward)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, batch {args.batch}")
    print("| model | method | seconds | ratio to forward | target | met |")
    print("|---|---|---:|---:|---:|:-:|")
    missed = []
    for name in args.models:
        for method, t, ratio in bench_model(name, args.batch, args.repeats, args.device, args.methods):
            target = TARGETS.get(method)
            ok = "" if target is None else ("yes" if ratio <= target else "NO")
            if ok == "NO":
                missed.append((name, method, ratio))
            tgt = "" if target is None else f"≤ {target:.2f}×"
            print(f"| {name} | {method} | {t:.3f} | {ratio:.2f}× | {tgt} | {ok} |", flush=True)
        if args.rise_masks > 0 and (not args.methods or "rise" in args.methods):
            label, t, ratio = bench_rise(name, args.batch, args.repeats, args.device, args.rise_masks, args.rise_batch)
            ok = "yes" if ratio <= RISE_TARGET else "NO"
            if ok == "NO":
                missed.append((name, label, ratio))
            row = f"| {name} | {label} | {t:.3f} | {ratio:.2f}× (to the forwards) | ≤ {RISE_TARGET:.2f}× | {ok} |"
            print(row, flush=True)
    if missed:
        print("missed:", ", ".join(f"{m}/{e} {r:.2f}×" for m, e, r in missed))
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
