"""The numbers behind `vitkit inspect`, against hand-computed ones.

A tiny model whose attention is set by construction: the patch embedding is zero, so every token is its position
embedding, chosen as rows of an 8x8 Hadamard matrix (zero mean, unit variance, so LayerNorm leaves them alone,
and orthogonal); the attention output and MLP output projections are zero, so the tokens never change; and each
layer's key projection is built so that the attention logits of token i to token j are exactly L[i, j], a matrix the
test picks. Then every layer's attention is softmax(L) and rollout, distances and class-token maps follow by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import hadamard

import vitkit
from vitkit.configs import ResNetConfig
from vitkit.errors import UsageError
from vitkit.inspect import (attention_distance, attention_rollout, capture_attention, class_token_attention,
                            cosine_similarity_grid, filter_components, load_images, mean_attention_distance,
                            patch_centres, position_embedding_similarity, principal_components, rollout)

WIDTH = 8  # one head of width 8; 2x2 patches of 4x4 pixels on an 8x8 image; 5 tokens with the class token


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forced_attention_model(logits_per_layer: list[np.ndarray], pool: str = "token") -> vitkit.VisionTransformer:
    """A model whose layer l attends with softmax(logits_per_layer[l]) whatever the input."""
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=8, patch_size=4, width=WIDTH,
                                depth=len(logits_per_layer), num_heads=1, mlp_dim=16, pool=pool)
    prefix = model.num_prefix_tokens
    tokens = torch.tensor(hadamard(WIDTH)[1:1 + prefix + 4], dtype=torch.float32)  # (N, 8), +-1, zero mean
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        if model.cls_token is not None:
            model.cls_token.zero_()
        model.pos_embed.copy_(tokens[None])
        for block, logits in zip(model.blocks, logits_per_layer):
            logits = torch.tensor(logits, dtype=torch.float32)
            # score(i, j) = (W_q v_i) . (W_k v_j) / sqrt(8) with W_q = I and W_k = sqrt(8)/64 * sum_ab L_ab v_a v_b^T
            key = math.sqrt(WIDTH) / WIDTH**2 * tokens.T @ logits @ tokens
            qkv = torch.zeros(3 * WIDTH, WIDTH)
            qkv[:WIDTH] = torch.eye(WIDTH)
            qkv[WIDTH:2 * WIDTH] = key
            block.attn.qkv.weight.copy_(qkv)
            block.attn.qkv.bias.zero_()
            block.attn.proj.weight.zero_()
            block.attn.proj.bias.zero_()
            block.mlp.fc2.weight.zero_()
            block.mlp.fc2.bias.zero_()
    return model.eval()


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------------- rollout
def test_rollout_of_given_matrices_by_hand():
    # layer 1: [[1, 0], [.5, .5]] + I = [[2, 0], [.5, 1.5]] -> rows [1, 0], [.25, .75]
    # layer 2: [[0, 1], [1, 0]] + I -> every row [.5, .5]
    # rollout = layer2' @ layer1' = every row [.5 + .125, .375] = [.625, .375]
    first = np.array([[1.0, 0.0], [0.5, 0.5]])
    second = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(rollout([first, second]), [[0.625, 0.375], [0.625, 0.375]], atol=1e-7)
    # the order matters: layer1' @ layer2' = [[.5, .5], [.5, .5]]
    np.testing.assert_allclose(rollout([second, first]), [[0.5, 0.5], [0.5, 0.5]], atol=1e-7)


def test_rollout_averages_heads_before_adding_the_identity():
    heads = np.stack([np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]])])  # (heads, N, N): mean is all 0.5
    # mean + I = [[1.5, .5], [.5, 1.5]] -> rows [.75, .25]
    np.testing.assert_allclose(rollout([heads]), [[0.75, 0.25], [0.25, 0.75]], atol=1e-7)
    # max fusion: [[1, 1], [1, 1]] + I -> [[2/3, 1/3], [1/3, 2/3]]
    np.testing.assert_allclose(rollout([heads], head_fusion="max"), [[2 / 3, 1 / 3], [1 / 3, 2 / 3]], atol=1e-7)
    batched = rollout([np.stack([heads, heads])])  # (B, heads, N, N) -> (B, N, N)
    assert batched.shape == (2, 2, 2)


def test_attention_of_the_constructed_model_is_softmax_of_the_chosen_logits():
    rng = np.random.default_rng(1)
    logits = [rng.normal(scale=2.0, size=(5, 5)) for _ in range(2)]
    model = forced_attention_model(logits)
    with capture_attention(model) as captured:
        model(images())
    for layer in range(2):
        weights = captured[layer][0]  # (B, heads, N, N)
        assert weights.shape == (2, 1, 5, 5)
        np.testing.assert_allclose(weights[0, 0].numpy(), softmax(logits[layer]), atol=1e-5)
        np.testing.assert_allclose(weights[1, 0].numpy(), softmax(logits[layer]), atol=1e-5)


def test_attention_rollout_of_a_model_with_attention_set_by_construction():
    rng = np.random.default_rng(2)
    logits = [rng.normal(scale=2.0, size=(5, 5)) for _ in range(3)]
    model = forced_attention_model(logits)
    expected = np.eye(5)
    for layer_logits in logits:
        expected = (softmax(layer_logits) + np.eye(5)) / 2 @ expected  # rows of softmax sum to 1: renorm halves
    want = expected[0, 1:].reshape(2, 2)  # class token's row, the 4 patches in row-major order
    got = attention_rollout(model, images(), normalize=False)
    assert got.shape == (2, 2, 2)
    np.testing.assert_allclose(got[0], want, atol=1e-5)
    np.testing.assert_allclose(got[1], want, atol=1e-5)
    normalized = attention_rollout(model, images())
    np.testing.assert_allclose(normalized[0], want / want.max(), atol=1e-5)


def test_attention_rollout_without_a_class_token_uses_the_mean_patch_row():
    rng = np.random.default_rng(3)
    logits = [rng.normal(scale=2.0, size=(4, 4)) for _ in range(2)]
    model = forced_attention_model(logits, pool="gap")
    assert model.num_prefix_tokens == 0
    expected = np.eye(4)
    for layer_logits in logits:
        expected = (softmax(layer_logits) + np.eye(4)) / 2 @ expected
    got = attention_rollout(model, images(1), normalize=False)
    np.testing.assert_allclose(got[0], expected.mean(axis=0).reshape(2, 2), atol=1e-5)


def test_uniform_attention_rolls_out_in_closed_form():
    # A = J / N each layer: (A + I) / 2 to the L-th power = 2^-L I + (1 - 2^-L) J / N
    depth, n = 3, 5
    model = forced_attention_model([np.zeros((n, n))] * depth)
    got = attention_rollout(model, images(1), normalize=False)[0]
    np.testing.assert_allclose(got, np.full((2, 2), (1 - 0.5**depth) / n), atol=1e-6)


def test_class_token_attention_per_layer_and_head():
    rng = np.random.default_rng(4)
    logits = [rng.normal(scale=2.0, size=(5, 5)) for _ in range(3)]
    model = forced_attention_model(logits)
    maps = class_token_attention(model, images())
    assert maps.shape == (2, 3, 1, 2, 2)  # (B, layers, heads, gh, gw)
    for layer in range(3):
        np.testing.assert_allclose(maps[1, layer, 0], softmax(logits[layer])[0, 1:].reshape(2, 2), atol=1e-5)
    only_last = class_token_attention(model, images(), layers=[-1])
    assert only_last.shape == (2, 1, 1, 2, 2)
    np.testing.assert_allclose(only_last[0, 0], maps[0, 2], atol=1e-7)


def test_capture_turns_on_only_the_asked_layers_and_restores_them():
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=16, patch_size=4, width=16, depth=3,
                                num_heads=2, mlp_dim=32).eval()
    x = torch.randn(2, 3, 16, 16)
    plain = model(x)
    layers = model.attention_layers()
    seen = []
    with capture_attention(model, layers=[1], reduce=lambda i, w: w.shape) as captured:
        seen = [layer.keep_weights for layer in layers]
        captured_logits = model(x)
        held = [layer.last_weights for layer in layers]
    assert seen == [False, True, False]  # the other layers keep the fused fast path
    assert held == [None, None, None]  # the reducer took the weights; no layer holds them
    assert list(captured) == [1] and captured[1] == [torch.Size([2, 2, 17, 17])]
    assert [layer.keep_weights for layer in layers] == [False, False, False]
    torch.testing.assert_close(captured_logits, plain, rtol=1e-5, atol=1e-6)
    with pytest.raises(UsageError, match="layer 3"):
        with capture_attention(model, layers=[3]):
            pass
    # a failing forward still restores the flags
    with pytest.raises(ValueError):
        with capture_attention(model, layers=[0, 2]):
            model(torch.randn(1, 3, 12, 12))
    assert [layer.keep_weights for layer in layers] == [False, False, False]


# -------------------------------------------------------------------------------------------- attention distance
def offset_attention(grid, dy, dx):
    """Each patch attends to the patch (dy, dx) away, reflected back inside the grid at the edges, so that every
    query's key is exactly |(dy, dx)| patches away."""
    gh, gw = grid
    n = gh * gw
    weights = np.zeros((n, n))
    for r in range(gh):
        for c in range(gw):
            rr = r + dy if 0 <= r + dy < gh else r - dy
            cc = c + dx if 0 <= c + dx < gw else c - dx
            weights[r * gw + c, rr * gw + cc] = 1.0
    return weights


