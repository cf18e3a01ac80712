"""Segment Anything (SAM), written for Tessera, loading the official checkpoints unchanged.

Architecture (Kirillov et al. 2023, "Segment Anything"):

- image encoder: a ViT (patch 16, absolute position embedding ``[1, S, S, C]`` for an
  ``S = img_size / 16`` token grid, decomposed relative position tables, windowed attention
  except in the global blocks) followed by a neck (1x1 conv -> LayerNorm2d -> 3x3 conv ->
  LayerNorm2d) giving image embeddings ``[B, 256, S, S]`` (64 x 64 at 1024 px input);
  MobileSAM's ``vit_t`` replaces the ViT with a TinyViT (``tiny_vit.py``);
- prompt encoder: random Fourier position encoding (2 x 128 Gaussian matrix), one learned
  embedding per point kind (negative, positive, box top-left, box bottom-right), a
  not-a-point embedding for padding, and a mask path downscaling a ``4S x 4S`` mask to
  ``S x S`` (1 -> 4 -> 16 -> 256 channels);
- mask decoder: a two-way transformer (depth 2, dim 256, MLP 2048, 8 heads) over an IoU
  token, 4 mask tokens and the prompt tokens, upscaling to ``4S x 4S`` low-resolution mask
  logits (256 x 256 at 1024 px) and an IoU head.

State-dict keys are the official ones (``image_encoder.``, ``prompt_encoder.``,
``mask_decoder.`` prefixes, bare dict), so ``sam_vit_b_01ec64.pth``, MedSAM's
``medsam_vit_b.pth`` and MobileSAM's ``mobile_sam.pt`` load with ``load_state_dict`` as they
are. Tests compare our outputs with the ``segment-anything`` package on random weights.

Inputs of ``Sam.forward``/``predict_masks``: points in the *encoder input frame* (pixels of
the resized, padded image, x then y), as the official predictor expects after its
``apply_coords``. Numpy preprocessing lives in ``tessera.pipelines.prompting``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamConfig:
    """Everything that fixes a SAM variant's shapes, plus its preprocessing.

    ``preprocessing`` is "sam" (longest side -> ``img_size``, mean/std on the 0-255
    scale, pad bottom/right) or "medsam" (squash-resize to ``img_size`` x ``img_size``,
    per-image min-max to [0, 1], box prompts only).
    """

    encoder: Literal["vit", "tiny_vit"] = "vit"
    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    # TinyViT (MobileSAM vit_t) stages
    tiny_embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    tiny_depths: tuple[int, ...] = (2, 2, 6, 2)
    tiny_num_heads: tuple[int, ...] = (2, 4, 5, 10)
    tiny_window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    # prompt encoder / mask decoder
    prompt_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # preprocessing the weights expect
    preprocessing: Literal["sam", "medsam"] = "sam"
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for 1024 px input)."""
        return self.img_size // 16

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits and of ``mask_input`` (256 at 1024 px)."""
        return 4 * self.embedding_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamConfig:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**kwargs)


CONFIGS: dict[str, SamConfig] = {
    "vit_b": SamConfig(),
    "vit_l": SamConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": SamConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "vit_t": SamConfig(encoder="tiny_vit"),  # MobileSAM
    "medsam": SamConfig(preprocessing="medsam"),  # MedSAM: ViT-B keys, its own preprocessing
    # The demo size trained here (train.py): 512 px input (the 256 px synthetic scenes
    # resized 2x, as SAM resizes every image to its input), 32 x 32 embeddings and
    # 128 x 128 mask logits. Four global blocks so the same ViT can be SAM-UNet's frozen encoder.
    "demo": SamConfig(
        img_size=512,
        embed_dim=128,
        depth=8,
        num_heads=4,
        global_attn_indexes=(1, 3, 5, 7),
        window_size=8,
        prompt_dim=128,
        decoder_mlp_dim=1024,
        decoder_num_heads=4,
        iou_head_hidden_dim=128,
    ),
}


def sam_config(name_or_config: str | SamConfig, **overrides: Any) -> SamConfig:
    """A named configuration (``vit_b``, ``vit_l``, ``vit_h``, ``vit_t``, ``medsam``,
    ``demo``) or a given one, with fields replaced by ``overrides``."""
    if isinstance(name_or_config, SamConfig):
        cfg = name_or_config
    else:
        try:
            cfg = CONFIGS[name_or_config]
        except KeyError:
            msg = f"unknown SAM variant {name_or_config!r}; known: {', '.join(CONFIGS)}"
            raise ValueError(msg) from None
    return replace(cfg, **overrides) if overrides else cfg


# ---------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------
class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (ConvNeXt style)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation between (keys ``lin1``, ``lin2``)."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between (keys ``layers.i``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


# ---------------------------------------------------------------------------------------
# image encoder (ViT)
# ---------------------------------------------------------------------------------------
def _relative_index(size: int) -> Tensor:
    """``[size, size]`` indices into a ``2*size-1`` relative table: ``q - k + size - 1``."""
    pos = torch.arange(size)
    return pos[:, None] - pos[None, :] + (size - 1)


class ViTAttention(nn.Module):
    """Multi-head self-attention over a ``[B, H, W, C]`` token grid, with decomposed
    relative position biases (MViTv2): bias(q, k) = q·R_h[qy - ky] + q·R_w[qx - kx]."""

    def __init__(self, dim: int, num_heads: int, grid: int, *, use_rel_pos: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        self.grid = grid
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, self.head_dim))
            self.register_buffer("rel_index", _relative_index(grid), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        n = h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, N, hd]
        bias = None
        if self.use_rel_pos:
            r_h = self.rel_pos_h[self.rel_index[:h, :h] if h == self.grid else _relative_index(h)]
            r_w = self.rel_pos_w[self.rel_index[:w, :w] if w == self.grid else _relative_index(w)]
            q_grid = q.reshape(b, self.num_heads, h, w, self.head_dim)
            bias_h = torch.einsum("bnyxc,ykc->bnyxk", q_grid, r_h)  # [B, heads, H, W, kH]
            bias_w = torch.einsum("bnyxc,xkc->bnyxk", q_grid, r_w)  # [B, heads, H, W, kW]
            bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(b, self.num_heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return self.proj(out)


def window_partition(x: Tensor, window: int) -> tuple[Tensor, tuple[int, int]]:
    """Split ``[B, H, W, C]`` into ``[B * nWin, window, window, C]`` windows, zero-padding
    the bottom/right so H and W divide; returns the windows and the padded (H, W)."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]) -> Tensor:
    """Inverse of :func:`window_partition` (drops the padding)."""
    hp, wp = padded_hw
    h, w = hw
    c = windows.shape[-1]
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, c)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


