"""Foreground masks without annotations: torchvision's Mask R-CNN (He et al. 2017) on every image of a data set.

The FAF/BAF metric of Das & Huddar (2025) takes the foreground of an image to be what a COCO-trained Mask
R-CNN segments in it.
:func:`generate_masks` runs torchvision's ``maskrcnn_resnet50_fpn`` (or ``maskrcnn_resnet50_fpn_v2``) with the
user's local COCO weights file (never the network), keeps the instances with score >= ``score_threshold``,
optionally only of some COCO categories (``classes``) or of the categories mapped from a vitlens classifier's
prediction (``model`` + ``class_map``), binarises each instance mask at 0.5 (torchvision's convention) and writes
their union as one 8-bit 0/255 PNG at the image's original size (as :func:`~vitlens.data.images.load_image`
reads it: EXIF-rotated; DICOM and 16-bit files through the same reader as everywhere else).

The cache directory holds ``<key with its suffix replaced by .png>`` per image and ``index.json`` with the
settings (weights sha256, architecture, threshold, classes, class map, resize sizes) and a record per image
(instances kept, their scores and COCO labels). Files are written atomically; a rerun with the same settings
only computes images that are missing or changed (so a killed run resumes); other settings in the same
directory are refused unless ``overwrite=True``. :func:`load_foreground` reads a cached mask back.

Deviations and choices, stated once:
- torchvision caps the detections per image at 100 (its COCO convention) and runs its own score filter before
  that cap; vitlens sets that filter just below ``score_threshold``, which gives the same instances as
  torchvision's default (0.05) followed by ``score >= threshold`` unless more than 100 instances pass the
  threshold, and avoids pasting masks that are thrown away. A class filter applies to those <= 100 instances.
- Images are batched only with images of the same size, so that a mask does not depend on which other images
  shared its batch (torchvision pads a batch to its largest image).
- With a class map, an image whose predicted class has no entry gets an empty mask (``mapped: false`` in the
  index); mask metrics score an empty mask as NaN with a warning.
- An unreadable image is recorded with its error and no mask; it is retried on the next run.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ..devices import resolve_device
from ..errors import DataError, InputError, ModelError
from ..files import atomic_write_bytes, sha256_file

INDEX_NAME = "index.json"
INDEX_FORMAT = 1
MASK_THRESHOLD = 0.5  # torchvision's convention for binarising Mask R-CNN's soft masks
DEFAULT_MIN_SIZE = 800  # torchvision's GeneralizedRCNNTransform defaults (the COCO weights were trained so)
DEFAULT_MAX_SIZE = 1333
DEFAULT_ARCH = "maskrcnn_resnet50_fpn"
INDEX_SAVE_SECONDS = 10.0  # rewrite index.json at most this often during a run (and always at its end)


# ------------------------------------------------------------------------------------------- architectures
def _arch_table() -> dict[str, tuple[Any, Any]]:
    from torchvision.models.detection import (
        MaskRCNN_ResNet50_FPN_V2_Weights,
        MaskRCNN_ResNet50_FPN_Weights,
        maskrcnn_resnet50_fpn,
        maskrcnn_resnet50_fpn_v2,
    )

    return {
        "maskrcnn_resnet50_fpn": (maskrcnn_resnet50_fpn, MaskRCNN_ResNet50_FPN_Weights.COCO_V1),
        "maskrcnn_resnet50_fpn_v2": (maskrcnn_resnet50_fpn_v2, MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
    }


ARCHS = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")


def _arch(arch: str) -> tuple[Any, Any]:
    table = _arch_table()
    if arch not in table:
        raise InputError(f"unknown Mask R-CNN architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return table[arch]


def weights_file_name(arch: str = DEFAULT_ARCH) -> str:
    """The file name of torchvision's COCO weights for ``arch`` (from the weights enum's url)."""
    return PurePosixPath(_arch(arch)[1].url).name


def default_weights_path(arch: str = DEFAULT_ARCH) -> Path:
    """Where torchvision itself caches those weights: ``<torch hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights_file_name(arch)


