"""Throughput, latency and training speed of vitkit against timm, torchvision and transformers, and against the
deployment runtimes ONNX Runtime and OpenVINO (`--peers ort openvino`, rows built in `bench_runtimes`), side by side.

Every implementation gets the same architecture and the same weights (converted with vitkit's own adapters; the
outputs are compared to vitkit's to prove it), the same input, the same threads, in the same process. After warm-up,
runs alternate between implementations (A B C A B C ...), so that a slow spell of a shared machine hits all of them;
the table gives medians and the speedup of vitkit over each row (row's median time / vitkit's).

The machine's ceilings are measured too: a large float32 and bfloat16 matrix product (on the CPU the best of
`torch.mm` and oneDNN, chosen at the start, then timed again inside the alternating rounds of every table, so that
a busy spell of the machine lowers the ceiling and the rows alike), and each row's achieved GFLOP/s (forward FLOPs counted by `vitkit.count_flops`, a
multiply-add as 2; a training step counted as 3 forwards) is given as a fraction of the ceiling of its precision.

Peak memory: on the CPU, the rise of the process's resident set (VmHWM - VmRSS, after resetting the high-water mark
through /proc/self/clear_refs and returning freed heap memory with malloc_trim) during one call: the activations and
workspace of a forward or a training step, beyond the weights that were already resident (reported apart, as the
bytes of the model's tensors). On a GPU, torch.cuda.max_memory_allocated over one call minus what was allocated
before it.

    from vitkit.bench import BenchSettings, run_benchmark, format_report
    report = run_benchmark(BenchSettings(model="ViT-B/16", batch_size=8, precisions=("fp32", "bf16")))
    print(format_report(report))
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import gc
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .bench_runtimes import RUNTIMES, runtime_candidates, runtime_files
from .configs import ViTConfig
from .models import count_flops, create_model
from .models.fast import COMPILE_MODES, compile_mode_problem, optimize_for_inference, plain_path, quantize_int8

PRECISIONS = ("fp32", "bf16", "int8")
OPTIMIZERS = ("adamw", "muon")
TASKS = ("infer", "latency", "train")
PEERS = ("timm", "torchvision", "hf")  # the same model in another PyTorch library (the default peers)
ALL_PEERS = PEERS + RUNTIMES  # and vitkit's ONNX export run by a deployment runtime


@dataclass
class BenchSettings:
    """What to measure. `overrides` set ViTConfig fields (e.g. depth=9); `checkpoint` loads weights instead of a
    seeded random initialisation."""

    model: str = "ViT-B/16"
    image_size: int | None = None
    num_classes: int | None = None
    overrides: dict = field(default_factory=dict)
    checkpoint: str | None = None
    batch_size: int = 8  # inference and training batch; latency always uses batch 1
    precisions: tuple[str, ...] = ("fp32", "bf16")
    tasks: tuple[str, ...] = ("infer", "latency")
    peers: tuple[str, ...] = PEERS
    repeats: int = 5  # timed rounds; each round runs every implementation once
    warmup: int = 2
    threads: int | None = None  # torch.set_num_threads; None keeps PyTorch's default
    device: str = "cpu"
    compile: bool = False  # add rows for vitkit under torch.compile
    compile_mode: str | None = None  # torch.compile's mode for those rows (None: its default)
    optimizer: str = "adamw"  # training rows: "adamw", or "muon" (vitkit's Muon + AdamW, for every implementation)
    plain: bool = True  # add rows for vitkit's plain path (no fast path), the reference for the fast path's gain
    loss_steps: int = 20  # training: compare loss trajectories over this many steps (0: skip)
    memory: bool = True
    ceiling_size: int | None = None  # side of the ceiling's square product (default 2048 on the CPU, 4096 on a GPU)
    seed: int = 0

    def validate(self) -> None:
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise ValueError(f"unknown precision(s) {bad}; expected some of {PRECISIONS}")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ValueError(f"unknown task(s) {bad}; expected some of {TASKS}")
        bad = [p for p in self.peers if p not in ALL_PEERS]
        if bad:
            raise ValueError(f"unknown peer(s) {bad}; expected some of {ALL_PEERS}")
        problem = compile_mode_problem(self.compile_mode, compile=self.compile, device=self.device)
        if problem:
            raise ValueError(problem)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS}")
        if self.optimizer != "adamw" and "train" not in self.tasks:
            raise ValueError(f"optimizer={self.optimizer!r} is for the training rows; add train to the tasks")
        if set(self.tasks) == {"train"} and set(self.precisions) == {"int8"}:
            raise ValueError("int8 is measured for inference only; --tasks train needs --precision fp32 or bf16")
        if self.repeats < 1 or self.warmup < 0 or self.batch_size < 1:
            raise ValueError("repeats and batch_size must be at least 1, warmup at least 0")


# ------------------------------------------------------------------------------------------------ measurement
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    _sync(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - start_cpu


def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Bytes of memory one call of `fn` needs beyond what is resident before it (see the module docstring)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    _malloc_trim()
    base = _proc_status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark VmHWM to the current resident set
    except OSError:
        return None
    fn()
    peak = _proc_status_kb("VmHWM")
    if base is None or peak is None:
        return None
    return max(peak - base, 0) * 1024


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds, looking inside tensor subclasses (quantized weights) and oneDNN-layout tensors."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def model_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters, buffers and oneDNN-packed weight copies."""
    total = sum(tensor_bytes(t) for t in module.parameters()) + sum(tensor_bytes(t) for t in module.buffers())
    total += sum(tensor_bytes(m.packed_weight) for m in module.modules() if getattr(m, "packed_weight", None) is not None)
    return total


