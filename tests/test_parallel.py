"""FSDP2 and sharded checkpoints (`vitkit.training.parallel`) with real `torchrun` launches on the CPU (gloo): FSDP
trains as DDP does (fp32, losses within 1e-5); a checkpoint saved by 2 ranks continues on 1 rank exactly as the
uninterrupted 2-rank run; activation checkpointing changes nothing but memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitkit.training.checkpoint import list_checkpoints, verify_manifest
from vitkit.training.parallel import is_sharded_checkpoint, read_sharded_state

WORKER = Path(__file__).with_name("parallel_worker.py")


def launch(tmp_path: Path, name: str, *args: str, ranks: int = 2) -> dict:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if ranks == 1:
        command = [sys.executable, str(WORKER), str(out), *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
                   str(WORKER), str(out), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(out.read_text())


def test_fsdp_trains_as_ddp_does(tmp_path):
    ddp = launch(tmp_path, "ddp", "--mode", "ddp", "--steps", "4")
    fsdp = launch(tmp_path, "fsdp", "--mode", "fsdp", "--steps", "4", "--checkpoint-blocks")
    assert ddp["world_size"] == fsdp["world_size"] == 2
    assert fsdp["losses"] == pytest.approx(ddp["losses"], rel=1e-5, abs=1e-6)
    assert len(set(ddp["losses"])) == 4  # it does learn: the losses move
    for key, value in ddp["weights"].items():
        assert fsdp["weights"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_a_sharded_checkpoint_from_two_ranks_continues_on_one(tmp_path):
    run = tmp_path / "run"
    whole = launch(tmp_path, "whole", "--mode", "fsdp", "--steps", "5", "--save-at", "2", "--run-folder", str(run))
    [(step, folder)] = list_checkpoints(run)
    assert step == 2 and is_sharded_checkpoint(folder)
    verify_manifest(folder)
    names = sorted(p.name for p in folder.iterdir())
    assert "__0_0.distcp" in names and "__1_0.distcp" in names and "state.pt" in names
    assert read_sharded_state(folder)["note"] == "test"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary folder left

    resumed = launch(tmp_path, "resumed", "--mode", "fsdp", "--steps", "5", "--resume", str(folder), ranks=1)
    assert resumed["world_size"] == 1
    assert resumed["losses"] == pytest.approx(whole["losses"][2:], rel=1e-5, abs=1e-6)
    for key, value in whole["weights"].items():
        assert resumed["weights"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
