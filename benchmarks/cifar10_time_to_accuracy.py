"""Time to accuracy on CIFAR-10: train recipes for a wall-clock budget, evaluate the hold-out as they go, and write
accuracy against minutes (JSON and a PNG curve).

    tar xzf ../shared/data/cifar10/train.tar.gz -C /tmp/cifar10
    python benchmarks/cifar10_time_to_accuracy.py --data /tmp/cifar10 --minutes 60 \\
        --recipes cifar10-fast cifar10-baseline --mode together --out benchmarks/results/cifar10
    python benchmarks/cifar10_time_to_accuracy.py ... --background      (detached; prints the log to follow)
    python benchmarks/cifar10_time_to_accuracy.py --replot benchmarks/results/cifar10   (JSON and PNG again)

Each recipe runs as `vitkit train --recipe R --budget-minutes M --eval-every-minutes E`: the run trains until its
training clock (wall time in the training loop, evaluations and checkpoints not counted) reaches the budget, its
learning rate and input size following the share of the budget spent, and evaluates the fixed hold-out (500
images per class of the training split, `split_seed` 0) every E minutes of training and at the end. The curve's
x-axis is that training clock.

--mode sequential runs the recipes one after the other, each with the whole machine (its recipe's threads);
--mode together runs them at the same time, recipe i pinned to core i with one thread: each has half of a
2-core machine, which keeps the comparison fair when other jobs share the machine. Every run's JSON records the
load average seen while it ran (sampled every 10 s), its process CPU time beside its wall time, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = "time_to_accuracy.json"
PLOT_FILE = "time_to_accuracy.png"


# --------------------------------------------------------------------------------------------- machine
def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


# ------------------------------------------------------------------------------------------------ runs
def train_command(recipe: str, args, name: str, threads: int | None) -> list[str]:
    command = [sys.executable, "-m", "vitkit", "train", "--recipe", recipe, "--data", args.data,
               "--budget-minutes", str(args.minutes), "--eval-every-minutes", str(args.eval_every),
               "--out-dir", str(Path(args.out) / "runs"), "--name", name, "--progress", "false"]
    if threads is not None:
        command += ["--threads", str(threads)]
    for item in args.set or []:
        command += ["--set", item]
    return command


class Child:
    """One `vitkit train` process, its log, and the CPU time it used (from wait4)."""

    def __init__(self, recipe: str, name: str, command: list[str], log_path: Path, cores: list[int] | None):
        self.recipe, self.name, self.command, self.cores = recipe, name, command, cores
        self.log_path = log_path
        self.started = time.time()
        self.log = open(log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
        self.wall = self.cpu = None
        self.returncode = None
        self.loads: list[tuple[float, float]] = []

    def poll(self) -> bool:
        """True once the process has ended (and its CPU time is known)."""
        if self.returncode is not None:
            return True
        pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.returncode
        self.wall = time.time() - self.started
        self.cpu = usage.ru_utime + usage.ru_stime
        self.log.close()
        return True


def run_recipes(args) -> list[dict]:
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cores = sorted(os.sched_getaffinity(0))
    plan = []
    for i, recipe in enumerate(args.recipes):
        name = f"{Path(recipe).stem}-{args.minutes:g}min-{stamp}"
        if args.mode == "together":
            pinned = [cores[i % len(cores)]]
            plan.append((recipe, name, train_command(recipe, args, name, 1), pinned))
        else:
            plan.append((recipe, name, train_command(recipe, args, name, args.threads), None))

    def watch(children: list[Child]) -> None:
        while True:
            load = os.getloadavg()[0]
            for child in children:
                if child.returncode is None:
                    child.loads.append((round((time.time() - child.started) / 60, 2), load))
            if all(child.poll() for child in children):
                return
            time.sleep(10)

    finished: list[Child] = []
    if args.mode == "together":
        children = [Child(r, n, c, out / f"{n}.log", p) for r, n, c, p in plan]
        print(f"running {len(children)} recipes at once, pinned to cores "
              f"{', '.join(str(c.cores[0]) for c in children)}: logs in {out}/", flush=True)
        watch(children)
        finished = children
    else:
        for recipe, name, command, pinned in plan:
            print(f"running {recipe}: log in {out / (name + '.log')}", flush=True)
            child = Child(recipe, name, command, out / f"{name}.log", pinned)
            watch([child])
            finished.append(child)

    results = []
    for child in finished:
        run_dir = out / "runs" / child.name
        record = {"recipe": child.recipe, "run_dir": str(run_dir), "command": " ".join(child.command),
                  "mode": args.mode, "cores": child.cores, "returncode": child.returncode,
                  "wall_seconds": round(child.wall, 1), "cpu_seconds": round(child.cpu, 1),
                  "load_average_1min": summarize_loads(child.loads)}
        record.update(read_run(run_dir))
        results.append(record)
        if child.returncode:
            print(f"{child.recipe} failed (exit {child.returncode}); see {child.log_path}", file=sys.stderr)
    return results


def summarize_loads(samples: list[tuple[float, float]]) -> dict:
    values = [load for _, load in samples]
    if not values:
        return {}
    return {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2), "min": round(min(values), 2),
            "samples": [[m, round(v, 2)] for m, v in samples]}


# ---------------------------------------------------------------------------------------------- results
def read_run(run_dir: Path) -> dict:
    """The curve of one run folder: (training minutes, step, epoch, hold-out top-1 of the weights and of the EMA)
    at every evaluation, from metrics.jsonl's clock and eval records; and the run's model and settings."""
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        return {"curve": [], "error": f"{metrics_path} is missing"}
    records = []
    for line in metrics_path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    clocks = {r["step"]: r for r in records if r.get("kind") == "clock"}
    points: dict[int, dict] = {}
    for r in records:
        if r.get("kind") != "eval" or r["step"] not in clocks:
            continue
        point = points.setdefault(r["step"], {
            "minutes": round(clocks[r["step"]]["train_seconds"] / 60, 3),
            "wall_minutes": round(clocks[r["step"]]["seconds"] / 60, 3), "step": r["step"], "epoch": r["epoch"]})
        point["top1_ema" if r.get("weights") == "ema" else "top1"] = r["top1"]
    curve = [points[s] for s in sorted(points)]
    info: dict = {"curve": curve}
    summary = next((r for r in reversed(records) if r.get("kind") == "summary"), None)
    if summary:
        info["final"] = {k: v for k, v in summary.items() if k != "kind"}
    train = [r for r in records if r.get("kind") == "train" and "images_per_sec" in r]
    if train:
        info["images_per_sec_median"] = round(sorted(r["images_per_sec"] for r in train)[len(train) // 2], 1)
    for name in ("run.json", "config.json"):
        path = run_dir / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if name == "run.json":
                info["parameters"] = data.get("parameters")
                info["model"] = {k: data["model"].get(k) for k in ("width", "depth", "num_heads", "mlp_dim",
                                                                   "patch_size", "pool", "posemb")}
                info["train_images"] = data.get("train_images")
                info["val_images"] = data.get("val_images")
            else:
                info["config"] = data
    return info


def reread(run: dict) -> dict:
    """A run record of an earlier results file, its curve read again from its run folder; a run whose folder is gone
    (the results kept without their runs) keeps the curve it was stored with."""
    if not (Path(run["run_dir"]) / "metrics.jsonl").is_file():
        return dict(run)
    kept = {k: v for k, v in run.items() if k not in ("curve", "minutes_to", "final_top1", "final_top1_ema")}
    kept.update(read_run(Path(run["run_dir"])))
    return kept


def best(point: dict) -> float:
    return max(point.get("top1", 0.0), point.get("top1_ema", 0.0))


def minutes_to(curve: list[dict], accuracy: float) -> float | None:
    """Training minutes of the first evaluation at or above `accuracy` (model or EMA weights)."""
    for point in curve:
        if best(point) >= accuracy:
            return point["minutes"]
    return None


def resources(run: dict) -> str:
    """What the run had of the machine: one pinned core (together) or its threads (sequential)."""
    if run.get("mode") == "together":
        return "one core"
    threads = (run.get("config") or {}).get("threads")
    return f"{threads} thread{'s' if threads != 1 else ''}" if threads else "all cores"


def name(run: dict) -> str:
    """The run's name in figures and tables: its label (given with --merge DIR=LABEL), else its recipe."""
    return run.get("label") or run["recipe"]


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    ends = []
    for run in results:
        curve = run.get("curve") or []
        if not curve:
            continue
        label = f"{name(run)} ({(run.get('parameters') or 0) / 1e6:.1f}M params, {resources(run)})"
        line, = ax.plot([p["minutes"] for p in curve], [100 * p.get("top1", float("nan")) for p in curve],
                        marker="o", ms=3.5, lw=1.6, label=label)
        if any("top1_ema" in p for p in curve):
            ax.plot([p["minutes"] for p in curve], [100 * p.get("top1_ema", float("nan")) for p in curve],
                    ls="--", lw=1, color=line.get_color(), alpha=0.7, label=f"{name(run)}, EMA weights")
        last = curve[-1]
        ends.append((100 * best(last), last["minutes"], line.get_color()))
    floor = -float("inf")  # the final accuracies at the curves' ends, spread apart so that none hides another
    for y, x, color in sorted(ends):
        floor = max(y, floor + 2.2)
        ax.annotate(f"{y:.1f}%", (x, y), xytext=(4, floor), textcoords=("offset points", "data"), fontsize=8,
                    va="center", color=color)
    ax.set_ylim(top=max(ax.get_ylim()[1], floor + 2))
    for target in (75, 80, 85):
        ax.axhline(target, color="grey", lw=0.7, ls=":")
    ax.set_xlabel("training minutes (wall clock, evaluations not counted)")
    ax.set_ylabel("hold-out top-1 accuracy (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: list[dict], out: Path, args_record: dict) -> dict:
    data = {"benchmark": "CIFAR-10 time to accuracy (hold-out: 500 images per class of the training split)",
            "machine": machine(), "settings": args_record, "runs": results}
    for run in results:
        curve = run.get("curve") or []
        run["minutes_to"] = {f"{t}%": minutes_to(curve, t / 100) for t in (50, 60, 70, 75, 80, 85)}
        run["final_top1"] = curve[-1].get("top1") if curve else None
        run["final_top1_ema"] = curve[-1].get("top1_ema") if curve else None
    (out / RESULTS_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    loads = [r["load_average_1min"]["mean"] for r in results if r.get("load_average_1min")]
    modes = {r.get("mode") for r in results}
    how = {"together": "runs side by side, one core each", "sequential": "one run at a time"}
    title = (f"CIFAR-10 from scratch on a {data['machine']['cores']}-core CPU"
             + (f", {how.get(modes.pop(), '')}" if len(modes) == 1 else "")
             + (f"; load average {min(loads):.1f}-{max(loads):.1f} during the runs" if loads else ""))
    plot(results, out / PLOT_FILE, title)
    return data


def print_table(data: dict) -> None:
    for run in data["runs"]:
        print(f"\n{name(run)} ({resources(run)}): {run.get('parameters') or 0:,} parameters; "
              f"wall {run.get('wall_seconds')} s, CPU {run.get('cpu_seconds')} s, load average {run.get('load_average_1min', {}).get('mean')}")
        for p in run.get("curve", []):
            ema = f"  (EMA {100 * p['top1_ema']:.2f}%)" if "top1_ema" in p else ""
            print(f"  {p['minutes']:6.1f} min  step {p['step']:6d}  epoch {p['epoch']:6.2f}  "
                  f"top-1 {100 * p.get('top1', 0):.2f}%{ema}")


# ------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", help="the CIFAR-10 ImageFolder tree (the unpacked train.tar.gz)")
    p.add_argument("--recipes", nargs="+", default=["cifar10-fast", "cifar10-baseline"])
    p.add_argument("--minutes", type=float, default=60.0, help="training budget of each run")
    p.add_argument("--eval-every", type=float, default=5.0, help="minutes of training between evaluations")
    p.add_argument("--mode", choices=("sequential", "together"), default="sequential")
    p.add_argument("--threads", type=int, default=None, help="threads of each run in sequential mode (default: "
                   "the recipe's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="passed on to every vitkit train")
    p.add_argument("--out", default="benchmarks/results/cifar10", help="folder of the logs, runs, JSON and PNG")
    p.add_argument("--background", action="store_true", help="run detached from this terminal; prints the log")
    p.add_argument("--replot", metavar="OUT", help="rebuild the JSON and PNG of an earlier --out folder")
    p.add_argument("--merge", nargs="+", metavar="OUT[=LABEL]", help="one JSON and PNG (in --out) of the runs of "
                   "several earlier --out folders; =LABEL names that folder's runs instead of their recipe (say, "
                   "an earlier version of it)")
    args = p.parse_args(argv)

    if args.merge:
        results, settings = [], {"merged": args.merge}
        for item in args.merge:
            folder, _, label = item.partition("=")
            old = json.loads((Path(folder) / RESULTS_FILE).read_text(encoding="utf-8"))
            runs = [{**reread(run), "settings": old.get("settings", {})} for run in old["runs"]]
            results += [{**run, "label": label} if label else run for run in runs]
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print_table(write_results(results, out, settings))
        return 0

    if args.replot:
        out = Path(args.replot)
        old = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
        results = [reread(run) for run in old["runs"]]
        print_table(write_results(results, out, old.get("settings", {})))
        return 0
    if not args.data:
        p.error("--data is required (the unpacked CIFAR-10 tree)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.background:
        log = out / "benchmark.log"
        argv_rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--background"]
        with open(log, "a", encoding="utf-8") as f:
            process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv_rest], stdout=f,
                                       stderr=subprocess.STDOUT, start_new_session=True, cwd=os.getcwd())
        print(f"started in the background (pid {process.pid}); follow it with: tail -f {log}")
        return 0
    settings = {"minutes": args.minutes, "eval_every_minutes": args.eval_every, "mode": args.mode,
                "recipes": args.recipes, "data": args.data, "set": args.set or [],
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    results = run_recipes(args)
    data = write_results(results, out, settings)
    print_table(data)
    print(f"\nwrote {out / RESULTS_FILE} and {out / PLOT_FILE}")
    return 0 if all(not r.get("returncode") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
