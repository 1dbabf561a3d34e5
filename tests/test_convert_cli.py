"""Where `vitkit convert` and `vitkit export` write: the format from the output's suffix (a contradicting --to or
--format refused), no overwrite without --force, an HF folder only into a new, empty or (forced) HF model folder,
no parent folder created, and nothing half written. Every refusal must exit 2 with one line on stderr and leave
every file and folder as it was (names, bytes and modification times); two run as real `python -m vitkit`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vitkit
from vitkit.checkpoints.google_npz import to_google
from vitkit.cli import main
from vitkit.export import export_onnx

from conftest import randomize_


def tiny(seed=0, **options):
    model = vitkit.create_model("ViT-Ti/16", image_size=32, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64,
                                num_classes=3, **options)
    return randomize_(model, seed=seed).eval()


def snapshot(root: Path) -> dict:
    """Every entry under `root` (hidden ones too): its kind, bytes and modification time."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        state[str(path.relative_to(root))] = ("dir", st.st_mtime_ns) if path.is_dir() else \
            ("file", st.st_mtime_ns, path.read_bytes())
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    vitkit.save(tiny(), root / "m.safetensors")
    vitkit.save(tiny(num_reg_tokens=2), root / "reg.safetensors")  # no Google .npz can hold register tokens
    vitkit.save(tiny(), root / "taken.safetensors")
    (root / "taken.onnx").write_bytes(b"an earlier export")
    (root / "m.onnx").write_bytes(b"an earlier export, at the default name")
    (root / "plainfile").write_bytes(b"a file without a suffix")
    (root / "images").mkdir()
    (root / "images" / "cat.png").write_bytes(b"a picture of a cat")
    (root / "folder.safetensors").mkdir()
    assert main(["convert", root / "m.safetensors", root / "hf"]) == 0  # an HF folder vitkit wrote
    return root


def refusals(f: Path):
    """(arguments, a piece of the one-line message)."""
    m = f / "m.safetensors"
    return [
        # convert: the format from the suffix
        (["convert", m, f / "out.onnx"], "for ONNX use `vitkit export"),
        (["convert", m, f / "out.pt2"], "for PT2 use `vitkit export"),
        (["convert", m, f / "out.pth"], "pass --to timm or --to torchvision"),
        (["convert", m, f / "out.bin"], "pass --to timm or --to torchvision"),
        (["convert", m, f / "out.pt", "--to", "vitkit"], "--to vitkit contradicts the suffix .pt"),
        (["convert", m, f / "out.npz", "--to", "timm"], "--to timm contradicts the suffix .npz"),
        (["convert", m, f / "out.safetensors", "--to", "google"], "--to google contradicts the suffix .safetensors"),
        (["convert", m, f / "out.safetensors", "--to", "hf"], "--to hf contradicts the suffix .safetensors"),
        (["convert", m, f / "newfolder", "--to", "torchvision"], "a Hugging Face folder, which contradicts --to"),
        (["convert", m, f / "out.txt"], "cannot tell the format from '.txt'"),
        (["convert", f / "reg.safetensors", f / "out.npz"], "out.npz: this model cannot be written as an original"),
        # convert: nothing overwritten, no folder made, no files mixed into a folder
        (["convert", m, f / "taken.safetensors"], "taken.safetensors exists; pass --force"),
        (["convert", m, f / "folder.safetensors", "--force"], "folder.safetensors is a folder"),
        (["convert", m, f / "hf"], "hf holds a Hugging Face model; pass --force"),
        (["convert", m, f / "images"], "images is not empty (it holds cat.png)"),
        (["convert", m, f / "images", "--force"], "images is not empty (it holds cat.png)"),
        (["convert", m, f / "plainfile", "--force"], "plainfile is a file"),
        (["convert", m, f / "nowhere" / "out.safetensors"], "the folder " + str(f / "nowhere") + " does not exist"),
        (["convert", m, f / "nowhere" / "hf"], "does not exist"),
        (["convert", m, f / "taken.safetensors" / "out.npz"], "is not a folder"),
        (["convert", f / "missing.safetensors", f / "out.pth"], "no such file or directory"),  # the input first
        # export
        (["export", m, "-o", f / "out.safetensors"], "checkpoints are written by `vitkit convert`"),
        (["export", m, "-o", f / "out"], "cannot tell the export format"),
        (["export", m, "-o", f / "out.pt2", "--format", "onnx"], "--format onnx contradicts the suffix .pt2"),
        (["export", m, "-o", f / "taken.onnx"], "taken.onnx exists; pass --force"),
        (["export", m], "m.onnx exists; pass --force"),  # the default name, beside the checkpoint
        (["export", m, "-o", f / "images", "--format", "onnx"], "cannot tell the export format"),
        (["export", m, "-o", f / "nowhere" / "out.onnx", "--force"], "does not exist"),
        (["export", f / "missing.safetensors", "-o", f / "out.onnx"], "no such file or directory"),
    ]


def test_refusals_exit_2_with_one_line_and_touch_nothing(files, capsys):
    before = snapshot(files)
    failures = []
    for argv, message in refusals(files):
        code = main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        if not (code == 2 and len(lines) == 1 and lines[0].startswith("vitkit: error: ") and message in lines[0]):
            failures.append(f"{' '.join(map(str, argv))}: exit {code}, stderr {err!r}")
        if snapshot(files) != before:
            failures.append(f"{' '.join(map(str, argv))}: changed the folder")
            before = snapshot(files)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", [0, 14])  # out.onnx by convert; an HF folder into a folder of images
