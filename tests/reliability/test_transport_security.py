"""TLS verification is on by default, and a Salesforce token goes only to a trusted host.

Each client runs the full sync path against the sandbox, whose certificate is signed
by its own CA: without that CA in the config, the run fails with an error naming the
setting to change, and nothing is sent anywhere. A certificate for another host is
reported as that. An endpoint that would receive a secret or a token over plain
HTTP (or any scheme but https) is refused when the config is read: a listener at
that address sees no connection at all.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from guard_world import GuardWorld, guard_world
from hostile_world import hostile_world, plain_listener
from typer.testing import CliRunner

from connector.cli import app
from connector.sync.report import Outcome


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=10) as w:
        yield w


@pytest.mark.parametrize(
    ("kind", "section", "setting"),
    [
        ("salesforce", "core", "core.ca_file"),
        ("salesforce", "crm", "crm.ca_file"),
        ("dynamics", "crm", "crm.ca_file"),
    ],
)
def test_a_client_without_the_sandbox_ca_fails_naming_the_ca_setting(
    world: GuardWorld, kind: str, section: str, setting: str
) -> None:
    config = world.config(kind, **{section: {"ca_file": None}})  # type: ignore[arg-type]
    world.post("/_sandbox/stats/reset", {})

    report = world.sync(config)

    assert report.outcome == Outcome.FAILED
    assert report.error is not None
    assert "TLS check" in report.error and setting in report.error
    # A refused certificate is not retried: at most one attempt reached the server's TLS.
    assert world.referrals() == []
    calls = world.get("/_sandbox/stats")["calls"]
    assert "core" not in calls  # no request got through to the referrals API
    assert kind == "salesforce" or "dataverse" not in calls


def test_a_salesforce_token_is_not_sent_to_a_foreign_instance_url(world: GuardWorld) -> None:
    # The sandbox's token answer names itself (https://127.0.0.1:port) as the instance,
    # which is not under salesforce.com/force.com: without allowed_instance_origin the
    # connector must refuse to use it.
    config = world.config("salesforce", crm={"allowed_instance_origin": None})
    world.post("/_sandbox/stats/reset", {})

    report = world.sync(config)

    assert report.outcome == Outcome.FAILED
    assert report.error is not None
    assert "allowed_instance_origin" in report.error and "127.0.0.1" in report.error
    calls = world.get("/_sandbox/stats")["calls"]
    assert calls.get("salesforce") == {"POST": 1}  # the token request only, no API call
    assert world.referrals() == []


# ------------------------------------------------------------------ no secret in clear text


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """A CLI command in this process, logging restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", **(env or {})})
    finally:  # the command points logging at the runner's stream, closed afterwards
        root.handlers[:] = handlers
        root.setLevel(level)


SECRET_ENV = "CONNECTOR_TEST_CLEAR_SECRET"

#: a setting that would carry a secret or a token, pointed at a plain-HTTP URL
PLAIN_HTTP_CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "salesforce login": ("salesforce", "crm.login_url", {"crm": {"login_url": "{plain}"}}),
    "salesforce instance (token auth)": (
        "salesforce",
        "crm.instance_url",
        {
            "crm": {
                "auth": "token",
                "instance_url": "{plain}",
                "access_token": {"env": SECRET_ENV},
                "allowed_instance_origin": "{plain}",
            }
        },
    ),
    "dynamics authority": ("dynamics", "crm.authority", {"crm": {"authority": "{plain}"}}),
    "dynamics environment": (
        "dynamics",
        "crm.environment_url",
        {"crm": {"environment_url": "{plain}"}},
    ),
    "core token endpoint": (
        "salesforce",
        "core.token_url",
        {"core": {"token_url": "{plain}/tenant/oauth2/v2.0/token"}},
    ),
    "core API": ("dynamics", "core.base_url", {"core": {"base_url": "{plain}/v1.0/engagements"}}),
    "salesforce login as file://": (
        "salesforce",
        "crm.login_url",
        {"crm": {"login_url": "file:///etc/passwd"}},
    ),
}


def _filled(value: Any, plain: str) -> Any:
    if isinstance(value, dict):
        return {k: _filled(v, plain) for k, v in value.items()}
    return value.replace("{plain}", plain) if isinstance(value, str) else value


@pytest.mark.parametrize("case", list(PLAIN_HTTP_CASES))
def test_an_endpoint_that_would_carry_a_secret_in_clear_text_is_refused_at_start(
    world: GuardWorld, case: str
) -> None:
    kind, setting, overrides = PLAIN_HTTP_CASES[case]
    secret = secrets.token_urlsafe(24)
    world.put("/_sandbox/secrets", {"accept": [secret]})
    ref = {"env": SECRET_ENV}
    with plain_listener() as listener:
        filled = _filled(overrides, listener.url)
        crm = {"client_secret": ref, **filled.get("crm", {})}
        config = world.config(kind, crm=crm, core={"client_secret": ref, **filled.get("core", {})})
        world.post("/_sandbox/stats/reset", {})

        done = cli(
            "sync",
            "--once",
            "--config",
            str(config),
            env={SECRET_ENV: secret, "CONNECTOR_STATE_URL": world.state_url},
        )

    assert done.exit_code == 4, done.output  # a configuration error, found before any call
    assert setting.split(".")[-1] in done.output and "https://" in done.output
    assert listener.connections == 0 and secret.encode() not in b"".join(listener.received)
    assert world.get("/_sandbox/stats")["calls"] == {}  # nothing went anywhere


# ------------------------------------------------------------------ the certificate's host


def _pointed_at(url: str, ca_file: str) -> dict[str, dict[str, Any]]:
    """Settings that send one system (by kind and section) to ``url``."""
    return {
        "core": {
            "base_url": f"{url}/v1.0/engagements",
            "token_url": f"{url}/sandbox-tenant/oauth2/v2.0/token",
            "ca_file": ca_file,
        },
        "salesforce": {"login_url": url, "allowed_instance_origin": url, "ca_file": ca_file},
        "dynamics": {"environment_url": url, "authority": url, "ca_file": ca_file},
    }


@pytest.mark.parametrize(
    ("kind", "section"),
    [("salesforce", "core"), ("salesforce", "crm"), ("dynamics", "crm")],
)
def test_a_certificate_for_another_host_is_reported_as_such(
    world: GuardWorld, tmp_path: Path, kind: str, section: str
) -> None:
    # One system is served with a certificate that a trusted CA signed for another host
    # than the URL's 127.0.0.1 (the fix is the host name, not the CA file); the other
    # stays on the healthy sandbox, so the failure can only come from the one under test.
    folder = tmp_path / "other"
    folder.mkdir()
    with hostile_world(folder, 10, certificate_hosts=("not-this-host.example",)) as other:
        sb = other.world.sb
        settings = _pointed_at(sb.url, str(sb.ca_file))[kind if section == "crm" else "core"]
        config = world.config(kind, **{section: settings})  # type: ignore[arg-type]

        report = world.sync(config)

    assert report.outcome == Outcome.FAILED
    assert report.error is not None
    assert "another host name" in report.error, report.error
    assert "not signed by a trusted CA" not in report.error
