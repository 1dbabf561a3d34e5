"""The fast path computes the plain path's function: fused kernels, explicit attention, bf16 weights, packing,
torch.compile, int8. Tiny models only; no test measures time."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

import vitkit
from vitkit.models import fast
from vitkit.models.fast import optimize_for_inference, plain_path

from conftest import randomize_, rel_err

TINY = dict(image_size=16, patch_size=4, depth=2, width=48, num_heads=3, mlp_dim=96, num_classes=7)


def tiny(seed=0, **overrides):
    return randomize_(vitkit.create_model("ViT-Ti/16", **{**TINY, **overrides}), seed=seed).eval()


def plain(model, x):
    with torch.no_grad(), plain_path():
        return model(x)


@pytest.mark.parametrize("gelu", ["exact", "tanh"])
@pytest.mark.parametrize("grad_mode", ["no_grad", "inference_mode"])
def test_fused_cpu_inference_matches_plain_path(images, gelu, grad_mode):
    model = tiny(gelu=gelu)
    x = images(3, 16)
    context = torch.no_grad() if grad_mode == "no_grad" else torch.inference_mode()
    with context:
        out = model(x)
    assert rel_err(out, plain(model, x)) < 1e-5


def test_fused_linear_equals_linear_then_gelu():
    layer = torch.nn.Linear(16, 24)
    x = torch.randn(2, 5, 16)
    for activation, approximate in ((None, None), ("gelu", "none"), ("gelu_tanh", "tanh")):
        with torch.no_grad():
            got = fast.linear(x, layer, activation)
            want = layer(x) if approximate is None else F.gelu(layer(x), approximate=approximate)
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        fast.linear(x, layer, "relu")


def test_forward_hooks_on_dense_layers_still_fire(images):
    model = tiny()
    seen = []
    handle = model.blocks[0].mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(images(2, 16))
    handle.remove()
    assert seen == [torch.Size([2, 17, TINY["mlp_dim"]])]


def test_explicit_attention_matches_sdpa():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 16, generator=gen) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v)
    got, weights = fast.attention(q, k, v, keep_weights=True)  # keep_weights takes the explicit path
    assert rel_err(got, want) < 1e-6
    assert weights.shape == (2, 3, 17, 17) and torch.allclose(weights.sum(-1), torch.ones(2, 3, 17))
    got16, none = fast.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())  # bf16 on the CPU: explicit by default
    assert none is None and rel_err(got16.float(), want) < 2e-2


def test_keep_weights_still_works_on_the_fast_path(images):
    model = tiny()
    x = images(2, 16)
    layer = model.blocks[1].attn
    layer.keep_weights = True
    with torch.no_grad():
        out = model(x)
    layer.keep_weights = False
    assert layer.last_weights.shape == (2, 3, 17, 17)
    assert torch.allclose(layer.last_weights.sum(-1), torch.ones(2, 3, 17), atol=1e-5)
    assert rel_err(out, plain(model, x)) < 1e-5


def test_attention_with_fewer_queries_than_keys():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, n, 16, generator=gen) for n in (1, 17, 17))
    want = F.scaled_dot_product_attention(q, k, v)
    got, weights = fast.attention(q, k, v, keep_weights=True)
    assert rel_err(got, want) < 1e-6 and weights.shape == (2, 3, 1, 17)
    got16, _ = fast.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert got16.shape == (2, 3, 1, 16) and rel_err(got16.float(), want) < 2e-2


def last_block_tokens(model, x, hook_on=None):
    """The token counts the last block's MLP processed in an inference forward, and the output."""
    from vitkit.models import vit

    counter = []
    fc1 = model.blocks[-1].mlp.fc1
    original = vit.linear

    def counting(inp, layer, *args, **kwargs):
        if layer is fc1:
            counter.append(inp.shape[1])
        return original(inp, layer, *args, **kwargs)

    vit.linear = counting
    extra = hook_on.register_forward_hook(lambda *a: None) if hook_on is not None else None
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        vit.linear = original
        if extra is not None:
            extra.remove()
    return counter, out


