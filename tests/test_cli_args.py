"""Numbers and devices on the command line and in `TrainConfig`: every number is checked against its range when the
arguments are read, and a bad one is one line on stderr naming the flag and the allowed range (exit 2, no traceback,
no file written). The same ranges guard `TrainConfig(...)` in the Python API, with the same words."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.configs import variant_config
from vitkit.errors import UsageError
from vitkit.options import Range, device_name
from vitkit.training.config import FIELDS, TrainConfig, load_recipe

REPO = Path(__file__).resolve().parents[1]
CKPT, IMAGE = "m.safetensors", "x.png"  # never read: the arguments fail first

# (arguments, the flag, the range as the message writes it)
CASES = [
    # vitkit train / finetune: flags made from TrainConfig's fields
    (["train", "--ema-decay", "1.5"], "--ema-decay", "in [0, 1), got 1.5"),
    (["train", "--warmup-steps", "-3"], "--warmup-steps", ">= 0, got -3"),
    (["train", "--mixup-alpha", "-1"], "--mixup-alpha", ">= 0, got -1.0"),
    (["train", "--threads", "-1"], "--threads", ">= 0, got -1"),
    (["train", "--lr", "0"], "--lr", "> 0, got 0.0"),
    (["train", "--lr", "nan"], "--lr", "finite number > 0"),
    (["train", "--batch-size", "0"], "--batch-size", ">= 1, got 0"),
    (["train", "--dropout", "1"], "--dropout", "in [0, 1), got 1.0"),
    (["train", "--label-smoothing", "-0.1"], "--label-smoothing", "in [0, 1)"),
    (["train", "--mix-prob", "1.5"], "--mix-prob", "in [0, 1], got 1.5"),
    (["train", "--randaugment-magnitude", "31"], "--randaugment-magnitude", "in [0, 30], got 31"),
    (["train", "--crop-min-area", "0"], "--crop-min-area", "in (0, 1], got 0.0"),
    (["train", "--num-workers", "-2"], "--num-workers", ">= -1, got -2"),
    (["train", "--eval-every", "-5"], "--eval-every", ">= -1, got -5"),
    (["train", "--keep-checkpoints", "-1"], "--keep-checkpoints", ">= 0"),
    (["train", "--beta2", "1"], "--beta2", "in [0, 1)"),
    (["train", "--set", "ema_decay=2"], "--ema-decay", "in [0, 1), got 2.0"),
    (["train", "--device", "gpu"], "--device", "auto, cpu, cuda, cuda:N or mps"),
    (["finetune", "--drop-path", "1.5", "--init-from", CKPT], "--drop-path", "in [0, 1), got 1.5"),
    (["finetune", "--epochs", "0", "--init-from", CKPT], "--epochs", "> 0, got 0.0"),
    # predict, eval, inspect, bench, models: argparse types of vitkit/commands/_args.py
    (["predict", CKPT, IMAGE, "--batch-size", "0"], "--batch-size", ">= 1, got 0"),
    (["predict", CKPT, IMAGE, "--top-k", "0"], "--top-k", ">= 1, got 0"),
    (["predict", CKPT, IMAGE, "--num-heads", "-4"], "--num-heads", ">= 1, got -4"),
    (["predict", CKPT, IMAGE, "--device", "gpu"], "--device", "auto, cpu, cuda, cuda:N or mps"),
    (["eval", "--checkpoint", CKPT, "--batch-size", "0"], "--batch-size", ">= 1, got 0"),
    (["eval", "--checkpoint", CKPT, "--val-fraction", "1.5"], "--val-fraction", "in (0, 1), got 1.5"),
    (["eval", "--checkpoint", CKPT, "--max-bad-fraction", "2"], "--max-bad-fraction", "in [0, 1], got 2.0"),
    (["eval", "--checkpoint", CKPT, "--num-workers", "-2"], "--num-workers", ">= -1, got -2"),
    (["eval", "--checkpoint", CKPT, "--few-shot-draws", "0"], "--few-shot-draws", ">= 1, got 0"),
    (["eval", "--checkpoint", CKPT, "--device", "gpu"], "--device", "auto, cpu, cuda, cuda:N or mps"),
    (["inspect", "attention", CKPT, IMAGE, "--batch-size", "0"], "--batch-size", ">= 1, got 0"),
    (["inspect", "attention", CKPT, IMAGE, "--device", "tpu"], "--device", "auto, cpu, cuda, cuda:N or mps"),
    (["inspect", "distance", CKPT, "--data", "d", "--num-images", "0"], "--num-images", ">= 1, got 0"),
    (["inspect", "distance", CKPT, "--data", "d", "--seed", "-1"], "--seed", ">= 0, got -1"),
    (["inspect", "filters", CKPT, "--components", "0"], "--components", ">= 1, got 0"),
    (["bench", "--repeats", "0"], "--repeats", ">= 1, got 0"),
    (["bench", "--warmup", "-1"], "--warmup", ">= 0, got -1"),
    (["bench", "--threads", "-1"], "--threads", ">= 0, got -1"),
    (["bench", "--batch-size", "0"], "--batch-size", ">= 1, got 0"),
    (["bench", "--device", "gpu"], "--device", "auto, cpu, cuda, cuda:N or mps"),
    (["models", "--image-size", "0"], "--image-size", ">= 1, got 0"),
    (["models", "--num-classes", "-1"], "--num-classes", ">= 0, got -1"),
]
if not torch.cuda.is_available():
    CASES += [(["predict", CKPT, IMAGE, "--device", "cuda"], "--device", "this machine has no CUDA device"),
              (["eval", "--checkpoint", CKPT, "--device", "cuda:1"], "--device", "this machine has no CUDA device")]


def run_main(argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits by itself
        code = e.code
    return code, capsys.readouterr().err


def test_every_bad_number_is_one_line_naming_the_flag_and_range(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    failures = []
    for argv, flag, allowed in CASES:
        code, err = run_main(argv, capsys)
        lines = err.strip().splitlines()
        if code != 2 or len(lines) != 1 or flag not in err or allowed not in err or "Traceback" in err:
            failures.append(f"{argv}: exit {code}, stderr {err!r}")
    assert not failures, "\n".join(failures)
    assert not list(tmp_path.iterdir())  # nothing written: not a run folder, not an output


def test_a_bad_number_and_a_bad_device_in_real_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for argv, expected in [
        (["predict", CKPT, IMAGE, "--batch-size", "0"],
         "vitkit predict: error: argument --batch-size: must be >= 1, got 0 (see vitkit predict --help)\n"),
        (["train", "--ema-decay", "1.5"],
         "vitkit: error: invalid training config: ema_decay (--ema-decay) must be in [0, 1), got 1.5\n"),
        (["train", "--device", "gpu"],
         "vitkit: error: invalid training config: device (--device) not a device; choose auto, cpu, cuda, cuda:N "
         "or mps, got 'gpu'\n"),
    ]:
        result = subprocess.run([sys.executable, "-m", "vitkit", *argv], capture_output=True, text=True,
                                cwd=tmp_path, env=env)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", expected), argv
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- Python API
def test_train_config_checks_ranges_with_the_command_lines_words(capsys):
    with pytest.raises(UsageError) as raised:
        TrainConfig(ema_decay=1.5)
    assert str(raised.value) == "invalid training config: ema_decay (--ema-decay) must be in [0, 1), got 1.5"
    code, err = run_main(["train", "--ema-decay", "1.5"], capsys)
    assert code == 2 and err == f"vitkit: error: {raised.value}\n"
    for changes, words in [(dict(warmup_steps=-3), "warmup_steps (--warmup-steps) must be >= 0, got -3"),
                           (dict(batch_size=0), "batch_size (--batch-size) must be >= 1, got 0"),
                           (dict(batch_size=2.5), "must be a whole number >= 1, got 2.5"),
                           (dict(lr=float("inf")), "lr (--lr) must be a finite number > 0, got inf"),
                           (dict(mixup_alpha="lots"), "mixup_alpha (--mixup-alpha) must be a number >= 0"),
                           (dict(device="gpu"), "device (--device) not a device")]:
        with pytest.raises(UsageError, match=re.escape(words)):
            TrainConfig(**changes)
    with pytest.raises(ValueError, match="ema_decay"):  # replace() builds a new config: checked as well
        TrainConfig().replace(ema_decay=-0.5)
    assert TrainConfig(device="CUDA:1").device == "cuda:1"  # spelling checked; whether the machine has it: later
    assert TrainConfig(ema_decay=0.9999, threads=0, eval_every=-1, num_workers=-1, steps=None).ema_decay == 0.9999


def test_a_recipe_with_a_value_out_of_range_names_it(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[optim]\nlr = 0.1\nwarmup_steps = -3\n")
    with pytest.raises(UsageError, match=r"warmup_steps \(--warmup-steps\) must be >= 0, got -3"):
        load_recipe(str(recipe))


def test_every_number_field_has_a_range():
    hints = typing.get_type_hints(TrainConfig)
    numeric = [name for name in FIELDS if {int, float} & set(typing.get_args(hints[name]) or (hints[name],))]
    assert len(numeric) > 40
    missing = [name for name in numeric if "range" not in FIELDS[name].metadata]
    assert not missing, missing
    for f in dataclasses.fields(TrainConfig):  # every default is inside its own range
        if "range" in f.metadata and f.default is not None:
            assert f.metadata["range"].problem(f.default) is None, f.name


def test_range_words():
    assert Range(0, 1, hi_open=True).problem(1.0) == "must be in [0, 1), got 1.0"
    assert Range(0, 1, hi_open=True).problem(0.0) is None
    assert Range(0, lo_open=True).problem(0) == "must be > 0, got 0"
    assert Range(-1, integer=True).problem(-1) is None
    assert Range(1, integer=True).problem(True) == "must be a whole number >= 1, got True"
    assert device_name(" Cuda:0 ") == "cuda:0" and device_name("mps") == "mps"
    with pytest.raises(UsageError, match="not a device; choose auto, cpu, cuda, cuda:N or mps"):
        device_name("cuda:x")


# ---------------------------------------------------------------------------------------------- --resume
def test_resume_given_a_file_or_a_plain_folder(tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"")
    code, err = run_main(["train", "--resume", run / "model.safetensors"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Not a directory" not in err
    assert "--resume takes a run folder (runs/NAME) or one of its checkpoint folders" in err
    assert f"{run / 'model.safetensors'} is a file" in err
    code, err = run_main(["train", "--resume", run], capsys)
    assert code == 2 and f"{run} is a folder without the run's config.json" in err


# ------------------------------------------------------------------------------------------ model names
def test_model_names_in_any_case_and_suggestions():
    assert variant_config("vit-b/16").name == "ViT-B/16"
    assert variant_config("VIT-TI/4").patch_size == (4, 4)
    assert variant_config("r50+vit-b/16").name == "R50+ViT-B/16"
    assert vitkit.create_model("vit-s/32", depth=1, num_classes=3).config.name == "ViT-S/32"
    with pytest.raises(ValueError, match=r"unknown model 'ViT-B16'; did you mean ViT-B/16") as raised:
        variant_config("ViT-B16")
    assert "ViT-<Ti|S|B|L|H>/<patch>" in str(raised.value)
    with pytest.raises(ValueError, match=r"unknown model 'resnet' \(known: ViT-Ti/16"):
        variant_config("resnet")


def test_models_table_leaves_out_what_does_not_fit(capsys):
    assert main(["models", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if "ViT-" in line.split()[0]]
    assert rows == [m for m in vitkit.list_models() if m != "ViT-H/14"]
    assert "not at 32 px: ViT-H/14:" in out and "multiple of the effective patch size (14, 14)" in out
    assert "ViT-Ti/4" in out.splitlines()[-1]  # the footer: any ViT-<size>/<patch> is accepted
    assert main(["models", "vit-ti/4", "--image-size", "16"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["ViT-Ti/4", "192"]
    code, err = run_main(["models", "vit-x/16"], capsys)
    assert code == 2 and "did you mean" in err and err.count("\n") == 1
    code, err = run_main(["models", "ViT-H/14", "--image-size", "32"], capsys)
    assert code == 2 and "no variant asked for fits it" in err


def test_misspelt_choices_are_one_line_and_posemb_none_is_a_value(tmp_path, capsys):
    """"none" is a position-embedding choice (no position embeddings), not "unset"; misspelt choices whose
    field may be unset name the choices instead of failing on the unset one."""
    from vitkit.training.config import parse_value

    assert parse_value("posemb", "none") == "none" and parse_value("posemb", "null") is None
    assert parse_value("pool", "none") is None
    assert main(["train", "--posemb", "none", "--print-config"]) == 0
    assert '"posemb": "none"' in capsys.readouterr().out
    recipe = tmp_path / "r.toml"
    recipe.write_text('posemb = "none"\n')
    assert load_recipe(recipe).posemb == "none"
    for flag, value, allowed in (("--pool", "avg", "token, gap, map"), ("--interpolation", "bicubix", "bilinear"),
                                 ("--resample-method", "foo", "bicubic-antialias")):
        assert main(["train", flag, value, "--print-config"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "expected one of" in err and allowed in err, err


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".."])
def test_a_run_name_is_one_folder_inside_out_dir(tmp_path, capsys, name):
    assert main(["train", "--out-dir", str(tmp_path / "runs"), "--name", name, "--print-config"]) == 2
    assert "must be one folder name inside out_dir" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("flags, words", [
    (["--mix-prob", "0.5"], "mix_prob=0.5 (--mix-prob) has no effect without Mixup or CutMix"),
    (["--crop", "inception", "--crop-padding", "8"], "has no effect without --crop pad_crop"),
    (["--randaugment-magnitude", "5"], "has no effect without RandAugment"),
    (["--val-split", "none", "--eval-every", "5"], "eval_every=5 (--eval-every) has no effect without a validation"),
    (["--val-split", "none", "--val-per-class", "2"], "has no effect without a hold-out"),
    (["--ema-warmup"], "has no effect without an EMA of the weights"),
    (["--data", "digits", "--shuffle-buffer", "10"], "has no effect without data given as tar shards"),
])
def test_a_setting_with_no_effect_here_is_refused(capsys, flags, words):
    assert main(["train", *flags, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert main(["train", "--mixup-alpha", "0.2", "--mix-prob", "0.5", "--print-config"]) == 0  # with its partner
