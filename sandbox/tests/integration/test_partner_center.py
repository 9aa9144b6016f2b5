"""The sandbox core (Partner Center referrals imitation) over real HTTPS.

One test per rule the sandbox keeps on purpose (RR's status table, the seed's terminal
deals, 14-day expiry, Microsoft's side and deal registration), one per setting for what
Microsoft leaves open, and the HTTP contract of deal-core-api.md (paging in the published
form, filters, eTags, auth, error shape). The published request and response bodies are
replayed in ``tests/contract/partner_center``.
"""

from __future__ import annotations

import copy
import email.utils
import ssl
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox.harness import SandboxServer
from sandbox.partner_center.fields import is_microsofts, is_partners

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


def holder(referral: dict[str, Any]) -> str:
    """Who holds a referral, by its organisation (the resource has no owner field)."""
    if is_partners(referral):
        return "Partner"
    return "Microsoft" if is_microsofts(referral) else "Other"


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
        assert response.status_code == 200, response.text  # SW's documented answer
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
            page = self.next_page(link)
            items.extend(page["value"])
        raise AssertionError("paging did not end")

    def next_page(self, link: str) -> dict[str, Any]:
        """Follow a published next link: http becomes https, the path and query stay."""
        response = self.http.get(link.replace("http://", "https://", 1))
        assert response.status_code == 200, response.text
        return dict(response.json())

    def engagement(self, deal: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The referrals of a deal's engagement by who holds them."""
        value = self.list(**{"$filter": f"engagementId eq '{deal['engagementId']}'"})["value"]
        return {holder(r): r for r in value}

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.request(method, f"/_sandbox/core/{path}", json=body)

    def incoming(self, **body: Any) -> dict[str, Any]:
        response = self.admin("POST", "incoming", body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def microsoft(self, ident: str, action: str) -> httpx.Response:
        return self.admin("POST", f"microsoft/{ident}/{action}")

    def settings(self, **changes: Any) -> dict[str, Any]:
        response = self.admin("PUT", "settings", changes)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def advance(self, **delta: float) -> None:
        self.http.post("/_sandbox/clock", json=delta).raise_for_status()
        self.refresh_token()  # tokens live one hour on the sandbox clock

    def now(self) -> datetime:
        return datetime.fromisoformat(self.http.get("/_sandbox/clock").json()["now"])


def refused(response: httpx.Response, target: str | None = None) -> str:
    """A 400 with a documented top-level code and no inner code; returns its message."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalidRequest"
    assert "code" not in error["innerError"], "Microsoft publishes no inner lifecycle codes"
    if target is not None:
        assert error["target"] == target
    return str(error["message"])


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


# --- creation ------------------------------------------------------------------------------


def test_create_returns_full_referral_with_ids_etag_and_clock_times(core: Core) -> None:
    before = core.now() - timedelta(seconds=1)
    deal = core.create(deal_body())
    assert deal["id"] and deal["engagementId"] and deal["id"] != deal["engagementId"]
    assert deal["eTag"].startswith('"') and deal["eTag"].endswith('"')
    created = datetime.fromisoformat(deal["createdDateTime"])
    assert before <= created <= core.now() + timedelta(seconds=1)
    assert deal["createdDateTime"].endswith("0Z") and len(deal["createdDateTime"]) == 28
    assert deal["updatedDateTime"] == deal["createdDateTime"]
    assert holder(deal) == "Partner" and deal["organizationName"]
    assert "owner" not in deal and "registrationEligible" not in deal
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
        # CR20's required parts
        (_without(deal_body(), "type"), "type"),
        (_without(deal_body(), "customerProfile"), "customerProfile"),
        (_without(deal_body(), "consent"), "consent"),
        (_without(deal_body(), "details"), "details"),
        # values whose form is documented
        (_with(deal_body(), "type", "Private"), "type"),
        (_with(deal_body(), "details.dealValue", "lots"), "details.dealValue"),
        (_with(deal_body(), "details.currency", "usd"), "details.currency"),
        (_with(deal_body(), "details.closingDateTime", "soon"), "details.closingDateTime"),
        (
            _with(deal_body(), "customerProfile.address.country", "UK"),
            "customerProfile.address.country",
        ),
        (_with(deal_body(), "status", "Open"), "status"),
        (_with(deal_body(), "substatus", "Won"), "substatus"),
        (_with(deal_body(), "salesStage", "Bargain"), "salesStage"),
        (
            _with(deal_body(), "inviteContext", {"assistanceRequestCode": "PleaseHelp"}),
            "inviteContext.assistanceRequestCode",
        ),
    ],
)
def test_create_refuses_only_what_is_documented(
    core: Core, body: dict[str, Any], target: str
) -> None:
    refused(core.http.post(REFERRALS, json=body), target)


@pytest.mark.parametrize(
    "body",
    [
        _without(deal_body(), "name"),  # CR19 and CR20 post none
        _without(deal_body(), "team"),
        _with(deal_body(), "team", [{**MEMBER, "email": ""}]),  # LIVE-CR's sample
        _with(deal_body(), "details.requirements.solutions", []),
        _without(deal_body(), "details.closingDateTime"),
        _with(deal_body(), "details.dealValue", "1250.50"),  # PA20's string form
        _with(deal_body(), "customerProfile.ids", {}),  # GL19's form
        _with(deal_body(), "consent", {"ConsentToContact": True}),  # LIVE-CR's key case
        deal_body(someFutureField={"kept": True}),
    ],
)
def test_create_is_permissive_where_the_api_is_not_known_to_be_strict(
    core: Core, body: dict[str, Any]
) -> None:
    deal = core.create(body)
    assert core.get(deal["id"]) == deal


def test_create_keeps_unknown_keys_and_canonical_consent(core: Core) -> None:
    deal = core.create(
        deal_body(
            someFutureField={"kept": True},
            consent={"ConsentToContact": True, "ConsentToMicrosoftToContactSpecificPartners": True},
        )
    )
    assert deal["someFutureField"] == {"kept": True}
    assert deal["consent"]["consentToContact"] is True
    assert deal["consent"]["ConsentToMicrosoftToContactSpecificPartners"] is True
    assert deal["details"]["dealValue"] == 50000


def test_create_keeps_the_status_and_stage_it_sends(core: Core) -> None:
    deal = core.create(deal_body(status="Closed", substatus="Won", salesStage="100"))
    assert (deal["status"], deal["substatus"], deal["salesStage"]) == ("Closed", "Won", "100")
    assert deal["closedDateTime"] is not None and deal["direction"] == "Outgoing"
    plain = core.create(deal_body())
    assert (plain["status"], plain["substatus"], plain["salesStage"]) == (
        "Active",
        "Accepted",
        None,
    )
    named = core.create(deal_body(salesStage="Develop"))
    assert named["salesStage"] == "40"


def test_create_status_setting_starts_every_deal_active_accepted(core: Core) -> None:
    """CR20 posts New/Pending and shows Active/Accepted: the sandbox can do either."""
    core.settings(create_status="accept", create_code=201)
    response = core.http.post(REFERRALS, json=deal_body(status="New", substatus="Pending"))
    assert response.status_code == 201
    deal = response.json()
    assert (deal["status"], deal["substatus"], deal["salesStage"]) == ("Active", "Accepted", None)


def test_server_fields_in_a_create_body_are_ignored(core: Core) -> None:
    sent = deal_body(
        id="mine",
        eTag='"mine"',
        createdDateTime="2018-11-06T18:40:42.6178337Z",
        organizationId="someone-else",
        direction="Incoming",
    )
    deal = core.create(sent)
    assert deal["id"] != "mine" and deal["eTag"] != '"mine"'
    assert deal["createdDateTime"] != sent["createdDateTime"]
    assert holder(deal) == "Partner" and deal["direction"] == "Outgoing"


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
    refused(core.patch(deal["id"], *_status(status, substatus)), "substatus")


def test_active_deal_cannot_go_back_to_new(core: Core) -> None:
    deal = core.create(deal_body())
    refused(core.patch(deal["id"], *_status("New", "Pending")), "status")


def test_active_deal_reports_sales_stages_in_either_form_then_closes_lost(core: Core) -> None:
    deal = core.create(deal_body())
    for stage, stored in (("20", "20"), ("Develop", "40"), (60, "60"), ("Close", "80")):
        deal = core.patch_ok(deal["id"], {"op": "replace", "path": "/salesStage", "value": stage})
        assert deal["salesStage"] == stored
    lost = core.patch_ok(deal["id"], *_status("Closed", "Lost"))
    assert (lost["status"], lost["substatus"], lost["salesStage"]) == ("Closed", "Lost", "80")
    assert lost["closedDateTime"] is not None


@pytest.mark.parametrize(
    ("form", "expected"), [("percent", "40"), ("name", "Develop"), ("null", None)]
)
def test_sales_stage_is_answered_in_the_configured_form(
    core: Core, form: str, expected: str | None
) -> None:
    core.settings(sales_stage=form)
    deal = core.create(deal_body(salesStage="40"))
    assert deal["salesStage"] == expected
    assert core.get(deal["id"])["salesStage"] == expected
    assert core.list()["value"][0]["salesStage"] == expected


@pytest.mark.parametrize("substatus", ["Won", "Lost"])
@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "/details/notes", "value": "late note"},
        {"op": "replace", "path": "/details/dealValue", "value": 1},
        {"op": "add", "path": "/team/-", "value": MEMBER},
        {"op": "replace", "path": "/status", "value": "Active"},
        {"op": "replace", "path": "/salesStage", "value": "20"},
    ],
)
def test_terminal_deal_refuses_every_edit(core: Core, substatus: str, op: dict[str, Any]) -> None:
    deal = core.create(deal_body())
    closed = core.patch_ok(deal["id"], *_status("Closed", substatus))
    refused(core.patch(deal["id"], op), "status")
    assert core.get(deal["id"]) == closed


# --- incoming deals ------------------------------------------------------------------------


def test_incoming_deal_starts_new_pending_expiring_in_14_days(core: Core) -> None:
    deal = core.incoming()
    assert (deal["status"], deal["substatus"], deal["direction"]) == ("New", "Pending", "Incoming")
    created = datetime.fromisoformat(deal["createdDateTime"])
    assert datetime.fromisoformat(deal["expirationDateTime"]) - created == timedelta(days=14)
    assert holder(deal) == "Partner"
    assert deal["inviteContext"]["invitedBy"]["organizationId"] == "msft"  # GL19's form
    assert {t["type"] for t in deal["target"]} == {"BusinessProfileLocation"}


def test_incoming_from_a_partner_names_it_in_invited_by(core: Core) -> None:
    deal = core.incoming(**{"from": "Partner"})
    invited_by = deal["inviteContext"]["invitedBy"]
    assert invited_by["organizationId"] not in ("msft", deal["organizationId"])
    assert "Microsoft" not in core.engagement(deal)


def test_incoming_accept_and_decline(core: Core) -> None:
    deal = core.incoming()
    accepted = core.patch_ok(deal["id"], *_status("Active", "Accepted"))
    assert (accepted["status"], accepted["substatus"]) == ("Active", "Accepted")
    assert accepted["acceptedDateTime"] is not None
    other = core.incoming()
    declined = core.patch_ok(other["id"], *_status("Closed", "Declined", statusReason="No fit"))
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
    refused(core.patch(deal["id"], *_status("Active", "Accepted")), "status")


def test_tick_expires_unanswered_deals_without_any_read(core: Core) -> None:
    deal = core.incoming()
    core.advance(days=15)  # the admin clock calls tick()
    stored = core.sb.part("core").store.records[deal["id"]]
    assert (stored["status"], stored["substatus"]) == ("Closed", "Expired")


# --- Microsoft's side ----------------------------------------------------------------------


def test_consent_to_microsoft_creates_its_referral_new_pending(core: Core) -> None:
    deal = core.create(cosell_body())
    side = core.engagement(deal)["Microsoft"]
    assert side["id"] != deal["id"]
    assert (side["status"], side["substatus"], side["direction"]) == ("New", "Pending", "Incoming")
    assert side["organizationName"] == "Microsoft"
    assert side["target"] == [{"type": "BusinessProfileLocation", "id": "msft"}]
    created = datetime.fromisoformat(side["createdDateTime"])
    assert datetime.fromisoformat(side["expirationDateTime"]) - created == timedelta(days=14)


def test_the_documented_second_referral_invites_microsoft_once(core: Core) -> None:
    """CR20: your Shared referral with a SolutionProfile target, then a referral for
    Microsoft carrying your engagementId and the target msft."""
    core.settings(consent_invites_microsoft=False)
    ours = core.create(
        deal_body(type="Shared", target=[{"type": "SolutionProfile", "id": "SOL-ABC-DEF"}])
    )
    assert "Microsoft" not in core.engagement(ours)
    for_microsoft = deal_body(
        type="Shared",
        engagementId=ours["engagementId"],
        target=[{"type": "BusinessProfileLocation", "id": "msft"}],
        externalReferenceId=None,
    )
    side = core.create(for_microsoft)
    assert side["engagementId"] == ours["engagementId"] and holder(side) == "Microsoft"
    assert (side["status"], side["substatus"]) == ("New", "Pending")
    assert core.create(for_microsoft)["id"] == side["id"], "one Microsoft referral"
    assert set(core.engagement(ours)) == {"Partner", "Microsoft"}
    unknown = {**for_microsoft, "engagementId": str(uuid.uuid4())}
    refused(core.http.post(REFERRALS, json=unknown), "engagementId")


def test_consent_given_later_invites_microsoft(core: Core) -> None:
    deal = core.create(deal_body())
    assert "Microsoft" not in core.engagement(deal)
    consent = {
        "op": "replace",
        "path": "/consent/consentToShareReferralWithMicrosoftSellers",
        "value": True,
    }
    core.patch_ok(deal["id"], consent)
    assert core.engagement(deal)["Microsoft"]["substatus"] == "Pending"
    core.settings(consent_invites_microsoft=False)
    other = core.create(deal_body())
    core.patch_ok(other["id"], consent)
    assert "Microsoft" not in core.engagement(other)


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
    response = core.patch(side["id"], {"op": "replace", "path": "/details/notes", "value": "x"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "accessDenied"


# --- deal registration ---------------------------------------------------------------------

REGISTER = {
    "op": "add",
    "path": "/registrations/-",
    "value": {"type": "AzureIPCoSell", "solutionDetails": [{"id": ELIGIBLE_SOLUTION}]},
}


def _refused_registration(core: Core, ident: str) -> str:
    return refused(core.patch(ident, REGISTER), "registrations")


def test_registration_needs_microsoft_invited(core: Core) -> None:
    deal = core.create(deal_body())  # Private, with an eligible solution
    assert "not invited" in _refused_registration(core, deal["id"])


def test_registration_needs_microsoft_accepted_or_won(core: Core) -> None:
    deal = core.create(cosell_body())
    assert "not accepted" in _refused_registration(core, deal["id"])
    core.microsoft(deal["id"], "decline")
    assert "not accepted" in _refused_registration(core, deal["id"])
    won = core.create(cosell_body())
    core.microsoft(won["id"], "win")
    assert core.patch_ok(won["id"], REGISTER)["registrationStatus"] == "ReviewPending"


def test_registration_needs_an_incentive_eligible_solution(core: Core) -> None:
    body = _with(cosell_body(), "details.requirements.solutions", [{"id": PLAIN_SOLUTION}])
    deal = core.create(body)
    core.microsoft(deal["id"], "accept")
    assert "incentive-eligible" in _refused_registration(core, deal["id"])
    eligible = core.admin("PUT", "eligible-solutions", {"ids": [PLAIN_SOLUTION]})
    assert eligible.json()["ids"] == [PLAIN_SOLUTION]
    assert core.patch_ok(deal["id"], REGISTER)["registrationStatus"] == "ReviewPending"


def test_registration_review_pending_then_admin_decides(core: Core) -> None:
    deal = core.create(cosell_body())
    core.microsoft(deal["id"], "accept")
    assert core.get(deal["id"])["trackingInfo"]["microsoftMsxId"]
    registered = core.patch_ok(deal["id"], REGISTER)
    assert registered["registrationStatus"] == "ReviewPending"
    entry = registered["registrations"][0]
    assert entry["type"] == "AzureIPCoSell" and entry["status"] == "ReviewPending"
    assert entry["registrationDateTime"]
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
    mixed = core.patch(
        deal["id"], REGISTER, {"op": "replace", "path": "/details/notes", "value": "x"}
    )
    refused(mixed, "status")


# --- PATCH contract, strict mode and eTags -------------------------------------------------


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
        {"op": "remove", "path": "/details/notes"},  # PA20: add and replace only
        {"op": "move", "from": "/name", "path": "/campaignId"},
        {"op": "replace", "path": "/id", "value": "x"},  # read-only fields
        {"op": "replace", "path": "/registrationStatus", "value": "Approved"},
        {"op": "replace", "path": "/team/-", "value": MEMBER},
        {"op": "replace", "path": "/details/currency", "value": "eur"},
        {"op": "replace", "path": "/details/dealValue", "value": "much"},
    ],
)
def test_patch_refuses_other_ops_read_only_fields_and_bad_values(
    core: Core, op: dict[str, Any]
) -> None:
    deal = core.create(deal_body())
    refused(core.patch(deal["id"], op))


UNLISTED = [
    {"op": "replace", "path": "/name", "value": "Renamed"},
    {"op": "add", "path": "/inviteContext", "value": {"assistanceRequestCode": "Unknown"}},
    {"op": "add", "path": "/target/-", "value": {"type": "SolutionProfile", "id": "S-2"}},
]


@pytest.mark.parametrize("op", UNLISTED)
def test_paths_outside_the_certified_connectors_list_are_strict_modes_only(
    core: Core, op: dict[str, Any]
) -> None:
    """Whether the API accepts /name, /inviteContext or /target/- is unknown: accepted by
    default, refused in strict mode (where client tests prove they never send them)."""
    deal = core.create(deal_body())
    core.patch_ok(deal["id"], op)
    core.settings(strict=True)
    message = refused(core.patch(deal["id"], op), op["path"])
    assert "/details/dealValue" in message  # the documented paths are named
    core.patch_ok(deal["id"], {"op": "replace", "path": "/details/dealValue", "value": "10000"})


def test_strict_mode_refuses_undocumented_target_types(core: Core) -> None:
    partner = deal_body(type="Shared", target=[{"type": "Partner", "id": "ally"}])
    assert core.create(partner)["target"] == [{"type": "Partner", "id": "ally"}]
    core.settings(strict=True)
    refused(core.http.post(REFERRALS, json=partner), "target[0].type")
    assert core.create(deal_body(target=[{"type": "SolutionProfile", "id": "S"}]))


def test_settings_are_checked(core: Core) -> None:
    assert core.admin("PUT", "settings", {"strict": "yes"}).status_code == 400
    assert core.admin("PUT", "settings", {"colour": "red"}).status_code == 400
    assert core.admin("GET", "settings").json()["strict"] is False


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


def test_paging_emits_the_published_next_link_and_serves_it(core: Core) -> None:
    created = {d["id"] for d in _bulk(core, 230)}
    page = core.list()
    host = core.sb.url.removeprefix("https://")
    assert page["@odata.context"] == f"http://{host}/v1.0/$metadata#Referrals"
    assert page["@odata.count"] == len(page["value"]) == 100
    link = page["@odata.nextLink"]
    assert link.startswith(f"http://{host}/v1.0/referrals?$skiptoken=")  # GL19/GL20's form
    assert "%2f" in link or "%2b" in link or "%3d" in link  # an encoded token, as published
    seen = [r["id"] for r in core.list_all()]
    assert len(seen) == len(set(seen)) == 230
    assert set(seen) == created
    # the link carries the whole query: the filter holds on the next pages
    some = core.list_all(**{"$filter": "type eq 'Independent'", "$select": "id,type"})
    assert len(some) == 230 and all(set(r) == {"id", "type"} for r in some)


def _by_creation(deals: list[dict[str, Any]]) -> list[str]:
    """Ids in (createdDateTime, id) order: milliseconds tie, the id decides."""
    return [d["id"] for d in sorted(deals, key=lambda d: (d["createdDateTime"], d["id"]))]


def test_top_is_a_total_and_skip_skips(core: Core) -> None:
    made = _by_creation(_bulk(core, 130))
    top = core.list_all(**{"$top": "110", "$orderby": "createdDateTime asc"})
    assert [r["id"] for r in top] == made[:110]
    skipped = core.list_all(**{"$skip": "120", "$orderby": "createdDateTime asc"})
    assert [r["id"] for r in skipped] == made[120:]
    counted = core.list(**{"$count": "true", "$top": "5", "$expand": "team"})
    assert counted["@odata.count"] == 5 and "@odata.nextLink" not in counted


def test_orderby_created_and_updated_date_time_asc_and_desc(core: Core) -> None:
    deals = _bulk(core, 5)
    core.patch(deals[0]["id"], {"op": "replace", "path": "/details/notes", "value": "touched"})
    ascending = [r["id"] for r in core.list_all(**{"$orderby": "updatedDateTime asc"})]
    descending = [r["id"] for r in core.list_all(**{"$orderby": "updatedDateTime desc"})]
    assert ascending[-1] == deals[0]["id"]
    assert descending == list(reversed(ascending))
    created = [r["id"] for r in core.list_all(**{"$orderby": "createdDateTime desc"})]
    assert created == list(reversed(_by_creation(deals)))
    core.settings(page_size=2)
    paged = [r["id"] for r in core.list_all(**{"$orderby": "updatedDateTime desc"})]
    assert paged == descending
    refused(core.http.get(REFERRALS, params={"$orderby": "name"}), "$orderby")


@pytest.mark.parametrize("descending", [False, True])
def test_pages_shift_when_referrals_change_between_next_links(core: Core, descending: bool) -> None:
    """Paging continues from the last item's (updatedDateTime, id): a referral changed
    between two pages moves to the newest end. Ascending, it is listed again (a reader
    removes duplicates by id, none is skipped); descending, it lands in the part already
    read and is not listed again (a reader looking for it must list once more)."""
    deals = _bulk(core, 9)
    core.settings(page_size=3)
    order = {"$orderby": f"updatedDateTime {'desc' if descending else 'asc'}"}
    first = core.list(**order)
    listed = [r["id"] for r in first["value"]]
    untouched = deals[0] if descending else deals[-1]
    moved = next(d for d in deals if d["id"] not in listed and d is not untouched)
    core.patch(moved["id"], {"op": "replace", "path": "/details/notes", "value": "moved"})
    page = first
    while "@odata.nextLink" in page:
        page = core.next_page(page["@odata.nextLink"])
        listed += [r["id"] for r in page["value"]]
    if descending:
        assert moved["id"] not in listed and len(listed) == len(set(listed)) == 8
    else:
        assert set(listed) == {d["id"] for d in deals} and listed.count(moved["id"]) == 1
        assert listed[-1] == moved["id"]


def test_filters_on_each_documented_field(core: Core) -> None:
    private = core.create(deal_body(externalReferenceId="O'Brien-1"))
    cosell = core.create(cosell_body(qualification="MarketingQualified"))
    incoming = core.incoming()
    french = core.create(
        _with(deal_body(), "customerProfile.address.country", "FR")
        | {"team": [{**MEMBER, "email": "r2d2@contoso.com"}]}
    )

    def ids(expression: str) -> set[str]:
        """Ids of the partner's own matches (Microsoft's related referrals match too)."""
        found = core.list_all(**{"$filter": expression})
        return {r["id"] for r in found if holder(r) == "Partner"}

    assert ids("externalReferenceId eq 'O''Brien-1'") == {private["id"]}
    assert ids("type eq 'Independent'") == {private["id"], french["id"]}
    assert incoming["id"] in ids("status eq 'New' and direction eq 'Incoming'")
    assert ids("(direction eq 'Incoming' and substatus eq 'Pending')") == {incoming["id"]}
    assert ids("qualification eq 'MarketingQualified'") >= {cosell["id"]}
    assert ids("customerProfile/address/country eq 'FR' and direction eq 'Outgoing'") == {
        french["id"]
    }
    assert ids("status eq 'Active' and team/any(t:t/email eq 'r2d2@contoso.com')") == {french["id"]}
    assert ids("email eq 'r2d2@contoso.com'") == {french["id"]}
    quoted = core.list_all(**{"$filter": f"engagementId eq '{cosell['engagementId']}'"})
    unquoted = core.list_all(**{"$filter": f"engagementId eq {cosell['engagementId']}"})
    assert {holder(r) for r in quoted} == {"Partner", "Microsoft"}
    assert [r["id"] for r in unquoted] == [r["id"] for r in quoted]


def test_filter_on_date_time_bounds(core: Core) -> None:
    old = core.create(deal_body())
    core.advance(minutes=10)
    middle = core.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    core.advance(minutes=10)
    new = core.create(deal_body())
    after = {r["id"] for r in core.list_all(**{"$filter": f"updatedDateTime ge {middle}"})}
    before = {r["id"] for r in core.list_all(**{"$filter": f"updatedDateTime le {middle}"})}
    assert new["id"] in after and old["id"] not in after
    assert old["id"] in before and new["id"] not in before
    created = {r["id"] for r in core.list_all(**{"$filter": f"createdDateTime gt {middle}"})}
    assert created == {new["id"]}


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("status eq Active", "expected a value"),
        ("status eq 'Active'", None),
        ("status in ('Active')", "operator 'in'"),
        ("updatedDateTime ge 'soon'", "not an ISO 8601"),
        ("status eq 'Active", "unterminated"),
        ("(status eq 'Active'", "not closed"),
        ("team/any(t t/email eq 'x')", "':'"),
        ("status eq 'Active' and", "ends where a condition"),
    ],
)
def test_a_filter_that_cannot_be_read_is_400_naming_the_problem(
    core: Core, expression: str, names: str | None
) -> None:
    response = core.http.get(REFERRALS, params={"$filter": expression})
    if names is None:
        assert response.status_code == 200
        return
    assert names in refused(response, "$filter")


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


def test_select_can_be_refused(core: Core) -> None:
    core.create(deal_body())
    assert set(core.list(**{"$select": "id,eTag"})["value"][0]) == {"id", "eTag"}
    core.settings(refuse_select=True)
    refused(core.http.get(REFERRALS, params={"$select": "id"}), "$select")
    assert core.list()["value"]


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
            page = core.next_page(page["@odata.nextLink"])
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


@pytest.mark.parametrize(
    ("fault", "form"), [("429", "none"), ("503", "seconds"), ("503", "http_date")]
)
def test_retry_after_fault_forms(core: Core, fault: str, form: str) -> None:
    """429 with and without Retry-After; 503 with it as seconds and as an HTTP date on
    the sandbox clock (the one its Date header tells)."""
    faults = {
        f"rate_{fault}": 1.0,
        "retry_after_s": 5,
        "retry_after_format": form,
        "retry_after_on_503": True,
    }
    core.http.put("/_sandbox/faults", json={"core": faults}).raise_for_status()
    try:
        answer = core.http.get(REFERRALS)
    finally:
        core.http.put("/_sandbox/faults", json={"core": {}})
    assert answer.status_code == int(fault)
    header = answer.headers.get("Retry-After")
    if form == "none":
        assert header is None
    elif form == "seconds":
        assert header == "5"
    else:
        when = email.utils.parsedate_to_datetime(header)
        date = email.utils.parsedate_to_datetime(answer.headers["Date"])
        assert 5 <= (when - date).total_seconds() <= 7


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
        r for r in core.list_all(**{"$filter": "direction eq 'Incoming'"}) if holder(r) == "Partner"
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
