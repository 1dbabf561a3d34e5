"""The fast CIFAR-10 recipe (recipes/cifar10-fast.toml) and what it is made of: the in-memory tensor data path,
time budgets, progressive resolution, and the time-to-accuracy benchmark's reading of a run.

The recipe itself runs for a handful of steps on 300 real CIFAR-10 JPEGs (taken from ../shared's tarball into a
temporary folder), and its checkpoint then goes through `vitkit eval`, `predict` and `inspect`."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.configs import Preprocessing
from vitkit.data import StepBatchSampler, eval_transform, open_data
from vitkit.data.memory import TensorAugment, TensorBatches, resize_batch, stack_images
from vitkit.training.config import TrainConfig, load_recipe
from vitkit.training.schedule import Schedule, ScheduleSettings, TrainClock
from vitkit.training.trainer import train

from test_data import CIFAR_TAR, extract_cifar_subset
from test_train import tiny_config, train_records

REPO = Path(__file__).resolve().parents[1]
needs_cifar = pytest.mark.skipif(not CIFAR_TAR.is_file(), reason="needs ../shared/data/cifar10")


def quiet(message: str) -> None:
    pass


def batch(n=6, size=8, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


# ------------------------------------------------------------------------------------ the tensor data path
def test_without_augmentation_the_tensor_path_gives_what_the_evaluation_transform_gives(tmp_path):
    from test_data import write_image_folder

    splits = open_data(str(write_image_folder(tmp_path / "data", per_class=4, size=12)), progress=False, log=quiet)
    images = stack_images(splits.train)
    assert images.dtype == torch.uint8 and images.shape == (len(splits.train), 3, 12, 12)
    preprocessing = Preprocessing(image_size=12, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    plain = TensorAugment(preprocessing.mean, preprocessing.std, crop="resize", hflip=False)
    out = plain(images, torch.Generator().manual_seed(0))
    reference = torch.stack([eval_transform(preprocessing)(splits.train.load(i)) for i in range(len(splits.train))])
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


def test_pad_crop_takes_a_window_of_the_reflect_padded_image_flipped_or_not():
    x = batch(n=24)
    identity = TensorAugment([0.0] * 3, [1 / 255] * 3, crop="pad_crop", crop_padding=2)  # output = pixel values
    out = identity(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect")
    flips = []
    for i in range(len(x)):
        windows = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                   if torch.equal(out[i], (lambda w: w.flip(-1) if flip else w)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert windows, f"image {i} is not a window of its padded self"
        flips.append(windows[0][2])
    assert 0 < sum(flips) < len(flips)  # some flipped, some not
    again = identity(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # a function of the generator's seed
    assert not torch.equal(out, identity(x, torch.Generator().manual_seed(2)))


def test_inception_crop_resizes_a_box_inside_the_image():
    x = torch.zeros(8, 3, 16, 16, dtype=torch.uint8)
    x[:, :, :, :8] = 200  # left half bright
    crop = TensorAugment([0.0] * 3, [1 / 255] * 3, crop="inception", crop_min_area=0.2, hflip=False)
    out = crop(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 200 + 1e-3
    assert len({tuple(o[0, 8].tolist()) for o in out}) > 1  # different boxes per image
    whole = TensorAugment([0.0] * 3, [1 / 255] * 3, crop="inception", crop_min_area=1.0, hflip=False)
    out = whole(x, torch.Generator().manual_seed(0))  # the whole area, aspect 3/4..4/3: still left-bright
    assert (out[:, :, :, 0] > out[:, :, :, -1]).all()


def test_random_erasing_fills_one_box_per_chosen_image():
    x = batch(n=16, size=16)
    plain = TensorAugment([0.5] * 3, [0.5] * 3, crop="resize", hflip=False)(x, torch.Generator().manual_seed(3))
    erased = TensorAugment([0.5] * 3, [0.5] * 3, crop="resize", hflip=False, random_erasing=1.0)(
        x, torch.Generator().manual_seed(3))
    changed = (erased != plain).any(dim=1)  # (B, H, W)
    for mask in changed:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        assert len(rows) and len(cols)
        assert mask.sum() <= len(rows) * len(cols)  # inside one rectangle
        assert len(rows) * len(cols) <= 16 * 16 / 3 + 16  # at most 1/3 of the image, as timm


def test_tensor_batches_follow_the_sampler_and_resume_exactly():
    images, labels = batch(n=40, size=8), np.arange(40) % 4
    augment = TensorAugment([0.5] * 3, [0.5] * 3, crop="pad_crop", crop_padding=2, random_erasing=0.5)

    def batches(start, end):
        return list(TensorBatches(images, labels, StepBatchSampler(40, 8, 1, 1, 0, seed=5, start_step=start,
                                                                  end_step=end), augment))

    whole = batches(0, 12)  # 2.4 epochs of 5 steps
    assert len(whole) == 12 and whole[0][0].shape == (8, 3, 8, 8)
    for (a, la), (b, lb) in zip(whole[7:], batches(7, 12)):
        assert torch.equal(a, b) and torch.equal(la, lb)
    epoch_labels = torch.cat([lb for _, lb in whole[:5]])
    assert sorted(epoch_labels.tolist()) == sorted(labels.tolist())  # each image once per epoch


def test_resize_batch_is_the_identity_at_the_same_size():
    x = torch.randn(2, 3, 8, 8)
    assert resize_batch(x, 8) is x
    assert resize_batch(x, 4).shape == (2, 3, 4, 4)


# ------------------------------------------------------------------------------------ schedules, budgets
def test_a_budget_schedule_warms_up_by_steps_and_decays_by_time():
    config = TrainConfig(lr=1e-3, min_lr=1e-5, schedule="cosine", budget_minutes=10, progressive_min_size=16,
                         progressive_until=0.5)
    schedule = Schedule(ScheduleSettings.from_config(config), total_steps=10**6, warmup_steps=10, image_size=32, patch_step=4)
    assert schedule.lr(0, 0.0) == pytest.approx(1e-4)
    assert schedule.lr(9, 0.0) == pytest.approx(1e-3)
    assert schedule.lr(500, 300.0) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert schedule.lr(500, 600.0) == pytest.approx(1e-5)
    assert not schedule.out_of_time(599.9) and schedule.out_of_time(600.0)
    sizes = [schedule.at(100, s).image_size for s in np.linspace(0, 600, 61)]
    assert sizes[0] == 16 and sizes[-1] == 32 and sizes == sorted(sizes) and all(s % 4 == 0 for s in sizes)
    assert schedule.size(0.5) == 32 and schedule.size(0.25) == 24
    by_steps = Schedule(ScheduleSettings.from_config(TrainConfig(lr=1e-3, schedule="linear")), total_steps=101,
                        warmup_steps=0, image_size=32, patch_step=4)
    assert by_steps.lr(50, 1e9) == pytest.approx(5e-4)  # no budget: the clock does not matter
    assert by_steps.size(0.0) == 32


def test_the_clock_leaves_out_paused_time():
    clock = TrainClock(already=5.0)
    assert clock.seconds() == 5.0
    clock.start()
    with clock.paused():
        sum(range(200_000))
    assert 5.0 <= clock.seconds() < 5.0 + 0.05


def test_a_time_budget_ends_the_run_and_timed_evaluations_come_with_clock_records(tmp_path):
    result = train(tiny_config(tmp_path, steps=1000, budget_minutes=1e-6, name="budget"), log=quiet)
    assert result.finished and result.step == 1  # the first step spent the budget
    assert (result.run_dir / "model.safetensors").is_file()
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "summary" and records[-1]["train_seconds"] >= 60e-6

    result = train(tiny_config(tmp_path, steps=4, eval_every_minutes=1e-6, name="timed"), log=quiet)
    evals = train_records(result.run_dir, "eval")
    clocks = {r["step"]: r for r in train_records(result.run_dir, "clock")}
    assert [r["step"] for r in evals] == [1, 2, 3, 4]  # every step passed the interval; the end
    assert sorted(clocks) == [1, 2, 3, 4]
    assert all(clocks[s]["train_seconds"] <= clocks[s]["seconds"] for s in clocks)
    assert [clocks[s]["train_seconds"] for s in sorted(clocks)] == sorted(clocks[s]["train_seconds"] for s in clocks)


def test_the_recipes_settings():
    fast, vit, base = (load_recipe(name) for name in ("cifar10-fast", "cifar10-fast-vit", "cifar10-baseline"))
    for config in (fast, vit, base):
        assert config.val_split == "holdout" and config.val_per_class == 500 and config.split_seed == 0
        assert config.budget_minutes == 60 and config.pipeline == "tensor" and config.image_size == 32
    assert (vit.width, vit.depth, vit.patch_size) == (base.width, base.depth, base.patch_size)  # same size
    # the hybrid: the ResNet root (stride 4) and 1x1 patches give the plain ViT's 64 tokens; the same encoder
    assert fast.model == "R+ViT-Ti/16" and fast.resnet_layers == [] and fast.patch_size == 1
    assert vit.model == "ViT-Ti/4" and vit.patch_size in (None, 4)
    assert (fast.width, fast.depth, fast.num_heads, fast.mlp_dim) == (vit.width, vit.depth, vit.num_heads, vit.mlp_dim)
    training = [k for k in fast.to_dict() if k not in ("recipe", "model", "patch_size", "resnet_layers",
                                                         "resnet_width_factor")]
    assert {k: getattr(fast, k) for k in training} == {k: getattr(vit, k) for k in training}  # the same training
    assert (vit.optimizer, vit.momentum) == ("muon", 0.95)  # Muon on the blocks' matrices, AdamW on the rest
    assert vit.patch_dropout == 0.5 and vit.cutmix_alpha == 1.0 and vit.mix_prob == 0.5 and vit.mixup_alpha == 0
    # the baseline keeps the paper's plain settings
    assert (base.optimizer, base.beta1, base.beta2, base.grad_clip, base.schedule) == ("adam", 0.9, 0.999, 1.0,
                                                                                        "cosine")
    assert base.crop == "inception" and base.hflip and base.label_smoothing == 0 and base.random_erasing == 0
    assert base.mixup_alpha == base.cutmix_alpha == 0 and base.randaugment_ops == 0 and base.ema_decay == 0
    assert base.progressive_min_size is None and base.pool == "token" and base.posemb == "learned"
    assert base.patch_dropout == 0


# ------------------------------------------------------------------------------ the recipe, end to end
@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    if not CIFAR_TAR.is_file():
        pytest.skip("needs ../shared/data/cifar10")
    tmp = tmp_path_factory.mktemp("cifar10_fast")
    data = extract_cifar_subset(CIFAR_TAR, tmp / "cifar10", per_class=30) / "train"  # 300 images
    # the recipe as it is, but for a handful of steps of small batches: its schedules then follow the steps
    config = load_recipe("cifar10-fast", dict(
        data=str(data), val_per_class=5, batch_size=25, steps=8, budget_minutes="none", warmup_steps=2,
        eval_every=4, eval_every_minutes=0, checkpoint_every=4, log_every=1, threads=1, progress=False,
        out_dir=str(tmp / "runs"), name="fast"))
    result = train(config, log=quiet)
    return result, data, tmp


@needs_cifar
def test_the_fast_recipe_trains_on_real_cifar10_images(fast_run):
    result, data, tmp = fast_run
    assert result.finished and result.step == 8 and result.val_name == "hold-out"
    records = train_records(result.run_dir)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert all(math.isfinite(r["loss"]) for r in records)
    sizes = [r["image_size"] for r in records]
    assert sizes[0] < 32 and sizes[-1] == 32 and sizes == sorted(sizes)  # progressive resolution
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["train_images"] == 250 and run["val_images"] == 50
    assert 900_000 < run["parameters"] < 3_000_000
    model = vitkit.load(result.run_dir / "model.safetensors")
    assert model.config.pool == "gap" and model.class_names[:2] == ["airplane", "automobile"]
    assert model.config.patch_dropout == 0.5  # a training setting, kept like drop_path and overridable on loading
    assert vitkit.load(result.run_dir / "model.safetensors", patch_dropout=0.0).config.patch_dropout == 0.0
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


@needs_cifar
def test_the_fast_recipes_checkpoint_works_with_eval_predict_and_inspect(fast_run, tmp_path, capsys):
    result, data, _ = fast_run
    assert main(["eval", "--checkpoint", str(result.run_dir), "--json", "--no-progress",
                 "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    evaluated = json.loads(printed[printed.index("{"):])
    assert evaluated["split"] == "hold-out" and evaluated["images"] == 50  # the run's own hold-out
    assert evaluated["top1"] == pytest.approx(result.final.top1, abs=1e-9)  # as the run measured it
    images = [str(data / "cat" / sorted(p.name for p in (data / "cat").iterdir())[0]),
              str(data / "ship" / sorted(p.name for p in (data / "ship").iterdir())[0])]
    assert main(["predict", str(result.run_dir), *images, "--top-k", "3", "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert [p["image"] for p in predictions] == images
    weights = result.run_dir / "model.safetensors"
    assert main(["inspect", "attention", str(weights), images[0], "--out", str(tmp_path / "attention.png")]) == 0
    assert main(["inspect", "distance", str(weights), "--data", str(data), "--num-images", "8",
                 "--out", str(tmp_path / "distance.png")]) == 0
    assert main(["inspect", "posemb", str(weights), "--out", str(tmp_path / "posemb.png")]) == 0
    for name in ("attention.png", "distance.png", "posemb.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_cifar
def test_the_baseline_recipe_runs_the_same_loop(fast_run):
    _, data, tmp = fast_run
    config = load_recipe("cifar10-baseline", dict(
        data=str(data), val_per_class=5, batch_size=25, steps=3, budget_minutes="none", warmup_steps=1,
        eval_every=-1, checkpoint_every=0, log_every=1, threads=1, progress=False, out_dir=str(tmp / "runs"),
        name="baseline"))
    result = train(config, log=quiet)
    assert result.finished and result.final is not None and result.final.count == 50
    assert all("image_size" not in r or r["image_size"] == 32 for r in train_records(result.run_dir))


def load_benchmark():
    spec = importlib.util.spec_from_file_location("time_to_accuracy",
                                                  REPO / "benchmarks" / "cifar10_time_to_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_cifar
def test_the_benchmark_reads_a_runs_curve_and_draws_it(fast_run, tmp_path):
    result, _, _ = fast_run
    bench = load_benchmark()
    info = bench.read_run(result.run_dir)
    assert [p["step"] for p in info["curve"]] == [4, 8]
    assert all(0 <= p["top1"] <= 1 and p["minutes"] >= 0 for p in info["curve"])
    assert info["curve"][-1]["top1"] == pytest.approx(result.final.top1)
    assert info["model"]["width"] == 128 and info["parameters"] > 0
    data = bench.write_results([{"recipe": "cifar10-fast", **info}], tmp_path, {"minutes": 1})
    assert (tmp_path / bench.RESULTS_FILE).is_file()
    assert (tmp_path / bench.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(data["runs"][0]["minutes_to"]) == {"50%", "60%", "70%", "75%", "80%", "85%"}
    # two benchmark folders (runs side by side on one core each; one run with two threads) merged into one figure
    run = {"recipe": "cifar10-fast", "run_dir": str(result.run_dir)}
    for folder, mode in (("a", "together"), ("b", "sequential")):
        (tmp_path / folder).mkdir()
        bench.write_results([{**run, "mode": mode}], tmp_path / folder, {"mode": mode})
    assert bench.main(["--merge", str(tmp_path / "a"), f"{tmp_path / 'b'}=cifar10-fast, earlier",
                       "--out", str(tmp_path / "ab")]) == 0
    merged = json.loads((tmp_path / "ab" / bench.RESULTS_FILE).read_text())
    assert [bench.resources(r) for r in merged["runs"]] == ["one core", "1 thread"]
    assert [bench.name(r) for r in merged["runs"]] == ["cifar10-fast", "cifar10-fast, earlier"]
    assert all(r["curve"] == info["curve"] for r in merged["runs"])
    assert (tmp_path / "ab" / bench.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = [{"minutes": 1.0, "top1": 0.5}, {"minutes": 2.0, "top1": 0.7, "top1_ema": 0.76}]
    assert bench.minutes_to(curve, 0.75) == 2.0 and bench.minutes_to(curve, 0.8) is None
