"""Export a model to ONNX (checked with onnxruntime) or to a `torch.export` program, with dynamic batch size and,
for learned or absent position embeddings, dynamic image size.

Both go through `torch.export` (ONNX through `torch.onnx.export(dynamo=True)`). For a dynamic image size the
exported copy resamples its position embeddings for every input, the native size included: at the native size the
resampling is the identity (bicubic or bilinear onto the same grid samples the grid's own points), and one graph
serves every size. Image sides must be multiples of the effective patch size.

Every file carries what classifying an image needs, so that it stands alone: the class names, the preprocessing
(size, mean, std, interpolation, crop), the model config, the vitkit version and the source checkpoint's SHA-256;
in the ONNX file's `metadata_props`, in a `.pt2` archive as `extra/vitkit.json` (see `export_metadata`).
`load_exported` reads either back as a runnable with that metadata.

    from vitkit.export import export_onnx, load_exported
    result = export_onnx(model, "model.onnx")        # checks the file with onnxruntime against PyTorch
    print(result["checks"])                          # relative errors at several batch and image sizes
    exported = load_exported("model.onnx")           # .class_names, .preprocessing, exported(images) -> logits
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .files import atomic_path
from .models.fast import plain_path
from .models.posemb import interpolate_grid

FORMATS = ("onnx", "pt2")
PT2_METADATA_FILE = "vitkit.json"  # the extra file of a .pt2 archive holding `export_metadata`
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
    table = interpolate_grid(table, tuple(grid), model.resample_method)
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


def export_metadata(model: nn.Module, source_sha256: str | None = None, precision: str = "fp32") -> dict[str, str]:
    """What an exported file carries so that it classifies an image alone; every value a string (ONNX
    metadata_props are strings). The keys are those of vitkit's safetensors metadata where they overlap."""
    from . import __version__

    meta = {
        "vitkit.version": __version__,
        "vitkit.config": model.config.to_json(),
        "vitkit.preprocessing": json.dumps(model.preprocessing.to_dict()),
        "vitkit.precision": precision,
        "vitkit.input": "images: float32 (batch, channels, height, width), prepared as vitkit.preprocessing says",
        "vitkit.output": "logits: float32 (batch, classes)",
    }
    if getattr(model, "class_names", None):
        meta["vitkit.class_names"] = json.dumps(list(model.class_names))
    if source_sha256:
        meta["vitkit.source_sha256"] = source_sha256
    return meta


def source_sha256(path) -> str:
    """SHA-256 of a checkpoint file; for a folder (a Hugging Face model), of the listing of its files' names and
    SHA-256s, one `name  digest` line each, sorted."""
    path = Path(path)

    from .files import sha256_of_file as digest

    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        listing = "".join(f"{p.relative_to(path).as_posix()}  {digest(p)}\n" for p in files)
        return hashlib.sha256(listing.encode()).hexdigest()
    return digest(path)


def _write_onnx_metadata(path, metadata: dict[str, str]) -> None:
    """Set `metadata` as the ONNX file's metadata_props (replacing vitkit's keys, keeping any others)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def export_onnx(model: nn.Module, path, dynamic_batch: bool = True, dynamic_image_size: bool = True,
                opset: int | None = None, check: bool = True, tolerance: float | None = None,
                source_sha256: str | None = None) -> dict:
    """Write an ONNX file with input `images` (batch, C, H, W) and output `logits`, `export_metadata` in its
    metadata_props; with `check`, run it with onnxruntime at several batch and image sizes against PyTorch.
    Returns {"path", "checks": [...], "metadata": {...}}.
    With `tolerance`, a relative error above it raises ValueError and leaves `path` as it was."""
    if importlib.util.find_spec("onnxscript") is None:
        raise ValueError("ONNX export needs onnx and onnxscript: pip install onnx onnxscript")
    path = Path(path)
    program = export_program(model, dynamic_batch, dynamic_image_size)
    kwargs = {"opset_version": opset} if opset else {}
    with plain_path():
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=["images"], output_names=["logits"],
                                         verbose=False, **kwargs)
    metadata = export_metadata(model, source_sha256)
    result = {"path": str(path), "format": "onnx", "dynamic_batch": dynamic_batch,
              "dynamic_image_size": dynamic_image_size, "checks": [], "metadata": metadata}
    with atomic_path(path, keep_suffix=True) as tmp:  # checked before it is renamed onto `path`
        onnx_program.save(str(tmp))
        _write_onnx_metadata(tmp, metadata)
        if check:
            result["checks"] = check_onnx(tmp, model, check_shapes(model, dynamic_batch, dynamic_image_size))
        worst = max((c["rel_err"] for c in result["checks"]), default=0.0)
        if tolerance is not None and not worst <= tolerance:
            raise ValueError(f"the exported model disagrees with PyTorch: relative error {worst:.1e} > "
                             f"{tolerance:g}; nothing written")
    return result


def save_program(model: nn.Module, path, dynamic_batch: bool = True, dynamic_image_size: bool = True,
                 source_sha256: str | None = None) -> dict:
    """Write a `torch.export` program (.pt2; load with torch.export.load(path).module(), or `load_exported`) with
    `export_metadata` as the archive's extra file vitkit.json."""
    path = Path(path)
    program = export_program(model, dynamic_batch, dynamic_image_size)
    metadata = export_metadata(model, source_sha256)
    with atomic_path(path, keep_suffix=True) as tmp:
        torch.export.save(program, str(tmp), extra_files={PT2_METADATA_FILE: json.dumps(metadata, indent=1)})
    return {"path": str(path), "format": "pt2", "dynamic_batch": dynamic_batch,
            "dynamic_image_size": dynamic_image_size, "checks": [], "metadata": metadata}


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


