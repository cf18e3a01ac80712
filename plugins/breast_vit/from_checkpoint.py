"""Turn a lab's own ViT checkpoint (timm or Hugging Face layout) into a Tessera plugin.

``create_plugin(checkpoint, out_dir, ...)`` loads the checkpoint safely (safetensors or
``torch.load(weights_only=True)``), maps it to ``BreastViT`` keys, infers the
architecture (width, depth, patch and input size, classes) from the tensors, exports
ONNX (checked against torch) and writes a plugin folder:

    out_dir/
        manifest.toml          # hooks point at this plugin's model/processing code
        MODEL_CARD.md          # provenance (file name, sha256), to be completed by the lab
        weights/model.onnx, weights/model.safetensors

``tessera plugins import out_dir`` then installs it, and ``tessera run <id> SLIDE``
runs it. From a shell, without writing code::

    python -m tessera.plugins.breast_vit.from_checkpoint vit_breakhis.safetensors \\
        --id lab-vit --classes benign,malignant --mpp 0.5 --out lab-vit/

The pixel size is not in a checkpoint: give the µm/px the model was trained at
(BreakHis 700 x 460 images resized to the input squash and shrink the tissue; say what
your training did).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tessera.pipelines.plugin_system.integrity import sha256_file

_COLOURS = ("#3b8bd0", "#d7301f", "#31a354", "#fdae6b", "#756bb1", "#636363", "#e7ba52", "#17becf")


def create_plugin(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    plugin_id: str,
    classes: Sequence[str],
    target_mpp: float,
    positive_class: str | None = None,
    name: str | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    num_heads: int | None = None,
    img_size: int | None = None,
    licence: str = "LicenseRef-unspecified",
) -> Path:
    """Write a plugin folder for ``checkpoint``; returns the manifest path.

    ``classes`` name the rows of the checkpoint's classification head, in order;
    ``num_heads`` overrides the assumed 64 channels per attention head; ``img_size``
    runs the model at another input size (position embeddings resampled).
    """
    import torch
    from safetensors.torch import save_file

    from tessera.pipelines.engines.checkpoints import fit_state_dict, load_state_dict
    from tessera.pipelines.engines.export import export_onnx
    from tessera.pipelines.errors import PluginError
    from tessera.pipelines.plugin_system.manifest import load_manifest
    from tessera.plugins.breast_vit.model import build_model, convert_checkpoint, infer_config

    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir)
    try:
        state = convert_checkpoint(load_state_dict(checkpoint), img_size=img_size)
    except KeyError as exc:
        raise PluginError(str(exc).strip("'\""), path=checkpoint) from exc
    cfg = infer_config(state)
    if num_heads is not None:
        cfg["num_heads"] = int(num_heads)
    if cfg["embed_dim"] % cfg["num_heads"]:
        msg = f"width {cfg['embed_dim']} is not divisible by {cfg['num_heads']} heads; pass num_heads"
        raise PluginError(msg, path=checkpoint)
    classes = [c.strip() for c in classes if c.strip()]
    if len(classes) != cfg["num_classes"]:
        msg = (f"the checkpoint's head has {cfg['num_classes']} outputs but {len(classes)} class "
               f"names were given ({', '.join(classes)})")
        raise PluginError(msg, path=checkpoint)
    if positive_class is not None and positive_class not in classes:
        msg = f"positive class {positive_class!r} is not one of {classes}"
        raise PluginError(msg, path=checkpoint)
    if positive_class is None and "malignant" in classes:
        positive_class = "malignant"
    model = build_model("base", **cfg)
    fit_state_dict(model, state, source=checkpoint)
    model.eval()

    weights = out_dir / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(weights / "model.safetensors"), metadata={"format": "pt"})
    outputs = ["logits", "subtype_logits"] if cfg["num_subtypes"] else ["logits"]
    example = {"input": torch.randn(2, 3, cfg["img_size"], cfg["img_size"])}
    report = export_onnx(model, example, weights / "model.onnx", output_names=outputs)

    kwargs = {k: v for k, v in cfg.items() if k != "img_size"} | {"img_size": cfg["img_size"]}
    lines = [
        "schema_version = 1",
        f'id = "{plugin_id}"',
        f'name = "{name or plugin_id}"',
        'version = "0.1.0"',
        'task = "tile-classify"',
        f'summary = "ViT tile classifier converted from {checkpoint.name}."',
        f'licence = "{licence}"',
        'intended_use = "As stated by the lab that trained the checkpoint; Tessera has not '
        'validated it. Not for clinical use unless validated for it."',
        "",
        "[input]",
        f"size_px = [{cfg['img_size']}, {cfg['img_size']}]",
        'channels = ["R", "G", "B"]',
        f"target_mpp = {float(target_mpp)!r}",
        f"mean = {[float(v) for v in mean]!r}",
        f"std = {[float(v) for v in std]!r}",
        "batch_size = 16",
        "",
        "[output]",
        'kind = "probabilities"',
    ]
    if positive_class:
        lines.append(f'positive_class = "{positive_class}"')
    for i, c in enumerate(classes):
        lines += ["", "[[output.classes]]", f'name = "{c}"', f'colour = "{_COLOURS[i % len(_COLOURS)]}"']
    for path, fmt in (("weights/model.onnx", "onnx"), ("weights/model.safetensors", "safetensors")):
        lines += ["", "[[files]]", f'path = "{path}"', f'sha256 = "{sha256_file(out_dir / path)}"',
                  'role = "model"', f'format = "{fmt}"', 'size_variant = "base"']
    lines += [
        "", "[models.model]", 'inputs = ["input"]', f"outputs = {outputs!r}".replace("'", '"'),
        "kwargs = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in kwargs.items()) + " }",
        "", "[hooks]",
        'model = "tessera.plugins.breast_vit.model:build_model"',
        'convert_checkpoint = "tessera.plugins.breast_vit.model:convert_checkpoint"',
        'processing = "tessera.plugins.breast_vit.processing"',
        "", "[params]", 'stain_normalisation = "none"', "",
    ]
    manifest_path = out_dir / "manifest.toml"
    manifest_path.write_text("\n".join(lines), encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(
        f"# {name or plugin_id}\n\n"
        f"Converted by Tessera from `{checkpoint.name}` (sha256 `{sha256_file(checkpoint)}`).\n\n"
        f"- Architecture: ViT, width {cfg['embed_dim']}, depth {cfg['depth']}, "
        f"{cfg['num_heads']} heads, patch {cfg['patch_size']}, input {cfg['img_size']} px\n"
        f"- Classes: {', '.join(classes)}; input {target_mpp} µm/px, mean {list(mean)}, "
        f"std {list(std)}\n"
        f"- ONNX export: {report.exporter}, opset {report.opset}, "
        f"max |torch - ONNX Runtime| = {report.max_abs_diff:.2e}\n\n"
        "Training data, recipe, validation and intended use: to be completed by the lab "
        "that trained the checkpoint.\n",
        encoding="utf-8",
    )
    load_manifest(manifest_path)  # the folder must be a valid plugin
    return manifest_path


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tessera.plugins.breast_vit.from_checkpoint --help``."""
    import argparse

    from tessera.pipelines.errors import TesseraError

    ap = argparse.ArgumentParser(
        prog="python -m tessera.plugins.breast_vit.from_checkpoint",
        description="Make a Tessera tile-classify plugin from a timm or Hugging Face ViT checkpoint.")
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="plugin folder to write")
    ap.add_argument("--id", required=True, help="plugin id, e.g. lab-vit")
    ap.add_argument("--classes", required=True, help="comma-separated head class names, in order")
    ap.add_argument("--mpp", type=float, required=True, help="µm/px the model was trained at")
    ap.add_argument("--positive-class", default=None)
    ap.add_argument("--mean", default="0.5,0.5,0.5")
    ap.add_argument("--std", default="0.5,0.5,0.5")
    ap.add_argument("--heads", type=int, default=None, help="attention heads (default width/64)")
    ap.add_argument("--img-size", type=int, default=None, help="run at another input size")
    ap.add_argument("--licence", default="LicenseRef-unspecified")
    a = ap.parse_args(argv)
    try:
        path = create_plugin(
            a.checkpoint, a.out, plugin_id=a.id, classes=a.classes.split(","), target_mpp=a.mpp,
            positive_class=a.positive_class, mean=[float(v) for v in a.mean.split(",")],
            std=[float(v) for v in a.std.split(",")], num_heads=a.heads, img_size=a.img_size,
            licence=a.licence,
        )
    except TesseraError as exc:
        print(f"error: {exc}")
        return 1
    print(f"plugin written: {path.parent}  (install: tessera plugins import {path.parent})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
