"""Hidden inputs: a table of bad command lines over every command, each run as a real `python -m vitkit` process.

Every line must end with exit status 2, exactly one line on stderr (naming what is wrong: each row says which
words), no traceback, and no file created, changed or removed in the folder it runs in (names, sizes, modification
times and SHA-256 of every file compared before and after each line). The rows include every case of issue 15.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from cli_processes import REPO, run_vitkit_many

M = "m.safetensors"  # a tiny model of classes a, b, c at 16 px
GPU_WORDS = "not a device; choose auto, cpu, cuda, cuda:N or mps"

# (arguments, words the one stderr line must hold)
TABLE = [
    # ---------------------------------------------------------------------------------------------- models
    (["models", "--image-size", "0"], "--image-size: must be >= 1, got 0"),
    (["models", "--num-classes", "-1"], "--num-classes: must be >= 0, got -1"),
    (["models", "--image-size", "abc"], "invalid int value: 'abc'"),
    (["models", "vit-b16"], "unknown model 'vit-b16'; did you mean ViT-B/16"),
    (["models", "ViT-B/16", "--image-size", "20"], "no variant asked for fits it"),
    (["models", "--pretrained", "zzz-nothing"], "no pre-trained checkpoint matches 'zzz-nothing'"),
    (["models", "--bogus"], "unrecognized arguments: --bogus"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
    # -------------------------------------------------------------------------------------------- download
    (["download", "vit-b16-in21kk"], "not a pre-trained name or URI"),
    (["download", "vit-b16-in21k", "tv-vit-b16-in1k", "--sha256", "00"], "--sha256 checks one file"),
    # --------------------------------------------------------------------------------------------- convert
    (["convert", M, "out.onnx"], "vitkit export MODEL -o out.onnx"),
    (["convert", M, "-o", "out.npz", "--to", "timm"], "--to timm contradicts the suffix .npz"),
    (["convert", M, "-o", "out.safetensors", "--to", "google"], "--to google contradicts the suffix .safetensors"),
    (["convert", M, "-o", "out.xyz"], "cannot tell the format from '.xyz'"),
    (["convert", M, "-o", "out.pth"], "pass --to timm or --to torchvision"),
    (["convert", M, "-o", "exists.safetensors"], "exists.safetensors exists; pass --force to replace it"),
    (["convert", M, "-o", "busy", "--to", "hf"], "busy is not empty (it holds photo.png)"),
    (["convert", M, "-o", "busy", "--to", "hf", "--force"], "busy is not empty (it holds photo.png)"),
    (["convert", M, "-o", "nodir/out.safetensors"], "the folder nodir does not exist"),
    (["convert", M, "b.safetensors", "-o", "a.safetensors"], "the output is given twice"),
    (["convert", M], "-o/--output is required"),
    (["convert", M, "-o", "out.safetensors", "--num-heads", "0"], "--num-heads: must be >= 1, got 0"),
    (["convert", M, "-o", "out.safetensors", "--num-heads", "4"], "--num-heads 4 contradicts it"),
    (["convert", "missing.safetensors", "-o", "out.safetensors"], "missing.safetensors"),
    (["convert", "data/a/notes.txt", "-o", "out.safetensors"], "notes.txt"),
    (["convert", "vit-b16-in21kk", "-o", "out.safetensors"], "did you mean vit-b16-in21k"),
    # ---------------------------------------------------------------------------------------------- export
    (["export", M, "-o", "out.safetensors"], "cannot tell the export format from '.safetensors'"),
    (["export", M, "-o", "out.onnx", "--format", "pt2"], "--format pt2 contradicts the suffix .onnx"),
    (["export", M, "-o", "exists.onnx"], "exists.onnx exists; pass --force to replace it"),
    (["export", M, "-o", "nodir/m.onnx"], "the folder nodir does not exist"),
    (["export", M, "--opset", "5"], "--opset: must be in [18, 23], got 5"),
    (["export", M, "--opset", "0"], "--opset: must be in [18, 23], got 0"),
    (["export", M, "--num-heads", "-2"], "--num-heads: must be >= 1, got -2"),
    (["export", M, "--threads", "-1"], "--threads: must be >= 0, got -1"),
    (["export", "vit-b16-in21kk"], "did you mean vit-b16-in21k"),
    # ----------------------------------------------------------------------------------------------- train
    (["train", "--ema-decay", "1.5"], "ema_decay (--ema-decay) must be in [0, 1), got 1.5"),
    (["train", "--warmup-steps", "-3"], "(--warmup-steps) must be >= 0, got -3"),
    (["train", "--mixup-alpha", "-1"], "(--mixup-alpha) must be >= 0, got -1"),
    (["train", "--threads", "-1"], "(--threads) must be >= 0, got -1"),
    (["train", "--device", "gpu"], "not a device; choose auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    (["train", "--batch-size", "0"], "(--batch-size) must be >= 1, got 0"),
    (["train", "--lr", "nan"], "(--lr) must be a finite number > 0"),
    (["train", "--epochs", "0"], "(--epochs) must be > 0"),
    (["train", "--set", "no_such_key=1"], "no_such_key"),
    (["train", "--recipe", "no-such-recipe"], "no-such-recipe"),
    (["train", "--resume", "runs/x/model.safetensors"], "runs/x/model.safetensors is a file"),
    (["train", "--resume", "runs/x"], "runs/x is a folder without the run's config.json"),
    (["train", "--data", "one", "--smoke"], "only 1 class ('a'); training needs at least 2 classes"),
    (["train", "--data", "texts", "--smoke"], "no"),
    (["train", "--data", "missing", "--smoke"], "--data missing: no such folder"),
    (["train", "--data", "broken", "--smoke"], "not readable images"),
    (["train", "--model", "vit-b16", "--smoke"], "did you mean ViT-B/16"),
    # -------------------------------------------------------------------------------------------- finetune
    (["finetune", "--data", "data", "--smoke"], "vitkit finetune needs --from"),
    (["finetune", "--from", M, "--drop-path", "1.5"], "(--drop-path) must be in [0, 1), got 1.5"),
    (["finetune", "--from", "missing.safetensors", "--data", "data", "--smoke"], "missing.safetensors"),
    # ------------------------------------------------------------------------------------------------ eval
    (["eval", M, "--data", "data", "--device", "gpu"], GPU_WORDS),
    (["eval", M, "--data", "data", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["eval", M, "--data", "data", "--val-fraction", "1.5"], "--val-fraction: must be in (0, 1), got 1.5"),
    (["eval", M, "--data", "data", "--max-bad-fraction", "2"], "--max-bad-fraction: must be in [0, 1], got 2.0"),
    (["eval", M, "--data", "data", "--threads", "-1"], "--threads: must be >= 0, got -1"),
    (["eval", M], "--data is needed"),
    (["eval", "--data", "data"], "MODEL is required"),
    (["eval", M, "--checkpoint", M, "--data", "data"], "the model is given twice"),
    (["eval", M, "--data", "missing"], "--data missing: no such folder"),
    (["eval", M, "--data", "data", "-o", "nodir/ev"], "the folder nodir does not exist"),
    (["eval", M, "--data", "data", "-o", "img.png"], "img.png is a file"),
    (["eval", M, "--data", "zoo"], "class 'yak' is not one of the checkpoint's"),
    (["eval", M, "--data", "texts"], "no"),
    (["eval", M, "--data", "broken"], "not readable images"),
    (["eval", "missing.safetensors", "--data", "data"], "missing.safetensors"),
    # --------------------------------------------------------------------------------------------- predict
    (["predict", M, "img.png", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["predict", M, "img.png", "--top-k", "0"], "--top-k: must be >= 1, got 0"),
    (["predict", M, "img.png", "--device", "gpu"], GPU_WORDS),
    (["predict", M, "img.png", "--threads", "-1"], "--threads: must be >= 0, got -1"),
    (["predict", M, "missing.png"], "missing.png"),
    (["predict", M, "texts"], "no image files"),
    (["predict", M, "broken"], "not a readable image"),
    (["predict", M], "the following arguments are required: IMAGE"),
    (["predict", M, "mixed", "--max-bad-fraction", "0.1"], "1 of 2 files (50.0%) are not readable images, more than "
     "the limit of 10%"),
    (["predict", M, "img.png", "--max-bad-fraction", "2"], "--max-bad-fraction: must be in [0, 1], got 2.0"),
    (["predict", "missing.safetensors", "img.png"], "missing.safetensors"),
    (["predict", "VIT-B16-IN21KK", "img.png"], "did you mean vit-b16-in21k"),
    # --------------------------------------------------------------------------------------------- inspect
    (["inspect", "attention", M, "img.png", "--device", "gpu"], GPU_WORDS),
    (["inspect", "attention", M, "img.png", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (["inspect", "attention", M, "broken"], "not a readable image"),
    (["inspect", "attention", M, "texts"], "no image files"),
    (["inspect", "attention", M, "mixed", "--max-bad-fraction", "0"], "more than the limit of 0%"),
    (["inspect", "attention", M, "img.png", "-o", "nodir/a.png"], "the folder nodir does not exist"),
    (["inspect", "distance", M, "--data", "data", "--num-images", "0"], "--num-images: must be >= 1, got 0"),
    (["inspect", "distance", M, "--data", "missing"], "missing"),
    (["inspect", "filters", M, "--components", "0"], "--components: must be >= 1, got 0"),
    (["inspect", "posemb", M, "-o", "data"], "data is a folder; give a file name"),
    (["inspect", "posemb", M, "--arrays", "nodir/x.npz"], "the folder nodir does not exist"),
    (["inspect", "posemb", "missing.safetensors"], "missing.safetensors"),
    (["inspect", "nothing", M], "invalid choice: 'nothing'"),
    # ------------------------------------------------------------------------------------------------ data
    (["data", "pack", "data", "-o", "nodir/shards"], "the folder nodir does not exist"),
    (["data", "pack", "data", "-o", "busy"], "busy: already exists"),
    (["data", "pack", "data", "-o", "shards", "--shard-size", "0"], "--shard-size: must be >= 1, got 0"),
    (["data", "pack", "data", "-o", "shards", "--seed", "-1"], "--seed: must be >= 0, got -1"),
    (["data", "pack", "one", "-o", "shards"], "only 1 class"),
    (["data", "pack", "missing", "-o", "shards"], "--data missing: no such folder"),
    (["data", "pack", "data"], "-o/--output is required"),
    # ----------------------------------------------------------------------------------------------- bench
    (["bench", "--repeats", "0"], "--repeats: must be >= 1, got 0"),
    (["bench", "--device", "gpu"], GPU_WORDS),
    (["bench", "--threads", "-1"], "--threads: must be >= 0, got -1"),
    (["bench", "-o", "nodir/b.json"], "the folder nodir does not exist"),
    (["bench", "--checkpoint", "missing.safetensors"], "missing.safetensors"),
]
if not torch.cuda.is_available():
    TABLE += [(["predict", M, "img.png", "--device", "cuda"], "this machine has no CUDA device"),
              (["eval", M, "--data", "data", "--device", "cuda:1"], "this machine has no CUDA device"),
              (["train", "--device", "cuda", "--smoke", "--data", "data"], "this machine has no CUDA device")]


def make_workspace(root) -> None:
    """The files the table's command lines name: a model, image folders good and bad, outputs that exist."""
    root.mkdir()
    model = vitkit.create_model("ViT-Ti/16", image_size=16, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64,
                                num_classes=3)
    model.class_names = ["a", "b", "c"]
    vitkit.save(model, root / M)
    shutil.copy(root / M, root / "exists.safetensors")
    (root / "exists.onnx").write_bytes(b"an older export")
    gen = np.random.default_rng(0)

    def image(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gen.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)

    for c in "abc":
        for i in range(4):
            image(root / "data" / c / f"{i}.png")
    (root / "data" / "a" / "notes.txt").write_text("not an image: ignored, not counted as broken\n")
    image(root / "one" / "a" / "0.png")
    image(root / "one" / "a" / "1.png")
    for c in ("yak", "zebra"):
        image(root / "zoo" / c / "0.png")
    for c in "ab":
        (root / "texts" / c).mkdir(parents=True)
        (root / "texts" / c / "notes.txt").write_text("text\n")
        (root / "broken" / c).mkdir(parents=True)
        (root / "broken" / c / "0.png").write_bytes(b"not a png")
    image(root / "img.png")
    image(root / "mixed" / "good.png")
    (root / "mixed" / "bad.png").write_bytes(b"truncated")
    image(root / "busy" / "photo.png")
    (root / "runs" / "x").mkdir(parents=True)
    (root / "runs" / "x" / "model.safetensors").write_bytes((root / M).read_bytes())


