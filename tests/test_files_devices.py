"""vitlens.files (hashing, atomic writes) and vitlens.devices (the one device rule)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import vitlens
from vitlens.devices import resolve_device
from vitlens.files import atomic_write, atomic_write_json, sha256_bytes, sha256_file


def test_sha256_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=1000) == hashlib.sha256(data).hexdigest() == sha256_bytes(data)


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = atomic_write_json(tmp_path / "sub" / "a.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1} and path.read_text() == json.dumps({"x": 1}, indent=2)

    def half_then_crash(f):
        f.write(b'{"x": ')
        raise KeyboardInterrupt  # a run killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary file left behind


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(vitlens.InputError, match="not valid"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(vitlens.InputError, match="CUDA is not available"):
            resolve_device("cuda:0")


@pytest.mark.gpu
def test_explainer_gives_the_same_map_on_the_gpu():
    model = vitlens.load_model("builtin:cells_vit")
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    cpu = vitlens.get_explainer("chefer2021", model)(x)
    gpu = vitlens.get_explainer("chefer2021", model.to(resolve_device("cuda")))(x)
    model.to("cpu")
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-6)
