"""Export a model to ONNX (checked with onnxruntime) or to a `torch.export` program, with dynamic batch size and,
for learned or absent position embeddings, dynamic image size.

Both go through `torch.export` (ONNX through `torch.onnx.export(dynamo=True)`). For a dynamic image size the
exported copy resamples its position embeddings for every input, the native size included: at the native size the
resampling is the identity (bicubic or bilinear onto the same grid samples the grid's own points), and one graph
serves every size. Image sides must be multiples of the effective patch size.

    from vitkit.export import export_onnx
    result = export_onnx(model, "model.onnx")        # checks the file with onnxruntime against PyTorch
    print(result["checks"])                          # relative errors at several batch and image sizes
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .files import atomic_path
from .models.fast import plain_path

FORMATS = ("onnx", "pt2")
MAX_GRID = 512  # the largest patch grid side the exported graph accepts
MAX_BATCH = 4096


def _step(model) -> tuple[int, int]:
    c = model.config
    return (c.patch_size[0] * c.stem_stride, c.patch_size[1] * c.stem_stride)


def _resampled_positions(model, grid=None) -> torch.Tensor | None:
    """`model.position_embeddings(grid)` for posemb 'learned' or 'none', always resampling (so that the traced
    graph holds the resampling for any grid, not a shortcut for the native one)."""
    c = model.config
    if c.posemb == "none":
        return None
    prefix = c.num_posemb_prefix_tokens
    old_h, old_w = c.grid_size
    table = model.pos_embed[0, prefix:].reshape(old_h, old_w, -1).permute(2, 0, 1).unsqueeze(0).float()  # (1,D,h,w)
    method = model.resample_method
    kwargs = {} if method == "nearest" else {"align_corners": method == "bilinear"}  # as posemb.resample_grid
    table = F.interpolate(table, size=tuple(grid), mode=method, **kwargs)
    table = table.flatten(2).transpose(1, 2).to(model.pos_embed.dtype)  # (1, gh * gw, D)
    return torch.cat([model.pos_embed[:, :prefix], table], dim=1)


def exportable_copy(model: nn.Module, dynamic_image_size: bool = True) -> nn.Module:
    """A frozen float32 copy of the model, ready for tracing at any batch size and, if asked, any image size."""
    model = copy.deepcopy(model).float().eval().requires_grad_(False)
    if dynamic_image_size:
        if model.config.posemb not in ("learned", "none"):
            raise ValueError(f"dynamic image size export supports posemb 'learned' and 'none', not "
                             f"{model.config.posemb!r}; export a fixed image size instead")
        model.config = model.config.replace(dynamic_image_size=True)
        model.position_embeddings = functools.partial(_resampled_positions, model)
    return model


def export_program(model: nn.Module, dynamic_batch: bool = True, dynamic_image_size: bool = True,
                   batch_size: int = 2) -> torch.export.ExportedProgram:
    """The model as a `torch.export` program, with the batch and image sides symbolic as asked."""
    traced = exportable_copy(model, dynamic_image_size)
    c = traced.config
    images = torch.randn(batch_size, c.in_channels, *c.image_size)
    dims = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if dynamic_image_size:
        step_h, step_w = _step(traced)
        dims[2] = step_h * torch.export.Dim("grid_height", min=1, max=MAX_GRID)
        dims[3] = step_w * torch.export.Dim("grid_width", min=1, max=MAX_GRID)
    with plain_path(), torch.no_grad():
        return torch.export.export(traced, (images,), dynamic_shapes={"images": dims or None})


def export_onnx(model: nn.Module, path, dynamic_batch: bool = True, dynamic_image_size: bool = True,
                opset: int | None = None, check: bool = True, tolerance: float | None = None) -> dict:
    """Write an ONNX file with input `images` (batch, C, H, W) and output `logits`; with `check`, run it with
    onnxruntime at several batch and image sizes against PyTorch. Returns {"path", "checks": [...]}.
    With `tolerance`, a relative error above it raises ValueError and leaves `path` as it was."""
    if importlib.util.find_spec("onnxscript") is None:
        raise ValueError("ONNX export needs onnx and onnxscript: pip install onnx onnxscript")
    path = Path(path)
    program = export_program(model, dynamic_batch, dynamic_image_size)
    kwargs = {"opset_version": opset} if opset else {}
    with plain_path():
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=["images"], output_names=["logits"],
                                         verbose=False, **kwargs)
    result = {"path": str(path), "format": "onnx", "dynamic_batch": dynamic_batch,
              "dynamic_image_size": dynamic_image_size, "checks": []}
    with atomic_path(path, keep_suffix=True) as tmp:  # checked before it is renamed onto `path`
        onnx_program.save(str(tmp))
        if check:
            result["checks"] = check_onnx(tmp, model, check_shapes(model, dynamic_batch, dynamic_image_size))
        worst = max((c["rel_err"] for c in result["checks"]), default=0.0)
        if tolerance is not None and not worst <= tolerance:
            raise ValueError(f"the exported model disagrees with PyTorch: relative error {worst:.1e} > "
                             f"{tolerance:g}; nothing written")
    return result


def save_program(model: nn.Module, path, dynamic_batch: bool = True, dynamic_image_size: bool = True) -> dict:
    """Write a `torch.export` program (.pt2; load with torch.export.load(path).module())."""
    path = Path(path)
    program = export_program(model, dynamic_batch, dynamic_image_size)
    with atomic_path(path, keep_suffix=True) as tmp:
        torch.export.save(program, str(tmp))
    return {"path": str(path), "format": "pt2", "dynamic_batch": dynamic_batch,
            "dynamic_image_size": dynamic_image_size, "checks": []}


def check_shapes(model, dynamic_batch: bool, dynamic_image_size: bool) -> list[tuple[int, int, int, int]]:
    """Input shapes worth checking: the export's own, other batch sizes, a larger and a non-square image."""
    c = model.config
    h, w = c.image_size
    step_h, step_w = _step(model)
    shapes = [(2, c.in_channels, h, w)]
    if dynamic_batch:
        shapes += [(1, c.in_channels, h, w), (3, c.in_channels, h, w)]
    if dynamic_image_size:
        other = 1 if dynamic_batch else 2
        shapes += [(2, c.in_channels, h + 2 * step_h, w + 2 * step_w),
                   (other, c.in_channels, max(h - step_h, step_h), w + 3 * step_w)]
    return shapes


def check_onnx(path, model: nn.Module, shapes, seed: int = 0) -> list[dict]:
    """Run an ONNX file with onnxruntime and the model with PyTorch (plain path, float32) on the same random
    inputs; the relative error ||onnx - torch|| / ||torch|| and the largest absolute difference per shape."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = copy.deepcopy(model).float().eval()
    if any(tuple(s[2:]) != tuple(reference.config.image_size) for s in shapes):
        reference.config = reference.config.replace(dynamic_image_size=True)
    gen = torch.Generator().manual_seed(seed)
    checks = []
    for shape in shapes:
        images = torch.randn(*shape, generator=gen)
        with torch.no_grad(), plain_path():
            want = reference(images).numpy().astype(np.float64)
        got = session.run(["logits"], {"images": images.numpy()})[0].astype(np.float64)
        rel = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
        checks.append({"shape": list(shape), "rel_err": rel, "max_abs_diff": float(np.abs(got - want).max())})
    return checks


__all__ = ["export_onnx", "save_program", "export_program", "exportable_copy", "check_onnx", "check_shapes",
           "FORMATS"]
