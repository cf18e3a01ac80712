"""Which runner drives which task kind.

A runner turns one input (a file or folder) into finished outputs in its own folder:
``run(input_path, plugin, out_dir, *, options, progress, cancel) -> dict`` where the
returned dict is the JSON-ready summary also written as ``summary.json``. Runners are
named by import path so the CLI imports only the one it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tessera.pipelines.errors import PluginError

_PKG = "tessera.pipelines.runners"

RUNNERS: dict[str, str] = {
    "tile-classify": f"{_PKG}.tile_classify:run",
    "segment-2d": f"{_PKG}.segment_2d:run",
    "segment-3d": f"{_PKG}.segment_3d:run",
    "prompt-segment": f"{_PKG}.prompt_segment:run",
    "detect-classify": f"{_PKG}.detect_classify:run",
    "spectra-regress": f"{_PKG}.spectra_regress:run",
}


def runner_for(task: str) -> Callable[..., dict[str, Any]]:
    """The ``run`` function for a task kind; PluginError when none is available."""
    try:
        target = RUNNERS[task]
    except KeyError:
        msg = f"no runner for task kind {task!r}; known kinds: {', '.join(RUNNERS)}"
        raise PluginError(msg) from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        msg = f"the runner for {task!r} is not available in this version ({exc.name} missing)"
        raise PluginError(msg) from exc
    return getattr(module, attr)
