"""The run folder has one writer: real `vitkit train` processes, one holding a run (stopped at a failure point, so the
timing is exact on a loaded machine), another trying to write it. And Ctrl-C: a real `python -m vitkit train` sent
SIGINT saves a checkpoint at its step, prints the resume command, and the resumed run ends with the losses of an
uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reliability_helpers import Run, _state, finished
from vitkit.checkpoints.io import read_safetensors
from vitkit.cli import main
from vitkit.errors import UsageError
from vitkit.training import checkpoint as ckpt
from vitkit.training import run_folder

STEPS = 6


def train_argv(out: Path, name: str, *extra) -> list[str]:
    return ["train", "--data", "digits", "--model", "ViT-Ti/4", "--image-size", "8", "--patch-size", "4",
            "--width", "32", "--depth", "1", "--num-heads", "2", "--mlp-dim", "64", "--batch-size", "16",
            "--steps", str(STEPS), "--warmup-steps", "2", "--limit-per-class", "10", "--val-per-class", "4",
            "--val-split", "holdout", "--dropout", "0.1", "--progress", "false", "--num-workers", "0",
            "--log-every", "1", "--eval-every", "-1", "--checkpoint-every", "2", "--keep-checkpoints", "0",
            "--deterministic", "--out-dir", str(out), "--name", name, *extra]


def losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / run_folder.METRICS).read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def stopped(process: Run) -> Run:
    """Wait until `process` stops itself at its failure point (it holds its run's lock there)."""
    while _state(process.process.pid) != "T":
        assert process.process.is_alive(), process.output
        time.sleep(0.005)
    return process


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    """A run stopped at step 2 holds its folder: a second `train --name` of it, and a `--resume` of it, each get a
    one-line error naming the holder's pid and write nothing; the holder then finishes a run of its own."""
    holder = stopped(Run(train_argv(tmp_path, "dup"), tmp_path / "holder.log", "step.end@2=stop"))
    pid = holder.process.pid
    try:
        check_refusals(tmp_path, pid)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    os.kill(pid, signal.SIGCONT)
    assert holder.wait() == 0, holder.output
    run = tmp_path / "dup"
    assert [s for s, _ in losses(run)] == list(range(1, STEPS + 1))  # one run's records, each step once
    assert (run / run_folder.LOCK).read_text().strip() == str(pid)


def check_refusals(tmp_path: Path, pid: int) -> None:
    run = tmp_path / "dup"
    before = (run / run_folder.METRICS).read_text()
    for i, argv in enumerate([train_argv(tmp_path, "dup"), ["train", "--resume", run, "--progress", "false"]]):
        second = finished(argv, tmp_path / f"second{i}.log")
        assert second.wait() == 2, second.output
        lines = second.output.strip().splitlines()
        assert len(lines) == 1 and f"pid {pid}" in lines[0] and str(run) in lines[0], second.output
    assert (run / run_folder.METRICS).read_text() == before  # nothing written by the refused ones


def test_two_resumes_of_one_run_and_a_crashed_holder(tmp_path):
    """Two `--resume` of one run at once: the second is refused. The holder SIGKILLed: the OS releases the lock and
    the next `--resume` finishes the run."""
    first = finished(train_argv(tmp_path, "r", "--stop-after", "2"), tmp_path / "first.log")
    assert first.wait() == 0, first.output
    run = tmp_path / "r"
    resume = ["train", "--resume", run, "--progress", "false"]
    holder = stopped(Run(resume, tmp_path / "holder.log", "step.end@4=stop"))
    try:
        second = finished(resume, tmp_path / "second.log")
    finally:
        holder.kill_when_stopped()
    assert second.wait() == 2 and f"pid {holder.process.pid}" in second.output
    last = finished(resume, tmp_path / "last.log")
    assert last.wait() == 0, last.output
    assert [s for s, _ in losses(run)] == list(range(1, STEPS + 1))


def test_the_lock_in_one_process(tmp_path):
    lock = run_folder.RunLock(tmp_path / "run").acquire()
    with pytest.raises(UsageError, match=f"pid {os.getpid()}"):
        run_folder.RunLock(tmp_path / "run").acquire()
    lock.release()
    with run_folder.RunLock(tmp_path / "run"):
        pass


def test_resume_of_a_file_names_the_run_folder(tmp_path, capsys):
    assert main(train_argv(tmp_path, "f", "--steps", "2")) == 0
    run = tmp_path / "f"
    capsys.readouterr()
    for inside in (run / run_folder.WEIGHTS, run / run_folder.CONFIG, run / "checkpoints" / "step_00000002" /
                   run_folder.WEIGHTS):
        assert main(["train", "--resume", inside]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.endswith(f"is a file; pass the run folder: --resume {run.resolve()}"), err
    assert main(["train", "--resume", run / "checkpoints"]) == 2
    assert f"pass the run folder: --resume {run.resolve()}" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_and_the_resumed_run_ends_identical(tmp_path):
    assert main(train_argv(tmp_path, "full")) == 0
    env = dict(os.environ, VITKIT_FAILPOINTS="step.end@3=stop")
    log = tmp_path / "interrupted.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "vitkit", *map(str, train_argv(tmp_path, "run"))],
                                   cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status = os.waitpid(process.pid, os.WUNTRACED)  # stopped at the end of step 3
        assert os.WIFSTOPPED(status), log.read_text()
        os.kill(process.pid, signal.SIGINT)  # pending until it continues: Ctrl-C during step 3
        os.kill(process.pid, signal.SIGCONT)
        code = process.wait()
    output = log.read_text()
    run = tmp_path / "run"
    assert code == 130, output
    assert f"interrupted after step 3 of {STEPS}" in output and f"continue with: vitkit train --resume {run}" in output
    assert "Traceback" not in output
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 3]
    assert not (run / run_folder.WEIGHTS).exists()
    assert main(["train", "--resume", run, "--progress", "false"]) == 0
    assert losses(run) == losses(tmp_path / "full")
    got, _ = read_safetensors(run / run_folder.WEIGHTS)
    want, _ = read_safetensors(tmp_path / "full" / run_folder.WEIGHTS)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_a_budget_run_killed_before_its_final_weights_is_finished_by_resume(tmp_path):
    """Issue 19, bug 2: the last checkpoint of a time-budget run records the whole budget; killed between it and
    model.safetensors, `--resume` finishes the run (final evaluation and weights) instead of refusing it."""
    from reliability_helpers import killed_at

    argv = train_argv(tmp_path, "budget", "--steps", "100000", "--budget-minutes", "0.003", "--checkpoint-every", "0")
    killed_at(argv, tmp_path / "killed.log", "final.weights")
    run = tmp_path / "budget"
    (step, _), = ckpt.list_checkpoints(run)
    assert 0 < step < 100000 and not (run / run_folder.WEIGHTS).exists()
    resumed = finished(["train", "--resume", run, "--progress", "false"], tmp_path / "resumed.log")
    assert resumed.wait() == 0, resumed.output
    assert f"resuming {run} from step {step}" in resumed.output and "trained 0 steps" in resumed.output
    summary = json.loads((run / run_folder.METRICS).read_text().splitlines()[-1])
    assert summary["kind"] == "summary" and summary["finished"] and summary["step"] == step
    assert (run / run_folder.WEIGHTS).is_file()
    again = finished(["train", "--resume", run, "--progress", "false"], tmp_path / "again.log")
    assert again.wait() == 2 and "already spent its budget" in again.output
