"""Tubule-sensitive 3D U-Nets for airway and artery-vein segmentation (torch).

After Qin et al., "Learning Tubule-Sensitive CNNs for Pulmonary Airway and Artery-Vein
Segmentation in CT", IEEE TMI 2021 (MODELS.md section 2):

- a 3D U-Net with four poolings; encoder blocks 1->8->16, 16->16->32, 32->32->64,
  64->64->128, 128->128->256 (at paper width ``base=8``), each two 3x3x3 convolutions
  with InstanceNorm and ReLU; decoder with nearest x2 upsampling and skip
  concatenation; three normalised coordinate channels concatenated at the last
  decoder level; 1x1 convolution head;
- feature recalibration (FR) after every conv block: a Project & Excite variant that
  projects the feature cube onto D, H and W with learnable 1x1 projections (each
  spatial axis treated as channels), sums the three, and gates channels through
  C -> C/2 -> C with a sigmoid. The projections have one weight per voxel along
  each axis, so the cube size is fixed per level when the model is built (paper
  default 80x192x304): inference is a sliding window at exactly that size;
- attention distillation (AD): every FR block yields an attention map (channel sum
  of squared features); each map, resized and passed through a spatial softmax, is
  pulled (MSE) towards the map of the next higher-resolution decoder layer;
- deep supervision heads on the three lower decoder levels.

Model input is one tensor ``(N, C_in + 3, D, H, W)``: the image channels (airway: the
windowed CT; artery-vein: CT, lung context map, distance-to-airway map and the CT in a
vessel window, see processing.VESSEL_WINDOW) followed by
three coordinate channels (z, y, x position in the whole volume, each in [-1, 1]),
which the network only uses at its last decoder level. One tensor keeps sliding
window inference simple: the coordinates are windowed with the image.

Choices the paper does not pin down (documented as unverified in MODEL_CARD.md): the
AD weight lambda, the channel normalisation of the attention maps before the
softmax (sum over C divided by C), the Dice + cross-entropy segmentation loss and the
deep-supervision weights, and the distance-map construction for the AV model.

torch is imported at module level here: only training, export and the torch engine
import this module (the CLI and the ONNX path never do).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

COORD_CHANNELS = 3


@dataclass(frozen=True)
class NetConfig:
    """Architecture of one network; ``cube_zyx`` is the fixed input patch size."""

    in_channels: int = 1
    out_channels: int = 1
    base: int = 8
    cube_zyx: tuple[int, int, int] = (80, 192, 304)
    output: str = "sigmoid"  # "sigmoid" (airway) or "softmax" (artery-vein)

    def __post_init__(self) -> None:
        if any(s % 16 for s in self.cube_zyx):
            msg = f"cube_zyx must be divisible by 16 (four poolings), got {self.cube_zyx}"
            raise ValueError(msg)
        if self.output not in ("sigmoid", "softmax"):
            msg = f"output must be 'sigmoid' or 'softmax', got {self.output!r}"
            raise ValueError(msg)


#: Paper and demo sizes of both networks.
SIZES: dict[str, dict[str, NetConfig]] = {
    "paper": {
        "airway": NetConfig(in_channels=1, out_channels=1, base=8, cube_zyx=(80, 192, 304)),
        "artery-vein": NetConfig(in_channels=4, out_channels=3, base=8,
                                 cube_zyx=(80, 192, 304), output="softmax"),
    },
    "demo": {
        "airway": NetConfig(in_channels=1, out_channels=1, base=4, cube_zyx=(32, 64, 64)),
        "artery-vein": NetConfig(in_channels=4, out_channels=3, base=4, cube_zyx=(32, 64, 64),
                                 output="softmax"),
    },
}


class FeatureRecalibration(nn.Module):
    """Project & Excite variant with learnable projections along D, H and W.

    For a feature cube F (N, C, D, H, W): z_D = project F over H and W (learned
    weights per position, a 1x1 conv with H resp. W as channels), likewise z_H over
    D and W, z_W over D and H; the gate is sigmoid(conv(relu(conv(z_D + z_H + z_W))))
    with C -> C/2 -> C 1x1 convolutions, and the output is F * gate. The projections
    are ``nn.Linear`` layers over one spatial axis (exactly a 1x1 convolution with that
    axis as channels), applied as matrix products so the full cube is read twice.
    """

    def __init__(self, channels: int, cube_zyx: Sequence[int], reduction: int = 2) -> None:
        super().__init__()
        d, h, w = (int(s) for s in cube_zyx)
        self.cube_zyx = (d, h, w)
        self.proj_d = nn.Linear(d, 1)
        self.proj_h = nn.Linear(h, 1)
        self.proj_w = nn.Linear(w, 1)
        reduced = max(1, channels // reduction)
        self.excite = nn.Sequential(
            nn.Conv3d(channels, reduced, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(reduced, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.cube_zyx:
            msg = (f"feature recalibration was built for cubes of {self.cube_zyx}, got "
                   f"{tuple(x.shape[2:])}: run the model at its fixed patch size")
            raise ValueError(msg)
        n, c, d, h, w = x.shape
        x = x.contiguous()
        # two passes over the full cube (over W, over D); the rest works on the projections
        over_w = torch.matmul(x, self.proj_w.weight.t()) + self.proj_w.bias  # (N, C, D, H, 1)
        over_d = (torch.matmul(self.proj_d.weight, x.reshape(n, c, d, h * w))
                  + self.proj_d.bias).reshape(n, c, 1, h, w)
        z_d = torch.matmul(over_w.transpose(-1, -2), self.proj_h.weight.t()) + self.proj_h.bias
        z_d = z_d.reshape(n, c, d, 1, 1)  # projected over H and W
        z_h = torch.matmul(over_d, self.proj_w.weight.t()) + self.proj_w.bias  # (N, C, 1, H, 1)
        z_w = torch.matmul(self.proj_h.weight, over_d) + self.proj_h.bias  # (N, C, 1, 1, W)
        return x * self.excite(z_d + z_h + z_w)


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Attention map (N, 1, D, H, W) of a feature cube: sum_c F^2, divided by C."""
    return features.pow(2).mean(dim=1, keepdim=True)


