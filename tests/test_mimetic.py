"""Mimetic initialisation of attention (Trockman & Kolter 2023): the products it promises, and its training setting."""

from __future__ import annotations

import pytest
import torch

from vitkit.errors import UsageError
from vitkit.models import create_model
from vitkit.models.mimetic import QK, VO, mimetic_init_
from vitkit.training.build import build_model
from vitkit.training.config import TrainConfig

D, HEADS = 64, 4
K = D // HEADS


def small():
    return create_model("ViT-Ti/16", num_classes=10, image_size=32, patch_size=8, width=D, num_heads=HEADS,
                        depth=2, mlp_dim=128)


def products(model):
    """Per block: the heads' W_q^T W_k (D, D) and W_o W_v (D, D)."""
    out = []
    for block in model.blocks:
        w = block.attn.qkv.weight.detach().double()
        qk = [w[h * K:(h + 1) * K].T @ w[D + h * K:D + (h + 1) * K] for h in range(HEADS)]
        out.append((qk, block.attn.proj.weight.detach().double() @ w[2 * D:]))
    return out


def test_value_output_products_are_noise_minus_the_identity_and_query_key_products_lean_to_it():
    torch.manual_seed(0)
    model = mimetic_init_(small())
    eye = torch.eye(D, dtype=torch.float64)
    for qk, vo in products(model):
        noise = (vo + VO[1] * eye) / VO[0] * D ** 0.5  # what is left should be N(0, 1) entries
        assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05
        for p in qk:
            assert torch.linalg.matrix_rank(p) == K  # each head: a rank-K factorisation
            # the best rank-K part of a1 Z + b1 I keeps a positive diagonal, well above the noise between tokens
            assert float(p.diag().mean()) > 0.2
            assert float((p - torch.diag(p.diag())).std()) < 0.1
    for block in model.blocks:
        assert not block.attn.qkv.bias.any() and not block.attn.proj.bias.any()


def test_the_default_initialisation_has_none_of_it():
    torch.manual_seed(0)
    for qk, vo in products(small()):
        assert abs(float(vo.diag().mean())) < 0.1
        assert all(abs(float(p.diag().mean())) < 0.1 for p in qk)


def test_the_factors_are_the_best_rank_k_approximation_of_the_drawn_target():
    model = small()
    mimetic_init_(model, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)  # the same draws, in the same order: per head, then the value-output
    eye = torch.eye(D, dtype=torch.float64)
    target = QK[0] * torch.randn(D, D, generator=gen, dtype=torch.float64) / D ** 0.5 + QK[1] * eye
    u, s, vh = torch.linalg.svd(target)
    best = u[:, :K] @ torch.diag(s[:K]) @ vh[:K]
    first_head = products(model)[0][0][0]
    assert torch.allclose(first_head, best, atol=1e-5)


def test_training_takes_the_setting_and_refuses_it_with_a_checkpoint(tmp_path):
    config = TrainConfig(model="ViT-Ti/16", image_size=32, patch_size=8, width=D, num_heads=HEADS, depth=2,
                         mlp_dim=128, attention_init="mimetic").validate()
    torch.manual_seed(0)
    model = build_model(config, num_classes=10, log=lambda m: None)
    qk, vo = products(model)[0]
    assert float(vo.diag().mean()) == pytest.approx(-VO[1], abs=0.05)
    with pytest.raises(UsageError, match="attention_init='xavier', expected one of default, mimetic"):
        TrainConfig(attention_init="xavier").validate()
    with pytest.raises(UsageError, match="--attention-init mimetic"):
        build_model(TrainConfig(init_from=str(tmp_path / "x.safetensors"), attention_init="mimetic").validate(),
                    num_classes=10, log=lambda m: None)
