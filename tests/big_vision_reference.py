"""An independent NumPy re-statement of big_vision's ViT (big_vision/models/vit.py, `_Model`, `MAPHead`,
`posemb_sincos_2d`), reading its flat `.npz` parameters in their Flax layouts. It shares no code with vitkit; the tests
anchor it to the JAX fixtures (whose gap model is a big_vision model under other names) and then use it as the
reference for what the fixtures do not cover (class token after the positions, MAP heads, sin-cos positions, scan).
"""

from __future__ import annotations

import math

import numpy as np

BLOCK = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """big_vision's formula in float32, as JAX computes it: (1, h * w, width)."""
    y, x = np.mgrid[:h, :w]
    quarter = width // 4
    omega = np.arange(quarter, dtype=np.float32) / np.float32(quarter - 1)
    omega = (np.float32(1.0) / np.power(np.float32(temperature), omega)).astype(np.float32)
    y = np.einsum("m,d->md", y.flatten().astype(np.float32), omega)
    x = np.einsum("m,d->md", x.flatten().astype(np.float32), omega)
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)[None]


def _gelu(x):  # flax.linen.gelu defaults to the tanh approximation
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _layer_norm(x, p, prefix, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p[prefix + "/scale"] + p[prefix + "/bias"]


def _mha(p, prefix, queries, inputs):
    """flax MultiHeadDotProductAttention: (D, heads, hd) projections with (heads, hd) biases, softmax(qk/sqrt(hd))."""
    q = np.einsum("bnd,dhk->bhnk", queries, p[prefix + "/query/kernel"]) + p[prefix + "/query/bias"][None, :, None]
    k = np.einsum("bnd,dhk->bhnk", inputs, p[prefix + "/key/kernel"]) + p[prefix + "/key/bias"][None, :, None]
    v = np.einsum("bnd,dhk->bhnk", inputs, p[prefix + "/value/kernel"]) + p[prefix + "/value/bias"][None, :, None]
    logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhnk,hkd->bnd", weights @ v, p[prefix + "/out/kernel"]) + p[prefix + "/out/bias"]


def _mlp(p, prefix, x):
    return _gelu(x @ p[prefix + "/Dense_0/kernel"] + p[prefix + "/Dense_0/bias"]) @ p[prefix + "/Dense_1/kernel"] + \
        p[prefix + "/Dense_1/bias"]


def forward(params: dict, images_nhwc: np.ndarray) -> np.ndarray:
    """Logits of big_vision's ViT, in float64 (the sin-cos table in float32, as JAX makes it)."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    if any(k.startswith("Transformer/encoderblock/") for k in p):  # scan: slice the stacked block per layer
        stacked = {k: v for k, v in p.items() if k.startswith("Transformer/encoderblock/")}
        depth = next(iter(stacked.values())).shape[0]
        for k, v in stacked.items():
            del p[k]
            for i in range(depth):
                p[k.replace("encoderblock/", f"encoderblock_{i}/")] = v[i]
    kernel = p["embedding/kernel"]
    ph, pw = kernel.shape[:2]
    x = np.asarray(images_nhwc, dtype=np.float64)
    n, H, W, _ = x.shape
    h, w = H // ph, W // pw
    patches = x.reshape(n, h, ph, w, pw, -1).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * w, -1)
    x = patches @ kernel.reshape(-1, kernel.shape[-1]) + p["embedding/bias"]  # VALID conv, stride = patch
    c = x.shape[-1]
    pe = p.get("pos_embedding", p.get("Transformer/pos_embedding"))
    if pe is None:
        pe = posemb_sincos_2d(h, w, c).astype(np.float64)
    cls = p.get("cls")
    if pe.shape[1] == h * w + 1:  # the old layout: [cls] first, then the embeddings over every token
        x = np.concatenate([np.tile(cls, (n, 1, 1)), x], axis=1) + pe
    else:  # big_vision now: the embeddings over the patches, then [cls]
        x = x + pe
        if cls is not None:
            x = np.concatenate([np.tile(cls, (n, 1, 1)), x], axis=1)
    i = 0
    ln1, attn, ln2, mlp = BLOCK
    while f"Transformer/encoderblock_{i}/{ln1}/scale" in p:
        b = f"Transformer/encoderblock_{i}/"
        y = _layer_norm(x, p, b + ln1)
        x = x + _mha(p, b + attn, y, y)
        x = x + _mlp(p, b + mlp, _layer_norm(x, p, b + ln2))
        i += 1
    x = _layer_norm(x, p, "Transformer/encoder_norm")
    if "MAPHead_0/probe" in p:
        probe = np.tile(p["MAPHead_0/probe"], (n, 1, 1))
        x = _mha(p, "MAPHead_0/MultiHeadDotProductAttention_0", probe, x)
        x = (x + _mlp(p, "MAPHead_0/MlpBlock_0", _layer_norm(x, p, "MAPHead_0/LayerNorm_0")))[:, 0]
    elif cls is not None:
        x = x[:, 0]
    else:
        x = x.mean(axis=1)
    if "pre_logits/kernel" in p:
        x = np.tanh(x @ p["pre_logits/kernel"] + p["pre_logits/bias"])
    return x @ p["head/kernel"] + p["head/bias"]


def random_params(rng: np.random.Generator, *, patch=4, width=32, heads=2, depth=2, mlp=64, grid=(3, 3), classes=5,
                  pool="gap", posemb="learn", rep=None, scan=False, old_posemb=False) -> dict[str, np.ndarray]:
    """Random non-zero parameters under big_vision's names (`pool` 'gap', 'tok' or 'map'; `posemb` 'learn' or
    'sincos2d'; `scan` stacks the blocks; `old_posemb` puts one embedding on the class token too, as before 2022)."""
    p: dict[str, np.ndarray] = {}

    def r(*shape, scale=0.1):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm(prefix):
        p[prefix + "/scale"], p[prefix + "/bias"] = 1 + r(width), r(width)

    def attention(prefix):
        for part in ("query", "key", "value"):
            p[f"{prefix}/{part}/kernel"], p[f"{prefix}/{part}/bias"] = r(width, heads, width // heads, scale=0.3), \
                r(heads, width // heads)
        p[prefix + "/out/kernel"], p[prefix + "/out/bias"] = r(heads, width // heads, width, scale=0.3), r(width)

    def mlp_block(prefix):
        p[prefix + "/Dense_0/kernel"], p[prefix + "/Dense_0/bias"] = r(width, mlp, scale=0.2), r(mlp)
        p[prefix + "/Dense_1/kernel"], p[prefix + "/Dense_1/bias"] = r(mlp, width, scale=0.2), r(width)

    p["embedding/kernel"], p["embedding/bias"] = r(patch, patch, 3, width), r(width)
    if posemb == "learn":
        p["pos_embedding"] = r(1, grid[0] * grid[1] + int(old_posemb), width)
    if pool == "tok":
        p["cls"] = r(1, 1, width)
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        norm(b + BLOCK[0])
        attention(b + BLOCK[1])
        norm(b + BLOCK[2])
        mlp_block(b + BLOCK[3])
    norm("Transformer/encoder_norm")
    if pool == "map":
        p["MAPHead_0/probe"] = r(1, 1, width, scale=0.5)
        attention("MAPHead_0/MultiHeadDotProductAttention_0")
        norm("MAPHead_0/LayerNorm_0")
        mlp_block("MAPHead_0/MlpBlock_0")
    features = width
    if rep:
        p["pre_logits/kernel"], p["pre_logits/bias"] = r(width, rep, scale=0.3), r(rep)
        features = rep
    p["head/kernel"], p["head/bias"] = r(features, classes, scale=0.3), r(classes)
    return stack_blocks(p) if scan else p


def stack_blocks(params: dict) -> dict:
    """big_vision's `pyloop_to_scan`: every `encoderblock_{i}` leaf stacked into `encoderblock` along a new axis 0."""
    out = {k: v for k, v in params.items() if not k.startswith("Transformer/encoderblock_")}
    depth = len({k.split("/")[1] for k in params if k.startswith("Transformer/encoderblock_")})
    for key in [k for k in params if k.startswith("Transformer/encoderblock_0/")]:
        rest = key[len("Transformer/encoderblock_0/"):]
        out["Transformer/encoderblock/" + rest] = np.stack(
            [params[f"Transformer/encoderblock_{i}/{rest}"] for i in range(depth)])
    return out
