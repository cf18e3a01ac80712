"""TinyViT image encoder of MobileSAM (``vit_t``), key-compatible with ``mobile_sam.pt``.

MobileSAM (Zhang et al. 2023) distils SAM's ViT-H encoder into a TinyViT-5M and keeps
SAM's prompt encoder and mask decoder. The encoder (keys under ``image_encoder.``):

- ``patch_embed.seq``: two stride-2 3x3 Conv-BN with GELU between (input / 4);
- ``layers.0``: MBConv blocks (1x1 expand, 3x3 depthwise, 1x1 project, each Conv-BN,
  residual, GELU), then a patch merging (1x1, 3x3 depthwise stride 2, 1x1, Conv-BN);
- ``layers.1..3``: TinyViT blocks (windowed attention with a learned bias per
  |dy|, |dx| offset and head, a residual; a 3x3 depthwise Conv-BN; a pre-norm MLP),
  each stage but the last ending in a patch merging. MobileSAM keeps the last merge at
  stride 1 so the output grid is input / 16 (64 x 64 at 1024 px);
- ``neck``: as SAM's (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to 256 channels;
- ``norm_head``/``head``: TinyViT's classifier, unused but present in the checkpoint.

Layout checked against MobileSAM's public ``mobile_sam/modeling/tiny_vit_sam.py``; the
arithmetic is tested against timm's TinyViT modules (a port of the same Microsoft code).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tessera.plugins.sam.model import LayerNorm2d, SamConfig


class ConvBN(nn.Sequential):
    """Conv2d without bias then BatchNorm2d (keys ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class TinyPatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(cin, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    def __init__(self, dim: int, expand: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """``[B, C, H, W]`` or ``[B, H*W, C]`` -> ``[B, H'*W', C']`` tokens."""

    def __init__(self, resolution: int, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 3:
            b, _, c = x.shape
            x = x.transpose(1, 2).reshape(b, c, self.resolution, self.resolution)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


class BiasedAttention(nn.Module):
    """Attention inside a ``window x window`` window with one learned bias per head and
    per (|dy|, |dx|) offset (LeViT style). qkv is laid out per head as [q | k | v]."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        points = list(itertools.product(range(window), range(window)))
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        n = len(points)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs).view(n, n), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        qkv = self.qkv(x).view(b, n, self.num_heads, 3 * self.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # [heads, n, n]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class NormMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed biased attention (zero-padded windows) + 3x3 depthwise Conv-BN + MLP,
    on ``[B, H*W, C]`` tokens of a ``resolution x resolution`` grid."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = BiasedAttention(dim, num_heads, window)
        self.mlp = NormMlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        h = w = self.resolution
        b, n, c = x.shape
        ws = self.window
        if h == ws and w == ws:
            y = self.attn(x)
        else:
            y = x.view(b, h, w, c)
            pad_b, pad_r = (-h) % ws, (-w) % ws
            if pad_b or pad_r:
                y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            y = y.view(b, ph // ws, ws, pw // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
            y = self.attn(y)
            y = y.view(b, ph // ws, pw // ws, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
            y = y[:, :h, :w].reshape(b, n, c)
        x = x + y
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class AttnStage(nn.Module):
    def __init__(self, blocks: list[TinyViTBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViTEncoder(nn.Module):
    """MobileSAM's encoder: normalised ``[B, 3, img, img]`` -> ``[B, 256, img/16, img/16]``."""

    def __init__(self, cfg: SamConfig, num_classes: int = 1000) -> None:
        super().__init__()
        dims, depths = list(cfg.tiny_embed_dims), list(cfg.tiny_depths)
        self.img_size = cfg.img_size
        self.out_grid = cfg.img_size // 16
        self.patch_embed = TinyPatchEmbed(3, dims[0])
        res = cfg.img_size // 4
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            merge = None
            next_res = res
            if i < len(dims) - 1:
                stride = 2 if res > self.out_grid else 1  # MobileSAM: last merge keeps /16
                next_res = res // stride
                merge = PatchMerging(res, dim, dims[i + 1], stride)
            if i == 0:
                self.layers.append(ConvStage(dim, depth, merge))
            else:
                blocks = [
                    TinyViTBlock(dim, res, cfg.tiny_num_heads[i], cfg.tiny_window_sizes[i], cfg.mlp_ratio)
                    for _ in range(depth)
                ]
                self.layers.append(AttnStage(blocks, merge))
            res = next_res
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], cfg.prompt_dim, kernel_size=1, bias=False),
            LayerNorm2d(cfg.prompt_dim),
            nn.Conv2d(cfg.prompt_dim, cfg.prompt_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.prompt_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, self.out_grid, self.out_grid)
        return self.neck(x)
