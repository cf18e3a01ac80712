"""The tubule-sensitive U-Nets: size, feature recalibration, AD, deep supervision, training."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from tessera.plugins.airway_av.model import (  # noqa: E402
    FeatureRecalibration,
    NetConfig,
    ProbabilityModel,
    TubuleUNet,
    attention_distillation_loss,
    build_model,
    count_parameters,
    total_loss,
)
from tessera.plugins.airway_av.train import use_fast_conv_backward  # noqa: E402

TINY = {"base": 2, "cube_zyx": (16, 32, 32)}


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared CPU, OpenMP spin-waits cost more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_paper_size_parameter_count() -> None:
    # Qin et al. report about 4.2 M parameters for the airway network
    assert count_parameters(build_model("paper", "airway")) == 4_233_907
    av = build_model("paper", "artery-vein")
    # three more input channels (lung, distance, vessel-window CT: 3 x 8 x 27 weights),
    # three outputs on the head and the three deep-supervision heads
    assert count_parameters(av) == 4_233_907 + 3 * 8 * 27 + 2 * (17 + 129 + 65 + 33)
    assert av.enc1.body[0].in_channels == 4 and av.head.out_channels == 3


def test_paper_channel_plan_and_fixed_cubes() -> None:
    net = build_model("paper", "airway")
    plan = [(b.body[0].in_channels, b.body[0].out_channels, b.body[3].out_channels)
            for b in (net.enc1, net.enc2, net.enc3, net.enc4, net.enc5)]
    assert plan == [(1, 8, 16), (16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128, 256)]
    # the coordinates join at the last decoder level only: 32 upsampled + 16 skip + 3
    assert net.dec1.body[0].in_channels == 32 + 16 + 3
    assert net.dec2.body[0].in_channels == 64 + 32
    # FR cube sizes are fixed per level from the default 80 x 192 x 304 patch
    assert net.enc1.fr.cube_zyx == (80, 192, 304)
    assert net.enc3.fr.cube_zyx == (20, 48, 76)
    assert net.enc5.fr.cube_zyx == (5, 12, 19)
    assert net.dec2.fr.cube_zyx == (40, 96, 152)
    assert [h.in_channels for h in net.deep_heads] == [128, 64, 32]


def _reference_fr(fr: FeatureRecalibration, x: torch.Tensor) -> torch.Tensor:
    """The FR formula written out with einsum (independent of the matmul layout)."""
    wd, bd = fr.proj_d.weight[0], fr.proj_d.bias[0]
    wh, bh = fr.proj_h.weight[0], fr.proj_h.bias[0]
    ww, bw = fr.proj_w.weight[0], fr.proj_w.bias[0]
    over_w = torch.einsum("ncdhw,w->ncdh", x, ww) + bw
    over_d = torch.einsum("ncdhw,d->nchw", x, wd) + bd
    z_d = torch.einsum("ncdh,h->ncd", over_w, wh) + bh
    z_h = torch.einsum("nchw,w->nch", over_d, ww) + bw
    z_w = torch.einsum("nchw,h->ncw", over_d, wh) + bh
    z = z_d[:, :, :, None, None] + z_h[:, :, None, :, None] + z_w[:, :, None, None, :]
    return x * fr.excite(z)


def test_feature_recalibration_formula_and_fixed_size() -> None:
    torch.manual_seed(0)
    fr = FeatureRecalibration(6, (4, 5, 7))
    x = torch.randn(2, 6, 4, 5, 7)
    out = fr(x)
    torch.testing.assert_close(out, _reference_fr(fr, x), rtol=1e-5, atol=1e-6)
    gate = out / x
    assert float(gate.min()) > 0 and float(gate.max()) < 1  # sigmoid gating
    # the gate varies along every axis (projections onto D, H and W are summed)
    for axis in (2, 3, 4):
        assert float(gate.std(dim=axis).mean()) > 1e-4
    assert sum(p.numel() for p in fr.parameters()) == (4 + 1) + (5 + 1) + (7 + 1) + (6 * 3 + 3) + (3 * 6 + 6)
    with pytest.raises(ValueError, match="fixed patch size"):
        fr(torch.randn(1, 6, 4, 5, 8))


def test_forward_outputs_deep_supervision_and_attention_maps() -> None:
    torch.manual_seed(0)
    net = build_model("demo", "airway", **TINY).eval()
    x = torch.rand(2, net.input_channels, 16, 32, 32)
    logits, deep, maps = net(x, aux=True)
    assert logits.shape == (2, 1, 16, 32, 32)
    assert [d.shape for d in deep] == [(2, 1, 16, 32, 32)] * 3
    assert [tuple(m.shape[2:]) for m in maps] == [(1, 2, 2), (2, 4, 4), (4, 8, 8), (8, 16, 16),
                                                  (16, 32, 32)]
    torch.testing.assert_close(net(x), logits)
    # the coordinate channels reach the output
    x2 = x.clone()
    x2[:, 1:] = -x2[:, 1:]
    assert not torch.allclose(net(x2), logits)
    probs = ProbabilityModel(net)(x)
    torch.testing.assert_close(probs, torch.sigmoid(logits))


def test_artery_vein_model_softmax() -> None:
    torch.manual_seed(0)
    net = build_model("demo", "artery-vein", **TINY).eval()
    assert net.input_channels == 7  # CT, lung, distance, vessel-window CT, z, y, x
    p = ProbabilityModel(net)(torch.rand(1, 7, 16, 32, 32))
    assert p.shape == (1, 3, 16, 32, 32)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(1, 16, 32, 32))


def test_attention_distillation_loss() -> None:
    flat = [torch.ones(1, 1, 2, 2, 2), torch.ones(1, 1, 4, 4, 4)]
    assert float(attention_distillation_loss(flat)) == pytest.approx(0.0, abs=1e-9)
    low = torch.zeros(1, 1, 2, 2, 2, requires_grad=True)
    high = torch.zeros(1, 1, 4, 4, 4, requires_grad=True)
    with torch.no_grad():
        high[0, 0, 0, 0, 0] = 8.0  # a peaked high-resolution map
    loss = attention_distillation_loss([low, high])
    assert 0.0 < float(loss) <= 2.0
    loss.backward()
    assert low.grad is not None and float(low.grad.abs().sum()) > 0
    assert high.grad is None  # the higher-resolution map is the (detached) teacher


def test_training_reduces_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    net = build_model("demo", "airway", base=2, cube_zyx=(16, 16, 32))
    x = torch.rand(2, 4, 16, 16, 32)
    x[:, 0, :, 4:12, 12:20] = 0.0  # a dark tube to find
    y = torch.zeros(2, 1, 16, 16, 32)
    y[:, 0, :, 4:12, 12:20] = 1.0
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    losses = []
    for _ in range(10):
        loss, parts = total_loss(net, x, y, ad_lambda=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["total"])
        assert set(parts) == {"seg", "deep", "ad", "total"}
    assert losses[-1] < 0.8 * losses[0]


def test_fast_conv_backward_matches_autograd() -> None:
    torch.manual_seed(0)
    ref = TubuleUNet(NetConfig(in_channels=3, out_channels=3, base=2, cube_zyx=(16, 32, 32),
                               output="softmax"))
    fast = TubuleUNet(ref.config)
    fast.load_state_dict(ref.state_dict())
    assert use_fast_conv_backward(fast) == 18
    x = torch.rand(2, 6, 16, 32, 32)
    y = torch.randint(0, 3, (2, 16, 32, 32))
    for net in (ref, fast):
        loss, _ = total_loss(net, x, y)
        loss.backward()
    for (name, a), (_, b) in zip(ref.named_parameters(), fast.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=2e-3, atol=2e-5, msg=name)


@pytest.mark.parametrize("role", ["airway", "artery-vein"])
def test_onnx_export_at_the_fixed_cube_matches_torch(role, tmp_path) -> None:
    import onnx

    from tessera.pipelines.engines import export_onnx
    from tessera.plugins.airway_av.model import build_served_model

    torch.manual_seed(0)
    model = build_served_model("demo", role).eval()  # the shipped demo size, 32 x 64 x 64
    n_in = model.net.input_channels
    report = export_onnx(model, {"input": torch.rand(1, n_in, 32, 64, 64)},
                         tmp_path / f"{role}.onnx", output_names=["probabilities"],
                         exporter="torchscript")
    assert report.within(atol=1e-4), report.max_abs_diff
    graph = onnx.load(str(tmp_path / f"{role}.onnx")).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [n_in, 32, 64, 64]  # static cube
    assert dims[0].dim_param  # dynamic batch
    out_dims = graph.output[0].type.tensor_type.shape.dim
    assert out_dims[1].dim_value == (1 if role == "airway" else 3)
