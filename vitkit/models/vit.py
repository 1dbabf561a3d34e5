"""The Vision Transformer of Dosovitskiy et al. (2020), Section 3.1, Eq. 1-4, readable top to bottom.

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos                 (1)  patch embedding, class token, positions
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                               (2)  attention block, pre-norm, residual
    z_l = MLP(LN(z'_l)) + z'_l                                      (3)  MLP block (two layers, GELU)
    y = LN(z_L^0)                                                   (4)  the class token's final state -> head

Options of later ViTs, all in `ViTConfig` (off by default): a distillation token and head (DeiT), register tokens
(Darcet et al. 2023), a LayerNorm before the encoder (CLIP's `norm_pre`), LayerScale on each residual branch (CaiT,
DeiT III), and attention pooling by a learned query (pool="map", big_vision's MAP head).

State-dict names follow timm (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.attn.qkv`, ...), the names
most PyTorch users already know; the adapters in `vitkit.checkpoints` translate every other layout.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import Preprocessing, ViTConfig, to_pair
from .fast import attention, fast_path_enabled, hooks_watch, is_tracing, linear
from .posemb import resample_axis, resample_pos_embed, sincos_2d
from .resnet import ResNetStem, _lecun_normal_


class PatchEmbed(nn.Module):
    """Eq. 1's linear projection E of flattened patches, as a conv whose kernel and stride are the patch size."""

    def __init__(self, in_channels: int, width: int, patch_size: tuple[int, int], bias: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2)  # (B, gh * gw, D)


class Attention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and `scaled_dot_product_attention`.

    Set `keep_weights = True` on a layer to have it also compute and keep its attention weights
    (`last_weights`, (B, heads, N, N)) on the next forward; the other layers keep the fast path.
    """

    def __init__(self, width: int, num_heads: int, qkv_bias: bool = True, attention_dropout: float = 0.0,
                 dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.attention_dropout = attention_dropout
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)
        self.keep_weights = False
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); with `num_queries` n, the outputs of the first n tokens only, (B, n, D) (every
        token is still a key and a value)."""
        B, N, D = x.shape
        qkv = linear(x, self.qkv).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim), views of the one projection
        if num_queries is not None:
            q = q[:, :, :num_queries]
        dropout_p = self.attention_dropout if self.training else 0.0
        x, weights = attention(q, k, v, dropout_p, keep_weights=self.keep_weights)  # (B, heads, n, head_dim)
        if self.keep_weights:
            self.last_weights = weights.detach()
        x = x.transpose(1, 2).reshape(B, q.shape[2], D)
        return self.proj_drop(linear(x, self.proj))


class Mlp(nn.Module):
    """Two dense layers with GELU between, dropout after each (the original's MlpBlock)."""

    def __init__(self, width: int, mlp_dim: int, gelu: str = "exact", dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(width, mlp_dim)
        self.act = nn.GELU(approximate="tanh" if gelu == "tanh" else "none")
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(mlp_dim, width)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x):
        if isinstance(self.act, nn.GELU):
            activation = "gelu_tanh" if self.act.approximate == "tanh" else "gelu"
            x = linear(x, self.fc1, activation)  # fc1 and GELU in one call on the fast path
        else:
            x = self.act(linear(x, self.fc1))
        return self.drop2(linear(self.drop1(x), self.fc2))


def shared_uniforms(shared: tuple[int, int, int], key: tuple[int, ...], rows: int, *shape: int,
                    device=None) -> torch.Tensor:
    """Uniforms for `rows` samples at rows offset .. offset + rows of a global batch of `total`, where `shared` =
    (seed, offset, total): every process draws the global batch's numbers from a generator seeded by (seed, key)
    and keeps its rows, so the masks do not depend on how the batch is split over processes. Seeding by the key
    (not advancing a generator) also gives the same numbers when activation checkpointing recomputes a block."""
    seed, offset, total = shared
    generator = torch.Generator(device=device)
    generator.manual_seed(hash((seed, *key)) & ((1 << 63) - 1))  # hash of ints: the same in every process
    return torch.rand((total, *shape), generator=generator, device=device)[offset:offset + rows]


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples, scaling the kept ones by 1 / keep.

    The masks come from torch's generator, or, with `shared` = (seed, offset, total) set (by
    `VisionTransformer.share_masks`), from `shared_uniforms` keyed by this module's `index` and the branch."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate
        self.index = 0
        self.shared: tuple[int, int, int] | None = None

    def forward(self, x, branch: int = 0):
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        return x * self._mask(x, keep, branch) / keep

    @torch.compiler.disable  # eager under torch.compile: traced, the step's seed in `shared` would be a constant
    def _mask(self, x: torch.Tensor, keep: float, branch: int) -> torch.Tensor:  # and every step a recompile
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        if self.shared is not None:
            uniforms = shared_uniforms(self.shared, (self.index, branch), x.shape[0], device=x.device)
            return (uniforms < keep).to(x.dtype).view(shape)
        return x.new_empty(shape).bernoulli_(keep)

    def extra_repr(self):
        return f"rate={self.rate}"


