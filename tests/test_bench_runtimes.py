"""`vitkit bench --peers ort openvino`: the deployment runtimes' rows appear for each precision, run the same
function as vitkit (float32 to rounding, int8 within quantisation error), and say why a row is missing. Tiny model,
one round: plumbing, never speed."""

from __future__ import annotations

import ctypes
import json
import math
from pathlib import Path

import pytest

from vitkit.bench import format_report, run_benchmark
from vitkit.bench_runtimes import openvino_capabilities
from vitkit.cli import main

from test_bench import tiny_settings

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


def test_runtime_rows_in_every_precision():
    report = run_benchmark(tiny_settings(peers=("ort", "openvino"), precisions=("fp32", "bf16", "int8"),
                                         tasks=("infer", "latency"), plain=False, memory=False))
    rows = {(r["task"], r["precision"], r["implementation"], r["regime"]): r for r in report["results"]}
    for task in ("infer", "latency"):
        fp32 = [rows[(task, "fp32", impl, regime)] for impl, regime in
                (("ort", "fp32, CPU EP, ORT_ENABLE_ALL"), ("openvino", "fp32 (vitkit's ONNX)"))]
        for r in fp32:
            assert r["rel_err"] < 1e-4 and r["top1_agreement"] == 1.0  # the same function as vitkit
        int8 = [rows[(task, "int8", impl, regime)] for impl, regime in
                (("ort", "int8 dynamic (quantize_dynamic)"), ("ort", "int8 static QDQ (quantize_static)"),
                 ("openvino", "int8 static (the QDQ ONNX file)"))]
        for r in fp32 + int8:
            assert math.isfinite(r["vitkit_speedup_paired"]) and r["vitkit_speedup_paired"] > 0
            assert r["weights_bytes"] > 0  # the ONNX file's size
    assert not any(k[2] == "ort" and k[1] == "bf16" for k in rows)
    assert any(n.startswith("ort: no bf16 row") for n in report["notes"])
    if "BF16" in openvino_capabilities():
        assert ("infer", "bf16", "openvino", "bf16 inference precision (vitkit's ONNX)") in rows
    else:
        assert any(n.startswith("openvino: no bf16 row: this CPU has no bf16") for n in report["notes"])
    assert report["machine"]["onnxruntime"] and report["machine"]["openvino"]
    table = format_report(report)
    assert "int8 static QDQ (quantize_static)" in table and "openvino" in table
    # OpenVINO's Cores swap the thread's signal stack; left on freed memory, the next signal (a child process
    # ending) kills this process with SIGSEGV, as it killed test workers here
    assert signal_stack_is_usable(), "the thread's signal stack (sigaltstack) points at unmapped memory"


def signal_stack_is_usable() -> bool:
    """Whether the calling thread's alternate signal stack is off or lies in mapped, writable memory (Linux)."""
    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    stack = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    if not stack.sp or stack.flags & 2:  # SS_DISABLE
        return True
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if start <= stack.sp and stack.sp + stack.size <= end:
            return "w" in line.split()[1]
    return False


def test_cli_accepts_runtime_peers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "ViT-Ti/16", "--image-size", "32", "--num-classes", "5", "--set", "depth=1",
                 "--set", "width=32", "--set", "num_heads=2", "--set", "mlp_dim=64", "--set", "patch_size=8",
                 "--batch-size", "2", "--precision", "fp32", "--tasks", "latency", "--peers", "ort", "--repeats",
                 "1", "--warmup", "0", "--no-memory", "--no-plain", "--ceiling-size", "256", "--json", str(out)]) == 0
    assert "ort" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [(r["implementation"], r["regime"]) for r in report["results"]] == [
        ("vitkit", "fp32, fast path"), ("ort", "fp32, CPU EP, ORT_ENABLE_ALL")]
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses an unknown choice
        main(["bench", "--peers", "tensorrt"])
    assert exit_info.value.code == 2
    assert "tensorrt" in capsys.readouterr().err
