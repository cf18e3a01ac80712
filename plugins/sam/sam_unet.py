"""SAM-UNet (Yang et al. 2024, "SAM-UNet: Enhancing Zero-Shot Segmentation of SAM for
Universal Medical Images"): SAM's ViT made U-shaped with a parallel CNN.

- SAM ViT-B at 256 x 256 input (absolute position embedding resized 64 -> 16 and the
  global blocks' relative tables resized to 31 rows when starting from a 1024 px SAM
  checkpoint), kept frozen;
- a parallel ResNet (34 or 50 in the paper; torchvision layout) whose four stage outputs
  (input /4, /8, /16, /32) are reshaped to the ViT token grid (strided convs or
  transposed convs + LayerNorm2d + GELU, then a 1x1 conv to the ViT width:
  ``adapters_in``) and *added to the ViT tokens before each global block*;
- multi-scale fusion: the outputs of the first three global blocks (``adapters_bridge``)
  and the neck output (``embedding_encoder``) are upsampled x4 to 32 channels and summed
  into a ``[B, 32, 4S, 4S]`` feature (``4S = 64`` at 256 px);
- mask decoder: SAM's two-way transformer with one learned *medical token*
  (``med_token``) instead of the IoU + mask tokens; its hypernetwork (``hf_mlp``) reads a
  feature made of SAM's upscaled decoder feature refined by ``embedding_maskfeature``
  plus the multi-scale feature; one mask, no IoU head;
- box prompts; loss ``20 * focal + dice`` (+ an IoU regression term in the public code).

Checkpoint layout (the public ``sam_unet`` code's ``SAM_UNET.state_dict()``)::

    image_encoder.sam_img_encoder.{patch_embed,pos_embed,blocks.N,neck}.*   # SAM ViT-B keys
    prompt_encoder.sam_prompt_encoder.*                                      # SAM keys
    mask_decoder.sam_mask_decoder.*          # SAM's decoder (IoU/mask tokens unused)
    mask_decoder.med_token.weight            # [1, 256]
    mask_decoder.hf_mlp.layers.{0,1,2}.*     # MLP 256 -> 256 -> 256 -> 32
    mask_decoder.embedding_maskfeature.{0,1,3}.*   # conv3x3 32->64, LN2d, GELU, conv3x3 64->32
    resnet.stage0.{0,1}.*                    # conv1, bn1 of the torchvision ResNet
    resnet.stage{1..4}.*                     # layer1..layer4
    adapters_in.{0..3}.reshaper.N.*
    adapters_bridge.{0,1,2}.{0,1,3}.*        # convT dim->256, LN2d, GELU, convT 256->32
    embedding_encoder.{0,1,3}.*              # convT 256->64, LN2d, GELU, convT 64->32

Checked against the public code of github.com/Hhankyangg/sam-unet (read through the search
tools; nothing copied). The paper text gives the loss as focal + 20 x Dice; the public
code weights the focal term by 20 (``weight * focal + dice``). We follow the code and
make the weight configurable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tessera.plugins.sam.model import (
    MLP,
    ImageEncoderViT,
    LayerNorm2d,
    MaskDecoder,
    PromptEncoder,
    SamConfig,
    sam_config,
)


@dataclass(frozen=True)
class SamUNetConfig:
    """Shapes of a SAM-UNet: the SAM part and the ResNet branch."""

    sam: SamConfig = field(default_factory=lambda: sam_config("vit_b", img_size=256))
    resnet_block: Literal["basic", "bottleneck"] = "basic"
    resnet_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    resnet_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    focal_weight: float = 20.0

    @property
    def channel_list(self) -> list[int]:
        exp = 4 if self.resnet_block == "bottleneck" else 1
        return [w * exp for w in self.resnet_widths]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sam": self.sam.to_dict(),
            "resnet_block": self.resnet_block,
            "resnet_layers": list(self.resnet_layers),
            "resnet_widths": list(self.resnet_widths),
            "focal_weight": self.focal_weight,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamUNetConfig:
        return cls(
            sam=SamConfig.from_dict(data["sam"]),
            resnet_block=data["resnet_block"],
            resnet_layers=tuple(data["resnet_layers"]),
            resnet_widths=tuple(data["resnet_widths"]),
            focal_weight=float(data.get("focal_weight", 20.0)),
        )


UNET_CONFIGS: dict[str, SamUNetConfig] = {
    "res34": SamUNetConfig(),
    "res50": SamUNetConfig(resnet_block="bottleneck"),
    # the demo trained here: the demo SAM (frozen) + a slim ResNet branch
    "demo": SamUNetConfig(
        sam=sam_config("demo"), resnet_block="basic", resnet_layers=(1, 1, 1, 1), resnet_widths=(16, 32, 64, 128)
    ),
}


# ---------------------------------------------------------------------------------------
# ResNet branch (torchvision key layout, so ImageNet ResNet weights load)
# ---------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _shortcut(cin, width, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample = _shortcut(cin, width * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNetBranch(nn.Module):
    """ResNet returning the four stage outputs (input /4, /8, /16, /32)."""

    def __init__(self, cfg: SamUNetConfig) -> None:
        super().__init__()
        block: type[BasicBlock] | type[Bottleneck] = (
            Bottleneck if cfg.resnet_block == "bottleneck" else BasicBlock
        )
        stem = cfg.resnet_widths[0]
        self.stage0 = nn.Sequential(
            nn.Conv2d(3, stem, 7, 2, 3, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        cin = stem
        for i, (n, width) in enumerate(zip(cfg.resnet_layers, cfg.resnet_widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
            setattr(self, f"stage{i + 1}", nn.Sequential(*blocks))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stage0(x)
        feats = []
        for i in range(1, 5):
            x = getattr(self, f"stage{i}")(x)
            feats.append(x)
        return feats


class Reshaper(nn.Module):
    """A ``[B, cin, s_in, s_in]`` feature -> ``[B, cout, s_out, s_out]`` (powers of two)."""

    def __init__(self, size_in: int, cin: int, size_out: int, cout: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if size_in < size_out:
            for _ in range(_log2_ratio(size_out, size_in)):
                layers += [nn.ConvTranspose2d(cin, cin // 2, 2, 2), LayerNorm2d(cin // 2), nn.GELU()]
                cin //= 2
        elif size_in > size_out:
            for _ in range(_log2_ratio(size_in, size_out)):
                layers += [nn.Conv2d(cin, cin * 2, 3, 2, 1), LayerNorm2d(cin * 2), nn.GELU()]
                cin *= 2
        layers.append(nn.Conv2d(cin, cout, 1))
        self.reshaper = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.reshaper:
            x = layer(x)
        return x


def _log2_ratio(big: int, small: int) -> int:
    n = math.log2(big / small)
    if not n.is_integer():
        msg = f"feature sizes {big} and {small} are not a power-of-two apart"
        raise ValueError(msg)
    return int(n)


def _up4(cin: int, mid: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, mid, 2, 2), LayerNorm2d(mid), nn.GELU(), nn.ConvTranspose2d(mid, out, 2, 2)
    )


# ---------------------------------------------------------------------------------------
# wrappers that give the public checkpoint's key prefixes
# ---------------------------------------------------------------------------------------
class _EncoderHolder(nn.Module):
    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.sam_img_encoder = ImageEncoderViT(cfg)


class _PromptHolder(nn.Module):
    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.sam_prompt_encoder = PromptEncoder(cfg)


class MedMaskDecoder(nn.Module):
    """SAM's decoder driven by one medical token, reading the multi-scale feature."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        dim = cfg.prompt_dim
        self.sam_mask_decoder = MaskDecoder(cfg)
        self.med_token = nn.Embedding(1, dim)
        self.hf_mlp = MLP(dim, dim, dim // 8, 3)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(dim // 8, dim // 4, 3, 1, 1),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.Conv2d(dim // 4, dim // 8, 3, 1, 1),
        )

    def forward(
        self, image_embeddings: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor, multi_scale: Tensor
    ) -> Tensor:
        """Mask logits ``[B, 1, 4S, 4S]``."""
        hs, up = self.sam_mask_decoder.run_transformer(
            image_embeddings, image_pe, sparse, dense, self.med_token.weight
        )
        b = up.shape[0]
        if multi_scale.shape[0] != b:
            multi_scale = multi_scale.expand(b, -1, -1, -1)
        feat = self.embedding_maskfeature(up) + multi_scale
        hyper = self.hf_mlp(hs[:, 0, :]).unsqueeze(1)
        _, c, h, w = feat.shape
        return (hyper @ feat.reshape(b, c, h * w)).reshape(b, 1, h, w)


