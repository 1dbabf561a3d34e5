"""timm's ViT zoo: every architecture loads exactly or is refused by name, as a hub folder and as a bare state
dict (tests/timm_coverage.py does the work); the architecture table matches the installed timm; hub folders."""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import vitkit
from vitkit.checkpoints.timm import timm_architectures
from vitkit.errors import CheckpointError, GuessWarning

import timm_coverage
from conftest import REPO, rel_err


def test_every_timm_vit_up_to_150m_parameters_loads_exactly_or_is_refused_by_name(tmp_path):
    results = timm_coverage.run(tmp_path)
    counts = timm_coverage.counts(results)
    print({kind: dict(c) for kind, c in counts.items()})
    table = timm_architectures()
    for name, (outcome, detail) in results["hub"].items():
        expected = "refused (named)" if table[name]["unsupported"] else "exact"
        assert outcome == expected, f"hub folder of {name}: {outcome}: {detail}"
    for name, (outcome, detail) in results["bare"].items():
        # without a config a file may be refused as ambiguous (it lists the keyword), or load with announced guesses
        assert outcome in ("exact", "refused (named)", "refused (ambiguous)", "guessed"), \
            f"bare state dict of {name}: {outcome}: {detail}"
    assert len(results["hub"]) >= 130 and counts["hub"]["exact"] >= 80
    assert counts["bare"]["silent"] == counts["bare"]["crashed"] == 0


def test_architecture_table_matches_the_installed_timm():
    spec = importlib.util.spec_from_file_location("timm_architectures", REPO / "tools" / "timm_architectures.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    derived = tool.derive()
    assert derived == timm_architectures(), "rerun python tools/timm_architectures.py"


def test_the_table_knows_what_tensors_cannot_show():
    t = timm_architectures()
    assert t["vit_base_patch16_gap_224"]["num_heads"] == 16  # not the variant table's 12 for width 768
    assert t["vit_base_patch32_siglip_256"]["act"] == "gelu_tanh" and t["vit_base_patch16_siglip_224"]["act"] == "gelu"
    assert t["vit_base_patch16_clip_224"]["eps"] == 1e-5
    assert t["vit_base_patch16_rpn_224"]["unsupported"] == ["residual post-norm blocks"]
    assert t["vit_base_patch16_clip_quickgelu_224"]["unsupported"] == ["QuickGELU activation"]
    assert t["vit_small_patch16_18x2_224"]["unsupported"] == ["parallel blocks"]
    assert t["deit_tiny_distilled_patch16_224"]["dist_token"] and not t["deit_tiny_distilled_patch16_224"]["unsupported"]


def _gap_224(tmp_path):
    model, args = timm_coverage.build("vit_base_patch16_gap_224")
    timm_coverage.write_hub(model, "vit_base_patch16_gap_224", args, tmp_path / "hub")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "bare.safetensors")
    return model, torch.randn(1, 3, *args["img_size"])


def test_gap_224_heads_are_announced_in_a_bare_file_and_settled_by_a_hub_folder(tmp_path):
    """The issue's first case: 16 heads at width 768, which the variant table would guess as 12."""
    ref, x = _gap_224(tmp_path)
    with pytest.warns(GuessWarning, match=r"num_heads=12 \(the variant table's for width 768\)"):
        guessed = vitkit.load(tmp_path / "bare.safetensors")
    with torch.no_grad():
        assert rel_err(guessed(x), ref(x)) > 1e-3  # the announced guess is wrong, as announced
        assert rel_err(vitkit.load(tmp_path / "bare.safetensors", num_heads=16)(x), ref(x)) <= 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error", GuessWarning)
        model = vitkit.load(tmp_path / "hub")
    assert model.config.num_heads == 16
    assert model.preprocessing.mean == (0.485, 0.456, 0.406) and model.preprocessing.crop_pct == 0.9
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) <= 1e-5
    with pytest.raises(CheckpointError, match="num_heads=12 contradicts"):
        vitkit.load(tmp_path / "hub", num_heads=12)


def _edit_config(folder: Path, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_hub_folder_errors_name_the_problem(tmp_path):
    ref, _ = _gap_224(tmp_path)
    hub = tmp_path / "hub"
    _edit_config(hub, architecture="vit_base_patch16_rpn_224")
    with pytest.raises(CheckpointError, match="residual post-norm blocks"):
        vitkit.load(hub)
    _edit_config(hub, architecture="vit_nonesuch_patch16_224")
    with pytest.raises(CheckpointError, match="unknown timm architecture 'vit_nonesuch_patch16_224'"):
        vitkit.load(hub)
    _edit_config(hub, architecture="vit_base_patch16_gap_224",
                 model_args={"depth": 1, "img_size": [64, 64], "num_classes": 10, "block_fn": "Block"})
    with pytest.raises(CheckpointError, match=r"model_args\['block_fn'\]"):
        vitkit.load(hub)
    _edit_config(hub, model_args={"depth": 1, "img_size": [64, 64], "num_classes": 10, "act_layer": "quick_gelu"})
    with pytest.raises(CheckpointError, match="QuickGELU activation"):
        vitkit.load(hub)
    _edit_config(hub, architecture="vit_base_patch16_224", model_args={"depth": 1, "img_size": [64, 64],
                                                                       "num_classes": 10})
    with pytest.raises(CheckpointError, match="class_token=True; the tensors have class_token=False"):
        vitkit.load(hub)


def test_hub_model_args_change_the_architecture(tmp_path):
    """model_args as timm.create_model takes them: here tanh GELU and 4 heads on an architecture with exact GELU."""
    import timm

    from conftest import randomize_

    args = {"depth": 1, "img_size": [32, 32], "num_classes": 10, "num_heads": 4, "act_layer": "gelu_tanh"}
    ref = randomize_(timm.create_model("vit_small_patch16_224", **args)).eval()
    timm_coverage.write_hub(ref, "vit_small_patch16_224", args, tmp_path / "hub")
    model = vitkit.load(tmp_path / "hub")
    assert (model.config.num_heads, model.config.gelu) == (4, "tanh")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) <= 1e-5


def test_coverage_counts_are_reported(tmp_path):
    """A small, fixed slice of the sweep: the counts it reports are the outcomes it found."""
    names = ["deit_tiny_distilled_patch16_224", "vit_base_patch16_rpn_224", "vit_so150m2_patch16_reg1_gap_256"]
    results = timm_coverage.run(tmp_path, names)
    assert {n: o for n, (o, _) in results["hub"].items()} == {
        "deit_tiny_distilled_patch16_224": "exact", "vit_base_patch16_rpn_224": "refused (named)",
        "vit_so150m2_patch16_reg1_gap_256": "exact"}  # a register with a position slot, folded into the register
    assert timm_coverage.counts(results)["hub"] == Counter({"exact": 2, "refused (named)": 1})
    assert results["bare"]["vit_base_patch16_rpn_224"][0] == "guessed"  # same tensors as pre-norm: announced
    assert results["bare"]["vit_so150m2_patch16_reg1_gap_256"][0] == "refused (ambiguous)"  # width 832: pass heads
