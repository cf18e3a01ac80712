"""A lab's own timm ViT checkpoint becomes a working plugin folder (ONNX + torch), no code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def lab_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    from safetensors.torch import save_file

    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=128, depth=2, num_heads=2, num_classes=3
    ).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.state_dict().values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    path = tmp_path_factory.mktemp("lab") / "vit_breakhis.safetensors"
    save_file({f"model.{k}": v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    return path, ref


def test_checkpoint_to_plugin_runs_with_both_engines(lab_checkpoint, tmp_path: Path) -> None:
    from tessera.pipelines.engines import create_engine
    from tessera.pipelines.plugin_system import get_plugin
    from tessera.plugins.breast_vit.from_checkpoint import main

    ckpt, ref = lab_checkpoint
    out = tmp_path / "lab-vit"
    rc = main([str(ckpt), "--out", str(out), "--id", "lab-vit", "--heads", "2",
               "--classes", "normal,benign,malignant", "--mpp", "0.5"])
    assert rc == 0 and (out / "manifest.toml").is_file() and (out / "MODEL_CARD.md").is_file()
    plugin = get_plugin(out)
    m = plugin.manifest
    assert [c.name for c in m.output.classes] == ["normal", "benign", "malignant"]
    assert m.output.positive_class == "malignant" and m.input.target_mpp == 0.5
    assert m.input.size_px == [64, 64]
    tiles = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    inputs = plugin.processing().preprocess(tiles, m)
    with torch.no_grad():
        want = ref(torch.from_numpy(inputs["input"])).numpy()
    for engine in ("onnx", "torch"):
        got = create_engine(plugin, engine=engine).run(inputs)["logits"]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_wrong_class_count_is_a_clear_error(lab_checkpoint, tmp_path: Path) -> None:
    from tessera.plugins.breast_vit.from_checkpoint import main

    ckpt, _ = lab_checkpoint
    rc = main([str(ckpt), "--out", str(tmp_path / "x"), "--id", "x-vit", "--heads", "2",
               "--classes", "benign,malignant", "--mpp", "0.5"])
    assert rc == 1
    assert not (tmp_path / "x" / "manifest.toml").exists()