def test_refusals_as_real_processes(files, case):
    argv, message = refusals(files)[case]
    before = snapshot(files)
    env = {**os.environ, "PYTHONPATH": str(Path(vitkit.__file__).parents[1])}
    result = subprocess.run([sys.executable, "-m", "vitkit", *map(str, argv)], capture_output=True, text=True,
                            env=env, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert snapshot(files) == before


def test_npz_output_is_a_google_checkpoint(tmp_path, capsys):
    model = tiny()
    vitkit.save(model, tmp_path / "m.safetensors")
    assert main(["convert", tmp_path / "m.safetensors", tmp_path / "out.npz"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vitkit: warning: ") and "tanh GELU" in err[0]
    want = to_google(model)
    with np.load(tmp_path / "out.npz", allow_pickle=False) as got:
        assert sorted(got.files) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key], np.asarray(want[key]), err_msg=key)


def test_force_replaces_atomically_and_leaves_no_temporaries(tmp_path, capsys):
    first, second = tiny(seed=1), tiny(seed=2)
    vitkit.save(first, tmp_path / "first.safetensors")
    vitkit.save(second, tmp_path / "second.safetensors")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want_first, want_second = first(images), second(images)

    (tmp_path / "empty").mkdir()  # an empty folder takes an HF folder without --force
    assert main(["convert", tmp_path / "first.safetensors", tmp_path / "empty"]) == 0
    assert main(["convert", tmp_path / "first.safetensors", tmp_path / "hf"]) == 0
    assert main(["convert", tmp_path / "second.safetensors", tmp_path / "hf", "--force"]) == 0
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == \
        ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert (tmp_path / "hf").stat().st_mode & 0o777 == (tmp_path / "empty").stat().st_mode & 0o777

    assert main(["convert", tmp_path / "first.safetensors", tmp_path / "t.pth", "--to", "timm"]) == 0
    assert main(["convert", tmp_path / "second.safetensors", tmp_path / "t.pth", "--to", "torchvision",
                 "--force"]) == 0
    assert main(["convert", tmp_path / "first.safetensors", tmp_path / "out.safetensors", "--to", "timm"]) == 0
    assert main(["convert", tmp_path / "second.safetensors", tmp_path / "out.safetensors", "--force"]) == 0
    capsys.readouterr()
    with torch.no_grad():
        assert torch.equal(vitkit.load(tmp_path / "empty")(images), want_first)
        assert torch.allclose(vitkit.load(tmp_path / "hf")(images), want_second, rtol=0, atol=1e-5)
        assert torch.equal(vitkit.load(tmp_path / "t.pth", num_heads=2, pool="token")(images), want_second)
        assert torch.equal(vitkit.load(tmp_path / "out.safetensors")(images), want_second)
    assert vitkit.load(tmp_path / "out.safetensors").config == second.config  # vitkit's own format, not timm's
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_writes_nothing_when_the_check_fails(tmp_path):
    model = tiny()
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the previous export")
    with pytest.raises(ValueError, match="nothing written"):
        export_onnx(model, target, tolerance=-1.0)  # every relative error exceeds it
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_pt2_by_suffix_and_force(tmp_path, capsys):
    model = tiny()
    vitkit.save(model, tmp_path / "m.safetensors")
    (tmp_path / "m.pt2").write_bytes(b"old")
    assert main(["export", tmp_path / "m.safetensors", "--format", "pt2"]) == 2  # the default name is taken
    assert main(["export", tmp_path / "m.safetensors", "--format", "pt2", "--static-size", "--force"]) == 0
    assert "(pt2, fp32)" in capsys.readouterr().out
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(program(images), model(images), rtol=0, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2", "m.safetensors"]


def test_python_api_keeps_its_behaviour(tmp_path):
    """The checks belong to the command line: `vitkit.save` still replaces a file and makes missing folders."""
    second = tiny(seed=2)
    vitkit.save(tiny(seed=1), tmp_path / "a" / "b" / "m.safetensors")
    vitkit.save(second, tmp_path / "a" / "b" / "m.safetensors")
    loaded = vitkit.load(tmp_path / "a" / "b" / "m.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in second.state_dict().items())


def test_export_default_names():
    from vitkit.commands.export import default_output

    assert default_output("vit_b16_augreg_in21k", "onnx") == Path("vit_b16_augreg_in21k.onnx")
    assert default_output("hf-hub:google/vit-base-patch16-224@main", "pt2") == Path("vit-base-patch16-224.pt2")
    assert default_output("https://example.com/ckpt/ViT-B_16.npz", "onnx") == Path("ViT-B_16.onnx")


def test_convert_and_export_take_a_run_folder(tmp_path, capsys):
    model = tiny()
    run = tmp_path / "run"
    run.mkdir()
    vitkit.save(model, run / "model.safetensors")
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    assert main(["convert", run, tmp_path / "out.safetensors"]) == 0
    assert main(["export", run, "--format", "pt2", "--static-size"]) == 0  # beside the folder, by its name
    assert (tmp_path / "run.pt2").is_file()
    loaded = vitkit.load(tmp_path / "out.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
