"""big_vision's ViT `.npz` files: exact against an independent NumPy statement of big_vision's equations (itself
anchored to the JAX fixtures), against vitkit models of known function written under big_vision's names, stacked
(scan) like unstacked; what the file does not record is announced or refused."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import vitkit
from big_vision_reference import forward as bv_forward
from big_vision_reference import posemb_sincos_2d, random_params, stack_blocks
from vitkit import CheckpointError, GuessWarning
from vitkit.models.posemb import sincos_2d

from conftest import randomize_, rel_err

FLAX_NAMES = {"LayerNorm_2": "LayerNorm_1", "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
              "MlpBlock_3": "MlpBlock_0"}


def _images(n, h, w=None, seed=0):
    return np.random.default_rng(seed).standard_normal((n, h, w or h, 3)).astype(np.float32)


def _logits(model, images_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


def _save(tmp_path, name, params):
    path = tmp_path / name
    np.savez(path, **params)
    return path


def _load(path, **fields):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GuessWarning)
        return vitkit.load(path, **fields)


def _renamed(params, posemb_key):
    out = {}
    for key, value in params.items():
        for old, new in FLAX_NAMES.items():
            key = key.replace(f"/{old}/", f"/{new}/")
        out[posemb_key if key == "Transformer/posembed_input/pos_embedding" else key] = value
    return out


# ------------------------------------------------------------------------------------ anchored to JAX's outputs
def test_the_reference_and_the_reader_match_jax_on_big_vision_names(jax_fixtures, tmp_path):
    """The fixtures' gap model is a big_vision gap model (positions over the patches only); their token model is a
    pre-2022 big_vision one (positions over the class token too). Renamed, both must give JAX's logits."""
    for case, posemb_key in (("vit_gap_rep", "pos_embedding"), ("vit_token", "Transformer/pos_embedding"),
                             ("vit_token", "pos_embedding")):
        params = _renamed(dict(np.load(jax_fixtures / f"{case}.npz")), posemb_key)
        io = np.load(jax_fixtures / f"{case}_io.npz")
        assert rel_err(bv_forward(params, io["images_nhwc"]), io["logits"]) <= 1e-5, case
        model = _load(_save(tmp_path, f"{case}.npz", params))
        assert model.config.gelu == "tanh" and model.config.layer_norm_eps == 1e-6
        assert model.config.class_token == (case == "vit_token")
        assert rel_err(_logits(model, io["images_nhwc"]), io["logits"]) <= 1e-5, (case, posemb_key)


def test_sincos_table_is_big_visions():
    for grid, width in (((3, 5), 64), ((37, 37), 1280), ((16, 16), 768)):
        ours = sincos_2d(grid, width).numpy()
        theirs = posemb_sincos_2d(*grid, width)[0]
        assert rel_err(ours, theirs) <= 1e-6, (grid, width)
    # rows and columns swapped would be another table: the check can tell
    assert rel_err(sincos_2d((5, 3), 64).numpy(), posemb_sincos_2d(3, 5, 64)[0]) > 1e-2