class SamUNet(nn.Module):
    """SAM-UNet with the public checkpoint's key layout."""

    mask_threshold = 0.0

    def __init__(self, cfg: SamUNetConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or SamUNetConfig()
        self.config = cfg
        scfg = cfg.sam
        globals_ = tuple(scfg.global_attn_indexes)
        if len(globals_) != 4:
            msg = f"SAM-UNet needs 4 global blocks (one per ResNet stage), got {globals_}"
            raise ValueError(msg)
        self.image_encoder = _EncoderHolder(scfg)
        self.prompt_encoder = _PromptHolder(scfg)
        self.mask_decoder = MedMaskDecoder(scfg)
        self.resnet = ResNetBranch(cfg)
        chans = cfg.channel_list
        img, grid, dim, pd = scfg.img_size, scfg.embedding_size, scfg.embed_dim, scfg.prompt_dim
        self.adapters_in = nn.ModuleList(
            Reshaper(img // (4 * 2**i), chans[i], grid, dim) for i in range(4)
        )
        self.adapters_bridge = nn.ModuleList(_up4(dim, pd, pd // 8) for _ in range(3))
        self.embedding_encoder = _up4(pd, pd // 4, pd // 8)
        self.register_buffer("pixel_mean", torch.tensor(scfg.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(scfg.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def vit(self) -> ImageEncoderViT:
        return self.image_encoder.sam_img_encoder

    @property
    def prompts(self) -> PromptEncoder:
        return self.prompt_encoder.sam_prompt_encoder

    def freeze_vit(self) -> None:
        """Freeze the SAM ViT (the paper trains everything else)."""
        for p in self.vit.parameters():
            p.requires_grad_(False)

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised ``[B, 3, img, img]`` -> (image embeddings ``[B, 256, S, S]``,
        multi-scale feature ``[B, 32, 4S, 4S]``)."""
        feats = self.resnet(images)
        vit = self.vit
        x = vit.tokens(images)
        bridged: list[Tensor] = []
        start = 0
        last = len(vit.global_attn_indexes) - 1
        for i, g in enumerate(vit.global_attn_indexes):
            for j in range(start, g):
                x = vit.blocks[j](x)
            x = x + self.adapters_in[i](feats[i]).permute(0, 2, 3, 1)
            x = vit.blocks[g](x)
            if i < last:
                bridged.append(self.adapters_bridge[last - 1 - i](x.permute(0, 3, 1, 2)))
            start = g + 1
        for j in range(start, len(vit.blocks)):
            x = vit.blocks[j](x)
        emb = vit.neck(x.permute(0, 3, 1, 2))
        multi = self.embedding_encoder(emb)
        for f in bridged:
            multi = multi + f
        return emb, multi

    def decode(
        self,
        image_embeddings: Tensor,
        multi_scale: Tensor,
        point_coords: Tensor | None = None,
        point_labels: Tensor | None = None,
        boxes: Tensor | None = None,
        mask_input: Tensor | None = None,
    ) -> Tensor:
        """Mask logits ``[B, 1, 4S, 4S]`` for prompts in the encoder input frame."""
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompts(points, boxes, mask_input)
        return self.mask_decoder(image_embeddings, self.prompts.get_dense_pe(), sparse, dense, multi_scale)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode(images)


def build_sam_unet(variant: str | SamUNetConfig = "res34", **sam_overrides: Any) -> SamUNet:
    """An untrained SAM-UNet ("res34", "res50" or a config); eval mode."""
    if isinstance(variant, SamUNetConfig):
        cfg = variant
    else:
        try:
            cfg = UNET_CONFIGS[variant]
        except KeyError:
            msg = f"unknown SAM-UNet variant {variant!r}; known: {', '.join(UNET_CONFIGS)}"
            raise ValueError(msg) from None
    if sam_overrides:
        cfg = replace(cfg, sam=replace(cfg.sam, **sam_overrides))
    return SamUNet(cfg).eval()


def resize_abs_pos(pos_embed: Tensor, grid: int) -> Tensor:
    """``[1, G, G, C]`` -> ``[1, grid, grid, C]`` by bilinear interpolation (as the public
    code does when moving SAM's 64 x 64 embedding to a 16 x 16 grid)."""
    if pos_embed.shape[1] == grid:
        return pos_embed
    x = F.interpolate(pos_embed.permute(0, 3, 1, 2), (grid, grid), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1)


def resize_rel_pos(table: Tensor, length: int) -> Tensor:
    """``[L, C]`` relative table -> ``[length, C]`` by linear interpolation along L."""
    if table.shape[0] == length:
        return table
    x = F.interpolate(table[None, None], (length, table.shape[1]), mode="bilinear", align_corners=False)
    return x[0, 0]


def sam_unet_state_from_sam(sam_state: Mapping[str, Tensor], model: SamUNet) -> dict[str, Tensor]:
    """Initialise a SAM-UNet's SAM parts from a SAM checkpoint (any input size): keys get
    the SAM-UNet prefixes, the position embedding and the global blocks' relative tables
    are resized to the SAM-UNet grid. Returns a full state dict for ``model`` (parts not
    in SAM keep the model's current values)."""
    out = dict(model.state_dict())
    grid = model.config.sam.embedding_size
    globals_ = set(model.config.sam.global_attn_indexes)
    prefixes = {
        "image_encoder.": "image_encoder.sam_img_encoder.",
        "prompt_encoder.": "prompt_encoder.sam_prompt_encoder.",
        "mask_decoder.": "mask_decoder.sam_mask_decoder.",
    }
    for key, value in sam_state.items():
        old = next((p for p in prefixes if key.startswith(p)), None)
        if old is None:
            continue
        target = prefixes[old] + key[len(old) :]
        if target not in out:
            continue
        if key == "image_encoder.pos_embed":
            value = resize_abs_pos(value, grid)
        elif ".rel_pos_" in key and int(key.split(".")[2]) in globals_:
            value = resize_rel_pos(value, 2 * grid - 1)
        if tuple(value.shape) != tuple(out[target].shape):
            msg = f"{key}: shape {tuple(value.shape)} does not fit {tuple(out[target].shape)}"
            raise ValueError(msg)
        out[target] = value
    return out


def convert_checkpoint(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A public SAM-UNet checkpoint (bare or ``{"model": ...}``) -> our keys (equal)."""
    sd: Mapping[str, Any] = state_dict
    if "model" in sd and isinstance(sd["model"], Mapping):
        sd = sd["model"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def segmentation_loss(logits: Tensor, target: Tensor, focal_weight: float = 20.0) -> Tensor:
    """``focal_weight * focal + dice`` on mask logits ``[M, 1, H, W]`` (per mask, then
    averaged); focal with alpha 0.25, gamma 2 as in the SAM and SAM-UNet papers."""
    return mask_losses(logits, target, focal_weight).mean()


def mask_losses(logits: Tensor, target: Tensor, focal_weight: float = 20.0) -> Tensor:
    """Per-mask ``focal_weight * focal + dice``, ``[M]`` (targets may be soft)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = 0.25 * target + 0.75 * (1 - target)
    focal = (alpha_t * (1 - p_t) ** 2 * ce).flatten(1).mean(1)
    inter = (p * target).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (p.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    return focal_weight * focal + dice
