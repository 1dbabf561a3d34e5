"""The training configuration: one flat dataclass, recipes as TOML files, overrides from the command line.

`TrainConfig()`'s defaults are the paper's pre-training settings (Appendix B.1: ViT-B/16 at 224 px, Adam with
decoupled weight decay 0.1, 10k warm-up steps then linear decay, clipping at 1, batch 4096). A recipe file sets
the fields it changes (`recipes/digits.toml` is the main job, `vitkit train` with no arguments), and every field
can be overridden again from the command line, either with its own flag (`--lr 3e-3`) or with `--set lr=3e-3`. Recipe files may group their keys in tables (`[optim]`, `[data]`, ...) for the reader; the
tables are flattened, so a key means the same in any table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configs import POOLS, variant_config
from ..data.randaugment import STYLES as RANDAUGMENT_STYLES
from ..errors import UsageError
from ..models.fast import compile_mode_problem
from ..models.posemb import RESAMPLE_METHODS
from ..options import AT_LEAST_ONE, COUNT, NON_NEGATIVE, POSITIVE, RATE, SHARE, Range, device_name
from .optim import OPTIMIZER_READS

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"  # installed with the package (the repository's
# recipes/ is a link to it)


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


def _fl(default, help: str):
    return field(default_factory=lambda: list(default), metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run needs; `resolved()` fills in what depends on the data and the model."""

    # ------------------------------------------------------------------------------------------------ data
    data: str = _f("digits", "'digits' (scikit-learn's 1,797 handwritten digits), an ImageFolder tree, a "
                   "CIFAR-10/100 python-pickle folder, or tar shards of vitkit data pack ('OUT/shard-{000000..000009}"
                   ".tar', the folder OUT, an http(s):// or pipe: pattern)")
    val_split: str = _f("auto", "auto: the data's own val/test split if it has one, else a hold-out from train; "
                        "holdout: always hold out from train; none: no evaluation set")
    val_fraction: float = _f(0.1, "share of each class held out for validation (when holding out)", range=RATE)
    val_per_class: int | None = _f(None, "images of each class held out for validation; overrides val_fraction",
                                   range=AT_LEAST_ONE)
    split_seed: int = _f(0, "seed of the hold-out split (fixed apart from `seed`, so runs share their split)",
                         range=COUNT)
    limit_per_class: int | None = _f(None, "use at most this many images of each class (a seeded choice)",
                                     range=AT_LEAST_ONE)
    max_bad_fraction: float = _f(0.01, "stop when more than this share of the files cannot be read as images",
                                 range=SHARE)
    num_workers: int = _f(-1, "data loader processes per rank; -1 chooses (0 for data held in memory)",
                          range=Range(-1, integer=True))
    cache_images: str = _f("auto", "keep decoded images in memory: auto (when they fit in 2 GiB), yes, no")

    # ----------------------------------------------------------------------------------------------- model
    model: str = _f("ViT-B/16", "a registered variant (see `vitkit models`); the fields below override it")
    init_from: str | None = _f(None, "start from this checkpoint (vitkit, Google .npz, timm, Hugging Face; a "
                               "pre-trained name from vitkit models --pretrained, or a URI)")
    reset_head: bool = _f(False, "drop the checkpoint's head for a zero-initialised one (the paper's fine-tuning)")
    num_classes: int | None = _f(None, "classes of the head; default: the data's", range=AT_LEAST_ONE)
    image_size: int | None = _f(None, "input resolution in pixels (square); default: the variant's or checkpoint's",
                                range=AT_LEAST_ONE)
    patch_size: int | None = _f(None, "patch side in pixels", range=AT_LEAST_ONE)
    width: int | None = _f(None, "token width D", range=AT_LEAST_ONE)
    depth: int | None = _f(None, "encoder blocks", range=AT_LEAST_ONE)
    num_heads: int | None = _f(None, "attention heads", range=AT_LEAST_ONE)
    mlp_dim: int | None = _f(None, "hidden width of each MLP", range=AT_LEAST_ONE)
    pool: str | None = _f(None, "token (class token) or gap (global average pooling)")
    posemb: str | None = _f(None, "learned, learned_2d, sincos_2d or none")
    resnet_layers: list[int] | None = _f(None, "the hybrid's ResNet stem (Section 3.1): bottleneck units per stage, "
                                         "e.g. 3,4,9 (R50's first three); [] keeps only the root (conv 7x7/2, "
                                         "GroupNorm, max-pool 3x3/2); set on a plain variant, it makes it a hybrid")
    resnet_width_factor: float | None = _f(None, "the hybrid's ResNet stem: root width 64 x this (a multiple of 0.5)",
                                           range=Range(0, 64, lo_open=True))
    attention_init: str = _f("default", "a fresh model's attention weights: default (the original code's Xavier) or "
                             "mimetic (query-key products near the identity, value-output near minus it: Trockman "
                             "& Kolter 2023)")
    dropout: float = _f(0.0, "dropout after the position embeddings, attention output and MLP layers", range=RATE)
    attention_dropout: float = _f(0.0, "dropout on the attention weights", range=RATE)
    drop_path: float = _f(0.0, "stochastic depth rate of the last block (rises linearly over the blocks)", range=RATE)
    patch_dropout: float = _f(0.0, "in training, drop this share of each image's patch tokens (a random subset, "
                              "after the position embeddings): fewer tokens per step, and a regulariser", range=RATE)
    resample_method: str | None = _f(None, "position embedding resampling when the image size changes: bilinear, "
                                     "bicubic, bicubic-antialias (timm's) or nearest; default: the checkpoint "
                                     "family's (bilinear for Google's, as its code)")

    # ---------------------------------------------------------------------------- preprocessing, augmentation
    mean: list[float] | None = _f(None, "per-channel mean; default: the checkpoint's, else 0.5 (scaling to [-1, 1])")
    std: list[float] | None = _f(None, "per-channel std; default: the checkpoint's, else 0.5")
    interpolation: str | None = _f(None, "bilinear, bicubic or nearest; default: the checkpoint's, else bilinear")
    crop: str = _f("inception", "training crop: inception (random resized crop), resize (no crop), "
                   "pad_crop (pad then random crop, for small images)")
    crop_min_area: float = _f(0.05, "smallest crop area of the inception crop, as a share of the image",
                              range=Range(0, 1, lo_open=True))
    crop_padding: int = _f(4, "padding of pad_crop in pixels of the resized image", range=COUNT)
    hflip: bool = _f(True, "random horizontal flips")
    randaugment_ops: int = _f(0, "RandAugment: operations per image (0 turns it off)", range=COUNT)
    randaugment_magnitude: int = _f(9, "RandAugment: magnitude, on the scale of randaugment_style",
                                    range=Range(0, 30, integer=True))
    mixup_alpha: float = _f(0.0, "Mixup: Beta(alpha, alpha) mixing (0 turns it off)", range=NON_NEGATIVE)
    cutmix_alpha: float = _f(0.0, "CutMix: Beta(alpha, alpha) box area (0 turns it off)", range=NON_NEGATIVE)
    mix_prob: float = _f(1.0, "share of batches that are mixed when Mixup or CutMix is on", range=SHARE)
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy", range=RATE)
    random_erasing: float = _f(0.0, "random erasing: share of the training images that get one box of noise (2% "
                               "to 1/3 of the area, as timm)", range=SHARE)

    # -------------------------------------------------------------------------------------- optimisation
    optimizer: str = _f("adam", "adam (Adam with decoupled weight decay, the paper's pre-training), sgd "
                        "(momentum, the paper's fine-tuning) or muon (Muon on the encoder blocks' weight matrices, "
                        "AdamW on the rest)")
    lr: float = _f(1e-3, "peak learning rate", range=POSITIVE)
    beta1: float = _f(0.9, "Adam beta1", range=RATE)
    beta2: float = _f(0.999, "Adam beta2", range=RATE)
    momentum: float | None = _f(None, "SGD's momentum and Muon's; default: 0.9 for SGD (the paper's fine-tuning), "
                                "0.95 for Muon (torch.optim.Muon's default)", range=RATE)
    weight_decay: float = _f(0.1, "decoupled weight decay, not on biases, norms, position embeddings, class token",
                             range=NON_NEGATIVE)
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 turns it off)", range=NON_NEGATIVE)
    schedule: str = _f("linear", "learning rate decay after warm-up: cosine, linear or constant")
    warmup_steps: int = _f(10_000, "linear warm-up steps", range=COUNT)
    warmup_epochs: float = _f(0.0, "linear warm-up in epochs (used when warmup_steps is 0)", range=NON_NEGATIVE)
    min_lr: float = _f(0.0, "learning rate at the end of the decay", range=NON_NEGATIVE)
    batch_size: int = _f(4096, "global batch: images per optimizer step, over all processes", range=AT_LEAST_ONE)
    accum_steps: int = _f(1, "gradient accumulation: micro-batches per step (each batch_size / accum_steps / ranks)",
                          range=AT_LEAST_ONE)
    steps: int | None = _f(None, "optimizer steps; default: from epochs", range=AT_LEAST_ONE)
    epochs: float | None = _f(7.0, "passes over the training data (used when steps is not set)", range=POSITIVE)
    ema_decay: float = _f(0.0, "Polyak averaging of the weights with this decay (0 turns it off)", range=RATE)

    # --------------------------------------------------------------- time budget, fast training on small images
    budget_minutes: float | None = _f(None, "train for this many minutes (the loop's wall time, less evaluations "
                                      "and checkpoints); the schedules then follow the share of the budget spent, "
                                      "and steps is only an upper bound", range=POSITIVE)
    eval_every_minutes: float = _f(0.0, "also evaluate each time this many minutes of training have passed",
                                   range=NON_NEGATIVE)
    pipeline: str = _f("pil", "training data path: pil (PIL transforms per image, in loader processes) or tensor "
                       "(images decoded once into one uint8 tensor in memory, augmented a batch at a time: for "
                       "small images of one size)")
    progressive_min_size: int | None = _f(None, "progressive resolution: train at this image size first, growing "
                                          "linearly to image_size by progressive_until", range=AT_LEAST_ONE)
    progressive_until: float = _f(0.5, "share of the run at which progressive resolution reaches image_size",
                                  range=SHARE)

    # ----------------------------------------------------------------------------------------- numerics
    precision: str = _f("fp32", "fp32, bf16 (autocast, CPU or GPU) or fp16 (autocast with a grad scaler, GPU)")
    compile: bool = _f(False, "torch.compile the model")
    compile_backend: str = _f("inductor", "torch.compile backend")
    compile_mode: str = _f("default", "torch.compile mode (inductor): default, reduce-overhead (CUDA graphs, GPUs "
                           "only), max-autotune (on the CPU: also tries inductor's C++ matrix-product kernels) or "
                           "max-autotune-no-cudagraphs")
    device: str = _f("auto", "auto (GPU when there is one), cpu, cuda, cuda:N or mps")
    threads: int = _f(0, "CPU threads of each process for the model's math; 0: PyTorch's choice (all cores, shared "
                      "among the processes of a machine under torchrun)", range=COUNT)
    seed: int = _f(0, "seed of initialisation, data order, augmentation and dropout", range=COUNT)
    deterministic: bool = _f(False, "bitwise reproducible: deterministic algorithms only, one CPU thread unless "
                             "threads is set, no cuDNN autotuning (slower; a killed and resumed run then ends with "
                             "exactly the weights of an uninterrupted one)")
    on_nonfinite: str = _f("stop", "a NaN or infinite loss or gradient norm: stop (the last checkpoint stays the "
                           "last good one) or skip (drop that step's update and go on; checks every step)")

    # ---------------------------------------------------------------------------------------------- run
    out_dir: str = _f("runs", "folder of the runs")
    name: str | None = _f(None, "run name (the folder out_dir/name); default: recipe and time")
    log_every: int = _f(10, "steps between log lines", range=AT_LEAST_ONE)
    eval_every: int = _f(0, "steps between evaluations; 0: once per epoch; -1: only at the end",
                         range=Range(-1, integer=True))
    eval_flip: bool = _f(False, "evaluate with test-time flip averaging: each image's class probabilities averaged "
                         "with its mirror image's (twice the evaluation's compute); vitkit eval of the run does "
                         "the same unless told --no-flip")
    eval_batch_size: int | None = _f(None, "batch size of evaluation; default: batch_size / accum_steps",
                                     range=AT_LEAST_ONE)
    checkpoint_every: int = _f(0, "steps between checkpoints; 0: only at the end", range=COUNT)
    keep_checkpoints: int = _f(3, "keep the last this many checkpoints (0 keeps all)", range=COUNT)
    stop_after: int | None = _f(None, "end this invocation after this many steps (the schedule still spans all)",
                                range=AT_LEAST_ONE)
    progress: bool = _f(True, "show progress bars")
    log: str = _f("none", "experiment loggers beside metrics.jsonl and metrics.csv (always written): tensorboard "
                  "(event files in RUN/tensorboard), wandb (when installed), both comma-separated, or none")
    recipe: str | None = _f(None, "the recipe this config came from (informational)")

    # ------------------------------------------------------------------- fidelity to the papers (issue 19)
    ema_warmup: bool = _f(False, "warm the EMA decay up as min(ema_decay, (1 + n) / (10 + n)) over the n updates "
                          "so far (off: ema_decay from the first update, as the paper's code)")
    crop_pct: float | None = _f(None, "evaluation: resize the shorter side to image_size / crop_pct, then take the "
                                "central image_size crop (DeiT, AugReg: 0.875, 256 -> 224); 1: resize to image_size; "
                                "default: the checkpoint's, else 1; stored with the model",
                                range=Range(0, 1, lo_open=True))
    representation_size: int | None = _f(None, "a pre-training head with one hidden layer of this width (Dense + "
                                         "tanh, the paper's pre-logits, Section 3.1); fine-tuning drops it",
                                         range=AT_LEAST_ONE)
    randaugment_style: str = _f("torchvision", "whose RandAugment, and so the scale of randaugment_magnitude: timm "
                                "(DeiT; 0-10, m9 rotates up to 27 degrees), big_vision (AugReg; magnitude / 10, "
                                "unclipped: m15 rotates 45 degrees) or torchvision (0-30: m9 rotates 9 degrees)")
    randaugment_magnitude_std: float = _f(0.0, "RandAugment (timm style): Gaussian noise of this std on the "
                                          "magnitude of each operation (DeiT: 0.5)", range=NON_NEGATIVE)
    randaugment_increasing: bool = _f(False, "RandAugment (timm style): the operations whose strength increases "
                                      "with the magnitude (timm's inc1, DeiT)")
    repeated_augmentation: int = _f(1, "repeated augmentation: each step's batch holds about batch_size / this "
                                    "many images, each this many times with different augmentations (DeiT: 3); "
                                    "an epoch then sees a share 1/this of the images", range=AT_LEAST_ONE)

    # ----------------------------------------------------------------------------- scaling out (issue 17)
    parallel: str = _f("ddp", "under torchrun: ddp (a copy of the model per process) or fsdp (FSDP2: parameters, "
                       "gradients and optimizer state sharded; sharded checkpoints)")
    fsdp_param_dtype: str = _f("fp32", "fsdp: dtype the gathered parameters compute in (bf16: mixed precision; "
                               "master weights, gradient reduction and optimizer stay fp32)")
    checkpoint_blocks: bool = _f(False, "activation checkpointing: each encoder block recomputes its activations "
                                 "in the backward pass (less memory, for one more forward pass per block)")
    shard_streams: int = _f(8, "data given as tar shards: lanes the stream is cut into (fixed by the config, not "
                            "the world size; a multiple of processes x loader workers reads no shard twice)",
                            range=AT_LEAST_ONE)
    shuffle_buffer: int = _f(1000, "data given as tar shards: samples shuffled together in each lane",
                             range=AT_LEAST_ONE)

    def __post_init__(self):
        # every number against its range (the `range` of its field), and the device's spelling, at construction:
        # TrainConfig(ema_decay=1.5) and --ema-decay 1.5 fail alike
        for name, f in FIELDS.items():
            value = getattr(self, name)
            if "range" in f.metadata and value is not None:
                check_range(name, value)
        check_device(self.device)
        self.device = device_name(self.device)

    # ------------------------------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TrainConfig":
        def fail(msg):
            raise UsageError(f"invalid training config: {msg}")

        choices = dict(val_split=("auto", "holdout", "none"), cache_images=("auto", "yes", "no"),
                       crop=("inception", "resize", "pad_crop"), optimizer=tuple(OPTIMIZER_READS),
                       schedule=("cosine", "linear", "constant"), precision=("fp32", "bf16", "fp16"),
                       interpolation=("bilinear", "bicubic", "nearest", None), pool=(*POOLS, None),
                       on_nonfinite=("stop", "skip"), attention_init=("default", "mimetic"),
                       resample_method=(*RESAMPLE_METHODS, None))
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                named = [str(a) for a in allowed if a is not None]  # None: unset, the default
                fail(f"{key}={getattr(self, key)!r}, expected one of {', '.join(named)}")
        if self.compile:
            import torch._dynamo

            backends = torch._dynamo.list_backends(exclude_tags=())
            if self.compile_backend not in backends:
                fail(f"compile_backend={self.compile_backend!r} is not a torch.compile backend here; expected one "
                     f"of {', '.join(torch._dynamo.list_backends())} (or eager, aot_eager for debugging)")
        if self.name is not None and (self.name in ("", ".", "..") or any(c in self.name for c in "/\\")):
            fail(f"name={self.name!r} (--name) must be one folder name inside out_dir (--out-dir), without / or ..")
        problem = compile_mode_problem(self.compile_mode, compile=self.compile, backend=self.compile_backend,
                                       device=None if self.device == "auto" else self.device)
        if problem:
            fail(problem)
        if self.batch_size < 1 or self.accum_steps < 1:
            fail("batch_size and accum_steps must be positive")
        if self.batch_size % self.accum_steps:
            fail(f"batch_size {self.batch_size} is not divisible by accum_steps {self.accum_steps}")
        if self.steps is None and self.epochs is None:
            fail("set steps or epochs")
        if self.steps is not None and self.steps < 1:
            fail(f"steps must be positive, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0 and self.steps is None:
            fail(f"epochs must be positive, got {self.epochs}")
        if not 0 <= self.max_bad_fraction <= 1:
            fail(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if not 0 < self.val_fraction < 1 and self.val_per_class is None and self.val_split != "none":
            fail(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 < self.crop_min_area <= 1:
            fail(f"crop_min_area must be in (0, 1], got {self.crop_min_area}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != 3:
                fail(f"{key} needs 3 values, got {value}")
            if value is not None and not all(math.isfinite(v) for v in value):
                fail(f"{key} must be finite, got {value}")
        if self.std is not None and min(self.std) <= 0:
            fail(f"std must be positive, got {self.std}")
        if self.lr <= 0 or not math.isfinite(self.lr):
            fail(f"lr must be positive, got {self.lr}")
        if self.pipeline not in ("pil", "tensor"):
            fail(f"pipeline={self.pipeline!r}, expected one of pil, tensor")
        if not 0 <= self.random_erasing <= 1:
            fail(f"random_erasing must be in [0, 1], got {self.random_erasing}")
        if self.randaugment_style not in RANDAUGMENT_STYLES:
            fail(f"randaugment_style={self.randaugment_style!r}, expected one of {', '.join(RANDAUGMENT_STYLES)}")
        if self.randaugment_ops > 0:
            if self.pipeline != "pil":
                fail("randaugment_ops needs pipeline='pil' (the tensor pipeline has no RandAugment)")
            if self.randaugment_style == "timm" and self.randaugment_magnitude > 10:
                fail(f"randaugment_magnitude={self.randaugment_magnitude} is beyond timm's scale of 0-10")
            if self.randaugment_style != "timm" and (self.randaugment_magnitude_std > 0 or self.randaugment_increasing):
                fail("randaugment_magnitude_std and randaugment_increasing are timm's; randaugment_style="
                     f"{self.randaugment_style!r} has neither")
        if self.budget_minutes is not None and not (self.budget_minutes > 0 and math.isfinite(self.budget_minutes)):
            fail(f"budget_minutes must be positive, got {self.budget_minutes}")
        if not (self.eval_every_minutes >= 0 and math.isfinite(self.eval_every_minutes)):
            fail(f"eval_every_minutes must be >= 0, got {self.eval_every_minutes}")
        from .metrics_log import parse_loggers

        parse_loggers(self.log)
        if self.progressive_min_size is not None and self.progressive_min_size < 1:
            fail(f"progressive_min_size must be positive, got {self.progressive_min_size}")
        if not 0 <= self.progressive_until <= 1:
            fail(f"progressive_until must be in [0, 1], got {self.progressive_until}")
        if self.parallel not in ("ddp", "fsdp"):
            fail(f"parallel={self.parallel!r}, expected one of ddp, fsdp")
        if self.fsdp_param_dtype not in ("fp32", "bf16"):
            fail(f"fsdp_param_dtype={self.fsdp_param_dtype!r}, expected one of fp32, bf16")
        if self.fsdp_param_dtype != "fp32" and self.parallel != "fsdp":
            fail(f"fsdp_param_dtype={self.fsdp_param_dtype} needs parallel='fsdp' (with DDP use precision='bf16')")
        if self.parallel == "fsdp" and self.optimizer == "muon":
            fail("optimizer='muon' needs parallel='ddp' (Muon orthogonalises whole weight matrices, which FSDP "
                 "shards)")
        if self.parallel == "fsdp" and self.ema_decay > 0:
            fail("ema_decay needs parallel='ddp' (the weight average of a sharded model is not implemented)")
        if self.init_from is not None and self.attention_init != "default":
            fail(f"init_from={self.init_from}: the weights come from the checkpoint; drop --attention-init "
                 f"{self.attention_init} (it sets a fresh model's attention weights)")
        from ..data.shards import is_shard_spec

        if is_shard_spec(self.data):
            for key, value, default in (("pipeline", self.pipeline, "pil"), ("val_split", self.val_split, "auto"),
                                        ("limit_per_class", self.limit_per_class, None),
                                        ("val_per_class", self.val_per_class, None)):
                if value != default and not (key == "val_split" and value == "none"):
                    fail(f"{key}={value!r} cannot be honoured with tar shards as data ({self.data}); the shards "
                         "stream as packed (pack a subset with vitkit data pack --limit-per-class)")
        return self


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
ARCHITECTURE_FIELDS = ("patch_size", "width", "depth", "num_heads", "mlp_dim", "pool", "posemb", "representation_size",
                       "resnet_layers", "resnet_width_factor")
# What decides the model a run starts with: fixed by its checkpoints once it has started (--resume cannot change it).
MODEL_FIELDS = ("model", "init_from", "reset_head", "num_classes", "image_size", *ARCHITECTURE_FIELDS, "attention_init",
                "resample_method")
_HINTS = typing.get_type_hints(TrainConfig)


def range_of(name: str) -> Range | None:
    """The allowed numbers of a field, None for fields that are not numbers."""
    return FIELDS[name].metadata.get("range")


def check_range(name: str, value: Any) -> None:
    """A UsageError naming the field, its flag and the allowed range when `value` is outside it."""
    problem = range_of(name).problem(value)
    if problem:
        raise UsageError(f"invalid training config: {name} (--{name.replace('_', '-')}) {problem}")


def idle_settings(c: TrainConfig) -> dict[str, str]:
    """The settings that act only beside another which is off in `c`, changed from their defaults: field -> what it
    needs."""
    from ..data.shards import is_shard_spec

    no_val = c.val_split == "none"
    no_randaugment = c.randaugment_ops == 0
    rules = {
        "mix_prob": (c.mixup_alpha == 0 and c.cutmix_alpha == 0, "Mixup or CutMix (--mixup-alpha, --cutmix-alpha)"),
        "crop_padding": (c.crop != "pad_crop", "--crop pad_crop"),
        "randaugment_magnitude": (no_randaugment, "RandAugment (--randaugment-ops)"),
        "randaugment_magnitude_std": (no_randaugment, "RandAugment (--randaugment-ops)"),
        "randaugment_increasing": (no_randaugment, "RandAugment (--randaugment-ops)"),
        "eval_every": (no_val, "a validation split (--val-split none has none)"),
        "eval_every_minutes": (no_val, "a validation split (--val-split none has none)"),
        "val_per_class": (no_val, "a hold-out (--val-split none makes none)"),
        "ema_warmup": (c.ema_decay == 0, "an EMA of the weights (--ema-decay)"),
        "shuffle_buffer": (c.data is not None and not is_shard_spec(c.data), "data given as tar shards"),
    }
    return {name: needs for name, (idle, needs) in rules.items() if idle and getattr(c, name) != FIELDS[name].default}


def check_device(value: Any) -> None:
    """The device's spelling (auto, cpu, cuda, cuda:N, mps); whether the machine has it is checked when training."""
    try:
        device_name(value)
    except UsageError as e:
        raise UsageError(f"invalid training config: device (--device) {str(e).split(': ', 1)[-1]}, got {value!r}") \
            from None


# ------------------------------------------------------------------------------------------- value parsing
def _base_type(name: str):
    """(type, optional) of a field: int | None -> (int, True)."""
    hint = _HINTS[name]
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    return hint, optional


def parse_value(name: str, value: Any) -> Any:
    """Coerce a value from a recipe file or the command line (a string) to the field's type."""
    if name not in FIELDS:
        raise UsageError(f"unknown training option {name!r}; known: {', '.join(FIELDS)}")
    hint, optional = _base_type(name)
    none_is_a_value = name == "posemb"  # posemb "none": no position embeddings (POSEMBS), not "unset"
    unset = ("null",) if none_is_a_value else ("none", "null")
    if isinstance(value, str) and value.strip().lower() in unset and optional:
        return None
    if value is None:
        if optional:
            return None
        raise UsageError(f"option {name} cannot be empty")
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(value)
                return int(value)
            return int(str(value).replace("_", ""))
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            return str(value)
        if typing.get_origin(hint) is list:
            if isinstance(value, str):
                text = value.strip()
                items = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
            else:
                items = list(value)
            item = typing.get_args(hint)[0]
            if item is int and any(isinstance(v, bool) or float(v) != int(float(v)) for v in items):
                raise ValueError(value)
            return [item(float(v)) if item is int else item(v) for v in items]
    except (ValueError, TypeError, json.JSONDecodeError):
        pass
    raise UsageError(f"option {name}: cannot read {value!r} as {hint.__name__ if isinstance(hint, type) else hint}")


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    changes = {key.replace("-", "_"): value for key, value in overrides.items()}
    return config.replace(**{key: parse_value(key, value) for key, value in changes.items()})


def parse_set(items: list[str] | None) -> dict[str, str]:
    """`--set key=value` items -> {key: value}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out


# -------------------------------------------------------------------------------------------------- recipes
def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml")) if RECIPES_DIR.is_dir() else []


def find_recipe(name_or_path: str) -> Path:
    """A recipe by path, or by name in ./recipes/ or vitkit's own recipes (vitkit/recipes/)."""
    path = Path(name_or_path)
    if path.suffix in (".toml", ".json") and path.is_file():
        return path
    for folder in (Path("recipes"), RECIPES_DIR):
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(list_recipes()) or "none found"
    raise UsageError(f"no recipe {name_or_path!r} (a .toml/.json file or one of: {known})")


def _flatten(table: dict[str, Any], path: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{path}{key}."))
        else:
            if key in out:
                raise UsageError(f"recipe sets {key!r} twice")
            out[key] = value
    return out


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such recipe file") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not a valid recipe ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a table of options")
    values = _flatten(data)
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise UsageError(f"{path}: unknown option(s) {', '.join(unknown)}")
    return values


def load_recipe(name_or_path: str = "digits", overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A recipe's config: the file's values over `TrainConfig()`'s defaults, then `overrides`."""
    path = find_recipe(name_or_path)
    values = read_recipe_file(path)
    values.setdefault("recipe", path.stem)
    config = apply_overrides(TrainConfig(), values)
    return apply_overrides(config, overrides or {}).validate()


def resnet_stem(config: TrainConfig):
    """The hybrid's ResNet stem a fresh model of `config` gets: the variant's, with resnet_layers and
    resnet_width_factor applied (on a plain variant they make it a hybrid); None for a plain ViT or a name that is
    no variant (the model builder says so). A ValueError names an invalid stem."""
    from ..configs import ResNetConfig

    try:
        stem = variant_config(config.model).resnet
    except ValueError:
        stem = None
    changes = {"num_layers": None if config.resnet_layers is None else tuple(config.resnet_layers),
               "width_factor": config.resnet_width_factor}
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(stem or ResNetConfig(), **changes) if changes else stem


def smoke(config: TrainConfig) -> TrainConfig:
    """Shrink any recipe to seconds (big_vision's `runlocal`): a tiny model, a few steps, small batches."""
    architecture = {} if config.init_from else dict(width=32, depth=1, num_heads=2, mlp_dim=64, patch_size=8)
    try:
        hybrid = resnet_stem(config) is not None
    except ValueError:  # an invalid stem is still a stem; the shrink replaces it
        hybrid = True
    if not config.init_from and hybrid:
        # a hybrid: the root alone, narrow, and 1x1 patches of its stride-4 map (a 4x4 grid at 16 px)
        architecture.update(patch_size=1, resnet_layers=[], resnet_width_factor=0.5)
    if config.representation_size and not config.init_from:
        architecture["representation_size"] = 32
    return config.replace(
        steps=4, epochs=None, batch_size=8, accum_steps=min(config.accum_steps, 2), warmup_steps=1,
        image_size=16, eval_every=-1, checkpoint_every=0,
        log_every=1, num_workers=0, limit_per_class=min(config.limit_per_class or 8, 8),
        val_per_class=2 if config.val_split != "none" else None, eval_batch_size=16, **architecture,
    ).validate()


def main_job(overrides: dict[str, Any] | None = None) -> TrainConfig:
    """`vitkit train` with no recipe: vitkit/recipes/digits.toml."""
    return load_recipe("digits", overrides)


# ---------------------------------------------------------------------------------- command-line flags
def add_config_arguments(parser, skip: tuple[str, ...] = ("recipe",)) -> None:
    """One flag per field (`--warmup-steps`), defaulting to "not given", so that recipes keep their values."""
    import argparse

    group = parser.add_argument_group("training options (each overrides the recipe; also --set key=value)")
    for name, f in FIELDS.items():
        if name in skip:
            continue
        hint, optional = _base_type(name)
        metavar = {int: "N", float: "X", str: "TEXT", bool: "BOOL"}.get(hint, "A,B,C")
        if name in ("data", "init_from", "out_dir"):
            metavar = "NAME|PATH" if name == "init_from" else "PATH"
        default = f.default if f.default is not dataclasses.MISSING else "see recipe"
        allowed = f"; {f.metadata['range'].text()}" if "range" in f.metadata else ""
        help_text = f"{f.metadata.get('help', '')} (default: the recipe's, else {default}{allowed})"
        extra = dict(nargs="?", const="true") if hint is bool else {}
        flags = [f"--{name.replace('_', '-')}"] + (["--from"] if name == "init_from" else [])
        group.add_argument(*flags, dest=f"cfg_{name}", metavar=metavar,
                           default=argparse.SUPPRESS, help=help_text.replace("%", "%%"), **extra)
        if hint is bool:  # --progress / --no-progress, as the other commands spell a switch
            group.add_argument(f"--no-{name.replace('_', '-')}", dest=f"cfg_{name}", action="store_const",
                               const="false", default=argparse.SUPPRESS, help=f"the same as --{name.replace('_', '-')} false")


def overrides_from_args(args) -> dict[str, Any]:
    """The fields given on the command line: their own flags, then `--set` items."""
    out = {name[4:]: value for name, value in vars(args).items() if name.startswith("cfg_")}
    out.update(parse_set(getattr(args, "set", None)))
    for name, value in out.items():  # each read and checked against its range now, before anything else happens
        if name not in FIELDS:
            parse_value(name, value)  # the unknown-option error
        value = parse_value(name, value)
        if range_of(name) is not None and value is not None:
            check_range(name, value)
        if name == "device":
            check_device(value)
    return out
