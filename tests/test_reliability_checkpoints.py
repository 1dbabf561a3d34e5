"""Training checkpoints under damage: the write order (temporary folder, fsync of every file, rename, fsync of the
folder), fallback from a damaged newest checkpoint with a warning naming both, failed writes (a full disk
simulated in this process, a real kernel write failure in a child process), a training state whose pickle would
run code, and 240 mutated checkpoints (10 of them resumed): always a fallback or a clean error, never a crash."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

import fuzz_checkpoints as fz
from reliability_helpers import finished
from vitkit.checkpoints.io import read_safetensors
from vitkit.cli import main
from vitkit.errors import CheckpointError
from vitkit.training import checkpoint as ckpt

TINY_FLAGS = ["--data", "digits", "--model", "ViT-Ti/4", "--image-size", "8", "--patch-size", "4", "--width", "32",
              "--depth", "1", "--num-heads", "2", "--mlp-dim", "64", "--batch-size", "16", "--warmup-steps", "2",
              "--limit-per-class", "10", "--val-per-class", "2", "--val-split", "holdout", "--dropout", "0.1",
              "--progress", "false", "--num-workers", "0", "--log-every", "1", "--eval-every", "-1",
              "--deterministic"]


def train_args(tmp_path: Path, name: str, steps: int = 6, every: int = 2, *extra) -> list[str]:
    return ["train", *TINY_FLAGS, "--steps", str(steps), "--checkpoint-every", str(every), "--keep-checkpoints",
            "0", "--out-dir", str(tmp_path / "runs"), "--name", name, *map(str, extra)]


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(path)[0]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / ckpt.step_dir_name(step)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 6-step run with a checkpoint every 2 steps."""
    out = tmp_path_factory.mktemp("ref")
    assert main(train_args(out, "full")) == 0
    return out / "runs" / "full"


def damaged_copy(reference: Path, tmp_path: Path, name: str = "run") -> Path:
    """The reference run as it was before its final weights: checkpoints 2, 4, 6 (6 is the one to damage)."""
    run = tmp_path / "runs" / name
    shutil.copytree(reference, run)
    for extra in ("model.safetensors", "model_ema.safetensors"):
        (run / extra).unlink(missing_ok=True)
    return run


# ------------------------------------------------------------------------------------------- the write order
def test_a_checkpoint_is_written_to_a_temporary_folder_fsynced_renamed_and_the_folder_fsynced(tmp_path,
                                                                                            monkeypatch):
    """Every fsync and rename of a real write, recorded: each file is fsynced under its temporary name, the
    temporary folder sits beside the final one and is renamed only after all its files (and itself) were
    fsynced, and the checkpoints folder is fsynced after the rename."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert main(train_args(tmp_path, "run", 3, 2, "--keep-checkpoints", "1")) == 0
    run = tmp_path / "runs" / "run"
    folder = str(run / "checkpoints")
    renames = [e for e in events if e[0] == "rename" and Path(e[2]).parent == Path(folder)]
    assert [Path(e[2]).name for e in renames] == ["step_00000002", "step_00000003"]
    for _, tmp, final in renames:
        assert Path(tmp).parent == Path(folder) and Path(tmp).name.startswith(f".{Path(final).name}.")
        at = events.index(("rename", tmp, final))
        before = events[:at]
        for name in ("model.safetensors", "state.pt", "manifest.json"):
            # written as a temporary file, fsynced, renamed to its name inside the temporary folder
            inner = [e for e in before if e[0] == "rename" and e[2] == f"{tmp}/{name}"]
            assert len(inner) == 1 and ("fsync", inner[0][1]) in before[:before.index(inner[0])]
        assert ("fsync", tmp) in before  # the temporary folder itself, after its files
        assert ("fsync", folder) in events[at:]  # the rename made durable
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [3]  # keep 1
    assert not [p for p in Path(folder).iterdir() if p.name.startswith(".")]


def test_the_manifest_records_every_file(reference):
    folder = step_dir(reference, 4)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["step"] == 4 and set(manifest["files"]) == {"model.safetensors", "state.pt"}
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# ------------------------------------------------------------------------------------- fallback on damage
def _flip_in_tensor_data(path: Path) -> None:
    """One bit flipped in the last tensor's bytes: the file still parses, only the checksum can tell."""
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGE = {
    "weights cut short": lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:999]),
    "a bit flipped in the weights": lambda f: _flip_in_tensor_data(f / "model.safetensors"),
    "training state cut short": lambda f: (f / "state.pt").write_bytes((f / "state.pt").read_bytes()[:-100]),
    "a bit flipped in the training state": lambda f: _flip_in_tensor_data(f / "state.pt"),
    "training state missing": lambda f: (f / "state.pt").unlink(),
    "zero-byte weights": lambda f: (f / "model.safetensors").write_bytes(b""),
    "garbage manifest": lambda f: (f / "manifest.json").write_text("{not json"),
    "manifest of another step": lambda f: (f / "manifest.json").write_text(
        (f / "manifest.json").read_text().replace('"step": 6', '"step": 4')),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, damage):
    run = damaged_copy(reference, tmp_path)
    DAMAGE[damage](step_dir(run, 6))
    if damage == "a bit flipped in the weights":
        read_safetensors(step_dir(run, 6) / "model.safetensors")  # the format alone would not notice
    notes = []
    found = ckpt.latest_checkpoint(run, log=notes.append)
    assert found.step == 4 and found.path == step_dir(run, 4)
    assert len(notes) == 1 and str(step_dir(run, 6)) in notes[0] and str(step_dir(run, 4)) in notes[0]
    assert notes[0].startswith("warning: ") and "falling back" in notes[0]


