"""The event tests' world: the sandbox, a daemon with its event receiver, and views of both.

The daemon polls every 300 s (its first cycle runs at start), so within a test only an
event can make it sync a change; the sandbox sends its events to the daemon's
receiver over HTTPS (a certificate from the sandbox's own CA).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from connector.daemon import Daemon
from connector.settings import ConfigFile, Settings
from sandbox.harness import SandboxServer

ROOT = Path(__file__).parents[3]
SF = "sandbox-salesforce"
DV = "sandbox-dynamics"
DV_KEY_ENV = "CONNECTOR_TEST_DATAVERSE_EVENT_KEY"
DV_KEY = "dv-webhook-key-5f1c2a9e"


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> float:
    """Poll ``condition`` until true (bounded); the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def config_data(
    sb: SandboxServer,
    names: tuple[str, ...] = (SF,),
    *,
    interval_s: int = 300,
    events: dict[str, Any] | None = None,
    connection_events: dict[str, Any] | None = None,
) -> dict[str, Any]:
    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    text = sb.localize(text)
    data: dict[str, Any] = YAML(typ="safe").load(text)
    data.pop("state_url", None)
    data["connections"] = [c for c in data["connections"] if c["name"] in names]
    for conn in data["connections"]:
        conn["mapping"] = str(ROOT / conn["mapping"])
        conn["schedule"] = {"interval_s": interval_s, "jitter_s": 0}
        wanted: dict[str, Any] = {"partner_center": True, "crm": True}
        if conn["name"] == DV:
            wanted["dataverse"] = {
                "kind": "header",
                "name": "x-connector-key",
                "secret": {"env": DV_KEY_ENV},
            }
        else:
            wanted["salesforce"] = {"poll_timeout_s": 30, "reconnect_s": 0.5}
        wanted.update(connection_events or {})
        conn["events"] = wanted
    data["events"] = {
        "enabled": True,
        "port": 0,
        "debounce_s": 0.2,
        "tls_cert_file": str(sb.tls.receiver_cert_file),
        "tls_key_file": str(sb.tls.receiver_key_file),
        "partner_center": {
            "certificate_hosts": ["127.0.0.1"],
            "issuer_organization": "co-sell connector sandbox",
            "ca_file": str(sb.ca_file),
            "registration_url": f"{sb.url}/webhooks/v1/registration",
        },
        **(events or {}),
    }
    return data


def admin_client(sb: SandboxServer) -> httpx.Client:
    return sb.client()


def point_sandbox_at(admin: httpx.Client, daemon: Daemon, **faults: dict[str, float]) -> None:
    """The sandbox sends its three kinds of events to the daemon's receiver."""
    assert daemon.events is not None
    body: dict[str, Any] = {"salesforce": {"enabled": True, "hold_s": 5}}
    receiver = daemon.events.receiver
    if receiver is not None:
        body["partner_center"] = {"url": f"{receiver.url}/events/partner-center"}
        body["dataverse"] = {
            "url": f"{receiver.url}/events/dataverse/{DV}",
            "auth": {"kind": "header", "name": "x-connector-key", "secret": DV_KEY},
        }
    if faults:
        body["faults"] = faults
    admin.put("/_sandbox/events", json=body).raise_for_status()


@contextmanager
def running(data: dict[str, Any], state: Path, **kwargs: Any) -> Iterator[Daemon]:
    os.environ.setdefault(DV_KEY_ENV, DV_KEY)
    daemon = Daemon(
        Settings(state_url=f"sqlite:///{state}"),
        ConfigFile.model_validate(data),
        health_port=0,
        **kwargs,
    )
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.request_stop()
        assert daemon.wait() == 0


def metrics(daemon: Daemon) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    host, port = daemon.health_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def total(daemon: Daemon, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics(daemon).items() if n == name and want <= ls)


def referrals(admin: httpx.Client) -> list[dict[str, Any]]:
    return list(admin.get("/_sandbox/core/referrals").raise_for_status().json()["value"])


def referral_of(admin: httpx.Client, crm_id: str) -> dict[str, Any] | None:
    from sandbox.partner_center.fields import is_partners

    found = [
        r for r in referrals(admin) if is_partners(r) and r.get("externalReferenceId") == crm_id
    ]
    return found[0] if found else None


def deal_value(referral: dict[str, Any] | None) -> str | None:
    if referral is None:
        return None
    value = referral.get("details", {}).get("dealValue")
    return None if value is None else str(json.loads(json.dumps(value)))
