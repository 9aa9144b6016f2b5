"""Start-up settings: the malloc arena cap (glibc; an explicit setting wins) and the GIL switch interval."""

from __future__ import annotations

import sys

import pytest

from connector.memory import SWITCH_INTERVAL_S, limit_malloc_arenas, quicken_thread_switches


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_the_cap_is_applied_unless_the_environment_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False


def test_thread_switches_are_quickened_but_never_slowed() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        assert quicken_thread_switches() == pytest.approx(SWITCH_INTERVAL_S)
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        sys.setswitchinterval(0.0002)  # already quicker: kept
        assert quicken_thread_switches() == pytest.approx(0.0002)
    finally:
        sys.setswitchinterval(before)
