"""Every Hugging Face ViT class vitkit may meet, tiny and with random non-zero weights, saved three ways (a
save_pretrained folder, its weights file alone, the model's transformers-5 state dict alone) and loaded: each load is
exact (rel err <= 1e-5 against transformers' own output) or a CheckpointError naming the part vitkit lacks; never a
silently different model, never another exception. `python tests/test_hf_coverage.py` prints the table."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
import transformers as T
from safetensors.torch import save_file

import vitkit
from vitkit import CheckpointError, GuessWarning

from conftest import randomize_, rel_err

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
             patch_size=8)


@dataclass
class Case:
    """One transformers class; `outputs(ref, x)` -> {name: tensor} compared with `ours(model, x)`'s same names;
    `refused`: the part a CheckpointError must name (None: must load exactly)."""

    name: str
    build: Callable[[], torch.nn.Module]
    refused: str | tuple[str, ...] | None = None
    outputs: Callable | None = None
    bare_fields: dict = field(default_factory=dict)  # what a bare file does not record, given as the rule asks
    folder_warns: str | None = None  # a GuessWarning the folder must give (an assumption no keyword changes)


def _logits(ref, x):
    return {"logits": ref(pixel_values=x).logits}


def _our_logits(model, x):
    return {"logits": model(x)}


def _hidden(ref, x):
    return {"hidden": ref(pixel_values=x).last_hidden_state}


def _hidden_pooled(ref, x):
    out = ref(pixel_values=x)
    return {"hidden": out.last_hidden_state, "pooled": out.pooler_output}


def _pooled(ref, x):
    return {"pooled": ref(pixel_values=x).pooler_output}


def _mae_unmasked(ref, x):
    """ViTMAEModel with masking switched off and patches in order (noise = 0, 1, 2, ... keeps the order)."""
    ref.config.mask_ratio = 0.0
    n = (x.shape[-1] // 8) * (x.shape[-2] // 8)
    return {"hidden": ref(pixel_values=x, noise=torch.arange(n, dtype=torch.float32).expand(x.shape[0], n))
            .last_hidden_state}


def _clip_embeds(ref, x):
    return {"logits": ref(pixel_values=x).image_embeds}


def _ours(model, x, names):
    out = {}
    if "logits" in names:
        out["logits"] = model(x)
    if "hidden" in names or "pooled" in names:
        feats = model.forward_features(x)
        out["hidden"] = feats
        out["pooled"] = model.forward_head(feats, pre_logits=True)
    return {k: out[k] for k in names}


def _build(cls, config_cls, seed=0, **overrides):
    def build():
        settings = {k: v for k, v in {**SMALL, **overrides}.items() if v is not None}  # None: not this config's
        return randomize_(cls(config_cls(**settings)), seed=seed).eval()
    return build


def _build_pair(cls, config_cls, seed=0, **overrides):
    def build():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return randomize_(cls(config_cls(vision_config=SMALL, **overrides)), seed=seed).eval()
    return build


CASES = [
    Case("ViTModel", _build(T.ViTModel, T.ViTConfig), outputs=_hidden_pooled),
    Case("ViTForImageClassification", _build(T.ViTForImageClassification, T.ViTConfig, num_labels=5),
         outputs=_logits),
    Case("ViTForImageClassification tanh GELU, eps 1e-6",
         _build(T.ViTForImageClassification, T.ViTConfig, num_labels=5, hidden_act="gelu_pytorch_tanh",
                layer_norm_eps=1e-6), outputs=_logits,
         bare_fields=dict(gelu="tanh", layer_norm_eps=1e-6)),
    Case("ViTForMaskedImageModeling", _build(T.ViTForMaskedImageModeling, T.ViTConfig), refused="pixel decoder"),
    Case("DeiTModel", _build(T.DeiTModel, T.DeiTConfig, seed=1), outputs=_hidden_pooled),
    Case("DeiTForImageClassification", _build(T.DeiTForImageClassification, T.DeiTConfig, seed=2, num_labels=5),
         outputs=_logits),
    Case("DeiTForImageClassificationWithTeacher",
         _build(T.DeiTForImageClassificationWithTeacher, T.DeiTConfig, seed=3, num_labels=5), outputs=_logits),
    Case("DeiTForMaskedImageModeling", _build(T.DeiTForMaskedImageModeling, T.DeiTConfig), refused="pixel decoder"),
    Case("ViTMSNModel", _build(T.ViTMSNModel, T.ViTMSNConfig, seed=4), outputs=_hidden,
         bare_fields=dict(layer_norm_eps=1e-6)),
    Case("ViTMSNForImageClassification",
         _build(T.ViTMSNForImageClassification, T.ViTMSNConfig, seed=5, num_labels=5), outputs=_logits,
         bare_fields=dict(layer_norm_eps=1e-6)),
    Case("ViTMAEModel", _build(T.ViTMAEModel, T.ViTMAEConfig, seed=6), outputs=_mae_unmasked,
         folder_warns="random masking"),
    Case("ViTMAEForPreTraining", _build(T.ViTMAEForPreTraining, T.ViTMAEConfig, decoder_hidden_size=32,
                                        decoder_num_hidden_layers=1, decoder_intermediate_size=64,
                                        decoder_num_attention_heads=2), refused="pixel decoder"),
    Case("Dinov2Model", _build(T.Dinov2Model, T.Dinov2Config, seed=7), outputs=_hidden_pooled,
         bare_fields=dict(layer_norm_eps=1e-6)),
    Case("Dinov2Model SwiGLU", _build(T.Dinov2Model, T.Dinov2Config, use_swiglu_ffn=True), refused="SwiGLU"),
    Case("Dinov2ForImageClassification",
         _build(T.Dinov2ForImageClassification, T.Dinov2Config, num_labels=5), refused="mean patch token"),
    Case("Dinov2WithRegistersModel", _build(T.Dinov2WithRegistersModel, T.Dinov2WithRegistersConfig, seed=8,
                                            num_register_tokens=3), outputs=_hidden_pooled,
         bare_fields=dict(layer_norm_eps=1e-6)),
    Case("CLIPVisionModel", _build(T.CLIPVisionModel, T.CLIPVisionConfig, seed=10, hidden_act="gelu"),
         outputs=_pooled, bare_fields=dict(gelu="exact", layer_norm_eps=1e-5)),
    Case("CLIPVisionModelWithProjection",
         _build(T.CLIPVisionModelWithProjection, T.CLIPVisionConfig, seed=11, hidden_act="gelu", projection_dim=24),
         outputs=_clip_embeds, bare_fields=dict(gelu="exact", layer_norm_eps=1e-5)),
    Case("CLIPVisionModel quick GELU", _build(T.CLIPVisionModel, T.CLIPVisionConfig), refused="quick GELU"),
    Case("CLIPForImageClassification", _build_pair(T.CLIPForImageClassification, T.CLIPConfig, num_labels=5),
         refused="before CLIP's final norm"),
    Case("CLIPModel (image-text pair)", _build_pair(T.CLIPModel, T.CLIPConfig), refused="text tower"),
    Case("SiglipVisionModel", _build(T.SiglipVisionModel, T.SiglipVisionConfig, seed=12), outputs=_hidden_pooled),
    Case("SiglipVisionModel without head", _build(T.SiglipVisionModel, T.SiglipVisionConfig, seed=13,
                                                  vision_use_head=False), outputs=_hidden),
    Case("SiglipForImageClassification",
         _build_pair(T.SiglipForImageClassification, T.SiglipConfig, seed=14, num_labels=5), outputs=_logits),
    Case("SiglipModel (image-text pair)", _build_pair(T.SiglipModel, T.SiglipConfig), refused="text tower"),
    Case("IJepaModel", _build(T.IJepaModel, T.IJepaConfig, seed=15), outputs=_hidden),
    Case("IJepaForImageClassification", _build(T.IJepaForImageClassification, T.IJepaConfig, seed=16,
                                               num_labels=5), outputs=_logits),
    Case("BeitModel", _build(T.BeitModel, T.BeitConfig, use_relative_position_bias=True),
         refused="relative position bias"),
    Case("Data2VecVisionModel", _build(T.Data2VecVisionModel, T.Data2VecVisionConfig,
                                       use_relative_position_bias=True), refused="relative position bias"),
    Case("SwinModel", _build(T.SwinModel, T.SwinConfig, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=2,
                             hidden_size=None, num_hidden_layers=None, num_attention_heads=None,
                             intermediate_size=None, patch_size=4),
         refused=("shifted-window attention", "relative position bias")),
    Case("YolosModel (a model_type vitkit does not know)",
         _build(T.YolosModel, T.YolosConfig, num_detection_tokens=3, image_size=[32, 32]),
         refused=("is not one vitkit reads", "detection tokens")),
]
KINDS = ("exact", "refused by name", "silently different", "crashed")


def _save(case: Case, ref, root: Path) -> dict[str, Path]:
    """The three files people hold: a save_pretrained folder, its weights alone, the state dict in
    transformers 5's names alone."""
    root.mkdir(parents=True, exist_ok=True)
    ref.save_pretrained(root / "folder")
    (root / "bare4").mkdir()
    shutil.copy(root / "folder" / "model.safetensors", root / "bare4" / "model.safetensors")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, root / "state_dict.safetensors")
    return {"folder": root / "folder", "bare (published names)": root / "bare4" / "model.safetensors",
            "bare (transformers 5 names)": root / "state_dict.safetensors"}


