"""Write-then-rename, so a crash or kill never leaves a half-written output under its
final name.

``os.replace`` within one folder is atomic on POSIX and Windows: a reader sees either
the old file or the complete new one. Temporary names start with ``.`` and carry the
process id and a random part, so concurrent writers (dask workers) never collide and
leftovers from a killed process are recognisable (``is_temporary``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

_TMP_MARK = ".tmp-"


def temporary_sibling(path: Path, *, keep_suffix: bool = False) -> Path:
    """A unique temporary path in the same folder as ``path`` (same filesystem).

    ``keep_suffix`` ends the name with the original suffixes (".nii.gz"), for writers
    that choose the format from the name.
    """
    path = Path(path)
    tag = f"{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if keep_suffix:
        suffix = "".join(path.suffixes)
        stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
        return path.with_name(f".{stem}{tag}{suffix}")
    return path.with_name(f".{path.name}{tag}")


def is_temporary(path: Path) -> bool:
    """True for names made by ``temporary_sibling`` (leftovers of an interrupted write)."""
    name = Path(path).name
    return name.startswith(".") and _TMP_MARK in name


@contextlib.contextmanager
def atomic_path(path: Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary file path; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path, keep_suffix=keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it takes the place of ``path`` (an old folder
    there is removed first), on error it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: Path, path: Path) -> None:
    """Move a finished folder ``tmp`` to ``path``, replacing what was there."""
    if path.exists():
        old = temporary_sibling(path)
        os.replace(path, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file (UTF-8) under a temporary name and rename it into place."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_temporaries(folder: Path) -> int:
    """Delete leftovers of interrupted writes directly inside ``folder``; returns how many."""
    n = 0
    if not Path(folder).is_dir():
        return 0
    for p in Path(folder).iterdir():
        if is_temporary(p):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            n += 1
    return n
