"""A ``SamRuntime`` from a prompt-segment plugin's manifest (files with roles
'encoder' and 'decoder'; ``params.variants`` says each variant's preprocessing)."""

from __future__ import annotations

from typing import Any

from tessera.pipelines.errors import PluginError
from tessera.pipelines.prompting.runtime import SamRuntime, decoder_threads


def runtime_from_plugin(
    plugin: Any = "sam", *, variant: str | None = None, device: str = "cpu", threads: int | None = None
) -> SamRuntime:
    """``plugin``: an id, a path or a Plugin. ``variant``: a ``size_variant`` of the
    manifest's files (default ``params.default_variant``). Engines come from
    ``create_engine`` (one per process per plugin, role, variant and device)."""
    from tessera.pipelines.engines import create_engine

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
    enc_file = manifest.file("encoder", "onnx", variant)
    encoder = create_engine(plugin, role="encoder", size_variant=variant, device=device, threads=threads)
    decoder = create_engine(plugin, role="decoder", size_variant=variant, device=device,
                            threads=decoder_threads(threads))
    return SamRuntime.from_engines(
        encoder,
        decoder,
        preprocessing=settings.get("preprocessing", "sam"),
        box_only=bool(settings.get("box_only", False)),
        model_id=enc_file.sha256,
        window_px=settings.get("window_px"),
    )
