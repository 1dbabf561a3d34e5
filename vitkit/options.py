"""Checks of option values shared by the command line and the Python API: number ranges and device names.

A range is written once (`Range`) and used both by argparse (`vitkit.commands._args`) and by `TrainConfig`, so a
bad value gets the same words wherever it comes from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class Range:
    """Allowed numbers: lo..hi (None: unbounded), each end open or closed; `integer` for whole numbers only."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def text(self) -> str:
        """The range in words: "> 0", ">= 1", "in [0, 1)"."""
        fmt = lambda v: str(int(v)) if float(v).is_integer() else str(v)  # noqa: E731
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{fmt(self.lo)}, {fmt(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {fmt(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {fmt(self.hi)}"
        return "a finite number"

    def problem(self, value) -> str | None:
        """None when `value` is allowed, else what is wrong with it ("must be in [0, 1), got 1.5")."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be {'a whole number' if self.integer else 'a number'} {self.text()}, got {value!r}"
        if self.integer and not float(value).is_integer():
            return f"must be a whole number {self.text()}, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number {self.text()}, got {value!r}"
        low_bad = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high_bad = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low_bad or high_bad:
            return f"must be {self.text()}, got {value!r}"
        return None


POSITIVE = Range(0, lo_open=True)          # > 0
NON_NEGATIVE = Range(0)                    # >= 0
AT_LEAST_ONE = Range(1, integer=True)      # >= 1 (counts, sizes)
COUNT = Range(0, integer=True)             # >= 0 (counts where 0 turns a thing off)
RATE = Range(0, 1, hi_open=True)           # [0, 1): dropout, decays, smoothing
SHARE = Range(0, 1)                        # [0, 1]: probabilities, shares


# ------------------------------------------------------------------------------------------------- devices
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_name(name) -> str:
    """A device name in its plain spelling ("CUDA:0" -> "cuda:0"); anything else is a UsageError naming the choices.

    Only the spelling is checked: whether the machine has that device is `require_device`'s question.
    """
    text = str(name).strip().lower()
    if not _DEVICE.match(text):
        raise UsageError(f"--device {name}: not a device; choose {DEVICE_CHOICES}")
    return text


def require_device(name) -> str:
    """`device_name`, and a UsageError when this machine has no such device (cuda without CUDA, mps without MPS)."""
    text = device_name(name)
    if text.startswith("cuda") or text == "mps":
        import torch

        if text.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UsageError(f"--device {text}: this machine has no CUDA device (use --device auto or cpu)")
            index = int(text.split(":")[1]) if ":" in text else 0
            if index >= torch.cuda.device_count():
                raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                                 f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        elif not torch.backends.mps.is_available():
            raise UsageError("--device mps: this machine has no MPS device (use --device auto or cpu)")
    return text