def test_inference_computes_only_the_class_token_in_the_last_block(images):
    """With the class token's head, the last block's MLP sees one token at inference, and the logits are the
    plain path's; training, hooks, attention capture and pooling by mean keep every token."""
    model = tiny()
    x = images(3, 16)
    counter, out = last_block_tokens(model, x)
    assert counter == [1] and rel_err(out, plain(model, x)) < 1e-5
    bf16 = optimize_for_inference(model, "bfloat16")
    assert rel_err(bf16(x).float(), plain(model, x)) < 3e-2
    assert last_block_tokens(model, x, hook_on=model.norm)[0] == [17]  # a hook expects every token
    assert last_block_tokens(model, x, hook_on=model.blocks[-1])[0] == [17]
    model.blocks[-1].attn.keep_weights = True
    assert last_block_tokens(model, x)[0] == [17]
    model.blocks[-1].attn.keep_weights = False
    model.train()
    assert last_block_tokens(model, x)[0] == [17]
    gap = tiny(pool="gap")
    counter, out = last_block_tokens(gap, x)
    assert counter == [16] and rel_err(out, plain(gap, x)) < 1e-5
    hybrid = randomize_(vitkit.create_model("R+ViT-Ti/16", image_size=32, depth=2, num_classes=5), seed=2).eval()
    x32 = images(2, 32)
    counter, out = last_block_tokens(hybrid, x32)
    assert counter == [1] and rel_err(out, plain(hybrid, x32)) < 1e-5


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_fast_path_gradients_match_plain_path(images, precision):
    """Training uses explicit attention for bf16 (autocast) on the CPU; gradients agree with the plain path."""
    x, y = images(4, 16), torch.arange(4) % 7
    grads = []
    for context in (torch.enable_grad, plain_path):
        model = tiny().train()
        with context(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert rel_err(grads[0], grads[1]) < (3e-2 if precision == "bf16" else 1e-5)


def test_bf16_weights_match_float32_within_bf16_tolerance(images):
    model = tiny()
    x = images(8, 16)
    fast16 = optimize_for_inference(model, "bfloat16")
    out = fast16(x)
    assert out.dtype == torch.bfloat16
    reference = plain(model, x)
    assert rel_err(out.float(), reference) < 3e-2
    assert (out.float().argmax(-1) == reference.argmax(-1)).float().mean() >= 0.75


def test_inference_copy_is_frozen_packed_and_keeps_names(images):
    model = tiny()
    x = images(3, 16)
    frozen = optimize_for_inference(model)
    assert set(frozen.state_dict()) == {f"model.{k}" for k in model.state_dict()}
    assert frozen.model.blocks[0].attn.qkv.packed_weight.is_mkldnn
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the original is untouched
    assert rel_err(frozen(x), plain(model, x)) < 1e-5


def test_compiled_matches_eager(images):
    model = tiny(depth=1)
    x = images(2, 16)
    compiled = optimize_for_inference(model, compile=True)
    assert rel_err(compiled(x), plain(model, x)) < 1e-5


def _compiled_ops(model, x, grad: bool) -> tuple[set[str], torch.Tensor | None]:
    """The operators dynamo hands to the backend for a bf16 (autocast) forward, and the parameters' gradients of
    a backward through it (with grad)."""
    seen = set()

    def recording(gm, example_inputs):
        seen.update(getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=recording)
    with torch.set_grad_enabled(grad), torch.autocast("cpu", torch.bfloat16):
        out = compiled(x)
    if not grad:
        return seen, None
    out.float().square().sum().backward()
    return seen, torch.cat([p.grad.flatten() for p in model.parameters()])


def test_compiled_bf16_training_keeps_explicit_attention_on_the_cpu(images):
    """Under torch.compile a bf16 training step on the CPU takes the explicit attention (inductor fuses its softmax
    and casts: the compiled CIFAR-size step 1.39x faster than with the flash kernel); its gradients are the eager
    fast path's. Compiled inference keeps scaled_dot_product_attention."""
    x = images(4, 16)
    ops, grads = _compiled_ops(tiny().train(), x, grad=True)
    assert "baddbmm" in ops and "scaled_dot_product_attention" not in ops
    eager = tiny().train()
    with torch.autocast("cpu", torch.bfloat16):
        out = eager(x)
    out.float().square().sum().backward()
    assert rel_err(grads, torch.cat([p.grad.flatten() for p in eager.parameters()])) < 1e-5
    ops, _ = _compiled_ops(tiny(), x, grad=False)
    assert "scaled_dot_product_attention" in ops and "baddbmm" not in ops


def test_compiled_training_does_not_recompile_for_each_steps_masks(images):
    """Patch dropout and stochastic depth draw their masks from the step's seed (`share_masks`); under
    torch.compile that draw runs eagerly, so a new seed is not a new graph (it was a recompile at every step, until
    dynamo's limit turned compilation off)."""
    model = tiny(patch_dropout=0.5, drop_path=0.1).train()
    compiled = torch.compile(model, backend="eager")
    x = images(4, 16)
    torch._dynamo.reset()
    for step in range(2):  # the first steps compile (a second time for the blocks' different rates)
        model.share_masks((100 + step, 0, 4))
        compiled(x).sum().backward()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(2, 5):
            model.share_masks((100 + step, 0, 4))
            compiled(x).sum().backward()
    model.share_masks((7, 0, 4))
    first = compiled(x)
    model.share_masks((7, 0, 4))
    assert torch.equal(compiled(x), first)  # the same seed, the same masks
    model.share_masks((8, 0, 4))
    assert not torch.equal(compiled(x), first)


def test_compile_modes_are_checked_and_reach_inductor():
    model = tiny(depth=1)
    with pytest.raises(ValueError, match="needs compile"):
        optimize_for_inference(model, compile_mode="max-autotune")
    with pytest.raises(ValueError, match="reduce-overhead is CUDA graphs, which cpu has not"):
        optimize_for_inference(model, compile=True, compile_mode="reduce-overhead")
    with pytest.raises(ValueError, match="max-autotune-no-cudagraphs"):
        optimize_for_inference(model, compile=True, compile_mode="fastest")
    config = optimize_for_inference(model, compile=True, compile_mode="max-autotune")._forward.get_compiler_config()
    assert config["max_autotune"] and config["freezing"]  # the mode's options, and the frozen weights
    config = optimize_for_inference(model, compile=True)._forward.get_compiler_config()
    assert not config["max_autotune"] and config["freezing"]


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_int8_dynamic_quantization_stays_close(images):
    model = tiny()
    x = images(8, 16)
    quantized = fast.quantize_int8(model)
    with torch.inference_mode():
        out = quantized(x)
    assert rel_err(out, plain(model, x)) < 5e-2
