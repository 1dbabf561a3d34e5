"""Non-finite values: a NaN or infinite loss, or a non-finite gradient norm behind a finite loss, injected at a
chosen step (failure points `loss` and `grad`, see vitkit.training.faults). By default the run stops, names the step,
and leaves the last good checkpoint byte for byte as it was; with --on-nonfinite skip the step's update is dropped
(weights, optimizer state and EMA exactly as before it) and the run goes on to the end."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from vitkit.checkpoints.io import read_safetensors
from vitkit.cli import main
from vitkit.training import checkpoint as ckpt

TINY_FLAGS = ["--data", "digits", "--model", "ViT-Ti/4", "--image-size", "8", "--patch-size", "4", "--width", "32",
              "--depth", "1", "--num-heads", "2", "--mlp-dim", "64", "--batch-size", "16", "--warmup-steps", "1",
              "--limit-per-class", "8", "--val-split", "none", "--progress", "false", "--num-workers", "0",
              "--log-every", "3", "--ema-decay", "0.9", "--keep-checkpoints", "0"]


def args(tmp_path: Path, *extra) -> list[str]:
    return ["train", *TINY_FLAGS, "--out-dir", str(tmp_path / "runs"), "--name", "run", *map(str, extra)]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("failpoint, clip", [("loss@5=nan", 1.0), ("loss@5=inf", 1.0), ("grad@5=nan", 1.0),
                                              ("grad@5=inf", 0.0)])
def test_a_non_finite_value_stops_the_run_at_its_step(tmp_path, monkeypatch, capsys, failpoint, clip):
    """Checkpoints every 2 steps; step 5 goes bad; step 6 would have been checkpointed."""
    monkeypatch.setenv("VITKIT_FAILPOINTS", failpoint)
    hashes = {}
    real_write = ckpt.write_checkpoint

    def write_and_remember(run_dir, step, *a, **k):
        path = real_write(run_dir, step, *a, **k)
        hashes[step] = folder_hashes(path)
        return path

    monkeypatch.setattr("vitkit.training.trainer.write_checkpoint", write_and_remember)
    code = main(args(tmp_path, "--steps", 8, "--checkpoint-every", 2, "--grad-clip", clip))
    err = capsys.readouterr().err.strip()
    run = tmp_path / "runs" / "run"
    good = run / "checkpoints" / "step_00000004"
    assert code == 1 and err.count("\n") == 0, err
    assert "non-finite at step 5 of 8" in err and f"{good} (step 4), is untouched" in err
    assert sorted(hashes) == [2, 4]  # nothing written after the bad step ...
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 4]
    assert folder_hashes(good) == hashes[4]  # ... and the last good checkpoint byte for byte as written
    assert not (run / "model.safetensors").exists()
    assert records(run)[-1] == {"kind": "stopped", "step": 5, "reason": "non-finite loss or gradient norm"}


def test_skip_drops_the_bad_steps_updates_and_finishes(tmp_path, monkeypatch, capsys):
    """A NaN loss at step 3 and an infinite gradient (finite loss) at step 5, checkpoints after every step: the
    checkpoints around each skipped step hold the same weights, optimizer state and EMA, bitwise."""
    monkeypatch.setenv("VITKIT_FAILPOINTS", "loss@3=nan,grad@5=inf")
    code = main(args(tmp_path, "--steps", 7, "--checkpoint-every", 1, "--on-nonfinite", "skip"))
    out = capsys.readouterr().out
    assert code == 0
    assert "step 3: non-finite loss (nan)" in out and "step 5: non-finite loss" in out and "gradient norm (inf)" in out
    run = tmp_path / "runs" / "run"
    log = records(run)
    assert [(r["step"], math.isnan(r["loss"])) for r in log if r["kind"] == "skipped"] == [(3, True), (5, False)]
    assert log[-1]["kind"] == "summary" and log[-1]["finished"] and log[-1]["skipped_steps"] == 2
    assert all(math.isfinite(r["loss"]) for r in log if r["kind"] == "train")

    def checkpoint(step):
        found = ckpt.read_checkpoint_dir(run / "checkpoints" / ckpt.step_dir_name(step))
        return found.weights, found.state["optimizer"]["state"], found.state["ema"]

    def same(a, b) -> bool:
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, tuple):
            return all(same(x, y) for x, y in zip(a, b, strict=True))
        return torch.equal(a, b)

    for skipped in (3, 5):
        assert same(checkpoint(skipped), checkpoint(skipped - 1))  # the update was dropped whole
        assert not same(checkpoint(skipped + 1)[0], checkpoint(skipped)[0])  # and the next one applied
    final, _ = read_safetensors(run / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in final.values())