def coco_categories(arch: str = DEFAULT_ARCH) -> list[str]:
    """The 91 COCO category names indexed by Mask R-CNN label (0 is ``__background__``, gaps are ``N/A``)."""
    return list(_arch(arch)[1].meta["categories"])


def _weights_hint(arch: str) -> str:
    w = _arch(arch)[1]
    others = [a for a in ARCHS if a != arch]
    return (
        f"--arch {arch} needs torchvision's COCO weights file {weights_file_name(arch)} ({w.url}); download it "
        f"on a machine with internet and pass it with --weights PATH, or put it at {default_weights_path(arch)}"
        + "".join(f"; for --arch {a} the file is {weights_file_name(a)}" for a in others)
    )


def build_maskrcnn(
    weights: str | Path | None = None,
    *,
    arch: str = DEFAULT_ARCH,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    box_score_thresh: float = 0.05,
) -> torch.nn.Module:
    """torchvision's Mask R-CNN built without downloads, with the state dict of a local file loaded strictly
    (safetensors or ``torch.load(weights_only=True)``). Eval mode, on the CPU."""
    from ..models.loading import apply_state_dict, load_state_dict

    builder, _ = _arch(arch)
    path = Path(weights) if weights is not None else default_weights_path(arch)
    if not path.is_file():
        raise ModelError(f"Mask R-CNN weights {path}: no such file. {_weights_hint(arch)}")
    try:
        sd = load_state_dict(path)
    except ModelError as e:
        raise ModelError(f"{e}. {_weights_hint(arch)}") from e
    model = builder(
        weights=None,
        weights_backbone=None,
        num_classes=91,
        min_size=min_size,
        max_size=max_size,
        box_score_thresh=box_score_thresh,
    )
    try:
        apply_state_dict(model, sd, str(path))
    except ModelError as e:
        raise ModelError(f"{e}. {_weights_hint(arch)}") from e
    return model.eval()


# -------------------------------------------------------------------------------------------- cache paths
def default_mask_dir(dataset_root: str | Path) -> Path:
    """``<DIR>/.vitlens/masks/maskrcnn`` (for a manifest file, next to it)."""
    root = Path(dataset_root)
    if root.is_file():
        root = root.parent
    return root / ".vitlens" / "masks" / "maskrcnn"


def _check_key(key: str) -> PurePosixPath:
    p = PurePosixPath(key)
    if not key or p.is_absolute() or ".." in p.parts or key.startswith("/") or "\\" in key:
        raise DataError(f"image key {key!r} is not a relative POSIX path inside the data set")
    return p


def foreground_mask_path(cache_dir: str | Path, key: str) -> Path:
    """``<cache_dir>/<key with the image suffix replaced by .png>``."""
    p = _check_key(key)
    return Path(cache_dir) / p.with_suffix(".png")


_INDEX_CACHE: dict[Path, tuple[tuple[int, int], dict]] = {}


def read_index(cache_dir: str | Path) -> dict | None:
    """The parsed ``index.json`` of a cache directory, or None when there is none."""
    path = Path(cache_dir) / INDEX_NAME
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _INDEX_CACHE.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        index = json.loads(path.read_text())
        if not isinstance(index, dict) or not isinstance(index.get("images"), dict):
            raise ValueError("no 'images' object")
    except (OSError, ValueError) as e:
        raise DataError(
            f"mask index {path}: cannot be read ({type(e).__name__}: {e}); delete the directory "
            "or rerun `vitlens masks` with --overwrite"
        ) from e
    _INDEX_CACHE[path] = (stamp, index)
    return index


def load_foreground(cache_dir: str | Path, key: str) -> np.ndarray | None:
    """The cached foreground mask of ``key`` as bool ``[H, W]`` (the image's original size), or None when the
    cache has no mask for it (not computed yet, or its image could not be read)."""
    index = read_index(cache_dir)
    if index is None:
        return None
    entry = index["images"].get(key)
    if not entry or "error" in entry:
        return None
    path = foreground_mask_path(cache_dir, key)
    if not path.is_file():
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"))
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"foreground mask {path}: cannot be read ({type(e).__name__}: {e})") from e
    size = entry.get("size")
    if size and (a.shape[1], a.shape[0]) != tuple(size):
        raise DataError(f"foreground mask {path}: {a.shape[1]}x{a.shape[0]} but the index says {size[0]}x{size[1]}")
    return a > 127