class LayerScale(nn.Module):
    """Per-channel scales on a residual branch (CaiT, DeiT III; timm's `ls1` / `ls2`), initialised to a constant."""

    def __init__(self, width: int, init_value: float):
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((width,), float(init_value)))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    """One encoder block, Eq. 2 and 3: LayerNorm before each sub-block, residual after it (with LayerScale, each
    branch is scaled per channel before the residual sum)."""

    def __init__(self, config: ViTConfig, drop_path: float = 0.0):
        super().__init__()
        c = config
        self.norm1 = nn.LayerNorm(c.width, eps=c.layer_norm_eps)
        self.attn = Attention(c.width, c.num_heads, c.qkv_bias, c.attention_dropout, c.dropout)
        self.ls1 = LayerScale(c.width, c.layer_scale) if c.layer_scale is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(c.width, eps=c.layer_norm_eps)
        self.mlp = Mlp(c.width, c.mlp_dim, c.gelu, c.dropout)
        self.ls2 = LayerScale(c.width, c.layer_scale) if c.layer_scale is not None else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))), branch=0)
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))), branch=1)

    def forward_prefix(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """The block's output for the first `n` tokens only, (B, n, D): what `forward(x)[:, :n]` computes, without
        the attention output, MLP and norm of the other tokens (which attend to nothing further)."""
        x = x[:, :n] + self.drop_path(self.ls1(self.attn(self.norm1(x), num_queries=n)), branch=0)
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))), branch=1)


