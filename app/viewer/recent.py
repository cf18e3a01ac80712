"""Recently opened files, most recent first, kept in Tessera's config folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

MAX_RECENT = 10


def recent_path() -> Path:
    env = os.environ.get("TESSERA_CONFIG_DIR")
    if env:
        return Path(env).expanduser() / "recent.json"
    from platformdirs import user_config_dir

    return Path(user_config_dir("tessera", appauthor=False)) / "recent.json"


def load_recent() -> list[Path]:
    """Recent files that still exist."""
    try:
        items = json.loads(recent_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [Path(p) for p in items if isinstance(p, str) and Path(p).exists()][:MAX_RECENT]


def add_recent(path: Path) -> list[Path]:
    """Put ``path`` first (once) and save; returns the new list. A read-only config
    folder is not an error: the list is then kept for this session only."""
    path = Path(path).resolve()
    items = [path] + [p for p in load_recent() if p.resolve() != path]
    items = items[:MAX_RECENT]
    target = recent_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps([str(p) for p in items], indent=1), encoding="utf-8")
        tmp.replace(target)
    except OSError:
        pass
    return items
