"""``vitlens train``: train a timm model on a builtin benchmark, or fine-tune one on a data set on disk.

What a run writes to its output directory:
  ``checkpoint.pt``       model, optimiser, schedule (and fp16 loss-scaler) state after the last finished epoch
                          (resume point; plain tensors and numbers, readable with ``torch.load(weights_only=True)``)
  ``model.safetensors``   the weights with the best validation accuracy
  ``card.json``           the model card: architecture, classes, preprocessing, test accuracy (and, for the
                          shortcut benchmark, accuracy on marker-consistent vs marker-broken test images),
                          training config and per-epoch history; for data on disk also the data set (root,
                          layout, split and its sizes) and the pretrained weights (timm tag, file, sha256)
The directory then loads with ``vitlens.load_model(DIR)``, and a copy in ``vitlens/models/weights/NAME``
is the builtin ``builtin:NAME``. A learning-rate grid (:func:`train_grid`) trains one such run per rate in
``OUT/lr-<rate>/`` and writes the run with the best validation accuracy to ``OUT`` itself, plus
``OUT/grid.json``.

Builtin benchmarks have unlimited data: epoch ``e`` trains on samples ``e·S … (e+1)·S − 1`` of the
``train`` split (``S = samples_per_epoch``), so no sample is seen twice and no augmentation is needed;
validation and test use fixed samples of the ``val`` and ``test`` splits. Everything is seeded, and a
resumed run gives the same weights as an uninterrupted one.

Data on disk (``data`` = a directory) is read with :func:`vitlens.data.layouts.open_dataset` in any layout
(class folders, CSV, COCO, VOC, BUSI, Kvasir, ...): the layout's own train/val/test split when it has one
(a missing val split is carved from its train split, 10 % per class), else a seeded stratified 80/10/10
split per class; images that carry no class label are left out. Images go through
:func:`vitlens.data.images.load_image` (DICOM, 16-bit, grayscale handled there) and a plain resize to
``image_size``. Optional train-time augmentation (``augment=True``): a random resized crop (the sampling of
torchvision's ``RandomResizedCrop``, scale ``crop_scale``, aspect ratio 3/4..4/3) and a horizontal flip with
probability ``hflip``, drawn from a generator seeded by (seed, epoch, image index), so that augmentation is
reproducible, independent of the number of loader processes, and identical after a resume.

Fine-tuning from pretrained weights (``pretrained`` = a timm tag such as ``vit_base_patch16_224.dino``, and/or
``pretrained_file`` = a local weights file) goes through timm's own loader (``pretrained_cfg_overlay=
dict(file=PATH)``), so that timm does what it does for its own weights: unwraps the checkpoint
(``model``/``state_dict``/EMA nesting, DDP prefixes), converts foreign formats with the model's checkpoint
filter (original DINO/MAE/DeiT/Swin/JAX checkpoints), resamples the position embedding and patch
embedding to the model's image and patch size, adapts the input channels, and drops the classifier so that
the model gets a fresh head of ``num_classes`` = the data set's classes (headless DINO/MAE checkpoints
included). A tag's file comes from the user's Hugging Face hub cache (or the torch hub cache), never from
the network. After loading, every weight outside the classifier must have come from the file, else
:class:`~vitlens.errors.ModelError`.

Optimiser: AdamW. With ``layer_decay`` (0 = off) timm's ``param_groups_layer_decay`` (Bao et al. 2022,
BEiT; used by He et al. 2022, MAE) scales the learning rate of layer ``i`` by ``layer_decay ** (L + 1 - i)``
(embeddings are layer 0, block ``k`` layer ``k + 1``, the head layer ``L + 1``; deviation: timm groups the
final norm with the last block, ``L``, where MAE's reference code puts it with the head) and the schedule
multiplies every group's ``lr_scale``; for Swin timm's groups are the stages' blocks. With ``layer_decay`` or
``filter_bias_and_bn`` weight decay skips 1-d parameters (norms, biases) and the model's
``no_weight_decay()`` set (position embedding, class token), as timm does. Without either, one parameter
group with weight decay on every parameter (the builtin recipes). Mixed precision: ``amp`` = ``auto``
(bf16 where supported: CPU, Ampere+ GPUs; otherwise fp32), ``bf16``, ``fp16`` (CUDA only, with
``torch.amp.GradScaler`` whose state is checkpointed) or ``off``.

Modules, each importing only those above it: :mod:`.config` (:class:`TrainConfig`), :mod:`.data` (splits and
batches), :mod:`.weights` (model creation, ``init_from``, pretrained weights), :mod:`.loop` (optimiser,
schedule, mixed precision, checkpoints, the card, :func:`train`), :mod:`.grid` (:func:`train_grid`) and
:mod:`.recipes` (the builtin recipes and fine-tuning presets).
"""

from .config import TrainConfig, check_config, is_builtin_data
from .data import (
    SPLITS,
    RecordSplit,
    Split,
    SyntheticSplit,
    batches,
    iter_batches,
    make_splits,
    open_training_data,
    random_resized_crop,
)
from .grid import GRID_NAME, lr_dir_name, train_grid
from .loop import (
    CHECKPOINT_NAME,
    SAMPLE_CHECK_SIZE,
    autocast_dtype,
    evaluate,
    lr_at,
    make_optimizer,
    make_scaler,
    set_lr,
    train,
    train_step,
)
from .recipes import DEFAULT_LR_GRID, PRESETS, RECIPES, get_preset, get_recipe
from .weights import create_model, init_weights, resolve_pretrained

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_LR_GRID",
    "GRID_NAME",
    "PRESETS",
    "RECIPES",
    "SAMPLE_CHECK_SIZE",
    "SPLITS",
    "RecordSplit",
    "Split",
    "SyntheticSplit",
    "TrainConfig",
    "autocast_dtype",
    "batches",
    "check_config",
    "create_model",
    "evaluate",
    "get_preset",
    "get_recipe",
    "init_weights",
    "is_builtin_data",
    "iter_batches",
    "lr_at",
    "lr_dir_name",
    "make_optimizer",
    "make_scaler",
    "make_splits",
    "open_training_data",
    "random_resized_crop",
    "resolve_pretrained",
    "set_lr",
    "train",
    "train_grid",
    "train_step",
]
