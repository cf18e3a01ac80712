"""Our SAM against the official ``segment-anything`` package, on random weights.

The official modules are built at a small size (same code paths: windowed blocks with
padding, global blocks, rel-pos tables, the full prompt encoder and mask decoder), their
state dict is loaded into ours unchanged, and embeddings, low-res masks and IoU
predictions are compared for points, boxes, points + box + mask input.
"""

from __future__ import annotations

from functools import partial

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

sam_ref = pytest.importorskip("segment_anything")
from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from tessera.plugins.sam.model import (  # noqa: E402
    CONFIGS,
    build_sam,
    convert_checkpoint,
    infer_variant,
    load_sam,
)

IMG, DIM, DEPTH, HEADS, GLOBAL, WIN = 160, 64, 4, 4, (1, 3), 4  # grid 10 -> windows padded to 12


def _official(img: int = IMG) -> Sam:
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=DEPTH, embed_dim=DIM, img_size=img, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=HEADS, patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=GLOBAL, window_size=WIN, out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(img // 16, img // 16), input_image_size=(img, img), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    ).eval()


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = _official()
    with torch.no_grad():  # official init leaves pos/rel-pos tables at zero: randomise all
        for name, p in ref.named_parameters():
            scale = 0.5 if ("rel_pos" in name or "pos_embed" in name) else (0.05 if p.ndim > 1 else 0.1)
            p.copy_(torch.randn_like(p) * scale + (1.0 if name.endswith(("norm1.weight", "norm2.weight")) else 0.0))
    ours = build_sam("vit_b", img_size=IMG, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                     global_attn_indexes=GLOBAL, window_size=WIN)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _close(a, b, rtol=1e-4):
    scale = float(b.abs().max()) + 1e-6
    return float((a - b).abs().max()) / scale < rtol, float((a - b).abs().max()), scale


def test_image_embeddings_match(pair):
    ref, ours = pair
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ref.image_encoder(x), ours.image_encoder(x)
    assert a.shape == b.shape == (2, 256, IMG // 16, IMG // 16)
    ok, diff, scale = _close(b, a)
    assert ok, (diff, scale)


@pytest.mark.parametrize("prompt", ["points", "box", "points+box+mask"])
@pytest.mark.parametrize("multimask", [True, False])
def test_masks_and_iou_match(pair, prompt, multimask):
    ref, ours = pair
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(1, 256, IMG // 16, IMG // 16, generator=g)
    pts = torch.rand(3, 2, 2, generator=g) * IMG
    labs = torch.tensor([[1, 0], [1, 1], [0, 1]])
    boxes = torch.tensor([[10.0, 20, 90, 120], [30, 5, 150, 60], [0, 0, 159, 159]])
    masks = torch.randn(3, 1, IMG // 4, IMG // 4, generator=g)
    points = (pts, labs) if "points" in prompt else None
    box = boxes if "box" in prompt else None
    mask = masks if "mask" in prompt else None
    with torch.no_grad():
        s_ref, d_ref = ref.prompt_encoder(points=points, boxes=box, masks=mask)
        m_ref, i_ref = ref.mask_decoder(emb, ref.prompt_encoder.get_dense_pe(), s_ref, d_ref, multimask)
        s_our, d_our = ours.prompt_encoder(points, box, mask)
        m_our, i_our = ours.mask_decoder(emb, ours.prompt_encoder.get_dense_pe(), s_our, d_our, multimask)
    assert s_our.shape == s_ref.shape and d_our.shape == d_ref.shape
    assert _close(s_our, s_ref)[0] and _close(d_our, d_ref)[0]
    assert m_our.shape == m_ref.shape == (3, 3 if multimask else 1, IMG // 4, IMG // 4)
    ok, diff, scale = _close(m_our, m_ref)
    assert ok, (diff, scale)
    assert _close(i_our, i_ref)[0]
    # the masks are not trivially equal for every prompt: the prompts matter
    assert float((m_ref[0] - m_ref[1]).abs().max()) > 1e-3 * float(m_ref.abs().max())


def test_dense_position_encoding_matches(pair):
    ref, ours = pair
    assert torch.allclose(ours.prompt_encoder.get_dense_pe(), ref.prompt_encoder.get_dense_pe(), atol=1e-5)


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_official_checkpoint_layout(variant):
    """Every key and shape of the official registry's model, at full size (meta device:
    no memory, no weights), equals ours."""
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        official = sam_model_registry[variant](checkpoint=None)
        mine = build_sam(variant)
    ref_sd = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    our_sd = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
    assert ref_sd == our_sd
    assert infer_variant(official.state_dict()) == variant
    assert ref_sd["image_encoder.pos_embed"] == (1, 64, 64, CONFIGS[variant].embed_dim)


def test_load_sam_accepts_wrapped_and_dataparallel_checkpoints(pair):
    ref, _ = pair
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    assert convert_checkpoint({"model": sd}).keys() == ref.state_dict().keys()
    with pytest.raises(ValueError, match="not an official SAM size"):
        load_sam({"model": sd})  # a 64-d, 4-block encoder is no official size
    model = load_sam(sd, build_sam("vit_b", img_size=IMG, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                                   global_attn_indexes=GLOBAL, window_size=WIN).config)
    assert torch.equal(model.mask_decoder.iou_token.weight, ref.mask_decoder.iou_token.weight)


def test_medsam_has_the_vit_b_layout():
    with torch.device("meta"):
        a, b = build_sam("medsam"), build_sam("vit_b")
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert a.config.preprocessing == "medsam"
