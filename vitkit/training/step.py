"""One optimizer step: forward and backward over the micro-batches, clipping, the optimizer, the grad scaler and
the EMA; and the running sums since the last training record, kept on the device so that no step waits for a sync.

The random state of a step is seeded from (seed, step): Mixup/CutMix from (seed, step, micro-batch), pairing images
by their position in the global micro-batch; the masks of stochastic depth and patch dropout from (seed, step,
micro-batch, layer), as this rank's rows of the global micro-batch's (`VisionTransformer.share_masks`); dropout
from (seed, step, rank). So a resumed run draws exactly what the uninterrupted one drew, and N processes what one
process draws, but for dropout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..data import mix_seed
from ..data.memory import resize_batch
from ..eval.evaluate import autocast
from . import distributed, faults
from .mixing import mix_shard
from .parallel import gradient_sync, local_tensor


class NonFinite(Exception):
    """A non-finite loss or gradient norm was summed into the window; `step` is the first such step."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


@dataclass
class StepSettings:
    """What a step needs from the config (a small piece of it, so the flow of each value is visible)."""
    seed: int
    accum_steps: int
    precision: str
    grad_clip: float
    skip_nonfinite: bool
    resize_inputs: bool
    mixup_alpha: float
    cutmix_alpha: float
    mix_prob: float
    label_smoothing: float

    @classmethod
    def from_config(cls, c, resize_inputs: bool) -> "StepSettings":
        return cls(seed=c.seed, accum_steps=c.accum_steps, precision=c.precision, grad_clip=c.grad_clip,
                   skip_nonfinite=c.on_nonfinite == "skip", resize_inputs=resize_inputs, mixup_alpha=c.mixup_alpha,
                   cutmix_alpha=c.cutmix_alpha, mix_prob=c.mix_prob, label_smoothing=c.label_smoothing)


