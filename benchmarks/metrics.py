"""Time vitlens metrics: insertion + deletion against the bare forwards they need, and against Quantus.

    python benchmarks/metrics.py [--batch 4] [--repeats 3] [--loc-batch 32] [--threads N] [--check]

Random-init ``deit_tiny_patch16_224`` (no downloads), CPU. Each timing is the median of ``--repeats`` runs
after one warm-up, the two sides of a comparison run alternately so that drift in machine load hits both.

1. insertion + deletion with 196 steps (one 16-px patch per step) on ``--batch`` images, against the same
   forwards alone: the same number of images in the same chunk sizes (``batch_size`` 64) through the model
   under ``inference_mode``. The ratio is the cost of building the perturbed images and of the bookkeeping
   (target ≤ 1.2×).
2. vitlens against Quantus (0.6) on identical inputs: our deletion (``baseline="zero"``) against
   ``quantus.Selectivity`` (deletion of 16-px patches, most relevant first, zero fill, one forward of the
   batch per step) and ``quantus.RegionPerturbation`` (the same loop, reporting the drop in probability);
   and pointing game, relevance mass, relevance rank, top-k intersection and sparseness against Quantus'
   PointingGame, RelevanceMassAccuracy, RelevanceRankAccuracy, TopKIntersection and Sparseness on
   ``--loc-batch`` pixel-level maps (target: vitlens ≥ 5× faster). Quantus runs with ``abs=False,
   normalise=False`` (``abs=True`` for Sparseness, its default) and warnings off, i.e. its plain arithmetic.
   Deletion is bound by the model's forwards, and Quantus too batches the images of a step into one forward,
   so both run the same 196·B perturbed images: no implementation can be 5× faster there; its target is
   parity (≥ 0.9×, i.e. not slower beyond noise).
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import torch
from timing import interleaved  # benchmarks/timing.py, next to this script

import vitlens

FORWARD_TARGET = 1.2
QUANTUS_TARGET = 5.0
PARITY_TARGET = 0.9  # deletion: both sides run the same forwards, so parity (within noise) is the ceiling


def bench_forward_ratio(model: vitlens.Model, x: torch.Tensor, maps: torch.Tensor, repeats: int):
    b = x.shape[0]
    chunk = 64
    ins = vitlens.get_metric("insertion", steps=196, batch_size=chunk, progress=False)
    dele = vitlens.get_metric("deletion", steps=196, batch_size=chunk, progress=False)
    n_perturbed = b * 196  # per metric; the unperturbed forward of the batch comes on top
    filler = torch.randn(chunk, *x.shape[1:])

    def forwards():
        with torch.inference_mode():
            for _ in range(2):
                model.module(x)
                for start in range(0, n_perturbed, chunk):
                    model.module(filler[: min(chunk, n_perturbed - start)])

    def metrics():
        ins(model, x, maps)
        dele(model, x, maps)

    base, t = interleaved(forwards, metrics, repeats)
    return base, t, 2 * (n_perturbed + b)


def _quantus_call(metric, model, x, maps, masks, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(
            model=model,
            x_batch=x,
            y_batch=y,
            a_batch=maps,
            s_batch=masks,
            channel_first=True,
            explain_func=None,
            explain_func_kwargs=None,
            model_predict_kwargs=None,
            **kw,
        )


def bench_quantus_deletion(model: vitlens.Model, x: torch.Tensor, repeats: int):
    import quantus

    rows = []
    b = x.shape[0]
    g = torch.Generator().manual_seed(1)
    patch_maps = torch.rand(b, 14, 14, generator=g)
    pixel_maps = patch_maps.repeat_interleave(16, 1).repeat_interleave(16, 2)  # the same patch ranking for both
    with torch.inference_mode():
        y = model(x).argmax(-1).numpy()
    module = model.module.eval()
    ours_del = vitlens.get_metric("deletion", steps=196, baseline="zero", progress=False)
    for name, cls, kw in [
        ("Selectivity", quantus.Selectivity, {}),
        ("RegionPerturbation", quantus.RegionPerturbation, {"regions_evaluation": 196, "order": "morf"}),
    ]:
        q = cls(patch_size=16, perturb_baseline=0.0, abs=False, normalise=False, disable_warnings=True, **kw)

        def theirs(q=q):
            _quantus_call(q, module, x.numpy(), pixel_maps[:, None].numpy(), None, y, softmax=True, device="cpu")

        tq, tv = interleaved(theirs, lambda: ours_del(model, x, pixel_maps), repeats)
        rows.append((f"deletion (196 steps, B={b})", f"{name}", tv, tq))
    return rows


def bench_quantus_localisation(loc_batch: int, repeats: int, size: tuple[int, int] = (224, 224)):
    import quantus

    rows = []
    g = torch.Generator().manual_seed(3)
    h, w = size
    xl = torch.randn(loc_batch, 3, h, w, generator=g)
    maps = torch.rand(loc_batch, h, w, generator=g)
    masks = torch.zeros(loc_batch, h, w, dtype=torch.bool)
    for i in range(loc_batch):
        y0, x0 = (int(v) for v in torch.randint(0, 150, (2,), generator=g))
        masks[i, y0 : y0 + 60, x0 : x0 + 70] = True
    xl_np, maps_np, masks_np = xl.numpy(), maps[:, None].numpy(), masks[:, None].numpy().astype(np.float32)
    yl = np.zeros(loc_batch, dtype=int)
    pairs = [
        ("pointing_game", {"tolerance": 0}, quantus.PointingGame, {}),
        ("relevance_mass", {}, quantus.RelevanceMassAccuracy, {}),
        ("relevance_rank", {}, quantus.RelevanceRankAccuracy, {}),
        ("top_k_intersection", {"k": 1000}, quantus.TopKIntersection, {"k": 1000}),
        ("sparseness", {}, quantus.Sparseness, {"abs": True}),
    ]
    for ours_name, ours_kw, qcls, qkw in pairs:
        metric = vitlens.get_metric(ours_name, **ours_kw)
        q = qcls(**{"abs": False, "normalise": False, "disable_warnings": True, **qkw})

        def theirs(q=q):
            _quantus_call(q, None, xl_np, maps_np.copy(), masks_np, yl, softmax=None)

        tq, tv = interleaved(theirs, lambda m=metric: m(None, xl, maps, masks=masks), repeats)
        rows.append((f"{ours_name} (B={loc_batch}, {h}x{w})", qcls.__name__, tv, tq))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4, help="images for insertion/deletion")
    ap.add_argument("--loc-batch", type=int, default=32, help="images for the localisation metrics")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--skip-forward", action="store_true", help="only the comparison with Quantus")
    ap.add_argument("--skip-deletion", action="store_true", help="skip deletion vs Quantus (slow: all forwards)")
    ap.add_argument("--skip-localisation", action="store_true", help="skip the localisation metrics vs Quantus")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vitlens.load_model("timm:deit_tiny_patch16_224", pretrained=False)
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(args.batch, 14, 14, generator=torch.Generator().manual_seed(2))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU, deit_tiny_patch16_224 (random init)")
    missed = []
    if not args.skip_forward:
        base, t, n = bench_forward_ratio(model, x, maps, args.repeats)
        ratio = t / base
        ok = ratio <= FORWARD_TARGET
        missed += [] if ok else [f"insertion+deletion {ratio:.2f}×"]
        print("\n| batch | forwards (images) | forwards alone, s | insertion + deletion, s | ratio | target | met |")
        print("|---:|---:|---:|---:|---:|---:|:-:|")
        print(
            f"| {args.batch} | {n} | {base:.2f} | {t:.2f} | {ratio:.2f}× | ≤ {FORWARD_TARGET:.1f}× | "
            f"{'yes' if ok else 'NO'} |",
            flush=True,
        )
    rows = []
    try:
        if not args.skip_deletion:
            rows += bench_quantus_deletion(model, x, args.repeats)
        if not args.skip_localisation:
            rows += bench_quantus_localisation(args.loc_batch, args.repeats)
    except ImportError:
        print("\nquantus is not installed: pip install -e '.[test]'")
    if rows:
        print("\n| vitlens metric | Quantus 0.6 | vitlens, s | Quantus, s | speedup | target | met |")
        print("|---|---|---:|---:|---:|---:|:-:|")
    for ours, theirs, tv, tq in rows:
        speedup = tq / tv
        target = PARITY_TARGET if ours.startswith("deletion") else QUANTUS_TARGET
        ok = speedup >= target
        if not ok:
            missed.append(f"{ours} vs {theirs} {speedup:.2f}×")
        print(
            f"| {ours} | {theirs} | {tv:.4f} | {tq:.4f} | {speedup:.1f}× | ≥ {target:g}× | {'yes' if ok else 'NO'} |",
            flush=True,
        )
    if missed:
        print("\nmissed:", ", ".join(missed))
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
