"""Training options that the papers' recipes need: the evaluation crop (crop_pct) stored with the model, and the
pre-training head with one hidden layer (representation_size)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli import main
from vitkit.data.transforms import eval_transform
from vitkit.errors import UsageError
from vitkit.training.config import TrainConfig
from vitkit.training.trainer import train

from test_train import tiny_config


def quiet(message: str) -> None:
    pass


def finetune_config(tmp_path, init_from, **changes) -> TrainConfig:
    """tiny_config's run, from a checkpoint (whose architecture it takes)."""
    shape = dict(patch_size=None, width=None, depth=None, num_heads=None, mlp_dim=None)
    return tiny_config(tmp_path, steps=1, init_from=str(init_from), num_classes=10, reset_head=True, **shape,
                       **changes)


def test_crop_pct_is_stored_with_the_model_and_used_by_its_evaluation(tmp_path):
    result = train(tiny_config(tmp_path, name="crop", steps=1, image_size=8, crop_pct=0.5), log=quiet)
    model = vitkit.load(result.run_dir / "model.safetensors")
    assert model.preprocessing.crop_pct == 0.5
    # a 16 x 8 image, left half red, right half blue: the shorter side to 16, then the central 8 x 8
    array = np.zeros((8, 16, 3), dtype=np.uint8)
    array[:, :8, 0] = 255
    array[:, 8:, 2] = 255
    x = eval_transform(model.preprocessing)(Image.fromarray(array))
    assert x.shape == (3, 8, 8)
    red = x[0] > 0
    assert red[:, :4].all() and not red[:, 4:].any()  # a centre crop, not the whole image squeezed
    fine = train(finetune_config(tmp_path, result.run_dir, name="fine"), log=quiet)
    assert vitkit.load(fine.run_dir / "model.safetensors").preprocessing.crop_pct == 0.5  # the checkpoint's
    plain = train(tiny_config(tmp_path, name="plain", steps=1, image_size=8), log=quiet)
    assert vitkit.load(plain.run_dir / "model.safetensors").preprocessing.crop_pct == 1.0
    with pytest.raises(UsageError, match="crop_pct"):
        TrainConfig(crop_pct=1.5)


def test_representation_size_trains_an_mlp_head_that_fine_tuning_drops(tmp_path):
    result = train(tiny_config(tmp_path, name="pre", steps=2, representation_size=16), log=quiet)
    model = vitkit.load(result.run_dir / "model.safetensors")
    assert model.config.representation_size == 16
    assert isinstance(model.pre_logits.act, torch.nn.Tanh) and model.pre_logits.fc.out_features == 16
    assert model.head.in_features == 16
    fine = train(finetune_config(tmp_path, result.run_dir, name="fine"), log=quiet)
    assert vitkit.load(fine.run_dir / "model.safetensors").config.representation_size is None
    with pytest.raises(UsageError, match="representation-size"):
        train(finetune_config(tmp_path, result.run_dir, name="bad", representation_size=8), log=quiet)


def test_the_new_options_are_flags(capsys):
    assert main(["train", "--crop-pct", "0.875", "--representation-size", "768", "--ema-warmup", "--ema-decay", "0.999",
                 "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["crop_pct"] == 0.875 and config["representation_size"] == 768 and config["ema_warmup"] is True
