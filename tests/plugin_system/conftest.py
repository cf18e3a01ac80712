"""Fixtures for the plugin-system tests: isolated user folders and the ACME plugin."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_INSTALL = Path(__file__).resolve().parents[1] / "fixtures" / "third_party_plugin" / "install.py"


def _load_install() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_acme_install", _INSTALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


acme = _load_install()


@pytest.fixture(scope="session")
def verdict_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tessera-cache")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path: Path, verdict_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """Never touch the real home: imported plugins and caches go to temporary folders."""
    monkeypatch.setenv("TESSERA_PLUGIN_DIR", str(tmp_path / "user-plugins"))
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(verdict_cache))
    yield
    from tessera.pipelines.engines import clear_engine_cache

    clear_engine_cache()


@pytest.fixture(scope="session")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sys.path folder holding the ACME package and its dist-info (not yet on sys.path)."""
    return acme.build_site(tmp_path_factory.mktemp("acme-site"))


@pytest.fixture
def acme_installed(acme_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ACME plugin installed for this test: its site folder on sys.path."""
    monkeypatch.syspath_prepend(str(acme_site))
    yield acme_site
    for name in [m for m in sys.modules if m == acme.PACKAGE or m.startswith(acme.PACKAGE + ".")]:
        sys.modules.pop(name, None)


@pytest.fixture
def make_acme_folder(tmp_path: Path):
    """Factory: a fresh, complete ACME plugin folder under this test's tmp_path."""
    counter = iter(range(1000))

    def make(name: str | None = None, **kwargs) -> Path:
        return acme.build_plugin_folder(tmp_path / (name or f"acme{next(counter)}"), **kwargs)

    return make