class TrainStep:
    def __init__(self, settings: StepSettings, model, train_model, optimizer, scaler, ema, synced_model,
                 batches: Iterator,
                 num_classes: int, info: distributed.DistInfo, total_steps: int):
        self.s = settings
        self.model, self.train_model = model, train_model
        self.synced_model = synced_model  # what no_sync / set_requires_gradient_sync is called on (DDP, FSDP)
        self.optimizer, self.scaler, self.ema = optimizer, scaler, ema
        self.batches = batches
        self.num_classes = num_classes
        self.info = info
        self.device = info.device
        self.total_steps = total_steps
        self.lr = 0.0
        self.image_size: int | None = None
        self.grad_norm = torch.zeros(())
        self.skipped_steps = 0
        self.window = self._new_window()

    def _new_window(self) -> dict[str, Any]:
        zeros = [torch.zeros((), dtype=torch.float64, device=self.device) for _ in range(4)]
        return dict(loss=zeros[0], correct=zeros[1], seen=zeros[2], bad=zeros[3], steps=0, skipped=0,
                    since=time.time(), first_bad=torch.full((), float(self.total_steps + 1), dtype=torch.float64,
                                                            device=self.device))

    def __call__(self, step: int, plan) -> dict | None:
        """Step `step` (0-based) at the schedule's `plan`; the `skipped` record when its update was dropped."""
        s, w, device = self.s, self.window, self.device
        self.lr, self.image_size = plan.lr, plan.image_size
        for group in self.optimizer.param_groups:
            group["lr"] = plan.lr
        torch.manual_seed(mix_seed(s.seed, step, self.info.rank, 0xD209))  # dropout
        step_loss = torch.zeros((), device=device)
        for micro in range(s.accum_steps):
            images, labels = next(self.batches)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if s.resize_inputs:  # progressive resolution; the tensor path's images at the model's size
                images = resize_batch(images, plan.image_size)
            images, targets = mix_shard(images, labels, self.num_classes, rank=self.info.rank,
                                        world_size=self.info.world_size, mixup_alpha=s.mixup_alpha,
                                        cutmix_alpha=s.cutmix_alpha, prob=s.mix_prob, smoothing=s.label_smoothing,
                                        seed=mix_seed(s.seed, step, micro, 0x313))
            shard = images.shape[0]  # stochastic depth, patch dropout: this rank's rows of the global masks
            self.model.share_masks((mix_seed(s.seed, step, micro, 0xD20F), self.info.rank * shard,
                                    shard * self.info.world_size))
            with gradient_sync(self.synced_model, micro == s.accum_steps - 1):
                with autocast(device, s.precision):
                    logits = self.train_model(images)
                loss = F.cross_entropy(logits.float(), targets)
                poison = faults.hit("loss", step + 1)  # (tests only: nan or inf)
                if poison:
                    loss = loss * float(poison)
                self.scaler.scale(loss / s.accum_steps).backward()
            step_loss += loss.detach()
            w["correct"] += (logits.detach().argmax(dim=1) == labels).sum()
            w["seen"] += labels.numel()
        poison = faults.hit("grad", step + 1)  # (tests only: one gradient entry nan or inf)
        if poison:
            next(p for p in self.model.parameters() if p.grad is not None).grad.view(-1)[0] = float(poison)
        faults.hit("step.after_backward", step + 1)
        if s.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = local_tensor(torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip))
        elif not self.scaler.is_enabled():
            self.grad_norm = local_tensor(torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters()
                                                                         if p.grad is not None]))
        step_loss = (step_loss / s.accum_steps).double()
        finite = torch.isfinite(step_loss)
        if not self.scaler.is_enabled():  # (a grad scaler skips steps with non-finite gradients itself)
            finite = finite & torch.isfinite(self.grad_norm.to(device))
        skip = False
        if s.skip_nonfinite:  # one sync per step: every rank must agree to skip
            bad = (~finite).double().reshape(1)
            distributed.all_reduce_sum([bad], self.info)
            skip = bool(bad.item() > 0)
        skipped = None
        if skip:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            w["skipped"] += 1
            skipped = {"kind": "skipped", "step": step + 1, "loss": float(step_loss),
                       "grad_norm": float(self.grad_norm), "reason": "non-finite loss or gradient norm"}
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.model, step)
            w["loss"] += torch.where(finite, step_loss, torch.zeros_like(step_loss))
            if not s.skip_nonfinite:
                w["bad"] += (~finite).double()
                w["first_bad"] = torch.where(finite, w["first_bad"], torch.minimum(
                    w["first_bad"], torch.full_like(w["first_bad"], float(step + 1))))
        w["steps"] += 1
        return skipped

    def take_record(self, step: int, steps_per_epoch: int) -> dict | None:
        """The training record of the steps since the last one, summed over ranks, and a fresh window; None when
        no step was taken since. `NonFinite` when one of them had a non-finite loss or gradient norm."""
        w = self.window
        if w["steps"] == 0:
            return None
        sums = torch.stack([w["loss"], w["correct"], w["seen"], w["bad"]])
        distributed.all_reduce_sum([sums], self.info)
        first_bad = w["first_bad"].clone()
        if self.info.enabled:
            import torch.distributed as dist

            dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
        sums = sums.cpu()
        if sums[3] > 0:
            raise NonFinite(int(first_bad))
        elapsed = max(time.time() - w["since"], 1e-9)
        images = float(sums[2])
        record = {"kind": "train", "step": step, "epoch": round(step / steps_per_epoch, 4),
                  "loss": float(sums[0]) / (max(w["steps"] - w["skipped"], 1) * self.info.world_size),
                  "accuracy": float(sums[1]) / max(images, 1.0), "lr": self.lr, "grad_norm": float(self.grad_norm),
                  "images_per_sec": images / elapsed}
        if self.s.resize_inputs:
            record["image_size"] = self.image_size  # progressive resolution: the last step's
        self.window = self._new_window()
        return record
