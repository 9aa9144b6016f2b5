"""Secrets never leave the process: not in logs (DEBUG included), the CLI's output,
the JSON report, error messages, nor the state database.

The sandbox issues random access tokens (Salesforce and core) and is told to accept
a long random client secret, so each known value is distinctive enough to search for.
A failing run uses a second, refused secret: it must not be echoed either. Servers
that echo the secret or the bearer token in their errors (in clear, URL-encoded,
JSON-escaped, base64) cannot carry them into any output either.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from guard_world import GuardWorld, guard_world
from hostile_world import HostileWorld, hostile_world

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


# ------------------------------------------------------------------ servers that echo secrets

#: a secret whose URL-encoded, JSON-escaped and base64 forms all differ from it
HOSTILE_SECRET_TAIL = '+/=&%"\\é'


def forms_of(value: str) -> set[str]:
    """The forms a leak may take, written out here apart from the connector's own list."""
    raw = value.encode()
    forms = {
        value,
        quote(value, safe=""),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    for shift in range(3):  # base64 inside a longer blob, as in a Basic header
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        forms.add(encoded[-(-8 * shift // 6) : 8 * (shift + len(raw)) // 6])
    return {f for f in forms if len(f) >= 8}


def leaked(text: bytes, known: set[str]) -> list[str]:
    return sorted(
        f"{value[:4]}… as {form[:6]}…"
        for value in known
        for form in forms_of(value)
        if form.encode() in text
    )


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[HostileWorld]:
    with hostile_world(tmp_path, opportunities=20) as hw:
        yield hw


def test_credentials_echoed_by_servers_are_masked_in_every_output(
    hostile: HostileWorld, tmp_path: Path
) -> None:
    world, liar = hostile.world, hostile.liar
    secret = secrets.token_urlsafe(24) + HOSTILE_SECRET_TAIL
    world.put("/_sandbox/secrets", {"accept": [secret]})
    ref = {"env": SECRET_ENV}
    configs = {
        kind: world.config(
            kind, crm={"client_secret": ref}, core={"client_secret": ref}, name=f"{kind}.yaml"
        )
        for kind in ("salesforce", "dynamics")
    }
    env = {
        **os.environ,
        SECRET_ENV: secret,
        "CONNECTOR_STATE_URL": world.state_url,
        "CONNECTOR_LOG_LEVEL": "DEBUG",
        "CONNECTOR_LOG_FORMAT": "json",
    }
    outputs: list[bytes] = []
    codes: dict[str, int] = {}
    # Each lie in turn: the token endpoints echo the secret (Salesforce's, then Entra's
    # for Dataverse and the core), the Salesforce API and the core echo the bearer token.
    for mode, kind in (
        ("echo_token", "salesforce"),
        ("echo_token", "dynamics"),
        ("echo_sf_api", "salesforce"),
        ("echo_core", "dynamics"),
    ):
        liar.modes = {mode}
        report = tmp_path / f"{mode}-{kind}.json"
        args = ["sync", "--once", "--full", "--report-json", str(report)]
        done = subprocess.run(
            [*CLI, *args, "--config", str(configs[kind])],
            capture_output=True,
            env=env,
            timeout=180,
            check=False,
        )
        codes[f"{mode} {kind}"] = done.returncode
        outputs += [done.stdout, done.stderr]
        if report.exists():
            outputs.append(report.read_bytes())
    liar.modes = set()
    for args in (["errors", "list"], ["errors", "show", "1"], ["status"]):
        done = subprocess.run(
            [*CLI, *args, "--config", str(configs["dynamics"])],
            capture_output=True,
            env={**env, "COLUMNS": "400"},
            timeout=120,
            check=False,
        )
        outputs += [done.stdout, done.stderr]

    # every lie was met: the sign-ins and the Salesforce API failed the run; the core's
    # refusals failed records, whose messages became dead letters
    assert codes == {
        "echo_token salesforce": 2,
        "echo_token dynamics": 2,
        "echo_sf_api salesforce": 2,
        "echo_core dynamics": 1,
    }, codes
    everything = b"\n".join(outputs)
    assert b"invalidInput" in everything and b"***" in everything  # the echoes were seen
    known = {secret, *issued_tokens(world)}
    assert len(known) >= 3  # the secret, a Dataverse and a core token at least
    assert leaked(everything, known) == []
    state = b"".join(
        p.read_bytes() for p in [world.state_file, *tmp_path.glob("state.db-*")] if p.exists()
    )
    assert b"invalidInput" in state  # the dead letters were written
    assert leaked(state, known) == []
