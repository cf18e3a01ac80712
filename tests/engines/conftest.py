"""Fixtures for the engine tests: isolated caches, the ACME ONNX plugin, and (torch) a
tiny CNN plugin with a model hook, safetensors weights and an exported ONNX file."""

from __future__ import annotations

import hashlib
import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

_INSTALL = Path(__file__).resolve().parents[1] / "fixtures" / "third_party_plugin" / "install.py"


def _load_install() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_acme_install_engines", _INSTALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


acme = _load_install()

# Shared fixtures (autouse: isolated_user_dirs keeps tests out of the real home).
verdict_cache = acme.verdict_cache
isolated_user_dirs = acme.isolated_user_dirs
make_acme_folder = acme.make_acme_folder


TINY_MODEL = '''
"""A tiny CNN classifier (test plugin) and its checkpoint key mapping."""
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def build_model(size: str = "demo", num_classes: int = 2) -> nn.Module:
    return TinyNet(num_classes, {"demo": 8, "base": 32}[size])


# The "official repository" layout this plugin also accepts.
OFFICIAL = {"backbone.conv1.": "features.0.", "backbone.bn1.": "features.1.",
            "backbone.conv2.": "features.3.", "fc.": "head."}


def convert_checkpoint(state_dict, *, role="model"):
    out = {}
    for key, value in state_dict.items():
        for old, new in OFFICIAL.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out
'''

TINY_TRAIN = '''
"""A few steps of SGD on random data: proves `tessera train` drives a recipe."""
import torch
from safetensors.torch import save_file

from .model import build_model


def train(out_dir, *, seed, quick, progress):
    torch.manual_seed(seed)
    model = build_model("demo")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = 3 if quick else 20
    progress.start(steps, "tiny-cnn")
    for _ in range(steps):
        x = torch.randn(8, 3, 32, 32)
        y = (x.mean(dim=(1, 2, 3)) > 0).long()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        progress.advance(1)
    save_file(model.state_dict(), str(out_dir / "weights.safetensors"))
    return {"steps": steps, "final_loss": float(loss), "seed": seed}
'''

TINY_MANIFEST = '''
schema_version = 1
id = "tiny-cnn"
name = "Tiny CNN"
version = "0.1.0"
task = "tile-classify"
summary = "A tiny random CNN for engine tests."
licence = "Apache-2.0"
intended_use = "Tests only."

[input]
size_px = [32, 32]
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
batch_size = 4

[output]
kind = "probabilities"
classes = [{name = "benign", colour = "#00ff00"}, {name = "malignant", colour = "#ff0000"}]

[hooks]
model = ".model:build_model"
convert_checkpoint = ".model:convert_checkpoint"
train = ".train:train"

[models.model]
kwargs = {num_classes = 2}
'''


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_tiny_cnn_plugin(folder: Path, *, seed: int = 0):
    """Write the tiny-cnn plugin: code, random weights (safetensors), ONNX export, manifest."""
    import torch
    from safetensors.torch import save_file

    from tessera.pipelines.engines import export_onnx
    from tessera.pipelines.engines.torch_engine import build_torch_model
    from tessera.pipelines.plugin_system import load_plugin_folder

    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "model.py").write_text(textwrap.dedent(TINY_MODEL))
    (folder / "train.py").write_text(textwrap.dedent(TINY_TRAIN))
    (folder / "MODEL_CARD.md").write_text("# Tiny CNN\n\nRandom weights for engine tests.\n")
    (folder / "manifest.toml").write_text(TINY_MANIFEST)
    plugin = load_plugin_folder(folder)
    torch.manual_seed(seed)
    model = build_torch_model(plugin, load_weights=False)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        bn = model.features[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    save_file(model.state_dict(), str(folder / "weights.safetensors"))
    # TorchScript exporter here: 0.3 s instead of ~8 s for dynamo's first export in a
    # process; test_export.py covers the default (dynamo) path.
    report = export_onnx(model, {"input": torch.randn(2, 3, 32, 32)}, folder / "model.onnx",
                         output_names=["logits"], exporter="torchscript")
    files = "".join(
        f'\n[[files]]\npath = "{name}"\nsha256 = "{_sha(folder / name)}"\nformat = "{fmt}"\n'
        for name, fmt in (("model.onnx", "onnx"), ("weights.safetensors", "safetensors"))
    )
    with (folder / "manifest.toml").open("a") as fh:
        fh.write(files)
    return folder, report, model


@pytest.fixture(scope="session")
def tiny_cnn(tmp_path_factory: pytest.TempPathFactory):
    """(folder, ParityReport, torch module) of the tiny-cnn plugin; needs torch."""
    pytest.importorskip("torch")
    return build_tiny_cnn_plugin(tmp_path_factory.mktemp("plugins") / "tiny_cnn")
