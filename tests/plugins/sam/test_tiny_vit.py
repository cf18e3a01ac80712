"""MobileSAM's TinyViT encoder (vit_t).

``mobile_sam`` is not installable here, so the checkpoint layout is checked against the
key list of MobileSAM's public ``mobile_sam/modeling/tiny_vit_sam.py`` (read through the
code search; written out below as rules), and the arithmetic against timm's TinyViT
modules (a port of the same Microsoft code) with the weights copied across, composed
the way MobileSAM composes them (last patch merging at stride 1).
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
timm_tiny_vit = pytest.importorskip("timm.models.tiny_vit")

from tessera.plugins.sam.model import build_sam, sam_config  # noqa: E402
from tessera.plugins.sam.tiny_vit import TinyViTEncoder  # noqa: E402


def _expected_keys(dims=(64, 128, 160, 320), depths=(2, 2, 6, 2)) -> set[str]:
    """MobileSAM vit_t image-encoder keys, from its module structure."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def conv_bn(prefix: str) -> list[str]:
        return [f"{prefix}.c.weight"] + [f"{prefix}.bn.{b}" for b in bn]

    keys = conv_bn("patch_embed.seq.0") + conv_bn("patch_embed.seq.2")
    for j in range(depths[0]):
        for c in ("conv1", "conv2", "conv3"):
            keys += conv_bn(f"layers.0.blocks.{j}.{c}")
    for i in range(1, 4):
        for j in range(depths[i]):
            p = f"layers.{i}.blocks.{j}"
            keys += [f"{p}.attn.attention_biases"]
            keys += [f"{p}.attn.{m}.{t}" for m in ("norm", "qkv", "proj") for t in ("weight", "bias")]
            keys += [f"{p}.mlp.{m}.{t}" for m in ("norm", "fc1", "fc2") for t in ("weight", "bias")]
            keys += conv_bn(f"{p}.local_conv")
    for i in range(3):
        for c in ("conv1", "conv2", "conv3"):
            keys += conv_bn(f"layers.{i}.downsample.{c}")
    keys += ["norm_head.weight", "norm_head.bias", "head.weight", "head.bias"]
    keys += ["neck.0.weight", "neck.1.weight", "neck.1.bias", "neck.2.weight", "neck.3.weight", "neck.3.bias"]
    return set(keys)


def test_vit_t_key_layout_and_shapes():
    with torch.device("meta"):
        model = build_sam("vit_t")
    enc = {k.removeprefix("image_encoder."): tuple(v.shape) for k, v in model.state_dict().items()
           if k.startswith("image_encoder.")}
    assert set(enc) == _expected_keys()
    assert enc["patch_embed.seq.0.c.weight"] == (32, 3, 3, 3)
    assert enc["layers.2.downsample.conv2.c.weight"] == (320, 1, 3, 3)  # depthwise
    assert enc["layers.1.blocks.0.attn.attention_biases"] == (4, 49)  # 7x7 window offsets
    assert enc["layers.2.blocks.0.attn.attention_biases"] == (5, 196)  # 14x14 window
    assert enc["layers.3.blocks.1.attn.qkv.weight"] == (960, 320)
    assert enc["head.weight"] == (1000, 320)
    # the prompt encoder and decoder are SAM's, unchanged
    other = {k for k in model.state_dict() if not k.startswith("image_encoder.")}
    with torch.device("meta"):
        vit_b = build_sam("vit_b")
    assert other == {k for k in vit_b.state_dict() if not k.startswith("image_encoder.")}
    # the final patch merging keeps the resolution (MobileSAM's stride-1 rule)
    assert model.image_encoder.layers[2].downsample.conv2.c.stride == (1, 1)
    assert model.image_encoder.layers[0].downsample.conv2.c.stride == (2, 2)


def _timm_reference(ours: TinyViTEncoder):
    """timm modules in MobileSAM's arrangement, with our weights copied in."""
    t = timm_tiny_vit
    gelu = torch.nn.GELU
    cfg = sam_config("vit_t")
    dims, depths, heads, wins = cfg.tiny_embed_dims, cfg.tiny_depths, cfg.tiny_num_heads, cfg.tiny_window_sizes
    pe = t.PatchEmbed(3, dims[0], gelu)
    conv_blocks = torch.nn.ModuleList(t.MBConv(dims[0], dims[0], 4.0, gelu, 0.0) for _ in range(depths[0]))
    merges = torch.nn.ModuleList(t.PatchMerging(dims[i], dims[i + 1], gelu) for i in range(3))
    merges[2].conv2.conv.stride = (1, 1)
    stages = torch.nn.ModuleList(
        torch.nn.ModuleList(t.TinyVitBlock(dims[i], heads[i], wins[i]) for _ in range(depths[i])) for i in range(1, 4)
    )
    ref = torch.nn.ModuleDict({"pe": pe, "conv": conv_blocks, "merge": merges, "stages": stages})
    mapping = {}
    for k in ours.state_dict():
        m = k
        m = re.sub(r"^patch_embed\.seq\.0\.", "pe.conv1.", m)
        m = re.sub(r"^patch_embed\.seq\.2\.", "pe.conv2.", m)
        m = re.sub(r"^layers\.0\.blocks\.", "conv.", m)
        m = re.sub(r"^layers\.(\d)\.downsample\.", r"merge.\1.", m)
        m = re.sub(r"^layers\.(\d)\.blocks\.", lambda g: f"stages.{int(g.group(1)) - 1}.", m)
        m = re.sub(r"\.c\.weight$", ".conv.weight", m)
        mapping[k] = m
    ref_sd = ref.state_dict()
    sd = ours.state_dict()
    for k, m in mapping.items():
        if m in ref_sd:
            ref_sd[m] = sd[k]
    ref.load_state_dict(ref_sd)
    return ref.eval(), mapping


def test_tiny_vit_matches_timm_blocks():
    torch.manual_seed(0)
    cfg = sam_config("vit_t", img_size=256)  # grids 64/32/16/16: windows 7/7/14/7 all pad
    ours = TinyViTEncoder(cfg)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(torch.randn_like(p) * (0.05 if p.ndim > 1 else 0.2) + (1.0 if name.endswith("bn.weight") else 0.0))
        for name, b in ours.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
    ours.eval()
    ref, mapping = _timm_reference(ours)
    copied = [k for k, m in mapping.items() if not k.startswith(("neck.", "norm_head.", "head."))]
    assert all(mapping[k] in ref.state_dict() for k in copied)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = ref["pe"](x)
        for blk in ref["conv"]:
            y = blk(y)
        res = 64 // 2
        for i in range(3):
            y = ref["merge"][i](y)  # BCHW
            h = y.shape[2]
            y = y.permute(0, 2, 3, 1)
            for blk in ref["stages"][i]:
                y = blk(y)
            y = y.permute(0, 3, 1, 2)
            res = h
        expect = ours.neck(y)
        got = ours(x)
    assert res == 16 and got.shape == (1, 256, 16, 16)
    assert float((got - expect).abs().max()) < 1e-4 * float(expect.abs().max())
