"""Ctrl-C during training: the first SIGINT asks the loop to stop after the step it is in (it then saves a
checkpoint and prints the resume command); a second one interrupts at once, as Ctrl-C normally does.

Data loader processes forked while the handler is installed inherit it, so a Ctrl-C in a terminal (which signals
the whole process group) does not kill them under the step that is finishing. Under torchrun every rank asks the
others each step, so that all stop after the same step.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import torch

from . import distributed


class StopRequest:
    def __init__(self, info: distributed.DistInfo, say):
        self.info = info
        self.say = say
        self.flag = False

    def handle(self, signum, frame) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        self.say("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to quit without one)")

    def requested(self) -> bool:
        """Whether any rank was asked to stop (the same answer on every rank)."""
        if not self.info.enabled:
            return self.flag
        flag = torch.tensor([1.0 if self.flag else 0.0], dtype=torch.float64, device=self.info.device)
        distributed.all_reduce_sum([flag], self.info)
        return bool(flag.item() > 0)


@contextlib.contextmanager
def catch_interrupt(info: distributed.DistInfo, say):
    """SIGINT as a stop request for the duration of the block (in the main thread; elsewhere nothing changes)."""
    request = StopRequest(info, say)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = signal.signal(signal.SIGINT, request.handle)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)
