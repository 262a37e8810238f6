"""Fine-tuning recipes: data sets on disk, pretrained weights through timm, layer decay,
mixed precision, presets and the learning-rate grid. Tiny random-init models at 32 px; no network."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import vitlens
import vitlens.training as tr
import vitlens.training.loop as loop
from tests.dicom_fixtures import write_dicom
from vitlens.cli import main
from vitlens.data.images import load_batch
from vitlens.data.layouts import open_dataset
from vitlens.training import PRESETS, TrainConfig, get_preset, train, train_grid

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_ARG = "img_size=32,patch_size=8,embed_dim=32,depth=2,num_heads=2"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread. With two on this shared 2-core machine, thread hand-offs under load
    made these tests 20x slower (0.35 s vs 9.6 s for a two-run grid)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _noise_image(rng, colour: int, size=(40, 40)) -> Image.Image:
    return Image.fromarray(np.clip(rng.normal(colour, 25, (*size, 3)), 0, 255).astype(np.uint8))


@pytest.fixture
def folders(tmp_path):
    """Class folders: dark vs light noise images, 12 per class (1 val and 1 test image per class)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folders"
    for cls, colour in (("dark", 60), ("light", 190)):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            _noise_image(rng, colour).save(root / cls / f"{i}.png")
    return root


def tiny(data, **kw) -> TrainConfig:
    base = dict(
        model="vit_small_patch16_224",
        model_kwargs=TINY,
        data=str(data),
        image_size=32,
        epochs=2,
        batch_size=8,
        patience=0,
    )
    return TrainConfig(**{**base, **kw})


def headless_file(path, num_classes=0, seed=1, **save_kw):
    """A timm model of the TINY shape saved with ``num_classes`` outputs (0: no head, as DINO / MAE)."""
    torch.manual_seed(seed)
    m = timm.create_model("vit_small_patch16_224", num_classes=num_classes, **TINY)
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(save_kw.get("wrap", lambda d: d)(sd), path)
    return sd


# ------------------------------------------------------------------------------------------- pretrained
def test_headless_checkpoint_gives_the_backbone_and_a_fresh_head(tmp_path, folders):
    sd = headless_file(tmp_path / "dino_like.safetensors")
    assert not any(k.startswith("head.") for k in sd)
    model, info = tr.create_model(tiny(folders, pretrained_file=str(tmp_path / "dino_like.safetensors")), 3)
    own = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(own[k], v), k  # every backbone weight is the file's
    assert own["head.weight"].shape == (3, 32) and own["head.bias"].shape == (3,)
    assert info["sha256"] == hashlib.sha256((tmp_path / "dino_like.safetensors").read_bytes()).hexdigest()
    assert info["head"] == "new" and info["source"] == "file"

    # a supervised checkpoint with its own 10-class head, as a torch file nested under "model" with DDP prefixes
    full = headless_file(
        tmp_path / "sup.pth",
        num_classes=10,
        seed=2,
        wrap=lambda d: {"model": {"module." + k: v for k, v in d.items()}, "epoch": 3},
    )
    model, _ = tr.create_model(tiny(folders, pretrained_file=str(tmp_path / "sup.pth")), 2)
    own = model.state_dict()
    for k, v in full.items():
        if k.startswith("head."):
            assert own[k].shape[0] == 2 and v.shape[0] == 10
        else:
            assert torch.equal(own[k], v), k