# ------------------------------------------------------------------------------------------------ helpers
def _module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): which weights made the class predictions."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _png_bytes(mask: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _coco_names(names: Iterable[str], categories: Sequence[str], what: str) -> list[str]:
    valid = [c for c in categories if c not in ("__background__", "N/A")]
    out: list[str] = []
    for raw in names:
        n = str(raw).strip()
        if not n:
            continue
        if n not in valid:
            close = difflib.get_close_matches(n, valid, n=3)
            raise InputError(
                f"{what}: {n!r} is not a COCO category"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + f"; valid: {', '.join(valid)}"
            )
        if n not in out:
            out.append(n)
    return sorted(out)


def parse_classes(classes: str | Sequence[str] | None, arch: str = DEFAULT_ARCH) -> list[str] | None:
    """``"person,dog"`` or a list -> sorted validated COCO names; None / empty -> None (every category)."""
    if classes is None:
        return None
    items = classes.split(",") if isinstance(classes, str) else list(classes)
    out = _coco_names(items, coco_categories(arch), "--classes")
    return out or None


def _resolve_class_map(class_map: str | Path | Mapping[str | int, Any], model: Any, arch: str) -> dict[int, list[str]]:
    """Keys (a model class name, or an index) -> model class index; values -> sorted COCO names."""
    source = "class map"
    if isinstance(class_map, (str, Path)):
        path = Path(class_map)
        source = f"class map {path}"
        try:
            class_map = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise InputError(f"{source}: no such file") from e
        except (OSError, ValueError) as e:
            raise InputError(f"{source}: not valid JSON ({e})") from e
    if not isinstance(class_map, Mapping) or not class_map:
        raise InputError(f"{source}: must be a non-empty JSON object {{model class name or index: [COCO names]}}")
    names = list(model.class_names or [])
    cats = coco_categories(arch)
    out: dict[int, list[str]] = {}
    for key, value in class_map.items():
        k = str(key).strip()
        synonyms = [i for i, n in enumerate(names) if k in (s.strip() for s in n.split(","))]
        if k in names:
            idx = names.index(k)
        elif len(synonyms) == 1:  # "tench" for ImageNet's "tench, Tinca tinca"
            idx = synonyms[0]
        else:
            try:
                idx = int(k)
            except ValueError:
                if synonyms:
                    raise InputError(
                        f"{source}: {k!r} names several classes of model {model.name!r} "
                        f"({', '.join(repr(names[i]) for i in synonyms)}); use the full name"
                    ) from None
                close = difflib.get_close_matches(k, names, n=3)
                raise InputError(
                    f"{source}: {k!r} is neither a class name of model {model.name!r} nor a class index"
                    + (f" (did you mean {'; '.join(close)}?)" if close else "")
                ) from None
        if not 0 <= idx < model.num_classes:
            raise InputError(
                f"{source}: class index {idx} is out of range for model {model.name!r} (0..{model.num_classes - 1})"
            )
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{source}: the value of {k!r} must be a COCO name or a list of them")
        coco = _coco_names(value, cats, f"{source}, entry {k!r}")
        if idx in out and out[idx] != coco:
            raise InputError(f"{source}: class {idx} ({model.class_name(idx)}) is mapped twice")
        out[idx] = coco
    return out


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class MaskRun:
    """What one :func:`generate_masks` call did."""

    out_dir: Path
    total: int = 0
    computed: int = 0
    reused: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # key -> error message


def _settings(
    weights_sha: str,
    arch: str,
    threshold: float,
    classes: list[str] | None,
    min_size: int,
    max_size: int,
    model_info: dict | None,
    class_map: dict[int, list[str]] | None,
) -> dict:
    return {
        "detector": "torchvision Mask R-CNN",
        "arch": arch,
        "weights_sha256": weights_sha,
        "score_threshold": float(threshold),
        "mask_threshold": MASK_THRESHOLD,
        "classes": classes,
        "min_size": int(min_size),
        "max_size": int(max_size),
        "model": model_info,
        "class_map": {str(k): v for k, v in sorted(class_map.items())} if class_map is not None else None,
    }


