"""vitkit: Vision Transformers (Dosovitskiy et al., 2020) in PyTorch.

    import vitkit
    model = vitkit.create_model("ViT-B/16", num_classes=10)
    model = vitkit.load("ViT-B_16.npz", num_classes=10, resample_to=384)   # the paper's fine-tuning set-up
    model = vitkit.load("vit-b16-in21k-ft-in1k-384")                      # a published checkpoint, by name
    vitkit.save(model, "model.safetensors")

    result = vitkit.train()                                   # the main job: a small ViT on the built-in digits
    vitkit.predict(result.run_dir, "digit.png", top_k=3)     # [[("7", 0.98), ("1", 0.01), ("9", 0.004)]]
    vitkit.evaluate(result.run_dir)["top1"]                   # the run's own test split, scored again
"""

from .api import evaluate, finetune, predict, train
from .checkpoints import load, read_checkpoint, save
from .configs import Preprocessing, ResNetConfig, ViTConfig, list_models, variant_config
from .errors import CheckpointError, GuessWarning
from .hub.catalog import PretrainedCheckpoint, list_pretrained
from .models import VisionTransformer, count_flops, count_parameters, create_model
from .models.posemb import resample_pos_embed

__version__ = "0.1.0"

__all__ = [
    "train",
    "finetune",
    "evaluate",
    "predict",
    "create_model",
    "list_models",
    "list_pretrained",
    "PretrainedCheckpoint",
    "load",
    "save",
    "read_checkpoint",
    "resample_pos_embed",
    "VisionTransformer",
    "ViTConfig",
    "ResNetConfig",
    "Preprocessing",
    "CheckpointError",
    "GuessWarning",
    "variant_config",
    "count_parameters",
    "count_flops",
]
