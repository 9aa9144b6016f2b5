"""TLS verification is on by default, and a Salesforce token goes only to a trusted host.

Each client runs the full sync path against the sandbox, whose certificate is signed
by its own CA: without that CA in the config, the run fails with an error naming the
setting to change, and nothing is sent anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from guard_world import GuardWorld, guard_world

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
