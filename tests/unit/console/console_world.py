"""The console as a WSGI app over a real SQLite store, driven by httpx without a socket.

``world`` seeds one connection's runs, record history and dead letters; its secrets
(the two console credentials, the CRM's and the core's client secrets) are long random
values from the environment, so a test can look for them in every answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from connector.console.app import Console
from connector.state.console_reads import ConsoleReads
from connector.state.history import HistoryEntry, RecordHistory
from connector.state.store import Store

ROOT = Path(__file__).parents[3]
ORIGIN = "http://127.0.0.1:9465"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@dataclass
class Secrets:
    admin: str
    viewer: str
    crm: str
    core: str

    def all(self) -> list[str]:
        return [self.admin, self.viewer, self.crm, self.core]


@dataclass
class ConsoleWorld:
    app: Console
    store: Store
    secrets: Secrets
    letters: list[int]
    run_id: int

    def client(self, **kwargs: Any) -> httpx.Client:
        transport = httpx.WSGITransport(app=self.app)
        return httpx.Client(transport=transport, base_url=ORIGIN, **kwargs)

    def audit(self) -> list[Any]:
        return ConsoleReads(self.store).audit_entries(limit=500)


def config_data(console: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "connections": [
            {
                "name": "sf",
                "mapping": str(ROOT / "mappings" / "salesforce.yaml"),
                "crm": {
                    "kind": "salesforce",
                    # nothing listens there: pages that read the CRM fail at once
                    "login_url": "https://127.0.0.1:9",
                    "auth": "client_credentials",
                    "client_id": "cid",
                    "client_secret": {"env": "TEST_CRM_SECRET"},
                    "timeout_s": 2,
                },
                "core": {
                    "auth": "client_credentials",
                    "client_id": "cid",
                    "client_secret": {"env": "TEST_CORE_SECRET"},
                },
            }
        ],
        "console": {
            "enabled": True,
            "admin": {"env": "TEST_CONSOLE_ADMIN"},
            "read_only": {"env": "TEST_CONSOLE_VIEWER"},
            **(console or {}),
        },
    }


def seed(store: Store) -> tuple[int, list[int]]:
    sf = store.connection("sf")
    run_id = sf.runs.start()
    sf.runs.finish(
        run_id,
        "partial",
        {"pulled": 3, "created": 1, "rejected": {"invalid_record": 1}},
        {"salesforce": 4, "core": 2},
        1.5,
    )
    history = RecordHistory(store)
    history.add(
        [
            HistoryEntry(
                "sf",
                "006A",
                run_id,
                NOW,
                "created",
                referral_id="R-1",
                core_status="Active",
                sent={"name": "Deal A"},
                answer={
                    "referral_id": "R-1",
                    "status": "Active",
                    "substatus": None,
                    "direction": "Outgoing",
                    "link": "https://partner.example/referrals/R-1",
                    "etag": '"1"',
                },
            ),
            HistoryEntry(
                "sf",
                "006B",
                run_id,
                NOW,
                "rejected",
                reason="invalid_record",
                message="the close date is empty",
            ),
        ]
    )
    history.save_run_details(run_id, {"outbound": 1.2}, {"salesforce": 0.004})
    sf.dead_letters.add_many(
        [
            ("006B", "invalid_record", "the close date is empty", None, None),
            ("006C", "transient:ServerError", "the core answered 503", None, None),
            ("006D", "InvalidTransition", "cannot move a won deal", None, None),
        ],
    )
    letters = sorted(d.id for d in store.list_dead_letters("sf"))
    return run_id, letters


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: httpx.Client, secret: str, next_path: str = "/") -> httpx.Response:
    page = client.get("/sign-in")
    return client.post(
        "/sign-in", data={"csrf": form_token(page.text), "secret": secret, "next": next_path}
    )
