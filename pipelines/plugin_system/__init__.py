"""Model plugins: manifests, discovery, hooks, import, task-kind defaults, validation.

Importing this package imports neither torch nor onnxruntime: listing plugins reads
their manifests as data, and a plugin's Python runs only when one of its hooks is
resolved (``Plugin.hook``).

How a plugin is registered (built-in or third-party), in the package's pyproject.toml::

    [project.entry-points."tessera.plugins"]
    breast-vit = "tessera.plugins.breast_vit"   # id = package holding manifest.toml

then reinstall the package so its metadata carries the entry point
(``pip install -e .``). Or import a folder/zip: ``tessera plugins import PATH``.
Precedence for equal ids: built-in < other entry points < imported (registry.py).
"""

from __future__ import annotations

from tessera.pipelines.plugin_system.archive import ImportResult, import_plugin, remove_plugin
from tessera.pipelines.plugin_system.locations import cache_dir, user_plugin_dir
from tessera.pipelines.plugin_system.manifest import (
    TASK_KINDS,
    Manifest,
    ModelFile,
    RoleSpec,
    load_manifest,
    parse_manifest,
)
from tessera.pipelines.plugin_system.registry import (
    ENTRY_POINT_GROUP,
    DiscoveryError,
    Plugin,
    PluginOrigin,
    PluginScan,
    get_plugin,
    list_plugins,
    load_plugin_folder,
    scan_plugins,
)
from tessera.pipelines.plugin_system.validate import Problem, validate_plugin

__all__ = [
    "ENTRY_POINT_GROUP",
    "TASK_KINDS",
    "DiscoveryError",
    "ImportResult",
    "Manifest",
    "ModelFile",
    "Plugin",
    "PluginOrigin",
    "PluginScan",
    "Problem",
    "RoleSpec",
    "cache_dir",
    "get_plugin",
    "import_plugin",
    "list_plugins",
    "load_manifest",
    "load_plugin_folder",
    "parse_manifest",
    "remove_plugin",
    "scan_plugins",
    "user_plugin_dir",
    "validate_plugin",
]
