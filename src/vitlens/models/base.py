"""The model adapter: the one place in vitlens that knows architectures.

`Model` wraps an ``nn.Module`` and answers what explainers need to know without touching model internals:
logits, prefix tokens (CLS, distillation, registers), the patch grid, the readout (which tokens the
classifier reads), attention recording and feature recording for Grad-CAM. Subclasses in this package
implement the family-specific parts (timm ViT / Swin / CNN, Hugging Face ViT / DeiT, torchvision CNN).

Every recording context leaves the module exactly as it found it: training mode, fused-attention flags,
requires_grad of parameters and its hook dictionaries are restored, also when the forward raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..devices import autocast, check_precision
from ..errors import ExplainerError, InputError, ModelError
from .lrp_sites import SUPPORTED as LRP_SUPPORTED
from .lrp_sites import LrpSites
from .trace import BlockTrace, HeadTrace

Family = Literal["vit", "swin", "cnn"]


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model input: resize shorter side to ``input_size / crop_pct``, centre-crop
    ``input_size``, scale to [0, 1], normalise with ``mean``/``std`` (the timm convention)."""

    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    in_chans: int = 3

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1], ``[..., C, H, W]`` -> model input ``(x - mean) / std`` per channel (the first
        ``C`` entries of ``mean``/``std``). The one normalisation rule for files, builtin benchmarks and training."""
        c = x.shape[-3]
        if len(self.mean) < c or len(self.std) < c:
            raise InputError(f"images have {c} channels but the preprocessing has mean {self.mean}, std {self.std}")
        shape = (c, 1, 1)
        mean = torch.tensor(self.mean[:c], dtype=torch.float32, device=x.device).reshape(shape)
        std = torch.tensor(self.std[:c], dtype=torch.float32, device=x.device).reshape(shape)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "in_chans": self.in_chans,
        }


@dataclass
class AttentionRecording:
    """Attention probabilities ``[B, heads, N, N]`` of every recorded block, in forward order.

    The tensors stay in the autograd graph when the forward ran with gradients enabled, so
    :meth:`gradients` can differentiate a score with respect to them (without touching ``.grad`` of any
    parameter).
    """

    attentions: list[torch.Tensor] = field(default_factory=list)

    def gradients(self, score: torch.Tensor) -> list[torch.Tensor]:
        """d score / d A for every recorded attention map (``torch.autograd.grad``, no parameter grads)."""
        if not self.attentions:
            raise ExplainerError("no attention was recorded: run the forward inside record_attention()")
        if not all(a.requires_grad for a in self.attentions):
            raise ExplainerError("attention was recorded without gradients: run the forward with grad enabled")
        return [g.float() for g in torch.autograd.grad(score, self.attentions)]


@dataclass
class FeatureRecording:
    """The tensor recorded at a feature site, and how to view it (or its gradient) as ``[B, C, h, w]``."""

    raw: torch.Tensor | None = None
    to_bchw: Callable[[torch.Tensor], torch.Tensor] = lambda t: t

    @property
    def features(self) -> torch.Tensor:
        if self.raw is None:
            raise ExplainerError("no features were recorded: run the forward inside record_features()")
        return self.to_bchw(self.raw).float()

    def gradient(self, score: torch.Tensor) -> torch.Tensor:
        if self.raw is None or not self.raw.requires_grad:
            raise ExplainerError("features were recorded without gradients: run the forward with grad enabled")
        (g,) = torch.autograd.grad(score, [self.raw])
        return self.to_bchw(g).float()


HEAD_FUSIONS = ("mean", "max", "min")


class Model:
    """Architecture-agnostic view of a classifier for explainers and metrics.

    Attributes that subclasses set: ``family`` ("vit", "swin" or "cnn"), ``name``, ``num_classes``,
    ``preprocessing``, ``class_names`` (optional).
    """

    family: Family = "cnn"

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        num_classes: int,
        preprocessing: Preprocessing,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.module = module
        self.name = name
        self.num_classes = int(num_classes)
        self.preprocessing = preprocessing
        self.class_names = list(class_names) if class_names is not None else None
        self.card: dict | None = None  # model card of a builtin or trained checkpoint, if any
        #: where the weights came from: "random" (random initialisation), "pretrained", "checkpoint",
        #: "card" (a vitlens model directory) or "given" (an nn.Module passed in)
        self.weights = "given"
        self.precision = "fp32"  # of every forward through :meth:`forward` (:meth:`to`, :meth:`full_precision`)
        self._before_forward: Callable[[], None] | None = None  # :meth:`interruptible`

    # ----------------------------------------------------------------------------------------- basics
    @property
    def random_weights(self) -> bool:
        """True when the model was created with random weights: its explanations explain an untrained network."""
        return self.weights == "random"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, family={self.family!r}, num_classes={self.num_classes})"

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device: str | torch.device | None = None, *, precision: str | None = None) -> Model:
        """Move the module to ``device`` and/or set the forward ``precision`` (:data:`vitlens.devices.PRECISIONS`).
        The weights stay float32 either way: low precision is ``torch.autocast`` around each forward, so that
        recorded tensors can be promoted back to float32 and methods that need it run exactly
        (:meth:`full_precision`)."""
        if precision is not None:
            self.precision = check_precision(precision)
        if device is not None:
            self.module.to(device)
        return self

    @contextlib.contextmanager
    def interruptible(self, check: Callable[[], None]) -> Iterator[None]:
        """Call ``check()`` before every forward inside (it raises, e.g. :class:`~vitlens.errors.Cancelled`, to stop
        the work): methods of many forwards (RISE, occlusion, SmoothGrad, IG, perturbation metrics) stop within
        one forward of being asked to."""
        saved, self._before_forward = self._before_forward, check
        try:
            yield
        finally:
            self._before_forward = saved

    @contextlib.contextmanager
    def full_precision(self) -> Iterator[None]:
        """Forwards inside run in float32 whatever :attr:`precision` is (for ill-conditioned methods)."""
        saved, self.precision = self.precision, "fp32"
        try:
            yield
        finally:
            self.precision = saved

    def class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    @property
    def has_attention(self) -> bool:
        """True when the model has global self-attention with a token readout that attention methods use."""
        return False

    def require_attention(self, method: str = "this method") -> None:
        """Raise a clear error when attention-based explainers cannot run on this model."""
        if not self.has_attention:
            raise ExplainerError(
                f"{method} needs a Vision Transformer with global self-attention, but {self.name!r} "
                f"({self.family}) has none that vitlens can read; use a gradient or CAM method "
                "(e.g. 'gradcam') for this model"
            )

    # ------------------------------------------------------------------------------------ validation
    def check_images(self, images: torch.Tensor) -> torch.Tensor:
        """Validate an input batch and move it to the model's device."""
        if not isinstance(images, torch.Tensor):
            raise InputError(f"images must be a torch.Tensor [B,C,H,W], got {type(images).__name__}")
        if images.ndim != 4:
            raise InputError(f"images must have shape [B,C,H,W], got shape {tuple(images.shape)}")
        if images.is_meta:
            raise InputError("images are on the 'meta' device (shapes without data); give real tensors")
        if not images.is_floating_point():
            raise InputError(f"images must be a float tensor already normalised for the model, got {images.dtype}")
        c = self.preprocessing.in_chans
        if images.shape[1] != c:
            raise InputError(f"model {self.name!r} expects {c} channels, got images of shape {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise InputError("images is an empty batch")
        if not torch.isfinite(images).all():
            raise InputError("images contain NaN or infinite values")
        self._check_spatial(tuple(images.shape[-2:]))
        return images.to(self.device, dtype=next(self.module.parameters()).dtype)

    def _check_spatial(self, hw: tuple[int, int]) -> None:
        """Subclasses reject input sizes the architecture cannot take."""

    def resolve_target(self, logits: torch.Tensor, target: int | torch.Tensor | Sequence[int] | None) -> torch.Tensor:
        """Target classes as LongTensor[B]: the predicted class when ``target`` is None."""
        b = logits.shape[0]
        if self.num_classes == 0:  # headless backbone: there is no class to explain
            if target is not None:
                raise InputError(f"model {self.name!r} has no classification head (num_classes=0); target must be None")
            return torch.full((b,), -1, dtype=torch.long, device=logits.device)
        if target is None:
            return logits.argmax(dim=-1)
        if isinstance(target, bool) or isinstance(target, (str, bytes, float)):
            hint = " (class names: vitlens.specs.resolve_target(name, model))" if isinstance(target, str) else ""
            raise InputError(f"target must be None, an int or a LongTensor[B] of class indices, got {target!r}{hint}")
        if isinstance(target, int):
            t = torch.full((b,), target, dtype=torch.long) if -(2**63) <= target < 2**63 else None
            if t is None:
                raise InputError(f"target class {target} is out of range: model {self.name!r} has {self.num_classes}")
        else:
            try:
                t = torch.as_tensor(target)
            except (TypeError, ValueError, RuntimeError, OverflowError) as e:
                raise InputError(f"target must be None, an int or a LongTensor[B], got {target!r} ({e})") from None
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise InputError(f"target must hold integer class indices, got dtype {t.dtype}")
            if t.ndim == 0:  # a single class for every image, like an int
                t = t.long().expand(b)
            elif t.ndim != 1 or t.numel() != b:
                raise InputError(
                    f"target has {t.numel()} entries of shape {tuple(t.shape)} for a batch of {b} images: give an "
                    f"int or one class per image (shape [{b}])"
                )
            t = t.long().cpu()
        bad = (t < 0) | (t >= self.num_classes)
        if bad.any():
            raise InputError(
                f"target class {int(t[bad][0])} is out of range: model {self.name!r} has classes "
                f"0..{self.num_classes - 1}"
            )
        return t.to(logits.device)

    # -------------------------------------------------------------------------------------- forwards
    def _raw_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` in eval mode; errors inside the model become ``InputError``."""
        x = self.check_images(images)
        with self.evaluating():
            return self.forward(x)

    __call__ = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch already validated by :meth:`check_images`, in the caller's context: no mode switch
        and no gradient setting of its own, so that explainers call it inside ``record_attention``,
        ``trace_blocks`` or ``record_features`` (and Captum calls it as the forward function). Errors inside
        the model become ``InputError``; a ``(cls, dist)`` tuple head gives its first output."""
        if self._before_forward is not None:
            self._before_forward()
        try:
            with autocast(x.device, self.precision):
                out = self._raw_forward(x)
        except torch.cuda.OutOfMemoryError:
            raise  # the caller may retry with a smaller batch (vitlens.bench)
        except (RuntimeError, AssertionError, ValueError) as e:
            if "out of memory" in str(e).lower():
                raise
            raise InputError(f"model {self.name!r} failed on input of shape {tuple(x.shape)}: {e}") from e
        if isinstance(out, (tuple, list)):  # some heads return (cls, dist) in train mode
            out = out[0]
        return out.float() if self.precision != "fp32" else out

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Run in eval mode (dropout off) and restore each submodule's training flag afterwards."""
        modes = [(m, m.training) for m in self.module.modules()]
        self.module.eval()
        try:
            yield
        finally:
            for m, mode in modes:
                m.training = mode

    # -------------------------------------------------------------------------------------- geometry
    @property
    def num_prefix_tokens(self) -> int:
        return 0

    def grid_size(self, input_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        """(h, w) of the map a patch-level explainer returns for an input of size ``input_hw``."""
        raise NotImplementedError

    def readout(self, num_tokens: int) -> torch.Tensor:
        """Weights over tokens ``[N]`` describing which token outputs the classifier reads.

        ``e_CLS`` for CLS-token models (the map is then the CLS row, as in the papers); the mean of the CLS
        and distillation rows for distilled DeiT (its head averages both); uniform over patch tokens for
        average-pooled ViTs.
        """
        raise ExplainerError(f"model {self.name!r} has no token readout")

    # ------------------------------------------------------------------------------------- recording
    @contextlib.contextmanager
    def record_attention(self, layers: Sequence[int] | None = None) -> Iterator[AttentionRecording]:
        """Record attention probabilities ``[B, heads, N, N]`` for forwards inside the context, of every block
        or only of the blocks indexed by ``layers`` (the others keep their fused kernels), in forward order.
        Switches fused attention to the explicit path and restores everything afterwards."""
        self.require_attention()
        mods = self.attention_modules()
        if layers is not None:
            try:
                mods = [mods[i] for i in layers]
            except (IndexError, TypeError):
                raise ExplainerError(
                    f"layers={layers!r} are not block indices of {self.name!r} ({len(mods)} blocks)"
                ) from None
        rec = AttentionRecording()
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.evaluating())
            stack.enter_context(self._explicit_attention(mods))
            handles = []
            try:
                for m in mods:
                    handles.append(self._hook_attention(m, rec.attentions))
                yield rec
            finally:
                for h in handles:
                    h.remove()

    def attention_modules(self) -> list[nn.Module]:
        return []

    def lrp_sites(self, method: str = "attnlrp") -> LrpSites:
        """Where the AttnLRP rules apply (:mod:`vitlens.models.lrp_sites`): the adapters of architectures the
        rules cover override this; :class:`ExplainerError` for any other model."""
        raise ExplainerError(
            f"{method} has no LRP rules for {self.name!r} ({type(self.module).__name__}); supported: "
            f"{LRP_SUPPORTED}; use 'gradcam' or a gradient method for this model"
        )

    @contextlib.contextmanager
    def trace_blocks(self, layers: Sequence[int] | None = None) -> Iterator[tuple[list[BlockTrace], HeadTrace]]:
        """Record every tensor inside the blocks (all, or those indexed by ``layers``) and the classifier's
        reading of the final tokens, for forwards inside the context (see :mod:`vitlens.models.trace`).

        Like :meth:`record_attention`, attention switches to the explicit path and the model is restored
        afterwards. Raises a VitlensError for blocks that are not the standard pre-norm block.
        """
        self.require_trace()
        mods = self.attention_modules()
        idx = list(range(len(mods)))
        if layers is not None:
            try:
                idx = [idx[i] for i in layers]
            except (IndexError, TypeError):
                raise ExplainerError(
                    f"layers={layers!r} are not block indices of {self.name!r} ({len(mods)} blocks)"
                ) from None
        traces = [BlockTrace() for _ in idx]
        head = HeadTrace(num_prefix_tokens=self.num_prefix_tokens)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.evaluating())
            stack.enter_context(self._explicit_attention(mods))
            handles: list = []
            try:
                for i, t in zip(idx, traces, strict=True):
                    handles += self._trace_block_hooks(i, t)
                handles += self._trace_head_hooks(head)
                yield traces, head
            finally:
                for h in handles:
                    h.remove()

    def require_trace(self, method: str = "this method") -> None:
        """Raise a clear error when the blocks cannot be traced (not the standard pre-norm block)."""
        self.require_attention(method)

    def _trace_block_hooks(self, index: int, trace: BlockTrace) -> list:
        raise ExplainerError(f"block tracing is not implemented for {type(self).__name__}")

    def _trace_head_hooks(self, head: HeadTrace) -> list:
        raise ExplainerError(f"head tracing is not implemented for {type(self).__name__}")

    def _hook_head(self, head: HeadTrace, final_norm: nn.Module, linears: list[nn.Module]) -> list:
        """Hooks filling ``head`` for adapters whose classifier is linear head(s) after a final norm: the
        norm's output (the final tokens) and each head linear's input, with the linears' weights."""
        if not all(isinstance(lin, nn.Linear) for lin in linears):
            raise ExplainerError(f"model {self.name!r} has no linear classification head")
        head.weights = [lin.weight for lin in linears]
        head.biases = [lin.bias for lin in linears]
        head.inputs = [None] * len(linears)

        def store(i):
            def hook(_m, args):
                head.inputs[i] = args[0]

            return hook

        return [
            final_norm.register_forward_hook(lambda _m, _a, out: setattr(head, "tokens", out)),
            *(lin.register_forward_pre_hook(store(i)) for i, lin in enumerate(linears)),
        ]

    def head_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits the classifier gives for a residual stream ``[B, N, D]`` taken after any block: the final
        norm, the pooling and the head(s), exactly as after the last block (used by LeGrad-style methods)."""
        raise ExplainerError(f"model {self.name!r} cannot classify intermediate tokens")

    @contextlib.contextmanager
    def _explicit_attention(self, modules: list[nn.Module]) -> Iterator[None]:
        yield

    def _hook_attention(self, module: nn.Module, store: list[torch.Tensor]) -> torch.utils.hooks.RemovableHandle:
        raise NotImplementedError

    @contextlib.contextmanager
    def record_features(
        self, layer: int | str | None = None, input_hw: tuple[int, int] | None = None
    ) -> Iterator[FeatureRecording]:
        """Record the features at a Grad-CAM site (``layer``: block index for transformers, module name
        for CNNs; None = the family's default) for a forward on inputs of size ``input_hw``."""
        hw = tuple(input_hw) if input_hw is not None else self.preprocessing.input_size
        module, where, to_bchw = self.feature_site(layer, hw)
        rec = FeatureRecording(to_bchw=to_bchw)

        def store(t: torch.Tensor) -> None:
            rec.raw = t

        if where == "input":
            handle = module.register_forward_pre_hook(lambda _m, args: store(args[0]))
        else:
            handle = module.register_forward_hook(lambda _m, _a, out: store(out[0] if isinstance(out, tuple) else out))
        with self.evaluating():
            try:
                yield rec
            finally:
                handle.remove()

    def feature_site(
        self, layer: int | str | None, input_hw: tuple[int, int]
    ) -> tuple[nn.Module, str, Callable[[torch.Tensor], torch.Tensor]]:
        """(module, "input" | "output", to_bchw) for Grad-CAM."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------- helpers
    def _tokens_to_bchw(self, t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Patch tokens of ``[B, N, D]`` as ``[B, D, h, w]`` (prefix tokens dropped)."""
        p = self.num_prefix_tokens
        h, w = grid
        if t.shape[1] - p != h * w:
            raise ModelError(f"{t.shape[1] - p} patch tokens do not fit the {h}x{w} patch grid of {self.name!r}")
        return t[:, p:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)


def module_by_name(root: nn.Module, name: str) -> nn.Module:
    """``root.get_submodule(name)`` with a VitlensError listing candidate names."""
    try:
        return root.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in root.named_children()]
        raise ExplainerError(f"layer {name!r} not found in the model; top-level modules are {names}") from None
