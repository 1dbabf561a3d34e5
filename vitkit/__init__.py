"""vitkit: Vision Transformers (Dosovitskiy et al., 2020) in PyTorch.

    import vitkit
    model = vitkit.create_model("ViT-B/16", num_classes=10)
    model = vitkit.load("ViT-B_16.npz", num_classes=10, resample_to=384)   # the paper's fine-tuning set-up
    model = vitkit.load("vit-b16-in21k-ft-in1k-384")                      # a published checkpoint, by name
    vitkit.save(model, "model.safetensors")
"""

from .checkpoints import load, read_checkpoint, save
from .configs import Preprocessing, ResNetConfig, ViTConfig, list_models, variant_config
from .errors import CheckpointError, GuessWarning
from .hub.catalog import PretrainedCheckpoint, list_pretrained
from .models import VisionTransformer, count_flops, count_parameters, create_model
from .models.posemb import resample_pos_embed

__version__ = "0.1.0"

__all__ = [
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
