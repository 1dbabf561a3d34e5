"""Position embeddings: fixed 2D sin-cos tables and the 2D resampling of learned ones (Section 3.2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..configs import to_pair

RESAMPLE_METHODS = ("bilinear", "bicubic", "bicubic-antialias", "nearest")


def sincos_2d(grid_size, width: int, temperature: float = 10_000.0, dtype=torch.float32, span=None) -> torch.Tensor:
    """Fixed 2D sin-cos embeddings (MoCo v3, big_vision): (gh * gw, width), rows major.

    A quarter of the channels each: sin(x), cos(x), sin(y), cos(y), with x the column and y the row position.
    The positions are the patch indices 0 .. g - 1 (big_vision's table). With `span` = (Gh, Gw), the grid covers
    the image that a Gh x Gw grid covers, and each patch sits at the position of its centre on that grid,
    (i + 1/2) * G / g - 1/2: a smaller input of the same image (progressive resolution) gives each image region
    the embedding it has at full size, as resampling does for learned embeddings.
    """
    gh, gw = to_pair(grid_size)
    if width % 4:
        raise ValueError(f"sin-cos 2D embeddings need a width divisible by 4, got {width}")
    span_h, span_w = to_pair(span) if span is not None else (gh, gw)
    rows = (torch.arange(gh, dtype=torch.float64) + 0.5) * (span_h / gh) - 0.5
    cols = (torch.arange(gw, dtype=torch.float64) + 0.5) * (span_w / gw) - 0.5
    y, x = torch.meshgrid(rows, cols, indexing="ij")
    quarter = width // 4
    omega = torch.arange(quarter, dtype=torch.float64) / max(quarter - 1, 1)
    omega = 1.0 / temperature**omega
    x = x.reshape(-1, 1) * omega  # (N, width/4)
    y = y.reshape(-1, 1) * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).to(dtype)


def resample_grid(grid: torch.Tensor, new_grid, method: str = "bicubic") -> torch.Tensor:
    """Resize a (gh, gw, D) grid of embeddings to new_grid = (h, w).

    "bilinear" uses align_corners=True, which is what the original code's `scipy.ndimage.zoom(order=1)` computes;
    "bicubic" is Hugging Face's (align_corners=False); "bicubic-antialias" is timm's (`resample_abs_pos_embed`:
    torch's antialiased bicubic, whose kernel differs from plain bicubic even when enlarging).
    """
    if method not in RESAMPLE_METHODS:
        raise ValueError(f"unknown resampling method {method!r}; expected one of {RESAMPLE_METHODS}")
    new_grid = to_pair(new_grid)
    if tuple(grid.shape[:2]) == new_grid:
        return grid
    x = interpolate_grid(grid.permute(2, 0, 1).unsqueeze(0).float(), new_grid, method)  # (1, D, gh, gw)
    return x.squeeze(0).permute(1, 2, 0).to(grid.dtype)


def interpolate_grid(x: torch.Tensor, size, method: str) -> torch.Tensor:
    """F.interpolate of a (1, D, gh, gw) float grid as `method` (RESAMPLE_METHODS) means it."""
    if method == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=method.removesuffix("-antialias"), align_corners=method == "bilinear",
                         antialias=method.endswith("-antialias"))


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid,
    num_prefix_tokens: int = 1,
    old_grid=None,
    method: str = "bicubic",
) -> torch.Tensor:
    """Interpolate learned 1D position embeddings in 2D to a new patch grid (the paper's fine-tuning at a
    higher resolution, Section 3.2).

    pos_embed: (1, num_prefix_tokens + gh * gw, D) or the same without the leading 1. The prefix (class-token)
    slots are kept as they are. `old_grid` defaults to a square grid; non-square grids work in and out.
    """
    squeeze = pos_embed.dim() == 2
    if squeeze:
        pos_embed = pos_embed.unsqueeze(0)
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, tokens, width), got {tuple(pos_embed.shape)}")
    prefix, grid_tokens = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    n = grid_tokens.shape[0]
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"cannot infer the old grid: {n} patch embeddings (after {num_prefix_tokens} prefix tokens) "
                "is not a square; pass old_grid=(h, w)"
            )
        old_grid = (side, side)
    old_grid = to_pair(old_grid)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"old_grid {old_grid} holds {old_grid[0] * old_grid[1]} positions, pos_embed has {n}")
    grid = grid_tokens.reshape(old_grid[0], old_grid[1], -1)
    grid = resample_grid(grid, new_grid, method).reshape(1, -1, grid.shape[-1])
    out = torch.cat([prefix, grid], dim=1)
    return out.squeeze(0) if squeeze else out


def resample_axis(embed: torch.Tensor, length: int, method: str = "bicubic") -> torch.Tensor:
    """Resize a (n, D) table of per-row or per-column embeddings to (length, D)."""
    if embed.shape[0] == length:
        return embed
    mode = "nearest" if method == "nearest" else "linear"  # 1D has no bicubic
    x = embed.t().unsqueeze(0).float()  # (1, D, n)
    kwargs = {"align_corners": method == "bilinear"} if mode == "linear" else {}
    x = F.interpolate(x, size=length, mode=mode, **kwargs)
    return x.squeeze(0).t().to(embed.dtype)