def test_patch_centres_are_row_major_in_pixels():
    np.testing.assert_allclose(patch_centres((2, 3), (8, 16)), [[4, 8], [4, 24], [4, 40], [12, 8], [12, 24],
                                                                [12, 40]])


def test_attention_distance_identity_uniform_and_fixed_offsets():
    grid, patch = (3, 4), (8, 16)  # 8 px tall, 16 px wide patches
    n = 12
    identity = np.eye(n)
    right = offset_attention(grid, 0, 1)  # one patch sideways: 16 px
    down = offset_attention(grid, 1, 0)  # one patch down: 8 px
    diagonal = offset_attention(grid, 1, 1)  # sqrt(8^2 + 16^2) px
    weights = np.stack([identity, right, down, diagonal])[None]  # (1, heads=4, N, N)
    got = attention_distance(weights, grid, patch)
    np.testing.assert_allclose(got, [[0.0, 16.0, 8.0, math.hypot(8, 16)]], atol=1e-9)
    # uniform on a 2x2 grid of 16 px patches: from every query 0, 16, 16 and 16 sqrt(2) -> 8 + 4 sqrt(2)
    uniform = np.full((1, 1, 4, 4), 0.25)
    np.testing.assert_allclose(attention_distance(uniform, (2, 2), 16), [[8 + 4 * math.sqrt(2)]], atol=1e-9)


