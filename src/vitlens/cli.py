"""The ``vitlens`` command line: ``explain``, ``list``, ``serve`` (and more as the project grows).

A :class:`~vitlens.errors.VitlensError` prints one line ``vitlens: error: ...`` and exits with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .devices import DEVICE_HELP, PRECISIONS
from .errors import InputError, VitlensError
from .specs import parse_kwargs, parse_value


# ------------------------------------------------------------------------------------------ commands
def cmd_list(args: argparse.Namespace) -> int:
    from .explainers import explainer_info, list_explainers
    from .metrics import list_metrics, metric_info

    if args.coverage:
        from .explainers.coverage import coverage_matrix, to_markdown

        sys.stdout.write(to_markdown(coverage_matrix()))
        return 0
    if args.metrics:
        for name in list_metrics():
            info = metric_info(name)
            direction = "higher=better" if info["higher_is_better"] else "lower=better"
            print(f"{name:28s} {direction:13s} {info['citation']}")
            if args.verbose:
                params = ", ".join(f"{k}={v!r}" for k, v in info["params"].items()) or "-"
                print(f"{'':28s} params: {params}")
        return 0
    for name in list_explainers():
        info = explainer_info(name)
        kind = "class-specific" if info["class_specific"] else "class-agnostic"
        needs = "attention" if info["needs_attention"] else "any model"
        print(f"{name:20s} {kind:15s} {needs:10s} {info['citation']}")
        if args.verbose:
            params = []
            for p in info["params"]:
                text = f"{p}={info['defaults'][p]!r}" if p in info["defaults"] else p
                rng = info["ranges"].get(p)
                if rng:
                    close = ")" if rng.get("max_open") else "]"
                    text += f" in [{rng['min']:g}, {rng['max']:g}{close}"
                params.append(text)
            print(f"{'':20s} params: {', '.join(params) or '-'}; {info['summary']}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain_files import explain_files

    methods = [m for group in args.method for m in group.split(",") if m.strip()]
    records = explain_files(
        args.images,
        args.model,
        methods,
        args.out,
        checkpoint=args.checkpoint,
        target=args.target,
        batch_size=args.batch_size,
        seed=args.seed,
        original=args.original,
        device=args.device,
        precision=args.precision,
        max_pixels=args.max_pixels,
        pretrained=args.pretrained,
    )
    if records and records[0]["weights"] == "random":
        print(
            f"vitlens: warning: {args.model} has RANDOM weights (no --checkpoint, no --pretrained): the maps explain "
            "an untrained network",
            file=sys.stderr,
        )
    for r in records:
        print(f"{r['image']}: {r['predicted_name']} (p={r['probability']:.3f}) -> {r['dir']}")
    print(f"wrote {len(records)} image(s) x {len(methods)} method(s) to {args.out}")
    return 0


def parse_lr_grid(text: str) -> list[float]:
    """``1e-5,3e-5,1e-4`` -> [1e-05, 3e-05, 0.0001]."""
    try:
        lrs = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise InputError(f"--lr-grid {text!r}: give comma-separated learning rates, e.g. 1e-5,3e-5,1e-4") from e
    if not lrs:
        raise InputError(f"--lr-grid {text!r}: give comma-separated learning rates, e.g. 1e-5,3e-5,1e-4")
    return lrs


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from .devices import resolve_device
    from .training import TrainConfig, get_preset, get_recipe, is_builtin_data, train, train_grid

    if args.recipe and args.preset:
        raise InputError("give --recipe NAME (a builtin model) or --preset NAME (fine-tuning), not both")
    kwargs = parse_kwargs(args.model_kwargs) if args.model_kwargs else None
    no_pretrained = args.pretrained is not None and args.pretrained.strip().lower() in ("", "none")
    if no_pretrained:
        args.pretrained = None
    overrides = {
        "epochs": args.epochs,
        "samples_per_epoch": args.samples_per_epoch,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "device": args.device,
        "patience": args.patience,
        "amp": args.amp,
        "layer_decay": args.layer_decay,
        "image_size": args.image_size,
        "layout": args.layout,
        "pretrained": args.pretrained,
        "pretrained_file": args.pretrained_file,
        "augment": args.augment,
    }
    if args.image_size is None and kwargs and isinstance(kwargs.get("img_size"), int):
        overrides["image_size"] = kwargs["img_size"]  # the images must have the model's input size
    if args.recipe:
        if kwargs is not None:
            overrides["model_kwargs"] = kwargs
        cfg = get_recipe(args.recipe, model=args.model, data=args.data, **overrides)
    elif args.preset:
        cfg = get_preset(args.preset, data=args.data, model_kwargs=kwargs, **overrides)
    else:
        if not args.model or not args.data:
            raise InputError(
                "vitlens train needs --recipe NAME, --preset NAME with --data DIR, or both --model and --data"
            )
        cfg = TrainConfig(
            model=args.model,
            data=args.data,
            model_kwargs=kwargs or {},
            **{k: v for k, v in overrides.items() if v is not None},
        )
    if no_pretrained:  # --pretrained none: random initialisation, also for a preset that names weights
        cfg = dataclasses.replace(cfg, pretrained=None)
    workers = args.workers
    if workers is None:  # image files on a GPU run: decode in parallel so that the GPU is not kept waiting
        gpu = resolve_device(cfg.device).type == "cuda"
        workers = min(8, (os.cpu_count() or 2) // 2) if gpu and not is_builtin_data(cfg.data) else 0
    run = dict(resume=not args.no_resume, progress=not args.quiet, workers=workers)
    if args.lr_grid:
        card = train_grid(cfg, parse_lr_grid(args.lr_grid), args.out, **run)
        for r in card["grid"]["runs"]:
            mark = "  <- selected" if r["lr"] == card["grid"]["selected_lr"] else ""
            print(f"lr {r['lr']:g}: val accuracy {r['val_accuracy']:.4f}, test accuracy {r['test_accuracy']:.4f}{mark}")
    else:
        card = train(cfg, args.out, **run)
    print(f"test accuracy {card['test_accuracy']:.4f} on {card['test_size']} images; model in {args.out}")
    if "marker_broken_accuracy" in card:
        print(
            f"marker-consistent accuracy {card['marker_consistent_accuracy']:.4f}, "
            f"marker-broken accuracy {card['marker_broken_accuracy']:.4f}"
        )
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from .data.export import export_dataset

    manifest = export_dataset(args.name, args.n, args.out, seed=args.seed, split=args.split)
    print(f"wrote {args.n} samples of {args.name!r} ({args.split}) to {manifest}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset, format_summary

    options = {}
    for opt in args.option or []:
        key, sep, value = opt.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--option {opt!r} is not KEY=VALUE")
        options[key.strip()] = parse_value(value.strip())
    result = check_dataset(args.dir, args.layout, progress=True, **options)
    for problem in result:
        print(problem)
    print(format_summary(result.summary))
    return 1 if result.errors else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo

    timings: dict[tuple[str, str], float] = {}
    path = demo(
        args.out, benchmark=args.benchmark, n_images=args.n, seed=args.seed, device=args.device, timings=timings
    )
    total = sum(timings.values())
    print(f"{'model':14s} {'method':22s} {'seconds':>8s} {'share':>6s}")
    for (model, method), t in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"{model:14s} {method:22s} {t:8.2f} {t / total:6.1%}")
    print(f"{'':14s} {'all methods':22s} {total:8.2f}")
    print(path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.config import load_config
    from .bench.runner import run_study

    if args.init:
        from .bench.templates import init_config

        layout, data_dir = args.init
        text = init_config(layout, data_dir, args.model, seed=args.seed)
        dest = Path(args.config or f"{Path(data_dir).resolve().name}-study.yaml")
        if dest.exists() and not args.force:
            raise InputError(f"{dest} exists; pass --force to overwrite it, or name another file")
        import yaml

        from .bench.config import parse_config

        parse_config(yaml.safe_load(text), str(dest), dest.resolve().parent)  # the template must be valid
        dest.write_text(text)
        print(f"wrote {dest}; run it with: vitlens bench {dest}")
        return 0
    if not args.config:
        raise InputError("vitlens bench needs a CONFIG (or --init LAYOUT DIR to write one)")
    cfg = load_config(args.config)
    run_dir = args.out or f"runs/{cfg.name}"
    if args.nproc is not None:
        from .bench.workers import launch_local, launched_by_torchrun

        if launched_by_torchrun():
            raise InputError("--nproc starts torchrun itself; under torchrun, leave it out")
        argv = ["bench", args.config, "--out", run_dir] + (["--quiet"] if args.quiet else [])
        argv += [f"--{k}={v}" for k, v in (("device", args.device), ("precision", args.precision)) if v]
        return launch_local(args.nproc, argv, args.device or cfg.device)
    res = run_study(cfg, run_dir, progress=not args.quiet, device=args.device, precision=args.precision)
    from .bench.workers import launched_by_torchrun

    if launched_by_torchrun() and int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 prints the run's summary
    print(
        f"{res['done']} units done, {res['skipped']} skipped (not applicable), {res['computed_now']} computed now "
        f"by {res['workers']} worker(s) in {res['seconds']} s -> {run_dir}; next: vitlens report {run_dir}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report.study import write_report

    print(write_report(args.run_dir, args.out))
    return 0


def cmd_masks(args: argparse.Namespace) -> int:
    from .data.foreground import INDEX_NAME, run_masks
    from .data.layouts import open_dataset

    if (args.model is None) != (args.class_map is None):
        raise InputError("--model and --class-map go together (the class map maps the model's classes to COCO names)")
    model = None
    if args.model:
        from .models import load_model

        model = load_model(args.model, checkpoint=args.checkpoint, seed=args.seed)
    ds = open_dataset(args.data, args.layout)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # failures are reported below, one line each
        res = run_masks(
            ds,
            args.weights,
            args.out,
            score_threshold=args.score,
            classes=args.classes,
            model=model,
            class_map=args.class_map,
            device=args.device,
            batch_size=args.batch_size,
            progress=not args.quiet,
            arch=args.arch,
            min_size=args.min_size,
            max_size=args.max_size,
            overwrite=args.overwrite,
        )
    for key, msg in res.failed.items():
        print(f"vitlens: warning: {key}: {msg}", file=sys.stderr)
    print(
        f"{res.total} images: {res.computed} computed, {res.reused} reused, {len(res.failed)} unreadable -> "
        f"{res.out_dir} (index {res.out_dir / INDEX_NAME})"
    )
    return 1 if res.failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import serve

    return serve(
        args.model,
        host=args.host,
        port=args.port,
        seed=args.seed,
        device=args.device,
        token=args.token,
        time_budget_s=args.time_budget,
        max_pixels=args.max_pixels,
    )


def _pixels(text: str) -> int:
    """``--max-pixels``: a pixel count, ``40000000`` or ``40e6``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of pixels (e.g. 40e6)") from None
    if not 1 <= value < 2**62:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of pixels (e.g. 40e6)")
    return int(value)


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    from .data.images import MAX_PIXELS
    from .explainers import list_explainers
    from .training import PRESETS

    p = argparse.ArgumentParser(prog="vitlens", description="Explain Vision Transformer decisions and measure them.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser(
        "explain",
        help="write heatmap overlays, a grid and raw maps for image files",
        description="Methods: " + ", ".join(list_explainers()) + ". Parameters: NAME:key=value[:key=value].",
    )
    e.add_argument(
        "images",
        nargs="+",
        help="image files (PNG, JPEG, TIFF, DICOM; grayscale, 16-bit, RGBA and DICOM windows are converted)",
    )
    e.add_argument("--model", required=True, help="timm:NAME | hf:PATH | torchvision:NAME | builtin:NAME | DIR")
    e.add_argument("--checkpoint", help="weights file (.safetensors or torch state dict)")
    e.add_argument(
        "--pretrained",
        action="store_true",
        help="timm / HF / torchvision pretrained weights from the local hub cache (nothing is downloaded)",
    )
    e.add_argument(
        "--method",
        action="append",
        required=True,
        help="explainer name(s), comma-separated or repeated, e.g. rollout:head_fusion=max,gradcam",
    )
    e.add_argument("--target", help="class index or name to explain (default: the predicted class)")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--seed", type=int, default=0, help="seed for random-init weights (no checkpoint)")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument(
        "--original",
        action="store_true",
        help="also write <method>_original.png: the overlay on the original image at its original resolution",
    )
    e.add_argument("--device", default="auto", help=DEVICE_HELP + " (default auto: CUDA, then MPS, then CPU)")
    e.add_argument(
        "--max-pixels",
        type=_pixels,
        default=MAX_PIXELS,
        help="refuse larger images before decoding (default 40e6; e.g. 400e6 for pathology tiles)",
    )
    e.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="precision of the model forwards")
    e.set_defaults(func=cmd_explain)

    t = sub.add_parser(
        "train",
        help="train a timm model on a builtin benchmark, or fine-tune one on a data set on disk",
        description="Builtin models: --recipe NAME. Fine-tuning: --preset NAME --data DIR (presets: "
        + ", ".join(sorted(PRESETS))
        + "), or --model NAME --data DIR [--pretrained TAG]. Pretrained weights "
        "come from your Hugging Face hub cache or --pretrained-file; nothing is downloaded.",
    )
    t.add_argument("--recipe", help="a builtin model's recipe (cells_vit, cells_cnn, ultrasound_vit, ...)")
    t.add_argument("--preset", help="a fine-tuning preset (" + ", ".join(sorted(PRESETS)) + ")")
    t.add_argument("--model", help="timm model name, e.g. vit_small_patch16_224")
    t.add_argument(
        "--model-kwargs",
        help="constructor kwargs, e.g. img_size=112,patch_size=8,depth=6 "
        "(merged into a preset's; img_size also sets --image-size)",
    )
    t.add_argument(
        "--data",
        help="builtin:cells | builtin:ultrasound | builtin:shortcut | a data set DIR "
        "(class folders, CSV, COCO, VOC, BUSI, Kvasir, ...)",
    )
    t.add_argument("--layout", help="layout of the data set DIR (default: auto-detected)")
    t.add_argument(
        "--pretrained",
        help="timm pretrained tag, e.g. vit_base_patch16_224.dino (from your hub cache); none = random initialisation",
    )
    t.add_argument(
        "--pretrained-file",
        help="local pretrained weights (safetensors or torch state dict), loaded by "
        "timm into the model (with the --pretrained tag's config if given); the head is replaced",
    )
    t.add_argument(
        "--lr-grid",
        help="comma-separated learning rates: one run each in OUT/lr-<rate>/, the best "
        "validation accuracy is copied to OUT, all results in OUT/grid.json",
    )
    t.add_argument("--layer-decay", type=float, help="layer-wise learning-rate decay factor, e.g. 0.65 (0 = off)")
    t.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        help="mixed precision: auto (bf16 where supported), bf16, fp16 (CUDA, with loss scaling), off",
    )
    t.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random resized crop + horizontal flip on the train split (data on disk)",
    )
    t.add_argument("--image-size", type=int, help="input size in pixels (default: the recipe's / preset's)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--samples-per-epoch", type=int, help="fresh synthetic samples per epoch (builtin data)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--patience", type=int, help="early stop after N epochs without better val accuracy")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help=DEVICE_HELP)
    t.add_argument("--workers", type=int, help="image-loading processes (default: up to 8 on a GPU, else 0)")
    t.add_argument("--out", required=True, help="run directory (checkpoint, model.safetensors, card.json)")
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT has a checkpoint")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("data", help="builtin benchmark data; check a data set directory")
    dsub = d.add_subparsers(dest="data_command", required=True)
    ex = dsub.add_parser("export", help="write images, masks and a CSV manifest of a builtin benchmark")
    ex.add_argument("name", help="cells | ultrasound | shortcut")
    ex.add_argument("--n", type=int, default=100)
    ex.add_argument("--split", default="test", choices=["train", "val", "test"])
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=cmd_data_export)
    ck = dsub.add_parser("check", help="report every problem of a data set directory in one pass (exit 1 on errors)")
    ck.add_argument("dir", help="data set directory (or a CSV manifest / COCO JSON file)")
    ck.add_argument("--layout", default="auto", help="auto | folders | pbc | csv | coco | voc | busi | kvasir")
    ck.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="reader option, repeatable, e.g. keep_unannotated=true (coco), year=2012 (voc)",
    )
    ck.set_defaults(func=cmd_data_check)

    dm = sub.add_parser("demo", help="explain builtin test images with every applicable method (HTML + PNG)")
    dm.add_argument("--benchmark", default="cells", help="cells | ultrasound | shortcut")
    dm.add_argument("--n", type=int, default=4, help="number of test images (default 4)")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--out", default="out/demo")
    dm.add_argument("--device", default="auto", help=DEVICE_HELP)
    dm.set_defaults(func=cmd_demo)

    from .bench.config import builtin_configs

    b = sub.add_parser(
        "bench",
        help="run a study: models x explainers x datasets x metrics (resumable)",
        description="CONFIG: a YAML/TOML file or builtin:NAME (" + ", ".join(builtin_configs()) + ").",
    )
    b.add_argument(
        "config",
        nargs="?",
        help="study config or builtin:NAME (with --init: the file to write; default <DIR>-study.yaml)",
    )
    b.add_argument(
        "--init",
        nargs=2,
        metavar=("LAYOUT", "DIR"),
        help="write a ready config for data set DIR in LAYOUT (busi, kvasir, pbc, voc, coco, csv, folders)",
    )
    b.add_argument(
        "--model",
        action="append",
        help="with --init: model spec(s) to study (default: the README's fine-tuned ViT-B/16 dirs)",
    )
    b.add_argument("--seed", type=int, default=0, help="with --init: the study seed")
    b.add_argument("--force", action="store_true", help="with --init: overwrite an existing config file")
    b.add_argument("--out", help="run directory (default runs/<name>); rerun to resume")
    b.add_argument("--device", help=DEVICE_HELP + " (default: the config's device:, else auto)")
    b.add_argument("--precision", choices=list(PRECISIONS), help="model forwards (default: the config's, else fp32)")
    b.add_argument(
        "--nproc",
        type=int,
        help="N workers on this machine (launches torchrun --standalone --nproc-per-node N; one GPU each on CUDA)",
    )
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("report", help="HTML report, CSV and LaTeX tables of a study run")
    r.add_argument("run_dir")
    r.add_argument("--out", help="output directory (default: the run directory)")
    r.set_defaults(func=cmd_report)

    sv = sub.add_parser(
        "serve",
        help="web app: explain images in the browser, compare methods, scores",
        description="Serves the builtin models unless --model is given. Binds only --host (default: this "
        "machine only); beyond this machine, set --token.",
    )
    sv.add_argument("--model", action="append", help="model spec to serve (repeatable); default: the builtin models")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    sv.add_argument("--seed", type=int, default=0, help="seed for random-init weights (models without a checkpoint)")
    sv.add_argument("--device", default="auto", help=DEVICE_HELP)
    sv.add_argument(
        "--token",
        help="require this access token on every API call (default: $VITLENS_TOKEN; the printed address carries it)",
    )
    sv.add_argument(
        "--time-budget",
        type=float,
        default=120.0,
        help="seconds one explanation may take, waiting for the model included (default 120)",
    )
    sv.add_argument(
        "--max-pixels", type=_pixels, default=MAX_PIXELS, help="refuse larger uploads from their header (default 40e6)"
    )
    sv.set_defaults(func=cmd_serve)

    mk = sub.add_parser(
        "masks",
        help="foreground masks without annotations: Mask R-CNN (COCO weights, local file) on a data set",
        description="Runs torchvision's Mask R-CNN on every image of DIR, keeps the instances with score >= "
        "--score (optionally of some COCO categories), and caches their union as one 0/255 PNG per image at "
        "its original size plus index.json. Rerun to resume; the study runner reads the masks as mask kind "
        "'foreground' (FAF/BAF). Exit status 1 when some images could not be read.",
    )
    mk.add_argument("data", metavar="DIR", help="data set directory (any layout `vitlens data check` reads)")
    mk.add_argument(
        "--weights",
        help="torchvision COCO weights file, e.g. maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth "
        "(default: torchvision's cache, <torch hub dir>/checkpoints/)",
    )
    mk.add_argument(
        "--arch", default="maskrcnn_resnet50_fpn", choices=["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"]
    )
    mk.add_argument("--layout", default="auto", help="data set layout (default: detected)")
    mk.add_argument("--score", type=float, default=0.5, help="keep instances with score >= this (default 0.5)")
    mk.add_argument("--classes", help="only these COCO categories, comma-separated, e.g. person,dog")
    mk.add_argument("--model", help="classifier spec; with --class-map keep the COCO categories of its prediction")
    mk.add_argument("--checkpoint", help="weights file of --model")
    mk.add_argument("--seed", type=int, default=0, help="seed for a random-init --model (no checkpoint)")
    mk.add_argument("--class-map", help="JSON file {model class name or index: [COCO names]}")
    mk.add_argument("--out", help="cache directory (default DIR/.vitlens/masks/maskrcnn)")
    mk.add_argument("--device", default="auto", help=DEVICE_HELP)
    mk.add_argument("--batch-size", type=int, default=4)
    mk.add_argument("--min-size", type=int, default=800, help="detector resize: shorter side (default 800)")
    mk.add_argument("--max-size", type=int, default=1333, help="detector resize: longer side at most (default 1333)")
    mk.add_argument("--overwrite", action="store_true", help="replace a cache made with other settings")
    mk.add_argument("--quiet", action="store_true")
    mk.set_defaults(func=cmd_masks)

    from .metrics import list_metrics

    ls = sub.add_parser(
        "list",
        help="list the registered explainers (or metrics) with their citation",
        description="Metrics: " + ", ".join(list_metrics()) + ".",
    )
    ls.add_argument("-v", "--verbose", action="store_true", help="also show parameters")
    ls.add_argument("--metrics", action="store_true", help="list the metrics instead of the explainers")
    ls.add_argument(
        "--coverage",
        action="store_true",
        help="run every explainer on a small model of each family and print the coverage matrix (Markdown)",
    )
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except VitlensError as e:
        if debug:
            raise
        print("vitlens: error: " + " ".join(str(e).split()), file=sys.stderr)  # always one line
        return 2
    except BrokenPipeError:  # the reader went away (`vitlens list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # the file system refused (permissions, a full disk, a file where a folder goes)
        if debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"vitlens: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
