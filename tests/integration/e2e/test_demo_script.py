"""``scripts/demo`` in a copy of the repository: its port, and an exit code that tells.

The script runs in a temporary copy (scripts/, config/, mappings/ and the project's
virtual environment), so it never touches the checkout's own ``.connector/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]

pytestmark = pytest.mark.timeout(280)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copy_of_the_repository(tmp: Path) -> Path:
    for name in ("scripts", "config", "mappings"):
        shutil.copytree(ROOT / name, tmp / name)
    (tmp / ".venv").symlink_to(ROOT / ".venv")
    return tmp


def demo(repo: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env.update(SANDBOX_PORT=str(port), OPPORTUNITIES="60", CONNECTOR_LOG_FORMAT="json")
    return subprocess.run(
        ["bash", str(repo / "scripts" / "demo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def test_the_demo_syncs_against_the_port_it_was_given_and_ends_ok(tmp_path: Path) -> None:
    repo = copy_of_the_repository(tmp_path)
    port = free_port()
    done = demo(repo, port)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Sandbox on https://127.0.0.1:{port}" in done.stdout
    assert f"https://127.0.0.1:{port}" in (repo / ".connector" / "demo.yaml").read_text()
    assert "8700" not in (repo / ".connector" / "demo.yaml").read_text()
    assert done.stdout.count(": ok") >= 2  # the second sync of each connection


def test_the_demo_fails_when_the_syncs_fail(tmp_path: Path) -> None:
    repo = copy_of_the_repository(tmp_path)
    (repo / "mappings" / "salesforce.yaml").write_text(
        "version: 1\ncrm: salesforce\nstages: {field: StageName, map: {A: Bogus}}\n",
        encoding="utf-8",
    )
    done = demo(repo, free_port())
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the first sync failed (exit code 4)" in done.stderr