def test_attention_distance_leaves_the_class_token_out():
    grid = (2, 2)
    weights = np.zeros((1, 1, 5, 5))
    weights[0, 0, 0, :] = 0.2  # the class token's own row does not count
    weights[0, 0, 1:, 0] = 0.5  # half of every patch query's weight on the class token ...
    weights[0, 0, 1:, 1:] = 0.5 * offset_attention(grid, 0, 1)  # ... and half on the patch next to it
    np.testing.assert_allclose(attention_distance(weights, grid, 16, num_prefix_tokens=1), [[16.0]], atol=1e-9)
    with pytest.raises(ValueError, match="prefix"):
        attention_distance(weights, grid, 16)


def test_mean_attention_distance_of_a_model_with_attention_set_by_construction():
    big = 40.0  # softmax of 40 against 0 is 1 to 1e-17
    grid = (2, 2)
    sideways = np.zeros((5, 5))
    sideways[1:, 1:] = big * offset_attention(grid, 0, 1)
    sideways[0, 0] = big
    logits = [big * np.eye(5), np.zeros((5, 5)), sideways]  # identity, uniform, one patch sideways
    model = forced_attention_model(logits)
    got = mean_attention_distance(model, images(3))  # (layers, heads), 4 px patches
    np.testing.assert_allclose(got, [[0.0], [2 + math.sqrt(2)], [4.0]], atol=1e-6)
    # an iterable of batches, (images, labels) pairs too, averages over all images
    batches = [(images(2), None), (images(1), None)]
    np.testing.assert_allclose(mean_attention_distance(model, batches, layers=[2]), [[4.0]], atol=1e-6)


def test_mean_attention_distance_per_head_on_a_real_model_is_bounded():
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=16, patch_size=4, width=16, depth=2,
                                num_heads=2, mlp_dim=32)
    got = mean_attention_distance(model, torch.randn(2, 3, 16, 16))
    assert got.shape == (2, 2)
    assert np.all(got > 0) and np.all(got < math.hypot(12, 12))  # within the largest centre-to-centre distance


