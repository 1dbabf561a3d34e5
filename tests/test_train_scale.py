"""`vitkit train` at scale, with real `torchrun` launches on the CPU (gloo) and tiny models: training from tar
shards on 2 ranks equals 1 rank with the same global batch; a run killed mid-epoch while streaming resumes to the
losses of the uninterrupted run; FSDP trains as DDP does (fp32); an FSDP checkpoint saved on 2 ranks resumes on 1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.data.shards import pack_shards
from vitkit.errors import UsageError
from vitkit.training.checkpoint import list_checkpoints
from vitkit.training.parallel import is_sharded_checkpoint
from vitkit.training.trainer import train

from test_train import TINY, tiny_config

SETTINGS = dict(steps=4, batch_size=8, accum_steps=2, warmup_steps=1, optimizer="sgd", lr=0.2, weight_decay=1e-4,
                checkpoint_every=2, shard_streams=4, shuffle_buffer=16, depth=2, limit_per_class=None)
quiet = lambda message: None  # noqa: E731


def torchrun() -> list[str]:
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def records(run: Path, kind: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def flags(tmp_path: Path, name: str, data: Path, **changes) -> list[str]:
    settings = {k: v for k, v in {**TINY, **SETTINGS, **changes}.items() if v is not None}
    out = ["--recipe", "digits", "--data", str(data), "--out-dir", str(tmp_path / "runs"), "--name", name, "--progress", "false",
           "--log-every", "1", "--eval-every", "-1", "--crop", "inception", "--crop-min-area", "0.5", "--hflip",
           "false", "--schedule", "cosine", "--device", "cpu"]
    return out + [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]


def launch(tmp_path: Path, args: list[str], ranks: int = 2, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    prefix = [*torchrun(), "--standalone", "--nproc-per-node", str(ranks), "-m", "vitkit"] if ranks > 1 \
        else [sys.executable, "-m", "vitkit"]
    return subprocess.run([*prefix, "train", *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600, start_new_session=True)  # (its own process group: nothing it signals there
    # reaches the test worker, which was seen to die without a trace while this module ran)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "digits"
    pack_shards("digits", out, shard_size=12, limit_per_class=6, log=quiet)  # 60 images in 5 shards
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shards) -> dict[str, Path]:
    """One process, 2 ranks with DDP (2 loader workers each), 2 ranks with FSDP: the same shards and global batch."""
    tmp = tmp_path_factory.mktemp("scale")
    pattern = shards / "shard-{000000..000004}.tar"
    single = train(tiny_config(tmp, name="single", data=str(pattern), num_workers=0, **SETTINGS), log=quiet)
    found = {"single": single.run_dir}
    for name, extra in (("ddp", dict(parallel="ddp", num_workers=2)), ("fsdp", dict(parallel="fsdp",
                                                                                     num_workers=0))):
        result = launch(tmp, flags(tmp, name, pattern, **extra))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        assert "2 process(es)" in result.stdout
        found[name] = tmp / "runs" / name
    found["tmp"] = tmp
    return found


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in records(run)]


def test_two_ranks_streaming_shards_train_like_one(runs):
    single, ddp = losses(runs["single"]), losses(runs["ddp"])
    assert len(single) == 4 and len(set(single)) == 4
    assert ddp == pytest.approx(single, rel=1e-5, abs=1e-6)
    assert [r["accuracy"] for r in records(runs["ddp"])] == [r["accuracy"] for r in records(runs["single"])]
    run = json.loads((runs["ddp"] / "run.json").read_text())
    assert run["world_size"] == 2 and run["train_images"] == 60 and "5 shard(s)" in run["data"]
    assert records(runs["ddp"], "eval")[0]["count"] == records(runs["single"], "eval")[0]["count"] == 359
    a = vitkit.load(runs["single"] / "model.safetensors").state_dict()
    b = vitkit.load(runs["ddp"] / "model.safetensors").state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_fsdp_trains_as_ddp_does(runs):
    assert losses(runs["fsdp"]) == pytest.approx(losses(runs["ddp"]), rel=1e-5, abs=1e-6)
    assert json.loads((runs["fsdp"] / "config.json").read_text())["parallel"] == "fsdp"
    assert records(runs["fsdp"], "eval")[0]["count"] == 359  # every test image once, in lockstep over the ranks
    [(step, folder), *_] = list_checkpoints(runs["fsdp"])
    assert is_sharded_checkpoint(folder) and (folder / "__1_0.distcp").is_file()
    a = vitkit.load(runs["ddp"] / "model.safetensors").state_dict()  # the full model, gathered and exported
    b = vitkit.load(runs["fsdp"] / "model.safetensors").state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_an_fsdp_checkpoint_saved_on_two_ranks_resumes_on_one(runs):
    run = runs["tmp"] / "runs" / "fsdp-resumed"
    shutil.copytree(runs["fsdp"], run)
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    (run / "model.safetensors").unlink()
    # a process of its own, as a user's resume is (run inside a test worker that had hosted other tests, the
    # worker was seen to die without a trace: see the stop notes of 2026-12-03)
    resumed = launch(runs["tmp"], ["--resume", str(run), "--num-workers", "0"], ranks=1)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["world_size"] == 1
    assert losses(run) == pytest.approx(losses(runs["fsdp"]), rel=1e-5, abs=1e-6)
    a = vitkit.load(runs["fsdp"] / "model.safetensors").state_dict()
    b = vitkit.load(run / "model.safetensors").state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_a_run_killed_mid_epoch_while_streaming_resumes_to_the_same_losses(runs, shards, tmp_path):
    # 60 images, 8 per step: an epoch is 7 steps; killed after step 3, with step 2 the last checkpoint
    pattern = shards / "shard-{000000..000004}.tar"
    args = flags(tmp_path, "killed", pattern, num_workers=2, checkpoint_every=2)
    result = launch(tmp_path, args, ranks=1, env={"VITKIT_FAILPOINTS": "step.end@3=kill"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    run = tmp_path / "runs" / "killed"
    assert [s for s, _ in list_checkpoints(run)] == [2] and not (run / "model.safetensors").exists()
    resumed = launch(tmp_path, ["--resume", str(run), "--num-workers", "0"], ranks=1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    assert losses(run) == pytest.approx(losses(runs["single"]), rel=1e-6, abs=1e-7)


def test_settings_shards_cannot_honour_are_refused(tmp_path, shards):
    for change, word in ((dict(limit_per_class=3), "limit_per_class"), (dict(pipeline="tensor"), "pipeline"),
                         (dict(val_split="holdout"), "val_split")):
        with pytest.raises(UsageError, match=f"{word}=.* cannot be honoured with tar shards"):
            train(tiny_config(tmp_path, data=str(shards), **{"limit_per_class": None, **change}), log=quiet)
    with pytest.raises(UsageError, match="ema_decay needs parallel='ddp'"):
        train(tiny_config(tmp_path, parallel="fsdp", ema_decay=0.9), log=quiet)


def test_a_broken_sample_in_the_shards_is_skipped_counted_and_listed(tmp_path, shards):
    from test_shards import rewrite_shard

    from vitkit.data.shards import iterate_shard

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    first = sorted(s["__key__"] for s in iterate_shard(str(copy / "shard-000001.tar")))[0]
    rewrite_shard(copy / "shard-000001.tar", lambda name, data: b"garbage" if name == f"{first}.png" else data)
    config = tiny_config(tmp_path, data=str(copy), **{**SETTINGS, "steps": 8, "checkpoint_every": 0},
                         max_bad_fraction=0.1)
    result = train(config, log=quiet)  # 8 steps of 8: 64 positions, more than the 60 samples, so every one is met
    assert result.finished and len(result.bad_files) == 1
    where, reason = result.bad_files[0]
    assert where.endswith(f"shard-000001.tar:{first}") and "UnidentifiedImageError" in reason
    listed = (result.run_dir / "bad_files.txt").read_text().splitlines()
    assert listed == [f"{where}\t{reason}"]
    assert records(result.run_dir, "summary")[0]["bad_files"] == 1


def test_a_sharded_checkpoint_is_named_as_such_where_a_model_is_expected(runs):
    from vitkit.errors import CheckpointError
    from vitkit.training.checkpoint import resolve_model_path

    folder = list_checkpoints(runs["fsdp"])[0][1]
    with pytest.raises(CheckpointError, match="a sharded .*checkpoint without model.safetensors; continue the run"):
        resolve_model_path(folder)
