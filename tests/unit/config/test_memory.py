"""Start-up settings: glibc's malloc tuning (an explicit setting wins) and the GIL switch
interval."""

from __future__ import annotations

import sys

import pytest

from connector.memory import SWITCH_INTERVAL_S, quicken_thread_switches, tune_malloc

TUNED = ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_is_tuned_unless_the_environment_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in TUNED:
        monkeypatch.delenv(name, raising=False)
    assert tune_malloc() == TUNED
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert tune_malloc() == ["MALLOC_MMAP_THRESHOLD_"]


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
