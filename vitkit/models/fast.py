"""The fast path: kernels chosen by measurement, computing the same function as the plain PyTorch layers.

What it does and why (numbers from `vitkit bench` on a 2-core AVX-512 CPU; see README "Speed"):
  - CPU inference (no autograd, float32 or bfloat16): dense layers run on oneDNN with the bias and GELU fused into the
    matrix product. PyTorch's own `F.linear` goes to MKL for float32, which on this AMD CPU is ~15% slower than
    oneDNN, then spends a separate pass on GELU (and on copying the bias into the output).
  - bfloat16 attention on the CPU (up to 577 tokens): explicit `softmax(q k^T / sqrt(d)) v` with batched matrix
    products instead of `scaled_dot_product_attention`, whose CPU flash kernel is ~1.6x slower forward at 197 tokens
    and ~3x slower forward + backward at 65 (CIFAR-size). float32 and GPUs keep `scaled_dot_product_attention`.
  - `optimize_for_inference`: a frozen copy whose weights are cast once (bfloat16 without autocast re-casting every
    weight at every call), run under `torch.inference_mode`, optionally `torch.compile`d.

`plain_path()` turns all of it off (the reference the tests compare against). Tracing, compiling and ONNX export
take the plain path, so exported graphs hold standard operators only; the one exception is a torch.compile'd
bfloat16 training step on the CPU, whose attention stays explicit (standard operators too, which inductor fuses).
"""

from __future__ import annotations

import contextlib
import copy
import threading

import torch
import torch.nn.functional as F
from torch import nn

_state = threading.local()

# Sequence length up to which bfloat16 attention on the CPU is explicit. Measured on one core, explicit vs flash:
# forward (batch 8, 12 heads of 64) 11 vs 18 ms at N = 197, 39 vs 62 ms at 401, a tie at 577, 230 vs 212 ms at 785;
# forward + backward with float32 scores (batch 4, 6 heads) 26 vs 30 ms at 257, 100 vs 124 ms at 577, and 31 vs
# 102 ms at 65 tokens (batch 128, 3 heads). The explicit form holds (B, heads, N, N) weights: memory grows with N^2.
EXPLICIT_ATTENTION_MAX_TOKENS = 577

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's modes


def compile_mode_problem(mode: str | None, *, compile: bool, backend: str = "inductor",
                         device: str | torch.device | None = None) -> str | None:
    """Why torch.compile cannot honour `mode` here, or None: the one wording of the rule for training, the bench,
    inference and int8. `device` None means not known yet (checked again once it is)."""
    if mode is None or mode == "default":
        return None
    if mode not in COMPILE_MODES:
        return f"compile_mode={mode!r}, expected one of {', '.join(COMPILE_MODES)}"
    if not compile:
        return f"compile_mode={mode} needs compile (--compile, compile=True)"
    if backend != "inductor":
        return f"compile_mode={mode} is inductor's; compile_backend={backend!r} has none"
    if mode == "reduce-overhead" and device is not None and torch.device(device).type != "cuda":
        return f"compile_mode=reduce-overhead is CUDA graphs, which {device} has not; use default or max-autotune"
    return None


def fast_path_enabled() -> bool:
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def plain_path():
    """Run models with plain PyTorch layers only (F.linear, F.gelu, scaled_dot_product_attention)."""
    previous = fast_path_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous


def hooks_watch(*modules: nn.Module) -> bool:
    """Whether a forward hook (global, or on any of `modules` or their submodules) would see a module's call: the
    fast path's shortcuts, which skip calls or change what they see, then step aside."""
    module_globals = nn.modules.module
    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for module in modules for m in module.modules())


def is_tracing() -> bool:
    return (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export())


