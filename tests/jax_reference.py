"""An independent NumPy re-statement of the original JAX model (vit_jax/models_vit.py, models_resnet.py).

It reads the flat `.npz` parameters in their Flax layouts (NHWC images, HWIO kernels, (D, heads, head_dim)
attention kernels) and shares no code with vitkit. The tests first check it against the JAX fixtures, then use it
as the reference for configurations the fixtures do not cover.
"""

from __future__ import annotations

import math

import numpy as np


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _layer_norm(x, p, prefix, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p[prefix + "/scale"] + p[prefix + "/bias"]


def _same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _conv(x, kernel, stride, same=True, bias=None):
    """NHWC conv with an HWIO kernel, TensorFlow SAME or VALID padding, via explicit patches."""
    kh, kw, cin, cout = kernel.shape
    if same:
        pads = [(0, 0), _same_pads(x.shape[1], kh, stride), _same_pads(x.shape[2], kw, stride), (0, 0)]
        x = np.pad(x, pads)
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, cout), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]  # (n, oh, ow, cin)
            out += patch @ kernel[i, j]
    return out if bias is None else out + bias


def _std_kernel(k):
    k = k - k.mean(axis=(0, 1, 2))
    return k / (k.std(axis=(0, 1, 2)) + 1e-5)


def _group_norm(x, p, prefix, groups=32, eps=1e-6):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) / np.sqrt(var + eps)
    return g.reshape(n, h, w, c) * p[prefix + "/scale"].reshape(c) + p[prefix + "/bias"].reshape(c)


def _max_pool_same(x, k=3, s=2):
    pads = [(0, 0), _same_pads(x.shape[1], k, s), _same_pads(x.shape[2], k, s), (0, 0)]
    x = np.pad(x, pads, constant_values=-np.inf)
    n, h, w, c = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, x[:, i:i + s * oh:s, j:j + s * ow:s, :])
    return out


def _unit(x, p, prefix, features, stride):
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    residual = x
    if x.shape[-1] != features * 4 or stride != 1:
        residual = _group_norm(_conv(x, _std_kernel(p[prefix + "/conv_proj/kernel"]), stride), p, prefix + "/gn_proj")
    y = relu(_group_norm(_conv(x, _std_kernel(p[prefix + "/conv1/kernel"]), 1), p, prefix + "/gn1"))
    y = relu(_group_norm(_conv(y, _std_kernel(p[prefix + "/conv2/kernel"]), stride), p, prefix + "/gn2"))
    y = _group_norm(_conv(y, _std_kernel(p[prefix + "/conv3/kernel"]), 1), p, prefix + "/gn3")
    return relu(residual + y)


