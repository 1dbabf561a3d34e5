"""Every timm ViT architecture (timm.list_models("vit_*") + timm.list_models("deit*"), up to ~150M parameters), built
one block deep at a 4x4 patch grid with random non-zero weights, written as a timm hub folder and as a bare state
dict, loaded by vitkit, and classified:

  exact      logits within 1e-5 (relative) of timm's own model
  refused    CheckpointError; "named" when the message names the part vitkit lacks (the table's words)
  guessed    (bare files only) a GuessWarning announced the assumptions, and the logits differ
  silent     loaded without a warning and the logits differ: must never happen
  crashed    any other exception: must never happen

    python tests/timm_coverage.py     # prints the counts and every non-exact case
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vitkit  # noqa: E402
from vitkit.checkpoints.timm import timm_architectures  # noqa: E402
from vitkit.errors import CheckpointError, GuessWarning  # noqa: E402

from conftest import randomize_, rel_err  # noqa: E402

MAX_PARAMS = 150_000_000
NUM_CLASSES = 10


def architectures(max_params: int = MAX_PARAMS) -> list[str]:
    return sorted(name for name, e in timm_architectures().items() if e["params"] <= max_params)


def build(name: str):
    """timm's model one block deep at a 4x4 grid, random non-zero weights; and the model_args used."""
    import timm

    e = timm_architectures()[name]
    step = [s // g for s, g in zip(e["img_size"], e["grid_size"])]  # pixels per patch, hybrid stems included
    args = {"depth": 1, "img_size": [4 * step[0], 4 * step[1]], "num_classes": NUM_CLASSES}
    # timm's own initialisation is skipped where the constructor allows it: randomize_ sets every parameter anyway
    skip = {"weight_init": "skip"} if e["class"] in ("VisionTransformer", "VisionTransformerDistilled") else {}
    try:
        model = timm.create_model(name, pretrained=False, **args, **skip)
    except (AssertionError, ValueError):  # per-block settings (sapiens2's kv heads) need the full depth
        del args["depth"]
        model = timm.create_model(name, pretrained=False, **args, **skip)
    randomize_(model, seed=len(name))
    return model.eval(), args


def write_hub(model, name: str, args: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architecture": name, "num_classes": NUM_CLASSES, "model_args": args,
              "pretrained_cfg": {"input_size": [3, *args["img_size"]], "mean": [0.485, 0.456, 0.406],
                                 "std": [0.229, 0.224, 0.225], "crop_pct": 0.9, "interpolation": "bicubic"}}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")


AMBIGUOUS = ("pass num_heads=", "fits several models", "pass image_size=")


def classify(path: Path, timm_model, images: torch.Tensor, named_parts: list[str], bare: bool) -> tuple[str, str]:
    """(outcome, detail) of vitkit.load(path) against timm's logits.

    A refusal is "named" when it names a part the architecture table lists (for bare files, any "unsupported timm"
    part: without a config the tensors are all there is), "ambiguous" when it lists the keyword that settles the
    file, else "other". Logits are compared in float32 (<= 1e-5 relative); where that fails, in float64 (<= 1e-10):
    float32 rounding alone grows past 1e-5 through the hybrids' ResNet stems (see tests/test_timm_hybrid.py)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = vitkit.load(path)
        except CheckpointError as e:
            message = str(e)
            if any(part in message for part in named_parts) or bare and "unsupported timm" in message:
                return "refused (named)", message
            return ("refused (ambiguous)" if any(a in message for a in AMBIGUOUS) else "refused (other)"), message
        except Exception as e:  # noqa: BLE001  (the point: any other exception is a defect)
            return "crashed", f"{type(e).__name__}: {e}"
    guessed = any(issubclass(w.category, GuessWarning) for w in caught)
    with torch.no_grad():
        err = rel_err(model(images), timm_model(images))
        if err > 1e-5:
            err64 = rel_err(model.double()(images.double()), timm_model.double()(images.double()))
            timm_model.float()
            if err64 <= 1e-10:
                return "exact", f"rel err {err:.1e} in float32, {err64:.1e} in float64"
    if err <= 1e-5:
        return "exact", f"rel err {err:.1e}"
    return ("guessed" if guessed else "silent"), f"rel err {err:.2e}"


def run(root: Path, names=None) -> dict[str, dict[str, tuple[str, str]]]:
    """{"hub": {name: (outcome, detail)}, "bare": {...}}."""
    results: dict[str, dict] = {"hub": {}, "bare": {}}
    for name in names or architectures():
        try:
            model, args = build(name)
        except Exception as e:  # noqa: BLE001
            results["hub"][name] = results["bare"][name] = ("not built", f"timm: {type(e).__name__}: {e}")
            continue
        images = torch.randn(2, 3, *args["img_size"], generator=torch.Generator().manual_seed(0))
        parts = timm_architectures()[name]["unsupported"]
        write_hub(model, name, args, root / name)
        results["hub"][name] = classify(root / name, model, images, parts, bare=False)
        bare = root / f"{name}.safetensors"
        os.link(root / name / "model.safetensors", bare)  # the same tensors, without the folder's config
        results["bare"][name] = classify(bare, model, images, parts, bare=True)
    return results


def counts(results) -> dict[str, Counter]:
    return {kind: Counter(outcome for outcome, _ in per.values()) for kind, per in results.items()}


if __name__ == "__main__":
    import tempfile
    import time

    torch.set_num_threads(1)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(Path(tmp))
    for kind, per in results.items():
        for name, (outcome, detail) in sorted(per.items()):
            if outcome != "exact":
                print(f"{kind:4s} {outcome:16s} {name}: {detail[:300]}")
    print(f"{len(results['hub'])} architectures in {time.time() - start:.0f} s")
    for kind, c in counts(results).items():
        print(kind, dict(c))