def _classify(case: Case, ref, path: Path, bare: bool, x) -> tuple[str, str]:
    """(kind, detail) of loading one file of one case."""
    fields = {}
    if bare:
        fields = dict(num_heads=SMALL["num_attention_heads"], **case.bare_fields)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = vitkit.load(path, **fields)
        except CheckpointError as e:
            parts = (case.refused,) if isinstance(case.refused, str) else case.refused or ()
            if any(part in str(e) for part in parts):
                return "refused by name", str(e).split(": ", 1)[-1][:90]
            return "crashed", f"CheckpointError not naming the part: {e}"
        except Exception as e:  # noqa: BLE001 - any other exception is what this test counts
            return "crashed", f"{type(e).__name__}: {e}"
    announced = [str(w.message) for w in caught if issubclass(w.category, GuessWarning)]
    if case.refused:
        return "silently different", f"loaded although it has {case.refused}"
    if not bare and case.folder_warns and not any(case.folder_warns in m for m in announced):
        return "silently different", f"no warning about {case.folder_warns}"
    with torch.no_grad():
        theirs = case.outputs(ref, x)
        ours = _ours(model, x, list(theirs))
    errors = {name: rel_err(ours[name], theirs[name]) for name in theirs}
    if max(errors.values()) <= 1e-5:
        return "exact", ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
    return "silently different", ", ".join(f"{k} {v:.1e}" for k, v in errors.items())


