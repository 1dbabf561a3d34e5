"""Training and fine-tuning: the loop, optimizer and schedule, checkpoints that resume exactly, DDP.

    from vitkit.training import load_recipe, train
    result = train(load_recipe("digits"))                        # the main job; result.final.top1, result.run_dir
    result = train(load_recipe("cifar10", {"data": "/tmp/cifar10", "steps": 100}))
    result = train(load_run_config("runs/NAME"), resume="runs/NAME")   # continue a run
"""

from .checkpoint import latest_checkpoint, list_checkpoints, resolve_model_path
from .config import TrainConfig, list_recipes, load_recipe, main_job, smoke
from .optim import EMA, OptimizerSettings, build_optimizer, learning_rate, param_groups
from .trainer import TrainingError, TrainResult, load_run_config, train

__all__ = [
    "train", "TrainConfig", "TrainResult", "TrainingError", "load_recipe", "list_recipes", "main_job", "smoke",
    "load_run_config", "latest_checkpoint", "list_checkpoints", "resolve_model_path", "param_groups",
    "build_optimizer", "OptimizerSettings", "learning_rate", "EMA",
]
