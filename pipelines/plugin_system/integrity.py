"""File integrity: sha256 of model files and paths that must stay inside a folder.

Hashes are cached per process by (path, inode, size, mtime), so a 300 MB checkpoint
is hashed once per process however many engines open it; any change to the file
invalidates the entry. The cache never outlives the process: a persistent
"already verified" mark could be replayed onto a swapped file with a forged mtime.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from tessera.pipelines.errors import ModelFileRefused, PluginError

_CHUNK = 1 << 20
_lock = threading.Lock()
_hashes: dict[tuple[str, int, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (cached per process while the file is unchanged)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    with _lock:
        cached = _hashes.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        _hashes[key] = value
    return value


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative`` resolved (symlinks followed); ModelFileRefused if it leaves ``root``."""
    root_resolved = root.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root_resolved):
        msg = f"{relative!r} resolves to {target}, outside the plugin folder; refusing it"
        raise ModelFileRefused(msg, path=root / relative)
    return target


def verify_sha256(path: Path, expected: str) -> None:
    """ModelFileRefused unless ``path`` exists and hashes to ``expected``."""
    if not path.is_file():
        msg = "model file is missing; reinstall or re-import the plugin (or train it: tessera train)"
        raise PluginError(msg, path=path)
    actual = sha256_file(path)
    if actual != expected.lower():
        msg = (
            f"sha256 {actual[:12]}... differs from the manifest's {expected[:12]}...; the file "
            "was changed or damaged, refusing to load it (restore the original or update the "
            "manifest if you replaced it on purpose)"
        )
        raise ModelFileRefused(msg, path=path)