def run_coverage(root: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for i, case in enumerate(CASES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = case.build()
            files = _save(case, ref, root / str(i))
        for how, path in files.items():
            kind, detail = _classify(case, ref, path, how != "folder", x)
            rows.append((case.name, how, kind, detail))
    return rows


@pytest.fixture(scope="module")
def coverage(tmp_path_factory):
    return run_coverage(tmp_path_factory.mktemp("hf_coverage"))


def test_no_hf_class_loads_silently_different_or_crashes(coverage):
    bad = [row for row in coverage if row[2] in ("silently different", "crashed")]
    assert not bad, "\n".join(" | ".join(row) for row in bad)


def test_hf_coverage_counts(coverage):
    counts = {kind: sum(row[2] == kind for row in coverage) for kind in KINDS}
    assert counts == {"exact": 54, "refused by name": 39, "silently different": 0, "crashed": 0}, counts


def test_every_class_vitkit_reads_is_exact_in_all_three_files(coverage):
    for case in CASES:
        kinds = {row[2] for row in coverage if row[0] == case.name}
        assert kinds == {"refused by name" if case.refused else "exact"}, (case.name, kinds)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        table = run_coverage(Path(tmp))
    print("| class | file | result | detail |\n|---|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    print(json.dumps({kind: sum(r[2] == kind for r in table) for kind in KINDS}))
