"""The command line under bad input: unknown flags, values of the wrong type or outside the choices, missing
arguments, missing files and damaged files, for every command. Each must end with exit code 2 and one or two
lines on stderr that say what is wrong, never a traceback. Most cases run in this process (`vitkit.cli.main`);
two run as real `python -m vitkit` processes to check the whole path, interpreter exit included."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import vitkit
from vitkit.cli import main


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = vitkit.create_model("ViT-Ti/4", num_classes=3, image_size=8, patch_size=4, width=32, depth=1,
                                num_heads=2, mlp_dim=64)
    vitkit.save(model, root / "good.safetensors")
    (root / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    (root / "cut.safetensors").write_bytes((root / "good.safetensors").read_bytes()[:300])
    torch.save({"patch_embed.proj.weight": torch.zeros(1), "x": _Exploit(str(root / "pwned"))}, root / "evil.pth")
    (root / "notes.png").write_text("not an image")
    return root


def cases(f):
    """(arguments, a piece of the expected message); `f` is the folder of the fixture's files."""
    good, garbage, cut, evil, missing = (f / "good.safetensors", f / "garbage.safetensors", f / "cut.safetensors",
                                         f / "evil.pth", f / "missing.safetensors")
    return [
        # unknown flags
        (["train", "--no-such-flag"], "vitkit train: error: unrecognized arguments: --no-such-flag"),
        (["finetune", "--lr", "1", "--bogus", "3"], "vitkit finetune: error: unrecognized arguments: --bogus 3"),
        (["eval", "--checkpoint", good, "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["predict", good, f / "notes.png", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["convert", good, f / "o.pth", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["inspect", "posemb", good, "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["inspect", "no-such-figure", good], "invalid choice: 'no-such-figure'"),
        (["bench", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["export", good, "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["models", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
        # values of the wrong type, outside the choices, missing
        (["train", "--steps", "abc"], "option steps: cannot read 'abc' as int"),
        (["train", "--deterministic", "perhaps"], "option deterministic: cannot read 'perhaps' as bool"),
        (["train", "--on-nonfinite", "ignore"], "on_nonfinite='ignore', expected one of stop, skip"),
        (["train", "--std", "0,0,0"], "std must be positive"),
        (["train", "--set", "steps"], "--set expects key=value"),
        (["train", "--set", "stepz=3"], "unknown training option 'stepz'"),
        (["finetune", "--lr", "fast", "--init-from", good], "option lr: cannot read 'fast' as float"),
        (["eval", "--checkpoint", good, "--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
        (["eval", "--checkpoint", good, "--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["eval"], "MODEL is required"),
        (["predict", good, f / "notes.png", "--top-k", "x"], "argument --top-k: invalid int value: 'x'"),
        (["predict"], "the following arguments are required: MODEL, IMAGE"),
        (["convert", good, f / "o.pth", "--num-heads", "x"], "argument --num-heads: invalid int value: 'x'"),
        (["convert", good, f / "o.pth", "--to", "keras"], "argument --to: invalid choice: 'keras'"),
        (["inspect", "distance", good, "--data", "digits", "--num-images", "x"], "invalid int value: 'x'"),
        (["inspect", "attention", good], "the following arguments are required: images"),
        (["bench", "--repeats", "x"], "argument --repeats: invalid int value: 'x'"),
        (["export", good, "--opset", "x"], "argument --opset: invalid int value: 'x'"),
        (["export", good, "--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
        (["models", "--image-size", "x"], "argument --image-size: invalid int value: 'x'"),
        # missing files
        (["train", "--data", f / "nowhere"], "no such folder"),
        (["train", "--resume", f / "no-run"], "no such run or checkpoint folder"),
        (["train", "--recipe", f / "none.toml"], "no recipe"),
        (["finetune", "--init-from", missing, "--data", "digits"], "no such file or folder"),
        (["eval", "--checkpoint", missing], "no such file or directory"),
        (["eval", "--checkpoint", good, "--data", f / "nowhere"], "no such folder"),
        (["predict", missing, f / "notes.png"], "no such file or directory"),
        (["predict", good, f / "missing.png"], "missing.png: no such file"),
        (["convert", missing, f / "o.pth"], "no such file or directory"),
        (["inspect", "posemb", missing], "no such file or directory"),
        (["inspect", "attention", good, f / "missing.png"], "missing.png: no such file"),
        (["bench", "--checkpoint", missing, "--peers"], "no such file or directory"),
        (["export", missing], "no such file or directory"),
        # damaged and untrusted files
        (["eval", "--checkpoint", garbage], "not a readable safetensors file"),
        (["predict", cut, f / "notes.png"], "not a readable safetensors file"),
        (["predict", good, f / "notes.png"], "notes.png: not a readable image"),
        (["convert", evil, f / "o.safetensors"], "refused"),
        (["inspect", "filters", cut], "not a readable safetensors file"),
        (["bench", "--checkpoint", garbage, "--peers"], "not a readable safetensors file"),
        (["export", evil], "refused"),
        (["train", "--init-from", garbage, "--data", "digits"], "not a readable safetensors file"),
    ]


def run_main(argv) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse exits by itself
        code = e.code
    return code


def test_every_command_fails_in_one_or_two_lines_with_exit_code_2(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    all_cases = cases(files)
    commands = {argv[0] for argv, _ in all_cases}
    assert commands >= {"train", "finetune", "eval", "predict", "convert", "inspect", "bench", "export", "models"}
    failures = []
    for argv, message in all_cases:
        code = run_main(argv)
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        ok = (code == 2 and 1 <= len(lines) <= 2 and "Traceback" not in captured.err
              and lines[0].startswith("vitkit") and "error: " in lines[0] and message in captured.err)
        if not ok:
            failures.append(f"{' '.join(map(str, argv))}: exit {code}, stderr {captured.err!r}")
    assert not failures, "\n".join(failures)
    assert not (files / "pwned").exists() and not (files / "o.pth").exists() and not (files / "o.safetensors").exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))


def test_a_real_process_exits_2_with_one_line(tmp_path):
    """(A missing file in a real process: tests/test_cli.py and tests/test_train.py.)"""
    result = subprocess.run([sys.executable, "-m", "vitkit", "train", "--steps", "2", "--no-such-flag"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr == ("vitkit train: error: unrecognized arguments: --no-such-flag "
                             "(see vitkit train --help)\n")
