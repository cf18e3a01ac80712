"""torch -> ONNX export: dynamic batch proven by running another batch size, static
fallback when the model pins it, parity reported, nothing half-written left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from tessera.pipelines.engines import export_onnx  # noqa: E402
from tessera.pipelines.engines.ort_engine import OnnxEngine  # noqa: E402


class _TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 + 2, 3)

    def forward(self, image: torch.Tensor, extra: torch.Tensor):
        pooled = torch.relu(self.conv(image)).mean(dim=(2, 3))
        return self.fc(torch.cat([pooled, extra], dim=1)), pooled


class _PinnedBatch(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(2, -1))  # a literal batch size: traced as a constant


@pytest.mark.slow
def test_default_dynamo_export_has_dynamic_batch_and_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _TwoInputs()
    example = {"image": torch.randn(2, 3, 16, 16), "extra": torch.randn(2, 2)}
    report = export_onnx(model, example, tmp_path / "m.onnx", output_names=["logits", "pooled"])
    assert report.exporter == "dynamo"
    assert report.dynamic_batch and report.batch_checked == 3
    assert set(report.per_output) == {"logits", "pooled"} and report.within(1e-5)
    assert report.opset in (17, 18)
    engine = OnnxEngine(tmp_path / "m.onnx", threads=1)
    assert engine.input_names == ["image", "extra"] and engine.fixed_batch is None
    x = {"image": np.random.default_rng(0).standard_normal((7, 3, 16, 16)).astype(np.float32),
         "extra": np.random.default_rng(1).standard_normal((7, 2)).astype(np.float32)}
    with torch.inference_mode():
        ref = model(*(torch.from_numpy(v) for v in x.values()))
    out = engine.run(x)
    np.testing.assert_allclose(out["logits"], ref[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["pooled"], ref[1].numpy(), rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp folder left


def test_pinned_batch_falls_back_to_a_static_export(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = _PinnedBatch()
    report = export_onnx(model, {"x": torch.randn(2, 2, 4)}, tmp_path / "p.onnx",
                         output_names=["logits"], exporter="torchscript")
    assert not report.dynamic_batch and report.batch_checked == 2
    assert any("torchscript exporter (dynamic batch) failed" in n for n in report.notes)
    assert report.within(1e-5)
    engine = OnnxEngine(tmp_path / "p.onnx", threads=1)
    assert engine.fixed_batch == 2
    x = np.random.default_rng(2).standard_normal((5, 2, 4)).astype(np.float32)
    out = engine.run({"x": x})["logits"]  # 2 + 2 + 1 (padded)
    with torch.inference_mode():
        ref = np.concatenate([model(torch.from_numpy(np.concatenate([x[i:i + 2], x[-1:]])[:2]))
                              .numpy() for i in range(0, 5, 2)])[:5]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx"]
