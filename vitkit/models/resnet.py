"""The ResNet stem of the hybrid models (Section 3.1): BiT's weight-standardised convolutions and GroupNorm.

Matches `vit_jax/models_resnet.py` and the root block of `models_vit.py`: bottleneck units with GroupNorm after
every convolution and ReLU after the residual sum; every convolution and the max-pool pad as TensorFlow's SAME.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ResNetConfig


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding along one axis: (before, after); the extra row goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


class StdConv2d(nn.Conv2d):
    """Conv2d whose kernel is standardised per output channel at every call (Qiao et al.; BiT).

    Over (in_channels, kh, kw) with the population variance: w <- (w - mean) / (std + 1e-5) as vit_jax
    (`weight_std="jax"`), or w <- (w - mean) / sqrt(var + 1e-8) as timm's StdConv2dSame(eps=1e-8) ("timm").
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, weight_std: str = "jax"):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=False)
        if weight_std not in ("jax", "timm"):
            raise ValueError(f"weight_std={weight_std!r}, expected 'jax' or 'timm'")
        self.weight_std = weight_std

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        if self.weight_std == "timm":
            return (w - mean) * torch.rsqrt(var + 1e-8)
        return (w - mean) / (var.sqrt() + 1e-5)

    def forward(self, x):
        x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.standardized_weight(), None, self.stride)


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=eps)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 (4x wider), GroupNorm after each, ReLU after the residual sum."""

    def __init__(self, in_channels: int, width: int, stride: int, weight_std: str = "jax", eps: float = 1e-6):
        super().__init__()
        out_channels = width * 4
        self.conv1 = StdConv2d(in_channels, width, 1, weight_std=weight_std)
        self.gn1 = group_norm(width, eps)
        self.conv2 = StdConv2d(width, width, 3, stride=stride, weight_std=weight_std)
        self.gn2 = group_norm(width, eps)
        self.conv3 = StdConv2d(width, out_channels, 1, weight_std=weight_std)
        self.gn3 = group_norm(out_channels, eps)
        if in_channels != out_channels or stride != 1:
            self.conv_proj = StdConv2d(in_channels, out_channels, 1, stride=stride, weight_std=weight_std)
            self.gn_proj = group_norm(out_channels, eps)
        else:
            self.conv_proj = None
            self.gn_proj = None

    def forward(self, x):
        residual = x if self.conv_proj is None else self.gn_proj(self.conv_proj(x))
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return F.relu(residual + y)


class ResNetStem(nn.Module):
    """Root (7x7/2 conv, GroupNorm, ReLU, 3x3/2 max-pool) and the configured bottleneck stages."""

    def __init__(self, config: ResNetConfig, in_channels: int = 3):
        super().__init__()
        width, weight_std, eps = config.width, config.weight_std, config.group_norm_eps
        self.conv_root = StdConv2d(in_channels, width, 7, stride=2, weight_std=weight_std)
        self.gn_root = group_norm(width, eps)
        stages = []
        channels = width
        for i, units in enumerate(config.num_layers):
            stage_width = width * 2**i
            blocks = []
            for u in range(units):
                stride = 2 if (i > 0 and u == 0) else 1
                blocks.append(Bottleneck(channels, stage_width, stride, weight_std, eps))
                channels = stage_width * 4
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = channels

    def forward(self, x):
        x = F.relu(self.gn_root(self.conv_root(x)))
        x = pad_same(x, 3, 2, value=float("-inf"))
        if x.device.type == "cpu":  # the same maxima; PyTorch's channels-last CPU max-pool is ~15x faster than NCHW
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        return self.stages(x)

    @torch.no_grad()
    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                _lecun_normal_(m.weight, fan_in)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.gn3.weight)  # each unit starts as its projection, as in BiT


def _lecun_normal_(tensor: torch.Tensor, fan_in: int) -> None:
    """Flax's lecun_normal: a normal truncated at 2 std, with variance 1 / fan_in after truncation."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    _trunc_normal_(tensor, std, bound=2.0)


def _trunc_normal_(tensor: torch.Tensor, std: float, bound: float = 2.0) -> None:
    """Inverse-CDF sampling of N(0, std) truncated at +-bound std (one pass, unlike a rejection loop)."""
    if tensor.is_meta:
        return
    edge = math.erf(bound / math.sqrt(2.0))
    tensor.uniform_(-edge, edge)  # the normal's CDF range inside the bounds, mapped to (-1, 1)
    tensor.erfinv_().mul_(std * math.sqrt(2.0)).clamp_(-bound * std, bound * std)
