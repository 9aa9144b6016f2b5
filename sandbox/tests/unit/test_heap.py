"""The sandbox keeps the collector's full collections short when it runs alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap


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


def test_settling_freezes_what_lives() -> None:
    out = _in_own_process(
        """
        import gc
        from sandbox.heap import settle_heap

        print(gc.get_freeze_count(), settle_heap() > 100, settle_heap() == gc.get_freeze_count())
        """
    )
    assert out == "0 True True"


def test_the_sandbox_settles_its_data_after_a_seed_when_it_runs_alone() -> None:
    out = _in_own_process(
        """
        import gc
        from starlette.testclient import TestClient
        from sandbox.app import create_app
        from sandbox.context import SandboxContext

        counts = []
        for alone in (False, True):
            ctx = SandboxContext()
            ctx.settle_heap_after_seed = alone
            with TestClient(create_app(ctx)) as client:
                seeded = client.post("/_sandbox/seed", json={"opportunities": 20})
                assert seeded.status_code == 200, seeded.text
            counts.append(gc.get_freeze_count())
        print(counts[0], counts[1] > 1000)
        """
    )
    assert out == "0 True"
