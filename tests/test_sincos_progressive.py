"""Fixed sin-cos position embeddings at another input size of the same image (progressive resolution): each
patch gets the embedding of its centre's position on the model's grid, so an image region keeps its embedding."""

from __future__ import annotations

import math

import torch

import vitkit
from vitkit.models.posemb import sincos_2d


def reference(rows: list[float], cols: list[float], width: int) -> torch.Tensor:
    """sin/cos of continuous (row, column) positions, written out: (len(rows) * len(cols), width)."""
    quarter = width // 4
    omega = [1.0 / 10_000 ** (k / (quarter - 1)) for k in range(quarter)]
    out = []
    for y in rows:
        for x in cols:
            out.append([math.sin(x * w) for w in omega] + [math.cos(x * w) for w in omega]
                       + [math.sin(y * w) for w in omega] + [math.cos(y * w) for w in omega])
    return torch.tensor(out, dtype=torch.float32)


def test_a_smaller_input_sees_the_embeddings_of_its_regions_centres():
    model = vitkit.create_model("ViT-Ti/4", image_size=32, width=32, depth=1, num_heads=2, mlp_dim=64,
                                posemb="sincos_2d", dynamic_image_size=True)
    full = model.position_embeddings()[0]  # the 8 x 8 grid: big_vision's table, positions 0 .. 7
    torch.testing.assert_close(full, reference([float(i) for i in range(8)], [float(i) for i in range(8)], 32))
    half = model.position_embeddings((4, 4))[0]  # the image at 16 px: patch i covers full patches 2i and 2i + 1
    centres = [2 * i + 0.5 for i in range(4)]
    torch.testing.assert_close(half, reference(centres, centres, 32))
    wide = model.position_embeddings((2, 8))[0]  # another aspect: rows scaled by 4, columns by 1
    torch.testing.assert_close(wide, reference([1.5, 5.5], [float(i) for i in range(8)], 32))


def test_the_forward_pass_at_a_smaller_size_uses_them():
    model = vitkit.create_model("ViT-Ti/4", image_size=32, width=32, depth=1, num_heads=2, mlp_dim=64,
                                posemb="sincos_2d", pool="gap", dynamic_image_size=True).eval()
    captured = {}
    model.blocks[0].register_forward_pre_hook(lambda module, args: captured.update(x=args[0]))
    images = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        model(images)
        patches = model.patch_embed(images)
    torch.testing.assert_close(captured["x"][:, -16:] - patches, sincos_2d((4, 4), 32, span=(8, 8))[None])


def test_set_image_size_keeps_big_visions_integer_positions():
    model = vitkit.create_model("ViT-Ti/4", image_size=32, width=32, depth=1, num_heads=2, mlp_dim=64,
                                posemb="sincos_2d")
    model.set_image_size(48)  # a new model size (fine-tuning at a higher resolution): the table for 12 x 12
    torch.testing.assert_close(model.position_embeddings()[0], sincos_2d((12, 12), 32))
