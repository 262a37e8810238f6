"""The model a run trains: a timm model with a fresh head, from random initialisation, from a trained
model's weights (``init_from``), or from pretrained weights found in the user's hub cache or a file and loaded
through timm's own loader (whose load log is checked so that a file that does not fit is refused)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, VitlensError
from ..files import sha256_file
from ..models.loading import WEIGHTS_NAME, create_timm
from .config import TrainConfig, check_config


def init_weights(model: nn.Module, source: str) -> None:
    """Load every weight of ``source`` except the classifier head (fine-tuning from a trained model)."""
    from ..models.builtin import builtin_path
    from ..models.loading import load_state_dict

    if source.startswith("builtin:"):
        path = builtin_path(source.split(":", 1)[1]) / WEIGHTS_NAME
    elif Path(source).is_dir():
        path = Path(source) / WEIGHTS_NAME
    else:
        path = Path(source)
    sd = load_state_dict(path)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_params = {id(p) for p in head.parameters()} if head is not None else set()
    head_keys = {n for n, p in model.named_parameters() if id(p) in head_params}
    own = model.state_dict()
    keep = {k: v for k, v in sd.items() if k not in head_keys and k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(keep) - head_keys)
    if missing:
        raise VitlensError(
            f"init_from={source}: weights do not fit the model ({len(missing)} missing, e.g. {missing[:3]})"
        )
    model.load_state_dict(keep, strict=False)


# ------------------------------------------------------------------------------------ pretrained weights
def _how_to_provide(tag: str) -> str:
    return (
        "vitlens never downloads weights while training. On a machine with network run "
        f"`python -c \"import timm; timm.create_model('{tag}', pretrained=True)\"` and copy its Hugging Face "
        "cache (~/.cache/huggingface/hub, or $HF_HUB_CACHE) here, or pass the weights file with "
        "--pretrained-file PATH (TrainConfig.pretrained_file; safetensors or a weights-only torch file)"
    )


def _pretrained_cfg(tag: str) -> tuple[str, Any]:
    """``(full tag, timm PretrainedCfg)`` of a tag; :class:`ModelError` naming the valid tags otherwise."""
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, _ = split_model_name_tag(tag)
    if not timm.is_model(arch):
        raise ModelError(f"pretrained={tag!r}: {arch!r} is not a timm architecture")
    try:
        pcfg = get_pretrained_cfg(tag)
    except RuntimeError:
        pcfg = None
    if pcfg is None:
        tags = timm.list_pretrained(f"{arch}.*")
        raise ModelError(f"pretrained={tag!r}: timm has no such weights; tags of {arch}: {tags[:12] or 'none'}")
    return (f"{arch}.{pcfg.tag}" if pcfg.tag else arch), pcfg


def resolve_pretrained(tag: str, cache_dir: str | Path | None = None) -> tuple[str, Path, str]:
    """``(full tag, weights file, where it was found)`` for a timm pretrained tag, from the local caches only.

    Looks in the Hugging Face hub cache (``cache_dir`` or ``$HF_HUB_CACHE``) for the tag's ``hf_hub_id``
    (``model.safetensors``, then ``pytorch_model.bin``, or the tag's own file name), then in the torch hub
    cache for the tag's URL. A tag without ``.name`` means timm's default weights of that architecture."""
    full, pcfg = _pretrained_cfg(tag)
    looked: list[str] = []
    if pcfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache
        from timm.models._hub import hf_split

        repo, revision = hf_split(pcfg.hf_hub_id)
        names = (
            [pcfg.hf_hub_filename]
            if getattr(pcfg, "hf_hub_filename", None)
            else ["model.safetensors", "pytorch_model.bin"]
        )
        for name in names:
            hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir, revision=revision)
            if isinstance(hit, str) and Path(hit).is_file():
                return full, Path(hit), "huggingface hub cache"
        looked.append(f"{repo} in the Hugging Face hub cache {cache_dir or constants.HF_HUB_CACHE}")
    if pcfg.url:
        from urllib.parse import urlparse

        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(pcfg.url).path).name
        if cached.is_file():
            return full, cached, "torch hub cache"
        looked.append(str(cached))
    raise ModelError(
        f"pretrained weights {full!r} are not available offline (looked for {'; '.join(looked) or 'nothing'}). "
        + _how_to_provide(full)
    )


class _TimmLoadLog(logging.Handler):
    """Collects the keys timm reports as missing when it loads pretrained weights (non-strict when the
    classifier is dropped), so that a file that does not fit the architecture is not silently ignored."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.missing: list[str] = []
        self.unexpected: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for prefix, dest in (("Missing keys (", self.missing), ("Unexpected keys (", self.unexpected)):
            if msg.startswith(prefix) and ")" in msg:
                dest.extend(k.strip() for k in msg[len(prefix) : msg.index(")")].split(",") if k.strip())


@contextmanager
def _capture_timm_load() -> Iterator[_TimmLoadLog]:
    logger = logging.getLogger("timm.models._builder")
    handler, level = _TimmLoadLog(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def create_model(cfg: TrainConfig, num_classes: int, *, load_pretrained: bool = True) -> tuple[nn.Module, dict | None]:
    """The timm model of ``cfg`` with a ``num_classes`` head, and a description of its pretrained weights.

    ``pretrained`` / ``pretrained_file``: timm creates the model with ``pretrained=True`` and
    ``pretrained_cfg_overlay=dict(file=PATH, num_classes=0)`` — the file is the user's or the tag's cached
    one; ``num_classes=0`` tells timm that the file's classifier (ImageNet's, or none for DINO/MAE) never
    fits, so it always drops it and the head stays freshly initialised. ``load_pretrained=False``
    (resuming: the checkpoint holds the weights) builds the same model without reading any file.
    """
    import timm
    from timm.models import split_model_name_tag

    kwargs = dict(cfg.model_kwargs)
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if not cfg.pretrained and not cfg.pretrained_file:
        return create_timm(cfg.model, False, num_classes, kwargs), None
    check_config(cfg)
    arch = split_model_name_tag(cfg.model)[0]
    name = cfg.pretrained or arch
    if split_model_name_tag(name)[0] != arch:
        raise VitlensError(
            f"pretrained={cfg.pretrained!r} is not a tag of model {cfg.model!r}; "
            f"use {arch}.<tag> (timm.list_pretrained('{arch}.*'))"
        )
    if not timm.is_model(name):
        raise ModelError(f"unknown timm model {name!r}")
    if cfg.pretrained:
        _pretrained_cfg(cfg.pretrained)  # a valid tag, also when the weights come from pretrained_file
    if not load_pretrained:
        return create_timm(name, False, num_classes, kwargs), None
    if cfg.pretrained_file:
        file = Path(cfg.pretrained_file)
        if not file.is_file():
            raise ModelError(f"pretrained_file {file}: no such file")
        info = {"tag": cfg.pretrained, "file": str(file.resolve()), "source": "file"}
    else:
        full, file, source = resolve_pretrained(name)
        info = {"tag": full, "file": str(file), "source": source}
        name = full
    overlay = {"file": str(file), "num_classes": 0, "custom_load": file.suffix == ".npz"}
    try:
        with _capture_timm_load() as log:
            model = timm.create_model(
                name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay, **kwargs
            )
    except TypeError as e:
        raise ModelError(f"timm model {name!r} does not accept {sorted(kwargs)}: {e}") from e
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ModelError(
            f"pretrained weights {file} do not load into timm model {name!r} with {kwargs or 'default kwargs'} "
            f"({type(e).__name__}: {first}); is it a checkpoint of this architecture?"
        ) from e
    classifier = model.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    missing = [k for k in log.missing if not any(k == c or k.startswith(c + ".") for c in classifier)]
    if missing:
        raise ModelError(
            f"pretrained weights {file} do not fit timm model {name!r}: {len(missing)} weights outside the "
            f"classifier are not in the file (e.g. {missing[:3]}); is it a checkpoint of this architecture "
            "(key names as timm's, or a format timm's checkpoint filter converts)?"
        )
    info.update(sha256=sha256_file(file), head="new", unused_keys=len(log.unexpected))
    return model, info
