"""The sandbox core (Partner Center referrals imitation) over real HTTPS.

One test per lifecycle rule of the seed document; the rest covers the HTTP
contract of deal-core-api.md (paging, filters, eTags, auth, error shape).
"""

from __future__ import annotations

import copy
import ssl
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connector.sandbox.server import SandboxServer

REFERRALS = "/v1.0/engagements/referrals"
ELIGIBLE_SOLUTION = "SOL-IP-10001-AZM"
PLAIN_SOLUTION = "SOL-34104-EBB"


def deal_body(**changes: Any) -> dict[str, Any]:
    """A valid Private deal; ``changes`` replace top-level keys (None removes one)."""
    body: dict[str, Any] = {
        "name": "Contoso – Azure migration",
        "externalReferenceId": f"006-{uuid.uuid4().hex[:10]}",
        "type": "Independent",
        "qualification": "SalesQualified",
        "customerProfile": {
            "name": "Contoso Customer Inc",
            "address": {"city": "Redmond", "country": "US"},
            "team": [{"firstName": "Sue", "lastName": "Smith", "email": "sue@contoso.example"}],
        },
        "consent": {
            "consentToToShareInfoWithOthers": True,
            "consentToContact": True,
            "consentToShareReferralWithMicrosoftSellers": False,
        },
        "details": {
            "dealValue": 50000,
            "currency": "USD",
            "closingDateTime": "2026-11-14T00:00:00Z",
            "requirements": {"solutions": [{"id": ELIGIBLE_SOLUTION, "type": "Name"}]},
        },
        "team": [
            {
                "firstName": "John",
                "lastName": "Doe",
                "phoneNumber": "+1 425 555 0101",
                "email": "john@partner.example",
            }
        ],
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def cosell_body(**changes: Any) -> dict[str, Any]:
    base = deal_body(
        type="Shared",
        consent={"consentToShareReferralWithMicrosoftSellers": True},
        inviteContext={"assistanceRequestCode": "ProofOfConceptOrDemo", "notes": "POC"},
    )
    base.update(changes)
    return base


def p2p_body(partner: str = "partner-ally-1") -> dict[str, Any]:
    return deal_body(type="Shared", target=[{"type": "Partner", "id": partner}])


class Core:
    """A test client: the public API with a core token, plus the admin API."""

    def __init__(self, sb: SandboxServer) -> None:
        self.sb = sb
        self.http = httpx.Client(
            base_url=sb.url, verify=ssl.create_default_context(cafile=str(sb.ca_file))
        )
        self.refresh_token()

    def refresh_token(self) -> None:
        response = self.http.post(
            "/sandbox-tenant/oauth2/v2.0/token",
            data={
                "client_id": "sandbox",
                "client_secret": "sandbox",
                "grant_type": "client_credentials",
                "scope": "https://api.partner.microsoft.com/.default",
            },
        )
        response.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(REFERRALS, json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def get(self, ident: str) -> dict[str, Any]:
        response = self.http.get(f"{REFERRALS}/{ident}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def patch(self, ident: str, *ops: dict[str, Any], **headers: str) -> httpx.Response:
        return self.http.patch(f"{REFERRALS}/{ident}", json=list(ops), headers=headers)

    def patch_ok(self, ident: str, *ops: dict[str, Any]) -> dict[str, Any]:
        response = self.patch(ident, *ops, Prefer="return=representation")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def list(self, **params: str) -> dict[str, Any]:
        response = self.http.get(REFERRALS, params=params)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def list_all(self, **params: str) -> list[dict[str, Any]]:
        page = self.list(**params)
        items = list(page["value"])
        for _ in range(2000):
            link = page.get("@odata.nextLink")
            if not link:
                return items
            page = self.http.get(link).json()
            items.extend(page["value"])
        raise AssertionError("paging did not end")

    def engagement(self, deal: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The referrals of a deal's engagement by owner type."""
        value = self.list(**{"$filter": f"engagementId eq '{deal['engagementId']}'"})["value"]
        return {r["owner"]["type"]: r for r in value}

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.request(method, f"/_sandbox/core/{path}", json=body)

    def incoming(self, **body: Any) -> dict[str, Any]:
        response = self.admin("POST", "incoming", body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def microsoft(self, ident: str, action: str) -> httpx.Response:
        return self.admin("POST", f"microsoft/{ident}/{action}")

    def advance(self, **delta: float) -> None:
        self.http.post("/_sandbox/clock", json=delta).raise_for_status()
        self.refresh_token()  # tokens live one hour on the sandbox clock

    def now(self) -> datetime:
        return datetime.fromisoformat(self.http.get("/_sandbox/clock").json()["now"])


def inner_code(response: httpx.Response) -> str | None:
    error = response.json()["error"]
    return error["innerError"].get("code")


@pytest.fixture(scope="module")
def pc_server() -> Iterator[SandboxServer]:
    with SandboxServer() as sb:
        yield sb


@pytest.fixture
def core(pc_server: SandboxServer) -> Iterator[Core]:
    client = Core(pc_server)
    client.admin("POST", "reset").raise_for_status()
    client.http.put("/_sandbox/faults", json={"core": {}}).raise_for_status()
    yield client
    client.http.close()


# --- creation and mandatory fields ---------------------------------------------------------


def test_create_returns_full_referral_with_ids_etag_and_clock_times(core: Core) -> None:
    before = core.now() - timedelta(seconds=1)
    deal = core.create(deal_body())
    assert deal["id"] and deal["engagementId"] and deal["id"] != deal["engagementId"]
    assert deal["eTag"].startswith('"') and deal["eTag"].endswith('"')
    created = datetime.fromisoformat(deal["createdDateTime"])
    assert before <= created <= core.now() + timedelta(seconds=1)
    assert deal["updatedDateTime"] == deal["createdDateTime"]
    assert deal["owner"]["type"] == "Partner"
    assert core.get(deal["id"]) == deal


def _without(body: dict[str, Any], dotted: str) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = dotted.split(".")
    node = body
    for key in parents:
        node = node[key]
    node.pop(last)
    return body


def _with(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = dotted.split(".")
    node = body
    for key in parents:
        node = node[key]
    node[last] = value
    return body


MEMBER = {"firstName": "A", "lastName": "B", "phoneNumber": "1", "email": "a@b.example"}


@pytest.mark.parametrize(
    ("body", "target"),
    [
        (_without(deal_body(), "name"), "name"),
        (_without(deal_body(), "type"), "type"),
        (_without(deal_body(), "details.dealValue"), "details.dealValue"),
        (_with(deal_body(), "details.dealValue", -1), "details.dealValue"),
        (_with(deal_body(), "details.dealValue", "lots"), "details.dealValue"),
        (_without(deal_body(), "details.currency"), "details.currency"),
        (_with(deal_body(), "details.currency", "usd"), "details.currency"),
        (_with(deal_body(), "details.currency", "DOLLARS"), "details.currency"),
        (_without(deal_body(), "details.closingDateTime"), "details.closingDateTime"),
        (_without(deal_body(), "customerProfile.name"), "customerProfile.name"),
        (
            _with(deal_body(), "customerProfile.address.country", "UK"),
            "customerProfile.address.country",
        ),
        (
            _without(deal_body(), "customerProfile.address.country"),
            "customerProfile.address.country",
        ),
        (_without(deal_body(), "team"), "team"),
        (_with(deal_body(), "team", [{**MEMBER, "phoneNumber": ""}]), "team[0].phoneNumber"),
        (_with(deal_body(), "team", [MEMBER] * 51), "team"),
        (
            _with(deal_body(), "details.requirements.solutions", []),
            "details.requirements.solutions",
        ),
        (
            _with(
                deal_body(), "details.requirements.solutions", [{"id": f"S{i}"} for i in range(51)]
            ),
            "details.requirements.solutions",
        ),
    ],
)
def test_create_refuses_missing_or_invalid_mandatory_field(
    core: Core, body: dict[str, Any], target: str
) -> None:
    response = core.http.post(REFERRALS, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalidRequest"
    assert error["target"] == target


def test_create_accepts_numeric_string_deal_value_and_50_members(core: Core) -> None:
    body = _with(deal_body(), "details.dealValue", "1250.50")
    body["team"] = [MEMBER] * 50
    deal = core.create(body)
    assert deal["details"]["dealValue"] == 1250.5
    assert len(deal["team"]) == 50


def test_created_outbound_deal_starts_active_accepted_stage_10_outgoing(core: Core) -> None:
    deal = core.create(deal_body(status="New", substatus="Pending", salesStage="60"))
    assert (deal["status"], deal["substatus"]) == ("Active", "Accepted")
    assert deal["salesStage"] == "10"
    assert deal["direction"] == "Outgoing"


# --- deal types ----------------------------------------------------------------------------


def test_private_deal_is_independent_without_consent_and_invisible_to_microsoft(core: Core) -> None:
    deal = core.create(deal_body())
    assert deal["type"] == "Independent"
    assert deal["consent"]["consentToShareReferralWithMicrosoftSellers"] is False
    assert set(core.engagement(deal)) == {"Partner"}
    consenting = deal_body(consent={"consentToShareReferralWithMicrosoftSellers": True})
    response = core.http.post(REFERRALS, json=consenting)
    assert response.status_code == 400
    assert "consent" in response.json()["error"]["target"]


def test_cosell_deal_is_shared_with_consent_and_assistance_code(core: Core) -> None:
    deal = core.create(cosell_body())
    assert deal["type"] == "Shared"
    assert deal["inviteContext"]["assistanceRequestCode"] == "ProofOfConceptOrDemo"
    bad_code = cosell_body(inviteContext={"assistanceRequestCode": "PleaseHelp"})
    response = core.http.post(REFERRALS, json=bad_code)
    assert response.status_code == 400
    assert response.json()["error"]["target"] == "inviteContext.assistanceRequestCode"
    no_consent = cosell_body(consent={"consentToShareReferralWithMicrosoftSellers": False})
    assert core.http.post(REFERRALS, json=no_consent).status_code == 400


def test_partner_to_partner_deal_is_shared_with_a_partner_target(core: Core) -> None:
    deal = core.create(p2p_body("ally-42"))
    assert deal["type"] == "Shared"
    assert {"type": "Partner", "id": "ally-42"} in deal["target"]
    assert set(core.engagement(deal)) == {"Partner"}  # Microsoft was not invited
    nobody = deal_body(type="Shared")
    response = core.http.post(REFERRALS, json=nobody)
    assert response.status_code == 400
    assert response.json()["error"]["target"] == "type"


# --- status table, transitions, terminal ---------------------------------------------------


def _status(status: str, substatus: str, **extra: str) -> list[dict[str, Any]]:
    ops = [
        {"op": "replace", "path": "/status", "value": status},
        {"op": "replace", "path": "/substatus", "value": substatus},
    ]
    return ops + [{"op": "replace", "path": f"/{k}", "value": v} for k, v in extra.items()]


@pytest.mark.parametrize(
    ("status", "substatus"),
    [("Active", "Won"), ("New", "Accepted"), ("Closed", "Accepted"), ("Closed", "Pending")],
)
def test_status_table_refuses_substatus_of_another_status(
    core: Core, status: str, substatus: str
) -> None:
    deal = core.create(deal_body())
    response = core.patch(deal["id"], *_status(status, substatus))
    assert response.status_code == 400
    assert inner_code(response) == "InvalidTransition"


@pytest.mark.parametrize(
    ("status", "substatus"),
    [("New", "Pending"), ("Closed", "Declined"), ("Closed", "Expired")],
)
def test_active_deal_refuses_forbidden_transitions(core: Core, status: str, substatus: str) -> None:
    deal = core.create(deal_body())
    response = core.patch(deal["id"], *_status(status, substatus, statusReason="why"))
    assert response.status_code == 400
    assert inner_code(response) == "InvalidTransition"


def test_active_deal_reports_sales_stages_then_closes_lost(core: Core) -> None:
    deal = core.create(deal_body())
    for stage in ("20", "40", "60", "80"):
        deal = core.patch_ok(deal["id"], {"op": "replace", "path": "/salesStage", "value": stage})
        assert deal["salesStage"] == stage
    response = core.patch(deal["id"], {"op": "replace", "path": "/salesStage", "value": "55"})
    assert response.status_code == 400
    lost = core.patch_ok(deal["id"], *_status("Closed", "Lost"))
    assert (lost["status"], lost["substatus"], lost["salesStage"]) == ("Closed", "Lost", "80")
    assert lost["closedDateTime"] is not None


def test_closed_won_sets_sales_stage_100(core: Core) -> None:
    deal = core.create(deal_body())
    won = core.patch_ok(deal["id"], *_status("Closed", "Won"))
    assert won["salesStage"] == "100"
    assert won["closedDateTime"] is not None


@pytest.mark.parametrize("substatus", ["Won", "Lost"])
@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "/name", "value": "Renamed"},
        {"op": "replace", "path": "/details/notes", "value": "late note"},
        {"op": "replace", "path": "/details/dealValue", "value": 1},
        {"op": "add", "path": "/team/-", "value": MEMBER},
        {"op": "replace", "path": "/status", "value": "Active"},
        {"op": "add", "path": "/target/-", "value": {"type": "Partner", "id": "ally"}},
    ],
)
def test_terminal_deal_refuses_every_edit(core: Core, substatus: str, op: dict[str, Any]) -> None:
    deal = core.create(deal_body())
    closed = core.patch_ok(deal["id"], *_status("Closed", substatus))
    response = core.patch(deal["id"], op)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalidRequest"
    assert inner_code(response) == "ReferralClosed"
    assert core.get(deal["id"]) == closed


# --- incoming deals ------------------------------------------------------------------------


def test_incoming_deal_starts_new_pending_expiring_in_14_days(core: Core) -> None:
    deal = core.incoming()
    assert (deal["status"], deal["substatus"], deal["direction"]) == ("New", "Pending", "Incoming")
    created = datetime.fromisoformat(deal["createdDateTime"])
    assert datetime.fromisoformat(deal["expirationDateTime"]) - created == timedelta(days=14)
    assert deal["owner"]["type"] == "Partner"


def test_incoming_accept_becomes_active_accepted_stage_10(core: Core) -> None:
    deal = core.incoming()
    accepted = core.patch_ok(deal["id"], *_status("Active", "Accepted"))
    assert (accepted["status"], accepted["substatus"]) == ("Active", "Accepted")
    assert accepted["salesStage"] == "10"
    assert accepted["acceptedDateTime"] is not None


def test_incoming_decline_needs_a_status_reason(core: Core) -> None:
    deal = core.incoming()
    response = core.patch(deal["id"], *_status("Closed", "Declined"))
    assert response.status_code == 400
    assert response.json()["error"]["target"] == "statusReason"
    declined = core.patch_ok(deal["id"], *_status("Closed", "Declined", statusReason="No fit"))
    assert (declined["status"], declined["substatus"]) == ("Closed", "Declined")
    assert declined["statusReason"] == "No fit"


def test_incoming_deal_unanswered_14_days_expires_and_shows_in_incremental_read(
    core: Core,
) -> None:
    deal = core.incoming()
    core.advance(days=13, hours=23)
    assert core.get(deal["id"])["status"] == "New"
    watermark = core.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    core.advance(hours=1, minutes=1)
    changed = core.list(
        **{"$filter": f"updatedDateTime ge {watermark}", "$orderby": "updatedDateTime asc"}
    )["value"]
    expired = next(r for r in changed if r["id"] == deal["id"])
    assert (expired["status"], expired["substatus"]) == ("Closed", "Expired")
    assert expired["updatedDateTime"] > deal["updatedDateTime"]
    assert expired["eTag"] != deal["eTag"]
    response = core.patch(deal["id"], *_status("Active", "Accepted"))
    assert inner_code(response) == "ReferralClosed"


def test_tick_expires_unanswered_deals_without_any_read(core: Core) -> None:
    deal = core.incoming()
    core.advance(days=15)  # the admin clock calls tick()
    stored = core.sb.part("core").store.records[deal["id"]]
    assert (stored["status"], stored["substatus"]) == ("Closed", "Expired")


# --- Microsoft's side ----------------------------------------------------------------------


def test_cosell_creates_microsoft_related_referral_new_pending(core: Core) -> None:
    deal = core.create(cosell_body())
    side = core.engagement(deal)["Microsoft"]
    assert side["id"] != deal["id"]
    assert (side["status"], side["substatus"]) == ("New", "Pending")
    assert side["owner"]["organizationName"] == "Microsoft"
    created = datetime.fromisoformat(side["createdDateTime"])
    assert datetime.fromisoformat(side["expirationDateTime"]) - created == timedelta(days=14)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("accept", ("Active", "Accepted")),
        ("decline", ("Closed", "Declined")),
        ("win", ("Closed", "Won")),
    ],
)
def test_microsoft_answers_its_related_referral(
    core: Core, action: str, expected: tuple[str, str]
) -> None:
    deal = core.create(cosell_body())
    before = core.engagement(deal)["Microsoft"]
    response = core.microsoft(deal["id"], action)
    assert response.status_code == 200, response.text
    side = core.engagement(deal)["Microsoft"]
    assert (side["status"], side["substatus"]) == expected
    assert side["updatedDateTime"] >= before["updatedDateTime"]
    assert side["eTag"] != before["eTag"]
    if action == "win":
        assert side["salesStage"] == "100"
    again = core.microsoft(deal["id"], "accept")
    assert again.status_code == 400


def test_microsoft_unanswered_invitation_expires_after_14_days(core: Core) -> None:
    deal = core.create(cosell_body())
    core.advance(days=14, minutes=1)
    side = core.engagement(deal)["Microsoft"]
    assert (side["status"], side["substatus"]) == ("Closed", "Expired")
    assert core.get(deal["id"])["status"] == "Active"  # the partner's deal goes on


def test_microsoft_policy_answers_automatically_after_delay(core: Core) -> None:
    assert core.admin("PUT", "microsoft-policy", {"policy": "accept", "after_s": 3600}).is_success
    deal = core.create(cosell_body())
    assert core.engagement(deal)["Microsoft"]["status"] == "New"
    core.advance(hours=1, seconds=1)
    assert core.engagement(deal)["Microsoft"]["substatus"] == "Accepted"
    assert core.admin("PUT", "microsoft-policy", {"policy": "decline", "after_s": 0}).is_success
    other = core.create(cosell_body())
    assert core.engagement(other)["Microsoft"]["substatus"] == "Declined"
    assert core.admin("PUT", "microsoft-policy", {"policy": "maybe"}).status_code == 400


def test_microsoft_referral_is_read_only_for_the_partner(core: Core) -> None:
    deal = core.create(cosell_body())
    side = core.engagement(deal)["Microsoft"]
    response = core.patch(side["id"], {"op": "replace", "path": "/name", "value": "mine"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "accessDenied"


# --- invitation combinations ---------------------------------------------------------------

INVITE_MICROSOFT = (
    {
        "op": "add",
        "path": "/inviteContext",
        "value": {"assistanceRequestCode": "QuotesOrLicensing"},
    },
    {"op": "replace", "path": "/consent/consentToShareReferralWithMicrosoftSellers", "value": True},
)


def _invite_partner(partner: str) -> dict[str, Any]:
    return {"op": "add", "path": "/target/-", "value": {"type": "Partner", "id": partner}}


def test_private_invites_microsoft_and_becomes_cosell(core: Core) -> None:
    deal = core.create(deal_body())
    upgraded = core.patch_ok(deal["id"], *INVITE_MICROSOFT)
    assert upgraded["type"] == "Shared"
    side = core.engagement(deal)["Microsoft"]
    assert (side["status"], side["substatus"]) == ("New", "Pending")
    consent_only = core.create(deal_body())
    response = core.patch(consent_only["id"], INVITE_MICROSOFT[1])
    assert response.status_code == 400


def test_private_invites_partners(core: Core) -> None:
    deal = core.create(deal_body())
    shared = core.patch_ok(deal["id"], _invite_partner("ally-1"), _invite_partner("ally-2"))
    assert shared["type"] == "Shared"
    assert [t["id"] for t in shared["target"]] == ["ally-1", "ally-2"]
    assert "Microsoft" not in core.engagement(deal)


def test_outgoing_cosell_invites_other_partners(core: Core) -> None:
    deal = core.create(cosell_body())
    shared = core.patch_ok(deal["id"], _invite_partner("ally-1"))
    assert {"type": "Partner", "id": "ally-1"} in shared["target"]


@pytest.mark.parametrize("sender", ["Microsoft", "Partner"])
def test_incoming_deal_never_invites_partners(core: Core, sender: str) -> None:
    deal = core.incoming(**{"from": sender})
    core.patch_ok(deal["id"], *_status("Active", "Accepted"))
    response = core.patch(deal["id"], _invite_partner("ally-9"))
    assert response.status_code == 400
    assert inner_code(response) == "InvitationNotAllowed"


def test_p2p_without_microsoft_invites_microsoft_and_becomes_cosell(core: Core) -> None:
    deal = core.create(p2p_body())
    core.patch_ok(deal["id"], *INVITE_MICROSOFT)
    assert core.engagement(deal)["Microsoft"]["substatus"] == "Pending"


def test_incoming_p2p_invites_microsoft(core: Core) -> None:
    deal = core.incoming(**{"from": "Partner"})
    assert "Microsoft" not in core.engagement(deal)
    core.patch_ok(deal["id"], *_status("Active", "Accepted"), *INVITE_MICROSOFT)
    assert core.engagement(deal)["Microsoft"]["substatus"] == "Pending"


def test_p2p_without_microsoft_invites_more_partners(core: Core) -> None:
    deal = core.create(p2p_body("ally-1"))
    more = core.patch_ok(deal["id"], _invite_partner("ally-2"))
    assert [t["id"] for t in more["target"] if t["type"] == "Partner"] == ["ally-1", "ally-2"]
    duplicate = core.patch(deal["id"], _invite_partner("ally-2"))
    assert duplicate.status_code == 400


@pytest.mark.parametrize(
    "op",
    [
        {
            "op": "replace",
            "path": "/consent/consentToShareReferralWithMicrosoftSellers",
            "value": False,
        },
        {"op": "replace", "path": "/inviteContext", "value": None},
    ],
)
def test_sharing_with_microsoft_cannot_be_undone(core: Core, op: dict[str, Any]) -> None:
    deal = core.create(cosell_body())
    response = core.patch(deal["id"], op)
    assert response.status_code == 400
    assert inner_code(response) == "SharingIrreversible"


def test_closed_deal_refuses_invitations(core: Core) -> None:
    deal = core.create(deal_body())
    core.patch_ok(deal["id"], *_status("Closed", "Lost"))
    response = core.patch(deal["id"], *INVITE_MICROSOFT)
    assert inner_code(response) == "ReferralClosed"


# --- deal registration ---------------------------------------------------------------------

REGISTER = {"op": "add", "path": "/registrations/-", "value": {"notes": "contract signed"}}


def _refused_registration(core: Core, ident: str) -> str:
    response = core.patch(ident, REGISTER)
    assert response.status_code == 400
    assert inner_code(response) == "RegistrationNotEligible"
    return str(response.json()["error"]["message"])


def test_registration_needs_microsoft_invited(core: Core) -> None:
    deal = core.create(p2p_body())
    assert "not invited" in _refused_registration(core, deal["id"])
    assert core.get(deal["id"])["registrationEligible"] is False


def test_registration_needs_microsoft_accepted_or_won(core: Core) -> None:
    deal = core.create(cosell_body())
    assert "not accepted" in _refused_registration(core, deal["id"])
    core.microsoft(deal["id"], "decline")
    assert "not accepted" in _refused_registration(core, deal["id"])
    won = core.create(cosell_body())
    core.microsoft(won["id"], "win")
    assert core.get(won["id"])["registrationEligible"] is True
    assert core.patch_ok(won["id"], REGISTER)["registrationStatus"] == "ReviewPending"


def test_registration_needs_an_incentive_eligible_solution(core: Core) -> None:
    body = _with(cosell_body(), "details.requirements.solutions", [{"id": PLAIN_SOLUTION}])
    deal = core.create(body)
    core.microsoft(deal["id"], "accept")
    assert "incentive-eligible" in _refused_registration(core, deal["id"])
    eligible = core.admin("PUT", "eligible-solutions", {"ids": [PLAIN_SOLUTION]})
    assert eligible.json()["ids"] == [PLAIN_SOLUTION]
    assert core.get(deal["id"])["registrationEligible"] is True


def test_registration_never_for_private_deals(core: Core) -> None:
    deal = core.create(deal_body())  # carries an eligible solution
    assert "Private" in _refused_registration(core, deal["id"])


def test_registration_review_pending_then_admin_decides(core: Core) -> None:
    deal = core.create(cosell_body())
    core.microsoft(deal["id"], "accept")
    flagged = core.get(deal["id"])
    assert flagged["registrationEligible"] is True
    assert flagged["trackingInfo"]["microsoftMsxId"]
    registered = core.patch_ok(deal["id"], REGISTER)
    assert registered["registrationStatus"] == "ReviewPending"
    assert registered["registrations"][0]["notes"] == "contract signed"
    assert "already registered" in _refused_registration(core, deal["id"])
    asked = core.admin("POST", f"registrations/{deal['id']}/action-required").json()
    assert asked["registrationStatus"] == "ActionRequired"
    approved = core.admin("POST", f"registrations/{deal['id']}/approve").json()
    assert approved["registrationStatus"] == "Approved"
    assert core.admin("POST", f"registrations/{deal['id']}/fail").status_code == 400


def test_won_deal_may_still_register_but_nothing_else(core: Core) -> None:
    deal = core.create(cosell_body())
    core.microsoft(deal["id"], "accept")
    core.patch_ok(deal["id"], *_status("Closed", "Won"))
    assert core.patch_ok(deal["id"], REGISTER)["registrationStatus"] == "ReviewPending"
    mixed = core.patch(deal["id"], REGISTER, {"op": "replace", "path": "/name", "value": "x"})
    assert inner_code(mixed) == "ReferralClosed"


# --- PATCH contract and eTags --------------------------------------------------------------


def test_patch_answers_204_or_the_representation(core: Core) -> None:
    deal = core.create(deal_body())
    plain = core.patch(deal["id"], {"op": "replace", "path": "/details/notes", "value": "n1"})
    assert plain.status_code == 204
    assert plain.content == b""
    full = core.patch(
        deal["id"],
        {"op": "replace", "path": "/details/notes", "value": "n2"},
        Prefer="return=representation",
    )
    assert full.status_code == 200
    assert full.json()["details"]["notes"] == "n2"


@pytest.mark.parametrize(
    "op",
    [
        {"op": "remove", "path": "/details/notes"},
        {"op": "replace", "path": "/type", "value": "Shared"},
        {"op": "replace", "path": "/id", "value": "x"},
        {"op": "replace", "path": "/team/-", "value": MEMBER},
        {"op": "replace", "path": "/details/currency", "value": "eur"},
    ],
)
def test_patch_refuses_other_ops_paths_and_bad_values(core: Core, op: dict[str, Any]) -> None:
    deal = core.create(deal_body())
    response = core.patch(deal["id"], op)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalidRequest"


def test_every_change_gets_a_new_etag_and_stale_if_match_is_412(core: Core) -> None:
    deal = core.create(deal_body())
    first = core.patch(
        deal["id"],
        {"op": "replace", "path": "/details/dealValue", "value": 60000},
        **{"If-Match": deal["eTag"]},
    )
    assert first.status_code == 204
    fresh = core.get(deal["id"])
    assert fresh["eTag"] != deal["eTag"] and first.headers["ETag"] == fresh["eTag"]
    stale = core.patch(
        deal["id"],
        {"op": "replace", "path": "/details/dealValue", "value": 1},
        **{"If-Match": deal["eTag"]},
    )
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "preconditionFailed"
    assert core.get(deal["id"])["details"]["dealValue"] == 60000
    unconditional = core.patch(
        deal["id"], {"op": "replace", "path": "/details/dealValue", "value": 2}
    )
    assert unconditional.status_code == 204


def test_put_and_delete_are_not_served(core: Core) -> None:
    deal = core.create(deal_body())
    for method in ("PUT", "DELETE"):
        response = core.http.request(method, f"{REFERRALS}/{deal['id']}", json=deal)
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "invalidRequest"
    assert core.get(deal["id"])["id"] == deal["id"]


# --- listing -------------------------------------------------------------------------------


def _bulk(core: Core, n: int, **changes: Any) -> list[dict[str, Any]]:
    return [core.create(deal_body(**changes)) for _ in range(n)]


def test_paging_follows_next_link_across_more_than_100(core: Core) -> None:
    created = {d["id"] for d in _bulk(core, 230)}
    page = core.list()
    assert page["@odata.context"].endswith("$metadata#referrals")
    assert len(page["value"]) == 100
    link = page["@odata.nextLink"]
    assert link.startswith(core.sb.url + REFERRALS) and "$skiptoken=" in link
    seen = [r["id"] for r in core.list_all()]
    assert len(seen) == len(set(seen)) == 230
    assert set(seen) == created
    small = core.list(**{"$top": "7"})
    assert len(small["value"]) == 7 and "$top=7" in small["@odata.nextLink"]
    assert len(core.list(**{"$top": "500"})["value"]) == 100


def test_orderby_updated_date_time_asc_and_desc(core: Core) -> None:
    deals = _bulk(core, 5)
    core.patch(deals[0]["id"], {"op": "replace", "path": "/name", "value": "touched"})
    ascending = [r["id"] for r in core.list_all(**{"$orderby": "updatedDateTime asc", "$top": "2"})]
    descending = [
        r["id"] for r in core.list_all(**{"$orderby": "updatedDateTime desc", "$top": "2"})
    ]
    assert ascending[-1] == deals[0]["id"]
    assert descending == list(reversed(ascending))
    assert core.http.get(REFERRALS, params={"$orderby": "name"}).status_code == 400


def test_filters_on_each_documented_field(core: Core) -> None:
    private = core.create(deal_body(externalReferenceId="O'Brien-1"))
    cosell = core.create(cosell_body(qualification="MarketingQualified"))
    incoming = core.incoming()

    def ids(expression: str) -> set[str]:
        """Ids of the partner's own matches (Microsoft's related referrals match too)."""
        found = core.list_all(**{"$filter": expression})
        return {r["id"] for r in found if r["owner"]["type"] == "Partner"}

    assert ids("externalReferenceId eq 'O''Brien-1'") == {private["id"]}
    assert ids("type eq 'Independent'") == {private["id"]}
    assert incoming["id"] in ids("status eq 'New' and direction eq 'Incoming'")
    assert ids("status eq 'Active' and substatus eq 'Accepted' and direction eq 'Outgoing'") == {
        private["id"],
        cosell["id"],
    }
    assert ids("qualification eq 'MarketingQualified'") >= {cosell["id"]}
    engagement = core.list_all(**{"$filter": f"(engagementId eq '{cosell['engagementId']}')"})
    assert {r["owner"]["type"] for r in engagement} == {"Partner", "Microsoft"}
    mirrored = core.list_all(**{"$filter": "direction eq 'Outgoing' and status eq 'Active'"})
    assert any(r["owner"]["type"] == "Microsoft" for r in mirrored)  # the incoming one's sender


def test_filter_on_updated_date_time_bounds(core: Core) -> None:
    old = core.create(deal_body())
    core.advance(minutes=10)
    middle = core.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    core.advance(minutes=10)
    new = core.create(deal_body())
    after = {r["id"] for r in core.list_all(**{"$filter": f"updatedDateTime ge {middle}"})}
    before = {r["id"] for r in core.list_all(**{"$filter": f"updatedDateTime le {middle}"})}
    assert new["id"] in after and old["id"] not in after
    assert old["id"] in before and new["id"] not in before


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("status eq Active", "quoted"),
        ("colour eq 'red'", "cannot filter on 'colour'"),
        ("status ne 'Active'", "operator 'ne'"),
        ("status eq 'Active' or type eq 'Shared'", "'or' is not supported"),
        ("updatedDateTime ge '2026-01-01T00:00:00Z'", "unquoted"),
        ("updatedDateTime ge 2026-01-01T00:00:00", "UTC offset"),
        ("status eq 'Active", "unterminated"),
        ("(status eq 'Active'", "not closed"),
        ("status eq 'Open'", "got 'Open'"),
        ("status ge 'Active'", "eq only"),
    ],
)
def test_bad_filter_is_400_naming_the_problem(core: Core, expression: str, names: str) -> None:
    response = core.http.get(REFERRALS, params={"$filter": expression})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalidRequest" and error["target"] == "$filter"
    assert names in error["message"]


def test_incremental_read_with_watermark_sees_changes_and_ties(core: Core) -> None:
    deals = _bulk(core, 3)
    seen = {r["id"]: r["eTag"] for r in core.list_all(**{"$orderby": "updatedDateTime asc"})}
    watermark = max(r["updatedDateTime"] for r in deals)
    core.patch(deals[1]["id"], {"op": "replace", "path": "/salesStage", "value": "20"})
    changed = core.list_all(
        **{"$filter": f"updatedDateTime ge {watermark}", "$orderby": "updatedDateTime asc"}
    )
    fresh = {r["id"] for r in changed if seen.get(r["id"]) != r["eTag"]}
    assert fresh == {deals[1]["id"]}


def test_listing_cost_does_not_grow_with_position(core: Core) -> None:
    """20,000 referrals: late pages cost about what early pages cost (no offset scans)."""
    store = core.sb.part("core").store
    template = core.create(deal_body())
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(20_000):
        updated = (stamp + timedelta(seconds=i // 3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        # shallow copies: the nested objects are shared, which listing does not mind
        rows.append({**template, "id": f"bulk-{i:06d}", "updatedDateTime": updated})
    store.load({"referrals": rows})

    def timed_pages(params: dict[str, str], pages: int) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        page = core.list(**params)
        for _ in range(pages - 1):
            page = core.http.get(page["@odata.nextLink"]).json()
        return time.perf_counter() - started, page

    select = {"$select": "id,updatedDateTime", "$orderby": "updatedDateTime asc"}
    early, _ = timed_pages(select, 10)
    late_start = f"{rows[19_000]['updatedDateTime'][:19]}Z"
    late, last = timed_pages({**select, "$filter": f"updatedDateTime ge {late_start}"}, 10)
    assert "@odata.nextLink" not in last or len(last["value"]) == 100
    assert late < early * 5 + 0.5


# --- auth, errors, admin -------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic c2FuZGJveDpzYW5kYm94"])
def test_missing_or_wrong_token_is_401_unauthenticated(core: Core, header: str | None) -> None:
    del core.http.headers["Authorization"]
    headers = {} if header is None else {"Authorization": header}
    response = core.http.get(REFERRALS, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_token_of_another_audience_is_401(core: Core) -> None:
    token = core.http.post(
        "/t/oauth2/v2.0/token",
        data={
            "client_id": "sandbox",
            "client_secret": "sandbox",
            "grant_type": "client_credentials",
            "scope": "https://org.crm.dynamics.com/.default",
        },
    ).json()["access_token"]
    response = core.http.get(REFERRALS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_error_body_shape_and_request_id_echo(core: Core) -> None:
    request_id = str(uuid.uuid4())
    response = core.http.get(f"{REFERRALS}/nope", headers={"client-request-id": request_id})
    assert response.status_code == 404
    assert response.headers["client-request-id"] == request_id
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "target", "innerError"}
    assert body["error"]["code"] == "itemNotFound"
    assert isinstance(body["error"]["innerError"], dict)
    ok = core.http.get(REFERRALS, headers={"client-request-id": request_id})
    assert ok.headers["client-request-id"] == request_id


def test_error_response_carries_retry_after_rounded_up(core: Core) -> None:
    response = core.sb.part("core").error_response(429, "throttled", "slow down", 1.2)
    assert response.headers["Retry-After"] == "2"
    core.http.put("/_sandbox/faults", json={"core": {"rate_429": 1.0, "retry_after_s": 3}})
    try:
        throttled = core.http.get(REFERRALS)
    finally:
        core.http.put("/_sandbox/faults", json={"core": {}})
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "3"
    assert throttled.json()["error"]["code"] == "throttled"


def test_admin_lists_everything_and_resets(core: Core) -> None:
    core.create(cosell_body())
    core.incoming()
    everything = core.admin("GET", "referrals").json()["value"]
    assert len(everything) == 4  # deal + Microsoft's, incoming + Microsoft's
    core.admin("POST", "reset")
    assert core.admin("GET", "referrals").json()["value"] == []


def test_dump_and_load_round_trip(core: Core) -> None:
    core.create(cosell_body())
    core.incoming(**{"from": "Partner"})
    core.admin("PUT", "microsoft-policy", {"policy": "win", "after_s": 60})
    part = core.sb.part("core")
    dumped = part.dump()
    import json

    restored = json.loads(json.dumps(dumped))
    part.load(restored)
    assert part.dump() == dumped
    assert len(core.list()["value"]) == 3


def test_seed_is_deterministic(core: Core) -> None:
    part = core.sb.part("core")
    part.seed(350, 7)
    first = [
        (r["id"], r["name"], r["details"]["dealValue"])
        for r in core.admin("GET", "referrals").json()["value"]
    ]
    core.admin("POST", "reset")
    part.seed(350, 7)
    second = [
        (r["id"], r["name"], r["details"]["dealValue"])
        for r in core.admin("GET", "referrals").json()["value"]
    ]
    assert sorted(first) == sorted(second)
    incoming = [
        r
        for r in core.list_all(**{"$filter": "direction eq 'Incoming'"})
        if r["owner"]["type"] == "Partner"
    ]
    assert len(incoming) == 3


# --- latency --------------------------------------------------------------------------------


def _admin_ids(core: Core) -> set[str]:
    return {r["id"] for r in core.admin("GET", "referrals").json()["value"]}


def test_latency_holds_the_answer_not_the_work(core: Core) -> None:
    """The work is done when the request arrives; the answer waits out the latency.

    A real server's latency is its response time, its own work inside it: a
    benchmark's bound (N × latency / concurrency) then holds for the sandbox too.
    """
    before = _admin_ids(core)
    core.http.put("/_sandbox/latency", json={"core": 3000}).raise_for_status()
    try:
        with ThreadPoolExecutor(1) as pool:
            sent = time.monotonic()
            answer = pool.submit(core.create, deal_body())
            created: set[str] = set()
            for _ in range(300):  # the admin API has no latency; at most ~3 s
                created = _admin_ids(core) - before
                if created or answer.done():
                    break
                time.sleep(0.01)
            seen_after = time.monotonic() - sent
            assert created, "the referral was not created before its answer arrived"
            assert not answer.done()
            assert seen_after < 2.0
            deal = answer.result(timeout=30)
            assert time.monotonic() - sent >= 3.0
        assert {deal["id"]} == created
    finally:
        core.http.put("/_sandbox/latency", json={"core": 0}).raise_for_status()


def test_slow_fault_adds_to_the_latency(core: Core) -> None:
    core.http.put("/_sandbox/latency", json={"core": 200}).raise_for_status()
    core.http.put(
        "/_sandbox/faults", json={"core": {"rate_slow": 1.0, "slow_ms": 400}}
    ).raise_for_status()
    try:
        sent = time.monotonic()
        deal = core.create(deal_body())
        assert time.monotonic() - sent >= 0.6
        assert deal["id"] in _admin_ids(core)
    finally:
        core.http.put("/_sandbox/faults", json={"core": {}}).raise_for_status()
        core.http.put("/_sandbox/latency", json={"core": 0}).raise_for_status()
