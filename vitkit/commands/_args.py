"""argparse types shared by the commands: numbers checked against their range (`vitkit.options.Range`) and device
names, so that a bad value is a one-line argparse error naming the flag and what is allowed."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..options import AT_LEAST_ONE, COUNT, POSITIVE, SHARE, Range, require_device


def number(kind: type, allowed: Range):
    """An argparse type: `kind` (int or float) read from the text, then checked against `allowed`."""

    def parse(text: str):
        value = kind(text)  # a ValueError: argparse's own "invalid int value: 'x'"
        problem = allowed.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def int_range(lo: int | None = None, hi: int | None = None):
    """Whole numbers lo..hi, both ends included."""
    return number(int, Range(lo, hi, integer=True))


positive_int = number(int, AT_LEAST_ONE)    # >= 1: batch sizes, counts of things shown
count = number(int, COUNT)                  # >= 0
positive_float = number(float, POSITIVE)    # > 0
share = number(float, SHARE)                # [0, 1]
open_share = number(float, Range(0, 1, lo_open=True, hi_open=True))  # (0, 1): a hold-out share


def device(text: str) -> str:
    """--device: auto, cpu, cuda, cuda:N or mps, and one this machine has."""
    try:
        return require_device(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


DEVICE_HELP = "auto (a GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps (default auto)"
