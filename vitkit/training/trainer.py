"""The training loop: data -> model -> optimizer, with evaluation, checkpoints, exact resume and DDP.

    result = train(load_recipe("digits"))                     # one process
    torchrun --standalone --nproc-per-node 2 -m vitkit train   # several: each rank runs this same function

Reproducibility is built in rather than bolted on: the data order and every image's augmentation are functions
of (seed, epoch, position in the epoch) (see `vitkit.data.loader`, both pipelines); Mixup/CutMix of (seed, step,
micro-batch), pairing images by their position in the global micro-batch (`mixing`); the masks of stochastic
depth and patch dropout are this rank's rows of the global micro-batch's (`VisionTransformer.share_masks`). So N
processes under torchrun compute the steps of one process, to float rounding. Not so dropout and attention
dropout: their masks come from torch's generator seeded by (seed, step, rank), so N processes draw other masks
than one process does (of the same distribution). A checkpoint therefore needs only the weights, the optimizer,
the grad scaler, the EMA and the step to continue exactly where the uninterrupted run would have been; the global
random states are saved and restored as well, for code that uses them outside the loop.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..configs import TRAINING_FIELDS, Preprocessing
from ..data import (StepBatchSampler, TransformedImages, auto_workers, eval_loader, eval_transform, mix_seed,
                    open_data, train_loader, train_transform)
from ..data.memory import TensorAugment, TensorBatches, resize_batch, stack_images
from ..errors import CheckpointError, UsageError
from ..eval.evaluate import autocast, evaluate
from ..eval.metrics import Counts, EvalResult
from . import distributed, faults
from .checkpoint import (WEIGHTS, Checkpoint, latest_checkpoint, list_checkpoints, read_checkpoint_dir,
                         write_checkpoint)
from .config import ARCHITECTURE_FIELDS, TrainConfig
from .mixing import mix_shard
from .optim import EMA, build_optimizer
from .schedule import Schedule, TrainClock

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "curves.png"
BAD_FILES = "bad_files.txt"


class TrainingError(RuntimeError):
    """Training stopped (a non-finite loss): the message says where and what was kept."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # the last completed step
    total_steps: int
    finished: bool  # False when stopped early by stop_after
    seconds: float
    val_name: str
    final: EvalResult | None = None
    final_ema: EvalResult | None = None
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    model: Any = None  # the trained VisionTransformer (on CPU)


# --------------------------------------------------------------------------------------------- model


def runtime_settings(config: TrainConfig) -> dict:
    """The model's training-time settings, which come from the training config, also for a loaded checkpoint."""
    return {k: getattr(config, k) for k in TRAINING_FIELDS}


def build_model(config: TrainConfig, num_classes: int, log: Callable[[str], None] = print):
    """A fresh model from the variant and overrides, or one loaded from `init_from` (fine-tuning adaptation:
    a new zero head when the class count changes or reset_head, the position grid resampled to image_size)."""
    from ..checkpoints import load
    from ..configs import variant_config
    from ..models import create_model

    runtime = runtime_settings(config)
    if config.init_from is None:
        overrides = {k: getattr(config, k) for k in ARCHITECTURE_FIELDS if getattr(config, k) is not None}
        try:
            model_config = variant_config(config.model, num_classes=num_classes, image_size=config.image_size,
                                          **overrides, **runtime)
            if overrides:  # no longer the named variant
                model_config = model_config.replace(name=None)
            return create_model(model_config)
        except ValueError as e:
            raise UsageError(f"model {config.model!r}: {e}") from None
    fixed = [k for k in ARCHITECTURE_FIELDS if getattr(config, k) is not None]
    if fixed:
        raise UsageError(f"--init-from {config.init_from}: the architecture comes from the checkpoint; drop "
                         f"{', '.join('--' + k.replace('_', '-') for k in fixed)}")
    from ..hub.catalog import suggest
    from ..hub.resolve import is_known_source, model_source

    if not is_known_source(config.init_from):
        raise UsageError(f"--init-from {config.init_from}: no such file or folder, nor a pre-trained name or URI"
                         f"{suggest(config.init_from)}")
    path = model_source(config.init_from)  # a pre-trained name or URI is fetched (or found in the cache) by load
    reset = config.reset_head or (config.num_classes is not None)
    model = load(path, num_classes=num_classes if reset else None, resample_to=config.image_size,
                 resample_method=config.resample_method, **runtime)
    if not reset and model.num_classes != num_classes:
        raise UsageError(f"--init-from {config.init_from}: the checkpoint has {model.num_classes} classes but the "
                         f"data has {num_classes}; pass --num-classes {num_classes} to replace its head with a new "
                         "zero-initialised one (or use vitkit finetune)")
    return model