def ceiling_products(dtype: torch.dtype, device: torch.device, size: int | None = None) -> tuple[dict, int]:
    """Closures computing one large square matrix product per backend (the CPU: torch.mm, i.e. MKL for float32,
    and oneDNN), and the FLOPs of one."""
    n = size or (4096 if device.type == "cuda" else 2048)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    products = {"torch.mm": lambda: torch.mm(a, b)}
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        if dtype == torch.float32 or torch.ops.mkldnn._is_mkldnn_bf16_supported():
            bt = b.t().contiguous()  # oneDNN's dense kernel takes (out, in) weights
            products["oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, bt, None, "none", [], "")
    return products, 2 * n**3


def matmul_ceiling(dtype: torch.dtype, device: torch.device, repeats: int = 5, size: int | None = None) -> dict:
    """GFLOP/s of a large square matrix product: median over `repeats` per backend, and the best backend's."""
    products, flops = ceiling_products(dtype, device, size)
    times = {name: [] for name in products}
    with torch.inference_mode():
        for fn in products.values():
            fn()
        for _ in range(repeats):
            for name, fn in products.items():  # alternate the backends, like the implementations
                times[name].append(_timed(fn, device)[0])
    per_backend = {name: flops / statistics.median(ts) / 1e9 for name, ts in times.items()}
    best = max(per_backend, key=per_backend.get)
    size = size or (4096 if device.type == "cuda" else 2048)
    return {"size": size, "gflops": per_backend[best], "backend": best, "per_backend": per_backend}


# ------------------------------------------------------------------------------------------------ implementations
@dataclass
class Candidate:
    """One row: an implementation in one precision regime, and a closure that does one unit of work."""

    impl: str  # vitkit, timm, torchvision, hf
    regime: str  # what precision regime and path, in words
    precision: str  # fp32 / bf16 / int8: which ceiling applies, and which group's vitkit row is the reference
    run: Callable[[], Any]
    weights_bytes: int
    reference: bool = False  # the vitkit row the group's ratios are computed against
    compile_seconds: float | None = None


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _peer_module(peer: str, model: nn.Module) -> tuple[nn.Module, Callable[[nn.Module, torch.Tensor], torch.Tensor]]:
    """The peer's model with vitkit's weights, and how to get logits from it."""
    c = model.config
    if peer == "timm":
        import timm

        from .checkpoints.timm import timm_kwargs, to_timm

        peer_model = timm.models.VisionTransformer(**timm_kwargs(c))
        peer_model.load_state_dict(to_timm(model), strict=True)
        return peer_model, lambda m, x: m(x)
    if peer == "torchvision":
        import torchvision

        from .checkpoints.torchvision import to_torchvision, torchvision_kwargs

        peer_model = torchvision.models.VisionTransformer(**torchvision_kwargs(c))
        peer_model.load_state_dict(to_torchvision(model), strict=True)
        return peer_model, lambda m, x: m(x)
    if peer == "hf":
        import transformers

        from .checkpoints.hf import write_hf_dir

        with tempfile.TemporaryDirectory(prefix="vitkit-bench-") as folder:
            write_hf_dir(model, Path(folder), {})  # from_pretrained maps the published naming to its own
            peer_model = transformers.ViTForImageClassification.from_pretrained(folder)
        return peer_model, lambda m, x: m(pixel_values=x).logits
    raise ValueError(f"unknown peer {peer!r}")


def _peer_models(settings: BenchSettings, model: nn.Module, notes: list[str]) -> dict:
    peers = {}
    module_names = {"timm": "timm", "torchvision": "torchvision", "hf": "transformers"}
    for peer in settings.peers:
        if peer in RUNTIMES:  # not a PyTorch module: rows of their own (bench_runtimes)
            continue
        if not _installed(module_names[peer]):
            notes.append(f"{peer}: not installed, skipped")
            continue
        try:
            peers[peer] = _peer_module(peer, model)
        except ValueError as e:  # the peer cannot express this configuration
            notes.append(f"{peer}: skipped ({e})")
    return peers


def _inference_candidates(settings: BenchSettings, precision: str, model: nn.Module, peers: dict,
                          images: torch.Tensor, device: torch.device, runtimes=None,
                          notes: list[str] | None = None) -> list[Candidate]:
    """Rows for one precision; each run() returns logits. `runtimes`: the bench_runtimes.RuntimeFiles the
    deployment runtimes' rows run (None: no such rows)."""
    rows: list[Candidate] = []
    autocast = lambda: torch.autocast(device.type, torch.bfloat16)  # noqa: E731

    def frozen(module, forward, x, context=contextlib.nullcontext):
        def run():
            with torch.inference_mode(), context():
                return forward(module, x)
        return run

    vitkit_forward = lambda m, x: m(x)  # noqa: E731
    if precision == "fp32":
        fast = optimize_for_inference(model)
        rows.append(Candidate("vitkit", "fp32, fast path", precision, frozen(fast, vitkit_forward, images),
                              model_bytes(fast), reference=True))
        if settings.plain:
            rows.append(Candidate("vitkit", "fp32, plain path", precision,
                                  frozen(model, vitkit_forward, images, plain_path), model_bytes(model)))
        for name, (peer, forward) in peers.items():
            rows.append(Candidate(name, "fp32", precision, frozen(peer, forward, images), model_bytes(peer)))
    elif precision == "bf16":
        fast = optimize_for_inference(model, torch.bfloat16)
        rows.append(Candidate("vitkit", "bf16 weights (cast once), fast path", precision,
                              frozen(fast, vitkit_forward, images), model_bytes(fast), reference=True))
        if settings.plain:
            @contextlib.contextmanager
            def plain_autocast():
                with plain_path(), autocast():
                    yield

            rows.append(Candidate("vitkit", "autocast bf16, plain path", precision,
                                  frozen(model, vitkit_forward, images, plain_autocast), model_bytes(model)))
        for name, (peer, forward) in peers.items():
            rows.append(Candidate(name, "autocast bf16", precision, frozen(peer, forward, images, autocast),
                                  model_bytes(peer)))
            peer16 = copy.deepcopy(peer).to(torch.bfloat16)
            rows.append(Candidate(name, "bf16 weights", precision, frozen(peer16, forward, images.bfloat16()),
                                  model_bytes(peer16)))
    elif precision == "int8":
        if device.type != "cpu":
            raise ValueError("int8 is measured on the CPU only")
        quantized = quantize_int8(model)
        rows.append(Candidate("vitkit", "int8 dynamic (torchao)", precision, frozen(quantized, vitkit_forward, images),
                              model_bytes(quantized), reference=True))
        fast = optimize_for_inference(model)
        rows.append(Candidate("vitkit", "fp32, fast path", precision, frozen(fast, vitkit_forward, images),
                              model_bytes(fast)))
        if settings.compile:
            from .quantize import quantize_pt2e

            static = quantize_pt2e(model, runtimes.calibration if runtimes else [images], compile=True,
                                   compile_mode=settings.compile_mode)
            start = time.perf_counter()
            with torch.inference_mode():
                static(images)  # compiles
            rows.append(Candidate("vitkit", "int8 static (PT2E, x86 Inductor quantizer, compiled)", precision,
                                  frozen(static, vitkit_forward, images), model_bytes(static),
                                  compile_seconds=time.perf_counter() - start))
        for name, (peer, forward) in peers.items():
            peer8 = quantize_int8(peer)
            rows.append(Candidate(name, "int8 dynamic (torchao)", precision, frozen(peer8, forward, images),
                                  model_bytes(peer8)))
    if runtimes is not None:
        rows += runtime_candidates([p for p in settings.peers if p in RUNTIMES], precision, runtimes, images,
                                   notes if notes is not None else [])
    if settings.compile and precision in ("fp32", "bf16"):
        compiled = optimize_for_inference(model, torch.bfloat16 if precision == "bf16" else None, compile=True,
                                          compile_mode=settings.compile_mode)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(images)  # compiles
        seconds = time.perf_counter() - start
        regime = (f"{'fp32' if precision == 'fp32' else 'bf16 weights'}, torch.compile (inductor, frozen weights"
                  f"{_mode_words(settings)})")
        rows.insert(1, Candidate("vitkit", regime, precision, frozen(compiled, vitkit_forward, images),
                                 model_bytes(compiled), compile_seconds=seconds))
    return rows


def _mode_words(settings: BenchSettings) -> str:
    return f" {settings.compile_mode}" if settings.compile_mode else ""


def _optimizer_words(optimizer: str, fused: bool) -> str:
    adamw = f"AdamW({'fused' if fused else 'default'})"
    return f"Muon + {adamw}" if optimizer == "muon" else adamw


def _train_step(module: nn.Module, forward, images, labels, precision: str, device: torch.device,
                fused: bool, context=contextlib.nullcontext, optimizer: str = "adamw") -> Callable[[], torch.Tensor]:
    """One training step closure: forward (under bf16 autocast for precision bf16), cross-entropy, backward, and
    AdamW, or with optimizer "muon" vitkit's Muon on the blocks' weight matrices and AdamW on the rest (as the
    CIFAR recipes train)."""
    module.train()
    if optimizer == "muon":
        from .training.optim import OptimizerSettings, build_optimizer

        settings = OptimizerSettings("muon", lr=1e-3, weight_decay=0.05, beta1=0.9, beta2=0.999, momentum=0.95)
        optimizer = build_optimizer(getattr(module, "_orig_mod", module), settings)  # (a compiled module's names)
    else:
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.05, fused=True if fused else None)

    def step():
        with context():
            with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(forward(module, images).float(), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def _fused_adamw_supported(device: torch.device) -> bool:
    p = nn.Parameter(torch.zeros(1, device=device))
    try:
        torch.optim.AdamW([p], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def _train_candidates(settings: BenchSettings, precision: str, model: nn.Module, peers: dict, images, labels,
                      device: torch.device) -> list[Candidate]:
    """Training-step rows: fresh copies of the same weights; vitkit with its fast path and a fused AdamW, the
    peers (and vitkit's plain path) with PyTorch's default AdamW; or, with optimizer "muon", every row with
    vitkit's Muon + AdamW."""
    if precision not in ("fp32", "bf16"):
        raise ValueError("training is measured in fp32 and bf16 (autocast) only")
    fused = _fused_adamw_supported(device)
    muon = settings.optimizer == "muon"  # every implementation then has the same optimizer, its AdamW part fused
    regime = "autocast bf16" if precision == "bf16" else "fp32"
    vitkit_forward = lambda m, x: m(x)  # noqa: E731
    opt = settings.optimizer
    rows = [Candidate("vitkit", f"{regime}, fast path, {_optimizer_words(opt, fused)}", precision,
                      _train_step(copy.deepcopy(model), vitkit_forward, images, labels, precision, device, fused,
                                  optimizer=opt), model_bytes(model), reference=True)]
    if settings.plain:
        rows.append(Candidate("vitkit", f"{regime}, plain path, {_optimizer_words(opt, fused and muon)}", precision,
                              _train_step(copy.deepcopy(model), vitkit_forward, images, labels, precision, device,
                                          False, plain_path, optimizer=opt), model_bytes(model)))
    for name, (peer, forward) in peers.items():
        rows.append(Candidate(name, f"{regime}, {_optimizer_words(opt, fused and muon)}", precision,
                              _train_step(copy.deepcopy(peer), forward, images, labels, precision, device, False,
                                          optimizer=opt), model_bytes(peer)))
    if settings.compile:
        compiled = torch.compile(copy.deepcopy(model), mode=settings.compile_mode)
        step = _train_step(compiled, vitkit_forward, images, labels, precision, device, fused, optimizer=opt)
        start = time.perf_counter()
        step()
        rows.insert(1, Candidate("vitkit", f"{regime}, torch.compile{_mode_words(settings)}, "
                                 f"{_optimizer_words(opt, fused)}",
                                 precision, step, model_bytes(model), compile_seconds=time.perf_counter() - start))
    return rows


def loss_trajectories(settings: BenchSettings, precision: str, model: nn.Module, peers: dict, images, labels,
                      device: torch.device) -> dict:
    """Losses over `settings.loss_steps` steps on one fixed batch, from identical weights, for vitkit (fast path),
    vitkit's plain path and each peer; each one's largest deviation from vitkit's, relative to the first loss, and
    from the plain path's (how far implementations of the same function drift apart in this precision anyway)."""
    rows = _train_candidates(dataclasses.replace(settings, compile=False, plain=True), precision, model, peers,
                             images, labels, device)
    losses = {}
    for row in rows:
        key = row.impl if row.impl != "vitkit" or row.reference else PLAIN_KEY
        losses[key] = [float(row.run()) for _ in range(settings.loss_steps)]

    def deviation(a, b):
        return max(abs(x - y) for x, y in zip(a, b)) / abs(b[0])

    return {"precision": precision, "steps": settings.loss_steps, "losses": losses,
            "max_deviation_relative_to_first_loss": {k: deviation(v, losses["vitkit"])
                                                     for k, v in losses.items() if k != "vitkit"},
            "max_deviation_from_plain_path": {k: deviation(v, losses[PLAIN_KEY])
                                              for k, v in losses.items() if k != PLAIN_KEY}}


PLAIN_KEY = "vitkit (plain path)"


# ------------------------------------------------------------------------------------------------ the benchmark
def build_model(settings: BenchSettings) -> nn.Module:
    """The weights every implementation gets: a checkpoint's, or vitkit's initialisation (seeded); a new head (a
    fresh model's, or a checkpoint's given --num-classes) is drawn at random instead of zero, so that the logits,
    and their comparison across implementations, mean something."""
    torch.manual_seed(settings.seed)
    if settings.checkpoint:
        from .checkpoints import load

        model = load(settings.checkpoint, num_classes=settings.num_classes, resample_to=settings.image_size)
        new_head = settings.num_classes is not None
    else:
        model = create_model(settings.model, num_classes=settings.num_classes, image_size=settings.image_size,
                             **settings.overrides)
        new_head = True
    if new_head and isinstance(model.head, nn.Linear):
        with torch.no_grad():
            nn.init.normal_(model.head.weight, std=0.02)
    return model.eval()


def _compare(logits: torch.Tensor, reference: torch.Tensor) -> dict:
    a, b = logits.detach().float().cpu(), reference.detach().float().cpu()
    rel = float((a - b).norm() / b.norm().clamp_min(1e-30))
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    return {"rel_err": rel, "top1_agreement": agree}


def _ceiling_runs(ceilings: dict, precisions, device: torch.device, size: int | None) -> dict:
    """For each precision, a closure running the ceiling's best backend, and its FLOPs: timed in the same
    alternating rounds as the implementations, so that the fraction of the ceiling compares like with like."""
    runs = {}
    for precision in sorted(set(precisions) & set(ceilings)):
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        products, flops = ceiling_products(dtype, device, size)
        fn = products[ceilings[precision]["backend"]]

        def run(fn=fn):
            with torch.inference_mode():
                fn()
        runs[precision] = (run, flops)
    return runs


def _measure(candidates: list[Candidate], settings: BenchSettings, device: torch.device, images_per_call: int,
             flops_per_call: int, ceilings: dict, reference_logits: torch.Tensor | None, task: str) -> list[dict]:
    """Warm up, then `repeats` rounds: the ceilings' products, then every candidate once, in A B C order in even
    rounds and C B A in odd ones (so that a drift of the machine's speed within rounds favours no one)."""
    outputs = {}
    for i, c in enumerate(candidates):
        for w in range(max(settings.warmup, 1)):
            out = c.run()
            if w == 0 and reference_logits is not None:
                outputs[i] = _compare(out, reference_logits)
    ceiling_runs = _ceiling_runs(ceilings, [c.precision for c in candidates], device, settings.ceiling_size)
    ceiling_times = {p: [] for p in ceiling_runs}
    times = {i: [] for i in range(len(candidates))}
    cpu_times = {i: [] for i in range(len(candidates))}
    for round_index in range(settings.repeats):
        for precision, (run, _) in ceiling_runs.items():
            ceiling_times[precision].append(_timed(run, device)[0])
        order = range(len(candidates)) if round_index % 2 == 0 else reversed(range(len(candidates)))
        for i in order:
            wall, cpu = _timed(candidates[i].run, device)
            times[i].append(wall)
            cpu_times[i].append(cpu)
    memory = {i: peak_memory(c.run, device) if settings.memory else None for i, c in enumerate(candidates)}
    reference = {c.precision: i for i, c in enumerate(candidates) if c.reference}
    rows = []
    for i, c in enumerate(candidates):
        ref = times[reference[c.precision]]
        median, best = statistics.median(times[i]), min(times[i])
        row = {
            "task": task, "implementation": c.impl, "regime": c.regime, "precision": c.precision,
            "median_s": median, "min_s": best, "max_s": max(times[i]), "times_s": times[i],
            "cpu_times_s": cpu_times[i], "images_per_s": images_per_call / median,
            # vitkit's speedup over this row: ratio of medians; median of the ratios within each round (paired);
            # ratio of the best times (what each does when the machine is least disturbed)
            "vitkit_speedup": median / statistics.median(ref),
            "vitkit_speedup_paired": statistics.median(t / r for t, r in zip(times[i], ref)),
            "vitkit_speedup_best": best / min(ref),
            "gflops": flops_per_call / median / 1e9, "gflops_best": flops_per_call / best / 1e9,
            "ceiling_gflops": None, "fraction_of_ceiling": None, "fraction_of_ceiling_best": None,
            "peak_memory_bytes": memory[i], "weights_bytes": c.weights_bytes, "compile_seconds": c.compile_seconds,
        }
        if c.precision in ceiling_runs:
            flops, ts = ceiling_runs[c.precision][1], ceiling_times[c.precision]
            row["ceiling_gflops"] = flops / statistics.median(ts) / 1e9
            row["fraction_of_ceiling"] = row["gflops"] / row["ceiling_gflops"]
            row["fraction_of_ceiling_best"] = row["gflops_best"] / (flops / min(ts) / 1e9)
        if i in outputs:
            row.update(outputs[i])
        rows.append(row)
    return rows


def machine_info(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "device": str(device)}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for name in ("timm", "torchvision", "transformers", "torchao", "onnxruntime", "openvino"):
        if _installed(name):
            with contextlib.suppress(Exception):
                info[name] = __import__(name).__version__
    return info


def run_benchmark(settings: BenchSettings, log: Callable[[str], None] | None = None) -> dict:
    """Measure what `settings` asks for; returns a JSON-ready report (see `format_report`)."""
    settings.validate()
    log = log or (lambda message: None)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    notes: list[str] = []
    if settings.checkpoint and settings.overrides:
        notes.append("the checkpoint fixes the architecture: --set overrides ignored")
    model = build_model(settings).to(device)
    config: ViTConfig = model.config
    peers = {name: (peer.to(device).eval(), fwd) for name, (peer, fwd) in _peer_models(settings, model, notes).items()}
    log(f"implementations: vitkit{''.join(', ' + p for p in peers)}")

    log("measuring the matrix-product ceilings")
    ceilings = {"fp32": matmul_ceiling(torch.float32, device, settings.repeats, settings.ceiling_size)}
    if device.type == "cuda" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        ceilings["bf16"] = matmul_ceiling(torch.bfloat16, device, settings.repeats, settings.ceiling_size)

    gen = torch.Generator().manual_seed(settings.seed + 1)
    batch = torch.randn(settings.batch_size, config.in_channels, *config.image_size, generator=gen).to(device)
    labels = torch.randint(0, max(config.num_classes, 1), (settings.batch_size,), generator=gen).to(device)
    with torch.no_grad(), plain_path():
        reference = {"infer": model(batch), "latency": model(batch[:1])}  # fp32 plain path: what all must compute

    rows, trajectories = [], []
    with contextlib.ExitStack() as stack:
        files = None
        if any(p in RUNTIMES for p in settings.peers):
            if device.type != "cpu":
                notes.append(f"ort, openvino: measured on the CPU only, not on {device}; skipped")
            else:
                files = stack.enter_context(runtime_files(model, batch, settings.seed, log))
        _run_tasks(settings, model, peers, batch, labels, device, ceilings, reference, files, notes, rows,
                   trajectories, log)
    settings_dict = dataclasses.asdict(settings)
    return {"settings": settings_dict, "config": config.to_dict(), "machine": machine_info(device),
            "ceilings": ceilings, "results": rows, "loss_trajectories": trajectories, "notes": notes}


def _run_tasks(settings, model, peers, batch, labels, device, ceilings, reference, files, notes, rows, trajectories,
               log) -> None:
    config = model.config
    for task in settings.tasks:
        for precision in settings.precisions:
            if task == "train" and precision == "int8":
                notes.append("train: int8 is for inference only, skipped")
                continue
            if precision == "int8" and device.type != "cpu":
                notes.append(f"{task}: int8 is measured on the CPU only, skipped")
                continue
            log(f"{task}, {precision}")
            if task == "train":
                candidates = _train_candidates(settings, precision, model, peers, batch, labels, device)
                images, flops, ref = settings.batch_size, 3 * count_flops(config, settings.batch_size), None
            else:
                x = batch if task == "infer" else batch[:1]
                candidates = _inference_candidates(settings, precision, model, peers, x, device, files, notes)
                images, flops, ref = x.shape[0], count_flops(config, x.shape[0]), reference[task]
                executed = count_flops(config, x.shape[0], inference=True)
                if executed < flops and precision == settings.precisions[0]:
                    notes.append(f"{task}: vitkit's inference executes {executed / flops:.1%} of the counted FLOPs "
                                 "(its last block computes the class token's output alone); GFLOP/s and %ceil "
                                 "count them all, for every implementation")
            rows += _measure(candidates, settings, device, images, flops, ceilings, ref, task)
            if task == "train" and settings.loss_steps > 0:
                log(f"train, {precision}: loss trajectories over {settings.loss_steps} steps")
                trajectories.append(loss_trajectories(settings, precision, model, peers, batch, labels, device))


# ------------------------------------------------------------------------------------------------ the table
TASK_TITLES = {"infer": "inference throughput", "latency": "batch-1 latency", "train": "training step"}


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def format_report(report: dict) -> str:
    s, machine, config = report["settings"], report["machine"], report["config"]
    lines = [
        f"vitkit bench: {s['checkpoint'] or s['model']} at {config['image_size'][0]}x{config['image_size'][1]}, {config['depth']} blocks, "
        f"width {config['width']}, {config['num_heads']} heads; batch {s['batch_size']} (latency: batch 1); "
        f"{s['repeats']} alternating rounds (A B C, then C B A) after {s['warmup']} warm-up calls",
        f"machine: {machine.get('gpu') or machine.get('cpu', '?')}, {machine['threads']} threads, "
        f"torch {machine['torch']}",
        "ceilings at the start: " + ", ".join(
            f"{p} {c['gflops']:,.0f} GFLOP/s ({c['backend']}, {c['size']}^3 product)"
            for p, c in report["ceilings"].items()),
    ]
    header = (f"{'impl':<12} {'regime':<42} {'median':>10} {'best':>10} {'img/s':>7} {'x med':>6} {'x pair':>6} "
              f"{'x best':>6} {'spread':>6} {'GFLOP/s':>7} {'%ceil':>5} {'%best':>5} {'peakMB':>6} {'wtsMB':>6} "
              f"{'rel err':>7} {'top-1':>5}")

    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    current = None
    for r in report["results"]:
        if (r["task"], r["precision"]) != current:
            current = (r["task"], r["precision"])
            title = f"{TASK_TITLES[r['task']]}, {r['precision']}"
            if r.get("ceiling_gflops"):
                title += f" (ceiling, median in the same rounds: {r['ceiling_gflops']:,.0f} GFLOP/s)"
            lines += ["", title, header]
        spread = (r["max_s"] - r["min_s"]) / r["median_s"]
        rel = "-" if r.get("rel_err") is None else f"{r['rel_err']:.0e}"
        regime = r["regime"] + (f" [compile {r['compile_seconds']:.0f}s]" if r.get("compile_seconds") else "")
        lines.append(
            f"{r['implementation']:<12} {regime:<42} {r['median_s'] * 1e3:>8,.1f}ms {r['min_s'] * 1e3:>8,.1f}ms "
            f"{r['images_per_s']:>7.1f} {r['vitkit_speedup']:>6.2f} {r['vitkit_speedup_paired']:>6.2f} "
            f"{r['vitkit_speedup_best']:>6.2f} {pct(spread):>6} {r['gflops']:>7.1f} {pct(r['fraction_of_ceiling']):>5} "
            f"{pct(r['fraction_of_ceiling_best']):>5} {_mb(r['peak_memory_bytes']):>6} {_mb(r['weights_bytes']):>6} "
            f"{rel:>7} {pct(r.get('top1_agreement')):>5}")
    for t in report["loss_trajectories"]:
        lines += ["", f"loss trajectories, training {t['precision']}, {t['steps']} steps on one batch: largest "
                      "|loss - reference| / the reference's first loss, against vitkit and against vitkit's plain path"]
        ref = t["losses"]["vitkit"]
        lines.append(f"  {'vitkit':<22} {ref[0]:.4f} -> {ref[-1]:.4f}   vs plain path "
                     f"{t['max_deviation_from_plain_path']['vitkit']:.1e}")
        for name, dev in t["max_deviation_relative_to_first_loss"].items():
            losses = t["losses"][name]
            plain = t["max_deviation_from_plain_path"].get(name)
            lines.append(f"  {name:<22} {losses[0]:.4f} -> {losses[-1]:.4f}   vs vitkit {dev:.1e}"
                         + ("" if plain is None else f"   vs plain path {plain:.1e}"))
    lines += ["", "median, best: time of one call (batch), median and minimum over the rounds. x med: the row's median "
              "/ vitkit's (above 1: vitkit faster); x pair: median over rounds of the row's time / vitkit's in the "
              "same round; x best: the row's best / vitkit's best. spread: (max - min) / median. GFLOP/s: forward "
              "FLOPs (a training step counts 3 forwards) / median; %ceil: of the ceiling's median in the same "
              "rounds; %best: best against best. peakMB: memory one call adds to what is resident (CPU: resident-"
              "set high-water mark); wtsMB: the model's tensors. rel err, top-1: logits against vitkit's float32 "
              "plain path."]
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def write_report(report: dict, path) -> None:
    from .checkpoints.io import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2, default=str) + "\n")


__all__ = ["BenchSettings", "run_benchmark", "format_report", "write_report", "matmul_ceiling", "peak_memory",
           "loss_trajectories", "build_model", "PRECISIONS", "TASKS", "PEERS", "ALL_PEERS"]
