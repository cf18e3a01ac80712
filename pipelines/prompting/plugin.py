"""A ``SamRuntime`` from a prompt-segment plugin's manifest (files with roles
'encoder' and 'decoder'; ``params.variants`` says each variant's preprocessing)."""

from __future__ import annotations

from typing import Any

from tessera.pipelines.errors import PluginError
from tessera.pipelines.prompting.runtime import SamRuntime


def runtime_from_plugin(plugin: Any = "sam", *, variant: str | None = None, threads: int | None = None) -> SamRuntime:
    """``plugin``: an id, a path or a Plugin. ``variant``: a ``size_variant`` of the
    manifest's files (default ``params.default_variant``)."""
    if isinstance(plugin, str) or not hasattr(plugin, "manifest"):
        from tessera.pipelines.plugin_system import get_plugin

        plugin = get_plugin(plugin)
    manifest = plugin.manifest
    if manifest.task != "prompt-segment":
        msg = f"plugin {manifest.id!r} is a {manifest.task} model, not a prompt-segment one"
        raise PluginError(msg)
    params = manifest.params
    variant = variant or params.get("default_variant", "demo")
    settings = params.get("variants", {}).get(variant, {})
    enc = manifest.file("encoder", "onnx", variant)
    return SamRuntime.from_onnx(
        plugin.file_path("encoder", "onnx", variant),
        plugin.file_path("decoder", "onnx", variant),
        preprocessing=settings.get("preprocessing", "sam"),
        box_only=bool(settings.get("box_only", False)),
        threads=threads,
        model_id=enc.sha256,
    )
