"""The Vision Transformer of Dosovitskiy et al. (2020), Section 3.1, Eq. 1-4, readable top to bottom.

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos                 (1)  patch embedding, class token, positions
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                               (2)  attention block, pre-norm, residual
    z_l = MLP(LN(z'_l)) + z'_l                                      (3)  MLP block (two layers, GELU)
    y = LN(z_L^0)                                                   (4)  the class token's final state -> head

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

    def __init__(self, in_channels: int, width: int, patch_size: tuple[int, int]):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

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


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for whole samples, scaling the kept ones by 1 / keep."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"rate={self.rate}"


class Block(nn.Module):
    """One encoder block, Eq. 2 and 3: LayerNorm before each sub-block, residual after it."""

    def __init__(self, config: ViTConfig, drop_path: float = 0.0):
        super().__init__()
        c = config
        self.norm1 = nn.LayerNorm(c.width, eps=c.layer_norm_eps)
        self.attn = Attention(c.width, c.num_heads, c.qkv_bias, c.attention_dropout, c.dropout)
        self.norm2 = nn.LayerNorm(c.width, eps=c.layer_norm_eps)
        self.mlp = Mlp(c.width, c.mlp_dim, c.gelu, c.dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_prefix(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """The block's output for the first `n` tokens only, (B, n, D): what `forward(x)[:, :n]` computes, without
        the attention output, MLP and norm of the other tokens (which attend to nothing further)."""
        x = x[:, :n] + self.drop_path(self.attn(self.norm1(x), num_queries=n))
        return x + self.drop_path(self.mlp(self.norm2(x)))


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
        self.patch_embed = PatchEmbed(embed_in, c.width, c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width)) if c.class_token else None

        gh, gw = c.grid_size
        self.pos_embed = self.pos_embed_row = self.pos_embed_col = None
        if c.posemb == "learned":
            n = gh * gw + (c.num_prefix_tokens if c.posemb_prefix else 0)
            self.pos_embed = nn.Parameter(torch.zeros(1, n, c.width))
        elif c.posemb == "learned_2d":
            self.pos_embed_row = nn.Parameter(torch.zeros(gh, c.width // 2))  # Y-embedding, one per patch row
            self.pos_embed_col = nn.Parameter(torch.zeros(gw, c.width // 2))  # X-embedding, one per patch column
        elif c.posemb == "sincos_2d":
            self.register_buffer("pos_embed_fixed", sincos_2d((gh, gw), c.width).unsqueeze(0), persistent=False)
        self.pos_drop = nn.Dropout(c.dropout)

        rates = [c.drop_path * i / max(c.depth - 1, 1) for i in range(c.depth)]  # stochastic depth, linear in depth
        self.blocks = nn.Sequential(*[Block(c, rate) for rate in rates])
        self.norm = nn.LayerNorm(c.width, eps=c.layer_norm_eps)  # before pooling, or after it (norm_after_pool)

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
        """The embeddings added for a patch grid: (1, [prefix +] gh * gw, D), or None for posemb='none'.

        They cover the prefix tokens only for posemb='learned' with posemb_prefix (the paper's layout).
        """
        c = self.config
        grid = tuple(grid or self.grid_size)
        if c.posemb == "learned":
            if grid == tuple(self.grid_size):
                return self.pos_embed
            prefix = c.num_prefix_tokens if c.posemb_prefix else 0
            return resample_pos_embed(self.pos_embed, grid, prefix, old_grid=self.grid_size,
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
            return sincos_2d(grid, c.width, dtype=self.pos_embed_fixed.dtype).to(self.pos_embed_fixed.device)[None]
        return None

    def _posemb_covers_prefix(self) -> bool:
        return self.config.posemb == "learned" and self.config.posemb_prefix

    # ------------------------------------------------------------------------------------------------ forward
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> z_0 (B, prefix + N, D), Eq. 1."""
        if images.dim() != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        grid = self._grid_for(images.shape[-2], images.shape[-1])
        x = self.stem(images) if self.stem is not None else images  # (B, C', H/s, W/s) for hybrids
        x = self.patch_embed(x)  # (B, N, D)
        pos = self.position_embeddings(grid)
        if self.cls_token is not None:
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            if self._posemb_covers_prefix():
                x = torch.cat([cls, x], dim=1) + pos
            else:
                x = torch.cat([cls, x if pos is None else x + pos], dim=1)
        elif pos is not None:
            x = x + pos
        if self.training and self.config.patch_dropout > 0:
            x = self._drop_patches(x)
        return self.pos_drop(x)

    def _drop_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Training only (PatchDropout, Liu et al. 2022; timm's patch_drop_rate): keep a random subset of each
        image's patch tokens, after their position embeddings were added, so the encoder runs on fewer tokens.
        The prefix tokens always stay."""
        prefix = self.num_prefix_tokens
        n = x.shape[1] - prefix
        keep = max(1, int(round(n * (1.0 - self.config.patch_dropout))))
        if keep >= n:
            return x
        order = torch.rand(x.shape[0], n, device=x.device).argsort(dim=1)[:, :keep]
        patches = x[:, prefix:].gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return torch.cat([x[:, :prefix], patches], dim=1) if prefix else patches

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """All tokens after the encoder, (B, prefix + N, D); normalised unless norm_after_pool."""
        x = self.blocks(self.embed(images))
        return x if self.config.norm_after_pool else self.norm(x)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.config.pool == "token":
            return tokens[:, 0]  # the class token, (B, D)
        return tokens[:, self.num_prefix_tokens:].mean(dim=1)  # mean of the patch tokens, (B, D)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled tokens -> logits; with pre_logits=True, the representation the head sees."""
        x = self.pool(tokens)
        if self.config.norm_after_pool:
            x = self.norm(x)
        x = self.pre_logits(x)
        return x if pre_logits else self.head(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._class_token_shortcut():
            # Inference with the class token's head: the last block's outputs for the patch tokens feed nothing,
            # so it computes the class token's alone (its keys and values still come from every token). Same
            # function; about 6% less work for ViT-B/16.
            return self._forward_class_token_only(images)
        return self.forward_head(self.forward_features(images))

    def _forward_class_token_only(self, images: torch.Tensor) -> torch.Tensor:
        x = self.blocks[:-1](self.embed(images))
        return self.forward_head(self.norm(self.blocks[-1].forward_prefix(x, 1)))

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
        """Drop the head and attach a zero-initialised one for `num_classes` (the paper's fine-tuning, Sec. 3.2)."""
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        self.config = self.config.replace(num_classes=num_classes)
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=device, dtype=dtype)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        else:
            self.head = nn.Identity()
        self.class_names = None

    @torch.no_grad()
    def set_image_size(self, image_size, method: str = "bicubic") -> None:
        """Change the input size the model expects, resampling learned position embeddings in place."""
        c = self.config
        new_config = c.replace(image_size=to_pair(image_size))  # validates divisibility
        new_grid, old_grid = new_config.grid_size, c.grid_size
        if c.posemb == "learned":
            prefix = c.num_prefix_tokens if c.posemb_prefix else 0
            self.pos_embed = nn.Parameter(resample_pos_embed(self.pos_embed.data, new_grid, prefix, old_grid, method))
        elif c.posemb == "learned_2d":
            self.pos_embed_row = nn.Parameter(resample_axis(self.pos_embed_row.data, new_grid[0], method))
            self.pos_embed_col = nn.Parameter(resample_axis(self.pos_embed_col.data, new_grid[1], method))
        elif c.posemb == "sincos_2d":
            buf = self.pos_embed_fixed
            self.pos_embed_fixed = sincos_2d(new_grid, c.width, dtype=buf.dtype).to(buf.device)[None]
        self.config = new_config
        self.preprocessing.image_size = new_config.image_size

    def no_weight_decay(self) -> set[str]:
        """Parameters the paper's recipes exempt from weight decay, besides biases and norms."""
        return {name for name in ("cls_token", "pos_embed", "pos_embed_row", "pos_embed_col")
                if getattr(self, name) is not None}

    def attention_layers(self) -> list[Attention]:
        return [block.attn for block in self.blocks]

    # --------------------------------------------------------------------------------------------- init
    @torch.no_grad()
    def init_weights(self) -> None:
        """The original code's initialisation: Xavier-uniform dense kernels, MLP biases N(0, 1e-6), position
        embeddings N(0, 0.02), zero class token, LeCun-normal patch embedding, and a zero head."""
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
        proj = self.patch_embed.proj
        _lecun_normal_(proj.weight, proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1])
        nn.init.zeros_(proj.bias)
        for p in (self.pos_embed, self.pos_embed_row, self.pos_embed_col):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        if self.stem is not None:
            self.stem.init_weights()