# --------------------------------------------------------------------------------- against the NumPy reference
CASES = {
    "tok_learn": dict(pool="tok", posemb="learn"),
    "gap_sincos": dict(pool="gap", posemb="sincos2d"),
    "map_learn": dict(pool="map", posemb="learn"),
    "gap_learn_rep": dict(pool="gap", posemb="learn", rep=24),
    "tok_sincos_scan": dict(pool="tok", posemb="sincos2d", scan=True),
    "map_sincos_scan": dict(pool="map", posemb="sincos2d", scan=True),
    "tok_old_posemb": dict(pool="tok", posemb="learn", old_posemb=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_the_reference(tmp_path, name):
    params = random_params(np.random.default_rng(len(name)), **CASES[name])
    path = _save(tmp_path, f"{name}.npz", params)
    model = _load(path, image_size=12)
    pool = {"tok": "token", "gap": "gap", "map": "map"}[CASES[name]["pool"]]
    assert model.config.pool == pool and model.config.num_heads == 2 and model.config.depth == 2
    assert model.config.posemb == ("learned" if CASES[name]["posemb"] == "learn" else "sincos_2d")
    images = _images(3, 12)
    err = rel_err(_logits(model, images), bv_forward(params, images))
    assert err <= 1e-5, f"{name}: {err:.2e}"


def test_scan_stacked_file_loads_to_the_same_logits(tmp_path):
    params = random_params(np.random.default_rng(7), pool="map", depth=3)
    plain = _load(_save(tmp_path, "plain.npz", params))
    stacked_params = stack_blocks(params)
    assert "Transformer/encoderblock/LayerNorm_0/scale" in stacked_params
    assert stacked_params["Transformer/encoderblock/LayerNorm_0/scale"].shape == (3, 32)
    stacked = _load(_save(tmp_path, "stacked.npz", stacked_params))
    images = _images(2, 12)
    assert np.array_equal(_logits(plain, images), _logits(stacked, images))
    assert rel_err(_logits(stacked, images), bv_forward(params, images)) <= 1e-5


def test_map_head_inlined_at_the_top_level(tmp_path):
    """MAP heads of ViT-G's development were not in a MAPHead_0 module (big_vision's fix_old_checkpoints)."""
    params = random_params(np.random.default_rng(4), pool="map")
    inlined = {k.removeprefix("MAPHead_0/"): v for k, v in params.items()}
    assert "probe" in inlined and "LayerNorm_0/scale" in inlined
    model = _load(_save(tmp_path, "inlined.npz", inlined))
    images = _images(2, 12)
    assert model.config.pool == "map"
    assert rel_err(_logits(model, images), bv_forward(params, images)) <= 1e-5


def test_training_checkpoint_params_subtree(tmp_path):
    """A big_vision training checkpoint: `params/...` beside the optimizer's state, which is not the model."""
    params = random_params(np.random.default_rng(3), pool="tok")
    full = {f"params/{k}": v for k, v in params.items()}
    full.update({f"opt/1/0/mu/{k}": np.zeros_like(v) for k, v in params.items()})
    model = _load(_save(tmp_path, "ckpt.npz", full))
    images = _images(2, 12)
    assert rel_err(_logits(model, images), bv_forward(params, images)) <= 1e-5


# ----------------------------------------------------------------- vitkit models of known function, written out
def _to_big_vision(model) -> dict[str, np.ndarray]:
    """A vitkit model's parameters under big_vision's names (test-side writer)."""
    c, sd = model.config, {k: v.detach().numpy() for k, v in model.state_dict().items()}
    D, H, hd = c.width, c.num_heads, c.width // c.num_heads
    p = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
         "embedding/bias": sd["patch_embed.proj.bias"]}
    if c.posemb == "learned":
        p["pos_embedding"] = sd["pos_embed"]
    if c.class_token:
        p["cls"] = sd["cls_token"]

    def attention(prefix, q, k, v, qb, kb, vb, out, out_b):
        for part, w, b in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            p[f"{prefix}/{part}/kernel"], p[f"{prefix}/{part}/bias"] = w.T.reshape(D, H, hd), b.reshape(H, hd)
        p[prefix + "/out/kernel"], p[prefix + "/out/bias"] = out.T.reshape(H, hd, D), out_b

    def dense(prefix, name):
        p[prefix + "/kernel"], p[prefix + "/bias"] = sd[name + ".weight"].T, sd[name + ".bias"]

    def norm(prefix, name):
        p[prefix + "/scale"], p[prefix + "/bias"] = sd[name + ".weight"], sd[name + ".bias"]

    for i in range(c.depth):
        b, n = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        w, bias = sd[n + "attn.qkv.weight"], sd[n + "attn.qkv.bias"]
        norm(b + "LayerNorm_0", n + "norm1")
        attention(b + "MultiHeadDotProductAttention_0", w[:D], w[D:2 * D], w[2 * D:], bias[:D], bias[D:2 * D],
                  bias[2 * D:], sd[n + "attn.proj.weight"], sd[n + "attn.proj.bias"])
        norm(b + "LayerNorm_1", n + "norm2")
        dense(b + "MlpBlock_0/Dense_0", n + "mlp.fc1")
        dense(b + "MlpBlock_0/Dense_1", n + "mlp.fc2")
    norm("Transformer/encoder_norm", "norm")
    if c.pool == "map":
        a = "attn_pool."
        p["MAPHead_0/probe"] = sd[a + "latent"]
        kv, kv_b = sd[a + "kv.weight"], sd[a + "kv.bias"]
        attention("MAPHead_0/MultiHeadDotProductAttention_0", sd[a + "q.weight"], kv[:D], kv[D:], sd[a + "q.bias"],
                  kv_b[:D], kv_b[D:], sd[a + "proj.weight"], sd[a + "proj.bias"])
        norm("MAPHead_0/LayerNorm_0", a + "norm")
        dense("MAPHead_0/MlpBlock_0/Dense_0", a + "mlp.fc1")
        dense("MAPHead_0/MlpBlock_0/Dense_1", a + "mlp.fc2")
    dense("head", "head")
    return p


@pytest.mark.parametrize("options", [dict(pool="gap", posemb="sincos_2d"),
                                     dict(pool="token", posemb="learned", posemb_prefix=False),
                                     dict(pool="map", posemb="learned")], ids=["gap_sincos", "token", "map"])
def test_vitkit_models_written_under_big_vision_names(tmp_path, options):
    model = randomize_(vitkit.create_model("ViT-Ti/16", image_size=(16, 24), patch_size=8, width=48, depth=2,
                                           num_heads=3, mlp_dim=96, num_classes=4, gelu="tanh", **options), seed=11)
    model.eval()
    path = _save(tmp_path, "model.npz", _to_big_vision(model))
    loaded = _load(path, image_size=(16, 24))
    assert loaded.config.pool == options["pool"] and loaded.config.posemb == options["posemb"]
    images = _images(2, 16, 24)
    assert rel_err(_logits(loaded, images), _logits(model, images)) <= 1e-5
    params = dict(np.load(path))
    assert rel_err(bv_forward(params, images), _logits(model, images)) <= 1e-5  # the reference agrees too
    if options["pool"] == "map":  # the original release has no MAP head: writing one there would drop it
        with pytest.raises(ValueError, match="pool='map'"):
            vitkit.save(loaded, tmp_path / "original.npz", format="google")


# ------------------------------------------------------------------------------------------- the loading rule
def test_sincos_file_image_size_and_gap_pool_are_announced(tmp_path):
    params = random_params(np.random.default_rng(5), patch=16, pool="gap", posemb="sincos2d", depth=1)
    path = _save(tmp_path, "sincos.npz", params)
    with pytest.warns(GuessWarning, match=r"image_size=\(224, 224\).*pool='gap'.*Pass image_size=, pool="):
        model = vitkit.load(path)
    images = _images(1, 224)
    assert rel_err(_logits(model, images), bv_forward(params, images)) <= 1e-5
    # the sin-cos function is the same at every size: the size given only sets the expected input
    small = _load(path, image_size=48)
    images = _images(2, 48)
    assert small.config.image_size == (48, 48)
    assert rel_err(_logits(small, images), bv_forward(params, images)) <= 1e-5
    with pytest.raises(CheckpointError, match="records posemb='sincos_2d'; posemb='learned' contradicts it"):
        vitkit.load(path, posemb="learned")
    with pytest.raises(CheckpointError, match="needs a class token or a MAP head"):
        vitkit.load(path, pool="token")
    with pytest.raises(CheckpointError, match="records gelu='tanh'"):
        vitkit.load(path, gelu="exact")


def test_class_token_file_records_everything(tmp_path):
    path = _save(tmp_path, "tok.npz", random_params(np.random.default_rng(6), pool="tok"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GuessWarning)
        model = vitkit.load(path)
    assert model.config.pool == "token" and not model.config.posemb_prefix
    with pytest.raises(CheckpointError, match="records num_heads=2"):
        vitkit.load(path, num_heads=4)


def test_non_square_grid_needs_image_size(tmp_path):
    params = random_params(np.random.default_rng(8), pool="tok", grid=(2, 3))
    path = _save(tmp_path, "rect.npz", params)
    with pytest.raises(CheckpointError, match=r"6 position embeddings form no square grid.*image_size=\(H, W\)"):
        vitkit.load(path)
    model = _load(path, image_size=(8, 12))
    images = _images(2, 8, 12)
    assert rel_err(_logits(model, images), bv_forward(params, images)) <= 1e-5
    with pytest.raises(CheckpointError, match=r"do not fit image_size=\(12, 12\)"):
        vitkit.load(path, image_size=12)


# ------------------------------------------------------------------------------------------------- bad files
def test_bad_files_name_the_key(tmp_path):
    rng = np.random.default_rng(9)
    stacked = random_params(rng, pool="map", scan=True)
    bad = dict(stacked)
    bad["Transformer/encoderblock/LayerNorm_1/scale"] = bad["Transformer/encoderblock/LayerNorm_1/scale"][:1]
    with pytest.raises(CheckpointError, match="leading depth axis of 2") as info:
        vitkit.load(_save(tmp_path, "depth.npz", bad))
    assert info.value.key == "Transformer/encoderblock/LayerNorm_1/scale"
    bad = dict(stacked)
    bad["Transformer/encoderblock/LayerNorm_1/scale"] = np.ones((2, 33), np.float32)
    with pytest.raises(CheckpointError, match=r"expected shape \(32,\), found \(33,\)") as info:
        vitkit.load(_save(tmp_path, "width.npz", bad))
    assert info.value.key == "Transformer/encoderblock/LayerNorm_1/scale[0]"
    plain = random_params(rng, pool="map")
    bad = dict(plain)
    bad["MAPHead_0/MultiHeadDotProductAttention_0/query/kernel"] = np.ones((32, 4, 8), np.float32)
    with pytest.raises(CheckpointError, match="the blocks' 2 heads") as info:
        vitkit.load(_save(tmp_path, "mapheads.npz", bad))
    assert info.value.key == "MAPHead_0/MultiHeadDotProductAttention_0/query/kernel"
    bad = {k: v for k, v in plain.items() if k != "MAPHead_0/LayerNorm_0/bias"}
    with pytest.raises(CheckpointError, match="missing tensor") as info:
        vitkit.load(_save(tmp_path, "missing.npz", bad))
    assert info.value.key == "MAPHead_0/LayerNorm_0/bias"
    with pytest.raises(CheckpointError, match="unexpected tensor") as info:
        vitkit.load(_save(tmp_path, "extra.npz", {**plain, "MAPHead_0/extra": np.ones(3, np.float32)}))
    assert info.value.key == "MAPHead_0/extra"


def test_two_tower_files_are_refused_by_name(tmp_path):
    params = random_params(np.random.default_rng(10), pool="map")
    towers = {f"img/{k}": v for k, v in params.items()}
    towers["txt/Embed_0/embedding"] = np.ones((10, 32), np.float32)
    with pytest.raises(CheckpointError, match="unsupported big_vision model: a two-tower"):
        vitkit.load(_save(tmp_path, "siglip.npz", {f"params/{k}": v for k, v in towers.items()}))


def test_original_release_files_still_read_as_before(jax_fixtures):
    spec = json.loads((jax_fixtures / "cases.json").read_text())["vit_token"]
    model = vitkit.load(jax_fixtures / "vit_token.npz")
    assert model.config.posemb_prefix and model.config.num_heads == spec["heads"]


def test_every_array_of_a_wrong_rank_is_a_checkpoint_error(tmp_path):
    params = random_params(np.random.default_rng(12), pool="map", depth=1, rep=4)
    path = tmp_path / "rank.npz"
    for key in params:
        for value in (np.float32(1.0), np.zeros((2, 2, 2, 2, 2), np.float32)):
            np.savez(path, **{**params, key: np.asarray(value)})
            with pytest.raises(CheckpointError) as info:
                vitkit.load(path)
            assert info.value.key is not None, key
