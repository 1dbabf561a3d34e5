"""Processes to kill: `vitkit train` run as real processes that a test stops at an exact failure point
(`vitkit.training.faults`) and then SIGKILLs.

Starting Python with torch costs seconds here, so most runs are forked from a fork server that has imported
vitkit once (multiprocessing's "forkserver": a fresh interpreter that never ran torch code, so forking it is
safe); each fork is a separate process running `vitkit.cli.main(argv)` with its output in a log file. A failure
point's `stop` action makes the process SIGSTOP itself; the test sees it stopped in /proc and kills it with SIGKILL,
so the kill lands at exactly that point however loaded the machine is, with no sleeps.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_CONTEXT = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["vitkit.cli", "vitkit.training.trainer", "vitkit.data", "torch",
                                         "sklearn.datasets", "matplotlib.pyplot"])  # (what a run imports)
    return _CONTEXT


def _child(argv: list[str], env: dict[str, str], log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    for name in ("VITKIT_FAILPOINTS", "TEST_FILE_SIZE_LIMIT"):  # only what this run was given
        os.environ.pop(name, None)
    os.environ.update(env)
    import resource

    limit = env.get("TEST_FILE_SIZE_LIMIT")
    if limit:  # the kernel then fails writes past this size with EFBIG, as a full disk fails them with ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
    from vitkit.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, T for stopped, Z), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2]


class Run:
    """One `vitkit` process: its exit code (negative: killed by that signal) and its output."""

    def __init__(self, argv: list[str], log: Path, failpoints: str = "", env: dict[str, str] | None = None):
        self.argv = [str(a) for a in argv]
        self.log = Path(log)
        env = dict(env or {})
        if failpoints:
            env["VITKIT_FAILPOINTS"] = failpoints
        self.process = _context().Process(target=_child, args=(self.argv, env, str(self.log)))
        self.process.start()

    @property
    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait(self) -> int:
        self.process.join()
        return self.process.exitcode

    def kill_when_stopped(self) -> None:
        """Wait until the process stops itself at its failure point, then SIGKILL it."""
        pid = self.process.pid
        while _state(pid) != "T":
            if not self.process.is_alive():
                raise AssertionError(f"the process ended (exit code {self.process.exitcode}) without reaching its "
                                     f"failure point; its output:\n{self.output}")
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        assert self.wait() == -signal.SIGKILL


def killed_at(argv: list[str], log: Path, point: str) -> Run:
    """Run until the process stops at failure point `point` ("name@step"), and SIGKILL it there."""
    process = Run(argv, log, f"{point}=stop")
    process.kill_when_stopped()
    return process


def finished(argv: list[str], log: Path, failpoints: str = "", env: dict[str, str] | None = None) -> Run:
    """Run to its end; `failpoints` may poison values (nan, inf) or fail writes (enospc) on the way."""
    process = Run(argv, log, failpoints, env)
    process.wait()
    return process


def subprocess_killed_at(argv: list[str], point: str, cwd: Path) -> str:
    """`python -m vitkit ...` as a real subprocess, SIGKILLed where it stops at failure point `point`; its output."""
    env = dict(os.environ, VITKIT_FAILPOINTS=f"{point}=stop")
    log = cwd / "subprocess.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "vitkit", *map(str, argv)], cwd=cwd, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        _, status = os.waitpid(process.pid, os.WUNTRACED)  # returns when the child stops (or ends)
        if not os.WIFSTOPPED(status):
            raise AssertionError(f"the subprocess ended (status {status}) before its failure point:\n"
                                 f"{log.read_text()}")
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    return log.read_text()
