"""ONNX graphs: the encoder alone, and the decoder with the official export's interface,
compared with torch and with segment-anything's own ``SamOnnxModel``."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
pytest.importorskip("segment_anything")
ort = pytest.importorskip("onnxruntime")

from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.utils.onnx import SamOnnxModel  # noqa: E402

from tessera.plugins.sam import export  # noqa: E402
from tessera.plugins.sam.model import build_sam  # noqa: E402
from tessera.plugins.sam.sam_unet import SamUNet, SamUNetConfig  # noqa: E402

IMG = 128
SMALL = dict(img_size=IMG, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    ref = Sam(
        image_encoder=ImageEncoderViT(depth=2, embed_dim=32, img_size=IMG, num_heads=2, use_rel_pos=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), global_attn_indexes=(1,),
                                      window_size=4, out_chans=256),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(IMG // 16, IMG // 16),
                                     input_image_size=(IMG, IMG), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=256,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)),
    ).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(torch.randn_like(p) * (0.05 if p.ndim > 1 else 0.1) + (1.0 if "norm" in name and name.endswith("weight") else 0))
    ours = build_sam("vit_b", **SMALL)
    ours.load_state_dict(ref.state_dict())
    d = tmp_path_factory.mktemp("onnx")
    report = export.export_sam(ours, d / "encoder.onnx", d / "decoder.onnx")
    return ref, ours, d, report


def test_graph_interfaces_are_the_official_ones(exported):
    _, _, d, _ = exported
    dec = ort.InferenceSession(str(d / "decoder.onnx"), providers=["CPUExecutionProvider"])
    ins = {i.name: (i.shape, i.type) for i in dec.get_inputs()}
    assert list(ins) == export.DECODER_INPUTS
    # official shapes; the batch axis (1 in the official export) is symbolic
    assert ins["image_embeddings"][0][1:] == [256, IMG // 16, IMG // 16]
    assert isinstance(ins["point_coords"][0][1], str)  # N is dynamic
    assert ins["point_coords"][0][2] == 2
    assert ins["mask_input"][0][1:] == [1, IMG // 4, IMG // 4]
    assert all(isinstance(ins[n][0][0], str) for n in ("image_embeddings", "point_coords", "point_labels", "mask_input"))
    assert ins["has_mask_input"][0] == [1] and ins["orig_im_size"][0] == [2]
    assert all(t == "tensor(float)" for _, t in ins.values())
    assert [o.name for o in dec.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]
    enc = ort.InferenceSession(str(d / "encoder.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in enc.get_inputs()] == [("image", [1, 3, IMG, IMG])]
    assert [o.name for o in enc.get_outputs()] == ["image_embeddings"]


def test_parity_with_torch(exported):
    _, _, _, report = exported
    assert report["encoder"]["image_embeddings"] < 1e-4
    for name in ("masks", "iou_predictions", "low_res_masks"):
        assert report["decoder"][name] < 1e-4, report


@pytest.mark.parametrize(
    ("coords01", "labels", "has_mask", "orig_hw"),
    [
        ([[0.3, 0.4], [0.0, 0.0]], [1, -1], 0.0, (96, 128)),  # one click + padding: best multimask
        ([[0.1, 0.2], [0.7, 0.6]], [2, 3], 0.0, (200, 130)),  # a box alone
        ([[0.4, 0.5], [0.1, 0.2], [0.7, 0.6]], [1, 2, 3], 0.0, (128, 77)),  # click + box: single mask
        ([[0.3, 0.4], [0.6, 0.5], [0.0, 0.0]], [1, 0, -1], 1.0, (50, 64)),  # + a mask input
    ],
)
def test_same_answers_as_the_official_onnx_model(exported, coords01, labels, has_mask, orig_hw):
    """Our decoder graph (onnxruntime) vs segment-anything's SamOnnxModel (torch) on the
    same official-format inputs: masks at the original size, IoU and low-res masks."""
    ref, _, d, _ = exported
    official = SamOnnxModel(ref, return_single_mask=True).eval()
    g = torch.Generator().manual_seed(5)
    feed = {
        "image_embeddings": torch.randn(1, 256, IMG // 16, IMG // 16, generator=g),
        "point_coords": torch.tensor([coords01], dtype=torch.float32) * IMG,
        "point_labels": torch.tensor([labels], dtype=torch.float32),
        "mask_input": torch.randn(1, 1, IMG // 4, IMG // 4, generator=g),
        "has_mask_input": torch.tensor([has_mask]),
        "orig_im_size": torch.tensor(orig_hw, dtype=torch.float32),
    }
    with torch.no_grad():
        want = official(*feed.values())
    sess = ort.InferenceSession(str(d / "decoder.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(export.DECODER_OUTPUTS, {k: v.numpy() for k, v in feed.items()})
    for w, o in zip(want, got, strict=True):
        assert tuple(w.shape) == o.shape
        scale = float(w.abs().max()) + 1e-6
        assert float(np.abs(w.numpy() - o).max()) < 1e-4 * max(scale, 1.0)
    assert got[0].shape == (1, 1, *orig_hw)


def test_medsam_decoder_resizes_without_cropping(tmp_path):
    torch.manual_seed(1)
    model = build_sam("medsam", **SMALL)
    export.export_decoder(model, tmp_path / "dec.onnx")
    sess = ort.InferenceSession(str(tmp_path / "dec.onnx"), providers=["CPUExecutionProvider"])
    feed = {
        "image_embeddings": np.random.default_rng(0).normal(size=(1, 256, 8, 8)).astype(np.float32),
        "point_coords": np.array([[[10.0, 20.0], [90.0, 110.0]]], np.float32),
        "point_labels": np.array([[2.0, 3.0]], np.float32),
        "mask_input": np.zeros((1, 1, 32, 32), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([300.0, 90.0], np.float32),  # squashed to 128 x 128 by MedSAM
    }
    masks, _, low = sess.run(export.DECODER_OUTPUTS, feed)
    expect = torch.nn.functional.interpolate(torch.from_numpy(low), (300, 90), mode="bilinear", align_corners=False)
    assert masks.shape == (1, 1, 300, 90)
    assert np.abs(masks - expect.numpy()).max() < 1e-4


def test_sam_unet_graphs(tmp_path):
    from tessera.plugins.sam.model import sam_config

    torch.manual_seed(2)
    cfg = SamUNetConfig(sam=sam_config("vit_b", img_size=IMG, embed_dim=32, depth=4, num_heads=2,
                                       global_attn_indexes=(0, 1, 2, 3), window_size=4, prompt_dim=64,
                                       decoder_mlp_dim=128, decoder_num_heads=4, iou_head_hidden_dim=64),
                        resnet_layers=(1, 1, 1, 1), resnet_widths=(8, 16, 32, 64))
    model = SamUNet(cfg).eval()
    report = export.export_sam_unet(model, tmp_path / "enc.onnx", tmp_path / "dec.onnx")
    assert report["encoder"]["image_embeddings"] < 1e-4 and report["encoder"]["multi_scale_feature"] < 1e-4
    assert max(report["decoder"].values()) < 1e-4
    dec = ort.InferenceSession(str(tmp_path / "dec.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in dec.get_inputs()]
    assert names == ["image_embeddings", "multi_scale_feature", *export.DECODER_INPUTS[1:]]


def test_decoder_batch_equals_single_calls(exported):
    """Two images' embeddings with their own prompts in one call give what two calls give
    (the symbolic batch axis is real, not just declared)."""
    _, _, d, _ = exported
    sess = ort.InferenceSession(str(d / "decoder.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    feed = {
        "image_embeddings": rng.normal(size=(2, 256, IMG // 16, IMG // 16)).astype(np.float32),
        "point_coords": np.array([[[30.0, 40.0], [0, 0]], [[90.0, 20.0], [0, 0]]], np.float32),
        "point_labels": np.array([[1.0, -1.0], [1.0, -1.0]], np.float32),
        "mask_input": np.zeros((2, 1, IMG // 4, IMG // 4), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([100.0, 128.0], np.float32),
    }
    both = sess.run(export.DECODER_OUTPUTS, feed)
    for i in range(2):
        one = {k: (v[i : i + 1] if k not in ("has_mask_input", "orig_im_size") else v) for k, v in feed.items()}
        single = sess.run(export.DECODER_OUTPUTS, one)
        for b, s in zip(both, single, strict=True):
            assert np.allclose(b[i : i + 1], s, atol=1e-5)
