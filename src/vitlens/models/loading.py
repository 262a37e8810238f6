"""``load_model``: turn a spec (``timm:NAME``, ``hf:PATH_OR_ID``, ``torchvision:NAME``, ``builtin:NAME``, a
directory written by ``vitlens train``, or an ``nn.Module``) into a :class:`~vitlens.models.base.Model`.

Weights never come from the network at run time: ``pretrained=True`` uses the user's hub cache (timm and
transformers look there first) and otherwise fails with a message saying how to provide weights.
Checkpoint files are read with safetensors or ``torch.load(weights_only=True)``; arbitrary pickles are
never unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .base import Model, Preprocessing
from .cnn import CNNModel
from .hf_models import HFViT, is_hf_classifier
from .timm_models import TimmSwin, TimmViT, timm_preprocessing

CARD_NAME = "card.json"
WEIGHTS_NAME = "model.safetensors"


# ------------------------------------------------------------------------------------------ state dicts
def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``); unwrap the usual
    ``state_dict`` / ``model`` nesting and ``module.`` prefixes (DataParallel / DDP)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p}: no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle refused by weights_only, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelError(
            f"checkpoint {p}: cannot be read as safetensors or a weights-only torch state dict "
            f"({type(e).__name__}: {first})"
        ) from e
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"checkpoint {p}: does not hold a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def apply_state_dict(module: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a readable account of missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (checkpoint vs model, e.g. {shapes[:3]})")
        raise ModelError(
            f"checkpoint {source} does not match the model: "
            + "; ".join(parts)
            + " — check the architecture name, its kwargs (img_size, patch_size, ...) and num_classes"
        )
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(
            f"checkpoint {source} holds NaN or infinite values in {len(bad)} tensor(s) (e.g. {bad[:3]}): "
            "the weights are broken (a diverged run or a damaged file)"
        )
    module.load_state_dict(sd, strict=True)


def _classifier_classes(sd: dict[str, torch.Tensor], head_names: tuple[str, ...]) -> int | None:
    for name in head_names:
        w = sd.get(f"{name}.weight")
        if w is not None and w.ndim == 2:
            return int(w.shape[0])
    return None


# ------------------------------------------------------------------------------------------------ wrap
def wrap_module(
    module: nn.Module,
    *,
    name: str | None = None,
    preprocessing: Preprocessing | None = None,
    class_names: list[str] | None = None,
    source: str | Path | None = None,
) -> Model:
    """Pick the adapter for an ``nn.Module``."""
    if isinstance(module, Model):
        return module
    if not isinstance(module, nn.Module):
        raise ModelError(f"expected a model spec string or an nn.Module, got {type(module).__name__}")
    name = name or type(module).__name__
    try:
        from timm.models.swin_transformer import SwinTransformer
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        VisionTransformer = SwinTransformer = ()  # type: ignore[assignment]
    if isinstance(module, VisionTransformer):
        return TimmViT(module, name=name, class_names=class_names, preprocessing=preprocessing)
    if isinstance(module, SwinTransformer):
        return TimmSwin(module, name=name, class_names=class_names, preprocessing=preprocessing)
    if is_hf_classifier(module):
        return HFViT(module, name=name, source=source, preprocessing=preprocessing)
    if any(isinstance(m, nn.MultiheadAttention) for m in module.modules()) or type(module).__module__.startswith(
        "transformers."
    ):
        raise ModelError(
            f"{type(module).__name__} is a transformer vitlens has no adapter for; supported: timm "
            "VisionTransformer / DeiT / Swin, HF ViTForImageClassification / DeiTForImageClassification"
        )
    if not any(isinstance(m, nn.Conv2d) for m in module.modules()):
        raise ModelError(f"{type(module).__name__} is neither a supported Vision Transformer nor a CNN")
    if preprocessing is None:
        try:
            preprocessing = timm_preprocessing(module) if hasattr(module, "pretrained_cfg") else None
        except Exception:
            preprocessing = None
    return CNNModel(
        module,
        name=name,
        preprocessing=preprocessing
        or Preprocessing(input_size=(224, 224), crop_pct=224 / 256, interpolation="bilinear"),
        class_names=class_names,
    )


# ---------------------------------------------------------------------------------------------- specs
def create_timm(name: str, pretrained: bool, num_classes: int | None, kwargs: dict) -> nn.Module:
    """``timm.create_model`` with a ``num_classes`` head (None: timm's default); :class:`ModelError` naming
    similar models for an unknown name, and saying how to provide weights when pretrained ones are missing."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ModelError(f"unknown timm model {name!r}" + (f"; similar names: {close}" if close else ""))
    if num_classes is not None:
        kwargs = {**kwargs, "num_classes": num_classes}
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as e:
        raise ModelError(f"timm model {name!r} does not accept {sorted(kwargs)}: {e}") from e
    except Exception as e:
        if pretrained:
            raise ModelError(
                f"pretrained weights for timm model {name!r} are not available offline ({type(e).__name__}: {e}). "
                "Put them in your Hugging Face hub cache, or pass checkpoint=PATH (safetensors or a torch "
                "state dict) with pretrained=False"
            ) from e
        raise ModelError(f"cannot create timm model {name!r} with {kwargs}: {e}") from e


def _create_hf(ref: str, pretrained: bool, num_classes: int | None) -> tuple[nn.Module, Path | None]:
    try:
        from transformers import AutoConfig, AutoModelForImageClassification
    except ImportError as e:
        raise ModelError("Hugging Face models need the 'transformers' package: pip install 'vitlens[hf]'") from e
    local = Path(ref)
    is_local = local.is_dir()
    kw: dict[str, Any] = {} if is_local else {"local_files_only": True}
    try:
        if pretrained:
            if num_classes is not None:
                kw.update(num_labels=num_classes, ignore_mismatched_sizes=True)
            module = AutoModelForImageClassification.from_pretrained(ref, attn_implementation="sdpa", **kw)
        else:
            cfg = AutoConfig.from_pretrained(ref, **kw)
            if num_classes is not None:
                cfg.num_labels = num_classes
            module = AutoModelForImageClassification.from_config(cfg)
    except Exception as e:
        raise ModelError(
            f"cannot load Hugging Face model {ref!r} ({type(e).__name__}: {e}). Give a local directory with "
            "config.json (and weights for pretrained=True), or have the model in your hub cache"
        ) from e
    return module, (local if is_local else None)


def _create_torchvision(name: str, pretrained: bool, num_classes: int | None) -> nn.Module:
    try:
        import torchvision
    except ImportError as e:  # pragma: no cover - dependency
        raise ModelError("torchvision is not installed") from e
    if name not in torchvision.models.list_models():
        raise ModelError(f"unknown torchvision model {name!r}")
    kw: dict[str, Any] = {}
    if num_classes is not None:
        kw["num_classes"] = num_classes
    try:
        if pretrained:
            weights = torchvision.models.get_model_weights(name).DEFAULT
            cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            if not cache.is_file():
                raise ModelError(
                    f"pretrained torchvision weights for {name!r} are not in the torch hub cache ({cache}); "
                    "place the file there or pass checkpoint=PATH with pretrained=False"
                )
            module = torchvision.models.get_model(name, weights=weights)
            if num_classes is not None and num_classes != 1000:
                raise ModelError("num_classes cannot be changed for pretrained torchvision weights; fine-tune instead")
            return module
        return torchvision.models.get_model(name, weights=None, **kw)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot create torchvision model {name!r}: {e}") from e


def load_card_dir(path: Path, *, name: str) -> Model:
    """Load a model directory with ``card.json`` + ``model.safetensors`` (builtin or ``vitlens train``)."""
    card_path = path / CARD_NAME
    try:
        card = json.loads(card_path.read_text())
        arch = card["architecture"]
        timm_name, kwargs = arch["timm_name"], dict(arch.get("kwargs", {}))
        classes = list(card["classes"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{card_path}: not a valid vitlens model card ({e})") from e
    module = create_timm(timm_name, False, len(classes), kwargs)
    apply_state_dict(module, load_state_dict(path / WEIGHTS_NAME), str(path / WEIGHTS_NAME))
    pre = card.get("preprocessing")
    preprocessing = None
    if pre:
        preprocessing = Preprocessing(
            input_size=tuple(pre["input_size"]),
            mean=tuple(pre["mean"]),
            std=tuple(pre["std"]),
            interpolation=pre.get("interpolation", "bilinear"),
            crop_pct=float(pre.get("crop_pct", 1.0)),
            in_chans=int(pre.get("in_chans", 3)),
        )
    model = wrap_module(module.eval(), name=name, preprocessing=preprocessing, class_names=classes)
    model.card = card
    return model


def load_model(
    spec: str | nn.Module | Model,
    *,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    seed: int | None = None,
    **model_kwargs: Any,
) -> Model:
    """Load a model and wrap it in its adapter.

    ``spec``: ``"timm:NAME"`` (or a bare timm name), ``"hf:PATH_OR_ID"``, ``"torchvision:NAME"``,
    ``"builtin:NAME"``, a directory with ``card.json``, or an ``nn.Module``. ``model_kwargs`` go to the
    timm constructor (``img_size``, ``patch_size``, ``depth``, ...). ``checkpoint``: a ``.safetensors`` or
    torch state dict loaded strictly; when ``num_classes`` is None it is taken from the checkpoint's head.
    ``seed``: makes random initialisation (``pretrained=False``, no checkpoint) reproducible without
    touching the global RNG. The returned model is in eval mode.
    """
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return load_model(
                spec,
                pretrained=pretrained,
                checkpoint=checkpoint,
                num_classes=num_classes,
                class_names=class_names,
                **model_kwargs,
            )
    if isinstance(spec, Model):
        return spec
    if isinstance(spec, nn.Module):
        if checkpoint is not None:
            apply_state_dict(spec, load_state_dict(checkpoint), str(checkpoint))
        return wrap_module(spec, class_names=class_names)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"model spec must be a non-empty string or an nn.Module, got {spec!r}")
    spec = spec.strip()
    prefix, _, ref = spec.partition(":")
    if not ref:
        prefix, ref = "", spec
    sd = load_state_dict(checkpoint) if checkpoint is not None else None

    card_dir = None
    if prefix == "builtin":
        from .builtin import builtin_path

        card_dir, name = builtin_path(ref), spec
    elif prefix == "" and Path(ref).is_dir() and (Path(ref) / CARD_NAME).is_file():
        card_dir, name = Path(ref), Path(ref).name
    if card_dir is not None:  # the card fixes architecture and classes; a checkpoint replaces the weights
        ignored = [k for k, v in (("pretrained", pretrained), ("model kwargs", model_kwargs)) if v]
        if ignored:
            raise ModelError(
                f"{spec!r} is a vitlens model directory: its card fixes the model, so {ignored} cannot apply"
            )
        model = load_card_dir(card_dir, name=name)
        if num_classes is not None and num_classes != model.num_classes:
            raise ModelError(f"{spec!r} has {model.num_classes} classes (its card), not num_classes={num_classes}")
        if class_names is not None:
            if len(class_names) != model.num_classes:
                raise ModelError(f"{spec!r} has {model.num_classes} classes, got {len(class_names)} class names")
            model.class_names = list(class_names)
        model.weights = "card"
        if sd is not None:
            apply_state_dict(model.module, sd, str(checkpoint))
            model.card = {**(model.card or {}), "checkpoint": str(checkpoint)}
            model.weights = "checkpoint"
        return model
    if prefix in ("timm", ""):
        import timm

        if prefix == "" and not timm.is_model(ref):
            raise ModelError(
                f"unknown model spec {spec!r}: use timm:NAME, hf:PATH_OR_ID, torchvision:NAME, builtin:NAME "
                "or a directory written by `vitlens train`"
            )
        if num_classes is None and sd is not None:
            num_classes = _classifier_classes(sd, ("head", "fc", "classifier", "head.fc"))
        module = create_timm(ref, pretrained, num_classes, model_kwargs)
        source = None
    elif prefix == "hf":
        if model_kwargs:
            raise ModelError(f"Hugging Face models take no constructor kwargs here, got {sorted(model_kwargs)}")
        if num_classes is None and sd is not None:
            num_classes = _classifier_classes(sd, ("classifier",))
        module, source = _create_hf(ref, pretrained, num_classes)
    elif prefix == "torchvision":
        if num_classes is None and sd is not None:
            num_classes = _classifier_classes(sd, ("fc", "classifier.1", "classifier.6", "heads.head"))
        module, source = _create_torchvision(ref, pretrained, num_classes), None
    else:
        raise ModelError(
            f"unknown model source {prefix!r} in {spec!r}: use timm:, hf:, torchvision:, builtin: or a directory"
        )
    if sd is not None:
        apply_state_dict(module, sd, str(checkpoint))
    model = wrap_module(module.eval(), name=spec, class_names=class_names, source=source)
    model.weights = "checkpoint" if sd is not None else ("pretrained" if pretrained else "random")
    return model