def _onednn_bf16() -> bool:
    if not hasattr(_onednn_bf16, "value"):
        _onednn_bf16.value = bool(torch.backends.mkldnn.is_available()
                                  and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return _onednn_bf16.value


def _use_onednn(x: torch.Tensor, layer: nn.Module) -> bool:
    """oneDNN's fused dense kernel has no autograd formula and no autocast rule: inference on plain tensors only,
    for plain `nn.Linear` layers (not quantized or otherwise replaced ones) that no hook watches."""
    if not fast_path_enabled() or is_tracing() or torch.is_grad_enabled() or type(layer) is not nn.Linear:
        return False
    if hooks_watch(layer):
        return False
    if x.device.type != "cpu" or not torch.backends.mkldnn.is_available() or torch.is_autocast_enabled("cpu"):
        return False
    w, b = layer.weight, layer.bias
    if type(w) is not nn.Parameter or type(x) is not torch.Tensor:  # tensor subclasses (torchao, ...) keep their op
        return False
    if x.dtype != w.dtype or (b is not None and b.dtype != w.dtype) or w.device.type != "cpu":
        return False
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _onednn_bf16())


def _weight(layer: nn.Linear) -> torch.Tensor:
    """The layer's weight in oneDNN's blocked layout when `pack_linear_weights` stored one, else the weight."""
    packed = getattr(layer, "packed_weight", None)
    if packed is not None and packed.dtype == layer.weight.dtype and packed.shape == layer.weight.shape:
        return packed
    return layer.weight


def linear(x: torch.Tensor, layer: nn.Module, activation: str | None = None) -> torch.Tensor:
    """`layer(x)`, then `activation` ("gelu" exact, or "gelu_tanh"), fused into one oneDNN call where possible."""
    if activation not in (None, "gelu", "gelu_tanh"):
        raise ValueError(f"unknown activation {activation!r}; expected None, 'gelu' or 'gelu_tanh'")
    approximate = "tanh" if activation == "gelu_tanh" else "none"
    if _use_onednn(x, layer):
        if activation is None:
            return torch.ops.mkldnn._linear_pointwise(x, _weight(layer), layer.bias, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise(x, _weight(layer), layer.bias, "gelu", [], approximate)
    x = layer(x)
    return x if activation is None else F.gelu(x, approximate=approximate)


@torch.no_grad()
def pack_linear_weights(model: nn.Module, batch_tokens: int = 1024) -> int:
    """Store each dense layer's weight also in oneDNN's blocked layout (`layer.packed_weight`), which the CPU
    inference path then uses (saves the re-layout at every call: ~5% of a ViT's time). For frozen models only:
    later changes to the weights are not seen by the packed copy. Returns the number of layers packed."""
    if not torch.backends.mkldnn.is_available():
        return 0
    count = 0
    for layer in model.modules():
        if isinstance(layer, nn.Linear) and layer.weight.device.type == "cpu" and (
                layer.weight.dtype == torch.float32 or (layer.weight.dtype == torch.bfloat16 and _onednn_bf16())):
            layer.packed_weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), batch_tokens)
            count += 1
    return count


