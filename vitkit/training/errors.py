"""How a training run can stop short, as exceptions whose message says where, what was kept and what to do."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training stopped (a non-finite loss, a checkpoint that could not be written): the message says where and
    what was kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT): the run saved a checkpoint at the step it had reached; the message is the resume command."""

    def __init__(self, message: str, run_dir, step: int):
        super().__init__(message)
        self.run_dir = run_dir
        self.step = step