class AttentionPool(nn.Module):
    """Multi-head attention pooling (MAP: big_vision's MAPHead, timm's AttentionPoolLatent with one latent query):
    a learned query attends over the tokens; the result is projected, then refined by a pre-norm MLP with a
    residual. (B, N, D) -> (B, D). Parameter names follow timm (`latent`, `q`, `kv`, `proj`, `norm`, `mlp`)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        c = config
        self.num_heads = c.num_heads
        self.head_dim = c.head_dim
        self.latent = nn.Parameter(torch.zeros(1, 1, c.width))  # the query token, (1, 1, D)
        self.q = nn.Linear(c.width, c.width)
        self.kv = nn.Linear(c.width, 2 * c.width)
        self.proj = nn.Linear(c.width, c.width)
        self.norm = nn.LayerNorm(c.width, eps=c.layer_norm_eps)
        self.mlp = Mlp(c.width, c.mlp_dim, c.gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q = linear(self.latent, self.q).reshape(1, 1, self.num_heads, self.head_dim).transpose(1, 2)  # (1, heads, 1, d)
        kv = linear(x, self.kv).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each (B, heads, N, head_dim)
        x, _ = attention(q.expand(B, -1, -1, -1), k, v)  # (B, heads, 1, head_dim)
        x = linear(x.transpose(1, 2).reshape(B, 1, D), self.proj)  # (B, 1, D)
        x = x + self.mlp(self.norm(x))
        return x[:, 0]  # (B, D)


class VisionTransformer(nn.Module):
    """ViT and its hybrid. `model(images)` -> logits; images (B, C, H, W), preprocessed as
    `model.preprocessing` says."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.preprocessing = Preprocessing(image_size=c.image_size)
        self.class_names: list[str] | None = None
        self.resample_method = "bicubic"  # used by dynamic image size

        self.stem = ResNetStem(c.resnet, c.in_channels) if c.resnet is not None else None
        embed_in = self.stem.out_channels if self.stem is not None else c.in_channels
        self.patch_embed = PatchEmbed(embed_in, c.width, c.patch_size, bias=not c.norm_pre)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width)) if c.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, c.width)) if c.dist_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, c.num_reg_tokens, c.width)) if c.num_reg_tokens else None

        gh, gw = c.grid_size
        self.pos_embed = self.pos_embed_row = self.pos_embed_col = None
        if c.posemb == "learned":
            n = c.num_posemb_prefix_tokens + gh * gw
            self.pos_embed = nn.Parameter(torch.zeros(1, n, c.width))
        elif c.posemb == "learned_2d":
            self.pos_embed_row = nn.Parameter(torch.zeros(gh, c.width // 2))  # Y-embedding, one per patch row
            self.pos_embed_col = nn.Parameter(torch.zeros(gw, c.width // 2))  # X-embedding, one per patch column
        elif c.posemb == "sincos_2d":
            self.register_buffer("pos_embed_fixed", sincos_2d((gh, gw), c.width).unsqueeze(0), persistent=False)
        self.pos_drop = nn.Dropout(c.dropout)
        self.norm_pre = nn.LayerNorm(c.width, eps=c.layer_norm_eps) if c.norm_pre else None

        rates = [c.drop_path * i / max(c.depth - 1, 1) for i in range(c.depth)]  # stochastic depth, linear in depth
        self.blocks = nn.Sequential(*[Block(c, rate) for rate in rates])
        for i, block in enumerate(self.blocks):
            block.drop_path.index = i
        self.shared_masks: tuple[int, int, int] | None = None  # see share_masks
        self.norm = nn.LayerNorm(c.width, eps=c.layer_norm_eps)  # before pooling, or after it (norm_after_pool)
        self.attn_pool = AttentionPool(c) if c.pool == "map" else None

        features = c.width
        if c.representation_size:
            self.pre_logits = nn.Sequential(
                OrderedDict(fc=nn.Linear(c.width, c.representation_size), act=nn.Tanh())
            )
            features = c.representation_size
        else:
            self.pre_logits = nn.Identity()
        self.num_features = features
        self.head = nn.Linear(features, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.head_dist = None  # DeiT's distillation head, on the distillation token
        if c.dist_head:
            self.head_dist = nn.Linear(features, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.init_weights()

    # ----------------------------------------------------------------------------------------------- shapes
    @property
    def num_prefix_tokens(self) -> int:
        return self.config.num_prefix_tokens

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.config.grid_size

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def _grid_for(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid for an input, or a clear error where the input does not fit the model."""
        c = self.config
        step = (c.patch_size[0] * c.stem_stride, c.patch_size[1] * c.stem_stride)
        if not c.dynamic_image_size and (height, width) != tuple(c.image_size):  # no size test when traced at any size
            raise ValueError(
                f"input size ({height}, {width}) does not match the model's image size {tuple(c.image_size)}; "
                "resize the input, call model.set_image_size(...), or create the model with dynamic_image_size=True"
            )
        if height % step[0] or width % step[1]:
            raise ValueError(f"input size ({height}, {width}) is not a multiple of the effective patch size {step}")
        return (height // step[0], width // step[1])

    # --------------------------------------------------------------------------------------- position embeddings
    def position_embeddings(self, grid: tuple[int, int] | None = None) -> torch.Tensor | None:
        """The embeddings added for a patch grid: (1, [covered prefix +] gh * gw, D), or None for posemb='none'.

        They cover the class and distillation tokens only for posemb='learned' with posemb_prefix (the paper's
        layout; `config.num_posemb_prefix_tokens` slots), and the register tokens never.
        """
        c = self.config
        grid = tuple(grid or self.grid_size)
        if c.posemb == "learned":
            if grid == tuple(self.grid_size):
                return self.pos_embed
            return resample_pos_embed(self.pos_embed, grid, c.num_posemb_prefix_tokens, old_grid=self.grid_size,
                                      method=self.resample_method)
        if c.posemb == "learned_2d":
            rows = resample_axis(self.pos_embed_row, grid[0], self.resample_method)  # (gh, D/2)
            cols = resample_axis(self.pos_embed_col, grid[1], self.resample_method)  # (gw, D/2)
            half = rows.shape[1]
            table = torch.cat([rows[:, None, :].expand(-1, grid[1], half), cols[None, :, :].expand(grid[0], -1, half)],
                              dim=-1)  # (gh, gw, D)
            return table.reshape(1, grid[0] * grid[1], c.width)
        if c.posemb == "sincos_2d":
            if grid == tuple(self.grid_size):
                return self.pos_embed_fixed
            # another input size of the same image (dynamic_image_size, progressive resolution): each patch at
            # the position of its centre on the model's grid, so an image region keeps its embedding
            table = sincos_2d(grid, c.width, dtype=self.pos_embed_fixed.dtype, span=self.grid_size)
            return table.to(self.pos_embed_fixed.device)[None]
        return None

    def _posemb_covers_prefix(self) -> bool:
        return self.config.posemb == "learned" and self.config.posemb_prefix

    # ------------------------------------------------------------------------------------------------ forward
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> z_0 (B, prefix + N, D), Eq. 1; the prefix is [class], [distillation], registers.
        With norm_pre, z_0 is normalised here, before the encoder."""
        if images.dim() != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        grid = self._grid_for(images.shape[-2], images.shape[-1])
        x = self.stem(images) if self.stem is not None else images  # (B, C', H/s, W/s) for hybrids
        x = self.patch_embed(x)  # (B, N, D)
        B = x.shape[0]
        pos = self.position_embeddings(grid)  # (1, covered + N, D) or None
        covered = self.config.num_posemb_prefix_tokens
        if pos is not None:
            x = x + pos[:, covered:]
        prefix = [t for t in (self.cls_token, self.dist_token) if t is not None]
        if prefix:
            lead = torch.cat(prefix, dim=1) if len(prefix) > 1 else prefix[0]  # (1, 1 or 2, D)
            if covered:
                lead = lead + pos[:, :covered]
            prefix = [lead.expand(B, -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(B, -1, -1))  # registers: no position embeddings
        if prefix:
            x = torch.cat(prefix + [x], dim=1)  # (B, prefix + N, D)
        if self.training and self.config.patch_dropout > 0:
            x = self._drop_patches(x)
        x = self.pos_drop(x)
        return self.norm_pre(x) if self.norm_pre is not None else x

    def _drop_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Training only (PatchDropout, Liu et al. 2022; timm's patch_drop_rate): keep a random subset of each
        image's patch tokens, after their position embeddings were added, so the encoder runs on fewer tokens.
        The prefix tokens always stay."""
        prefix = self.num_prefix_tokens
        n = x.shape[1] - prefix
        keep = max(1, int(round(n * (1.0 - self.config.patch_dropout))))
        if keep >= n:
            return x
        order = self._patch_uniforms(x.shape[0], n, x.device).argsort(dim=1)[:, :keep]
        patches = x[:, prefix:].gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return torch.cat([x[:, :prefix], patches], dim=1) if prefix else patches

    @torch.compiler.disable  # eager under torch.compile: traced, the step's seed in `shared_masks` would be a
    def _patch_uniforms(self, rows: int, n: int, device) -> torch.Tensor:  # constant and every step a recompile
        if self.shared_masks is not None:
            return shared_uniforms(self.shared_masks, (-1,), rows, n, device=device)
        return torch.rand(rows, n, device=device)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """All tokens after the encoder, (B, prefix + N, D); normalised unless norm_after_pool."""
        x = self.blocks(self.embed(images))
        return x if self.config.norm_after_pool else self.norm(x)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.config.pool == "token":
            return tokens[:, 0]  # the class token, (B, D)
        patches = tokens[:, self.num_prefix_tokens:]  # (B, N, D)
        if self.config.pool == "map":
            return self.attn_pool(patches)  # (B, D)
        return patches.mean(dim=1)  # mean of the patch tokens, (B, D)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, prefix + N, D) -> logits; with pre_logits=True, the representation the head sees."""
        if self.config.dist_head:
            # DeiT: one head on the class token, one on the distillation token; the logits are their mean (timm's
            # VisionTransformerDistilled outside distillation training, Hugging Face's ...WithTeacher)
            x, x_dist = tokens[:, 0], tokens[:, 1]  # each (B, D)
            if pre_logits:
                return (x + x_dist) / 2
            return (self.head(x) + self.head_dist(x_dist)) / 2
        x = self.pool(tokens)
        if self.config.norm_after_pool:
            x = self.norm(x)
        x = self.pre_logits(x)
        return x if pre_logits else self.head(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._class_token_shortcut():
            # Inference with the class token's head: the last block's outputs for the patch tokens feed nothing,
            # so it computes the class token's alone (and the distillation token's, with DeiT's second head; their
            # keys and values still come from every token). Same function; about 6% less work for ViT-B/16.
            return self._forward_class_token_only(images)
        return self.forward_head(self.forward_features(images))

    def _forward_class_token_only(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks[:-1](self.embed(images))
        n = 2 if self.config.dist_head else 1  # the tokens the heads read
        return self.forward_head(self.norm(self.blocks[-1].forward_prefix(x, n)))

    def _class_token_shortcut(self) -> bool:
        c = self.config
        if (c.pool != "token" or c.norm_after_pool or not c.class_token or self.training or torch.is_grad_enabled()
                or not fast_path_enabled() or is_tracing() or len(self.blocks) == 0):
            return False
        last = self.blocks[-1]
        # a hook on the last block or the final norm expects every token's output
        return type(last) is Block and not last.attn.keep_weights and not hooks_watch(last, self.norm)

    # ----------------------------------------------------------------------------------------- adaptation
    @torch.no_grad()
    def reset_classifier(self, num_classes: int) -> None:
        """Drop the head and attach a zero-initialised one for `num_classes` (the paper's fine-tuning, Sec. 3.2).
        DeiT's distillation head is replaced the same way (as timm does), so the logits stay the mean of both."""
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        self.config = self.config.replace(num_classes=num_classes)

        def new_head() -> nn.Module:
            if num_classes == 0:
                return nn.Identity()
            head = nn.Linear(self.num_features, num_classes, device=device, dtype=dtype)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            return head

        self.head = new_head()
        if self.head_dist is not None:
            self.head_dist = new_head()
        self.class_names = None

    @torch.no_grad()
    def set_image_size(self, image_size, method: str = "bicubic") -> None:
        """Change the input size the model expects, resampling learned position embeddings in place."""
        c = self.config
        new_config = c.replace(image_size=to_pair(image_size))  # validates divisibility
        new_grid, old_grid = new_config.grid_size, c.grid_size
        if c.posemb == "learned":
            self.pos_embed = nn.Parameter(resample_pos_embed(self.pos_embed.data, new_grid, c.num_posemb_prefix_tokens,
                                                             old_grid, method))
        elif c.posemb == "learned_2d":
            self.pos_embed_row = nn.Parameter(resample_axis(self.pos_embed_row.data, new_grid[0], method))
            self.pos_embed_col = nn.Parameter(resample_axis(self.pos_embed_col.data, new_grid[1], method))
        elif c.posemb == "sincos_2d":  # big_vision's table for the new grid (positions 0 .. g - 1), as its fine-tuning
            buf = self.pos_embed_fixed
            self.pos_embed_fixed = sincos_2d(new_grid, c.width, dtype=buf.dtype).to(buf.device)[None]
        self.config = new_config
        self.preprocessing.image_size = new_config.image_size

    def share_masks(self, shared: tuple[int, int, int] | None) -> None:
        """Training under several processes: draw the stochastic-depth and patch-dropout masks of this batch as
        rows offset .. offset + B of a global batch of `total`, from `seed`: `shared` = (seed, offset, total);
        None: from torch's generator. (Dropout's masks always come from torch's generator.)"""
        self.shared_masks = shared
        for block in self.blocks:
            block.drop_path.shared = shared

    def no_weight_decay(self) -> set[str]:
        """Parameters the paper's recipes exempt from weight decay, besides biases and norms."""
        return {name for name in ("cls_token", "dist_token", "reg_token", "pos_embed", "pos_embed_row", "pos_embed_col")
                if getattr(self, name) is not None}

    def attention_layers(self) -> list[Attention]:
        return [block.attn for block in self.blocks]

    # --------------------------------------------------------------------------------------------- init
    @torch.no_grad()
    def init_weights(self) -> None:
        """The original code's initialisation: Xavier-uniform dense kernels, MLP biases N(0, 1e-6), position
        embeddings N(0, 0.02), zero class token, LeCun-normal patch embedding, and a zero head. The later options
        as timm and their papers: distillation token N(0, 0.02), registers N(0, 1e-6) (not zero: identical
        registers would stay identical), MAP query N(0, 1 / D), LayerScale at its configured value."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if name.endswith("attn.qkv"):
                    # Xavier bounds of each of the q, k, v (D x D) kernels, not of the fused (3D x D) one
                    d = m.weight.shape[1]
                    bound = math.sqrt(6.0 / (d + m.weight.shape[0] // 3))
                    nn.init.uniform_(m.weight, -bound, bound)
                elif name.startswith("pre_logits"):
                    _lecun_normal_(m.weight, m.in_features)
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    if ".mlp." in f".{name}.":
                        nn.init.normal_(m.bias, std=1e-6)
                    else:
                        nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, LayerScale):
                nn.init.constant_(m.gamma, m.init_value)
        proj = self.patch_embed.proj
        _lecun_normal_(proj.weight, proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1])
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
        for p in (self.pos_embed, self.pos_embed_row, self.pos_embed_col):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)
        if self.dist_token is not None:
            nn.init.normal_(self.dist_token, std=0.02)
        if self.reg_token is not None:
            nn.init.normal_(self.reg_token, std=1e-6)
        if self.attn_pool is not None:
            nn.init.normal_(self.attn_pool.latent, std=self.config.width ** -0.5)
        for head in (self.head, self.head_dist):
            if isinstance(head, nn.Linear):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        if self.stem is not None:
            self.stem.init_weights()
