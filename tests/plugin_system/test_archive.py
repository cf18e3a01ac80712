"""`tessera plugins import`: folders and zips copied in whole, hostile archives refused
with nothing written anywhere."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from tessera.pipelines.errors import CorruptFile, ModelFileRefused, PluginError
from tessera.pipelines.plugin_system import (
    get_plugin,
    import_plugin,
    remove_plugin,
    user_plugin_dir,
)


def _zip_folder(folder: Path, archive: Path, *, prefix: str = "acme/", extra=()) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
        for info, data in extra:
            zf.writestr(info, data)
    return archive


def _leftovers() -> list[str]:
    folder = user_plugin_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_zip_import_installs_the_plugin(make_acme_folder, tmp_path: Path) -> None:
    assert user_plugin_dir().is_relative_to(tmp_path)  # the autouse isolation is active
    archive = _zip_folder(make_acme_folder(), tmp_path / "acme.zip")
    result = import_plugin(archive)
    assert result.plugin.root == user_plugin_dir() / "acme-tissue"
    assert result.plugin.origin.kind == "user" and not result.replaced
    assert _leftovers() == ["acme-tissue"]  # no staging folder left behind
    plugin = get_plugin("acme-tissue")
    assert plugin.file_path().read_bytes()[:2] == (tmp_path / "acme0" / "model.onnx").read_bytes()[:2]
    assert plugin.processing().postprocess is not None


def test_zip_with_manifest_at_top_level(make_acme_folder, tmp_path: Path) -> None:
    archive = _zip_folder(make_acme_folder(), tmp_path / "flat.zip", prefix="")
    assert import_plugin(archive).plugin.id == "acme-tissue"


def test_reimport_needs_force_and_then_replaces(make_acme_folder) -> None:
    folder = make_acme_folder()
    import_plugin(folder)
    with pytest.raises(PluginError, match="--force"):
        import_plugin(folder)
    (folder / "MODEL_CARD.md").write_text("# New card\n\nSecond edition.\n")
    assert import_plugin(folder, force=True).replaced
    assert get_plugin("acme-tissue").model_card_summary() == "Second edition."
    assert _leftovers() == ["acme-tissue"]
    assert remove_plugin("acme-tissue") == user_plugin_dir() / "acme-tissue"
    assert _leftovers() == []


def _symlink_member(name: str, target: str) -> tuple[zipfile.ZipInfo, str]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (("acme/../../evil.txt", "pwned"), "outside the plugin folder"),
        (("acme/weights/../../../evil.txt", "pwned"), "outside the plugin folder"),
        (("/tmp/tessera-evil-absolute.txt", "pwned"), "outside the plugin folder"),
        (("C:/evil.txt", "pwned"), "outside the plugin folder"),
        (("acme\\..\\..\\evil.txt", "pwned"), "outside the plugin folder"),
        ("symlink", "symbolic link"),
    ],
)
def test_hostile_archive_is_refused_and_nothing_is_written(
    make_acme_folder, tmp_path: Path, member, why
) -> None:
    if member == "symlink":
        member = _symlink_member("acme/weights", "/etc")
    archive = _zip_folder(make_acme_folder(), tmp_path / "evil.zip", extra=[member])
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ModelFileRefused, match=why) as info:
        import_plugin(archive)
    assert info.value.path == str(archive)
    assert _leftovers() == []  # not even the good members
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/tmp/tessera-evil-absolute.txt").exists()


def test_archive_with_wrong_sha_is_refused_with_nothing_written(make_acme_folder,
                                                                 tmp_path: Path) -> None:
    folder = make_acme_folder()
    with (folder / "model.onnx").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelFileRefused, match="sha256"):
        import_plugin(_zip_folder(folder, tmp_path / "tampered.zip"))
    assert _leftovers() == []


def test_folder_with_a_link_is_refused(make_acme_folder, tmp_path: Path) -> None:
    folder = make_acme_folder()
    os.symlink("/etc/passwd", folder / "passwd")
    with pytest.raises(ModelFileRefused, match="links"):
        import_plugin(folder)
    assert _leftovers() == []


def test_invalid_manifest_in_archive_names_field(make_acme_folder, tmp_path: Path) -> None:
    folder = make_acme_folder()
    manifest = folder / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('licence = "MIT"\n', ""))
    with pytest.raises(PluginError, match="'licence'"):
        import_plugin(_zip_folder(folder, tmp_path / "bad.zip"))
    assert _leftovers() == []


def test_damaged_or_foreign_files_are_clear_errors(make_acme_folder, tmp_path: Path) -> None:
    archive = _zip_folder(make_acme_folder(), tmp_path / "cut.zip")
    data = archive.read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises((CorruptFile, PluginError)):
        import_plugin(tmp_path / "cut.zip")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PluginError, match=r"not a plugin folder or a \.zip"):
        import_plugin(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PluginError, match=r"no manifest\.toml"):
        import_plugin(empty)
    assert _leftovers() == []


def test_corrupt_member_is_corrupt_file(make_acme_folder, tmp_path: Path) -> None:
    archive = _zip_folder(make_acme_folder(), tmp_path / "crc.zip")
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("acme/model.onnx")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 5] ^= 0xFF  # flip a byte of the compressed data: CRC or inflate fails
    archive.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match="damaged"):
        import_plugin(archive)
    assert _leftovers() == []
