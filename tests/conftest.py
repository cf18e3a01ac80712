"""Shared test configuration.

Two jobs run this suite (Makefile): the full one (TESSERA_REQUIRE_ALL=1: every extra
installed, GUI tests under Xvfb; a test skipped for a missing module or display is a
failure there) and the headless one (TESSERA_HEADLESS_JOB=1: no gui/train extras, the
tests marked gui/torch deselected, and the session fails if Qt, napari or torch got
imported anyway).

Conventions: a test module needing torch starts with
``torch = pytest.importorskip("torch")`` and ``pytestmark = pytest.mark.torch`` (so
the headless job can collect it); GUI tests are marked ``gui``.
"""

from __future__ import annotations

import os
import sys
import threading

import pytest

try:  # hypothesis is a test dependency; the guard keeps a bare pytest run collectable
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    pass
else:
    # The test machines are shared and noisy: timing-based checks (per-example deadlines,
    # "input generation is slow") fail on load, not on behaviour. The properties stay.
    settings.register_profile("shared-machine", deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("shared-machine")

REQUIRE_ALL = os.environ.get("TESSERA_REQUIRE_ALL", "") not in ("", "0")
HEADLESS_JOB = os.environ.get("TESSERA_HEADLESS_JOB", "") not in ("", "0")
_MISSING_SKIPS: list[str] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gui") and not os.environ.get("DISPLAY"):
        pytest.skip("could not import a display: GUI tests need DISPLAY (run under xvfb-run)")
    if item.get_closest_marker("gpu"):
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            pytest.skip("no CUDA device")


def _note_missing(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and REQUIRE_ALL:
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
        if "could not import" in reason:
            _MISSING_SKIPS.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note_missing(report)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note_missing(report)


def _library_pool_threads() -> set[int | None]:
    """Threads of process-wide pools that libraries keep on purpose (dask's default pool)."""
    idents: set[int | None] = set()
    threaded = sys.modules.get("dask.threaded")
    if threaded is not None:
        pools = [getattr(threaded, "default_pool", None)]
        pools += list(getattr(threaded, "pools", {}).get(threading.current_thread(), {}).values())
        for pool in pools:
            idents.update(t.ident for t in getattr(pool, "_threads", ()))
    return idents


@pytest.fixture(autouse=True)
def _no_leaked_threads(request: pytest.FixtureRequest):
    """Fail a test that leaves non-daemon threads running (they hang the process at exit)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    if request.node.get_closest_marker("gui"):
        return  # Qt owns its threads; GUI tests check their own workers
    allowed = before | _library_pool_threads()
    leaked = [
        t for t in threading.enumerate() if t.ident not in allowed and t.is_alive() and not t.daemon
    ]
    for t in leaked:
        t.join(timeout=5)
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"test left threads running: {[t.name for t in leaked]}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _MISSING_SKIPS:
        print("\nthe full job must not skip for missing modules/display:", file=sys.stderr)
        for line in _MISSING_SKIPS:
            print(f"  {line}", file=sys.stderr)
        session.exitstatus = 1
    if HEADLESS_JOB:
        forbidden = [m for m in ("PySide6", "napari", "torch", "qtpy") if m in sys.modules]
        if forbidden:
            print(f"\nheadless job imported {forbidden}", file=sys.stderr)
            session.exitstatus = 1
