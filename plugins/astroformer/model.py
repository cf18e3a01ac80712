"""Astroformer (Dagli 2023, arXiv:2304.05350) on timm's MaxxViT/CoAtNet code.

Astroformer is a CoAtNet with a different stack: C-C-C-T instead of C-C-T-T.

- stem: 3x3 conv stride 2 -> BatchNorm + GELU -> 3x3 conv (``stem.*``);
- stages 0-2: pre-norm MBConv blocks (BatchNorm, 1x1 expand x4, depthwise 3x3 with the
  stage's stride 2 in its first block, squeeze-excite 0.25, 1x1 project; shortcut with
  2x2 average pool + 1x1 conv where the shape changes) (``stages.{s}.blocks.{b}.*``);
- stage 3: transformer blocks (pre-LayerNorm, multi-head self-attention over the whole
  feature map, 32 channels per head, a learned relative position bias table per head;
  pre-LayerNorm MLP x4), the first one downsampling by 2x2 average pooling;
- head: global average pool -> LayerNorm -> Linear + tanh (pre-logits) -> Linear
  (timm's ``NormMlpClassifierHead``, ``head.norm``, ``head.pre_logits.fc``, ``head.fc``).

The official code (github.com/Rishit-dagli/Astroformer) is a copy of timm's
``maxxvit.py`` with these configs, so its checkpoints use timm's module names. Here the
model *is* a ``timm.models.maxxvit.MaxxVit`` built from a ``MaxxVitCfg`` (the same
dataclasses timm's ``coatnet_*`` models use), so a checkpoint from the official repo, or
from ``timm.create_model("coatnet_3_224", block_type=("C", "C", "C", "T"), ...)``,
loads key for key; ``convert_checkpoint`` only unwraps training-script prefixes.

Sizes: ``astroformer_3`` (dims 192-384-768-1536, depths 2-6-14-2) and ``astroformer_4``
(depths 2-12-28-2) at 256 px as in the paper; ``demo`` (dims 32-64-96-128, depths
1-1-2-1, 64 px) is what the shipped weights use, small enough to train on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.models.maxxvit import MaxxVit, MaxxVitCfg, MaxxVitConvCfg, MaxxVitTransformerCfg
from torch import nn

BLOCK_TYPES = ("C", "C", "C", "T")


@dataclass(frozen=True)
class AstroformerSize:
    """One architecture size: stage widths and depths, stem width, head width, input px."""

    embed_dim: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    stem_width: int
    head_hidden_size: int
    img_size: int


SIZES: dict[str, AstroformerSize] = {
    # the paper's Galaxy10 DECaLS models (92.39% and 94.86% top-1), 256 x 256 input
    "astroformer_3": AstroformerSize((192, 384, 768, 1536), (2, 6, 14, 2), 192, 1536, 256),
    "astroformer_4": AstroformerSize((192, 384, 768, 1536), (2, 12, 28, 2), 192, 1536, 256),
    # the shipped demo: same blocks, 64 x 64 input (the 67" Galaxy10 box at 1.048"/px)
    "demo": AstroformerSize((32, 64, 96, 128), (1, 1, 2, 1), 32, 128, 64),
}


def astroformer_cfg(size: str) -> MaxxVitCfg:
    """timm ``MaxxVitCfg`` of an Astroformer size (timm's CoAtNet defaults otherwise:
    MBConv expand 4x from the output width, depthwise stride, SE 0.25, GELU, BatchNorm;
    transformer: 32-channel heads, relative position bias, LayerNorm2d)."""
    try:
        s = SIZES[size]
    except KeyError:
        msg = f"unknown Astroformer size {size!r}; choose one of {sorted(SIZES)}"
        raise ValueError(msg) from None
    return MaxxVitCfg(
        embed_dim=s.embed_dim,
        depths=s.depths,
        block_type=BLOCK_TYPES,
        stem_width=s.stem_width,
        head_hidden_size=s.head_hidden_size,
        conv_cfg=MaxxVitConvCfg(),
        transformer_cfg=MaxxVitTransformerCfg(),
    )


def build_model(
    size: str = "demo",
    *,
    num_classes: int = 10,
    img_size: int | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    **_: Any,
) -> nn.Module:
    """An Astroformer of ``size`` with ``num_classes`` outputs (logits), random weights.

    ``img_size`` defaults to the size's own (256 for the paper sizes, 64 for demo); it
    fixes the relative position bias tables of the transformer stage.
    """
    s = SIZES.get(size)
    cfg = astroformer_cfg(size)
    return MaxxVit(
        cfg,
        img_size=img_size or (s.img_size if s else 256),
        num_classes=num_classes,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
    )


_PREFIXES = ("module.", "model.", "_orig_mod.")


def convert_checkpoint(state_dict: dict[str, Any], **_: Any) -> dict[str, Any]:
    """Map a checkpoint to this model's keys.

    Official Astroformer and timm checkpoints already use the same names; training
    scripts may prefix them (``module.`` from DDP, ``model.`` from wrappers,
    ``_orig_mod.`` from ``torch.compile``), which is removed here.
    """
    out = {}
    for key, value in state_dict.items():
        for p in _PREFIXES:
            while key.startswith(p):
                key = key[len(p) :]
        out[key] = value
    return out


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())