class ViTBlock(nn.Module):
    """Pre-norm transformer block; ``window > 0`` attends within windows, 0 globally."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int, grid: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads, window if window > 0 else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded = window_partition(x, self.window)
            x = self.attn(x)
            x = window_unpartition(x, self.window, padded, hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens, ``[B, 3, H, W]`` -> ``[B, H/p, W/p, C]``."""

    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def make_neck(in_dim: int, out_dim: int) -> nn.Sequential:
    """1x1 conv -> LayerNorm2d -> 3x3 conv -> LayerNorm2d (keys ``neck.0..3``)."""
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False),
        LayerNorm2d(out_dim),
        nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_dim),
    )


class ImageEncoderViT(nn.Module):
    """SAM's ViT image encoder: ``[B, 3, img, img]`` normalised -> ``[B, 256, S, S]``."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.img_size = cfg.img_size
        grid = cfg.img_size // cfg.patch_size
        self.global_attn_indexes = tuple(cfg.global_attn_indexes)
        self.patch_embed = PatchEmbed(cfg.patch_size, 3, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                0 if i in cfg.global_attn_indexes else cfg.window_size,
                grid,
            )
            for i in range(cfg.depth)
        )
        self.neck = make_neck(cfg.embed_dim, cfg.prompt_dim)

    def tokens(self, x: Tensor) -> Tensor:
        """Patch tokens with the absolute position embedding, ``[B, S, S, C]``."""
        return self.patch_embed(x) + self.pos_embed

    def forward(self, x: Tensor) -> Tensor:
        x = self.tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------
# prompt encoder
# ---------------------------------------------------------------------------------------
class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y) positions: sin/cos(2π (2p-1) G)."""

    def __init__(self, num_feats: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, xy01: Tensor) -> Tensor:
        """``[..., 2]`` positions in [0, 1] (x, y) -> ``[..., 2 * num_feats]``."""
        proj = (2.0 * xy01 - 1.0) @ self.positional_encoding_gaussian_matrix
        proj = 2.0 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def dense(self, h: int, w: int) -> Tensor:
        """Encoding of every cell centre of an ``h x w`` grid, ``[C, h, w]``."""
        dev = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(
            [xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1
        )  # [h, w, 2] as (x, y)
        return self.encode(grid).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Points, boxes and masks -> sparse ``[B, N, 256]`` and dense ``[B, 256, S, S]``
    embeddings. Point labels: -1 padding, 0 negative, 1 positive, 2/3 box corners."""

    num_point_embeddings = 4

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        dim = cfg.prompt_dim
        self.embed_dim = dim
        self.input_image_size = (cfg.img_size, cfg.img_size)
        self.image_embedding_size = (cfg.embedding_size, cfg.embedding_size)
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        c = cfg.mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c, kernel_size=2, stride=2),
            LayerNorm2d(c),
            nn.GELU(),
            nn.Conv2d(c, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def get_dense_pe(self) -> Tensor:
        """Position encoding of the embedding grid, ``[1, 256, S, S]``."""
        return self.pe_layer.dense(*self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: Tensor, labels: Tensor) -> Tensor:
        """``coords [B, N, 2]`` (x, y in input-frame pixels), ``labels [B, N]`` ->
        ``[B, N, 256]``. Written with masks (no in-place indexing) so it exports to ONNX."""
        h, w = self.input_image_size
        scale = torch.tensor([1.0 / w, 1.0 / h], dtype=torch.float32, device=coords.device)
        pe = self.pe_layer.encode((coords.float() + 0.5) * scale)
        lab = labels.unsqueeze(-1)
        pe = pe * (lab != -1)
        pe = pe + self.not_a_point_embed.weight * (lab == -1)
        for i in range(self.num_point_embeddings):
            pe = pe + self.point_embeddings[i].weight * (lab == i)
        return pe

    def embed_masks(self, masks: Tensor) -> Tensor:
        return self.mask_downscaling(masks)

    def no_mask_dense(self, batch: int) -> Tensor:
        h, w = self.image_embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, h, w)

    def forward(
        self,
        points: tuple[Tensor, Tensor] | None,
        boxes: Tensor | None,
        masks: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """The official predictor's prompt layout: points (plus one padding point when
        there is no box), then the two box corners."""
        coords, labels = prompts_to_points(points, boxes)
        if coords is None:
            bs = 1 if masks is None else masks.shape[0]
            sparse = torch.empty((bs, 0, self.embed_dim), device=self.no_mask_embed.weight.device)
        else:
            bs = coords.shape[0]
            sparse = self.embed_points(coords, labels)
        dense = self.embed_masks(masks) if masks is not None else self.no_mask_dense(bs)
        return sparse, dense


def prompts_to_points(
    points: tuple[Tensor, Tensor] | None, boxes: Tensor | None
) -> tuple[Tensor | None, Tensor | None]:
    """Points ``([B, N, 2], [B, N])`` and boxes ``[B, 4]`` (x0, y0, x1, y1) -> one list of
    coordinates and labels (box corners get labels 2 and 3; a padding point with label
    -1 follows the points when there is no box, as the official prompt encoder does)."""
    coords_list: list[Tensor] = []
    labels_list: list[Tensor] = []
    if points is not None:
        c, lab = points
        coords_list.append(c.float())
        labels_list.append(lab.float())
        if boxes is None:
            coords_list.append(torch.zeros(c.shape[0], 1, 2, device=c.device))
            labels_list.append(-torch.ones(c.shape[0], 1, device=c.device))
    if boxes is not None:
        b = boxes.float().reshape(-1, 2, 2)
        coords_list.append(b)
        corner = torch.tensor([[2.0, 3.0]], device=b.device).expand(b.shape[0], 2)
        labels_list.append(corner)
    if not coords_list:
        return None, None
    return torch.cat(coords_list, dim=1), torch.cat(labels_list, dim=1)


# ---------------------------------------------------------------------------------------
# mask decoder
# ---------------------------------------------------------------------------------------
class TokenAttention(nn.Module):
    """Attention with q/k/v projections to ``dim / downsample`` (keys q_proj, k_proj,
    v_proj, out_proj)."""

    def __init__(self, dim: int, num_heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class TwoWayBlock(nn.Module):
    """Tokens self-attend, attend to the image, MLP; then the image attends to tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.skip_first_layer_pe = skip_first_pe
        self.self_attn = TokenAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TokenAttention(dim, num_heads, 2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = TokenAttention(dim, num_heads, 2)

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, num_heads, mlp_dim, skip_first_pe=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = TokenAttention(dim, num_heads, 2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: Tensor, image_pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``image``/``image_pe`` ``[B, C, h, w]``, tokens ``[B, T, C]`` ->
        (tokens ``[B, T, C]``, image tokens ``[B, h*w, C]``)."""
        keys = image.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attn = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class MaskDecoder(nn.Module):
    """Image + prompt embeddings -> mask logits ``[B, 4, 4S, 4S]`` and IoU ``[B, 4]``
    (index 0: the single-mask output; 1..3: the multimask outputs)."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        dim = cfg.prompt_dim
        self.transformer_dim = dim
        self.transformer = TwoWayTransformer(
            cfg.decoder_depth, dim, cfg.decoder_num_heads, cfg.decoder_mlp_dim
        )
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth)

    def run_transformer(
        self, image_embeddings: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor, out_tokens: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Tokens ``[out_tokens, sparse]`` through the two-way transformer; returns the
        processed tokens and the upscaled image features ``[B, dim/8, 4S, 4S]``."""
        b = sparse.shape[0]
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        if image_embeddings.shape[0] != b:
            image_embeddings = image_embeddings.expand(b, -1, -1, -1)
        src = image_embeddings + dense
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, keys = self.transformer(src, pos, tokens)
        src = keys.transpose(1, 2).reshape(b, c, h, w)
        return hs, self.output_upscaling(src)

    def predict_masks(
        self, image_embeddings: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor
    ) -> tuple[Tensor, Tensor]:
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        hs, up = self.run_transformer(image_embeddings, image_pe, sparse, dense, out_tokens)
        mask_tokens = hs[:, 1 : 1 + self.num_mask_tokens, :]
        hyper = torch.stack(
            [mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = up.shape
        masks = (hyper @ up.reshape(b, c, h * w)).reshape(b, -1, h, w)
        iou = self.iou_prediction_head(hs[:, 0, :])
        return masks, iou

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        masks, iou = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou[:, sl]


# ---------------------------------------------------------------------------------------
# the whole model
# ---------------------------------------------------------------------------------------
class Sam(nn.Module):
    """Image encoder + prompt encoder + mask decoder, with the official key layout.

    ``pixel_mean``/``pixel_std`` are non-persistent buffers (not in the checkpoint) used
    by :meth:`normalise` for the "sam" preprocessing.
    """

    mask_threshold = 0.0

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.config = cfg
        if cfg.encoder == "tiny_vit":
            from tessera.plugins.sam.tiny_vit import TinyViTEncoder

            self.image_encoder: nn.Module = TinyViTEncoder(cfg)
        else:
            self.image_encoder = ImageEncoderViT(cfg)
        self.prompt_encoder = PromptEncoder(cfg)
        self.mask_decoder = MaskDecoder(cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(-1, 1, 1), persistent=False)

    def normalise(self, images_0_255: Tensor) -> Tensor:
        """``[B, 3, H, W]`` RGB on the 0-255 scale -> normalised, padded to img_size
        (bottom/right), as the official ``Sam.preprocess``."""
        x = (images_0_255 - self.pixel_mean) / self.pixel_std
        size = self.config.img_size
        return F.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]))

    def decode(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """All four mask logits ``[B, 4, 4S, 4S]`` and IoU predictions ``[B, 4]`` for
        prompts in the encoder input frame."""
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points, boxes, mask_input)
        return self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images ``[B, 3, img, img]`` -> image embeddings."""
        return self.image_encoder(images)


def build_sam(variant: str | SamConfig = "vit_b", **overrides: Any) -> Sam:
    """An untrained SAM of a named size (see :data:`CONFIGS`), in eval mode."""
    model = Sam(sam_config(variant, **overrides))
    return model.eval()


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
def convert_checkpoint(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official / MedSAM / MobileSAM state dict -> ours (the same keys).

    Accepts a bare state dict or one wrapped as ``{"model": ...}`` / ``{"state_dict": ...}``
    and strips a ``module.`` prefix (DataParallel), nothing else: the layouts are equal.
    """
    sd: Mapping[str, Any] = state_dict
    for wrapper in ("model", "state_dict"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        out[key.removeprefix("module.")] = value
    return out


def infer_variant(state_dict: Mapping[str, Tensor]) -> str:
    """Which official size a state dict is (vit_b / vit_l / vit_h / vit_t), from its shapes."""
    if any(k.startswith("image_encoder.layers.") for k in state_dict):
        return "vit_t"
    dim = state_dict["image_encoder.pos_embed"].shape[-1]
    depth = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("image_encoder.blocks."))
    for name in ("vit_b", "vit_l", "vit_h"):
        cfg = CONFIGS[name]
        if cfg.embed_dim == dim and cfg.depth == depth:
            return name
    msg = f"state dict with embed dim {dim} and depth {depth} is not an official SAM size"
    raise ValueError(msg)


def load_sam(state_dict: Mapping[str, Tensor], variant: str | SamConfig | None = None) -> Sam:
    """Build the model a checkpoint belongs to and load it strictly."""
    sd = convert_checkpoint(state_dict)
    model = build_sam(variant or infer_variant(sd))
    model.load_state_dict(sd, strict=True)
    return model.eval()