def _explicit_attention_preferred(q: torch.Tensor) -> bool:
    if not (fast_path_enabled() and q.device.type == "cpu" and q.dtype == torch.bfloat16
            and q.shape[-2] <= EXPLICIT_ATTENTION_MAX_TOKENS):
        return False
    if torch.compiler.is_compiling():
        # Under torch.compile (not export) only when training: the compiled CIFAR-size training step (65 tokens)
        # is 1.39x faster with it, inductor fusing the softmax and its casts; compiled inference at 197 tokens
        # was a tie (within 4%), so it keeps scaled_dot_product_attention there.
        return not torch.compiler.is_exporting() and torch.is_grad_enabled() and q.requires_grad
    return not is_tracing()


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
              keep_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(head_dim)) v for q, k, v of shape (B, heads, N, head_dim).

    Returns the output (B, heads, N, head_dim) and, with keep_weights, the attention weights (B, heads, N, M)
    before dropout, for N queries and M keys and values. `dropout_p` is applied as given (pass 0 outside training).
    """
    if not keep_weights and not _explicit_attention_preferred(q):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), None
    B, H, N, d = q.shape  # N queries; the keys and values may be more (k.shape[2])
    M = k.shape[2]
    q, k, v = q.reshape(B * H, N, d), k.reshape(B * H, M, d), v.reshape(B * H, M, d)  # (B * heads, tokens, head_dim)
    # The scale rides on the product's alpha; beta=0 ignores the (broadcast) input. When training, the scores are
    # computed in float32, as the flash kernel keeps them: bfloat16 scores would double the drift of the loss from
    # the plain path's (measured over 20 steps) for a 1.5x faster attention; inference keeps bfloat16.
    if torch.is_grad_enabled() and q.requires_grad and q.dtype != torch.float32:
        with torch.autocast(q.device.type, enabled=False):
            scores = torch.baddbmm(q.new_zeros(1, 1, 1, dtype=torch.float32), q.float(), k.float().transpose(1, 2),
                                   beta=0, alpha=d**-0.5)  # (B * heads, N, M)
    else:
        scores = torch.baddbmm(q.new_zeros(1, 1, 1), q, k.transpose(1, 2), beta=0, alpha=d**-0.5)
    weights = scores.softmax(dim=-1)  # float32 under autocast
    attended = weights.to(v.dtype)
    if dropout_p > 0:
        attended = F.dropout(attended, dropout_p)
    x = torch.bmm(attended, v).view(B, H, N, d)
    return x, (weights.view(B, H, N, M) if keep_weights else None)


class InferenceModel(nn.Module):
    """A frozen copy of a model for inference: weights cast once to `dtype`, inputs cast on the way in, run under
    `torch.inference_mode`. The wrapped model is `.model`; its state-dict names are unchanged under `model.`."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None = None):
        super().__init__()
        model = copy.deepcopy(model).eval().requires_grad_(False)
        if dtype is not None:
            model = model.to(dtype)
        pack_linear_weights(model)
        self.model = model
        self.dtype = dtype or next(model.parameters()).dtype
        self.config = getattr(model, "config", None)
        self.__dict__["_forward"] = model  # what forward calls: the model, or its compiled form (not a submodule)

    def compile(self, **kwargs) -> "InferenceModel":
        """torch.compile the wrapped model, in place (inductor with the weights frozen as constants unless `kwargs`
        say otherwise; a `mode` is given to inductor as its options, with the freezing); returns self."""
        if "backend" not in kwargs and "options" not in kwargs:
            mode = kwargs.pop("mode", None)
            kwargs["options"] = {"freezing": True, **(torch._inductor.list_mode_options(mode) if mode else {})}
        self.__dict__["_forward"] = torch.compile(self.model, **kwargs)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._forward(images.to(self.dtype))


def optimize_for_inference(model: nn.Module, dtype: torch.dtype | str | None = None,
                           compile: bool = False, compile_mode: str | None = None) -> InferenceModel:
    """A fast inference copy of `model`: `dtype` "bfloat16" casts the weights once (instead of autocast re-casting
    them at every call); `compile=True` adds torch.compile with frozen weights (its first call compiles: ~35 s for
    ViT-B/16 on a 2-core CPU, and it was not faster there than the eager fast path), in torch.compile's
    `compile_mode` (e.g. "max-autotune")."""
    problem = compile_mode_problem(compile_mode, compile=compile, device=next(model.parameters(), torch.empty(0)).device)
    if problem:
        raise ValueError(problem)
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(names)}")
        dtype = names[dtype]
    fast = InferenceModel(model, dtype)
    return fast.compile(mode=compile_mode) if compile else fast


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with dynamic int8 quantization of its dense layers (int8 weights; activations quantized
    per call), by torchao, the maintained PyTorch quantization library (`torch.ao.quantization` is deprecated).
    CPU inference only; the fast path's oneDNN kernels step aside for the quantized layers."""
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as e:
        raise ValueError("int8 quantization needs torchao: pip install torchao") from e
    model = copy.deepcopy(model).eval().requires_grad_(False)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


__all__ = ["linear", "attention", "plain_path", "fast_path_enabled", "hooks_watch", "is_tracing",
           "pack_linear_weights", "InferenceModel", "optimize_for_inference", "quantize_int8",
           "EXPLICIT_ATTENTION_MAX_TOKENS"]
