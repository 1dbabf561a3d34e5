"""The learning rate and the weight average do what the recipes promise at the steps that actually run."""

from __future__ import annotations

import pytest
import torch

from vitkit.training.config import TrainConfig, load_recipe
from vitkit.training.optim import EMA, learning_rate
from vitkit.training.schedule import Schedule, ScheduleSettings


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_the_last_executed_step_runs_at_min_lr(schedule):
    steps, warmup = 50, 5
    config = TrainConfig(lr=1.0, min_lr=0.01, schedule=schedule, warmup_steps=warmup, steps=steps)
    plan = Schedule(ScheduleSettings.from_config(config), steps, warmup, image_size=32, patch_step=4)
    rates = [plan.lr(step, 0.0) for step in range(steps)]  # the steps a run executes: 0 .. steps - 1
    assert rates[warmup - 1] == pytest.approx(1.0) and rates[warmup] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.01, abs=1e-12)
    assert all(a >= b for a, b in zip(rates[warmup:], rates[warmup + 1:]))
    assert rates[-2] > 0.01


def test_a_recipes_last_step_runs_at_its_end_rate():
    deit = load_recipe("deit")  # cosine to min_lr 1e-5 over 300 epochs: the last step must be there
    total = 1000
    assert learning_rate(total - 1, total, deit.lr, 50, deit.schedule, deit.min_lr) == pytest.approx(deit.min_lr)


def test_ema_decay_is_the_setting_at_the_last_step_of_the_recipe():
    recipe = load_recipe("finetune-imagenet")
    assert recipe.ema_decay == 0.9999 and not recipe.ema_warmup
    model = torch.nn.Linear(2, 2, bias=False)
    ema = EMA(model, recipe.ema_decay, warmup=recipe.ema_warmup)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.shadow["weight"].clone()
    ema.update(model, num_updates=recipe.steps - 1)  # the last update of the run
    moved = (ema.shadow["weight"] - before).mean().item()
    assert moved == pytest.approx(1.0 - 0.9999, rel=1e-3)  # the update used decay 0.9999, not 0.99955


def test_ema_decay_is_the_setting_from_the_first_update_and_warms_up_only_when_asked():
    model = torch.nn.Linear(2, 2)
    assert EMA(model, 0.999).decay_at(0) == 0.999
    warm = EMA(model, 0.9999, warmup=True)
    assert warm.decay_at(0) == pytest.approx(0.1) and warm.decay_at(19_999) == pytest.approx(20_000 / 20_009)
    assert warm.decay_at(10**7) == 0.9999
