"""Training: the run folder, exact resume, checkpoints, fine-tuning at a higher resolution, recipes, bad input.

Every run here is a tiny model (width 32, one block) for a few steps on a few images, in this process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.training import checkpoint as ckpt
from vitkit.training.config import RECIPES_DIR, TrainConfig, list_recipes, load_recipe, read_recipe_file
from vitkit.training.optim import EMA, OptimizerSettings, build_optimizer, learning_rate, param_groups
from vitkit.training.trainer import TrainingError, load_run_config, train

from test_data import CIFAR_TAR, extract_cifar_subset, truncated_jpeg, write_image_folder


TINY = dict(model="ViT-Ti/4", image_size=8, patch_size=4, width=32, depth=1, num_heads=2, mlp_dim=64)


def tiny_config(tmp_path: Path, **changes) -> TrainConfig:
    base = TrainConfig(data="digits", **TINY, batch_size=16, steps=6, epochs=None, warmup_steps=2, lr=2e-3,
                       schedule="cosine", limit_per_class=10, progress=False, num_workers=0, log_every=1,
                       eval_every=-1, checkpoint_every=0, out_dir=str(tmp_path / "runs"), name="run",
                       crop="inception", crop_min_area=0.5, hflip=False)
    return base.replace(**changes)


def tiny_flags(tmp_path: Path, name: str = "run") -> list[str]:
    return ["--out-dir", str(tmp_path / "runs"), "--name", name, "--progress", "false", "--num-workers", "0",
            "--log-every", "1", "--eval-every", "-1"]


def train_records(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quiet(message: str) -> None:
    pass


# ------------------------------------------------------------------------------------------- the run folder
def test_a_run_writes_config_metrics_plot_checkpoints_and_a_loadable_model(tmp_path):
    config = tiny_config(tmp_path, steps=7, checkpoint_every=2, keep_checkpoints=2, eval_every=3)
    result = train(config, log=quiet)
    run = tmp_path / "runs" / "run"
    assert result.run_dir == run and result.finished and result.step == 7
    assert [step for step, _ in ckpt.list_checkpoints(run)] == [6, 7]  # every 2 steps and the end, last 2 kept
    assert not list((run / "checkpoints").glob(".*"))  # no temporary folders left
    saved = load_run_config(run)  # the resolved config reads back as a recipe
    assert saved.steps == 7 and saved.num_classes == 10 and saved.image_size == 8 and saved.mean == [0.5] * 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 8))
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6, 7] and all(r["split"] == "test" for r in evals)
    assert records[-1]["kind"] == "summary" and records[-1]["finished"]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = vitkit.load(run / "model.safetensors")
    assert model.class_names == [str(i) for i in range(10)]
    assert tuple(model.preprocessing.image_size) == (8, 8) and model.preprocessing.mean == (0.5, 0.5, 0.5)
    assert abs(result.final.top1 - evals[-1]["top1"]) < 1e-12
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    with pytest.raises(vitkit.errors.UsageError, match="already holds a run"):
        train(config, log=quiet)


def test_the_loss_goes_down_on_digits(tmp_path):
    result = train(tiny_config(tmp_path, steps=80, lr=5e-3, limit_per_class=40, batch_size=32, crop="resize"),
                   log=quiet)
    losses = [r["loss"] for r in train_records(result.run_dir)]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert result.final.top1 > 0.5  # chance is 0.1


# ------------------------------------------------------------------------------------------------ resume
def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    """Augmentation, RandAugment, Mixup/CutMix, label smoothing, dropout, stochastic depth, EMA and gradient
    accumulation all on; stopped mid-epoch with 2 loader processes, resumed in this one."""
    config = tiny_config(tmp_path, steps=9, randaugment_ops=1, mixup_alpha=0.4, cutmix_alpha=1.0,
                         label_smoothing=0.1, dropout=0.1, drop_path=0.1, ema_decay=0.9, accum_steps=2,
                         checkpoint_every=2, keep_checkpoints=0, eval_every=4)
    full = train(config.replace(name="full"), log=quiet)
    part = train(config.replace(name="part", stop_after=5, num_workers=2), log=quiet)
    assert not part.finished and part.step == 5
    run = tmp_path / "runs" / "part"
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 4, 5]
    assert not (run / "model.safetensors").exists()
    code = main(["train", "--resume", str(run), "--progress", "false", "--num-workers", "0"])
    assert code == 0

    uninterrupted = train_records(full.run_dir)
    resumed = train_records(run)
    assert [r["step"] for r in resumed] == list(range(1, 10))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in uninterrupted]  # exactly, not approximately
    assert [r["accuracy"] for r in resumed] == [r["accuracy"] for r in uninterrupted]
    assert train_records(run, "eval")[-2:] == train_records(full.run_dir, "eval")[-2:]
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = vitkit.load(full.run_dir / name).state_dict(), vitkit.load(run / name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_a_chosen_checkpoint_and_after_the_end(tmp_path, capsys):
    config = tiny_config(tmp_path, steps=6, checkpoint_every=2, keep_checkpoints=0)
    full = train(config.replace(name="full"), log=quiet)
    train(config.replace(name="again"), log=quiet)
    run = tmp_path / "runs" / "again"
    assert main(["train", "--resume", str(run / "checkpoints" / "step_00000002"), "--progress", "false"]) == 0
    assert [r["loss"] for r in train_records(run)] == [r["loss"] for r in train_records(full.run_dir)]
    assert main(["train", "--resume", str(run), "--progress", "false"]) == 2
    assert "already finished" in capsys.readouterr().err


def test_latest_checkpoint_skips_a_damaged_one(tmp_path):
    train(tiny_config(tmp_path, steps=4, checkpoint_every=1, keep_checkpoints=0), log=quiet)
    run = tmp_path / "runs" / "run"
    (run / "checkpoints" / "step_00000004" / "state.pt").write_bytes(b"garbage")
    (run / "checkpoints" / ".step_00000005.x.tmp").mkdir()  # an interrupted write
    notes = []
    latest = ckpt.latest_checkpoint(run, log=notes.append)
    assert latest.step == 3 and "step_00000004" in notes[0]
    state = torch.load(latest.path / "state.pt", weights_only=True)  # plain tensors and containers only
    assert state["step"] == 3 and "optimizer" in state and "rng" in state
    assert ckpt.resolve_model_path(run) == run / "model.safetensors"


# ------------------------------------------------------------------------------------------ fine-tuning
def test_finetune_at_a_higher_resolution_with_new_classes(tmp_path):
    pre = train(tiny_config(tmp_path, name="pre", steps=4), log=quiet)
    folder = write_image_folder(tmp_path / "pets", classes=("ant", "bee", "cow"), per_class=8, size=20)
    code = main(["finetune", "--init-from", str(pre.run_dir), "--data", str(folder), "--image-size", "16",
                 "--steps", "2", "--batch-size", "8", "--lr", "1e-9", "--warmup-steps", "0",
                 "--val-per-class", "2", *tiny_flags(tmp_path, "fine")])
    assert code == 0
    run = tmp_path / "runs" / "fine"
    config = load_run_config(run)
    assert config.optimizer == "sgd" and config.weight_decay == 0 and config.schedule == "cosine"
    assert config.reset_head and config.image_size == 16 and config.num_classes == 3
    model = vitkit.load(run / "model.safetensors")
    assert model.class_names == ["ant", "bee", "cow"] and model.num_classes == 3
    assert tuple(model.config.image_size) == (16, 16) and model.pos_embed.shape == (1, 1 + 16, 32)
    before = vitkit.load(pre.run_dir / "model.safetensors")
    expected_pos = vitkit.resample_pos_embed(before.pos_embed, (4, 4), 1, old_grid=(2, 2), method="bicubic")
    torch.testing.assert_close(model.pos_embed, expected_pos, atol=1e-6, rtol=0)  # lr 1e-9: barely moved
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, before.blocks[0].attn.qkv.weight, atol=1e-6,
                               rtol=0)
    assert model.head.weight.abs().max() < 1e-6  # a zero-initialised head
    state = ckpt.latest_checkpoint(run).state
    assert all("momentum_buffer" in s for s in state["optimizer"]["state"].values())


def test_init_from_another_class_count_needs_num_classes(tmp_path, capsys):
    pre = train(tiny_config(tmp_path, name="pre", steps=2), log=quiet)
    folder = write_image_folder(tmp_path / "three", per_class=6, size=8)
    args = ["train", "--init-from", str(pre.run_dir), "--data", str(folder), "--steps", "2", "--batch-size", "4",
            "--val-per-class", "1", "--warmup-steps", "0"]
    assert main(args + tiny_flags(tmp_path, "x")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has 10 classes but the data has 3" in err and "--num-classes 3" in err
    assert main(args + tiny_flags(tmp_path, "y") + ["--num-classes", "3"]) == 0
    model = vitkit.load(tmp_path / "runs" / "y" / "model.safetensors")
    assert model.num_classes == 3 and tuple(model.config.image_size) == (8, 8)  # the checkpoint's size


def test_a_bad_model_or_init_from_is_refused_before_the_data_are_read(tmp_path, capsys):
    missing_data = ["--data", str(tmp_path / "no-data-here"), "--steps", "1"]
    assert main(["train", "--init-from", str(tmp_path / "missing.safetensors"), *missing_data,
                 *tiny_flags(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--init-from" in err and "no such file or folder, nor a pre-trained name" in err and "no-data-here" not in err
    assert main(["train", "--init-from", "vit_base_patch16_224", "--width", "64", *missing_data,
                 *tiny_flags(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the architecture comes from the checkpoint; drop --width" in err and "no-data-here" not in err
    assert not (tmp_path / "runs").exists()
    assert main(["train", "--model", "ViT-Ti/16", "--image-size", "30", "--patch-size", "4", *missing_data,
                 *tiny_flags(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "image_size (30, 30) is not a multiple of the effective patch size (4, 4)" in err and "no-data" not in err


# ------------------------------------------------------------------------------------- stopping cleanly
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, capsys):
    train(tiny_config(tmp_path, steps=8, stop_after=3, schedule="constant"), log=quiet)
    run = tmp_path / "runs" / "run"
    good = run / "checkpoints" / "step_00000003"
    hashes = {p.name: sha(p) for p in good.iterdir()}
    code = main(["train", "--resume", str(run), "--lr", "1e30", "--progress", "false"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert "non-finite at step 5" in err and "step_00000003" in err and "untouched" in err
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [3]
    assert {p.name: sha(p) for p in good.iterdir()} == hashes
    assert not (run / "model.safetensors").exists()
    with pytest.raises(TrainingError):
        train(load_run_config(run).replace(lr=1e30), resume=True, log=quiet)


# --------------------------------------------------------------------------------------------- bad input
def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = write_image_folder(tmp_path / "no_images", per_class=3)
    (no_images / "eel").mkdir()
    bad = write_image_folder(tmp_path / "bad", per_class=20)
    truncated_jpeg(bad / "cat" / "cut.jpg")
    cases = [
        (["--data", str(tmp_path / "nowhere")], "no such folder"),
        (["--data", str(empty)], "no class folders"),
        (["--data", str(no_images)], "class 'eel' has no images"),
        (["--data", str(bad)], "1 of 61 files (1.6%) are not readable images"),
        (["--data", "digits", "--batch-size", "5000"], "larger than the"),
        (["--data", "digits", "--set", "nonsense=1"], "unknown training option 'nonsense'"),
        (["--data", "digits", "--lr", "fast"], "cannot read 'fast'"),
        (["--data", "digits", "--model", "ViT-Q/3"], "unknown model"),
        (["--recipe", "no-such-recipe"], "no recipe 'no-such-recipe'"),
        (["--data", "digits", "--precision", "fp16", "--device", "cpu"], "needs a GPU"),
    ]
    for extra, message in cases:
        code = main(["train", *extra, "--steps", "1", *tiny_flags(tmp_path, "bad")])
        err = capsys.readouterr().err.strip()
        assert code == 2, (extra, err)
        assert err.startswith("vitkit: error: ") and err.count("\n") == 0 and message in err, (extra, err)


def test_bad_files_below_the_limit_are_reported_at_the_end(tmp_path, capsys):
    data = write_image_folder(tmp_path / "d", per_class=40, size=8)
    truncated_jpeg(data / "dog" / "cut.jpg")
    code = main(["train", "--data", str(data), "--steps", "2", "--batch-size", "8", "--val-per-class", "2",
                 "--warmup-steps", "0", "--max-bad-fraction", "0.05", *tiny_flags(tmp_path)] +
                [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()])
    out = capsys.readouterr().out
    assert code == 0
    assert "cut.jpg" in out and "skipped 1 unreadable file(s)" in out
    assert "cut.jpg" in (tmp_path / "runs" / "run" / "bad_files.txt").read_text()


def test_the_command_line_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vitkit", "train", "--data", str(tmp_path / "missing")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "no such folder" in result.stderr


# ------------------------------------------------------------------------------------------ recipes, config
def test_every_recipe_runs_shrunk_on_small_data(tmp_path):
    pre = train(tiny_config(tmp_path, name="pre", steps=1, image_size=16, patch_size=8), log=quiet)
    names = list_recipes()
    assert {"digits", "cifar10", "vit-b16-i21k", "vit-imagenet-scratch", "finetune", "finetune-imagenet",
            "augreg", "deit"} <= set(names)
    for name in names:
        config = load_recipe(name)
        assert config.recipe == name
        extra = ["--init-from", str(pre.run_dir)] if config.init_from or name.startswith("finetune") else []
        args = ["finetune" if extra else "train", "--recipe", name, "--smoke", "--data", "digits", *extra,
                "--out-dir", str(tmp_path / "runs"), "--name", name, "--progress", "false"]
        assert main(args) == 0, name
        assert (tmp_path / "runs" / name / "model.safetensors").is_file()


def test_paper_recipes_say_what_the_paper_says():
    pre = load_recipe("vit-b16-i21k")
    assert (pre.optimizer, pre.beta1, pre.beta2, pre.grad_clip, pre.batch_size) == ("adam", 0.9, 0.999, 1.0, 4096)
    assert pre.warmup_steps == 10_000 and pre.schedule == "linear" and pre.model == "ViT-B/16"
    fine = load_recipe("finetune")
    assert (fine.optimizer, fine.momentum, fine.weight_decay, fine.schedule, fine.grad_clip, fine.batch_size) == \
        ("sgd", 0.9, 0.0, "cosine", 1.0, 512)
    assert fine.image_size == 384 and fine.reset_head
    deit = load_recipe("deit")
    assert deit.randaugment_ops > 0 and deit.mixup_alpha > 0 and deit.cutmix_alpha > 0
    assert deit.label_smoothing == 0.1 and deit.drop_path > 0


def test_the_recipes_are_part_of_the_package():
    """The recipes ship inside vitkit (package data), so an installed vitkit finds them all; the repository's
    recipes/ is a link to the same folder, so that recipes/x.toml paths keep working."""
    package = Path(vitkit.__file__).resolve().parent
    assert RECIPES_DIR.resolve().parent == package and RECIPES_DIR.name == "recipes"
    names = list_recipes()
    assert {"digits", "default", "finetune", "cifar10", "deit"} <= set(names)
    for name in names:
        assert load_recipe(name).recipe == name
    assert load_recipe("digits").data == "digits"
    root = package.parent / "recipes"
    if (package.parent / "pyproject.toml").is_file():  # a checkout (an installed wheel has no repository root)
        import tomllib

        assert root.is_symlink() and root.resolve() == RECIPES_DIR.resolve()
        pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text())
        assert "recipes/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["vitkit"]


def test_command_line_overrides(tmp_path, capsys):
    assert main(["train", "--recipe", "cifar10", "--lr", "3e-4", "--set", "depth=2", "--set", "mean=0.1,0.2,0.3",
                 "--hflip", "false", "--compile", "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["lr"] == 3e-4 and config["depth"] == 2 and config["mean"] == [0.1, 0.2, 0.3]
    assert config["hflip"] is False and config["compile"] is True and config["recipe"] == "cifar10"
    assert main(["train", "--model", "ViT-S/16", "--print-config"]) == 0  # the variant's shape, not the recipe's
    variant = json.loads(capsys.readouterr().out)
    assert variant["model"] == "ViT-S/16" and variant["width"] is None and variant["image_size"] is None
    assert main(["train", "--model", "ViT-S/16", "--depth", "2", "--image-size", "32", "--print-config"]) == 0
    variant = json.loads(capsys.readouterr().out)
    assert variant["depth"] == 2 and variant["width"] is None and variant["image_size"] == 32
    assert main(["train", "--smoke", "--print-config"]) == 0
    smoke = json.loads(capsys.readouterr().out)
    assert smoke["steps"] == 4 and smoke["width"] == 32 and smoke["recipe"] == "digits"


# ----------------------------------------------------------------------------------- optimizer, numerics
def test_weight_decay_spares_biases_norms_positions_and_class_token():
    model = vitkit.create_model("ViT-Ti/4", num_classes=3, image_size=8, width=32, depth=1, num_heads=2, mlp_dim=64)
    groups = {g["name"]: g for g in param_groups(model, 0.1)}
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in groups["no_decay"]["params"]}
    decayed = {names[id(p)] for p in groups["decay"]["params"]}
    assert {"cls_token", "pos_embed", "norm.weight", "norm.bias", "head.bias", "blocks.0.attn.qkv.bias"} <= exempt
    assert decayed == {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
                       "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight", "head.weight"}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    settings = OptimizerSettings.from_config(TrainConfig(optimizer="adam", lr=3e-3, weight_decay=0.1))
    assert settings == OptimizerSettings("adam", 3e-3, 0.1, 0.9, 0.999, None)
    adam = build_optimizer(model, settings)
    assert isinstance(adam, torch.optim.AdamW) and adam.defaults["betas"] == (0.9, 0.999)
    assert adam.defaults["lr"] == 3e-3 and [g["weight_decay"] for g in adam.param_groups] == [0.1, 0.0]
    sgd = build_optimizer(model, OptimizerSettings.from_config(TrainConfig(optimizer="sgd", momentum=0.9,
                                                                           weight_decay=0.0)))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    # a momentum left unset is each optimizer's usual one (torch.optim.Muon's default for Muon); a set one is kept
    unset = {name: OptimizerSettings.from_config(TrainConfig(optimizer=name)).momentum for name in ("sgd", "muon")}
    assert unset == {"sgd": 0.9, "muon": 0.95}
    assert torch.optim.Muon([torch.nn.Parameter(torch.zeros(2, 2))]).defaults["momentum"] == 0.95  # torch's default
    assert OptimizerSettings.from_config(TrainConfig(optimizer="muon", momentum=0.8)).momentum == 0.8


def test_learning_rate_schedules():
    lr = [learning_rate(s, 100, 1.0, 10, "cosine") for s in range(100)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0) and lr[10] == pytest.approx(1.0)
    assert lr[55] == pytest.approx(0.5, abs=0.02) and lr[-1] < 0.001
    assert all(a >= b for a, b in zip(lr[9:], lr[10:]))
    linear = [learning_rate(s, 101, 1.0, 0, "linear", end=0.1) for s in (0, 50, 100)]  # 100: the last step run
    assert linear == pytest.approx([1.0, 0.55, 0.1])
    assert learning_rate(70, 100, 2.0, 10, "constant") == 2.0


def test_ema_tracks_the_weights():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, num_updates=100)  # decay min(0.5, 101/110) = 0.5
    torch.testing.assert_close(ema.shadow["weight"], model.weight.detach() - 0.5)


def test_bf16_autocast_and_compile(tmp_path):
    result = train(tiny_config(tmp_path, name="bf16", steps=3, precision="bf16"), log=quiet)
    assert result.finished and all(np.isfinite(r["loss"]) for r in train_records(result.run_dir))
    compiled = train(tiny_config(tmp_path, name="compiled", steps=2, compile=True, compile_backend="eager"),
                     log=quiet)
    plain = train(tiny_config(tmp_path, name="plain", steps=2), log=quiet)
    assert [r["loss"] for r in train_records(compiled.run_dir)] == pytest.approx(
        [r["loss"] for r in train_records(plain.run_dir)], rel=1e-5)


def test_compile_mode_is_refused_where_it_cannot_apply(tmp_path, capsys):
    with pytest.raises(vitkit.errors.UsageError, match="compile_mode=max-autotune needs compile"):
        tiny_config(tmp_path, compile_mode="max-autotune").validate()
    with pytest.raises(vitkit.errors.UsageError, match="compile_backend='eager' has none"):
        tiny_config(tmp_path, compile=True, compile_backend="eager", compile_mode="max-autotune").validate()
    with pytest.raises(vitkit.errors.UsageError, match="expected one of default, reduce-overhead, max-autotune"):
        tiny_config(tmp_path, compile=True, compile_mode="fast").validate()
    assert main(["train", "--compile", "--compile-mode", "max-autotune", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["compile_mode"] == "max-autotune"
    assert main(["train", "--compile-mode", "max-autotune", "--print-config"]) == 2
    assert "needs compile (--compile" in capsys.readouterr().err
    # a CPU named in the settings is refused at once (--print-config too); "auto" when the run resolves it
    assert main(["train", "--compile", "--compile-mode", "reduce-overhead", "--device", "cpu", "--print-config"]) == 2
    assert "reduce-overhead is CUDA graphs, which cpu has not" in capsys.readouterr().err
    with pytest.raises(vitkit.errors.UsageError, match="compile_backend='nosuch' is not a torch.compile backend"):
        tiny_config(tmp_path, compile=True, compile_backend="nosuch").validate()
    if not torch.cuda.is_available():  # "auto" resolves to the CPU only when the run starts
        with pytest.raises(vitkit.errors.UsageError, match="reduce-overhead is CUDA graphs, which cpu has not"):
            train(tiny_config(tmp_path, compile=True, compile_mode="reduce-overhead", device="auto"), log=quiet)


# ------------------------------------------------------------------------------------------------ CIFAR
@pytest.mark.skipif(not CIFAR_TAR.is_file(), reason="needs ../shared/data/cifar10")
def test_a_short_run_on_the_cifar10_jpeg_tree(tmp_path, capsys):
    data = extract_cifar_subset(CIFAR_TAR, tmp_path / "cifar10", per_class=30)  # 300 images
    code = main(["train", "--recipe", "cifar10", "--data", str(data), "--val-per-class", "5", "--steps", "6",
                 "--batch-size", "25", "--warmup-steps", "2", "--width", "32", "--depth", "1", "--num-heads", "2",
                 "--mlp-dim", "64", "--patch-size", "8", "--precision", "fp32", *tiny_flags(tmp_path, "cifar")])
    out = capsys.readouterr().out
    assert code == 0 and "250 training images, 50 hold-out images" in out
    run = tmp_path / "runs" / "cifar"
    assert vitkit.load(run / "model.safetensors").class_names[:2] == ["airplane", "automobile"]
    assert main(["eval", "--checkpoint", str(run), "--json", "--no-progress"]) == 0  # the run's own hold-out
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 50 and report["split"] == "hold-out"
    assert report["top1"] == pytest.approx(train_records(run, "summary")[0]["hold-out_top1"])


# ------------------------------------------------------------------------------------------- the hybrid's stem
def test_resnet_fields_make_the_papers_hybrid_and_survive_the_checkpoint(tmp_path):
    """resnet_layers / resnet_width_factor give a plain variant the hybrid's ResNet stem (Section 3.1); the run's
    model.safetensors loads back as the same hybrid; the flags read lists of whole numbers only."""
    from vitkit.training.config import apply_overrides
    from vitkit.errors import UsageError

    config = tiny_config(tmp_path, image_size=16, patch_size=1, resnet_layers=[1], resnet_width_factor=0.5, steps=2)
    result = train(config, log=quiet)
    stem = result.model.config.resnet
    assert stem is not None and stem.num_layers == (1,) and stem.width_factor == 0.5
    assert result.model.config.grid_size == (4, 4)  # 16 px, stride 4, 1x1 patches of the feature map
    loaded = vitkit.load(result.run_dir / "model.safetensors")
    assert loaded.config.resnet == stem
    x = torch.randn(2, 3, 16, 16)
    result.model.eval()
    torch.testing.assert_close(loaded(x), result.model(x))
    from vitkit.training.config import smoke
    # the width factor alone makes a plain variant a hybrid, for the model and for --smoke alike
    alone = smoke(TrainConfig(model="ViT-Ti/4", resnet_width_factor=1.5))
    assert alone.patch_size == 1 and alone.resnet_layers == []
    assert apply_overrides(TrainConfig(), {"resnet_layers": "[]"}).resnet_layers == []
    assert apply_overrides(TrainConfig(), {"resnet_layers": "3,4,9"}).resnet_layers == [3, 4, 9]
    with pytest.raises(UsageError, match="resnet_layers.*1.5"):
        apply_overrides(TrainConfig(), {"resnet_layers": "1.5"})


def test_resume_refuses_what_it_would_ignore(tmp_path, capsys):
    """A resumed run keeps its model and its folder: an architecture flag or another --name is refused, before
    anything is written (config.json would otherwise describe a model the checkpoint does not hold)."""
    config = tiny_config(tmp_path, checkpoint_every=2, stop_after=2)
    run = train(config, log=quiet).run_dir
    before = (run / "config.json").read_text()
    for extra, words in ((["--width", "64"], "--width 64 would change it"),
                         (["--image-size", "48"], "--image-size 48 would change it"),
                         (["--name", "other"], "--name other names another run folder")):
        assert main(["train", "--resume", str(run), "--progress", "false", *extra]) == 2
        assert words in capsys.readouterr().err
    assert (run / "config.json").read_text() == before and not (tmp_path / "runs" / "other").exists()
    assert main(["train", "--resume", str(run), "--name", "run", "--progress", "false", "--num-workers", "0"]) == 0


def test_an_unfinished_run_is_read_from_its_newest_checkpoint_said_aloud(tmp_path, capsys):
    run = train(tiny_config(tmp_path, checkpoint_every=2, stop_after=4), log=quiet).run_dir
    assert not (run / "model.safetensors").exists()
    with pytest.warns(vitkit.errors.GuessWarning, match="no final model.safetensors .* newest checkpoint, step 4"):
        from vitkit.hub.resolve import model_source

        assert model_source(run) == run / "checkpoints" / "step_00000004" / "model.safetensors"


def test_ema_flag_picks_a_runs_moving_average(tmp_path, capsys):
    from safetensors.torch import load_file

    run = train(tiny_config(tmp_path, ema_decay=0.9), log=quiet).run_dir
    out = tmp_path / "ema.safetensors"
    assert main(["convert", str(run), "--ema", "-o", str(out)]) == 0
    ema, written = load_file(run / "model_ema.safetensors"), load_file(out)
    assert all(torch.equal(written[k], ema[k]) for k in ema)
    assert not torch.equal(load_file(run / "model.safetensors")["cls_token"], ema["cls_token"])
    assert main(["convert", str(run), "--no-ema", "-o", str(tmp_path / "raw.safetensors")]) == 0
    assert torch.equal(load_file(tmp_path / "raw.safetensors")["cls_token"],
                       load_file(run / "model.safetensors")["cls_token"])
    plain = train(tiny_config(tmp_path, name="plain"), log=quiet).run_dir
    assert main(["convert", str(plain), "--ema", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "kept no moving average (--ema-decay)" in capsys.readouterr().err
