"""Shared test configuration.

Two jobs run this suite (Makefile): the full one (TESSERA_REQUIRE_ALL=1: every extra
installed, GUI tests under Xvfb; a missing extra is a failure, not a skip) and the
headless one (no gui/train extras: the tests marked gui/torch are deselected, and
everything else must pass without Qt, napari or torch).
"""

from __future__ import annotations

import os
import threading

import pytest

REQUIRE_ALL = os.environ.get("TESSERA_REQUIRE_ALL", "") not in ("", "0")
HEADLESS_JOB = os.environ.get("TESSERA_HEADLESS_JOB", "") not in ("", "0")


def require(module: str, reason: str = ""):
    """``pytest.importorskip`` that fails instead of skipping in the full job."""
    if REQUIRE_ALL:
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason or f"{module} not installed")


@pytest.fixture(autouse=True)
def _no_leaked_threads(request: pytest.FixtureRequest):
    """Fail a test that leaves non-daemon threads running (they hang the process at exit)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    if request.node.get_closest_marker("gui"):
        return  # Qt owns its threads; GUI tests check their own workers
    leaked = [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.is_alive() and not t.daemon
    ]
    for t in leaked:
        t.join(timeout=5)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"test left threads running: {[t.name for t in leaked]}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if HEADLESS_JOB:
        import sys

        forbidden = [m for m in ("PySide6", "napari", "torch", "qtpy") if m in sys.modules]
        if forbidden:
            print(f"\nheadless job imported {forbidden}", file=sys.stderr)
            session.exitstatus = 1
