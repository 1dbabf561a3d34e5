"""The deployment runtimes as `vitkit bench` rows: ONNX Runtime (CPU execution provider, all graph optimisations)
and OpenVINO (CPU plugin), running vitkit's own ONNX export of the same weights, in float32, bf16 where the runtime
and the CPU support it, and int8 (dynamic, and static calibrated). `bench.py` times them in the same alternating
rounds as every other row; this module only builds the rows.

The ONNX file is exported once per benchmark with a fixed image size and a dynamic batch (the rows compare
kernels, not the resampling a dynamic-size export adds), quantised from it, and converted by OpenVINO from it.
Static int8 is calibrated on the benchmark's own random images: right for speed, meaningless for accuracy (see
`vitkit.quantize` and docs for the accuracy measurement on real images).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

RUNTIMES = ("ort", "openvino")
MODULES = {"ort": "onnxruntime", "openvino": "openvino"}
CALIBRATION_BATCHES = 4


def installed(runtime: str) -> bool:
    return importlib.util.find_spec(MODULES[runtime]) is not None


def file_bytes(path: Path) -> int:
    return os.path.getsize(path)


class RuntimeFiles:
    """The ONNX files the runtime rows run, made on first use in `folder`: fp32, int8 dynamic, int8 static."""

    def __init__(self, model: nn.Module, folder: Path, calibration: list[torch.Tensor], log: Callable[[str], None]):
        self.model, self.folder, self.calibration, self.log = model, Path(folder), calibration, log
        self._paths: dict[str, Path] = {}

    def get(self, kind: str) -> Path:
        if kind not in self._paths:
            from .export import export_onnx
            from .quantize import quantize_onnx_dynamic, quantize_onnx_static

            path = self.folder / f"model-{kind}.onnx"
            if kind == "fp32":
                self.log("exporting vitkit's ONNX file for the runtimes")
                export_onnx(self.model, path, dynamic_image_size=False, check=False)
            elif kind == "int8-dynamic":
                quantize_onnx_dynamic(self.get("fp32"), path)
            elif kind == "int8-static":
                self.log("static int8 of the ONNX file (onnxruntime quantize_static)")
                quantize_onnx_static(self.get("fp32"), path, self.calibration)
            else:
                raise ValueError(f"unknown ONNX file kind {kind!r}")
            self._paths[kind] = path
        return self._paths[kind]


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@functools.cache
def openvino_core():
    """The process's one OpenVINO Core. Each Core that loads the CPU plugin gives the calling thread a signal stack
    of its own (sigaltstack) and hands back the one it found when it is destroyed: two Cores destroyed in the order
    they were made leave the thread's signal stack on freed memory, and the next signal the process receives (a
    child process ending, Ctrl-C) kills it with SIGSEGV (OpenVINO 2026.4). One Core, kept, never leaves that."""
    import openvino as ov

    return ov.Core()


def openvino_model(path: Path, threads: int, precision_hint: str = "f32"):
    """OpenVINO's CPU plugin compiling the ONNX file: latency mode (one stream: all threads on one call, as every
    other row), the inference precision as asked."""
    core = openvino_core()
    return core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": precision_hint})


def openvino_capabilities() -> list[str]:
    return list(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _ort_run(session, images: torch.Tensor):
    feed = {session.get_inputs()[0].name: images.float().numpy()}

    def run():
        return torch.from_numpy(session.run(None, feed)[0])
    return run


def _openvino_run(compiled, images: torch.Tensor):
    request = compiled.create_infer_request()
    array = images.float().numpy()

    def run():
        return torch.from_numpy(request.infer({0: array})[compiled.output(0)].copy())
    return run


def runtime_candidates(runtimes, precision: str, files: RuntimeFiles, images: torch.Tensor,
                       notes: list[str]) -> list:
    """The bench rows of `runtimes` for one precision (bench.Candidate each)."""
    from .bench import Candidate

    threads = torch.get_num_threads()
    rows = []
    for runtime in runtimes:
        if not installed(runtime):
            _note(notes, f"{runtime}: {MODULES[runtime]} not installed, skipped")
            continue
        if runtime == "ort":
            if precision == "fp32":
                path = files.get("fp32")
                rows.append(Candidate("ort", "fp32, CPU EP, ORT_ENABLE_ALL", precision,
                                      _ort_run(ort_session(path, threads), images), file_bytes(path)))
            elif precision == "bf16":
                _note(notes, "ort: no bf16 row: the CPU execution provider has no bfloat16 matrix-product kernels "
                      "on x86 (its bf16 fast-math GEMM is for ARM)")
            elif precision == "int8":
                for kind, regime in (("int8-dynamic", "int8 dynamic (quantize_dynamic)"),
                                     ("int8-static", "int8 static QDQ (quantize_static)")):
                    path = files.get(kind)
                    rows.append(Candidate("ort", regime, precision, _ort_run(ort_session(path, threads), images),
                                          file_bytes(path)))
        elif runtime == "openvino":
            capabilities = openvino_capabilities()
            if precision == "fp32":
                path = files.get("fp32")
                rows.append(Candidate("openvino", "fp32 (vitkit's ONNX)", precision,
                                      _openvino_run(openvino_model(path, threads, "f32"), images), file_bytes(path)))
            elif precision == "bf16":
                if "BF16" not in capabilities:
                    _note(notes, "openvino: no bf16 row: this CPU has no bf16 instructions (OpenVINO's CPU "
                          f"capabilities: {', '.join(capabilities)})")
                    continue
                path = files.get("fp32")
                rows.append(Candidate("openvino", "bf16 inference precision (vitkit's ONNX)", precision,
                                      _openvino_run(openvino_model(path, threads, "bf16"), images), file_bytes(path)))
            elif precision == "int8":
                path = files.get("int8-static")
                rows.append(Candidate("openvino", "int8 static (the QDQ ONNX file)", precision,
                                      _openvino_run(openvino_model(path, threads, "f32"), images), file_bytes(path)))
    return rows


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def calibration_inputs(images: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Random calibration batches shaped like the benchmark's input (speed only)."""
    gen = torch.Generator().manual_seed(seed + 2)
    return [torch.randn(images.shape, generator=gen) for _ in range(CALIBRATION_BATCHES)]


@contextlib.contextmanager
def runtime_files(model: nn.Module, images: torch.Tensor, seed: int, log: Callable[[str], None]):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vitkit-bench-runtimes-") as folder:
        yield RuntimeFiles(model, Path(folder), calibration_inputs(images, seed), log)


def versions() -> dict:
    out = {}
    for runtime, module in MODULES.items():
        if installed(runtime):
            with contextlib.suppress(Exception):
                out[module] = __import__(module).__version__
    return out


__all__ = ["RUNTIMES", "runtime_candidates", "runtime_files", "RuntimeFiles", "ort_session", "openvino_model",
           "versions"]
