"""The multi-branch eDOS CNN: shapes at both sizes, unshared branches, ONNX parity, a few training steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from tessera.plugins.sac_cnn.model import DEMO, PAPER, build_model  # noqa: E402


def test_paper_size_matches_the_published_architecture() -> None:
    m = build_model("paper").eval()
    br = m.branches
    assert PAPER.filters == 17 and PAPER.kernel == 10 and PAPER.pool == 22 and PAPER.dropout == 0.3
    assert [c.kernel_size[0] for c in br.convs] == [10, 10, 10]
    assert br.convs[0].in_channels == 9 * 6 and br.convs[0].out_channels == 9 * 17 and br.convs[0].groups == 9
    assert br.down.kernel_size == (2,) and br.down.stride == (2,)
    # 4000 -> 2000 (strided conv) -> 90 positions (pool 22) x 17 filters per branch
    assert [tuple(w.shape) for w in br.dense_weight] == [(9, 90 * 17, 256), (9, 256, 128), (9, 128, 1)]
    assert [layer.out_features for layer in m.head] == [256, 512, 128] and m.out.out_features == 1
    with torch.no_grad():
        y = m(torch.rand(2, 4000, 9, 6))
    assert y.shape == (2,) and torch.isfinite(y).all()


def test_demo_size_shapes_and_output_in_ev() -> None:
    m = build_model("demo").eval()
    assert DEMO.branch_length == 20
    m.target_mean_ev.fill_(-0.5)
    m.target_std_ev.fill_(0.8)
    x = torch.rand(3, 4000, 9, 6)
    with torch.no_grad():
        z = m.forward_pooled(m.pool_energy(x))
        y = m(x)
    assert y.shape == (3,)
    torch.testing.assert_close(y, z * 0.8 - 0.5)


def test_branches_are_unshared_and_see_only_their_orbital() -> None:
    torch.manual_seed(0)
    m = build_model("demo").eval()
    x = torch.rand(2, 9, 6, 125)
    with torch.no_grad():
        base = m.branches(x)
        x2 = x.clone()
        x2[:, 4] += 1.0  # change only orbital 4 (dxy)
        moved = m.branches(x2)
    changed = (moved - base).abs().amax(dim=0) > 1e-6
    assert changed.tolist() == [k == 4 for k in range(9)]
    w = m.branches.convs[0].weight  # [9*8, 6, 10]: each branch its own filters
    assert not torch.allclose(w[:8], w[8:16])


@pytest.mark.slow
def test_onnx_export_parity(tmp_path: Path) -> None:
    import onnxruntime as ort

    from tessera.plugins.sac_cnn.train import export_onnx_model

    torch.manual_seed(1)
    m = build_model("demo").eval()
    diff = export_onnx_model(m, torch.rand(2, 4000, 9, 6), tmp_path / "m.onnx")
    assert diff < 1e-4
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((5, 4000, 9, 6), dtype=np.float32)  # another batch size
    (y,) = sess.run(["e_ads"], {"edos": x})
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y.reshape(-1), ref, atol=1e-4)


@pytest.mark.slow
def test_quick_training_runs_and_exports(tmp_path: Path) -> None:
    from tessera.pipelines.progress import RecordingProgress
    from tessera.plugins.sac_cnn.train import ONNX_NAME, SAFETENSORS_NAME, train

    rec = RecordingProgress()
    metrics = train(tmp_path, seed=0, quick=True, progress=rec)
    assert metrics["quick"] and metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert np.isfinite(metrics["test_mae_ev"]) and metrics["n_test"] > 0
    assert metrics["onnx_max_abs_diff_ev"] < 1e-4
    assert rec.closed and rec.done == rec.total
    for name in (ONNX_NAME, SAFETENSORS_NAME, "parity.png", "train_metrics.json"):
        assert (tmp_path / name).stat().st_size > 0
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / SAFETENSORS_NAME))
    m = build_model("demo")
    m.load_state_dict(state)
    assert float(m.target_std_ev) > 0.1  # target standardisation travels with the weights
    # deterministic for a seed: a second run gives the same weights bit for bit
    again = train(tmp_path / "again", seed=0, quick=True)
    assert again["test_mae_ev"] == metrics["test_mae_ev"]
    state2 = load_file(str(tmp_path / "again" / SAFETENSORS_NAME))
    assert all(torch.equal(state[k], state2[k]) for k in state)
