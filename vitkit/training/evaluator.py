"""Evaluation during training: when it is due (every N steps, every N minutes of training, at the end), and the
evaluation itself, of the weights and of the EMA weights, summed over ranks and written to the metrics."""

from __future__ import annotations

import math
import time

import torch

from ..eval.evaluate import evaluate
from ..eval.metrics import EvalResult
from . import distributed


class Evaluator:
    def __init__(self, model, ema, ema_model, batches, split_name: str, num_classes: int, precision: str,
                 info: distributed.DistInfo, metrics, clock, started: float, *, every_steps: int,
                 every_minutes: float, steps_per_epoch: int, progress: bool, sharded: bool = False,
                 flip: bool = False):
        self.model, self.ema, self.ema_model = model, ema, ema_model
        self.batches = batches  # None: the run has no evaluation split
        self.split_name = split_name
        self.num_classes, self.precision, self.info = num_classes, precision, info
        self.metrics, self.clock, self.started = metrics, clock, started
        self.every_steps = every_steps
        self.interval = 60.0 * every_minutes
        self.steps_per_epoch = steps_per_epoch
        self.progress = progress
        self.sharded = sharded  # FSDP: every rank runs as many forward passes as the others
        self.flip = flip  # test-time flip averaging
        self.next_timed = ((math.floor(clock.seconds() / self.interval) + 1) * self.interval
                           if self.interval else None)

    def due(self, step: int, seconds: float) -> bool:
        """Whether to evaluate after `step` (not the last: the end is always evaluated), `seconds` into training."""
        due = self.batches is not None and self.every_steps > 0 and step % self.every_steps == 0
        if self.next_timed is not None and seconds >= self.next_timed:
            due = due or self.batches is not None
            while self.next_timed <= seconds:
                self.next_timed += self.interval
        return due

    def __call__(self, step: int) -> tuple[EvalResult | None, EvalResult | None]:
        """(weights, EMA weights) results on the evaluation split; (None, None) without one."""
        if self.batches is None:
            return None, None
        self.metrics.write({"kind": "clock", "step": step, "train_seconds": round(self.clock.seconds(), 2),
                            "seconds": round(time.time() - self.started, 2)})  # the time behind these weights
        results = []
        for weights, net in (("model", self.model), ("ema", self.ema_model)):
            if net is None:
                results.append(None)
                continue
            if weights == "ema":
                self.ema.copy_to(self.ema_model)
            batches = self.batches
            if self.sharded:
                from .streaming import lockstep

                example = torch.zeros(1, self.model.config.in_channels, *self.model.config.image_size)
                batches = lockstep(self.batches, net, self.info, example)
            counts = evaluate(net, batches, self.num_classes, self.info.device, self.precision,
                              progress=self.progress and len(self.batches) >= 20, desc=f"eval {self.split_name}",
                              total=len(self.batches), flip=self.flip)
            distributed.all_reduce_sum(counts.tensors(), self.info)
            result = counts.result()
            self.metrics.write({"kind": "eval", "step": step, "epoch": round(step / self.steps_per_epoch, 4),
                                "split": self.split_name, "weights": weights, **({"flip": True} if self.flip else {}),
                                **result.summary()})
            results.append(result)
        self.model.train()
        return results[0], results[1]
