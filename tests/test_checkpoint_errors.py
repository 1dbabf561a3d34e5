"""Bad checkpoint files: each gets a CheckpointError that names the file, the key and the shapes."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vitkit
from vitkit import CheckpointError


@pytest.fixture
def npz(tmp_path, jax_fixtures):
    return dict(np.load(jax_fixtures / "vit_token.npz"))


def _save_npz(path, arrays):
    np.savez(path, **arrays)
    return path


def test_missing_tensor(tmp_path, npz):
    del npz["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"]
    path = _save_npz(tmp_path / "missing.npz", npz)
    with pytest.raises(CheckpointError) as e:
        vitkit.load(path)
    assert str(path) in str(e.value) and "Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias" in str(e.value)
    assert "missing" in str(e.value)


def test_unexpected_tensor(tmp_path, npz):
    npz["Transformer/encoderblock_0/extra/kernel"] = np.ones((2, 2), np.float32)
    path = _save_npz(tmp_path / "extra.npz", npz)
    with pytest.raises(CheckpointError, match="unexpected.*Transformer/encoderblock_0/extra/kernel"):
        vitkit.load(path)


def test_misshaped_tensor_names_expected_and_found(tmp_path, npz):
    npz["Transformer/encoderblock_2/MlpBlock_3/Dense_1/kernel"] = np.ones((384, 95), np.float32)
    path = _save_npz(tmp_path / "shape.npz", npz)
    with pytest.raises(CheckpointError) as e:
        vitkit.load(path)
    msg = str(e.value)
    assert "shape.npz" in msg and "Dense_1/kernel" in msg and "(384, 96)" in msg and "(384, 95)" in msg


def test_misshaped_timm_tensor(tmp_path):
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=32, depth=2)
    vitkit.save(model, tmp_path / "t.safetensors", format="timm")
    from safetensors.torch import load_file

    sd = load_file(tmp_path / "t.safetensors")
    sd["blocks.1.attn.proj.weight"] = torch.zeros(192, 190)
    save_file(sd, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=r"bad.safetensors, key 'blocks.1.attn.proj.weight': expected shape "
                                              r"\(192, 192\), found \(192, 190\)"):
        vitkit.load(tmp_path / "bad.safetensors")


def test_vitkit_file_with_wrong_shape(tmp_path):
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=32, depth=1)
    vitkit.save(model, tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    sd["head.weight"] = torch.zeros(4, 192)
    save_file(sd, tmp_path / "m2.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match=r"head.weight.*expected shape \(3, 192\), found \(4, 192\)"):
        vitkit.load(tmp_path / "m2.safetensors")


def test_unknown_layout(tmp_path):
    save_file({"encoder.weight": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="unknown layout.*encoder.weight"):
        vitkit.load(tmp_path / "other.safetensors")
    np.savez(tmp_path / "other.npz", foo=np.zeros(3, np.float32))
    with pytest.raises(CheckpointError, match="unknown layout"):
        vitkit.load(tmp_path / "other.npz")


def test_unknown_block_naming(tmp_path, npz):
    renamed = {k.replace("MultiHeadDotProductAttention_1", "SelfAttention"): v for k, v in npz.items()}
    with pytest.raises(CheckpointError, match="unknown block layout"):
        vitkit.load(_save_npz(tmp_path / "renamed.npz", renamed))


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pth"])
def test_truncated_files(tmp_path, jax_fixtures, suffix):
    model = vitkit.load(jax_fixtures / "vit_token.npz")
    good = tmp_path / f"good{suffix}"
    if suffix == ".npz":
        vitkit.save(model, good, format="google")
    elif suffix == ".pth":
        vitkit.save(model, good, format="timm")
    else:
        vitkit.save(model, good)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 7, 10):
        bad = tmp_path / f"cut{cut}{suffix}"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as e:
            vitkit.load(bad)
        assert bad.name in str(e.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pth"])
def test_garbage_files(tmp_path, suffix):
    bad = tmp_path / f"garbage{suffix}"
    bad.write_bytes(b"\x00\x01 this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbage"):
        vitkit.load(bad)
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        vitkit.load(empty)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    bad = tmp_path / "evil.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(1), "payload": _Exploit(str(target))}, bad,
               pickle_protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        vitkit.load(bad)
    assert not target.exists()


def test_npz_with_pickled_objects_is_refused(tmp_path):
    bad = tmp_path / "objects.npz"
    np.savez(bad, **{"embedding/kernel": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match="refused: array stored as pickled objects"):
        vitkit.load(bad)


def test_integer_tensor_is_refused(tmp_path, npz):
    npz["head/bias"] = np.arange(10, dtype=np.int64)
    with pytest.raises(CheckpointError, match="head/bias.*floating-point"):
        vitkit.load(_save_npz(tmp_path / "int.npz", npz))


def test_corrupt_member_of_npz(tmp_path, npz):
    path = _save_npz(tmp_path / "ok.npz", npz)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = "head/kernel.npy"
    members[name] = members[name][:60]  # a header with no data
    with zipfile.ZipFile(tmp_path / "corrupt.npz", "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    with pytest.raises(CheckpointError, match="corrupt.npz"):
        vitkit.load(tmp_path / "corrupt.npz")


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        vitkit.load(tmp_path / "nothing.safetensors")
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown file type '.h5'"):
        vitkit.load(tmp_path / "weights.h5")


def test_hf_folder_problems(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        vitkit.load(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        vitkit.load(folder)
    (folder / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(CheckpointError, match="no weights"):
        vitkit.load(folder)
    (folder / "config.json").write_text('{"model_type": "swin"}')
    save_file({"x": torch.zeros(1)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="model_type 'swin'"):
        vitkit.load(folder)


def test_unsupported_timm_features_are_named(tmp_path):
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=32, depth=1)
    from vitkit.checkpoints.timm import to_timm

    sd = {k: v.contiguous() for k, v in to_timm(model).items()}
    sd["blocks.0.attn.q_norm.weight"] = torch.ones(64)  # LayerScale loads now (layer_scale); QK norm does not
    save_file(sd, tmp_path / "qk.safetensors")
    with pytest.raises(CheckpointError, match="key 'blocks.0.attn.q_norm.weight': unsupported timm model: QK norm"):
        vitkit.load(tmp_path / "qk.safetensors")
    sd.pop("blocks.0.attn.q_norm.weight")
    sd["blocks.0.ls1.gamma"] = torch.ones(192)  # half of LayerScale: the missing half is named
    save_file(sd, tmp_path / "ls.safetensors")
    with pytest.raises(CheckpointError, match="key 'blocks.0.ls2.gamma': missing tensor"):
        vitkit.load(tmp_path / "ls.safetensors")


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=32, depth=1)
    path = tmp_path / "m.safetensors"
    vitkit.save(model, path)
    before = path.read_bytes()

    import vitkit.checkpoints.io as io

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        vitkit.save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


def test_pickle_module_not_used_for_npz(tmp_path, npz, monkeypatch):
    """Loading an .npz never reaches the pickle module."""
    path = _save_npz(tmp_path / "ok.npz", npz)

    def forbidden(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    vitkit.load(path)


def test_saved_files_get_the_usual_mode(tmp_path):
    """Atomic writes go through a private temporary file, but the result has the mode open() would give."""
    import os

    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=32, depth=1)
    path = vitkit.save(model, tmp_path / "m.safetensors")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