def _settings_diff(old: dict, new: dict) -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a != b:
            if isinstance(a, str) and isinstance(b, str) and len(a) == len(b) == 64:
                a, b = a[:12] + "…", b[:12] + "…"
            diffs.append(f"{k}: {json.dumps(a)} there vs {json.dumps(b)} now")
    return diffs


def _image_stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _is_done(entry: dict | None, mask_path: Path, image: Path) -> bool:
    """An image is done when its index entry has no error, its PNG exists and the image is unchanged
    (same size and mtime, or, after a copy, the same sha256)."""
    if not entry or "error" in entry or not mask_path.is_file():
        return False
    try:
        stat = _image_stat(image)
    except OSError:
        return False
    if entry.get("image_stat") == stat:
        return True
    try:
        same = entry.get("image_sha256") == sha256_file(image)
    except OSError:
        return False
    if same:
        entry["image_stat"] = stat
    return same


def _size_groups(items: Iterable[tuple[Any, Any]], batch_size: int, max_pending: int) -> Iterator[list]:
    """Group (item, image) pairs into batches of images of one size; a group is emitted when full, when too
    many images wait, and at the end (in first-come order)."""
    groups: dict[tuple[int, int], list] = {}
    pending = 0
    for item, img in items:
        g = groups.setdefault(img.size, [])
        g.append((item, img))
        pending += 1
        if len(g) >= batch_size:
            pending -= len(g)
            yield groups.pop(img.size)
        while pending > max_pending:
            oldest = next(iter(groups))
            pending -= len(groups[oldest])
            yield groups.pop(oldest)
    yield from groups.values()


def generate_masks(
    dataset: Any, weights: str | Path | None = None, out_dir: str | Path | None = None, **options: Any
) -> Path:
    """Write (or reuse) a foreground mask for every image of ``dataset``; returns the cache directory.

    ``dataset``: a :class:`~vitlens.data.layouts.Dataset` or a path for ``open_dataset(path, layout)``.
    ``weights``: torchvision's COCO Mask R-CNN weights file (default: torchvision's own cache location).
    ``options`` are those of :func:`run_masks` (``score_threshold``, ``classes``, ``model`` with
    ``class_map`` = {model class name or index: [COCO names]} or a JSON file of that, ``device``,
    ``batch_size``, ``arch``, ``min_size``, ``max_size``, ``overwrite``, ``layout``, ``progress``). See the
    module docstring for the cache and the deviations.
    """
    return run_masks(dataset, weights, out_dir, **options).out_dir