def child_env(tmp_path) -> dict:
    env = dict(os.environ)
    env.update(VITKIT_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf-home"), VITKIT_OFFLINE="1",
               HF_HUB_OFFLINE="1", MPLCONFIGDIR=str(tmp_path / "mpl"), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    env.pop("VITKIT_DEBUG", None)
    return env


def test_the_table_has_every_command():
    assert len(TABLE) >= 60
    from vitkit.cli import build_parser

    parser = build_parser()
    commands = set(next(a for a in parser._actions if a.dest == "command").choices)
    assert commands <= {argv[0] for argv, _ in TABLE}, commands - {argv[0] for argv, _ in TABLE}


def test_bad_command_lines(tmp_path):
    work = tmp_path / "work"
    make_workspace(work)
    results = run_vitkit_many([argv for argv, _ in TABLE], cwd=work, watch=work, scratch=tmp_path / "captured",
                              env=child_env(tmp_path))
    failures = []
    for (argv, words), result in zip(TABLE, results):
        err = result["stderr"]
        lines = err.strip("\n").splitlines()
        problems = []
        if result["code"] != 2:
            problems.append(f"exit {result['code']}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr")
        if "Traceback" in err:
            problems.append("a traceback")
        if words not in err:
            problems.append(f"no {words!r}")
        if result["changed"]:
            problems.append(f"touched {result['changed']}")
        if problems:
            failures.append(f"vitkit {' '.join(argv)}: {', '.join(problems)}; stderr: {err[-600:]!r}")
    assert not failures, f"{len(failures)} of {len(TABLE)} rows failed:\n" + "\n".join(failures)


def test_the_runner_sees_what_python_m_vitkit_does(tmp_path):
    """Three rows through `python -m vitkit` itself give what the forked children gave."""
    work = tmp_path / "work"
    make_workspace(work)
    env = child_env(tmp_path)
    rows = [TABLE[0][0], ["train", "--ema-decay", "1.5"], ["convert", M, "-o", "exists.safetensors"]]
    forked = run_vitkit_many(rows, cwd=work, watch=work, scratch=tmp_path / "captured", env=env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    for argv, seen in zip(rows, forked):
        real = subprocess.run([sys.executable, "-m", "vitkit", *argv], cwd=work, env=env, capture_output=True,
                              text=True)
        assert (real.returncode, real.stdout, real.stderr) == (seen["code"], seen["stdout"], seen["stderr"]), argv


def test_the_runner_reports_tracebacks_and_touched_files(tmp_path):
    """The checks can fail: a command that succeeds and writes a file is seen writing it."""
    work = tmp_path / "work"
    make_workspace(work)
    [result] = run_vitkit_many([["convert", M, "-o", "copy.safetensors"]], cwd=work, watch=work,
                               scratch=tmp_path / "captured", env=child_env(tmp_path))
    assert result["code"] == 0 and result["changed"] == ["copy.safetensors"], result


@pytest.mark.parametrize("command", ["models", "download", "data pack", "convert", "export", "train", "finetune",
                                     "eval", "predict", "inspect attention", "inspect distance", "inspect posemb",
                                     "inspect filters", "bench"])
def test_help_follows_the_convention(command, capsys):
    """Each command's --help shows the shared flags where they apply, spelt the same way."""
    from vitkit.cli import main

    with pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    takes_model = command in ("convert", "export", "eval", "predict") or command.startswith("inspect")
    wanted = ["-q, --quiet"]
    if takes_model:
        wanted += ["MODEL", "a run folder (runs/NAME: its final model)", "a pre-trained name"]
    if command in ("convert", "export", "eval", "bench", "data pack") or command.startswith("inspect"):
        wanted.append("-o PATH, --output PATH")
    if command not in ("train", "finetune"):
        wanted.append("--json")
    if command in ("eval", "predict", "bench", "inspect attention", "inspect distance"):
        wanted.append("--device DEVICE")
    if command in ("eval", "predict", "export", "bench") or command.startswith("inspect"):
        wanted.append("--threads N")
    if command in ("eval", "train", "finetune"):
        wanted += ["--progress", "--no-progress"]
    if command in ("train", "finetune"):
        wanted += ["--device TEXT", "--threads N"]
    missing = [w for w in wanted if w not in text]
    assert not missing, f"vitkit {command} --help lacks {missing}"
    older = re.findall(r"--checkpoint(?![-\w])(?! MODEL)|--out(?![-\w])", text)  # eval's; bench's --checkpoint MODEL
    assert not older, f"vitkit {command} --help advertises the older {older}"
