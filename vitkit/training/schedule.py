"""What changes over a run, step by step: the learning rate and the input size (progressive resolution); and the
clock of runs that train for a time budget rather than a step count.

A run with `budget_minutes` trains until its training clock (wall time in the loop, less evaluations and
checkpoints) reaches the budget, and its schedules follow the share of the budget spent instead of the share of
the steps done: the learning rate reaches its end value just as the time runs out, however fast the machine
is. `steps` is then only an upper bound. Such a run is not bitwise reproducible (the step at which each rate
applies depends on the machine's speed); a resumed one continues its clock where the checkpoint left it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

from .optim import learning_rate


class TrainClock:
    """Seconds of training so far: time since `start()`, less the time spent inside `paused()`, plus what an
    earlier invocation of the same run had already trained (`already`)."""

    def __init__(self, already: float = 0.0):
        self.already = float(already)
        self.started: float | None = None
        self.paused_for = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        if self.started is None:
            return self.already
        return self.already + time.perf_counter() - self.started - self.paused_for

    @contextlib.contextmanager
    def paused(self):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.paused_for += time.perf_counter() - began


@dataclass
class StepPlan:
    """What one optimizer step uses."""

    lr: float
    image_size: int  # the side of the training images at this step


@dataclass(frozen=True)
class ScheduleSettings:
    """What the schedule needs from the training config (a small piece of it, so the flow of each value is
    visible)."""
    lr: float  # the peak rate, reached at the end of the warm-up
    min_lr: float  # the rate at the last step
    schedule: str  # "cosine", "linear" or "constant" after the warm-up
    budget_minutes: float | None  # train for this long, the decay following the time spent; None: by steps
    progressive_min_size: int | None  # progressive resolution: the first side; None: the full size throughout
    progressive_until: float  # the share of the run at which the full size is reached

    @classmethod
    def from_config(cls, c) -> "ScheduleSettings":
        return cls(lr=c.lr, min_lr=c.min_lr, schedule=c.schedule, budget_minutes=c.budget_minutes,
                   progressive_min_size=c.progressive_min_size, progressive_until=c.progressive_until)


class Schedule:
    """The learning rate and input size of each step, from its settings.

    Without a budget the learning rate is `optim.learning_rate(step, ...)` (warm-up, then decay over the steps).
    With `budget_minutes`, the decay follows the share of the budget spent, and the warm-up multiplies it:
    lr = peak * min(1, (step + 1) / warmup_steps) * decay(seconds / budget).
    """

    def __init__(self, settings: ScheduleSettings, total_steps: int, warmup_steps: int, image_size: int,
                 patch_step: int):
        self.settings = settings
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.image_size = image_size
        self.patch_step = patch_step  # input sides must be multiples of this (patch size x stem stride)
        self.budget_seconds = 60.0 * settings.budget_minutes if settings.budget_minutes else None

    def progress(self, step: int, seconds: float) -> float:
        """The share of the run done, in [0, 1]: of the time budget, or of the steps."""
        if self.budget_seconds is not None:
            return min(max(seconds / self.budget_seconds, 0.0), 1.0)
        return min(step / max(self.total_steps, 1), 1.0)

    def out_of_time(self, seconds: float) -> bool:
        return self.budget_seconds is not None and seconds >= self.budget_seconds

    def lr(self, step: int, seconds: float) -> float:
        c = self.settings
        if self.budget_seconds is None:
            return learning_rate(step, self.total_steps, c.lr, self.warmup_steps, c.schedule, c.min_lr)
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        p = self.progress(step, seconds)
        if c.schedule == "constant":
            decay = 1.0
        elif c.schedule == "linear":
            decay = 1.0 - p
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * p))
        return warm * (c.min_lr + (c.lr - c.min_lr) * decay)

    def size(self, progress: float) -> int:
        """Progressive resolution: from `progressive_min_size` up to the full size, linearly in the run's progress
        until `progressive_until`, in whole patches."""
        start = self.settings.progressive_min_size
        if not start or start >= self.image_size:
            return self.image_size
        until = self.settings.progressive_until
        share = 1.0 if until <= 0 else min(progress / until, 1.0)
        side = start + (self.image_size - start) * share
        side = int(round(side / self.patch_step)) * self.patch_step
        return max(self.patch_step, min(side, self.image_size))

    def at(self, step: int, seconds: float) -> StepPlan:
        return StepPlan(lr=self.lr(step, seconds), image_size=self.size(self.progress(step, seconds)))


__all__ = ["TrainClock", "Schedule", "ScheduleSettings", "StepPlan"]
