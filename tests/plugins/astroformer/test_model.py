"""Astroformer model: sizes, timm checkpoint layout, ONNX parity, training recipe."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytestmark = pytest.mark.torch

from tessera.plugins.astroformer import model as M  # noqa: E402

C_C_C_T = ("C", "C", "C", "T")


def _meta(fn):
    with torch.device("meta"):
        return fn()


@pytest.mark.parametrize(("size", "coatnet", "expected"), [
    ("astroformer_3", "coatnet_3_224", 148_892_362),
    ("astroformer_4", "coatnet_4_224", 241_088_650),
])
def test_paper_sizes_equal_timm_coatnet_with_the_astroformer_stack(size, coatnet, expected):
    """The paper's sizes are timm's CoAtNet-3/4 widths and depths with the C-C-C-T stack:
    a model timm builds that way has exactly our parameters, names and shapes."""
    ours = _meta(lambda: M.build_model(size, num_classes=10))
    ref = _meta(lambda: timm.create_model(coatnet, num_classes=10, img_size=256, block_type=C_C_C_T))
    assert M.parameter_count(ours) == M.parameter_count(ref) == expected
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert a == b
    assert ours.stages[3].blocks[0].attn.rel_pos.relative_position_bias_table.shape == (15 * 15, 1536 // 32)


def _block_suffixes(keys, stage):
    pat = re.compile(rf"^stages\.{stage}\.blocks\.\d+\.(.*)$")
    return {m.group(1) for k in keys if (m := pat.match(k))}


def test_key_layout_matches_timm_coatnet_naming():
    """Against stock timm CoAtNet-3 (C-C-T-T): stem, stages 0, 1, 3 and head have the same
    keys and shapes; our stage 2 uses timm's MBConv block names (as its stage 1 does)."""
    ours = _meta(lambda: M.build_model("astroformer_3", num_classes=10)).state_dict()
    coat = _meta(lambda: timm.create_model("coatnet_3_224", num_classes=10, img_size=256)).state_dict()
    outside = [k for k in ours if not k.startswith("stages.2.")]
    assert outside == [k for k in coat if not k.startswith("stages.2.")]
    assert all(tuple(ours[k].shape) == tuple(coat[k].shape) for k in outside)
    assert {k.split(".")[0] for k in ours} == {"stem", "stages", "head"}
    assert {"head.norm.weight", "head.pre_logits.fc.weight", "head.fc.weight"} <= set(ours)
    # MBConv in our stage 2 (first block downsamples: shortcut.expand as in stage 1)
    assert _block_suffixes(ours, 2) == _block_suffixes(coat, 1)
    assert _block_suffixes(ours, 3) == _block_suffixes(coat, 3)  # transformer + rel-pos bias


def _demo_reference():
    s = M.SIZES["demo"]
    return timm.create_model("coatnet_0_224", num_classes=10, img_size=s.img_size,
                             embed_dim=s.embed_dim, depths=s.depths, stem_width=s.stem_width,
                             head_hidden_size=s.head_hidden_size, block_type=C_C_C_T)


def test_timm_checkpoint_loads_and_gives_identical_outputs():
    torch.manual_seed(1)
    ref = _demo_reference().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for mod in ref.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    wrapped = {f"module.{k}": v for k, v in ref.state_dict().items()}  # as DDP saves it
    ours = M.build_model("demo", num_classes=10)
    ours.load_state_dict(M.convert_checkpoint(wrapped), strict=True)
    ours.eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_array_equal(ours(x).numpy(), ref(x).numpy())
    # the loaded weights matter: a fresh model disagrees
    fresh = M.build_model("demo", num_classes=10).eval()
    with torch.no_grad():
        assert not np.allclose(fresh(x).numpy(), ref(x).numpy(), atol=1e-3)


def test_architecture_blocks_are_as_the_paper_describes():
    m = M.build_model("demo")
    stem = m.stem
    assert stem.conv1.stride == (2, 2) and stem.conv1.kernel_size == (3, 3)
    assert stem.conv2.kernel_size == (3, 3) and type(stem.norm1.act).__name__ == "GELU"
    blk = m.stages[1].blocks[0]
    assert type(blk).__name__ == "MbConvBlock"
    assert blk.conv1_1x1.out_channels == 4 * 64  # expand 4x
    assert blk.conv2_kxk.groups == blk.conv2_kxk.in_channels and blk.conv2_kxk.kernel_size == (3, 3)
    assert blk.se.fc1.out_channels == 64 // 4  # squeeze-excite 0.25
    tblk = m.stages[3].blocks[0]
    assert type(tblk).__name__ == "TransformerBlock2d" and tblk.attn.rel_pos is not None
    assert type(m.head).__name__ == "NormMlpClassifierHead"
    assert type(m.head.pre_logits.act).__name__ == "Tanh"
    out = m.eval()(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 10)


@pytest.mark.slow
def test_onnx_export_parity(tmp_path):
    from tessera.pipelines.engines import export_onnx

    torch.manual_seed(0)
    model = M.build_model("demo").eval()
    report = export_onnx(model, {"input": torch.zeros(2, 3, 64, 64)}, tmp_path / "m.onnx",
                         output_names=["logits"])
    assert report.dynamic_batch and report.max_abs_diff < 1e-4


def test_shipped_plugin_keeps_the_contract():
    """Manifest, files (sha256), hooks, model card; shipped ONNX vs safetensors parity."""
    from tessera.pipelines.plugin_system import get_plugin, validate_plugin

    plugin = get_plugin("astroformer")
    problems = [p for p in validate_plugin(plugin) if p.is_error]
    assert not problems, problems


@pytest.mark.slow
def test_training_recipe_runs_and_is_deterministic(tmp_path):
    from tessera.plugins.astroformer.train import train

    a = train(tmp_path / "a", seed=3, n_train=128, n_val=20, epochs=1, export=False)
    b = train(tmp_path / "b", seed=3, n_train=128, n_val=20, epochs=1, export=False)
    assert a["steps"] == 2 and len(a["confusion"]) == 10 and sum(map(sum, a["confusion"])) == 20
    assert a["files"]["astroformer_demo.safetensors"] == b["files"]["astroformer_demo.safetensors"]
    assert a["loss_per_epoch"] == b["loss_per_epoch"]
