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

# Shared fixtures (autouse: isolated_user_dirs keeps tests out of the real home).
verdict_cache = acme.verdict_cache
isolated_user_dirs = acme.isolated_user_dirs
make_acme_folder = acme.make_acme_folder


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
