"""The original JAX model's checkpoints: exact parity with its outputs, both namings, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vitkit
from jax_reference import forward as jax_forward
from jax_reference import random_params

from conftest import rel_err

CASES = ["vit_token", "vit_gap_rep", "hybrid_r2", "vit_token_flaxlinen_names"]


def _logits(model, images_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(images_nhwc, dtype=np.float32)).permute(0, 3, 1, 2))


@pytest.mark.parametrize("name", CASES)
def test_fixture_logits_match_jax(jax_fixtures, name):
    case = name.replace("_flaxlinen_names", "")
    spec = json.loads((jax_fixtures / "cases.json").read_text())[case]
    io = np.load(jax_fixtures / f"{case}_io.npz")
    model = vitkit.load(jax_fixtures / f"{name}.npz")
    assert model.config.pool == spec["classifier"]
    assert model.config.width == spec["hidden"] and model.config.depth == spec["layers"]
    assert model.config.num_heads == spec["heads"] and model.config.mlp_dim == spec["mlp"]
    assert model.config.representation_size == spec["rep"]
    assert model.config.num_classes == spec["ncls"] and model.config.image_size == (spec["img"], spec["img"])
    assert model.config.gelu == "tanh"
    err = rel_err(_logits(model, io["images_nhwc"]), io["logits"])
    assert err <= 1e-5, f"{name}: relative error {err:.2e}"


def test_exact_gelu_would_not_match(jax_fixtures):
    """The bound is tight enough to catch the wrong GELU (about 2.5e-4 relative)."""
    io = np.load(jax_fixtures / "vit_token_io.npz")
    model = vitkit.load(jax_fixtures / "vit_token.npz")
    for block in model.blocks:
        block.mlp.act.approximate = "none"
    assert rel_err(_logits(model, io["images_nhwc"]), io["logits"]) > 1e-5


def test_posemb_interp_matches_scipy_zoom(jax_fixtures):
    data = np.load(jax_fixtures / "posemb_interp.npz")
    token = vitkit.resample_pos_embed(torch.from_numpy(data["token_in"]), (7, 7), num_prefix_tokens=1,
                                      method="bilinear")
    assert token.shape == data["token_out"].shape
    assert rel_err(token, data["token_out"]) <= 1e-5
    gap = vitkit.resample_pos_embed(torch.from_numpy(data["gap_in"]), (3, 3), num_prefix_tokens=0, method="bilinear")
    assert rel_err(gap, data["gap_out"]) <= 1e-5
    # bicubic is a different function: the test would notice a swapped method
    assert rel_err(vitkit.resample_pos_embed(torch.from_numpy(data["token_in"]), (7, 7), 1, method="bicubic"),
                   data["token_out"]) > 1e-4


def test_reference_implementation_agrees_with_jax(jax_fixtures):
    """The NumPy reference used below is itself checked against the JAX outputs."""
    for case in ("vit_token", "vit_gap_rep", "hybrid_r2"):
        io = np.load(jax_fixtures / f"{case}_io.npz")
        params = dict(np.load(jax_fixtures / f"{case}.npz"))
        assert rel_err(jax_forward(params, io["images_nhwc"]), io["logits"]) <= 1e-5


UNCOVERED = {
    "token_patch4_heads3_depth3": dict(patch=4, width=48, heads=3, depth=3, mlp=80, grid=(5, 5), classes=9),
    "gap_rep_one_head": dict(patch=2, width=24, heads=1, depth=1, mlp=24, grid=(4, 4), classes=3, token=False, rep=16),
    "token_rep_wide_heads": dict(patch=8, width=64, heads=8, depth=2, mlp=32, grid=(2, 2), classes=11, rep=40),
    "hybrid_root_only": dict(patch=2, width=32, heads=2, depth=1, mlp=64, grid=(2, 2), classes=4, resnet=((), 32)),
    "hybrid_three_stages_gap": dict(patch=1, width=32, heads=4, depth=1, mlp=32, grid=(2, 2), classes=5, token=False,
                                    resnet=((1, 1, 2), 32)),
}


@pytest.mark.parametrize("name", sorted(UNCOVERED))
def test_configurations_the_fixtures_do_not_cover(tmp_path, name):
    """The importer reads the architecture from the file: random configurations match the reference model."""
    spec = UNCOVERED[name]
    rng = np.random.default_rng(sorted(UNCOVERED).index(name))
    params = random_params(rng, **spec)
    stride = 1 if "resnet" not in spec else 4 * 2 ** max(len(spec["resnet"][0]) - 1, 0)
    side = spec["grid"][0] * spec["patch"] * stride
    images = rng.uniform(-1, 1, size=(2, side, side, 3)).astype(np.float32)
    path = tmp_path / f"{name}.npz"
    np.savez(path, **params)
    model = vitkit.load(path)
    assert model.config.num_heads == spec["heads"] and model.config.depth == spec["depth"]
    assert rel_err(_logits(model, images), jax_forward(params, images)) <= 1e-5


def test_prefix_and_groupnorm_shapes(tmp_path, jax_fixtures):
    """An `opt/target/` prefix and GroupNorm parameters stored as (1, 1, 1, C) or (C,) load the same."""
    params = dict(np.load(jax_fixtures / "hybrid_r2.npz"))
    io = np.load(jax_fixtures / "hybrid_r2_io.npz")
    flat = {k: (v.reshape(-1) if "/gn" in f"/{k}" else v) for k, v in params.items()}
    np.savez(tmp_path / "prefixed.npz", **{f"opt/target/{k}": v for k, v in flat.items()})
    model = vitkit.load(tmp_path / "prefixed.npz")
    assert rel_err(_logits(model, io["images_nhwc"]), io["logits"]) <= 1e-5


def test_round_trip_is_exact(tmp_path, jax_fixtures):
    model = vitkit.load(jax_fixtures / "hybrid_r2.npz")
    vitkit.save(model, tmp_path / "back.npz", format="google")
    again = vitkit.load(tmp_path / "back.npz")
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    original = dict(np.load(jax_fixtures / "hybrid_r2.npz"))
    written = dict(np.load(tmp_path / "back.npz"))
    assert original.keys() == written.keys()
    for key in original:
        np.testing.assert_array_equal(original[key].reshape(written[key].shape), written[key], err_msg=key)


def test_vitkit_model_round_trip_through_npz(tmp_path):
    """vitkit -> google npz -> vitkit keeps every tensor bit for bit (for a model the original can express)."""
    model = vitkit.create_model("ViT-Ti/16", num_classes=7, image_size=64, depth=2, gelu="tanh",
                                representation_size=32)
    from conftest import randomize_

    randomize_(model)
    vitkit.save(model, tmp_path / "m.npz", format="google")
    again = vitkit.load(tmp_path / "m.npz")
    assert again.config.representation_size == 32 and again.config.num_classes == 7
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), again(x))


def test_models_google_cannot_express_are_refused(tmp_path):
    model = vitkit.create_model("ViT-Ti/16", image_size=32, depth=1, posemb="sincos_2d")
    with pytest.raises(ValueError, match="posemb"):
        vitkit.save(model, tmp_path / "m.npz", format="google")
    assert not (tmp_path / "m.npz").exists()
