"""Static int8: post-training quantisation calibrated on real images, for vitkit (PyTorch's PT2E flow with the x86
Inductor quantizer) and for an exported ONNX file (onnxruntime's `quantize_static`, QDQ format, which OpenVINO runs
as int8 too). The dynamic int8 of `models.fast.quantize_int8` (torchao) needs no calibration: it measures every
activation per call; static quantisation fixes the activation scales once, from the calibration images, and so
saves that work at every call.

    from vitkit.quantize import calibration_batches, quantize_pt2e, quantize_onnx_static
    calibration = calibration_batches("data/train", model.preprocessing, count=256)   # (B, C, H, W) tensors
    int8 = quantize_pt2e(model, calibration, compile=True)     # inductor lowers the int8 graph to int8 kernels
    quantize_onnx_static("model.onnx", "model-int8.onnx", calibration)
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .files import atomic_path
from .models.fast import compile_mode_problem, plain_path

ONNX_QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")  # the products; LayerNorm, Softmax, GELU and the adds stay float


def calibration_batches(data: str | os.PathLike, preprocessing, count: int = 256, batch_size: int = 32,
                        seed: int = 0, val_per_class: int | None = None, split_seed: int = 0,
                        log=print) -> list[torch.Tensor]:
    """`count` images drawn at random (seeded) from the training split of an image folder (or any data `vitkit
    train --data` takes), prepared as `preprocessing` says, in batches. With `val_per_class`, the hold-out a training
    run takes (`--val-per-class`, `--split-seed`) is left out, so that calibration never sees evaluation images."""
    from .data.sources import open_data

    splits = open_data(str(data), want_train=True, want_val=val_per_class is not None,
                       val_split="holdout" if val_per_class is not None else "auto",
                       val_per_class=val_per_class, split_seed=split_seed, log=log, progress=False)
    if splits.train is None or len(splits.train) == 0:
        raise ValueError(f"{data}: no training images to calibrate on")
    return draw_calibration(splits.train, preprocessing, count, batch_size, seed)


def draw_calibration(images, preprocessing, count: int = 256, batch_size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """`count` images of an ImageSet drawn at random (seeded), prepared by vitkit's evaluation transform, batched."""
    from .data import TransformedImages, eval_transform

    gen = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(images), generator=gen)[:count].tolist()
    dataset = TransformedImages(images, eval_transform(preprocessing))
    tensors = [dataset[i][0] for i in picks]
    return [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]


def quantize_pt2e(model: nn.Module, calibration: Iterable[torch.Tensor], compile: bool = False,
                  compile_mode: str | None = None) -> nn.Module:
    """A static int8 copy of `model` by PyTorch's PT2E flow: export, `prepare_pt2e` with the X86InductorQuantizer
    (int8 activations per tensor, int8 weights per channel), one pass over `calibration`, `convert_pt2e`. Without
    `compile` the result runs the int8 arithmetic as quantize/dequantize around float ops (right numbers, float
    speed: for accuracy); with `compile`, inductor (weights frozen) fuses them into int8 kernels (for speed; the
    first call compiles, minutes on a small CPU), in torch.compile's `compile_mode` if given."""
    problem = compile_mode_problem(compile_mode, compile=compile, device="cpu")  # X86InductorQuantizer: the CPU
    if problem:
        raise ValueError(problem)
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError as e:
        raise ValueError("static int8 (PT2E) needs torchao: pip install torchao") from e
    batches = list(calibration)
    if not batches:
        raise ValueError("static int8 needs calibration images; got none")
    model = copy.deepcopy(model).float().eval().requires_grad_(False)
    example = batches[0][:2]
    batch = torch.export.Dim("batch", min=1, max=4096)
    with plain_path(), torch.no_grad():
        graph = torch.export.export(model, (example,), dynamic_shapes={"images": {0: batch}}).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(graph, quantizer)
        for images in batches:
            prepared(images.float())
        converted = convert_pt2e(prepared)
    if compile:
        from torch._inductor import config as inductor_config

        inductor_config.freezing = True  # constant weights: lets inductor pre-pack the int8 weights
        converted = torch.compile(converted, mode=compile_mode)
    converted.config = model.config
    converted.preprocessing = getattr(model, "preprocessing", None)
    converted.class_names = getattr(model, "class_names", None)
    return converted


class _Calibration:
    """onnxruntime's CalibrationDataReader over a list of batches (it feeds one dict per call until None)."""

    def __init__(self, input_name: str, batches: Sequence[torch.Tensor]):
        self.items = iter([{input_name: b.float().numpy()} for b in batches])

    def get_next(self):
        return next(self.items, None)


def quantize_onnx_static(source, output, calibration: Iterable[torch.Tensor], per_channel: bool = True,
                         reduce_range: bool | None = None) -> Path:
    """Static int8 of an ONNX file with onnxruntime (QDQ format: uint8 activations, int8 weights, per channel by
    default, MinMax calibration over `calibration`); the products are quantised (`ONNX_QUANTIZED_OPS`). The source's
    metadata_props are carried over, with vitkit.precision saying how it was quantised.

    reduce_range (7-bit weights) defaults to on for CPUs without VNNI (AVX2 only), where onnxruntime's int8
    kernels can saturate 16-bit intermediate sums with full-range weights (its documentation's advice)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    source, output = Path(source), Path(output)
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    batches = list(calibration)
    if not batches:
        raise ValueError("static int8 needs calibration images; got none")
    with atomic_path(output, keep_suffix=True) as tmp:
        quantize_static(str(source), str(tmp), _Calibration(_input_name(source), batches),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel, reduce_range=reduce_range, op_types_to_quantize=list(ONNX_QUANTIZED_OPS),
                        calibrate_method=_minmax(), extra_options={"CalibTensorRangeSymmetric": False})
        how = (f"int8 static (onnxruntime quantize_static, QDQ, {'per-channel' if per_channel else 'per-tensor'} "
               f"weights{', reduce_range' if reduce_range else ''}, MinMax over {sum(len(b) for b in batches)} images)")
        _carry_metadata(source, tmp, how)
    return output


def quantize_onnx_dynamic(source, output) -> Path:
    """Dynamic int8 of an ONNX file with onnxruntime (int8 weights, activations quantised per call), metadata kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, output = Path(source), Path(output)
    with atomic_path(output, keep_suffix=True) as tmp:
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        _carry_metadata(source, tmp, "int8 dynamic (onnxruntime quantize_dynamic, int8 weights)")
    return output


def _minmax():
    from onnxruntime.quantization import CalibrationMethod

    return CalibrationMethod.MinMax


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def _carry_metadata(source: Path, output: Path, precision: str) -> None:
    import onnx

    from .export import _write_onnx_metadata

    meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    if meta:
        meta["vitkit.precision"] = precision
        _write_onnx_metadata(output, meta)


def cpu_has_vnni() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX512-VNNI or AVX-VNNI)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


__all__ = ["calibration_batches", "draw_calibration", "quantize_pt2e", "quantize_onnx_static", "quantize_onnx_dynamic", "cpu_has_vnni",
           "ONNX_QUANTIZED_OPS"]