# ------------------------------------------------------------------------------------------- position embeddings
def test_cosine_similarity_of_hand_set_embeddings():
    # positions (0,0)=[1,0], (0,1)=[0,1], (1,0)=[1,1], (1,1)=[-2,0]
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-2.0, 0.0]])
    sim = cosine_similarity_grid(embeddings, (2, 2))
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(sim[0, 0], [[1, 0], [s, -1]], atol=1e-12)
    np.testing.assert_allclose(sim[1, 0], [[s, s], [1, -s]], atol=1e-12)
    np.testing.assert_allclose(sim[1, 1], [[-1, 0], [-s, 1]], atol=1e-12)


def test_position_embedding_similarity_skips_the_class_token_slot():
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=8, patch_size=4, width=2, depth=1,
                                num_heads=1, mlp_dim=4)
    with torch.no_grad():
        model.pos_embed.copy_(torch.tensor([[[5.0, 5.0], [1, 0], [0, 1], [1, 1], [-2, 0]]]))
    sim = position_embedding_similarity(model)
    assert sim.shape == (2, 2, 2, 2)
    np.testing.assert_allclose(sim[0, 0], [[1, 0], [1 / math.sqrt(2), -1]], atol=1e-7)


def test_position_embedding_similarity_of_learned_2d_and_fixed_embeddings():
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=8, patch_size=4, width=2, depth=1,
                                num_heads=1, mlp_dim=4, posemb="learned_2d")
    with torch.no_grad():
        model.pos_embed_row.copy_(torch.tensor([[1.0], [-1.0]]))  # first half of each embedding: the row's
        model.pos_embed_col.copy_(torch.tensor([[1.0], [1.0]]))  # second half: the column's
    sim = position_embedding_similarity(model)  # (0, c) -> [1, 1], (1, c) -> [-1, 1]: orthogonal rows
    np.testing.assert_allclose(sim[0, 0], [[1, 1], [0, 0]], atol=1e-7)
    fixed = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=16, patch_size=4, width=16, depth=1,
                                num_heads=1, mlp_dim=4, posemb="sincos_2d")
    sim = position_embedding_similarity(fixed).reshape(16, 16)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-7)
    np.testing.assert_allclose(sim, sim.T, atol=1e-7)
    none = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=8, patch_size=4, width=8, depth=1,
                               num_heads=1, mlp_dim=4, posemb="none", pool="gap")
    with pytest.raises(UsageError, match="no position embeddings"):
        position_embedding_similarity(none)


# ------------------------------------------------------------------------------------------------------ filters
def test_principal_components_of_filters_with_known_structure():
    u = np.array([1.0, 1.0, 0.0, 0.0]) / math.sqrt(2)
    v = np.array([0.0, 0.0, 1.0, -1.0]) / math.sqrt(2)
    a = np.array([2.0, -2.0, 2.0, -2.0])  # variance 4 along u
    b = np.array([1.0, 1.0, -1.0, -1.0])  # variance 1 along v, uncorrelated with a
    vectors = a[:, None] * u + b[:, None] * v + 3.0  # a common offset that centring removes
    components, explained = principal_components(vectors, 3)
    assert components.shape == (3, 4)  # 3 asked, of at most min(M, K) = 4
    np.testing.assert_allclose(components[0], u, atol=1e-9)  # sign: largest entry positive
    np.testing.assert_allclose(components[1], -v, atol=1e-9)  # -v: its largest |entry| is the +1/sqrt(2) one
    np.testing.assert_allclose(explained, [0.8, 0.2, 0.0], atol=1e-9)  # 16 : 4 : 0 (rank 2 after centring)
    assert len(principal_components(vectors, 10)[0]) == 4


