"""Secrets never leave the process: not in logs (DEBUG included), the CLI's output,
the JSON report, error messages, nor the state database.

The sandbox issues random access tokens (Salesforce and core) and is told to accept
a long random client secret, so each known value is distinctive enough to search for.
A failing run uses a second, refused secret: it must not be echoed either.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from guard_world import GuardWorld, guard_world

from connector import logs
from connector.sync.report import Outcome

CLI = [sys.executable, "-m", "connector"]
SECRET_ENV = "CONNECTOR_TEST_CLIENT_SECRET"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=30) as w:
        yield w


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """The connector's own logging (redaction filter included) at DEBUG, into a buffer."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    logs.setup("DEBUG", "json")
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved_handlers:
            root.addHandler(h)
        root.setLevel(saved_level)


def issued_tokens(world: GuardWorld) -> set[str]:
    return set(world.sb.ctx.tokens._tokens)  # every bearer token the sandbox handed out


def leaks(text: str, known: set[str]) -> list[str]:
    return [f"{value[:4]}… ({len(value)} chars)" for value in known if value in text]


def state_bytes(world: GuardWorld) -> str:
    parts = [world.state_file, *world.state_file.parent.glob("state.db-*")]
    return b"".join(p.read_bytes() for p in parts if p.exists()).decode("latin-1")


def test_no_secret_reaches_logs_reports_errors_or_the_state_store(
    world: GuardWorld, debug_log: io.StringIO, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = secrets.token_urlsafe(32)
    refused = secrets.token_urlsafe(32)
    world.put("/_sandbox/secrets", {"accept": [secret]})
    monkeypatch.setenv(SECRET_ENV, secret)
    ref = {"env": SECRET_ENV}
    good = world.config("salesforce", crm={"client_secret": ref}, core={"client_secret": ref})

    synced = world.sync(good)
    world.post("/_sandbox/salesforce/opportunities/" + world.sf_opportunities()[0]["Id"], {})
    monkeypatch.setenv(SECRET_ENV, refused)
    failed = world.sync(good)

    assert synced.outcome == Outcome.PARTIAL and synced.created > 10
    assert failed.outcome == Outcome.FAILED and failed.error
    known = {secret, refused, *issued_tokens(world)}
    assert len(known) >= 4  # the two secrets and at least a Salesforce and a core token
    log_text = debug_log.getvalue()
    assert log_text.count("\n") > 5  # DEBUG logging did happen
    for name, text in {
        "log": log_text,
        "reports": json.dumps([synced.as_json(), failed.as_json()]),
        "errors": str(failed.error),
        "state store": state_bytes(world),
    }.items():
        assert leaks(text, known) == [], name

    # The CLI, at DEBUG, for a good run, a failing run, and `connector status`.
    report_file = tmp_path / "run.json"
    env = {
        **os.environ,
        SECRET_ENV: secret,
        "CONNECTOR_STATE_URL": world.state_url,
        "CONNECTOR_LOG_LEVEL": "DEBUG",
        "CONNECTOR_LOG_FORMAT": "json",
    }
    outputs = []
    for args, variables in (
        (["sync", "--once", "--full", "--report-json", str(report_file)], env),
        (["sync", "--once"], {**env, SECRET_ENV: refused}),
        (["status"], env),
    ):
        done = subprocess.run(
            [*CLI, *args, "--config", str(good)],
            capture_output=True,
            text=True,
            env=variables,
            timeout=120,
            check=False,
        )
        outputs.append(done.stdout + done.stderr)
    assert "DEBUG" in outputs[0].upper()
    known = {secret, refused, *issued_tokens(world)}
    for text in (*outputs, report_file.read_text(encoding="utf-8"), state_bytes(world)):
        assert leaks(text, known) == []
