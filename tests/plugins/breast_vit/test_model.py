"""breast-vit model: timm and Hugging Face checkpoints load with identical outputs.

Reference models are built with random weights (every tensor randomised, so a swapped
query/key/value block or a transposed weight cannot pass), their state dicts converted
and loaded into ``BreastViT``, and outputs compared. The Hugging Face reference is the
real ``transformers`` ``ViTForImageClassification``, saved with ``save_pretrained`` (the
file layout users have) and also taken from memory (the transformers >= 5 layout).
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
timm = pytest.importorskip("timm")

from tessera.plugins.breast_vit.model import (  # noqa: E402
    SIZES,
    build_model,
    checkpoint_layout,
    convert_checkpoint,
    infer_config,
)

SMALL = {"embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 4.0}
IMG = 64


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _x(n: int = 3, img: int = IMG) -> torch.Tensor:
    return torch.randn(n, 3, img, img, generator=torch.Generator().manual_seed(1))


def test_demo_model_shapes_and_heads() -> None:
    m = build_model("demo").eval()
    logits, sub = m(_x(2, 112))
    assert logits.shape == (2, 2) and sub.shape == (2, 8)
    assert SIZES["demo"].img_size == 112
    n_params = sum(p.numel() for p in m.parameters())
    assert 1_000_000 < n_params < 2_000_000  # a few MB as float32
    plain = build_model("demo", num_subtypes=0).eval()
    assert plain(_x(2, 112)).shape == (2, 2)


def test_timm_checkpoint_gives_identical_outputs() -> None:
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=IMG, patch_size=16, num_classes=2, **SMALL
    ).eval()
    _randomise(ref, 0)
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}  # saved from DDP
    assert checkpoint_layout(convert_checkpoint(state)) == "timm"
    ours = build_model("demo", img_size=IMG, num_subtypes=0, **SMALL).eval()
    ours.load_state_dict(convert_checkpoint(state), strict=True)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_vit_b16_checkpoint_keys_and_shapes_fit_the_base_size() -> None:
    with torch.device("meta"):  # shapes only: no 86M-parameter initialisation
        ref = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=2)
        converted = convert_checkpoint(ref.state_dict())
        ours = build_model("base", num_subtypes=0)
    own = ours.state_dict()
    assert set(converted) == set(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)
    ours.load_state_dict(converted, strict=True, assign=True)
    assert infer_config(converted) == {
        "embed_dim": 768, "depth": 12, "num_heads": 12, "patch_size": 16, "mlp_ratio": 4.0,
        "img_size": 224, "num_classes": 2, "num_subtypes": 0,
    }


def _hf_reference(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
        image_size=IMG, patch_size=16, num_labels=2, hidden_act="gelu", layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    hf = transformers.ViTForImageClassification(cfg).eval()
    _randomise(hf, 3)
    hf.save_pretrained(tmp_path)
    return transformers, cfg, hf


def test_huggingface_checkpoint_file_gives_identical_outputs(tmp_path: Path) -> None:
    from tessera.pipelines.engines.checkpoints import load_state_dict

    _, _, hf = _hf_reference(tmp_path)
    state = load_state_dict(tmp_path / "model.safetensors")
    assert any(k.endswith("attention.attention.query.weight") for k in state)  # v4 file layout
    assert checkpoint_layout(state) == "huggingface"
    converted = convert_checkpoint(state)
    cfg = infer_config(converted) | {"num_heads": 2}  # heads are not in the weights
    ours = build_model("demo", **cfg).eval()
    ours.load_state_dict(converted, strict=True)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(pixel_values=x).logits, atol=2e-5, rtol=1e-4)
        # the in-memory layout of transformers >= 5 maps the same way
        again = convert_checkpoint(hf.state_dict())
        for k, v in converted.items():
            torch.testing.assert_close(again[k], v)


def test_huggingface_vitmodel_backbone_with_pooler(tmp_path: Path) -> None:
    transformers, cfg, hf = _hf_reference(tmp_path)
    backbone = transformers.ViTModel(cfg, add_pooling_layer=True).eval()
    backbone.load_state_dict({k[len("vit."):]: v for k, v in hf.state_dict().items()
                              if k.startswith("vit.")}, strict=False)
    state = {k: v for k, v in backbone.state_dict().items()}
    assert any(k.startswith("pooler.") for k in state)
    converted = convert_checkpoint(state)  # pooler dropped, no head
    ours = build_model("demo", img_size=IMG, num_subtypes=0, **SMALL).eval()
    missing = ours.load_state_dict(converted, strict=False)
    assert set(missing.missing_keys) == {"head.weight", "head.bias"}
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), backbone(pixel_values=x).last_hidden_state,
                                   atol=2e-5, rtol=1e-4)


def test_position_embeddings_resampled_to_another_input_size() -> None:
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=16, num_classes=2, **SMALL)
    converted = convert_checkpoint(ref.state_dict(), img_size=112)
    assert converted["pos_embed"].shape == (1, 50, 64)
    ours = build_model("demo", img_size=112, num_subtypes=0, **SMALL)
    ours.load_state_dict(converted, strict=True)


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(KeyError, match="not a ViT checkpoint"):
        convert_checkpoint({"conv1.weight": torch.zeros(3), "fc.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="unknown size"):
        build_model("huge")
