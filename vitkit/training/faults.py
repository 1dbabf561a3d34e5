"""Failure points: named places in training and checkpointing where the reliability tests do real damage.

Off unless the environment variable VITKIT_FAILPOINTS is set, e.g.

    VITKIT_FAILPOINTS="checkpoint.before_rename@4=stop"   stop the process (SIGSTOP) inside the write of the
                                                          step-4 checkpoint, for the test to SIGKILL it there
    VITKIT_FAILPOINTS="loss@3=nan,grad@5=inf"             a NaN loss at step 3, an infinite gradient at step 5

Each item is `name[@step]=action`; without `@step` it matches every step. Steps count from 1 (the step being
computed, or the step a checkpoint belongs to). Actions: `stop` (SIGSTOP: the process waits where it is, so that a
test can kill it at an exact point, however loaded the machine), `kill` (SIGKILL itself), `nan`, `inf` (the call
site poisons a value). The points are listed in `POINTS`.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "VITKIT_FAILPOINTS"
POINTS = {
    "step.after_backward": "a step's gradients are computed, the optimizer has not stepped",
    "step.end": "a step is complete, before its log record, evaluation and checkpoint",
    "loss": "poison the loss of a step (nan, inf)",
    "grad": "poison one gradient of a step after the backward pass (nan, inf)",
    "checkpoint.weights": "the weights are written into the temporary folder, the training state is not",
    "checkpoint.state": "weights and training state are written, the manifest is not",
    "checkpoint.before_rename": "the temporary folder is complete and fsynced, not yet renamed",
    "checkpoint.renamed": "the folder has its final name, older checkpoints are not yet pruned",
    "resume.metrics": "a resumed run has cut metrics.jsonl back to its checkpoint",
    "final.weights": "the last checkpoint is written, the final model.safetensors is not",
}

_parsed: tuple[str, dict[tuple[str, int | None], str]] | None = None


def _table() -> dict[tuple[str, int | None], str]:
    global _parsed
    spec = os.environ.get(ENV, "")
    if _parsed is None or _parsed[0] != spec:
        table = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            where, _, action = item.partition("=")
            name, _, step = where.partition("@")
            if name not in POINTS:
                raise ValueError(f"{ENV}: unknown failure point {name!r}; known: {', '.join(POINTS)}")
            table[(name, int(step) if step else None)] = action or "stop"
        _parsed = (spec, table)
    return _parsed[1]


def hit(name: str, step: int | None = None) -> str | None:
    """The action set for this point and step (None, almost always); `stop` and `kill` act here."""
    if ENV not in os.environ:
        return None
    table = _table()
    action = table.get((name, step)) or table.get((name, None))
    if action in ("stop", "kill"):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)
    return action