def test_resume_falls_back_warns_and_still_ends_identical(reference, tmp_path, capsys):
    run = damaged_copy(reference, tmp_path)
    _flip_in_tensor_data(step_dir(run, 6) / "state.pt")
    good = hashes(step_dir(run, 4))
    assert main(["train", "--resume", str(run), "--progress", "false"]) == 0
    out = capsys.readouterr().out
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert str(step_dir(run, 6)) in warning and str(step_dir(run, 4)) in warning and "SHA-256" in warning
    assert f"from step 4 ({step_dir(run, 4)})" in out
    assert hashes(step_dir(run, 4)) == good
    assert_same_weights(run / "model.safetensors", reference / "model.safetensors")
    assert_same_weights(step_dir(run, 6) / "model.safetensors", step_dir(reference, 6) / "model.safetensors")
    ckpt.verify_manifest(step_dir(run, 6))  # rewritten whole


def test_every_checkpoint_damaged_is_a_clean_error(reference, tmp_path, capsys):
    run = damaged_copy(reference, tmp_path)
    for step in (2, 4, 6):
        (step_dir(run, step) / "state.pt").write_bytes(b"")
    assert main(["train", "--resume", str(run), "--progress", "false"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"vitkit: error: --resume {run}: no readable checkpoint"
    assert captured.out.count("warning: ") == 3


# ----------------------------------------------------------------------------------------- failed writes
def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(reference, tmp_path, monkeypatch, capsys):
    """torch.save of the step-4 training state writes half its bytes, then fails with ENOSPC."""
    real_save = torch.save
    calls = []
    run = tmp_path / "runs" / "run"
    before = {}

    def full_disk(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:
            before.update(hashes(step_dir(run, 2)))  # the previous checkpoint, as it was before this write
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            Path(f).write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(train_args(tmp_path, "run")) == 1
    monkeypatch.setattr(torch, "save", real_save)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vitkit: error: could not write the checkpoint of step 4")
    assert "No space left on device" in err and f"{step_dir(run, 2)} (step 2), is untouched" in err
    assert "--resume" in err
    assert os.listdir(run / "checkpoints") == ["step_00000002"]  # nothing half-written left
    assert hashes(step_dir(run, 2)) == before and len(before) == 3
    ckpt.verify_manifest(step_dir(run, 2))
    assert main(["train", "--resume", str(run), "--progress", "false"]) == 0  # space again: it carries on
    assert_same_weights(run / "model.safetensors", reference / "model.safetensors")


def test_a_real_write_failure_from_the_kernel(reference, tmp_path):
    """A child process whose file size limit (RLIMIT_FSIZE) is below a checkpoint's size: the kernel fails the
    write (EFBIG, as it fails one on a full disk with ENOSPC)."""
    run = damaged_copy(reference, tmp_path)
    for step in (4, 6):
        shutil.rmtree(step_dir(run, step))
    before = hashes(step_dir(run, 2))
    limit = (step_dir(run, 2) / "model.safetensors").stat().st_size // 2
    process = finished(["train", "--resume", str(run), "--progress", "false"], tmp_path / "log",
                       env={"TEST_FILE_SIZE_LIMIT": str(limit)})
    assert process.wait() == 1
    lines = [line for line in process.output.splitlines() if line.startswith("vitkit: error:")]
    assert len(lines) == 1 and "could not write the checkpoint of step 4" in lines[0]
    assert "File too large" in lines[0] and "step_00000002 (step 2), is untouched" in lines[0]
    assert "Traceback" not in process.output
    assert sorted(os.listdir(run / "checkpoints")) == ["step_00000002"]
    assert hashes(step_dir(run, 2)) == before


# ------------------------------------------------------------------------------------------- untrusted state
class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_training_state_whose_pickle_would_run_code_is_refused(reference, tmp_path, capsys):
    """The attacker rewrites the manifest too, so that only weights_only loading stands in the way."""
    run = damaged_copy(reference, tmp_path)
    target = tmp_path / "pwned.txt"
    folder = step_dir(run, 6)
    state = torch.load(folder / "state.pt", weights_only=True)
    state["payload"] = _Exploit(str(target))
    torch.save(state, folder / "state.pt")
    ckpt.write_manifest(folder, 6)
    ckpt.verify_manifest(folder)  # the checksums pass
    with pytest.raises(CheckpointError, match="refused: the training state's pickle"):
        ckpt.read_checkpoint_dir(folder)
    assert main(["train", "--resume", str(folder), "--progress", "false"]) == 2  # this checkpoint, explicitly
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refused" in err and "could run code" in err
    notes = []
    assert ckpt.latest_checkpoint(run, log=notes.append).step == 4  # the run as a whole falls back
    assert "refused" in notes[0]
    assert not target.exists()


# ------------------------------------------------------------------------------------------------- fuzzing
def _state_entry(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One entry of the nested training state replaced by a wrong type, dtype or shape."""
    state = torch.load(io.BytesIO(data), weights_only=True)
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + [key])
        elif isinstance(node, list) and len(node) < 10:
            for index, value in enumerate(node):
                walk(value, path + [index])
        else:
            paths.append(path)

    walk(state, [])
    path = rng.choice(paths)
    parent = state
    for key in path[:-1]:
        parent = parent[key]
    value = parent[path[-1]]
    kind = rng.choice(["shape", "dtype", "string", "none", "list", "scalar", "drop", "huge"])
    if kind == "shape":
        parent[path[-1]] = torch.zeros(*(s + 1 for s in value.shape)) if torch.is_tensor(value) else torch.zeros(3)
    elif kind == "dtype":
        parent[path[-1]] = value.to(torch.int32) if torch.is_tensor(value) else 1.5
    elif kind == "string":
        parent[path[-1]] = "x"
    elif kind == "none":
        parent[path[-1]] = None
    elif kind == "list":
        parent[path[-1]] = [1, 2, 3]
    elif kind == "scalar":
        parent[path[-1]] = 7
    elif kind == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = 10**12
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return f"state {'/'.join(map(str, path))}: {kind}", buffer.getvalue()


MUTATIONS = {
    "model.safetensors": [fz.byte_flips, fz.head_flips, fz.truncate, fz.splice, fz.st_header],
    "state.pt": [fz.byte_flips, fz.head_flips, fz.truncate, fz.splice, fz.zip_sizes, _state_entry],
    "manifest.json": [fz.byte_flips, fz.truncate, fz.splice],
}
CASES = 240
RESUMED = 10


def test_fuzzed_training_checkpoints_fall_back_or_fail_cleanly(reference, tmp_path, capsys):
    """240 mutations of the newest checkpoint's files. Half keep the manifest as written: every one must be
    caught by it (a fallback to step 4) or leave the checkpoint bitwise what it was. Half rewrite the manifest
    to match, so the mutation reaches the parsers: a fallback, or a checkpoint that reads; 10 of those are
    resumed, which must end in a finished run or a one-line error, never another exception."""
    run = damaged_copy(reference, tmp_path, "base")
    folder = step_dir(run, 6)
    originals = {name: (folder / name).read_bytes() for name in MUTATIONS}
    rng = random.Random(2024)
    outcomes = {"fallback": 0, "read": 0, "resumed": 0, "resume refused": 0, "resume stopped": 0}
    for case in range(CASES):
        forge = case % 2 == 1
        name = rng.choice(["model.safetensors", "state.pt"] if forge else list(MUTATIONS))
        how, data = rng.choice(MUTATIONS[name])(rng, originals[name])
        for other, original in originals.items():
            (folder / other).write_bytes(original)
        (folder / name).write_bytes(data)
        if forge:
            ckpt.write_manifest(folder, 6)
        label = f"case {case}: {name}, {how}, manifest {'rewritten' if forge else 'kept'}"
        notes = []
        try:
            found = ckpt.latest_checkpoint(run, log=notes.append)
        except Exception as e:  # anything but a fallback is a failure of the test
            raise AssertionError(f"{label}: {type(e).__name__}: {e}") from e
        assert found is not None, label
        if found.step == 4:
            outcomes["fallback"] += 1
            assert len(notes) == 1 and str(folder) in notes[0], label
            continue
        assert found.step == 6 and not notes, label
        outcomes["read"] += 1
        if not forge:  # the manifest passed: the bytes must be the original ones
            assert data == originals[name] or name == "manifest.json", label
            continue
        if outcomes["resumed"] + outcomes["resume refused"] + outcomes["resume stopped"] < RESUMED:
            trial = tmp_path / "runs" / f"resume{case}"
            shutil.copytree(run, trial)
            code = main(["train", "--resume", str(trial), "--progress", "false"])  # an exception fails the test
            err = capsys.readouterr().err.strip()
            assert code in (0, 1, 2), label
            if code:
                assert err.count("\n") == 0 and err.startswith("vitkit: error: "), (label, err)
            outcomes[{0: "resumed", 1: "resume stopped", 2: "resume refused"}[code]] += 1
            shutil.rmtree(trial)
    print(outcomes)
    assert outcomes["fallback"] >= CASES // 2  # every kept-manifest mutation of a byte that matters, and more
    assert outcomes["resumed"] + outcomes["resume refused"] + outcomes["resume stopped"] == RESUMED
