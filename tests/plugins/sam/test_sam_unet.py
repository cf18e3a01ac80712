"""SAM-UNet: checkpoint layout, the ResNet branch against torchvision, the wiring
(adapters before the global blocks, multi-scale fusion, the medical-token decoder) and
initialisation from an official 1024 px SAM checkpoint."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
torchvision = pytest.importorskip("torchvision")

from tessera.plugins.sam.model import build_sam, sam_config  # noqa: E402
from tessera.plugins.sam.sam_unet import (  # noqa: E402
    ResNetBranch,
    SamUNet,
    SamUNetConfig,
    build_sam_unet,
    resize_rel_pos,
    sam_unet_state_from_sam,
    segmentation_loss,
)

SMALL_SAM = dict(img_size=128, embed_dim=32, depth=8, num_heads=2, global_attn_indexes=(1, 3, 5, 7), window_size=4,
                 prompt_dim=64, decoder_mlp_dim=128, decoder_num_heads=4, iou_head_hidden_dim=64)


def _small(resnet_block="basic") -> SamUNetConfig:
    return SamUNetConfig(sam=sam_config("vit_b", **SMALL_SAM), resnet_block=resnet_block,
                         resnet_layers=(1, 1, 1, 1), resnet_widths=(8, 16, 32, 64))


def test_public_checkpoint_layout_res34():
    """Top-level prefixes and the shapes the public SAM_UNET (res34, vit_b_256) has."""
    with torch.device("meta"):
        model = build_sam_unet("res34")
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    prefixes = {k.split(".")[0] for k in sd}
    assert prefixes == {"image_encoder", "prompt_encoder", "mask_decoder", "resnet", "adapters_in",
                        "adapters_bridge", "embedding_encoder"}
    assert sd["image_encoder.sam_img_encoder.pos_embed"] == (1, 16, 16, 768)
    assert sd["image_encoder.sam_img_encoder.blocks.2.attn.rel_pos_h"] == (31, 64)  # global, 2*16-1
    assert sd["image_encoder.sam_img_encoder.blocks.0.attn.rel_pos_h"] == (27, 64)  # window 14
    assert sd["mask_decoder.med_token.weight"] == (1, 256)
    assert sd["mask_decoder.hf_mlp.layers.2.weight"] == (32, 256)
    assert sd["mask_decoder.embedding_maskfeature.0.weight"] == (64, 32, 3, 3)
    assert sd["mask_decoder.sam_mask_decoder.iou_token.weight"] == (1, 256)
    assert sd["resnet.stage0.0.weight"] == (64, 3, 7, 7)
    assert sd["resnet.stage4.2.conv2.weight"] == (512, 512, 3, 3)
    # adapters: /4 (64 px) -> 16 by two stride-2 convs; /32 (8 px) -> 16 by one transposed conv
    assert sd["adapters_in.0.reshaper.0.weight"] == (128, 64, 3, 3)
    assert sd["adapters_in.0.reshaper.6.weight"] == (768, 256, 1, 1)
    assert sd["adapters_in.2.reshaper.0.weight"] == (768, 256, 1, 1)
    assert sd["adapters_in.3.reshaper.0.weight"] == (512, 256, 2, 2)
    assert sd["adapters_bridge.0.0.weight"] == (768, 256, 2, 2)
    assert sd["adapters_bridge.0.3.weight"] == (256, 32, 2, 2)
    assert sd["embedding_encoder.3.weight"] == (64, 32, 2, 2)
    with torch.device("meta"):
        r50 = build_sam_unet("res50")
    assert tuple(r50.state_dict()["resnet.stage4.0.downsample.0.weight"].shape) == (2048, 1024, 1, 1)


@pytest.mark.parametrize(("block", "tv"), [("basic", "resnet34"), ("bottleneck", "resnet50")])
def test_resnet_branch_matches_torchvision(block, tv):
    ref = getattr(torchvision.models, tv)(weights=None).eval()
    cfg = SamUNetConfig(resnet_block=block)
    ours = ResNetBranch(cfg).eval()
    mapped = {}
    for k, v in ref.state_dict().items():
        if k.startswith("fc."):
            continue
        k2 = k.replace("conv1.", "stage0.0.", 1) if k.startswith("conv1.") else k
        k2 = k2.replace("bn1.", "stage0.1.", 1) if k.startswith("bn1.") else k2
        for i in range(1, 5):
            k2 = k2.replace(f"layer{i}.", f"stage{i}.", 1) if k2.startswith(f"layer{i}.") else k2
        mapped[k2] = v
    ours.load_state_dict(mapped, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = ours(x)
        y = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        for i, f in enumerate(feats, start=1):
            y = getattr(ref, f"layer{i}")(y)
            assert torch.allclose(f, y, atol=1e-5)


def test_adapters_are_added_before_the_global_blocks():
    """With the adapters' last convolutions zeroed, SAM-UNet's embeddings are exactly the
    plain SAM encoder's; un-zeroing one adapter changes them."""
    torch.manual_seed(0)
    model = SamUNet(_small()).eval()
    for a in model.adapters_in:
        torch.nn.init.zeros_(a.reshaper[-1].weight)
        torch.nn.init.zeros_(a.reshaper[-1].bias)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        emb, multi = model.encode(x)
        plain = model.vit(x)
        assert emb.shape == (2, 64, 8, 8) and multi.shape == (2, 8, 32, 32)
        assert torch.allclose(emb, plain, atol=1e-6)
        torch.nn.init.normal_(model.adapters_in[3].reshaper[-1].bias, std=1.0)
        emb2, _ = model.encode(x)
    assert float((emb2 - plain).abs().max()) > 1e-3