def describe(config) -> str:
    """"ViT-S/16 at 224 px", or the shape of a model that is not a named variant."""
    size = "x".join(str(s) for s in sorted(set(config.image_size)))
    if config.name:
        return f"{config.name} at {size} px"
    return (f"a ViT of width {config.width}, depth {config.depth}, {config.num_heads} heads, "
            f"{config.patch_size[0]}-px patches at {size} px")


def model_preprocessing(model, config: TrainConfig) -> Preprocessing:
    """What the checkpoint will record: the input size, and mean/std/interpolation/crop_pct from the config, else
    the initial checkpoint's, else the paper's [-1, 1] scaling and no crop."""
    base = model.preprocessing if config.init_from else Preprocessing()
    return Preprocessing(
        image_size=model.config.image_size,
        mean=tuple(config.mean) if config.mean is not None else base.mean,
        std=tuple(config.std) if config.std is not None else base.std,
        interpolation=config.interpolation or (base.interpolation if config.init_from else "bilinear"),
        crop_pct=config.crop_pct if config.crop_pct is not None else base.crop_pct if config.init_from else 1.0,
    )


# ---------------------------------------------------------------------------------------- random state
def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)), "numpy_pos": int(numpy_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if "numpy" in state:
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state.get("numpy_pos", 624)),
                             0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Every per-parameter tensor of a loaded optimizer state has its parameter's shape (load_state_dict checks
    the groups, not the tensors: a wrong one would fail steps later, or broadcast silently)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if value is None or (torch.is_tensor(value) and value.dim() == 0 and value.is_floating_point()):
                    continue  # an absent momentum buffer, a step count
                if not torch.is_tensor(value) or not value.is_floating_point() or value.shape != param.shape:
                    found = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
                    raise ValueError(f"optimizer state {key!r} is {found}, expected {tuple(param.shape)} floats")


def check_tensors_like(state: Any, reference: dict[str, torch.Tensor], what: str) -> None:
    if not isinstance(state, dict):
        raise TypeError(f"{what} state is a {type(state).__name__}, expected a dict of tensors")
    for key, ref in reference.items():
        value = state.get(key)
        if not torch.is_tensor(value) or value.shape != ref.shape:
            found = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(f"{what} entry {key!r} is {found}, expected {tuple(ref.shape)}")


# --------------------------------------------------------------------------------------------- helpers
def _default_name(config: TrainConfig) -> str:
    return f"{config.recipe or 'run'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


class MetricsLog:
    """metrics.jsonl, one JSON object per line, flushed as written; only rank 0 writes."""

    def __init__(self, path: Path, enabled: bool, keep_through_step: int | None = None, redo_evals: bool = False):
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        if keep_through_step is not None and path.exists():  # a resumed run: drop what came after its checkpoint
            from ..checkpoints.io import atomic_write_text
            from .plots import read_metrics

            redone = ("eval", "clock") if redo_evals else ()
            kept = [r for r in read_metrics(path) if r.get("step", 0) < keep_through_step
                    or r.get("step", 0) == keep_through_step and r.get("kind") not in redone]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        elif keep_through_step is None and path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------------------------------------ train
