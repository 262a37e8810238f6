"""The model adapter: faithful recording, leaving the model as found, loading and its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vitlens
from vitlens.explainers.attention import attention_pass
from vitlens.explainers.coverage import fast_params

from .conftest import VIT_ZOO, images_for, zoo_model


def _hook_count(module: nn.Module) -> int:
    n = 0
    for m in module.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_forward_hooks_with_kwargs", {}))
    return n


def _state(model: vitlens.Model):
    mod = model.module
    fused = [getattr(m, "fused_attn", None) for m in mod.modules()]
    attn_impl = getattr(getattr(mod, "config", None), "_attn_implementation", None)
    return (
        [m.training for m in mod.modules()],
        [p.requires_grad for p in mod.parameters()],
        fused,
        attn_impl,
        _hook_count(mod),
    )


@pytest.mark.parametrize("zoo", sorted(VIT_ZOO))
@pytest.mark.parametrize("fused", [True, False])
def test_recording_gives_identical_logits_and_probabilities(zoo, fused):
    model = zoo_model(zoo)
    mods = [m for m in model.module.modules() if hasattr(m, "fused_attn")]
    saved = [m.fused_attn for m in mods]
    for m in mods:
        m.fused_attn = fused
    try:
        x = images_for(model, batch=2)
        plain = model(x)
        with model.record_attention() as rec, torch.no_grad():
            recorded = model.forward(model.check_images(x))
        assert torch.allclose(plain, recorded, atol=1e-5)
        depth = len(model.attention_modules())
        assert len(rec.attentions) == depth
        n = model.num_prefix_tokens + model.grid_size(tuple(x.shape[-2:]))[0] * model.grid_size(tuple(x.shape[-2:]))[1]
        for a in rec.attentions:
            assert a.shape[0] == 2 and a.shape[-2:] == (n, n)
            assert torch.allclose(a.sum(-1), torch.ones(()), atol=1e-5)  # softmax rows
        assert [m.fused_attn for m in mods] == [fused] * len(mods)
    finally:
        for m, f in zip(mods, saved, strict=True):
            m.fused_attn = f


@pytest.mark.slow
@pytest.mark.parametrize("zoo", ["deit_tiny", "hf_vit", "test_vit"])
def test_model_left_exactly_as_found_after_every_explainer(zoo):
    model = zoo_model(zoo)
    model.module.train()  # a user's model in training mode must come back in training mode
    first = next(model.module.parameters())
    first.requires_grad_(False)
    try:
        before = _state(model)
        x = images_for(model, batch=2)
        eval_maps = {}
        for name in vitlens.applicable_explainers(model):
            eval_maps[name] = vitlens.get_explainer(name, model, **fast_params(name))(x)
            assert _state(model) == before, name
        model.module.eval()
        for name, maps in eval_maps.items():  # explainers ran in eval mode (dropout off) all along
            assert torch.allclose(vitlens.get_explainer(name, model, **fast_params(name))(x), maps, atol=1e-6)
    finally:
        model.module.eval()
        first.requires_grad_(True)


@pytest.mark.parametrize("zoo", ["deit_tiny", "hf_deit_distilled"])
def test_state_restored_when_the_forward_raises(zoo):
    model = zoo_model(zoo)
    before = _state(model)
    blocks = model.attention_modules()

    def boom(*_a, **_k):
        raise RuntimeError("injected failure")

    handle = blocks[-1].register_forward_pre_hook(boom)
    try:
        with pytest.raises(vitlens.InputError, match="injected failure"):
            vitlens.get_explainer("grad_rollout", model)(images_for(model, batch=1))
        with pytest.raises(RuntimeError, match="injected failure"), model.record_attention():
            model.module(images_for(model, batch=1)) if zoo == "deit_tiny" else model.module(
                pixel_values=images_for(model, batch=1)
            )
    finally:
        handle.remove()
    assert _state(model) == before


def test_gradients_of_recorded_attention_match_finite_differences():
    """d y_c / d A from the recording, checked by perturbing one attention entry of the last layer."""
    model = zoo_model("test_vit")
    x = images_for(model, batch=1).double()
    model.module.double()
    try:
        _attns, grads, _logits, _t = attention_pass(model, x, 3, grad=True)
        g = grads[-1][0, 0, 0, 5].item()
        eps = 1e-6
        blk = model.module.blocks[-1].attn

        def shifted(delta):
            def hook(_m, _a, out):
                out = out.clone()
                out[0, 0, 0, 5] += delta
                return out

            h = blk.attn_drop.register_forward_hook(hook)
            try:
                with model.record_attention(), torch.no_grad():
                    return model.forward(x)[0, 3].item()
            finally:
                h.remove()

        fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
        assert abs(fd - g) <= 1e-6 * max(1.0, abs(g))
    finally:
        model.module.float()


def test_grid_comes_from_the_model():
    assert zoo_model("vit_p8_112").grid_size() == (14, 14)
    assert zoo_model("test_vit").grid_size() == (10, 10)
    assert zoo_model("vit_registers").num_prefix_tokens == 5
    assert zoo_model("deit_tiny_distilled").num_prefix_tokens == 2
    assert zoo_model("hf_deit_distilled").num_prefix_tokens == 2
    dyn = vitlens.load_model("timm:test_vit", dynamic_img_size=True)
    maps = vitlens.get_explainer("rollout", dyn)(torch.randn(1, 3, 96, 128))
    assert maps.shape == (1, 6, 8)


def test_checkpoint_round_trip_and_num_classes_inference(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    src = vitlens.load_model("timm:test_vit", num_classes=7)
    x = images_for(src, batch=2)
    save_file(src.module.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.module.state_dict().items()}}, tmp_path / "w.pt")
    for f in ("w.safetensors", "w.pt"):
        loaded = vitlens.load_model("timm:test_vit", checkpoint=tmp_path / f)
        assert loaded.num_classes == 7
        assert torch.allclose(loaded(x), src(x), atol=1e-6)


def test_checkpoint_errors(tmp_path):
    from safetensors.torch import save_file

    sd = vitlens.load_model("timm:test_vit").module.state_dict()
    save_file({k: v for k, v in sd.items() if not k.startswith("blocks.0.")}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(vitlens.ModelError, match="missing"):
        vitlens.load_model("timm:test_vit", checkpoint=tmp_path / "partial.safetensors")
    with pytest.raises(vitlens.ModelError, match="other shapes"):
        vitlens.load_model("timm:test_vit", checkpoint=tmp_path / "partial.safetensors", num_classes=3)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(vitlens.ModelError, match="cannot be read"):
        vitlens.load_model("timm:test_vit", checkpoint=tmp_path / "junk.safetensors")

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(vitlens.ModelError, match="weights-only"):
        vitlens.load_model("timm:test_vit", checkpoint=tmp_path / "evil.pt")
    with pytest.raises(vitlens.ModelError, match="no such file"):
        vitlens.load_model("timm:test_vit", checkpoint=tmp_path / "absent.safetensors")


def test_unknown_specs_and_unsupported_modules():
    with pytest.raises(vitlens.ModelError, match="unknown timm model"):
        vitlens.load_model("timm:vit_does_not_exist")
    with pytest.raises(vitlens.ModelError, match="unknown model source"):
        vitlens.load_model("onnx:foo")
    with pytest.raises(vitlens.ModelError, match="unknown builtin"):
        vitlens.load_model("builtin:nope")
    with pytest.raises(vitlens.ModelError, match="unknown model spec"):
        vitlens.load_model("definitely_not_a_model")
    with pytest.raises(vitlens.ModelError, match="neither"):
        vitlens.load_model(nn.Sequential(nn.Flatten(), nn.Linear(10, 2)))
    with pytest.raises(vitlens.ModelError, match="Hugging Face"):
        vitlens.load_model("hf:/nonexistent/dir")


def test_pretrained_without_cache_says_how_to_provide_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(vitlens.ModelError, match="checkpoint"):
        vitlens.load_model("timm:test_vit", pretrained=True)
    with pytest.raises(vitlens.ModelError, match="cache"):
        vitlens.load_model("torchvision:resnet18", pretrained=True)


def test_hf_model_from_local_directory(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    labels = {0: "a", 1: "b", 2: "c"}
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(tmp_path)
    m = vitlens.load_model(f"hf:{tmp_path}", pretrained=True)
    assert m.class_names == ["a", "b", "c"] and m.grid_size() == (4, 4)
    assert m.preprocessing.mean == (0.5, 0.5, 0.5)
    assert vitlens.get_explainer("rollout", m)(torch.randn(2, 3, 32, 32)).shape == (2, 4, 4)
    cold = vitlens.load_model(f"hf:{tmp_path}", pretrained=False, num_classes=5)
    assert cold.num_classes == 5


def test_cnn_baselines(resnet50):
    assert resnet50.family == "cnn" and resnet50.num_classes == 10
    timm_rn = vitlens.load_model("timm:resnet18", num_classes=4)
    assert vitlens.get_explainer("gradcam", timm_rn)(torch.randn(2, 3, 224, 224)).shape == (2, 7, 7)
    assert vitlens.get_explainer("gradcam", resnet50, layer="layer3")(torch.randn(1, 3, 224, 224)).shape == (1, 14, 14)
    with pytest.raises(vitlens.ExplainerError, match="not found"):
        vitlens.get_explainer("gradcam", resnet50, layer="layer9")


def test_headless_dino_backbone():
    """DINO/MAE checkpoints come without a head (num_classes=0): attention maps work, class-specific
    methods and targets are refused with a message."""
    m = vitlens.load_model("timm:vit_small_patch16_224.dino", seed=0)
    assert m.num_classes == 0
    x = images_for(m, batch=2)
    res = vitlens.get_explainer("rollout", m).explain(x)
    assert res.maps.shape == (2, 14, 14) and res.target.tolist() == [-1, -1]
    with pytest.raises(vitlens.ExplainerError, match="no classification head"):
        vitlens.get_explainer("grad_rollout", m)
    with pytest.raises(vitlens.InputError, match="no classification head"):
        vitlens.get_explainer("rollout", m)(x, target=0)


@pytest.mark.parametrize("zoo", ["deit_tiny", "hf_vit"])
def test_recording_a_subset_of_layers(zoo):
    model = zoo_model(zoo)
    x = model.check_images(images_for(model, batch=2))
    with model.record_attention() as full, torch.no_grad():
        model.forward(x)
    with model.record_attention(layers=[-1, 0]) as part, torch.no_grad():
        model.forward(x)
    assert len(part.attentions) == 2  # in forward order
    assert torch.allclose(part.attentions[0], full.attentions[0], atol=1e-6)
    assert torch.allclose(part.attentions[1], full.attentions[-1], atol=1e-6)
    if zoo == "deit_tiny":  # only the recorded blocks leave the fused kernel
        fused = []
        with model.record_attention(layers=[-1]):
            fused = [m.fused_attn for m in model.attention_modules()]
        assert fused == [True] * 11 + [False]
    with pytest.raises(vitlens.ExplainerError, match="block indices"), model.record_attention(layers=[99]):
        pass
