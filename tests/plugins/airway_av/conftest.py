"""A tiny copy of the airway-av plugin (random weights, 16x32x32 cube) for fast tests."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import pytest

TINY_CUBE = (16, 32, 32)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def tiny_plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin's code and manifest with tiny random-weight networks (ONNX + safetensors)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from tessera.pipelines.engines import export_onnx
    from tessera.plugins.airway_av.model import build_served_model

    folder = tmp_path_factory.mktemp("tiny_airway_av")
    package = resources.files("tessera.plugins.airway_av")
    for name in ("__init__.py", "model.py", "processing.py", "train.py"):
        (folder / name).write_text(package.joinpath(name).read_text(encoding="utf-8"),
                                   encoding="utf-8")
    (folder / "weights").mkdir()
    files = []
    torch.manual_seed(0)
    for role, stem in (("airway", "airway_tiny"), ("artery-vein", "artery_vein_tiny")):
        model = build_served_model("demo", role, base=2, cube_zyx=TINY_CUBE).eval()
        n_in = model.net.input_channels
        onnx_path = folder / "weights" / f"{stem}.onnx"
        export_onnx(model, {"input": torch.rand(1, n_in, *TINY_CUBE)}, onnx_path,
                    output_names=["probabilities"], exporter="torchscript")
        st_path = folder / "weights" / f"{stem}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st_path))
        for path, fmt in ((onnx_path, "onnx"), (st_path, "safetensors")):
            files.append(f'[[files]]\npath = "weights/{path.name}"\nsha256 = "{_sha(path)}"\n'
                         f'role = "{role}"\nformat = "{fmt}"\nsize_variant = "demo"\n')
    manifest = package.joinpath("manifest.toml").read_text(encoding="utf-8")
    head, _, _ = manifest.partition("[[files]]")  # the shipped file list is replaced
    if "[[files]]" not in manifest:
        head = manifest
    head = head.replace("size_px = [32, 64, 64]", f"size_px = {list(TINY_CUBE)}")
    for role in ("airway", "artery-vein"):
        head = head.replace(f'kwargs = {{ role = "{role}" }}',
                            f'kwargs = {{ role = "{role}", base = 2, cube_zyx = {list(TINY_CUBE)} }}')
    (folder / "manifest.toml").write_text(head + "\n" + "\n".join(files), encoding="utf-8")
    return folder
