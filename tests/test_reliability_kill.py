"""Kill and resume: `vitkit train` processes SIGKILLed at exact points (between steps, inside a step, at each
stage of a checkpoint write, while a resumed run cuts its metrics back, before the final weights), then resumed
with `--resume`, end with weights, EMA weights, optimizer state and losses bitwise equal to an uninterrupted run.

12 kill points in all: 7 single kills, a chain of 3 kills of the same run, a real `python -m vitkit` subprocess
killed inside a checkpoint write, and one resumed twice. The runs have every source of randomness on (dropout,
stochastic depth, Mixup, RandAugment, random crops) and EMA, in deterministic mode (`--deterministic`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from reliability_helpers import finished, killed_at, subprocess_killed_at
from vitkit.checkpoints.io import read_safetensors
from vitkit.cli import main
from vitkit.training import checkpoint as ckpt

STEPS = 8


def train_argv(out: Path, name: str) -> list[str]:
    """A tiny deterministic run: 8 steps, checkpoints every 2 (the last 2 kept), evaluation every 3."""
    return ["train", "--data", "digits", "--model", "ViT-Ti/4", "--image-size", "8", "--patch-size", "4",
            "--width", "32", "--depth", "1", "--num-heads", "2", "--mlp-dim", "64", "--batch-size", "16",
            "--steps", str(STEPS), "--warmup-steps", "2", "--lr", "2e-3", "--schedule", "cosine",
            "--limit-per-class", "10", "--val-per-class", "4", "--val-split", "holdout", "--dropout", "0.1",
            "--drop-path", "0.1", "--mixup-alpha", "0.4", "--randaugment-ops", "1", "--ema-decay", "0.9",
            "--crop-min-area", "0.5", "--progress", "false", "--num-workers", "0", "--log-every", "1",
            "--eval-every", "3", "--checkpoint-every", "2", "--keep-checkpoints", "2", "--deterministic",
            "--out-dir", str(out), "--name", name]


def resume_argv(run: Path) -> list[str]:
    return ["train", "--resume", str(run), "--progress", "false"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run, in a process of its own like the others."""
    out = tmp_path_factory.mktemp("reference")
    process = finished(train_argv(out, "full"), out / "full.log")
    assert process.wait() == 0, process.output
    return out / "full"


def losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def assert_identical(run: Path, reference: Path) -> None:
    """Final weights, EMA weights, the last checkpoint's optimizer state and every logged loss: bitwise equal."""
    for name in ("model.safetensors", "model_ema.safetensors"):
        got, _ = read_safetensors(run / name)
        want, _ = read_safetensors(reference / name)
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), (name, key)
    got_state = ckpt.latest_checkpoint(run).state["optimizer"]["state"]
    want_state = ckpt.latest_checkpoint(reference).state["optimizer"]["state"]
    for index in want_state:
        for key, value in want_state[index].items():
            assert torch.equal(got_state[index][key], value), (index, key)
    assert losses(run) == losses(reference)  # exactly: the same floats, every step once
    assert [s for s, _ in losses(run)] == list(range(1, STEPS + 1))
    assert not list((run / "checkpoints").glob(".*"))  # no temporary folders left behind
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [6, 8]


def step_folders(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir()) if (run / "checkpoints").is_dir() else []


# (failure point, the checkpoint folders after the kill, what the killed process left to resume from)
KILL_POINTS = [
    ("step.after_backward@1", [], "no checkpoint: starts again"),
    ("step.end@5", ["step_00000002", "step_00000004"], 4),
    ("checkpoint.weights@4", ["step_00000002", ".step_00000004.*.tmp"], 2),
    ("checkpoint.state@4", ["step_00000002", ".step_00000004.*.tmp"], 2),
    ("checkpoint.before_rename@4", ["step_00000002", ".step_00000004.*.tmp"], 2),
    ("checkpoint.renamed@6", ["step_00000002", "step_00000004", "step_00000006"], 6),
    ("final.weights@8", ["step_00000006", "step_00000008"], 8),
]


def check_left(run: Path, expected: list[str]) -> None:
    found = step_folders(run)
    patterns = sorted(expected)
    assert len(found) == len(patterns) and all(re.fullmatch(p.replace(".", r"\.").replace("*", ".*"), f)
                                               for p, f in zip(patterns, found)), found


@pytest.mark.parametrize("point, left, resumes_from", KILL_POINTS, ids=[p for p, _, _ in KILL_POINTS])
def test_killed_then_resumed_ends_bitwise_identical(tmp_path, reference, point, left, resumes_from):
    run = tmp_path / "run"
    killed_at(train_argv(tmp_path, "run"), tmp_path / "killed.log", point)
    check_left(run, left)
    if point.startswith("checkpoint.") and point != "checkpoint.renamed@6":
        tmp = next((run / "checkpoints").glob(".step_00000004.*.tmp"))  # killed inside the write of step 4
        expected = {"checkpoint.weights@4": ["model.safetensors"],
                    "checkpoint.state@4": ["model.safetensors", "state.pt"],
                    "checkpoint.before_rename@4": ["manifest.json", "model.safetensors", "state.pt"]}[point]
        assert sorted(p.name for p in tmp.iterdir()) == expected
    if point == "final.weights@8":
        assert not (run / "model.safetensors").exists()

    resumed = finished(resume_argv(run), tmp_path / "resumed.log")
    assert resumed.wait() == 0, resumed.output
    if isinstance(resumes_from, int):
        assert f"from step {resumes_from} (" in resumed.output
    else:
        assert "starting it again from step 0" in resumed.output
    assert_identical(run, reference)


def test_a_chain_of_kills_of_one_run(tmp_path, reference):
    """Killed inside the write of the step-6 checkpoint (after logging step 6); the resumed process killed just
    after cutting metrics.jsonl back to step 4; the next one killed right after renaming its step-6 checkpoint into
    place; the last one finishes."""
    run = tmp_path / "run"

    def last_logged_step() -> int:
        return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]

    killed_at(train_argv(tmp_path, "run"), tmp_path / "1.log", "checkpoint.weights@6")
    assert last_logged_step() == 6
    killed_at(resume_argv(run), tmp_path / "2.log", "resume.metrics@4")
    assert last_logged_step() == 4
    third = killed_at(resume_argv(run), tmp_path / "3.log", "checkpoint.renamed@6")
    assert "from step 4 (" in third.output
    check_left(run, ["step_00000002", "step_00000004", "step_00000006", ".step_00000006.*.tmp"])  # (the first's)
    last = finished(resume_argv(run), tmp_path / "4.log")
    assert last.wait() == 0, last.output
    assert "from step 6 (" in last.output
    assert_identical(run, reference)


def test_a_real_subprocess_killed_inside_a_checkpoint_write(tmp_path, reference):
    """`python -m vitkit train` itself, SIGKILLed with the step-6 checkpoint's weights and state written but not yet
    renamed into place; resumed twice over (the first resume killed too) in this process's command line."""
    output = subprocess_killed_at(train_argv(tmp_path, "run"), "checkpoint.state@6", cwd=tmp_path)
    run = tmp_path / "run"
    check_left(run, ["step_00000002", "step_00000004", ".step_00000006.*.tmp"])
    assert "Traceback" not in output
    killed_at(resume_argv(run), tmp_path / "again.log", "step.end@5")
    assert main(resume_argv(run)) == 0
    assert_identical(run, reference)