def test_filter_components_of_a_model_and_hybrids_refused():
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=8, patch_size=4, width=8, depth=1,
                                num_heads=1, mlp_dim=4)
    pattern = torch.zeros(3, 4, 4)
    pattern[0, :2] = 1.0  # red on the top half
    with torch.no_grad():
        scale = torch.tensor([3.0, -3.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5])
        model.patch_embed.proj.weight.copy_(scale[:, None, None, None] * pattern)
    components, explained = filter_components(model, 28)
    assert components.shape[1:] == (3, 4, 4) and len(components) <= 8
    np.testing.assert_allclose(components[0], pattern.numpy() / pattern.norm().item(), atol=1e-6)
    assert explained[0] == pytest.approx(1.0)
    hybrid = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=32, patch_size=2, width=8, depth=1,
                                 num_heads=1, mlp_dim=4, resnet=ResNetConfig(num_layers=()))
    with pytest.raises(UsageError, match="hybrid"):
        filter_components(hybrid)


# ------------------------------------------------------------------------------------------------------- images
def test_load_images_resizes_and_normalises_as_the_model_says(tmp_path):
    from PIL import Image

    Image.new("RGB", (30, 20), (255, 0, 51)).save(tmp_path / "a.png")
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=8, patch_size=4, width=8, depth=1,
                                num_heads=1, mlp_dim=4)
    batch, pixels = load_images([tmp_path / "a.png"], model)
    assert batch.shape == (1, 3, 8, 8) and pixels.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(batch[0, :, 3, 3].numpy(), [1.0, -1.0, (0.2 - 0.5) / 0.5], atol=1e-6)
    with pytest.raises(FileNotFoundError):
        load_images([tmp_path / "missing.png"], model)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UsageError, match="cannot read"):
        load_images([tmp_path / "bad.png"], model)


def uniform_attention_(model):
    """Zero query and key projections: every score is 0, so every token attends uniformly to all tokens."""
    with torch.no_grad():
        for layer in model.attention_layers():
            layer.qkv.weight[:2 * layer.qkv.in_features].zero_()
            layer.qkv.bias.zero_()
    return model.eval()


def brute_force_mean_distance(grid, patch):
    """Mean over query patches of the mean distance to all key patches, by explicit loops over patch centres."""
    (gh, gw), (ph, pw) = grid, patch
    centres = [((r + 0.5) * ph, (c + 0.5) * pw) for r in range(gh) for c in range(gw)]
    return np.mean([np.mean([math.dist(q, k) for k in centres]) for q in centres])


def test_mean_attention_distance_counts_pixels_of_the_effective_patch_for_hybrids_and_other_sizes():
    hybrid = uniform_attention_(vitkit.create_model(
        "ViT-Ti/16", num_classes=3, image_size=32, patch_size=2, width=8, depth=2, num_heads=2, mlp_dim=8,
        resnet=ResNetConfig(num_layers=())))  # root stride 4 x patch 2: 8 px patches, a 4x4 grid
    got = mean_attention_distance(hybrid, torch.randn(2, 3, 32, 32))
    np.testing.assert_allclose(got, np.full((2, 2), brute_force_mean_distance((4, 4), (8, 8))), rtol=1e-6)
    dynamic = uniform_attention_(vitkit.create_model(
        "ViT-Ti/16", num_classes=3, image_size=16, patch_size=4, width=8, depth=1, num_heads=1, mlp_dim=8,
        dynamic_image_size=True))
    got = mean_attention_distance(dynamic, torch.randn(1, 3, 24, 16))  # a 6x4 grid of 4 px patches
    np.testing.assert_allclose(got, [[brute_force_mean_distance((6, 4), (4, 4))]], rtol=1e-6)
    assert attention_rollout(dynamic, torch.randn(1, 3, 24, 16)).shape == (1, 6, 4)


def test_load_images_centre_crops_for_crop_pct_below_one(tmp_path):
    from PIL import Image

    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # right half blue
    image.save(tmp_path / "halves.png")
    model = vitkit.create_model("ViT-Ti/16", num_classes=3, image_size=8, patch_size=4, width=8, depth=1,
                                num_heads=1, mlp_dim=4)
    model.preprocessing.crop_pct = 0.5  # shorter side to 16 px (32x16), then the central 8x8: 4 red, 4 blue columns
    batch, pixels = load_images([tmp_path / "halves.png"], model)
    assert batch.shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(pixels[0, 4, :2], [[255, 0, 0]] * 2)
    np.testing.assert_array_equal(pixels[0, 4, -2:], [[0, 0, 255]] * 2)
    np.testing.assert_allclose(batch[0, 0, 4, 0].item(), 1.0, atol=1e-6)  # red, (1 - 0.5) / 0.5
