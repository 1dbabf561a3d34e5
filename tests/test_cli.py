"""The command line: the models table, convert, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

import vitkit
from vitkit.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vitkit", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "ViT-B/16" in out and "86,567,656" in out and "35.1" in out
    assert "R50+ViT-B/16" in out and "98,659,112" in out
    rows = [line.split()[0] for line in out.splitlines() if "ViT-" in line.split()[0]]  # the footer names ViT-Ti/4
    assert rows == vitkit.list_models()


def test_convert_between_formats(tmp_path, jax_fixtures, capsys):
    src = jax_fixtures / "vit_token.npz"
    assert main(["convert", src, tmp_path / "m.safetensors"]) == 0
    assert main(["convert", tmp_path / "m.safetensors", tmp_path / "hf", "--to", "hf"]) == 0
    assert main(["convert", tmp_path / "hf", tmp_path / "t.pth", "--to", "timm"]) == 0
    assert main(["convert", tmp_path / "t.pth", tmp_path / "back.npz", "--to", "google", "--num-heads", "3"]) == 0
    original, back = np.load(src), np.load(tmp_path / "back.npz")
    for key in original.files:
        np.testing.assert_array_equal(original[key], back[key], err_msg=key)
    io = np.load(jax_fixtures / "vit_token_io.npz")
    x = torch.from_numpy(io["images_nhwc"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        a = vitkit.load(src)(x)
        b = vitkit.load(tmp_path / "hf")(x)  # transformers' numerics: tanh GELU recorded, eps 1e-6 kept
    assert torch.allclose(a, b, rtol=0, atol=1e-6)


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    for args in (["convert", tmp_path / "missing.npz", tmp_path / "o.safetensors"],
                 ["convert", bad, tmp_path / "o.safetensors"],
                 ["models", "--image-size", "abc"],
                 ["no-such-command"]):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert 1 <= len(result.stderr.strip().splitlines()) <= 3, result.stderr
    assert not (tmp_path / "o.safetensors").exists()
