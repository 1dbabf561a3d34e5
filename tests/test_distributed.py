"""`torchrun --nproc-per-node 2 -m vitkit train` (DDP over gloo, on CPU) trains as one process does with the
same global batch: the same losses step by step and the same weights, within float tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.training.trainer import train

from test_train import TINY, tiny_config



def torchrun() -> list[str]:
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_two_processes_train_like_one(tmp_path):
    # SGD: its update is linear in the gradient, so the weights can be compared tightly (Adam divides tiny
    # gradients by their own size, which turns summation-order rounding into visible differences)
    settings = dict(steps=4, batch_size=8, accum_steps=2, warmup_steps=1, optimizer="sgd", lr=0.2,
                    weight_decay=1e-4, limit_per_class=6, randaugment_ops=1, checkpoint_every=2)
    single = train(tiny_config(tmp_path, name="single", **settings), log=lambda m: None)

    flags = ["--data", "digits", "--out-dir", str(tmp_path / "runs"), "--name", "ddp", "--progress", "false",
             "--num-workers", "0", "--log-every", "1", "--eval-every", "-1", "--crop", "inception",
             "--crop-min-area", "0.5", "--hflip", "false", "--schedule", "cosine", "--device", "cpu"]
    flags += [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, **settings}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([*torchrun(), "--standalone", "--nproc-per-node", "2", "-m", "vitkit", "train",
                             "--recipe", "digits", *flags], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert result.stdout.count("test accuracy") == 1  # only rank 0 speaks (and writes)

    ddp_run = tmp_path / "runs" / "ddp"
    config = json.loads((ddp_run / "config.json").read_text())
    assert config["batch_size"] == 8 and config["accum_steps"] == 2  # the global batch, as the recipe says
    assert json.loads((ddp_run / "run.json").read_text())["world_size"] == 2
    ddp_losses = [r["loss"] for r in records(ddp_run, "train")]
    single_losses = [r["loss"] for r in records(single.run_dir, "train")]
    assert len(ddp_losses) == 4 and ddp_losses == pytest.approx(single_losses, rel=1e-5, abs=1e-6)
    assert [r["accuracy"] for r in records(ddp_run, "train")] == [r["accuracy"] for r in records(single.run_dir,
                                                                                               "train")]
    assert records(ddp_run, "eval")[0]["count"] == records(single.run_dir, "eval")[0]["count"]  # every image once
    assert records(ddp_run, "eval")[0]["top1"] == pytest.approx(records(single.run_dir, "eval")[0]["top1"])
    a = vitkit.load(single.run_dir / "model.safetensors").state_dict()
    b = vitkit.load(ddp_run / "model.safetensors").state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    assert sorted(p.name for p in (ddp_run / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]
