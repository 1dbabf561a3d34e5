"""Run many `vitkit` command lines as real processes without paying torch's import for each.

A fresh Python process (started with subprocess) imports `vitkit` once and then forks one child per command line;
each child runs `python -m vitkit ARGS` as the interpreter would (`runpy` over `vitkit.__main__`), with its own file
descriptors 1 and 2 sent to files, in the given folder, and ends with the command's exit status (an uncaught
exception prints its traceback and exits 1, as Python does). The server never runs a tensor operation itself, so
no thread pool exists yet when it forks. Children run one at a time: the suite's workers keep the cores.

After each child the server records the names, sizes, modification times and SHA-256 of every file under `watch`,
so a test can tell which command line created or changed a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SERVER = r"""
import hashlib, json, os, runpy, sys, traceback

import vitkit.cli  # the one import every child shares
vitkit.cli.build_parser()  # and the command modules

request = json.load(sys.stdin)
cwd, watch, out_dir = request["cwd"], request["watch"], request["out_dir"]


def snapshot():
    found = {}
    for root, dirs, files in os.walk(watch):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, watch)
            if os.path.isdir(path) and not os.path.islink(path):
                found[rel + "/"] = None
                continue
            stat = os.lstat(path)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            found[rel] = [stat.st_size, stat.st_mtime_ns, digest]
    return found


results = []
before = snapshot()
for index, argv in enumerate(request["cases"]):
    out_path, err_path = os.path.join(out_dir, f"{index}.out"), os.path.join(out_dir, f"{index}.err")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(cwd)
            for fd, path in ((1, out_path), (2, err_path)):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            sys.argv = ["vitkit", *argv]
            try:
                runpy.run_module("vitkit", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    after = snapshot()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    before = after
    with open(out_path) as f:
        out = f.read()
    with open(err_path) as f:
        err = f.read()
    results.append({"argv": argv, "code": code, "stdout": out, "stderr": err, "changed": changed})
json.dump(results, sys.stdout)
"""


def run_vitkit_many(cases: list[list[str]], cwd: Path, watch: Path, scratch: Path,
                    env: dict | None = None) -> list[dict]:
    """[{argv, code, stdout, stderr, changed}] for each command line, run in `cwd`; `changed` lists the paths
    under `watch` (relative, folders ending in /) that the command created, changed or removed. `scratch` holds
    the children's captured output and must lie outside `watch`."""
    scratch.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    request = {"cwd": str(cwd), "watch": str(watch), "out_dir": str(scratch),
               "cases": [list(map(str, c)) for c in cases]}
    done = subprocess.run([sys.executable, "-c", SERVER], input=json.dumps(request), capture_output=True, text=True,
                          env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
