"""Where Tessera keeps user-level state: imported plugins and derived caches.

Both follow the platform's conventions (platformdirs) and can be redirected by an
environment variable, so tests and sandboxed deployments never touch the real home:

- ``TESSERA_PLUGIN_DIR``: folder holding plugins imported with ``tessera plugins import``
  (one subfolder per plugin id).
- ``TESSERA_CACHE_DIR``: derived data that can be rebuilt at any time (ONNX safety
  verdicts keyed by sha256, TensorRT engine caches...).
"""

from __future__ import annotations

import os
from pathlib import Path

_APP = "tessera"


def user_plugin_dir() -> Path:
    """The folder plugins are imported into (not created here)."""
    env = os.environ.get("TESSERA_PLUGIN_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir(_APP, appauthor=False)) / "plugins"


def cache_dir(*parts: str) -> Path:
    """A subfolder of Tessera's cache (created on demand)."""
    env = os.environ.get("TESSERA_CACHE_DIR")
    if env:
        base = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir(_APP, appauthor=False))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
