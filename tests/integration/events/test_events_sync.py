"""Events make the daemon sync what they name within seconds, through the same pipeline.

Each test runs the daemon with a 300 s poll: after its first (scheduled) cycle, only an
event can sync a change before the test's bounded wait runs out. The sandbox sends
the events as documented (signed Partner Center posts, Dataverse posts with the
endpoint's key, Salesforce Change Data Capture over CometD) to the daemon's receiver
over HTTPS.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from events_world import (
    DV,
    SF,
    admin_client,
    config_data,
    deal_value,
    point_sandbox_at,
    referral_of,
    referrals,
    running,
    total,
    wait_for,
)

from connector.daemon import Daemon
from sandbox.harness import SandboxServer
from sandbox.partner_center.fields import is_microsofts, is_partners


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=40, seed=5) as sb:
        yield sb


@pytest.fixture
def admin(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with admin_client(sandbox) as client:
        yield client


def _first_cycle(daemon: Daemon, name: str) -> None:
    wait_for(lambda: daemon.health[name].cycles >= 1, "the first scheduled cycle")


def test_a_salesforce_change_reaches_the_core_through_change_data_capture(
    sandbox: SandboxServer, admin: httpx.Client, tmp_path: Path
) -> None:
    with running(config_data(sandbox, (SF,)), tmp_path / "state.db") as daemon:
        point_sandbox_at(admin, daemon)
        _first_cycle(daemon, SF)
        subscriber = daemon.events.subscribers[0]  # type: ignore[union-attr]
        wait_for(subscriber.subscribed.is_set, "the CDC subscription")
        opp = next(
            o
            for o in admin.get("/_sandbox/salesforce/opportunities").json()["records"]
            if o.get("Referral_Identifier__c")
        )
        admin.post(
            f"/_sandbox/salesforce/opportunities/{opp['Id']}", json={"Amount": 765432}
        ).raise_for_status()
        wait_for(
            lambda: (
                deal_value(referral_of(admin, opp["Id"])) in ("765432", "765432.0", "765432.00")
            ),
            "the referral to carry the new value",
            timeout_s=30,
        )
        assert daemon.health[SF].cycles == 1  # the poll did not do it
        # the cycle that synced it ends after the referral is written: then it is counted
        wait_for(
            lambda: (
                total(daemon, "connector_event_to_sync_seconds_count", source="salesforce") >= 1
            ),
            "the event's latency observed",
        )
        assert total(daemon, "connector_targeted_cycles_total", connection=SF, outcome="ok") >= 1
        # a change of only the fields the connector writes is taken for its own echo
        ignored = total(daemon, "connector_events_ignored_total", source="salesforce")
        admin.post(
            f"/_sandbox/salesforce/opportunities/{opp['Id']}",
            json={"CoSell_Microsoft_Status__c": "echo"},
        ).raise_for_status()
        wait_for(
            lambda: total(daemon, "connector_events_ignored_total", source="salesforce") > ignored,
            "the echo ignored",
        )


def test_microsoft_accepting_reaches_the_crm_through_partner_center_events(
    sandbox: SandboxServer, admin: httpx.Client, tmp_path: Path
) -> None:
    with running(config_data(sandbox, (SF,)), tmp_path / "state.db") as daemon:
        point_sandbox_at(admin, daemon)
        _first_cycle(daemon, SF)
        everything = referrals(admin)
        waiting = {
            r["engagementId"] for r in everything if is_microsofts(r) and r["status"] == "New"
        }
        deal = next(
            r
            for r in everything
            if is_partners(r) and r["engagementId"] in waiting and r.get("externalReferenceId")
        )
        crm_id = deal["externalReferenceId"]

        def microsoft_status() -> str | None:
            opp = admin.get(f"/_sandbox/salesforce/opportunities/{crm_id}").json()
            return opp.get("CoSell_Microsoft_Status__c")

        before = microsoft_status()
        admin.post(f"/_sandbox/core/microsoft/{deal['id']}/accept", json={}).raise_for_status()
        wait_for(
            lambda: microsoft_status() != before, "Microsoft's answer in the CRM", timeout_s=30
        )
        assert str(microsoft_status()).startswith("Active")
        assert daemon.health[SF].cycles == 1
        assert total(daemon, "connector_events_accepted_total", source="partner_center") >= 1
        wait_for(
            lambda: (
                total(daemon, "connector_event_to_sync_seconds_count", source="partner_center") >= 1
            ),
            "the event's latency observed",
        )


def test_a_dataverse_change_reaches_the_core_through_its_webhook(
    sandbox: SandboxServer, admin: httpx.Client, tmp_path: Path
) -> None:
    with running(config_data(sandbox, (DV,)), tmp_path / "state.db") as daemon:
        point_sandbox_at(admin, daemon)
        _first_cycle(daemon, DV)
        rows = admin.get("/_sandbox/dataverse/opportunities").json()["value"]
        row = next(r for r in rows if r.get("cosell_referralid") and r["statecode"] == 0)
        admin.post(
            f"/_sandbox/dataverse/opportunities/{row['opportunityid']}",
            json={"estimatedvalue": 654321},
        ).raise_for_status()
        wait_for(
            lambda: (
                deal_value(referral_of(admin, row["opportunityid"]))
                in ("654321", "654321.0", "654321.00")
            ),
            "the referral to carry the new value",
            timeout_s=30,
        )
        assert daemon.health[DV].cycles == 1
        assert total(daemon, "connector_events_accepted_total", source="dataverse") >= 1
        # a change of only the columns the connector writes is taken for its own echo
        ignored = total(daemon, "connector_events_ignored_total", source="dataverse")
        admin.post(
            f"/_sandbox/dataverse/opportunities/{row['opportunityid']}",
            json={"cosell_microsoftstatus": "echo"},
        ).raise_for_status()
        wait_for(
            lambda: total(daemon, "connector_events_ignored_total", source="dataverse") > ignored,
            "the echo ignored",
        )


def _receiver(daemon: Daemon, sandbox: SandboxServer) -> httpx.Client:
    assert daemon.events is not None and daemon.events.receiver is not None
    context = ssl.create_default_context(cafile=str(sandbox.ca_file))
    return httpx.Client(base_url=daemon.events.receiver.url, verify=context, timeout=10)


request_close: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while request_close:
        request_close.pop().close()


def test_forged_and_unsigned_events_are_refused_and_counted(
    sandbox: SandboxServer, admin: httpx.Client, tmp_path: Path
) -> None:
    data = config_data(sandbox, (SF, DV))
    with running(data, tmp_path / "state.db") as daemon:
        _first_cycle(daemon, SF)
        _first_cycle(daemon, DV)
        client = _receiver(daemon, sandbox)
        request_close.append(client)
        referral = next(r for r in referrals(admin) if is_partners(r))
        body = json.dumps(
            {
                "EventName": "referral-updated",
                "ResourceUri": f"https://api.partnercenter.microsoft.com/engagements/v1/referrals/{referral['id']}",
                "ResourceName": "referral",
                "AuditUri": None,
                "ResourceChangeUtcDate": "2026-12-01T10:00:00.0000000+00:00",
            }
        ).encode()
        certificate_url = f"{sandbox.url}/_sandbox/events/signing-certificate.cer"
        signed_by_sandbox = sandbox.events.partner_center.signer
        forged = {
            # no signature at all
            "unsigned": {
                "X-MS-Certificate-Url": certificate_url,
                "X-MS-Signature-Algorithm": "rsa-sha256",
            },
            # a signature of another body
            "other body": {
                "Authorization": f"Signature {signed_by_sandbox.sign(b'{}')}",
                "X-MS-Certificate-Url": certificate_url,
                "X-MS-Signature-Algorithm": "rsa-sha256",
            },
            # garbage in the signature
            "garbage": {
                "Authorization": "Signature " + base64.b64encode(b"x" * 256).decode(),
                "X-MS-Certificate-Url": certificate_url,
                "X-MS-Signature-Algorithm": "rsa-sha256",
            },
            # a certificate from a host that is not Microsoft's (nor the sandbox's here)
            "foreign certificate": {
                "Authorization": f"Signature {signed_by_sandbox.sign(body)}",
                "X-MS-Certificate-Url": "https://evil.example/cert.cer",
                "X-MS-Signature-Algorithm": "rsa-sha256",
            },
        }
        for what, headers in forged.items():
            answer = client.post("/events/partner-center", content=body, headers=headers)
            assert answer.status_code == 401, what
        dv_body = json.dumps(
            {
                "PrimaryEntityName": "opportunity",
                "PrimaryEntityId": "6d81597f-0f9f-e711-8122-000d3aa2331c",
            }
        ).encode()
        assert client.post(f"/events/dataverse/{DV}", content=dv_body).status_code == 401
        wrong = client.post(
            f"/events/dataverse/{DV}", content=dv_body, headers={"x-connector-key": "not-the-key"}
        )
        assert wrong.status_code == 401
        assert client.post("/events/dataverse/nobody", content=dv_body).status_code == 404
        assert client.post("/events/partner-center", content=b"x" * (600 * 1024)).status_code == 413
        assert client.get("/events/partner-center").status_code == 405
        # a correctly signed one is accepted (the same body, signed as documented)
        good = {
            "Authorization": f"Signature {signed_by_sandbox.sign(body)}",
            "X-MS-Certificate-Url": certificate_url,
            "X-MS-Signature-Algorithm": "rsa-sha256",
        }
        assert client.post("/events/partner-center", content=body, headers=good).status_code == 200

        assert (
            total(
                daemon,
                "connector_events_rejected_total",
                source="partner_center",
                reason="unauthenticated",
            )
            == 1
        )
        assert (
            total(
                daemon,
                "connector_events_rejected_total",
                source="partner_center",
                reason="bad_signature",
            )
            == 2
        )
        assert (
            total(
                daemon,
                "connector_events_rejected_total",
                source="partner_center",
                reason="untrusted_certificate",
            )
            == 1
        )
        assert (
            total(
                daemon,
                "connector_events_rejected_total",
                source="partner_center",
                reason="body_too_large",
            )
            == 1
        )
        assert (
            total(
                daemon,
                "connector_events_rejected_total",
                source="dataverse",
                reason="unauthenticated",
            )
            == 2
        )
        assert (
            total(daemon, "connector_events_rejected_total", source="dataverse", reason="not_found")
            == 1
        )
        assert total(daemon, "connector_events_accepted_total", source="partner_center") == 1
        assert total(daemon, "connector_events_accepted_total", source="dataverse") == 0