def train(config: TrainConfig, *, resume: bool | str | os.PathLike = False,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train as `config` says; `resume=True` continues the run out_dir/name from its newest readable checkpoint,
    `resume=PATH` from a given run or checkpoint folder. Under torchrun, every rank calls this."""
    config.validate()
    info = distributed.setup(config.device)
    created_group = info.enabled
    try:
        with deterministic_mode(config.deterministic, config.threads):
            return _Run(config, info, resume, log).run()
    finally:
        if created_group:
            distributed.teardown(info)


@contextlib.contextmanager
def deterministic_mode(enabled: bool, threads: int = 0):
    """Deterministic algorithms only, no cuDNN autotuning, one CPU thread unless `threads` says otherwise; the
    process's previous settings come back afterwards."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, torch.get_num_threads())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(threads if threads > 0 else 1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.benchmark = saved[1]
        torch.set_num_threads(saved[2])


class _Run:
    def __init__(self, config: TrainConfig, info: distributed.DistInfo, resume, log):
        self.config = config
        self.info = info
        self.resume = resume
        self.main = info.is_main
        self._log = log
        self.restart = False  # --resume of a run that had written no checkpoint

    def say(self, message: str) -> None:
        if not self.main:
            return
        if self._log is not None:
            self._log(message)
        else:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stdout)

    # ----------------------------------------------------------------------------------------- set-up
    def resolve_run_dir(self) -> tuple[Path, Path | None]:
        """(run folder, the checkpoint folder to resume from or None)."""
        c = self.config
        if self.resume:
            if self.resume is True:
                if not c.name:
                    raise UsageError("--resume needs a run: pass its folder (--resume runs/NAME) or --name")
                target = Path(c.out_dir) / c.name
            else:
                target = Path(self.resume)
            if not target.exists():
                raise UsageError(f"--resume {target}: no such run or checkpoint folder")
            if target.name.startswith("step_") and target.parent.name == "checkpoints":
                return target.parent.parent, target
            if not list_checkpoints(target):
                if (target / CONFIG_FILE).is_file():  # stopped before its first checkpoint: nothing to keep
                    self.say(f"{target} has no checkpoint yet; starting it again from step 0")
                    self.restart = True
                    return target, None
                raise UsageError(f"--resume {target}: the run has no checkpoints to resume from")
            return target, None
        name = distributed.broadcast_object(c.name or _default_name(c), self.info)
        run_dir = Path(c.out_dir) / name
        if run_dir.exists() and ((run_dir / "checkpoints").exists() or (run_dir / METRICS_FILE).exists()):
            raise UsageError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another "
                             "--name")
        return run_dir, None

    def load_resume_checkpoint(self, run_dir: Path, chosen: Path | None) -> Checkpoint:
        if chosen is not None:
            try:
                return read_checkpoint_dir(chosen)
            except CheckpointError as e:
                raise UsageError(f"--resume: {e}") from None
        ckpt = latest_checkpoint(run_dir, log=self.say)
        if ckpt is None:
            raise UsageError(f"--resume {run_dir}: no readable checkpoint")
        return ckpt

    # ----------------------------------------------------------------------------------------------- run
    def run(self) -> TrainResult:
        c, info = self.config, self.info
        started = time.time()
        run_dir, chosen = self.resolve_run_dir()
        resume_ckpt = self.load_resume_checkpoint(run_dir, chosen) if self.resume and not self.restart else None
        torch.manual_seed(c.seed)
        if c.threads > 0:
            torch.set_num_threads(c.threads)

        # data
        splits = open_data(c.data, want_val=c.val_split != "none", val_split=c.val_split,
                           val_fraction=c.val_fraction, val_per_class=c.val_per_class, split_seed=c.split_seed,
                           limit_per_class=c.limit_per_class, max_bad_fraction=c.max_bad_fraction,
                           cache=c.cache_images, log=self.say, progress=c.progress and self.main, min_classes=2)
        classes, train_set, val_set = splits.classes, splits.train, splits.val
        if c.num_classes is not None and c.num_classes < len(classes):
            raise UsageError(f"--num-classes {c.num_classes} is fewer than the {len(classes)} classes of the data")
        num_classes = c.num_classes or len(classes)

        # model
        if resume_ckpt is not None:
            from ..checkpoints import load

            model = load(resume_ckpt.path / WEIGHTS, **runtime_settings(c))
        else:
            model = build_model(c, num_classes, self.say)
            model.preprocessing = model_preprocessing(model, c)
        model.class_names = list(classes) + [str(i) for i in range(len(classes), model.num_classes)]
        if c.progressive_min_size:  # smaller inputs early in the run: the position embeddings are resampled
            model.config = model.config.replace(dynamic_image_size=True)
        if model.num_classes != num_classes:
            raise UsageError(f"the model has {model.num_classes} classes, the data {num_classes}")
        device = info.device
        if c.precision == "fp16" and device.type != "cuda":
            raise UsageError("--precision fp16 needs a GPU (it uses a grad scaler); on CPU use bf16")
        model.to(device)

        # steps
        global_batch = c.batch_size
        if global_batch % (c.accum_steps * info.world_size):
            raise UsageError(f"batch_size {global_batch} is not divisible by accum_steps x processes "
                             f"({c.accum_steps} x {info.world_size})")
        steps_per_epoch = len(train_set) // global_batch
        if steps_per_epoch < 1:
            raise UsageError(f"batch_size {global_batch} is larger than the {len(train_set)} training images")
        total = c.steps if c.steps is not None else max(1, math.ceil(c.epochs * steps_per_epoch))
        warmup = min(c.warmup_steps or int(round(c.warmup_epochs * steps_per_epoch)), total)
        end_step = min(total, c.stop_after) if c.stop_after is not None else total
        eval_every = steps_per_epoch if c.eval_every == 0 else c.eval_every

        # optimizer, scaler, EMA, and the resumed state
        optimizer = build_optimizer(model, c)
        scaler = torch.amp.GradScaler(device.type, enabled=c.precision == "fp16")
        ema = EMA(model, c.ema_decay, warmup=c.ema_warmup) if c.ema_decay > 0 else None
        start_step = 0
        if resume_ckpt is not None:
            state = resume_ckpt.state
            try:
                settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
                optimizer.load_state_dict(state["optimizer"])
                for group, own in zip(optimizer.param_groups, settings):
                    group.update(own)  # betas, weight decay, ...: this run's config, not whatever the file says
                check_optimizer_state(optimizer)
                if state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
                if ema is not None and state.get("ema") is not None:
                    check_tensors_like(state["ema"], ema.shadow, "EMA")
                    ema.load_state_dict(state["ema"])
                if state.get("rng"):
                    set_rng_state(state["rng"])
            except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError) as e:
                raise UsageError(f"--resume {resume_ckpt.path}: the saved state does not fit this run "
                                 f"({type(e).__name__}: {str(e).strip()[:300]}); was the model or optimizer "
                                 "changed?") from None
            start_step = resume_ckpt.step
            if c.budget_minutes and float(state.get("train_seconds") or 0.0) >= 60 * c.budget_minutes:
                raise UsageError(f"--resume {resume_ckpt.path}: the run already spent its budget of "
                                 f"{c.budget_minutes:g} minutes; raise --budget-minutes to train longer")
            # killed after its last checkpoint but before the final weights: resuming only finishes it
            finishing = start_step == total and not (run_dir / WEIGHTS).exists()
            if start_step >= total and not finishing:
                raise UsageError(f"--resume {resume_ckpt.path}: the run already finished ({start_step} of {total} "
                                 "steps); raise --steps to train longer")
            if finishing:
                end_step = total
            elif end_step <= start_step:
                raise UsageError(f"--stop-after {c.stop_after}: the run is already at step {start_step}")

        # the run folder
        resolved = c.replace(name=run_dir.name, out_dir=str(run_dir.parent), num_classes=num_classes,
                             image_size=model.config.image_size[0], mean=list(model.preprocessing.mean),
                             std=list(model.preprocessing.std), interpolation=model.preprocessing.interpolation,
                             steps=total, stop_after=None)  # stop_after belongs to one invocation
        if self.main:
            from ..checkpoints.io import atomic_write_text
            from ..models import count_parameters

            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / CONFIG_FILE, resolved.to_json() + "\n")
            atomic_write_text(run_dir / RUN_FILE, json.dumps({
                "classes": classes, "data": splits.description, "train_images": len(train_set),
                "val_images": len(val_set) if val_set is not None else 0, "val_split": splits.val_name,
                "steps_per_epoch": steps_per_epoch, "total_steps": total, "warmup_steps": warmup,
                "world_size": info.world_size, "device": str(device), "parameters": count_parameters(model),
                "model": model.config.to_dict(), "preprocessing": model.preprocessing.to_dict(),
                "torch": torch.__version__, "command": sys.argv,
            }, indent=2) + "\n")
            if splits.bad_files:
                atomic_write_text(run_dir / BAD_FILES, "".join(f"{p}\t{r}\n" for p, r in splits.bad_files))
        metrics = MetricsLog(run_dir / METRICS_FILE, self.main, start_step if resume_ckpt is not None else None,
                             redo_evals=resume_ckpt is not None and start_step == end_step)
        if resume_ckpt is not None:
            faults.hit("resume.metrics", start_step)
        distributed.barrier(info)

        # loaders
        augment = dict(crop=c.crop, crop_min_area=c.crop_min_area, crop_padding=c.crop_padding, hflip=c.hflip,
                        randaugment_ops=c.randaugment_ops, randaugment_magnitude=c.randaugment_magnitude,
                        random_erasing=c.random_erasing, randaugment_style=c.randaugment_style,
                        randaugment_magnitude_std=c.randaugment_magnitude_std,
                        randaugment_increasing=c.randaugment_increasing)
        workers = auto_workers(train_set, c.num_workers, info.world_size)
        pin = device.type == "cuda"
        sampler = StepBatchSampler(len(train_set), global_batch, c.accum_steps, info.world_size, info.rank, c.seed,
                                   start_step, end_step, repeats=c.repeated_augmentation)
        train_data = TransformedImages(train_set, train_transform(model.preprocessing, **augment))
        val_batches = None
        if val_set is not None:
            eval_batch = c.eval_batch_size or max(global_batch // c.accum_steps // info.world_size, 1)
            val_data = TransformedImages(val_set, eval_transform(model.preprocessing))
            val_workers = auto_workers(val_set, -1 if val_set.in_memory else c.num_workers, info.world_size)
            val_batches = eval_loader(val_data, eval_batch, val_workers,
                                      info.rank, info.world_size, pin)

        # the model that trains: DDP, then compile
        train_model = model
        ddp = None
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
            train_model = ddp
        if c.compile:
            train_model = torch.compile(train_model, backend=c.compile_backend)
        ema_model = copy.deepcopy(model).eval() if ema is not None else None

        parameters = sum(p.numel() for p in model.parameters())
        self.say(f"training {describe(model.config)} ({parameters:,} parameters, {num_classes} classes) on "
                 f"{splits.description}: {len(train_set):,} training images, "
                 f"{len(val_set) if val_set is not None else 0:,} {splits.val_name} images; {total:,} steps of "
                 f"{global_batch} ({steps_per_epoch} per epoch), {info.world_size} process(es) on {device}")
        if resume_ckpt is not None:
            self.say(f"resuming {run_dir} from step {start_step} ({resume_ckpt.path})")

        # ------------------------------------------------------------------------------------ evaluation
        def run_eval(step: int) -> tuple[EvalResult | None, EvalResult | None]:
            if val_batches is None:
                return None, None
            metrics.write({"kind": "clock", "step": step, "train_seconds": round(clock.seconds(), 2),
                           "seconds": round(time.time() - started, 2)})  # the time behind the weights evaluated
            results = []
            for weights, net in (("model", model), ("ema", ema_model)):
                if net is None:
                    results.append(None)
                    continue
                if weights == "ema":
                    ema.copy_to(ema_model)
                counts = evaluate(net, val_batches, num_classes, device, c.precision,
                                  progress=c.progress and self.main and len(val_batches) >= 20,
                                  desc=f"eval {splits.val_name}",
                                  total=len(val_batches))
                distributed.all_reduce_sum(counts.tensors(), info)
                result = counts.result()
                metrics.write({"kind": "eval", "step": step, "epoch": round(step / steps_per_epoch, 4),
                               "split": splits.val_name, "weights": weights, **result.summary()})
                results.append(result)
            model.train()
            return results[0], results[1]

        # ------------------------------------------------------------------------------------ checkpoints
        last_saved: dict[str, Any] = {"step": start_step if resume_ckpt is not None else None,
                                      "path": resume_ckpt.path if resume_ckpt is not None else None}

        def last_good() -> str:
            return (f"the last good checkpoint, {last_saved['path']} (step {last_saved['step']}), is untouched"
                    if last_saved["path"] is not None else "no checkpoint had been written")

        def save(step: int) -> None:
            if self.main:
                state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                         "ema": ema.state_dict() if ema is not None else None, "rng": rng_state(),
                         "config": resolved.to_json(), "world_size": info.world_size, "total_steps": total,
                         "data": {"train_images": len(train_set), "steps_per_epoch": steps_per_epoch},
                         "train_seconds": clock.seconds()}
                model.eval()
                try:
                    path = write_checkpoint(run_dir, step, model, state, keep=c.keep_checkpoints)
                except (OSError, RuntimeError) as e:  # a full disk, a file size limit, a folder gone read-only
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    bar.close()
                    raise TrainingError(f"could not write the checkpoint of step {step} ({reason}); training "
                                        f"stopped and {last_good()}. Make room and continue with: vitkit train "
                                        f"--resume {run_dir}") from None
                model.train()
                last_saved.update(step=step, path=path)
            distributed.barrier(info)

        # ------------------------------------------------------------------------------------ the loop
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start_step, desc=f"train {run_dir.name}", unit="step",
                   disable=not (c.progress and self.main), dynamic_ncols=True, smoothing=0.05)
        model.train()
        if c.pipeline == "tensor":  # decoded once into one uint8 tensor, augmented a batch at a time
            tensor_augment = TensorAugment(model.preprocessing.mean, model.preprocessing.std, crop=c.crop,
                                           crop_min_area=c.crop_min_area, crop_padding=c.crop_padding,
                                           hflip=c.hflip, random_erasing=c.random_erasing)
            batches = iter(TensorBatches(stack_images(train_set), train_set.labels, sampler, tensor_augment))
        else:
            batches = iter(train_loader(train_data, sampler, workers, pin))
        schedule = Schedule(c, total, warmup, model.config.image_size[0],
                            model.config.patch_size[0] * model.config.stem_stride)
        resize_inputs = c.pipeline == "tensor" or bool(c.progressive_min_size)
        clock = TrainClock(float(resume_ckpt.state.get("train_seconds") or 0.0) if resume_ckpt is not None else 0.0)
        eval_interval = 60.0 * c.eval_every_minutes
        next_timed_eval = (math.floor(clock.seconds() / eval_interval) + 1) * eval_interval if eval_interval else None
        out_of_time = False

        def training_seconds() -> float:
            """The clock, the same on every rank (rank clocks differ a little, and a rank that stopped or
            evaluated alone would leave the others waiting): the largest, when anything depends on it."""
            seconds = clock.seconds()
            if info.enabled and (c.budget_minutes or eval_interval):
                import torch.distributed as dist

                shared = torch.tensor([seconds], dtype=torch.float64, device=device)
                dist.all_reduce(shared, op=dist.ReduceOp.MAX)
                seconds = float(shared)
            return seconds

        def new_window() -> dict[str, Any]:
            """Sums since the last training record, kept on the device so that no step waits for a sync."""
            zeros = [torch.zeros((), dtype=torch.float64, device=device) for _ in range(4)]
            return dict(loss=zeros[0], correct=zeros[1], seen=zeros[2], bad=zeros[3], steps=0, skipped=0,
                        since=time.time(), first_bad=torch.full((), float(total + 1), dtype=torch.float64,
                                                                device=device))

        window = new_window()
        lr = c.lr
        grad_norm = torch.zeros(())
        final = final_ema = None
        skip_nonfinite = c.on_nonfinite == "skip"
        skipped_steps = 0

        def flush(step: int) -> None:
            """Sum the window over ranks, stop on a non-finite loss, write one training record."""
            nonlocal window
            if window["steps"] == 0:
                return
            sums = torch.stack([window["loss"], window["correct"], window["seen"], window["bad"]])
            distributed.all_reduce_sum([sums], info)
            first_bad = window["first_bad"].clone()
            if info.enabled:
                import torch.distributed as dist

                dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
            sums = sums.cpu()
            if sums[3] > 0:
                bad_step = int(first_bad)
                bar.close()
                metrics.write({"kind": "stopped", "step": bad_step, "reason": "non-finite loss or gradient norm"})
                raise TrainingError(f"the loss or gradient norm became non-finite at step {bad_step} of {total}; "
                                    f"training stopped and {last_good()}. Try a lower --lr, a longer warm-up or "
                                    "--precision fp32 (or --on-nonfinite skip to drop such steps)")
            elapsed = max(time.time() - window["since"], 1e-9)
            images = float(sums[2])
            record = {"kind": "train", "step": step, "epoch": round(step / steps_per_epoch, 4),
                      "loss": float(sums[0]) / (max(window["steps"] - window["skipped"], 1) * info.world_size),
                      "accuracy": float(sums[1]) / max(images, 1.0), "lr": lr, "grad_norm": float(grad_norm),
                      "images_per_sec": images / elapsed}
            if resize_inputs:
                record["image_size"] = plan.image_size  # progressive resolution: the last step's
            metrics.write(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_sec']:.0f}",
                            lr=f"{lr:.2e}", refresh=False)
            window = new_window()

        try:
            clock.start()
            seconds = training_seconds()
            for step in range(start_step, end_step):
                plan = schedule.at(step, seconds)
                lr = plan.lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
                torch.manual_seed(mix_seed(c.seed, step, info.rank, 0xD209))  # dropout
                step_loss = torch.zeros((), device=device)
                for micro in range(c.accum_steps):
                    images, labels = next(batches)
                    images = images.to(device, non_blocking=True)
                    labels = labels.to(device, non_blocking=True)
                    if resize_inputs:  # progressive resolution; the tensor path's images at the model's size
                        images = resize_batch(images, plan.image_size)
                    images, targets = mix_shard(images, labels, num_classes, rank=info.rank,
                                                world_size=info.world_size, mixup_alpha=c.mixup_alpha,
                                                cutmix_alpha=c.cutmix_alpha, prob=c.mix_prob,
                                                smoothing=c.label_smoothing, seed=mix_seed(c.seed, step, micro, 0x313))
                    shard = images.shape[0]  # stochastic depth, patch dropout: this rank's rows of the global masks
                    model.share_masks((mix_seed(c.seed, step, micro, 0xD20F), info.rank * shard,
                                       shard * info.world_size))
                    sync = ddp.no_sync() if ddp is not None and micro < c.accum_steps - 1 else contextlib.nullcontext()
                    with sync:
                        with autocast(device, c.precision):
                            logits = train_model(images)
                        loss = F.cross_entropy(logits.float(), targets)
                        poison = faults.hit("loss", step + 1)  # (tests only: nan or inf)
                        if poison:
                            loss = loss * float(poison)
                        scaler.scale(loss / c.accum_steps).backward()
                    step_loss += loss.detach()
                    window["correct"] += (logits.detach().argmax(dim=1) == labels).sum()
                    window["seen"] += labels.numel()
                poison = faults.hit("grad", step + 1)  # (tests only: one gradient entry nan or inf)
                if poison:
                    next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = float(poison)
                faults.hit("step.after_backward", step + 1)
                if c.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
                elif not scaler.is_enabled():
                    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()
                                                               if p.grad is not None])
                step_loss = (step_loss / c.accum_steps).double()
                finite = torch.isfinite(step_loss)
                if not scaler.is_enabled():  # (a grad scaler skips steps with non-finite gradients itself)
                    finite = finite & torch.isfinite(grad_norm.to(device))
                skip = False
                if skip_nonfinite:  # one sync per step: every rank must agree to skip
                    bad = (~finite).double().reshape(1)
                    distributed.all_reduce_sum([bad], info)
                    skip = bool(bad.item() > 0)
                if skip:
                    optimizer.zero_grad(set_to_none=True)
                    skipped_steps += 1
                    window["skipped"] += 1
                    metrics.write({"kind": "skipped", "step": step + 1, "loss": float(step_loss),
                                   "grad_norm": float(grad_norm), "reason": "non-finite loss or gradient norm"})
                    self.say(f"step {step + 1}: non-finite loss ({float(step_loss):g}) or gradient norm "
                             f"({float(grad_norm):g}); its update is skipped (--on-nonfinite skip)")
                else:
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update(model, step)
                    window["loss"] += torch.where(finite, step_loss, torch.zeros_like(step_loss))
                    if not skip_nonfinite:
                        window["bad"] += (~finite).double()
                        window["first_bad"] = torch.where(finite, window["first_bad"],
                                                          torch.minimum(window["first_bad"], torch.full_like(
                                                              window["first_bad"], float(step + 1))))
                window["steps"] += 1
                done = step + 1
                faults.hit("step.end", done)
                bar.update(1)
                seconds = training_seconds()
                if schedule.out_of_time(seconds):  # budget_minutes spent: this step is the last
                    end_step, out_of_time = done, True
                due_eval = val_batches is not None and eval_every > 0 and done % eval_every == 0 and done < end_step
                if next_timed_eval is not None and seconds >= next_timed_eval:
                    due_eval = due_eval or (val_batches is not None and done < end_step)
                    while next_timed_eval <= seconds:
                        next_timed_eval += eval_interval
                due_save = c.checkpoint_every > 0 and done % c.checkpoint_every == 0 and done < end_step
                if done % c.log_every == 0 or due_eval or due_save or done == end_step:
                    flush(done)
                if due_eval:
                    with clock.paused():
                        result, result_ema = run_eval(done)
                    if result is not None:
                        self.say(f"step {done}: {splits.val_name} top-1 {100 * result.top1:.2f}%"
                                 + (f", EMA {100 * result_ema.top1:.2f}%" if result_ema is not None else ""))
                if due_save:
                    with clock.paused():
                        save(done)
                if done == end_step:
                    break
            flush(end_step)
            bar.close()
            final, final_ema = run_eval(end_step)
            if last_saved["step"] != end_step:
                save(end_step)
        finally:
            bar.close()
            if self.main and (run_dir / METRICS_FILE).exists():
                from .plots import plot_curves

                try:
                    plot_curves(run_dir / METRICS_FILE, run_dir / PLOT_FILE,
                                title=f"{run_dir.name}: {describe(model.config)}, {len(train_set):,} images")
                except Exception as e:  # a figure must never cost a run
                    self.say(f"could not draw {PLOT_FILE}: {e}")

        finished = end_step == total or out_of_time
        seconds = time.time() - started
        if self.main and finished:
            from ..checkpoints import save as save_model

            faults.hit("final.weights", end_step)
            model.eval()
            save_model(model.cpu(), run_dir / WEIGHTS)
            if ema_model is not None:
                ema.copy_to(ema_model)
                save_model(ema_model.cpu(), run_dir / "model_ema.safetensors")
        summary = {"kind": "summary", "step": end_step, "finished": finished, "seconds": round(seconds, 2),
                   "train_seconds": round(clock.seconds(), 2), "bad_files": len(splits.bad_files)}
        if skipped_steps:
            summary["skipped_steps"] = skipped_steps
        if final is not None:
            summary.update({f"{splits.val_name}_top1": final.top1, f"{splits.val_name}_top5": final.top5})
        if final_ema is not None:
            summary[f"{splits.val_name}_top1_ema"] = final_ema.top1
        metrics.write(summary)
        distributed.barrier(info)

        # the closing lines
        if final is not None:
            hits = int(round(final.top1 * final.count))
            line = (f"{splits.val_name} accuracy {100 * final.top1:.2f}% ({hits}/{final.count}), "
                    f"top-5 {100 * final.top5:.2f}%")
            if final_ema is not None:
                line += f"; EMA weights {100 * final_ema.top1:.2f}%"
            self.say(line)
        if splits.bad_files:
            self.say(f"skipped {len(splits.bad_files)} unreadable file(s), listed in {run_dir / BAD_FILES}")
        if finished:
            self.say(f"trained {end_step - start_step:,} steps in {_format_seconds(seconds)}; run saved to "
                     f"{run_dir}/ ({WEIGHTS}, checkpoints/, {METRICS_FILE}, {PLOT_FILE}, {CONFIG_FILE})")
        else:
            self.say(f"stopped after step {end_step} of {total} ({_format_seconds(seconds)}); continue with: "
                     f"vitkit train --resume {run_dir}")
        return TrainResult(run_dir=run_dir, step=end_step, total_steps=total, finished=finished, seconds=seconds,
                           val_name=splits.val_name, final=final, final_ema=final_ema,
                           bad_files=splits.bad_files, model=model.cpu())


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The resolved config a run wrote (for --resume and evaluation)."""
    from .config import apply_overrides, read_recipe_file

    path = Path(run_dir)
    if path.name.startswith("step_") and path.parent.name == "checkpoints":
        path = path.parent.parent
    return apply_overrides(TrainConfig(), read_recipe_file(path / CONFIG_FILE))