def forward(params: dict, images_nhwc: np.ndarray, heads: int | None = None) -> np.ndarray:
    """Logits of the original model for images already scaled to [-1, 1], in float64."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x = np.asarray(images_nhwc, dtype=np.float64)
    if "conv_root/kernel" in p:
        x = _conv(x, _std_kernel(p["conv_root/kernel"]), 2)
        x = np.maximum(_group_norm(x, p, "gn_root"), 0)
        x = _max_pool_same(x)
        width = p["conv_root/kernel"].shape[-1]
        s = 1
        while f"block{s}/unit1/conv1/kernel" in p:
            u = 1
            while f"block{s}/unit{u}/conv1/kernel" in p:
                x = _unit(x, p, f"block{s}/unit{u}", width * 2 ** (s - 1), 2 if (s > 1 and u == 1) else 1)
                u += 1
            s += 1
    k = p["embedding/kernel"]
    x = _conv(x, k, k.shape[0], same=False, bias=p["embedding/bias"])
    n, h, w, c = x.shape
    x = x.reshape(n, h * w, c)
    token = "cls" in p
    if token:
        x = np.concatenate([np.tile(p["cls"], (n, 1, 1)), x], axis=1)
    x = x + p["Transformer/posembed_input/pos_embedding"]
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in p:
        b = f"Transformer/encoderblock_{i}/"
        attn = b + "MultiHeadDotProductAttention_1/"
        y = _layer_norm(x, p, b + "LayerNorm_0")
        q = np.einsum("bnd,dhk->bhnk", y, p[attn + "query/kernel"]) + p[attn + "query/bias"][None, :, None, :]
        kk = np.einsum("bnd,dhk->bhnk", y, p[attn + "key/kernel"]) + p[attn + "key/bias"][None, :, None, :]
        v = np.einsum("bnd,dhk->bhnk", y, p[attn + "value/kernel"]) + p[attn + "value/bias"][None, :, None, :]
        logits = q @ kk.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
        logits = logits - logits.max(-1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(-1, keepdims=True)
        out = np.einsum("bhnk,hkd->bnd", weights @ v, p[attn + "out/kernel"]) + p[attn + "out/bias"]
        x = x + out
        y = _layer_norm(x, p, b + "LayerNorm_2")
        y = _gelu_tanh(y @ p[b + "MlpBlock_3/Dense_0/kernel"] + p[b + "MlpBlock_3/Dense_0/bias"])
        x = x + y @ p[b + "MlpBlock_3/Dense_1/kernel"] + p[b + "MlpBlock_3/Dense_1/bias"]
        i += 1
    x = _layer_norm(x, p, "Transformer/encoder_norm")
    x = x[:, 0] if token else x.mean(axis=1)
    if "pre_logits/kernel" in p:
        x = np.tanh(x @ p["pre_logits/kernel"] + p["pre_logits/bias"])
    return x @ p["head/kernel"] + p["head/bias"]


def random_params(rng: np.random.Generator, *, patch=4, width=48, heads=3, depth=2, mlp=96, grid=(3, 3),
                  classes=6, token=True, rep=None, resnet=None, channels=3) -> dict[str, np.ndarray]:
    """Random non-zero parameters in the published naming, for any configuration."""
    p: dict[str, np.ndarray] = {}

    def r(*shape, scale=0.1):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    embed_in = channels
    if resnet is not None:
        stages, root = resnet
        p["conv_root/kernel"] = r(7, 7, channels, root, scale=0.5)
        p["gn_root/scale"], p["gn_root/bias"] = 1 + r(1, 1, 1, root), r(1, 1, 1, root)
        cin = root
        for s, units in enumerate(stages, 1):
            f = root * 2 ** (s - 1)
            for u in range(1, units + 1):
                pre = f"block{s}/unit{u}/"
                p[pre + "conv1/kernel"] = r(1, 1, cin, f, scale=0.5)
                p[pre + "conv2/kernel"] = r(3, 3, f, f, scale=0.5)
                p[pre + "conv3/kernel"] = r(1, 1, f, 4 * f, scale=0.5)
                for g, ch in (("gn1", f), ("gn2", f), ("gn3", 4 * f)):
                    p[pre + g + "/scale"], p[pre + g + "/bias"] = 1 + r(ch), r(ch)
                if cin != 4 * f or (s > 1 and u == 1):
                    p[pre + "conv_proj/kernel"] = r(1, 1, cin, 4 * f, scale=0.5)
                    p[pre + "gn_proj/scale"], p[pre + "gn_proj/bias"] = 1 + r(4 * f), r(4 * f)
                cin = 4 * f
        embed_in = cin
    p["embedding/kernel"] = r(patch, patch, embed_in, width)
    p["embedding/bias"] = r(width)
    if token:
        p["cls"] = r(1, 1, width)
    n = grid[0] * grid[1] + int(token)
    p["Transformer/posembed_input/pos_embedding"] = r(1, n, width)
    hd = width // heads
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            p[b + ln + "/scale"], p[b + ln + "/bias"] = 1 + r(width), r(width)
        a = b + "MultiHeadDotProductAttention_1/"
        for part in ("query", "key", "value"):
            p[a + part + "/kernel"], p[a + part + "/bias"] = r(width, heads, hd, scale=0.3), r(heads, hd)
        p[a + "out/kernel"], p[a + "out/bias"] = r(heads, hd, width, scale=0.3), r(width)
        p[b + "MlpBlock_3/Dense_0/kernel"], p[b + "MlpBlock_3/Dense_0/bias"] = r(width, mlp, scale=0.2), r(mlp)
        p[b + "MlpBlock_3/Dense_1/kernel"], p[b + "MlpBlock_3/Dense_1/bias"] = r(mlp, width, scale=0.2), r(width)
    p["Transformer/encoder_norm/scale"], p["Transformer/encoder_norm/bias"] = 1 + r(width), r(width)
    features = width
    if rep:
        p["pre_logits/kernel"], p["pre_logits/bias"] = r(width, rep, scale=0.3), r(rep)
        features = rep
    p["head/kernel"], p["head/bias"] = r(features, classes, scale=0.3), r(classes)
    return p