# ------------------------------------------------------------------------------------------------ loading back
class ExportedModel:
    """An exported file ready to run: `exported(images)` gives float32 logits (a CPU tensor) for a float32 batch
    prepared as `preprocessing` says; `class_names`, `config`, `metadata` as the file records them."""

    def __init__(self, path: Path, fmt: str, metadata: dict[str, str], run):
        from .checkpoints import _extras_from_metadata
        from .configs import ViTConfig
        from .errors import CheckpointError

        missing = [k for k in ("vitkit.config", "vitkit.preprocessing") if k not in metadata]
        if missing:
            raise CheckpointError(path, f"no vitkit metadata ({', '.join(missing)} missing): not written by vitkit "
                                  "export, or by a version before metadata; export it again", key=missing[0])
        try:
            self.config = ViTConfig.from_dict(json.loads(metadata["vitkit.config"]))
        except (ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(path, f"invalid model config in the metadata ({e})", key="vitkit.config") from None
        self.preprocessing, self.class_names = _extras_from_metadata(metadata, path)
        self.path, self.format, self.metadata, self._run = Path(path), fmt, dict(metadata), run
        self.num_classes = self.config.num_classes
        self.version = metadata.get("vitkit.version")
        self.source_sha256 = metadata.get("vitkit.source_sha256")
        self.precision = metadata.get("vitkit.precision", "fp32")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images)

    def eval(self) -> "ExportedModel":  # so that code written for nn.Module (eval.classify) takes it as it is
        return self

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, format={self.format!r}, precision={self.precision!r})"


def read_exported_metadata(path) -> dict[str, str]:
    """The vitkit metadata of an exported file (.onnx: metadata_props; .pt2: extra/vitkit.json), without loading
    the weights."""
    path = Path(path)
    fmt = exported_format(path)
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}
    import zipfile

    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/extra/" + PT2_METADATA_FILE)]
        return json.loads(archive.read(names[0])) if names else {}


def exported_format(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".onnx", ".pt2"):
        raise ValueError(f"{path}: not an exported model; expected a .onnx or .pt2 file")
    return suffix[1:]


def load_exported(path, threads: int | None = None) -> ExportedModel:
    """An exported .onnx (run with onnxruntime's CPU provider, all graph optimisations) or .pt2 (run with torch)
    with its metadata. `threads`: onnxruntime's intra-op threads (default: its own choice)."""
    from .errors import CheckpointError

    path = Path(path)
    fmt = exported_format(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes for unreadable files
            raise CheckpointError(path, f"onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name

        def run(images: torch.Tensor) -> torch.Tensor:
            array = images.detach().to("cpu", torch.float32).contiguous().numpy()
            return torch.from_numpy(session.run([output_name], {input_name: array})[0])
    else:
        extra = {PT2_METADATA_FILE: ""}
        try:
            module = torch.export.load(str(path), extra_files=extra).module()
        except Exception as e:
            raise CheckpointError(path, f"torch.export.load cannot load it ({str(e).splitlines()[0]})") from None
        metadata = json.loads(extra[PT2_METADATA_FILE]) if extra[PT2_METADATA_FILE] else {}

        def run(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return module(images.detach().to("cpu", torch.float32)).float()
    return ExportedModel(path, fmt, metadata, run)


__all__ = ["export_onnx", "save_program", "export_program", "exportable_copy", "check_onnx", "check_shapes",
           "export_metadata", "source_sha256", "load_exported", "read_exported_metadata", "ExportedModel", "FORMATS"]
