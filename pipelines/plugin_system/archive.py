"""Importing a plugin folder or ``.zip`` into the user plugin directory, safely.

An import is all or nothing. Everything is first written into a hidden staging folder
inside the user plugin directory (same file system, so the final step is one rename),
then checked -- manifest valid, every listed file present with its sha256 -- and only
then moved to ``<user plugin dir>/<id>``. Any failure removes the staging folder.

Archives are checked member by member *before* a single byte is extracted: absolute
names, drive letters, ``..`` components and symbolic links are refused (zip-slip), as
are archives that expand beyond ``MAX_EXPANDED_BYTES`` (zip bombs; the count is of bytes
actually written, not of the sizes the archive claims). Members are written by this
module rather than ``ZipFile.extractall``, which silently rewrites hostile names
instead of refusing the archive. Folders are copied without following links: a plugin
folder containing a symlink is refused.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tessera.pipelines.errors import CorruptFile, ModelFileRefused, PluginError
from tessera.pipelines.plugin_system.integrity import resolve_inside, verify_sha256
from tessera.pipelines.plugin_system.locations import user_plugin_dir
from tessera.pipelines.plugin_system.registry import (
    MANIFEST_NAME,
    Plugin,
    PluginOrigin,
    load_plugin_folder,
)

MAX_EXPANDED_BYTES = 32 * 1024**3
MAX_MEMBERS = 20_000
_SKIP_NAMES = {"__pycache__", ".git", ".DS_Store", "__MACOSX"}


@dataclass
class ImportResult:
    """What ``import_plugin`` did: the installed plugin and the folder it replaced, if any."""

    plugin: Plugin
    replaced: bool


def import_plugin(source: str | Path, *, force: bool = False) -> ImportResult:
    """Copy a plugin folder or ``.zip`` into ``user_plugin_dir()/<id>``; all or nothing.

    ``force`` replaces a plugin already imported under the same id. Raises
    ModelFileRefused for hostile archives, symlinks and sha256 mismatches, PluginError
    for invalid manifests (naming the field) and CorruptFile for unreadable archives.
    """
    source = Path(source).expanduser()
    if not source.exists():
        msg = "no such plugin folder or archive"
        raise PluginError(msg, path=source)
    is_zip = source.is_file() and zipfile.is_zipfile(source)
    if source.is_dir():
        _refuse_links(source)
    elif is_zip:
        _plan_zip(source)  # every member checked before anything is written
    else:
        msg = "not a plugin folder or a .zip archive"
        raise PluginError(msg, path=source)
    dest_root = user_plugin_dir()
    created_root = not dest_root.exists()
    dest_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest_root))
    ok = False
    try:
        tree = staging / "tree"
        if is_zip:
            _extract_zip(source, tree)
        else:
            _copy_folder(source, tree)
        plugin_root = _find_manifest_root(tree, source)
        staged = load_plugin_folder(plugin_root)
        for entry in staged.manifest.files:
            verify_sha256(resolve_inside(plugin_root, entry.path), entry.sha256)
        final = dest_root / staged.id
        replaced = final.exists()
        if replaced and not force:
            msg = (
                f"a plugin {staged.id!r} is already imported at {final}; "
                "pass --force to replace it"
            )
            raise PluginError(msg, path=source)
        if replaced:
            plugin_root.rename(staging / "new")
            final.rename(staging / "old")
            (staging / "new").rename(final)
        else:
            plugin_root.rename(final)
        ok = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not ok and created_root:
            shutil.rmtree(dest_root, ignore_errors=True)
    plugin = load_plugin_folder(final, origin=PluginOrigin("user", str(final)))
    return ImportResult(plugin=plugin, replaced=replaced)


def remove_plugin(plugin_id: str) -> Path:
    """Delete a plugin imported into the user plugin directory; returns the removed folder."""
    folder = user_plugin_dir() / plugin_id
    if not (folder / MANIFEST_NAME).is_file() or folder.is_symlink():
        msg = f"no imported plugin {plugin_id!r} (only imported plugins can be removed)"
        raise PluginError(msg, path=folder)
    shutil.rmtree(folder)
    return folder


def _find_manifest_root(tree: Path, source: Path) -> Path:
    if (tree / MANIFEST_NAME).is_file():
        return tree
    subs = [p for p in tree.iterdir() if p.name not in _SKIP_NAMES] if tree.is_dir() else []
    if len(subs) == 1 and (subs[0] / MANIFEST_NAME).is_file():
        return subs[0]
    msg = f"no {MANIFEST_NAME} at the top of the plugin (or in its single top-level folder)"
    raise PluginError(msg, path=source)


def _refuse_links(source: Path) -> None:
    for path in source.rglob("*"):
        if path.is_symlink():
            msg = f"plugin folders may not contain links ({path.relative_to(source)}); refusing"
            raise ModelFileRefused(msg, path=source)


def _copy_folder(source: Path, dest: Path) -> None:
    _refuse_links(source)  # again: the folder may have changed since the first look

    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if n in _SKIP_NAMES or n.endswith(".pyc")}

    shutil.copytree(source, dest, symlinks=True, ignore=ignore)


def _safe_member_name(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath | None:
    """The member's relative path; None to skip it; ModelFileRefused if it is hostile."""
    raw = info.filename
    name = raw.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        msg = f"archive member {raw!r} is a symbolic link; refusing the archive"
        raise ModelFileRefused(msg, path=archive)
    kind = stat.S_IFMT(mode)  # 0 when the archiver stored permissions only (zipfile does)
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        msg = f"archive member {raw!r} is not a plain file or folder; refusing the archive"
        raise ModelFileRefused(msg, path=archive)
    pure = PurePosixPath(name)
    drive = len(name) > 1 and name[1] == ":"
    if name.startswith("/") or drive or ".." in pure.parts or "\x00" in name:
        msg = f"archive member {raw!r} would be written outside the plugin folder; refusing"
        raise ModelFileRefused(msg, path=archive)
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts or any(p in _SKIP_NAMES for p in parts):
        return None
    return PurePosixPath(*parts)


def _open_zip(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        msg = f"cannot read the plugin archive ({exc})"
        raise CorruptFile(msg, path=archive) from exc


def _plan_zip(
    archive: Path, zf: zipfile.ZipFile | None = None
) -> list[tuple[zipfile.ZipInfo, PurePosixPath | None]]:
    """Every member with its safe relative path; raises before anything is written."""
    if zf is None:
        with _open_zip(archive) as own:
            return _plan_zip(archive, own)
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        msg = f"archive has {len(infos)} members (limit {MAX_MEMBERS}); refusing it"
        raise ModelFileRefused(msg, path=archive)
    return [(info, _safe_member_name(info, archive)) for info in infos]


def _extract_zip(archive: Path, dest: Path) -> None:
    with _open_zip(archive) as zf:
        plan = _plan_zip(archive, zf)
        dest.mkdir(parents=True)
        written = 0
        for info, rel in plan:
            if rel is None:
                continue
            target = dest.joinpath(*rel.parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, target.open("xb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_EXPANDED_BYTES:
                            msg = "archive expands beyond the size limit; refusing it"
                            raise ModelFileRefused(msg, path=archive)
                        out.write(chunk)
            except (FileExistsError, IsADirectoryError, NotADirectoryError):
                msg = f"archive lists {info.filename!r} twice (or as file and folder); refusing it"
                raise ModelFileRefused(msg, path=archive) from None
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
                msg = f"archive member {info.filename!r} is damaged ({exc})"
                raise CorruptFile(msg, path=archive) from exc
