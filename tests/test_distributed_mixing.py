"""`torchrun --nproc-per-node 2` (DDP over gloo, on CPU) computes the steps of one process with the same global
batch also when Mixup and CutMix, label smoothing, random erasing, RandAugment and repeated augmentation are on, in
both data pipelines: partners, ratios, boxes and every image's augmentation are functions of the global batch,
not of the rank."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import torch

import vitkit
from vitkit.training.trainer import train

from test_distributed import records, torchrun
from test_train import TINY, tiny_config

MIXING = dict(mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=1.0, label_smoothing=0.1, random_erasing=0.5)
COMMON = dict(steps=4, warmup_steps=1, optimizer="sgd", lr=0.2, weight_decay=1e-4, limit_per_class=6, seed=3)


def run_both(tmp_path, name: str, settings: dict) -> tuple[list[float], list[float]]:
    single = train(tiny_config(tmp_path, name=f"{name}-single", **settings), log=lambda m: None)
    flags = ["--data", "digits", "--out-dir", str(tmp_path / "runs"), "--name", f"{name}-ddp", "--progress",
             "false", "--num-workers", "0", "--log-every", "1", "--eval-every", "-1", "--crop", "inception",
             "--crop-min-area", "0.5", "--hflip", "false", "--schedule", "cosine", "--device", "cpu"]
    flags += [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, **settings}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([*torchrun(), "--standalone", "--nproc-per-node", "2", "-m", "vitkit", "train",
                             "--recipe", "digits", *flags], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    ddp_run = tmp_path / "runs" / f"{name}-ddp"
    assert json.loads((ddp_run / "run.json").read_text())["world_size"] == 2
    return ([r["loss"] for r in records(single.run_dir, "train")], [r["loss"] for r in records(ddp_run, "train")])


def test_stochastic_depth_and_patch_dropout_masks_do_not_depend_on_the_split():
    model = vitkit.create_model("ViT-Ti/4", image_size=16, width=32, depth=3, num_heads=2, mlp_dim=64,
                                drop_path=0.5, patch_dropout=0.25, num_classes=5).train()
    torch.nn.init.normal_(model.head.weight)  # (a zero head would hide every difference)
    images = torch.randn(6, 3, 16, 16)
    model.share_masks((7, 0, 6))
    whole = model(images)
    parts = []
    for offset in (0, 2, 4):  # three "ranks" of two images each
        model.share_masks((7, offset, 6))
        parts.append(model(images[offset:offset + 2]))
    assert torch.equal(torch.cat(parts), whole)
    model.share_masks((8, 0, 6))
    assert not torch.equal(model(images), whole)  # another step: other masks


def test_pil_pipeline_with_mixing_randaugment_stochastic_depth_and_patch_dropout(tmp_path):
    # shards of 2 images: each rank holds its own Mixup/CutMix pairs
    single, ddp = run_both(tmp_path, "pil", dict(**COMMON, **MIXING, batch_size=8, accum_steps=2,
                                                 randaugment_ops=2, pipeline="pil", drop_path=0.3,
                                                 patch_dropout=0.25))
    assert len(single) == 4 and ddp == pytest.approx(single, rel=1e-5, abs=1e-6)


def test_tensor_pipeline_with_mixing_and_odd_shards(tmp_path):
    # micro-batches of 6, shards of 3: the pairs (2, 3) straddle the ranks, so the micro-batch is gathered;
    # repeated augmentation: 4 images 3 times each per step, the copies on both ranks
    single, ddp = run_both(tmp_path, "tensor", dict(**COMMON, **MIXING, batch_size=12, accum_steps=2,
                                                    repeated_augmentation=3, pipeline="tensor", crop="pad_crop",
                                                    crop_padding=2))
    assert len(single) == 4 and ddp == pytest.approx(single, rel=1e-5, abs=1e-6)