def run_masks(
    dataset: Any,
    weights: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    score_threshold: float = 0.5,
    classes: str | Sequence[str] | None = None,
    model: Any = None,
    class_map: str | Path | Mapping | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 4,
    progress: bool = True,
    arch: str = DEFAULT_ARCH,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    overwrite: bool = False,
    layout: str = "auto",
) -> MaskRun:
    """Write (or reuse) a foreground mask for every image of ``dataset``; returns what was computed, reused
    and what failed (:func:`generate_masks` returns only the cache directory).

    ``model`` (a spec or :class:`~vitlens.models.base.Model`) with ``class_map`` ({model class name or index:
    [COCO names]}, or a JSON file of that) keeps only instances of the categories mapped from the model's
    predicted class; ``classes`` keeps only those COCO categories; ``score_threshold`` the minimum score.
    """
    import time

    from .images import load_image
    from .layouts import Dataset, open_dataset

    # ------------------------------------------------------------------ validate everything before any work
    if not isinstance(dataset, Dataset):
        dataset = open_dataset(dataset, layout)
    _arch(arch)
    if isinstance(score_threshold, bool) or not 0.0 <= float(score_threshold) <= 1.0:
        raise InputError(f"score threshold must be in [0, 1], got {score_threshold!r}")
    threshold = float(score_threshold)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch size must be an integer >= 1, got {batch_size!r}")
    if min_size < 1 or max_size < min_size:
        raise InputError(f"need 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    if (model is None) != (class_map is None):
        raise InputError("a class map needs a model (--model SPEC --class-map FILE), and a model needs a class map")
    cls = parse_classes(classes, arch)
    if cls is not None and model is not None:
        raise InputError("use either --classes or --model/--class-map, not both")
    dev = resolve_device(device)
    weights_path = Path(weights) if weights is not None else default_weights_path(arch)
    if not weights_path.is_file():
        raise ModelError(f"Mask R-CNN weights {weights_path}: no such file. {_weights_hint(arch)}")

    classifier = None
    cmap: dict[int, list[str]] | None = None
    model_info = None
    if model is not None:
        from ..models import load_model

        classifier = load_model(model, seed=0) if isinstance(model, str) else load_model(model)
        cmap = _resolve_class_map(class_map, classifier, arch)  # type: ignore[arg-type]
        model_info = {"name": classifier.name, "weights_fingerprint": _module_fingerprint(classifier.module)}

    records = list(dataset.records)
    cache = Path(out_dir) if out_dir is not None else default_mask_dir(dataset.root)
    by_path: dict[Path, str] = {}
    for r in records:
        p = foreground_mask_path(cache, r.key)
        if p in by_path:
            raise DataError(f"images {by_path[p]!r} and {r.key!r} would share the mask file {p}; rename one of them")
        if p.name == INDEX_NAME:
            raise DataError(f"image key {r.key!r} collides with the mask index {INDEX_NAME}")
        by_path[p] = r.key

    weights_sha = sha256_file(weights_path)
    settings = _settings(weights_sha, arch, threshold, cls, min_size, max_size, model_info, cmap)
    try:
        old = read_index(cache)
    except DataError:
        if not overwrite:
            raise
        old = {"images": {}}
    replace = old is not None and (old.get("settings") != settings or old.get("format") != INDEX_FORMAT)
    if replace and not overwrite:
        diff = _settings_diff((old or {}).get("settings") or {}, settings)
        raise DataError(
            f"mask cache {cache} holds masks made with other settings ({'; '.join(diff) or 'unknown format'}); "
            "pass --overwrite (overwrite=True) to replace them, or choose another --out directory"
        )
    if old is None or replace:
        import torchvision

        official = PurePosixPath(_arch(arch)[1].url).stem.rsplit("-", 1)[-1]  # torch hub's sha256 prefix
        index: dict[str, Any] = {
            "format": INDEX_FORMAT,
            "settings": settings,
            "info": {
                "torchvision": torchvision.__version__,
                "weights_file": str(weights_path.resolve()),
                "weights_are_torchvision_release": weights_sha.startswith(official),
                "mask_png": "8-bit, 255 = foreground, 0 = background, the image's original size",
            },
            "images": {},
        }
    else:
        index = json.loads(json.dumps(old))  # a private copy: the cached parse is shared
    images: dict[str, dict] = index["images"]

    run = MaskRun(cache, total=len(records))
    todo = []
    for r in records:
        if _is_done(images.get(r.key), foreground_mask_path(cache, r.key), r.image):
            run.reused += 1
        else:
            todo.append(r)

    def save_index() -> None:
        index["last_run"] = {
            "total": run.total,
            "computed": run.computed,
            "reused": run.reused,
            "failed": len(run.failed),
        }
        atomic_write_bytes(cache / INDEX_NAME, (json.dumps(index, indent=1, sort_keys=True) + "\n").encode())

    detector = None
    if todo:  # build (and check) the detector before touching the cache
        eps_thresh = float(np.nextafter(np.float32(threshold), np.float32(-1.0)))  # torchvision keeps score > it
        detector = build_maskrcnn(
            weights_path, arch=arch, min_size=min_size, max_size=max_size, box_score_thresh=eps_thresh
        ).to(dev)
    if replace and old is not None:
        for key in old.get("images", {}):
            with contextlib.suppress(OSError, DataError):
                foreground_mask_path(cache, key).unlink()
    cache.mkdir(parents=True, exist_ok=True)
    if detector is None:
        save_index()
        return run

    # ------------------------------------------------------------------------------------ compute the rest
    from tqdm.auto import tqdm

    categories = coco_categories(arch)
    cat_index = {n: i for i, n in enumerate(categories)}
    allowed_all = None if cls is None else sorted(cat_index[n] for n in cls)
    if classifier is not None:
        classifier.to(dev)

    def readable() -> Iterator[tuple[Any, Any]]:
        for r in todo:
            try:
                stat = _image_stat(r.image)
                digest = sha256_file(r.image)
                img = load_image(r.image)
            except (OSError, InputError, DataError) as e:
                run.failed[r.key] = " ".join(str(e).split())
                images[r.key] = {"error": run.failed[r.key]}
                bar.update(1)
                continue
            yield (r, stat, digest), img

    from torchvision.transforms.functional import pil_to_tensor

    last_save = time.monotonic()
    with tqdm(total=len(todo), desc="Mask R-CNN", disable=not progress, unit="img") as bar:
        try:
            for group in _size_groups(readable(), int(batch_size), max_pending=4 * int(batch_size)):
                pil = [img for _, img in group]
                predicted: list[int | None] = [None] * len(group)
                if classifier is not None:
                    from .images import prepare

                    x = torch.stack([prepare(im, classifier.preprocessing).tensor for im in pil])
                    with torch.no_grad():
                        predicted = [int(i) for i in classifier.logits(x).argmax(dim=-1).cpu()]
                tensors = [pil_to_tensor(im).to(dev, torch.float32).div_(255.0) for im in pil]
                try:
                    with torch.no_grad():
                        outputs = detector(tensors)
                except (RuntimeError, ValueError) as e:  # e.g. out of memory on a very large image
                    first = (str(e).strip().splitlines() or [""])[0][:200]
                    raise ModelError(
                        f"Mask R-CNN failed on {', '.join(r.key for (r, _, _), _ in group)} ({type(e).__name__}: "
                        f"{first}); try a smaller --batch-size or --max-size, or --device cpu"
                    ) from e
                for ((r, stat, digest), img), out, pred in zip(group, outputs, predicted, strict=True):
                    entry: dict[str, Any] = {
                        "size": [img.width, img.height],
                        "image_stat": stat,
                        "image_sha256": digest,
                    }
                    allowed = allowed_all
                    if cmap is not None:
                        assert pred is not None and classifier is not None
                        entry["predicted"] = {"index": pred, "name": classifier.class_name(pred)}
                        entry["mapped"] = pred in cmap
                        allowed = sorted(cat_index[n] for n in cmap.get(pred, []))
                    scores, labels, masks = out["scores"], out["labels"], out["masks"]
                    keep = scores >= threshold
                    if allowed is not None:
                        keep &= torch.isin(labels, torch.tensor(allowed, dtype=labels.dtype, device=labels.device))
                    fg = (masks[keep, 0] > MASK_THRESHOLD).any(dim=0) if bool(keep.any()) else None
                    mask = fg.cpu().numpy() if fg is not None else np.zeros((img.height, img.width), dtype=bool)
                    if mask.shape != (img.height, img.width):  # torchvision pastes at the input size
                        raise ModelError(
                            f"Mask R-CNN returned a {mask.shape} mask for a {img.height}x{img.width} image {r.image}"
                        )
                    atomic_write_bytes(foreground_mask_path(cache, r.key), _png_bytes(mask))
                    entry.update(
                        instances=int(keep.sum()),
                        scores=[round(float(s), 6) for s in scores[keep].cpu()],
                        labels=[categories[int(i)] for i in labels[keep].cpu()],
                        foreground_fraction=round(float(mask.mean()), 6),
                    )
                    images[r.key] = entry
                    run.computed += 1
                    bar.update(1)
                if time.monotonic() - last_save > INDEX_SAVE_SECONDS:
                    save_index()
                    last_save = time.monotonic()
        finally:
            save_index()
    if run.failed:
        warnings.warn(
            f"{len(run.failed)} image(s) could not be read and have no mask (see {cache / INDEX_NAME})", stacklevel=2
        )
    return run
