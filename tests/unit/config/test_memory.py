"""Start-up settings: glibc's malloc tuning (an explicit setting wins), the GIL switch
interval and the garbage collector."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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


def _in_own_process(code: str) -> str:
    """Run ``code`` in a fresh interpreter: the collector's settings are process-wide."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_settling_freezes_what_lives_and_a_second_settling_collects_what_died() -> None:
    out = _in_own_process(
        """
        import gc, weakref
        from connector.memory import settle_heap

        class Node:
            pass

        node = Node()
        node.itself = node  # a cycle: only the collector can free it
        alive = weakref.ref(node)
        frozen = settle_heap()
        assert frozen > 1000 and gc.get_freeze_count() == frozen, frozen
        assert gc.get_threshold() == (700, 10, 10), "CPython's thresholds are kept"
        del node
        gc.collect()
        assert alive() is not None, "a frozen object is not walked by the collector"
        settle_heap()
        assert alive() is None, "settling again unfreezes and collects what died"
        print("ok")
        """
    )
    assert out == "ok"


def test_the_cli_settles_the_heap_only_in_its_own_process() -> None:
    out = _in_own_process(
        """
        import gc
        import connector.cli as cli

        cli._settle_heap()  # a program or test runner calling the commands
        untouched = gc.get_freeze_count()
        cli._own_process = True  # as main() sets it
        cli._settle_heap()
        print(untouched, gc.get_freeze_count() > 1000)
        """
    )
    assert out == "0 True"
