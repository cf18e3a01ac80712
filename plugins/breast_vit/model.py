"""Breast-cancer Vision Transformer (BreakHis benign/malignant, optional 8-subtype head).

The architecture is timm's ``VisionTransformer`` (Dosovitskiy et al. 2021): patch
embedding (conv 16x16 stride 16), a class token and learned absolute position
embeddings, ``depth`` pre-norm transformer blocks (multi-head self-attention with a
fused ``qkv`` projection, GELU MLP x4), a final LayerNorm, and a linear ``head`` on the
class token. ``BreastViT`` subclasses it and adds an optional second linear head on
the same pooled feature, ``subtype_head``, for the eight BreakHis subtypes.

Sizes (``SIZES``):
- ``base``: ViT-B/16 at 224 x 224, the size of the comparative study the plugin follows
  ("Breast Cancer Detection and Diagnosis: a comparative study of state-of-the-art deep
  learning architectures": ViT 95.15% on BreakHis); preprocessing mean = std = 0.5
  (unverified in the paper; configurable in the manifest).
- ``demo``: patch 16, width 192, depth 4, 3 heads, MLP x2, at 112 x 112 (1 µm/px tiles): the
  shipped weights, trained on synthetic patches on a 2-core CPU.

Checkpoints users have load through ``convert_checkpoint``:
- timm layout (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.i.{norm1,
  attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``head``), also with
  ``module.``/``model.`` prefixes;
- Hugging Face ``ViTForImageClassification`` / ``ViTModel`` files (``vit.embeddings.*``,
  ``vit.encoder.layer.i.attention.attention.{query,key,value}``, ``...output.dense``,
  ``intermediate.dense``, ``output.dense``, ``layernorm_before/after``, ``vit.layernorm``,
  ``classifier``): query/key/value are concatenated, in that order, into timm's ``qkv``;
  the in-memory layout of transformers >= 5 (``vit.layers.i.attention.{q,k,v,o}_proj``,
  ``mlp.fc1/fc2``) is mapped too.
Hugging Face's LayerNorm epsilon defaults to 1e-12, timm's to 1e-6: the difference is
below 1e-6 in the outputs; pass ``norm_eps=1e-12`` to ``build_model`` to match exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from tessera.pipelines.synthetic.histology import BREAKHIS_SUBTYPES

#: The eight BreakHis subtypes, in the order of the subtype head's outputs.
SUBTYPES = BREAKHIS_SUBTYPES


@dataclass(frozen=True)
class ViTSize:
    """Architecture hyper-parameters (input px, patch px, width, depth, heads, MLP ratio)."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