def test_a_file_that_does_not_fit_is_refused(tmp_path, folders):
    sd = headless_file(tmp_path / "ok.safetensors")
    save_file({k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.weight"}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(vitlens.ModelError, match=r"not in the file.*blocks\.1\.mlp\.fc2\.weight"):
        tr.create_model(tiny(folders, pretrained_file=str(tmp_path / "partial.safetensors")), 2)
    with pytest.raises(vitlens.ModelError, match="do not load into"):  # another width
        tr.create_model(
            tiny(folders, pretrained_file=str(tmp_path / "ok.safetensors"), model_kwargs={**TINY, "embed_dim": 64}), 2
        )
    with pytest.raises(vitlens.ModelError, match="no such file"):
        tr.create_model(tiny(folders, pretrained_file=str(tmp_path / "nope.safetensors")), 2)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torchhub"))
    return tmp_path / "hf"


def test_pretrained_tag_without_cache_is_a_clear_error(empty_caches, folders, tmp_path, capsys):
    with pytest.raises(vitlens.ModelError, match=r"not available offline.*--pretrained-file"):
        tr.resolve_pretrained("vit_base_patch16_224.dino")
    with pytest.raises(vitlens.ModelError, match=r"no such weights.*augreg"):
        tr.resolve_pretrained("vit_base_patch16_224.nope")
    with pytest.raises(vitlens.VitlensError, match="not a tag of model"):
        tr.create_model(tiny(folders, pretrained="deit_small_patch16_224.fb_in1k"), 2)
    rc = main(
        [
            "train",
            "--preset",
            "vit_b16_dino",
            "--data",
            str(folders),
            "--model-kwargs",
            TINY_ARG,
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "vit_base_patch16_224.dino" in err and "hub cache" in err and len(err.splitlines()) == 1
    # --pretrained none: the preset's recipe from random initialisation
    assert (
        main(
            [
                "train",
                "--preset",
                "vit_b16_dino",
                "--pretrained",
                "none",
                "--data",
                str(folders),
                "--model-kwargs",
                TINY_ARG,
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "random"),
                "--quiet",
            ]
        )
        == 0
    )
    card = json.loads((tmp_path / "random" / "card.json").read_text())
    assert "pretrained" not in card and card["training"]["pretrained"] is None
    assert card["training"]["layer_decay"] == 0.65


def test_pretrained_tag_from_the_hub_cache(empty_caches, folders, tmp_path):
    """A tag's weights come from the Hugging Face cache layout (refs/main -> snapshots/<sha>/file), offline."""
    tag = "vit_small_patch16_224.augreg_in21k_ft_in1k"  # its timm config asks for timm's custom npz loader
    repo = empty_caches / "models--timm--vit_small_patch16_224.augreg_in21k_ft_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    sd = headless_file(repo / "snapshots" / "abc123" / "model.safetensors", num_classes=1000)
    cfg = tiny(folders, pretrained=tag, epochs=1)
    card = train(cfg, tmp_path / "run", progress=False)
    pre = card["pretrained"]
    assert pre["tag"] == tag and pre["source"] == "huggingface hub cache"
    assert pre["sha256"] == hashlib.sha256((repo / "snapshots/abc123/model.safetensors").read_bytes()).hexdigest()
    assert card["architecture"] == {"timm_name": "vit_small_patch16_224", "kwargs": TINY}
    model, _ = tr.create_model(cfg, 2)
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.weight"])
    loaded = vitlens.load_model(str(tmp_path / "run"))
    assert loaded.class_names == ["dark", "light"] and loaded.grid_size() == (4, 4)


# ---------------------------------------------------------------------------------------- optimiser
def _expected_layer(name: str, depth: int) -> int:
    """Layer ids of BEiT / MAE layer decay, by hand: embeddings 0, block k -> k + 1, the head depth + 1.
    The final norm: depth + 1 in MAE's reference code (util/lr_decay.py), the last block's layer in timm
    (its group matcher merges ``norm`` into the last block); vitlens uses timm's, a documented deviation."""
    if name.split(".")[0] in ("cls_token", "pos_embed", "patch_embed", "reg_token"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    if name.startswith("norm."):
        return depth
    return depth + 1


def test_layer_decay_groups_follow_the_formula_and_the_schedule_scales_them(folders, monkeypatch):
    depth, decay = 3, 0.6
    cfg = tiny(folders, model_kwargs={**TINY, "depth": depth}, layer_decay=decay, weight_decay=0.07, epochs=1)
    model, _ = tr.create_model(cfg, 2)
    opt = tr.make_optimizer(model, cfg)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(group_of) == len(names)
    for name, p in names.items():
        g = group_of[id(p)]
        assert g["lr_scale"] == pytest.approx(decay ** (depth + 1 - _expected_layer(name, depth))), name
        no_decay = p.ndim <= 1 or name in ("pos_embed", "cls_token")
        assert g["weight_decay"] == (0.0 if no_decay else 0.07), name
    # without layer decay: timm's decay filter when asked for, else one group that decays everything (builtins)
    plain = tr.make_optimizer(model, tiny(folders))
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["weight_decay"] == 0.05
    filt = tr.make_optimizer(model, tiny(folders, filter_bias_and_bn=True))
    assert sorted(g["weight_decay"] for g in filt.param_groups) == [0.0, 0.05]

    seen = []
    real_step = tr.train_step

    def spy(model, opt, *a, **k):
        seen.append([(g["lr"], g["lr_scale"]) for g in opt.param_groups])
        return real_step(model, opt, *a, **k)

    monkeypatch.setattr(loop, "train_step", spy)
    train(cfg, folders.parent / "ld", progress=False)
    steps = len(seen)
    warmup = int(cfg.warmup_epochs * steps)
    for step, groups in enumerate(seen):
        base = tr.lr_at(step, steps, warmup, cfg.lr)
        assert {round(s, 12) for _, s in groups} == {round(decay**k, 12) for k in range(depth + 2)}
        for lr, scale in groups:
            assert lr == pytest.approx(base * scale)


# ------------------------------------------------------------------------------------ mixed precision
def test_fp16_is_refused_off_cuda_and_the_scaler_path_is_exact(folders, tmp_path):
    cpu = torch.device("cpu")
    with pytest.raises(vitlens.VitlensError, match="fp16 needs a CUDA device"):
        tr.autocast_dtype("fp16", cpu)
    with pytest.raises(vitlens.VitlensError, match="fp16 needs a CUDA device"):
        train(tiny(folders, amp="fp16", device="cpu"), tmp_path / "fp16", progress=False)
    assert not (tmp_path / "fp16" / "checkpoint.pt").exists()
    assert tr.make_scaler(torch.float16, cpu) is None and tr.make_scaler(torch.bfloat16, torch.device("cuda")) is None
    with warnings.catch_warnings():  # "CUDA is not available" on a machine without a GPU
        warnings.simplefilter("ignore")
        assert isinstance(tr.make_scaler(torch.float16, torch.device("cuda")), torch.amp.GradScaler)

    # loss scaling by a power of two, unscaled before clipping, changes nothing in fp32: same weights
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 1, 0])
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu")):
        torch.manual_seed(0)
        m = timm.create_model("vit_small_patch16_224", num_classes=2, **TINY)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        for _ in range(3):
            tr.train_step(m, opt, x, y, clip_grad=0.05, scaler=scaler)
        results.append(m.state_dict())
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k


def test_scaler_state_is_checkpointed_and_resumed(folders, tmp_path, monkeypatch):
    """The checkpoint plumbing of the fp16 scaler, exercised on the CPU with an fp32 GradScaler."""
    monkeypatch.setattr(loop, "make_scaler", lambda amp, device: torch.amp.GradScaler("cpu"))
    cfg = tiny(folders, amp="off")
    train(cfg, tmp_path / "straight", progress=False)
    steps = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["state"]["step"]

    real_save = loop.save_checkpoint

    def save_then_die(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    train(cfg, tmp_path / "resumed", progress=False)
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    # the growth tracker counts every successful step: it continued from the first session's value
    assert ckpt["scaler"]["_growth_tracker"] == steps == ckpt["state"]["step"] and ckpt["scaler"]["scale"] == 65536.0
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ data
def test_splits_and_augmentation_are_seeded(folders):
    cfg = tiny(folders, augment=True)
    _, items, info = tr.open_training_data(cfg)
    ds = open_dataset(folders)
    for s in ("train", "val", "test"):  # the data set's own seeded stratified split
        assert [p for p, _ in items[s]] == [r.image for r in ds.split(s, cfg.seed)]
    assert info["split_sizes"] == {"train": 20, "val": 2, "test": 2} and info["layout"] == "folders"
    splits = tr.make_splits(cfg, 0)
    x0, y0, _ = splits["train"].batch([0, 1, 2])
    x0b, _, _ = tr.make_splits(cfg, 0)["train"].batch([0, 1, 2])
    x1, _, _ = tr.make_splits(cfg, 1)["train"].batch([0, 1, 2])
    assert torch.equal(x0, x0b) and not torch.equal(x0, x1)  # the same per (seed, epoch, image), new each epoch
    assert y0.tolist() == [y for _, y in items["train"][:3]]
    plain = tr.make_splits(tiny(folders), 0)
    vx, _, _ = splits["val"].batch([0, 1])
    assert torch.equal(vx, plain["val"].batch([0, 1])[0])  # validation is never augmented

    # scale (1, 1) keeps the whole (square) image; hflip=1 always flips: the plain image mirrored
    whole = tr.make_splits(tiny(folders, augment=True, crop_scale=(1.0, 1.0), hflip=1.0), 3)["train"]
    assert torch.equal(whole.batch([4])[0], plain["train"].batch([4])[0].flip(-1))
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = tr.random_resized_crop(rng, 44, 36, (0.08, 1.0))
        assert 0 <= left < right <= 44 and 0 <= top < bottom <= 36
    # several loader processes give the same batches as one
    idx = [[0, 1, 2], [3, 4], [5, 6, 7]]
    one = list(tr.iter_batches(splits["train"], idx, workers=0))
    two = list(tr.iter_batches(splits["train"], idx, workers=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two, strict=True))


def test_layout_split_is_used_and_a_missing_val_split_is_carved(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["path,label,split"]
    for i in range(24):
        label = i % 2
        split = "test" if i >= 20 else "train"
        _noise_image(rng, 60 + 130 * label).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{['dark', 'light'][label]},{split}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    classes, items, info = tr.open_training_data(tiny(tmp_path))
    assert info["layout"] == "csv" and classes == ["dark", "light"]
    assert sorted(p.name for p, _ in items["test"]) == sorted(f"{i}.png" for i in range(20, 24))
    assert info["split_sizes"] == {"train": 18, "val": 2, "test": 4} and "10% of its train split" in info["split"]
    held = {p.name for p, _ in items["val"]}
    assert held.isdisjoint(p.name for p, _ in items["train"]) and {y for _, y in items["val"]} == {0, 1}


def test_busi_layout_trains_on_images_not_masks(tmp_path):
    rng = np.random.default_rng(0)
    n = 0
    for cls, colour in (("benign", 80), ("malignant", 170), ("normal", 120)):
        (tmp_path / cls).mkdir()
        for k in range(1, 6):
            _noise_image(rng, colour).save(tmp_path / cls / f"{cls} ({k}).png")
            Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / cls / f"{cls} ({k})_mask.png")
            n += 1
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / cls / f"{cls} (1)_mask_1.png")
    card = train(tiny(tmp_path, epochs=1), tmp_path.parent / (tmp_path.name + "_run"), progress=False)
    ds = card["dataset"]
    assert ds["layout"] == "busi" and card["classes"] == ["benign", "malignant", "normal"]
    assert sum(ds["split_sizes"].values()) == n == 15 and ds["class_counts"]["test"] == [1, 1, 1]


def test_dicom_class_folders_train_like_any_image(tmp_path):
    """12-bit DICOM in class folders: read by load_image (its percentile window), as the explainers read them."""
    from vitlens.data.images import load_image, prepare

    rng = np.random.default_rng(0)
    root = tmp_path / "dcm"
    for cls, level in (("normal", 800), ("opaque", 3000)):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            arr = np.clip(rng.normal(level, 300, (40, 40)), 0, 4095)
            arr[0, 0], arr[-1, -1] = 0, 4095  # a full-range window: the classes differ in mean grey
            write_dicom(root / cls / f"{i}.dcm", arr.astype(np.uint16), bits_stored=12)
    card = train(tiny(root, epochs=1), tmp_path / "run", progress=False)
    assert card["classes"] == ["normal", "opaque"] and card["dataset"]["split_sizes"] == {
        "train": 16,
        "val": 2,
        "test": 2,
    }
    split = tr.make_splits(tiny(root), 0)["test"]
    x, _, _ = split.batch([0])
    expected = prepare(load_image(split.items[0][0]), vitlens.load_model(str(tmp_path / "run")).preprocessing)
    assert torch.equal(x[0], expected.tensor)


def test_data_problems_are_clear_errors(tmp_path):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(vitlens.DataError, match="at least two classes"):
        tr.open_training_data(tiny(tmp_path))
    (tmp_path / "other").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "other" / "b.png")
    with pytest.raises(vitlens.DataError, match="val split is empty"):
        tr.open_training_data(tiny(tmp_path))
    with pytest.raises(vitlens.VitlensError, match="inside the data set"):  # it would become a class folder
        train(tiny(tmp_path), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_model_kwargs_take_tuples_for_swin():
    from vitlens.specs import parse_kwargs

    assert parse_kwargs("img_size=32,depths=(1,1),num_heads=[1,2],window_size=2") == {
        "img_size": 32,
        "depths": (1, 1),
        "num_heads": (1, 2),
        "window_size": 2,
    }


# -------------------------------------------------------------------------------------- presets, grid
def test_presets_are_timm_architectures_with_their_weights_config():
    assert {
        "vit_b16_random",
        "vit_b16_supervised",
        "vit_b16_dino",
        "vit_b16_mae",
        "deit_b16",
        "deit_s16",
        "swin_t",
        "swin_b",
    } <= set(PRESETS)
    comparison = {n: PRESETS[n] for n in ("vit_b16_random", "vit_b16_supervised", "vit_b16_dino", "vit_b16_mae")}
    assert {c.model for c in comparison.values()} == {"vit_base_patch16_224"}
    assert comparison["vit_b16_random"].pretrained is None
    for name, cfg in PRESETS.items():
        assert timm.is_model(cfg.model), name
        assert cfg.image_size == 224 and cfg.data == "" and cfg.lr > 0, name
        if cfg.pretrained:
            assert cfg.pretrained in timm.list_pretrained(cfg.model + ".*"), name
            pcfg = timm.models.get_pretrained_cfg(cfg.pretrained)
            assert tuple(cfg.mean) == tuple(pcfg.mean) and tuple(cfg.std) == tuple(pcfg.std), name
            assert tuple(pcfg.input_size) == (3, 224, 224), name
    assert PRESETS["vit_b16_dino"].layer_decay == PRESETS["vit_b16_mae"].layer_decay == 0.65
    with pytest.raises(vitlens.VitlensError, match="needs data"):
        get_preset("vit_b16_mae")
    with pytest.raises(vitlens.VitlensError, match="unknown preset"):
        get_preset("vit_huge", data="x")
    merged = get_preset("vit_b16_mae", data="d", model_kwargs={"depth": 2})
    assert merged.model_kwargs == {"depth": 2} and merged.pretrained == "vit_base_patch16_224.mae"


def test_lr_grid_selects_the_best_validation_run_and_out_loads(folders, tmp_path):
    out = tmp_path / "grid"
    rc = main(
        [
            "train",
            "--preset",
            "vit_b16_random",
            "--data",
            str(folders),
            "--model-kwargs",
            TINY_ARG,
            "--lr-grid",
            "1e-6,2e-3",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    grid = json.loads((out / "grid.json").read_text())
    runs = {r["dir"]: json.loads((out / r["dir"] / "card.json").read_text()) for r in grid["runs"]}
    assert sorted(runs) == ["lr-0.002", "lr-1e-06"]
    best = max(runs, key=lambda d: (runs[d]["val_accuracy"], -runs[d]["val_loss"]))
    assert grid["selected_dir"] == best
    for r in grid["runs"]:
        assert r["val_accuracy"] == runs[r["dir"]]["val_accuracy"]
        assert r["test_accuracy"] == runs[r["dir"]]["test_accuracy"]
    assert (out / "model.safetensors").read_bytes() == (out / best / "model.safetensors").read_bytes()
    card = json.loads((out / "card.json").read_text())
    assert card["grid"] == grid and card["training"]["lr"] == grid["selected_lr"]
    assert card["architecture"] == {"timm_name": "vit_base_patch16_224", "kwargs": TINY}
    assert card["training"]["augment"] is True and card["dataset"]["split_sizes"]["val"] == 2
    # OUT loads as a model whose accuracy on the validation images is the card's
    model = vitlens.load_model(str(out))
    val = open_dataset(folders).split("val", 0)
    x, _ = load_batch([r.image for r in val], model.preprocessing)
    acc = float((model(x).argmax(-1) == torch.tensor([r.label for r in val])).float().mean())
    assert model.class_names == ["dark", "light"] and acc == pytest.approx(card["val_accuracy"])


def test_an_interrupted_grid_resumes_without_computing_anything_twice(folders, tmp_path, monkeypatch):
    cfg = tiny(folders, augment=True)
    counts = {"steps": 0, "evals": 0}
    real_step, real_eval, real_save = tr.train_step, tr.evaluate, loop.save_checkpoint

    def step(*a, **k):
        counts["steps"] += 1
        return real_step(*a, **k)

    def evaluate(*a, **k):
        counts["evals"] += 1
        return real_eval(*a, **k)

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(loop, "evaluate", evaluate)
    train_grid(cfg, [1e-3, 3e-3], tmp_path / "straight", progress=False)
    once = dict(counts)

    counts.update(steps=0, evals=0)
    saves = {"n": 0}

    def save_then_die(obj, path):
        real_save(obj, path)
        saves["n"] += 1
        if saves["n"] == 3:  # run 1 finished (2 epochs), run 2 killed after its first epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_grid(cfg, [1e-3, 3e-3], tmp_path / "resumed", progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    card = train_grid(cfg, [1e-3, 3e-3], tmp_path / "resumed", progress=False)
    assert counts == once  # every step and evaluation happened exactly once over both sessions
    counts.update(steps=0, evals=0)
    assert train_grid(cfg, [1e-3, 3e-3], tmp_path / "resumed", progress=False) == card
    assert counts == {"steps": 0, "evals": 0}  # a finished grid computes nothing
    for d in ("lr-0.001", "lr-0.003", "."):
        a = load_file(str(tmp_path / "straight" / d / "model.safetensors"))
        b = load_file(str(tmp_path / "resumed" / d / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), d
    assert json.loads((tmp_path / "straight" / "grid.json").read_text()) == card["grid"]
    with pytest.raises(vitlens.VitlensError, match="listed twice"):
        train_grid(cfg, [1e-3, 0.001], tmp_path / "dup", progress=False)
