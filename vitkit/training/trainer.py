"""The training loop: data -> model -> optimizer, with evaluation, checkpoints, exact resume and DDP.

    result = train(load_recipe("digits"))                     # one process
    torchrun --standalone --nproc-per-node 2 -m vitkit train   # several: each rank runs this same function

`_Run.prepare` builds the pieces (data, model, optimizer, the resumed state, the run folder) and the components
the loop calls, each in its own module: `TrainStep` (step.py), `Evaluator` (evaluator.py), `Checkpointer`
(checkpointer.py) and `MetricsLogger` (metrics_log.py); `_Run.run` is the loop itself, in one screen.

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
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

from ..data import StepBatchSampler, TransformedImages, auto_workers, eval_loader, eval_transform, open_data
from ..data import train_loader, train_transform
from ..data.memory import TensorAugment, TensorBatches, stack_images
from ..errors import CheckpointError, UsageError
from ..models.fast import compile_mode_problem
from ..eval.metrics import EvalResult
from . import distributed, faults, run_folder
from .build import build_model, check_model_settings, describe, model_preprocessing, runtime_settings
from .checkpoint import Checkpoint, latest_checkpoint, list_checkpoints, read_checkpoint_dir, write_checkpoint
from .checkpointer import Checkpointer, CheckpointWriteError
from .config import TrainConfig
from .errors import TrainingError, TrainingInterrupted
from .evaluator import Evaluator
from .holdout import write_split
from .interrupt import catch_interrupt
from .metrics_log import MetricsLogger, parse_loggers
from .optim import EMA, OptimizerSettings, build_optimizer
from .parallel import (ParallelConfig, is_sharded_checkpoint, load_sharded_checkpoint, unsharded_copy, wrap_model,
                       write_sharded_checkpoint)
from .streaming import ShardData, is_shard_spec
from .run_folder import BAD_FILES, CONFIG, CURVES, EMA_WEIGHTS, METRICS, RUN_INFO, WEIGHTS, RunLock
from .schedule import Schedule, ScheduleSettings, TrainClock
from .state import restore, rng_state
from .step import NonFinite, StepSettings, TrainStep

__all__ = ["train", "TrainResult", "TrainingError", "TrainingInterrupted", "load_run_config", "build_model",
           "describe", "runtime_settings", "deterministic_mode"]


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


# ------------------------------------------------------------------------------------------------ train
def train(config: TrainConfig, *, resume: bool | str | os.PathLike = False,
          log: Callable[[str], None] | None = None, provenance: str | None = None,
          announce: str | None = None) -> TrainResult:
    """Train as `config` says; `resume=True` continues the run out_dir/name from its newest readable checkpoint,
    `resume=PATH` from a given run or checkpoint folder. Under torchrun, every rank calls this. The run folder is
    locked for the call's life: a second writer gets a UsageError naming this process. Ctrl-C saves a checkpoint
    and raises `TrainingInterrupted`, whose message is the command that continues the run. `provenance` (the
    source of each value, from `vitkit.api.resolve_training`) is saved as RUN/provenance.json; `announce` (the
    effective configuration) is printed once the run folder is this process's, so a refused writer prints one line."""
    config.validate()
    parse_loggers(config.log)
    info = distributed.setup(config.device)
    created_group = info.enabled
    run = _Run(config, info, resume, log)
    run.provenance, run.announce = provenance, announce
    try:
        with deterministic_mode(config.deterministic, config.threads):
            return run.run()
    finally:
        run.lock.release()
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
        self.lock = RunLock(Path(config.out_dir) / (config.name or "unnamed"))
        self.out_of_time = self.interrupted = False
        self.provenance: str | None = None
        self.announce: str | None = None

    def say(self, message: str) -> None:
        if not self.main:
            return
        if self._log is not None:
            self._log(message)
        else:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stdout)

    # ------------------------------------------------------------------------------------------- the loop
    def run(self) -> TrainResult:
        """Steps from start_step to end_step; components decide when they act."""
        c = self.config
        self.prepare()
        step_fn, evaluator, checkpointer, clock, schedule = (self.train_step, self.evaluator, self.checkpointer,
                                                             self.clock, self.schedule)
        start, end = self.start_step, self.end_step
        final = final_ema = None
        try:
            with catch_interrupt(self.info, self.say) as stop:
                step_fn.batches = self.make_batches()  # (loader processes forked under the Ctrl-C handler)
                clock.start()
                seconds = self.shared_seconds()
                for step in range(start, end):
                    skipped = step_fn(step, schedule.at(step, seconds))
                    if skipped is not None:
                        self.note_skipped(skipped)
                    done = step + 1
                    faults.hit("step.end", done)
                    self.bar.update(1)
                    seconds = self.shared_seconds()
                    if schedule.out_of_time(seconds):  # budget_minutes spent: this step is the last
                        end, self.out_of_time = done, True
                    if stop.requested():  # Ctrl-C: this step is the last of this invocation
                        end, self.interrupted = done, True
                    if done == end:
                        break
                    due_eval, due_save = evaluator.due(done, seconds), checkpointer.due(done)
                    if done % c.log_every == 0 or due_eval or due_save:
                        self.flush(done)
                    if due_eval:
                        with clock.paused():
                            self.report_eval(done, *evaluator(done))
                    if due_save:
                        with clock.paused():
                            self.save(done)
                self.flush(end)
                self.bar.close()
                if not self.interrupted:
                    final, final_ema = evaluator(end)
                self.save(end, last=True)
        finally:
            self.bar.close()
            self.metrics.close(f"{self.run_dir.name}: {describe(self.model.config)}, {len(self.train_set):,} images",
                               self.say)
        return self.finish(end, final, final_ema)

    def shared_seconds(self) -> float:
        """The training clock, the same on every rank (rank clocks differ a little, and a rank that stopped or
        evaluated alone would leave the others waiting): the largest, when anything depends on it."""
        seconds = self.clock.seconds()
        if self.info.enabled and (self.config.budget_minutes or self.config.eval_every_minutes):
            import torch.distributed as dist

            shared = torch.tensor([seconds], dtype=torch.float64, device=self.info.device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            seconds = float(shared)
        return seconds

    def flush(self, step: int) -> None:
        """One training record of the steps since the last; stop on a non-finite loss."""
        try:
            record = self.train_step.take_record(step, self.steps_per_epoch)
        except NonFinite as e:
            self.bar.close()
            self.metrics.write({"kind": "stopped", "step": e.step, "reason": "non-finite loss or gradient norm"})
            raise TrainingError(f"the loss or gradient norm became non-finite at step {e.step} of {self.total}; "
                                f"training stopped and {self.checkpointer.last_good()}. Try a lower --lr, a longer "
                                "warm-up or --precision fp32 (or --on-nonfinite skip to drop such steps)") from None
        if record is not None:
            self.metrics.write(record)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_sec']:.0f}",
                                 lr=f"{record['lr']:.2e}", refresh=False)

    def save(self, step: int, last: bool = False) -> None:
        try:
            self.checkpointer.maybe_save(step, last=last)
        except CheckpointWriteError as e:
            self.bar.close()
            raise TrainingError(str(e)) from None

    def note_skipped(self, record: dict) -> None:
        self.metrics.write(record)
        self.say(f"step {record['step']}: non-finite loss ({record['loss']:g}) or gradient norm "
                 f"({record['grad_norm']:g}); its update is skipped (--on-nonfinite skip)")

    def report_eval(self, step: int, result: EvalResult | None, result_ema: EvalResult | None) -> None:
        if result is not None:
            self.say(f"step {step}: {self.splits.val_name} top-1 {100 * result.top1:.2f}%"
                     + (f", EMA {100 * result_ema.top1:.2f}%" if result_ema is not None else ""))

    # ------------------------------------------------------------------------------------------ set-up
    def resolve_run_dir(self) -> tuple[Path, Path | None]:
        """(run folder, the checkpoint folder to resume from or None); a resumed run's folder is locked here."""
        c = self.config
        if self.resume:
            if self.resume is True:
                if not c.name:
                    raise UsageError("--resume needs a run: pass its folder (--resume runs/NAME) or --name")
                target = Path(c.out_dir) / c.name
            else:
                target = Path(self.resume)
            run_dir, chosen = run_folder.resolve_resume(target)
            if self.main:
                self.lock = RunLock(run_dir).acquire()
            if chosen is None and not list_checkpoints(run_dir):  # stopped before its first checkpoint
                self.say(f"{run_dir} has no checkpoint yet; starting it again from step 0")
                self.restart = True
            return run_dir, chosen
        name = distributed.broadcast_object(c.name or _default_name(c), self.info)
        run_dir = Path(c.out_dir) / name
        if run_dir.exists() and self.main:
            self.lock = RunLock(run_dir).acquire()  # a run being written now: refused, naming its process
        self.check_fresh(run_dir)
        return run_dir, None

    @staticmethod
    def check_fresh(run_dir: Path) -> None:
        if run_dir.exists() and ((run_dir / run_folder.CHECKPOINTS).exists() or (run_dir / METRICS).exists()):
            raise UsageError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, or choose another "
                             "--name")

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

    def prepare(self) -> None:
        """Everything the loop needs, in the order a reader would do it by hand."""
        c, info = self.config, self.info
        self.started = time.time()
        self.run_dir, chosen = self.resolve_run_dir()
        if self.announce:
            self.say(self.announce)
        resume_ckpt = self.load_resume_checkpoint(self.run_dir, chosen) if self.resume and not self.restart else None
        if resume_ckpt is None:
            check_model_settings(c)  # before the data scan, which can take minutes
        problem = compile_mode_problem(c.compile_mode, compile=c.compile, backend=c.compile_backend,
                                       device=info.device)  # "auto" is resolved only now
        if problem:
            raise UsageError(problem)
        torch.manual_seed(c.seed)
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        self.prepare_data()
        self.prepare_model(resume_ckpt)
        self.prepare_steps()
        self.prepare_optimizer(resume_ckpt)
        self.write_run_folder(resume_ckpt)
        self.prepare_loaders()
        self.prepare_components(resume_ckpt)
        parameters = sum(p.numel() for p in self.model.parameters())
        val_count = len(self.val_set) if self.val_set is not None else 0
        self.say(f"training {describe(self.model.config)} ({parameters:,} parameters, {self.num_classes} classes) "
                 f"on {self.splits.description}: {len(self.train_set):,} training images, {val_count:,} "
                 f"{self.splits.val_name} images; {self.total:,} steps of {c.batch_size} ({self.steps_per_epoch} per "
                 f"epoch), {info.world_size} process(es) on {info.device}")
        if resume_ckpt is not None:
            self.say(f"resuming {self.run_dir} from step {self.start_step} ({resume_ckpt.path})")

    def prepare_data(self) -> None:
        c = self.config
        self.shard_data = None
        if is_shard_spec(c.data):  # tar shards, streamed (the same fields as DataSplits)
            self.splits = self.shard_data = ShardData(c, self.info, self.say)
        else:
            self.splits = open_data(c.data, want_val=c.val_split != "none", val_split=c.val_split,
                                    val_fraction=c.val_fraction, val_per_class=c.val_per_class,
                                    split_seed=c.split_seed, limit_per_class=c.limit_per_class,
                                    max_bad_fraction=c.max_bad_fraction, cache=c.cache_images, log=self.say,
                                    progress=c.progress and self.main, min_classes=2)
        self.classes, self.train_set, self.val_set = self.splits.classes, self.splits.train, self.splits.val
        if c.num_classes is not None and c.num_classes < len(self.classes):
            raise UsageError(f"--num-classes {c.num_classes} is fewer than the {len(self.classes)} classes of the "
                             "data")
        self.num_classes = c.num_classes or len(self.classes)

    def prepare_model(self, resume_ckpt: Checkpoint | None) -> None:
        c = self.config
        self.sharded = sharded = c.parallel == "fsdp"  # checkpoints by torch.distributed.checkpoint, any rank count
        if resume_ckpt is not None and is_sharded_checkpoint(resume_ckpt.path):
            from ..configs import Preprocessing, ViTConfig
            from ..models import create_model

            model = create_model(ViTConfig.from_dict(resume_ckpt.state["model_config"]))  # weights: on restore
            model.preprocessing = Preprocessing.from_dict(resume_ckpt.state["preprocessing"])
        elif resume_ckpt is not None:
            from ..checkpoints import load

            model = load(resume_ckpt.path / WEIGHTS, **runtime_settings(c))
        else:
            model = build_model(c, self.num_classes, self.say)
            model.preprocessing = model_preprocessing(model, c)
        model.class_names = list(self.classes) + [str(i) for i in range(len(self.classes), model.num_classes)]
        if c.progressive_min_size:  # smaller inputs early in the run: the position embeddings are resampled
            model.config = model.config.replace(dynamic_image_size=True)
        if model.num_classes != self.num_classes:
            raise UsageError(f"the model has {model.num_classes} classes, the data {self.num_classes}")
        if c.precision == "fp16" and self.info.device.type != "cuda":
            raise UsageError("--precision fp16 needs a GPU (it uses a grad scaler); on CPU use bf16")
        if c.precision == "fp16" and sharded:
            raise UsageError("--precision fp16 with --parallel fsdp is not supported; use --fsdp-param-dtype bf16")
        if resume_ckpt is not None and is_sharded_checkpoint(resume_ckpt.path) != sharded:
            raise UsageError(f"--resume {resume_ckpt.path}: a {'sharded' if not sharded else 'DDP'} checkpoint; "
                             f"resume it with --parallel {'fsdp' if not sharded else 'ddp'}")
        self.model = model.to(self.info.device)
        # the model that trains: itself, DDP around it, or sharded in place by FSDP (before the optimizer sees it)
        self.ema_model = copy.deepcopy(model).eval() if c.ema_decay > 0 else None
        self.train_model = wrap_model(model, ParallelConfig(c.parallel, c.fsdp_param_dtype, c.checkpoint_blocks),
                                      self.info)

    def prepare_steps(self) -> None:
        c, info = self.config, self.info
        if c.batch_size % (c.accum_steps * info.world_size):
            raise UsageError(f"batch_size {c.batch_size} is not divisible by accum_steps x processes "
                             f"({c.accum_steps} x {info.world_size})")
        self.steps_per_epoch = len(self.train_set) // c.batch_size
        if self.steps_per_epoch < 1:
            raise UsageError(f"batch_size {c.batch_size} is larger than the {len(self.train_set)} training images")
        self.total = c.steps if c.steps is not None else max(1, math.ceil(c.epochs * self.steps_per_epoch))
        self.warmup = min(c.warmup_steps or int(round(c.warmup_epochs * self.steps_per_epoch)), self.total)
        self.end_step = min(self.total, c.stop_after) if c.stop_after is not None else self.total
        self.start_step = 0

    def prepare_optimizer(self, resume_ckpt: Checkpoint | None) -> None:
        """Optimizer, grad scaler, EMA; for a resumed run their saved state, and what is left to do."""
        c = self.config
        self.optimizer = build_optimizer(self.model, OptimizerSettings.from_config(c))
        self.scaler = torch.amp.GradScaler(self.info.device.type, enabled=c.precision == "fp16")
        self.ema = EMA(self.model, c.ema_decay, warmup=c.ema_warmup) if c.ema_decay > 0 else None
        if resume_ckpt is None:
            return
        load_optimizer = (lambda: load_sharded_checkpoint(resume_ckpt.path, self.model, self.optimizer)) \
            if self.sharded else None
        restore(resume_ckpt.state, self.optimizer, self.scaler, self.ema, resume_ckpt.path, load_optimizer)
        start = self.start_step = resume_ckpt.step
        spent = bool(c.budget_minutes) and float(resume_ckpt.state.get("train_seconds") or 0.0) >= 60 * c.budget_minutes
        # killed after its last checkpoint but before the final weights (all steps done, or the budget spent):
        # resuming only finishes it
        if not (self.run_dir / WEIGHTS).exists() and (start == self.total or spent):
            self.end_step, self.out_of_time = start, spent
        elif spent:
            raise UsageError(f"--resume {resume_ckpt.path}: the run already spent its budget of "
                             f"{c.budget_minutes:g} minutes; raise --budget-minutes to train longer")
        elif start >= self.total:
            raise UsageError(f"--resume {resume_ckpt.path}: the run already finished ({start} of {self.total} "
                             "steps); raise --steps to train longer")
        elif self.end_step <= start:
            raise UsageError(f"--stop-after {c.stop_after}: the run is already at step {start}")

    def write_run_folder(self, resume_ckpt: Checkpoint | None) -> None:
        """config.json and run.json (rank 0, under the run's lock), and the metrics logger."""
        c, info, model, run_dir = self.config, self.info, self.model, self.run_dir
        self.resolved = c.replace(name=run_dir.name, out_dir=str(run_dir.parent), num_classes=self.num_classes,
                                  image_size=model.config.image_size[0], mean=list(model.preprocessing.mean),
                                  std=list(model.preprocessing.std), interpolation=model.preprocessing.interpolation,
                                  steps=self.total, stop_after=None)  # stop_after belongs to one invocation
        if self.main:
            from ..checkpoints.io import atomic_write_text
            from ..models import count_parameters

            if resume_ckpt is None and not self.restart:
                self.lock = self.lock if self.lock.fd is not None else RunLock(run_dir).acquire()
                self.check_fresh(run_dir)  # again, under the lock: another process may have started it meanwhile
            atomic_write_text(run_dir / CONFIG, self.resolved.to_json() + "\n")
            if self.provenance is not None:
                atomic_write_text(run_dir / run_folder.PROVENANCE, self.provenance)
            atomic_write_text(run_dir / RUN_INFO, json.dumps({
                "classes": self.classes, "data": self.splits.description, "train_images": len(self.train_set),
                "val_images": len(self.val_set) if self.val_set is not None else 0,
                "val_split": self.splits.val_name, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total, "warmup_steps": self.warmup, "world_size": info.world_size,
                "device": str(info.device), "parameters": count_parameters(model), "model": model.config.to_dict(),
                "preprocessing": model.preprocessing.to_dict(), "torch": torch.__version__, "command": sys.argv,
            }, indent=2) + "\n")
            if self.shard_data is None:
                write_split(run_dir, c, self.splits)  # the evaluation split as a fact, for vitkit eval
            if self.splits.bad_files:
                atomic_write_text(run_dir / BAD_FILES, "".join(f"{p}\t{r}\n" for p, r in self.splits.bad_files))
        resumed = resume_ckpt is not None
        self.metrics = MetricsLogger(run_dir, self.main, parse_loggers(c.log), self.start_step if resumed else None,
                                     redo_evals=resumed and self.start_step == self.end_step,
                                     config=self.resolved.to_dict())
        if resumed:
            faults.hit("resume.metrics", self.start_step)
        distributed.barrier(info)

    def prepare_loaders(self) -> None:
        c, info, model = self.config, self.info, self.model
        pin = info.device.type == "cuda"
        augment = dict(crop=c.crop, crop_min_area=c.crop_min_area, crop_padding=c.crop_padding, hflip=c.hflip,
                       randaugment_ops=c.randaugment_ops, randaugment_magnitude=c.randaugment_magnitude,
                       random_erasing=c.random_erasing, randaugment_style=c.randaugment_style,
                       randaugment_magnitude_std=c.randaugment_magnitude_std,
                       randaugment_increasing=c.randaugment_increasing)
        workers = auto_workers(self.train_set, c.num_workers, info.world_size)
        sampler = StepBatchSampler(len(self.train_set), c.batch_size, c.accum_steps, info.world_size, info.rank,
                                   c.seed, self.start_step, self.end_step, repeats=c.repeated_augmentation)
        if self.shard_data is not None:  # streamed from tar shards, from position start_step x batch_size
            if c.repeated_augmentation > 1:
                raise UsageError(f"--data {c.data}: tar shards stream each image once; repeated_augmentation="
                                 f"{c.repeated_augmentation} needs an image folder or CIFAR pickles")
            transform = train_transform(model.preprocessing, **augment)
            self.make_batches = lambda: iter(self.shard_data.train_batches(transform, self.start_step, workers, pin))
        elif c.pipeline == "tensor":  # decoded once into one uint8 tensor, augmented a batch at a time
            augment = TensorAugment(model.preprocessing.mean, model.preprocessing.std, crop=c.crop,
                                    crop_min_area=c.crop_min_area, crop_padding=c.crop_padding, hflip=c.hflip,
                                    random_erasing=c.random_erasing)
            self.make_batches = lambda: iter(TensorBatches(stack_images(self.train_set), self.train_set.labels,
                                                           sampler, augment))
        else:
            data = TransformedImages(self.train_set, train_transform(model.preprocessing, **augment))
            self.make_batches = lambda: iter(train_loader(data, sampler, workers, pin))
        self.val_batches = None
        eval_batch = c.eval_batch_size or max(c.batch_size // c.accum_steps // info.world_size, 1)
        if self.shard_data is not None and self.val_set is not None:
            self.val_batches = self.shard_data.eval_batches(eval_transform(model.preprocessing), eval_batch,
                                                            auto_workers(self.val_set, c.num_workers,
                                                                         info.world_size), pin)
        elif self.val_set is not None:
            val_data = TransformedImages(self.val_set, eval_transform(model.preprocessing))
            val_workers = auto_workers(self.val_set, -1 if self.val_set.in_memory else c.num_workers,
                                       info.world_size)
            self.val_batches = eval_loader(val_data, eval_batch, val_workers, info.rank, info.world_size, pin)

    def prepare_components(self, resume_ckpt: Checkpoint | None) -> None:
        """The model that trains (compiled if asked), and the step, evaluator, checkpointer, clock and bar."""
        c, info, model = self.config, self.info, self.model
        from tqdm.auto import tqdm

        synced_model = train_model = self.train_model  # (no_sync / set_requires_gradient_sync go to the wrapper)
        if c.compile:
            mode = None if c.compile_mode == "default" else c.compile_mode
            train_model = torch.compile(train_model, backend=c.compile_backend, mode=mode)
        self.schedule = Schedule(ScheduleSettings.from_config(c), self.total, self.warmup,
                                 model.config.image_size[0], model.config.patch_size[0] * model.config.stem_stride)
        resize_inputs = c.pipeline == "tensor" or bool(c.progressive_min_size)
        self.train_step = TrainStep(StepSettings.from_config(c, resize_inputs), model, train_model, self.optimizer,
                                    self.scaler, self.ema, synced_model, iter(()), self.num_classes, info,
                                    self.total)
        self.clock = TrainClock(float(resume_ckpt.state.get("train_seconds") or 0.0) if resume_ckpt else 0.0)
        self.evaluator = Evaluator(model, self.ema, self.ema_model, self.val_batches, self.splits.val_name,
                                   self.num_classes, c.precision, info, self.metrics, self.clock, self.started,
                                   every_steps=self.steps_per_epoch if c.eval_every == 0 else c.eval_every,
                                   every_minutes=c.eval_every_minutes, steps_per_epoch=self.steps_per_epoch,
                                   progress=c.progress and self.main, sharded=self.sharded,
                                   flip=c.eval_flip)
        if self.sharded:  # every rank writes its shard
            def write(run_dir, step, state, keep):
                return write_sharded_checkpoint(run_dir, step, model, self.optimizer, state, info, keep=keep)
        else:
            def write(run_dir, step, state, keep):
                return write_checkpoint(run_dir, step, model, state, keep=keep)
        self.checkpointer = Checkpointer(self.run_dir, model, self.checkpoint_state, every=c.checkpoint_every,
                                         keep=c.keep_checkpoints, info=info, write=write, sharded=self.sharded,
                                         resumed_step=resume_ckpt.step if resume_ckpt else None,
                                         resumed_path=resume_ckpt.path if resume_ckpt else None)
        self.bar = tqdm(total=self.total, initial=self.start_step, desc=f"train {self.run_dir.name}", unit="step",
                        disable=not (c.progress and self.main), dynamic_ncols=True, smoothing=0.05)
        model.train()

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint holds beside the weights (and, sharded, beside the model's and optimizer's shards)."""
        if self.sharded:
            return {"rng": rng_state(), "config": self.resolved.to_json(), "world_size": self.info.world_size,
                    "total_steps": self.total, "model_config": self.model.config.to_dict(),
                    "preprocessing": self.model.preprocessing.to_dict(),
                    "data": {"train_images": len(self.train_set), "steps_per_epoch": self.steps_per_epoch},
                    "train_seconds": self.clock.seconds()}
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None, "rng": rng_state(),
                "config": self.resolved.to_json(), "world_size": self.info.world_size, "total_steps": self.total,
                "data": {"train_images": len(self.train_set), "steps_per_epoch": self.steps_per_epoch},
                "train_seconds": self.clock.seconds()}

    # ------------------------------------------------------------------------------------------ the end
    def finish(self, end: int, final: EvalResult | None, final_ema: EvalResult | None) -> TrainResult:
        """The final weights (of a finished run), the summary record and the closing lines."""
        info, model, run_dir, splits = self.info, self.model, self.run_dir, self.splits
        finished = end == self.total or self.out_of_time
        seconds = time.time() - self.started
        if self.shard_data is not None:  # broken samples met by every rank
            self.shard_data.gather_bad_files(run_dir / BAD_FILES)
        if self.sharded and finished:  # the whole model, gathered on rank 0 (every rank takes part; None elsewhere)
            model = unsharded_copy(model, info)
        if self.main and finished:
            from ..checkpoints import save as save_model

            faults.hit("final.weights", end)
            model.eval()
            save_model(model.cpu(), run_dir / WEIGHTS)
            if self.ema_model is not None:
                self.ema.copy_to(self.ema_model)
                save_model(self.ema_model.cpu(), run_dir / EMA_WEIGHTS)
        summary = {"kind": "summary", "step": end, "finished": finished, "seconds": round(seconds, 2),
                   "train_seconds": round(self.clock.seconds(), 2), "bad_files": len(splits.bad_files)}
        if self.interrupted:
            summary["interrupted"] = True
        if self.train_step.skipped_steps:
            summary["skipped_steps"] = self.train_step.skipped_steps
        if final is not None:
            summary.update({f"{splits.val_name}_top1": final.top1, f"{splits.val_name}_top5": final.top5})
        if final_ema is not None:
            summary[f"{splits.val_name}_top1_ema"] = final_ema.top1
        self.metrics.write(summary)
        distributed.barrier(info)

        if final is not None:
            hits = int(round(final.top1 * final.count))
            line = (f"{splits.val_name} accuracy {100 * final.top1:.2f}% ({hits}/{final.count}), "
                    f"top-5 {100 * final.top5:.2f}%" + (" (flip-averaged: eval_flip)" if self.config.eval_flip else ""))
            if final_ema is not None:
                line += f"; EMA weights {100 * final_ema.top1:.2f}%"
            self.say(line)
        if splits.bad_files:
            self.say(f"skipped {len(splits.bad_files)} unreadable file(s), listed in {run_dir / BAD_FILES}")
        resume_command = f"vitkit train --resume {run_dir}"
        if finished:
            self.say(f"trained {end - self.start_step:,} steps in {_format_seconds(seconds)}; run saved to "
                     f"{run_dir}/ ({WEIGHTS}, checkpoints/, {METRICS}, {CURVES}, {CONFIG})")
        elif self.interrupted:
            message = (f"interrupted after step {end} of {self.total}; checkpoint saved to "
                       f"{self.checkpointer.saved_path}; continue with: {resume_command}")
            self.say(message)
            raise TrainingInterrupted(message, run_dir, end)
        else:
            self.say(f"stopped after step {end} of {self.total} ({_format_seconds(seconds)}); continue with: "
                     f"{resume_command}")
        return TrainResult(run_dir=run_dir, step=end, total_steps=self.total, finished=finished, seconds=seconds,
                           val_name=splits.val_name, final=final, final_ema=final_ema, bad_files=splits.bad_files,
                           model=model.cpu() if model is not None else None)


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The resolved config a run wrote (for --resume and evaluation)."""
    from .config import apply_overrides, read_recipe_file

    path = Path(run_dir)
    if run_folder.is_checkpoint_dir(path):
        path = path.parent.parent
    return apply_overrides(TrainConfig(), read_recipe_file(path / CONFIG))