SIZES: dict[str, ViTSize] = {
    "base": ViTSize(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "demo": ViTSize(img_size=112, patch_size=16, embed_dim=192, depth=4, num_heads=3, mlp_ratio=2.0),
}


class BreastViT(VisionTransformer):
    """timm ViT with a benign/malignant ``head`` and an optional ``subtype_head``.

    ``forward`` returns the class logits ``[N, num_classes]``, or the pair
    ``(logits, subtype_logits [N, num_subtypes])`` when the subtype head exists (the ONNX
    outputs "logits" and "subtype_logits").
    """

    def __init__(self, *, num_subtypes: int = 0, **vit_kwargs: Any) -> None:
        super().__init__(**vit_kwargs)
        self.subtype_head = nn.Linear(self.embed_dim, num_subtypes) if num_subtypes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        pooled = self.forward_head(self.forward_features(x), pre_logits=True)
        logits = self.head(pooled)
        if self.subtype_head is None:
            return logits
        return logits, self.subtype_head(pooled)


def build_model(
    size: str = "demo",
    *,
    num_classes: int = 2,
    num_subtypes: int = len(SUBTYPES),
    img_size: int | None = None,
    norm_eps: float = 1e-6,
    **overrides: Any,
) -> BreastViT:
    """The ViT of a named size (``SIZES``), randomly initialised.

    ``img_size`` changes the input size (position embeddings follow); ``overrides``
    replace any ``ViTSize`` field (embed_dim, depth, num_heads, patch_size, mlp_ratio)
    for checkpoints of other widths (ViT-Ti/S/L).
    """
    try:
        cfg = SIZES[size]
    except KeyError:
        msg = f"unknown size {size!r}; choose from {', '.join(SIZES)}"
        raise ValueError(msg) from None
    if img_size is not None:
        cfg = replace(cfg, img_size=int(img_size))
    if overrides:
        cfg = replace(cfg, **overrides)
    return BreastViT(
        num_subtypes=num_subtypes,
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        num_classes=num_classes,
        qkv_bias=True,
        global_pool="token",
        norm_layer=partial(nn.LayerNorm, eps=norm_eps),
    )


# ---- checkpoint layouts -------------------------------------------------------------------

_PREFIXES = ("module.", "model.", "_orig_mod.", "net.", "backbone.")
_HF_LAYER = re.compile(r"^(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\.(.+)$")
# per-layer Hugging Face name -> timm name (classic layout, then transformers >= 5)
_HF_LAYER_KEYS = {
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.o_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_QKV = {
    "attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
    "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2,
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}


def checkpoint_layout(state_dict: Mapping[str, Any]) -> str:
    """"timm", "huggingface" or "unknown" for a (prefix-stripped) state dict."""
    keys = list(state_dict)
    if any(_HF_LAYER.match(k) for k in keys) or any("patch_embeddings.projection" in k for k in keys):
        return "huggingface"
    if "pos_embed" in state_dict and any(k.startswith("blocks.") for k in keys):
        return "timm"
    return "unknown"


def _strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def _from_huggingface(sd: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    qkv: dict[tuple[int, str], list[Any]] = {}
    for key, value in sd.items():
        m = _HF_LAYER.match(key)
        if m:
            layer, rest = int(m.group(1)), m.group(2)
            name, _, kind = rest.rpartition(".")  # kind: weight / bias
            if name in _HF_QKV:
                qkv.setdefault((layer, kind), [None, None, None])[_HF_QKV[name]] = value
                continue
            if name in _HF_LAYER_KEYS:
                out[f"blocks.{layer}.{_HF_LAYER_KEYS[name]}.{kind}"] = value
                continue
            msg = f"unexpected Hugging Face ViT key {key!r}"
            raise KeyError(msg)
        bare = key[len("vit."):] if key.startswith("vit.") else key
        if bare in _HF_TOP:
            out[_HF_TOP[bare]] = value
        elif bare in ("classifier.weight", "classifier.bias"):
            out["head." + bare.split(".")[-1]] = value
        elif bare.startswith(("pooler.", "embeddings.mask_token")):
            continue  # ViTModel's pooler and the masked-image-modelling token: not used
        elif bare.startswith("subtype_head."):
            out[bare] = value
        else:
            msg = f"unexpected Hugging Face ViT key {key!r}"
            raise KeyError(msg)
    for (layer, kind), parts in sorted(qkv.items()):
        if any(p is None for p in parts):
            msg = f"layer {layer}: query/key/value {kind} incomplete in the checkpoint"
            raise KeyError(msg)
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    return out


def convert_checkpoint(
    state_dict: Mapping[str, Any], *, role: str = "model", img_size: int | None = None
) -> dict[str, Any]:
    """Map a timm or Hugging Face ViT state dict to ``BreastViT`` keys.

    With ``img_size`` (px), position embeddings of another grid size are resampled
    (bicubic, as timm does) so e.g. a 224 px checkpoint runs at 112 px.
    """
    del role  # one model role
    sd = _strip_prefixes(state_dict)
    layout = checkpoint_layout(sd)
    if layout == "huggingface":
        sd = _from_huggingface(sd)
    elif layout != "timm":
        some = ", ".join(list(sd)[:4])
        msg = f"not a ViT checkpoint in timm or Hugging Face layout (keys: {some}, ...)"
        raise KeyError(msg)
    if img_size is not None and "pos_embed" in sd:
        from timm.layers import resample_abs_pos_embed

        patch = int(sd["patch_embed.proj.weight"].shape[-1])
        grid = int(img_size) // patch
        if sd["pos_embed"].shape[1] != grid * grid + 1:
            sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], [grid, grid],
                                                     num_prefix_tokens=1)
    return sd


def infer_config(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``build_model`` keyword arguments that fit a (converted) timm-layout state dict:
    width, depth, patch and input size, classes, subtype classes. Heads are assumed 64
    channels wide, as in every published ViT (Ti/S/B/L/H)."""
    sd = state_dict
    w = sd["patch_embed.proj.weight"]
    embed_dim, patch = int(w.shape[0]), int(w.shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    n_tokens = int(sd["pos_embed"].shape[1]) - 1
    grid = round(n_tokens**0.5)
    fc1 = sd["blocks.0.mlp.fc1.weight"]
    return {
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": max(1, embed_dim // 64),
        "patch_size": patch,
        "mlp_ratio": float(fc1.shape[0]) / embed_dim,
        "img_size": grid * patch,
        "num_classes": int(sd["head.weight"].shape[0]) if "head.weight" in sd else 2,
        "num_subtypes": int(sd["subtype_head.weight"].shape[0]) if "subtype_head.weight" in sd else 0,
    }


def size_config(size: str) -> dict[str, Any]:
    """The hyper-parameters of a named size as a dict (for model cards and manifests)."""
    return asdict(SIZES[size])
