"""PNG views over the arrays that `vitkit.inspect` computes. The only module of vitkit that imports matplotlib; it
uses the object-oriented API with the Agg canvas, so it never touches pyplot's global state or the user's backend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Written whole or not at all (a temporary file renamed over `path`)."""
    from ..files import atomic_path

    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def upsample(map_2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (gh, gw) map resized bilinearly to (H, W) pixels, for drawing over the image."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(map_2d, dtype=np.float32))[None, None]
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def _mosaic(tiles: np.ndarray, columns: int, gap: int = 1, fill=np.nan) -> np.ndarray:
    """Tiles (n, h, w[, c]) laid out in rows of `columns`, separated by `gap` cells of `fill`."""
    n, h, w = tiles.shape[:3]
    rows = -(-n // columns)
    extra = tiles.shape[3:]
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, *extra), fill, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, columns)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[i]
    return out


def plot_attention_rollout(pixels: np.ndarray, maps: np.ndarray, path, titles: list[str] | None = None) -> Path:
    """The paper's Figure 6: each image, its rollout map as a heat map over it, and the image weighted by the map.
    pixels uint8 (B, H, W, C); maps (B, gh, gw), each scaled to a maximum of 1."""
    count = len(maps)
    figure = _figure(7.5, 2.6 * count)
    for i in range(count):
        image = _as_rgb(pixels[i])
        mask = upsample(maps[i], image.shape[:2])
        mask = mask / max(float(mask.max()), 1e-12)
        panels = [(image, "input" if not titles else titles[i]), (None, "attention rollout"),
                  ((image * mask[..., None]).astype(np.uint8), "input x rollout")]
        for j, (content, title) in enumerate(panels):
            axes = figure.add_subplot(count, 3, 3 * i + j + 1)
            if content is None:
                axes.imshow(image)
                axes.imshow(mask, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            else:
                axes.imshow(content)
            axes.set_title(title, fontsize=9)
            axes.axis("off")
    figure.tight_layout()
    return _save(figure, path)


def plot_class_token_attention(pixels: np.ndarray, maps: np.ndarray, path, layers: list[int] | None = None,
                               title: str = "class token attention to the patches") -> Path:
    """The class token's attention to the patches: one row per layer, one column per head, each map scaled to its
    own maximum, beside the image. pixels uint8 (H, W, C); maps (layers, heads, gh, gw)."""
    num_layers, num_heads, gh, gw = maps.shape
    layers = list(range(num_layers)) if layers is None else layers
    scaled = maps / np.maximum(maps.reshape(num_layers, num_heads, -1).max(-1), 1e-12)[..., None, None]
    mosaic = _mosaic(scaled.reshape(-1, gh, gw), columns=num_heads)
    figure = _figure(2.0 + 0.8 * num_heads, 0.8 * num_layers + 0.8)
    grid = figure.add_gridspec(1, 2, width_ratios=[1.6, 0.8 * num_heads])
    axes = figure.add_subplot(grid[0, 0])
    axes.imshow(_as_rgb(pixels))
    axes.set_title("input", fontsize=9)
    axes.axis("off")
    axes = figure.add_subplot(grid[0, 1])
    axes.imshow(np.ma.masked_invalid(mosaic), cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
    axes.set_xticks([(gw + 1) * j + (gw - 1) / 2 for j in range(num_heads)], [f"head {j}" for j in range(num_heads)],
                    fontsize=7)
    axes.set_yticks([(gh + 1) * i + (gh - 1) / 2 for i in range(num_layers)], [f"layer {k}" for k in layers],
                    fontsize=7)
    axes.tick_params(length=0)
    for side in axes.spines.values():
        side.set_visible(False)
    axes.set_title(f"{title} (each map scaled to its maximum)", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_attention_distance(distances: np.ndarray, path, image_size: tuple[int, int] | None = None,
                            layers: list[int] | None = None, uniform: float | None = None) -> Path:
    """The paper's Figure 7 right: mean attention distance of every head against network depth.
    distances (layers, heads) in pixels; `uniform`, the distance of uniform attention, drawn as a dashed line."""
    num_layers, num_heads = distances.shape
    depth = np.arange(num_layers) if layers is None else np.asarray(layers)
    figure = _figure(5.0, 4.0)
    axes = figure.add_subplot(1, 1, 1)
    from matplotlib import colormaps

    cmap = colormaps["tab20"] if num_heads > 10 else colormaps["tab10"]
    for head in range(num_heads):
        axes.scatter(depth, distances[:, head], s=14, color=cmap(head % cmap.N), label=f"head {head}")
    if uniform is not None:
        axes.axhline(uniform, color="grey", linestyle="--", linewidth=1, label="uniform attention")
    top = 1.05 * float(np.max(distances)) if distances.size else 1.0
    if image_size is not None:  # half the image diagonal, or more where a head looks further
        top = max(top, float(np.hypot(*image_size)) / 2)
    axes.set_ylim(0, top)
    axes.set_xlabel("network depth (layer)")
    axes.set_ylabel("mean attention distance (pixels)")
    axes.set_xticks(depth)
    if num_heads <= 16:
        axes.legend(fontsize=6, ncol=2, loc="lower right", frameon=False)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def plot_position_similarity(similarity: np.ndarray, path) -> Path:
    """The paper's Figure 7 centre: for each patch position (row, column), a small map of its position embedding's
    cosine similarity to every position. similarity (gh, gw, gh, gw)."""
    gh, gw = similarity.shape[:2]
    mosaic = _mosaic(similarity.reshape(gh * gw, gh, gw), columns=gw)
    figure = _figure(5.5, 5.0 * gh / gw)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(np.ma.masked_invalid(mosaic), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    axes.set_xticks([(gw + 1) * j + (gw - 1) / 2 for j in range(gw)], [str(j + 1) for j in range(gw)], fontsize=7)
    axes.set_yticks([(gh + 1) * i + (gh - 1) / 2 for i in range(gh)], [str(i + 1) for i in range(gh)], fontsize=7)
    axes.tick_params(length=0)
    for side in axes.spines.values():
        side.set_visible(False)
    axes.set_xlabel("input patch column")
    axes.set_ylabel("input patch row")
    axes.set_title("position embedding similarity", fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="cosine similarity")
    return _save(figure, path)


def plot_filters(components: np.ndarray, path, columns: int = 7, explained: np.ndarray | None = None) -> Path:
    """The paper's Figure 7 left: principal components of the embedding filters as tiles, each scaled on its own
    so that zero is mid-grey and its largest magnitude reaches black or white (a colour's sign stays visible).
    components (n, C, ph, pw); RGB for 3 channels, grey otherwise (the mean over channels)."""
    n, channels, ph, pw = components.shape
    tiles = components.transpose(0, 2, 3, 1)  # (n, ph, pw, C)
    if channels != 3:
        tiles = np.repeat(tiles.mean(axis=-1, keepdims=True), 3, axis=-1)
    peak = np.abs(tiles).reshape(n, -1).max(axis=1)[:, None, None, None]
    tiles = 0.5 + 0.5 * tiles / np.maximum(peak, 1e-12)  # zero is mid-grey, so colours keep their sign
    columns = min(columns, n)
    mosaic = _mosaic(tiles, columns=columns, gap=max(ph // 8, 1), fill=1.0)
    rows = -(-n // columns)
    figure = _figure(1.0 * columns, 1.0 * rows + 0.5)
    axes = figure.add_subplot(1, 1, 1)
    axes.imshow(mosaic, interpolation="nearest")
    axes.axis("off")
    title = f"RGB embedding filters (first {n} principal components)" if channels == 3 else \
        f"embedding filters (first {n} principal components, mean over {channels} channels)"
    if explained is not None:
        title += f"\n{100 * float(np.sum(explained)):.0f}% of the filters' variance"
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, path, dpi=120)