class ConvBlock(nn.Module):
    """Two 3x3x3 convolutions, each followed by InstanceNorm and ReLU, then FR."""

    def __init__(self, cin: int, cmid: int, cout: int, cube_zyx: Sequence[int]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(cin, cmid, kernel_size=3, padding=1),
            nn.InstanceNorm3d(cmid, affine=True),
            nn.ReLU(inplace=True),
            nn.Conv3d(cmid, cout, kernel_size=3, padding=1),
            nn.InstanceNorm3d(cout, affine=True),
            nn.ReLU(inplace=True),
        )
        self.fr = FeatureRecalibration(cout, cube_zyx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fr(self.body(x))


class TubuleUNet(nn.Module):
    """Qin et al.'s 3D U-Net with FR, AD hooks, deep supervision and coordinates.

    ``forward(x)`` returns logits (N, out, D, H, W); ``forward(x, aux=True)`` returns
    ``(logits, deep_supervision_logits, attention_maps)`` for training: the deep
    supervision logits upsampled to full size (from the 1/8, 1/4 and 1/2 decoder
    levels) and the attention maps of the bottleneck and the four decoder levels,
    lowest resolution first.
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        f = config.base
        d, h, w = config.cube_zyx
        cube = [(d >> k, h >> k, w >> k) for k in range(5)]
        self.enc1 = ConvBlock(config.in_channels, f, 2 * f, cube[0])
        self.enc2 = ConvBlock(2 * f, 2 * f, 4 * f, cube[1])
        self.enc3 = ConvBlock(4 * f, 4 * f, 8 * f, cube[2])
        self.enc4 = ConvBlock(8 * f, 8 * f, 16 * f, cube[3])
        self.enc5 = ConvBlock(16 * f, 16 * f, 32 * f, cube[4])
        self.dec4 = ConvBlock(32 * f + 16 * f, 16 * f, 16 * f, cube[3])
        self.dec3 = ConvBlock(16 * f + 8 * f, 8 * f, 8 * f, cube[2])
        self.dec2 = ConvBlock(8 * f + 4 * f, 4 * f, 4 * f, cube[1])
        self.dec1 = ConvBlock(4 * f + 2 * f + COORD_CHANNELS, 2 * f, 2 * f, cube[0])
        self.head = nn.Conv3d(2 * f, config.out_channels, kernel_size=1)
        self.deep_heads = nn.ModuleList(
            nn.Conv3d(c, config.out_channels, kernel_size=1) for c in (16 * f, 8 * f, 4 * f)
        )

    @property
    def input_channels(self) -> int:
        """Channels of the model input tensor: image channels + 3 coordinates."""
        return self.config.in_channels + COORD_CHANNELS

    def forward(self, x: torch.Tensor, aux: bool = False):
        image = x[:, : self.config.in_channels]
        coords = x[:, self.config.in_channels:]
        e1 = self.enc1(image)
        e2 = self.enc2(F.max_pool3d(e1, 2))
        e3 = self.enc3(F.max_pool3d(e2, 2))
        e4 = self.enc4(F.max_pool3d(e3, 2))
        e5 = self.enc5(F.max_pool3d(e4, 2))
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
        d4 = self.dec4(torch.cat([up(e5), e4], dim=1))
        d3 = self.dec3(torch.cat([up(d4), e3], dim=1))
        d2 = self.dec2(torch.cat([up(d3), e2], dim=1))
        d1 = self.dec1(torch.cat([up(d2), e1, coords], dim=1))
        logits = self.head(d1)
        if not aux:
            return logits
        size = logits.shape[2:]
        deep = [
            F.interpolate(head(t), size=size, mode="trilinear", align_corners=False)
            for head, t in zip(self.deep_heads, (d4, d3, d2), strict=True)
        ]
        maps = [attention_map(t) for t in (e5, d4, d3, d2, d1)]
        return logits, deep, maps


class ProbabilityModel(nn.Module):
    """What is exported and served: the network followed by its sigmoid or softmax."""

    def __init__(self, net: TubuleUNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if self.net.config.output == "sigmoid":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)


def build_model(size: str = "demo", role: str = "airway", **overrides) -> TubuleUNet:
    """The network for ``role`` ('airway' or 'artery-vein') at ``size`` ('paper'/'demo').

    ``overrides`` replace config fields, e.g. ``cube_zyx=(48, 96, 96)``.
    """
    try:
        config = SIZES[size][role]
    except KeyError:
        msg = f"unknown size/role {size!r}/{role!r}; sizes {list(SIZES)}, roles airway, artery-vein"
        raise ValueError(msg) from None
    if "cube_zyx" in overrides:  # from TOML: a list
        overrides["cube_zyx"] = tuple(int(v) for v in overrides["cube_zyx"])
    if overrides:
        config = NetConfig(**{**config.__dict__, **overrides})
    return TubuleUNet(config)


def build_served_model(size: str = "demo", role: str = "airway", **overrides) -> ProbabilityModel:
    """The network with its output activation: what the ONNX files and the torch engine
    run (manifest ``hooks.model``; the safetensors keys carry its ``net.`` prefix)."""
    return ProbabilityModel(build_model(size, role, **overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------

#: weights of the deep supervision heads (1/8, 1/4, 1/2 resolution), main head = 1
DEEP_SUPERVISION_WEIGHTS = (0.25, 0.5, 0.75)


def attention_distillation_loss(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """AD: each map (resized, spatial softmax) towards the next higher-resolution one.

    Maps are ordered lowest resolution first; each lower-resolution map is upsampled
    (trilinear) to the next one's size, both pass through a spatial softmax, and the
    squared L2 distance between the two distributions (the sum over voxels of the
    squared difference, i.e. the MSE times the voxel count, as in Hou et al.'s
    self-attention distillation) is the loss. The target is detached: the
    higher-resolution layer teaches the lower one. The loss lies in [0, 2].
    """
    total = maps[0].new_zeros(())
    for low, high in itertools.pairwise(maps):
        low_up = F.interpolate(low, size=high.shape[2:], mode="trilinear", align_corners=False)
        p = torch.softmax(low_up.flatten(1), dim=1)
        q = torch.softmax(high.detach().flatten(1), dim=1)
        total = total + (p - q).pow(2).sum(dim=1).mean()
    return total / max(1, len(maps) - 1)


def _dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    dims = (0, *range(2, probs.ndim))
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    return 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean()


def foreground_separation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy among the foreground classes only, on the foreground voxels.

    For artery vs vein: with background ~95 % of a cube, the 3-class terms are first
    and mostly about vessel vs background, and a network can settle in "every vessel
    is a vein" (the larger class) with a small loss. This term sees only true vessel
    voxels and only the artery and vein logits, so the separation gets its own
    gradient from the first step. 0 for a batch without foreground.
    """
    fg = target > 0
    if not bool(fg.any()):
        return logits.sum() * 0.0
    fg_logits = logits[:, 1:].movedim(1, -1)[fg]  # (n_fg, K - 1)
    return F.cross_entropy(fg_logits, target[fg] - 1)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, output: str,
                      class_weights: torch.Tensor | None = None,
                      separation_weight: float = 0.0) -> torch.Tensor:
    """Dice + cross-entropy. ``target``: (N, 1, D, H, W) float 0/1 (sigmoid) or
    (N, D, H, W) int64 class indices (softmax; Dice over the foreground classes, plus
    ``separation_weight`` times ``foreground_separation_loss``)."""
    if output == "sigmoid":
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return bce + _dice_loss(torch.sigmoid(logits), target)
    ce = F.cross_entropy(logits, target, weight=class_weights)
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(probs.dtype)[:, 1:]
    loss = ce + _dice_loss(probs, onehot)
    if separation_weight:
        loss = loss + separation_weight * foreground_separation_loss(logits, target)
    return loss


def total_loss(
    net: TubuleUNet,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    ad_lambda: float = 0.1,
    class_weights: torch.Tensor | None = None,
    separation_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """seg(main) + sum_k w_k seg(deep_k) + lambda * AD, with its parts for logging."""
    logits, deep, maps = net(x, aux=True)
    out = net.config.output
    seg = segmentation_loss(logits, target, out, class_weights, separation_weight)
    ds = sum(w * segmentation_loss(d, target, out, class_weights, separation_weight)
             for w, d in zip(DEEP_SUPERVISION_WEIGHTS, deep, strict=True))
    ad = attention_distillation_loss(maps)
    loss = seg + ds + ad_lambda * ad
    parts = {"seg": seg.detach(), "deep": ds.detach(), "ad": ad.detach(), "total": loss.detach()}
    return loss, {k: float(v) for k, v in parts.items()}