def test_multiscale_feature_reaches_the_mask():
    torch.manual_seed(1)
    model = SamUNet(_small()).eval()
    x = torch.randn(1, 3, 128, 128)
    box = torch.tensor([[10.0, 20.0, 90.0, 100.0]])
    with torch.no_grad():
        emb, multi = model.encode(x)
        a = model.decode(emb, multi, boxes=box)
        b = model.decode(emb, multi * 0, boxes=box)
    assert a.shape == (1, 1, 32, 32)
    assert float((a - b).abs().max()) > 1e-4


def test_init_from_official_sam_resizes_pos_embed_and_global_tables():
    torch.manual_seed(2)
    sam = build_sam("vit_b", **{**SMALL_SAM, "img_size": 512})  # grid 32 -> SAM-UNet grid 8
    with torch.no_grad():
        sam.image_encoder.pos_embed.normal_()
        for blk in sam.image_encoder.blocks:
            blk.attn.rel_pos_h.normal_()
    unet = SamUNet(_small())
    sd = sam_unet_state_from_sam(sam.state_dict(), unet)
    unet.load_state_dict(sd)
    pe = unet.vit.pos_embed
    assert pe.shape == (1, 8, 8, 32)
    expect = torch.nn.functional.interpolate(
        sam.image_encoder.pos_embed.permute(0, 3, 1, 2), (8, 8), mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1)
    assert torch.allclose(pe, expect)
    g = unet.vit.blocks[1].attn.rel_pos_h  # a global block: 63 rows -> 15
    assert g.shape == (15, 16)
    assert torch.allclose(g, resize_rel_pos(sam.image_encoder.blocks[1].attn.rel_pos_h, 15))
    w = unet.vit.blocks[0].attn.rel_pos_h  # windowed: unchanged
    assert torch.equal(w, sam.image_encoder.blocks[0].attn.rel_pos_h)
    assert torch.equal(unet.mask_decoder.sam_mask_decoder.mask_tokens.weight, sam.mask_decoder.mask_tokens.weight)
    assert torch.equal(unet.prompts.point_embeddings[2].weight, sam.prompt_encoder.point_embeddings[2].weight)


def test_loss_is_focal_weighted_plus_dice():
    logits = torch.tensor([[[[4.0, -4.0], [4.0, -4.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    good = segmentation_loss(logits, target)
    bad = segmentation_loss(-logits, target)
    assert float(good) < 0.05 < float(bad)
    # the focal weight scales only the focal part
    d20 = segmentation_loss(-logits, target, focal_weight=20.0) - segmentation_loss(-logits, target, focal_weight=0.0)
    d10 = segmentation_loss(-logits, target, focal_weight=10.0) - segmentation_loss(-logits, target, focal_weight=0.0)
    assert torch.allclose(d20, 2 * d10)
