"""Fuzzing the loaders: mutated .safetensors, .npz and .pth checkpoints (byte flips, truncation, wrong dtypes and
shapes, huge declared sizes) end in a CheckpointError or a correct model; never another exception, a hang or a
memory blow-up. 600 cases in all."""

from __future__ import annotations

import random
import resource
import signal
import traceback
from collections import Counter

import pytest
import torch

import fuzz_checkpoints as fz
import vitkit
from vitkit import CheckpointError, VisionTransformer

CASES_PER_FORMAT = 200
SECONDS_PER_LOAD = 30  # a guard against hangs only, far above a normal load (milliseconds)
MAX_RSS_GROWTH_MB = 1024


def _tiny_model():
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=16, patch_size=8, width=32, depth=2,
                                num_heads=2, mlp_dim=48, gelu="tanh")
    torch.nn.init.normal_(model.head.weight)
    return model


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


def _try_load(path) -> str:
    """'error' for a CheckpointError, 'model' for a usable model; anything else propagates."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(SECONDS_PER_LOAD)
    try:
        model = vitkit.load(path)
    except CheckpointError:
        return "error"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert isinstance(model, VisionTransformer)
    model(torch.zeros(1, 3, *model.config.image_size))  # it runs
    return "model"


def _fuzz(tmp_path, suffix, valid: bytes, mutations, seed):
    rng = random.Random(seed)
    outcomes, failures = Counter(), []
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(CASES_PER_FORMAT):
        mutate = mutations[i % len(mutations)]
        what, data = mutate(rng, valid)
        path = tmp_path / f"case{i}{suffix}"
        path.write_bytes(data)
        try:
            outcomes[_try_load(path)] += 1
        except _Timeout:
            failures.append(f"{what}: hang (> {SECONDS_PER_LOAD} s)")
        except Exception as e:  # noqa: BLE001 - the point is to catch what should not escape
            failures.append(f"{what}: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
        path.unlink()
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert not failures, f"{len(failures)} of {CASES_PER_FORMAT} mutations escaped:\n" + "\n".join(failures[:5])
    assert growth_mb < MAX_RSS_GROWTH_MB, f"peak memory grew by {growth_mb:.0f} MB"
    assert sum(outcomes.values()) == CASES_PER_FORMAT and outcomes["error"] > 0
    return outcomes


def test_fuzz_safetensors(tmp_path):
    vitkit.save(_tiny_model(), tmp_path / "valid.safetensors")
    valid = (tmp_path / "valid.safetensors").read_bytes()
    _fuzz(tmp_path, ".safetensors", valid, [fz.byte_flips, fz.head_flips, fz.truncate, fz.splice, fz.st_header,
                                             fz.st_header], seed=1)


def test_fuzz_npz(tmp_path):
    vitkit.save(_tiny_model(), tmp_path / "valid.npz", format="google")
    valid = (tmp_path / "valid.npz").read_bytes()
    _fuzz(tmp_path, ".npz", valid, [fz.byte_flips, fz.truncate, fz.splice, fz.npz_member, fz.npz_member,
                                    fz.zip_sizes], seed=2)


def test_fuzz_pth(tmp_path):
    from vitkit.checkpoints.timm import to_timm

    state = {k: v.contiguous() for k, v in to_timm(_tiny_model()).items()}
    torch.save(state, tmp_path / "valid.pth")
    valid = (tmp_path / "valid.pth").read_bytes()

    def state_mutation(rng, _data):
        return fz.pth_state(rng, state)

    _fuzz(tmp_path, ".pth", valid, [fz.byte_flips, fz.truncate, fz.splice, state_mutation, state_mutation,
                                    fz.zip_sizes], seed=3)
