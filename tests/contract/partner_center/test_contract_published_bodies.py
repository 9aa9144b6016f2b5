"""The bodies Microsoft publishes, replayed through the client and through the sandbox.

- every published referral parses (create answers, list items, a read, real answers);
- the client follows the published next links (http, no ``/engagements``) over https;
- the sandbox accepts every published create and patch and every documented query,
  and answers in the published shapes (no field the real API lacks);
- the connector sends only documented shapes: target types, PATCH paths and ops, the
  referral for Microsoft of the co-sell flow.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from contract_world import FixedToken, SandboxCore, published

from connector.dealcore.client import DEFAULT_BASE_URL, ReferralsClient
from connector.dealcore.options import CoreOptions
from connector.dealcore.payload import (
    PATCHABLE_PATHS,
    created_differences,
    microsoft_referral_body,
    parse_referral,
)
from connector.model import Contact, Customer, DealDraft, DealType, StandardStage, Status
from connector.sync.plan import Create, Update, plan_outbound

SW = published("sw_definition")
DOCUMENTED_TARGET_TYPES = {"None", "BusinessProfileLocation", "SolutionProfile"}
REFERRALS = f"{DEFAULT_BASE_URL}/referrals"


def published_referrals() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "CR19 answer", published("cr19_create")["response"]
    yield "CR20 answer", published("cr20_create")["response"]
    for i, item in enumerate(published("gl19_list")["response"]["value"]):
        yield f"GL19 item {i}", item
    yield "GL20 item", published("gl20_list")["response"]["value"][0]
    yield "GI20", published("gi20_get")["response"]
    for i, item in enumerate(published("obs_referrals")["referrals"]):
        yield f"OBS {i}", item


def client(http: httpx.Client) -> ReferralsClient:
    return ReferralsClient(
        DEFAULT_BASE_URL, FixedToken("contract"), http=http, correlation_id="contract"
    )


# ── every published body parses ───────────────────────────────────────────────────────


@pytest.mark.parametrize(("where", "body"), list(published_referrals()))
def test_every_published_referral_parses(where: str, body: dict[str, Any]) -> None:
    state = parse_referral(json.loads(json.dumps(body)))
    assert state.id == body["id"] and state.status.value == body["status"]
    assert state.updated is not None, "seven fractional digits, or six, or none"
    assert state.raw == body, "unknown fields are kept, not refused"
    stage = body.get("salesStage")
    assert state.sales_stage == (int(stage) if stage else None)


def test_the_cr20_answer_is_brought_to_what_its_create_sent() -> None:
    """CR20's create posts New/Pending with a closing date and answers Active/Accepted
    without it: the client patches exactly the differences, on documented paths."""
    sample = published("cr20_create")
    ops = created_differences(sample["request"], sample["response"])
    assert {op["path"] for op in ops} == {"/details/closingDateTime", "/status", "/substatus"}
    assert {op["path"] for op in ops} <= PATCHABLE_PATHS


# ── the client follows the published next links ───────────────────────────────────────


def test_the_client_follows_the_published_next_links_over_https() -> None:
    gl19 = published("gl19_list")["response"]
    gl20 = published("gl20_list")["response"]
    last = {"@odata.context": gl20["@odata.context"], "@odata.count": 0, "value": []}
    with httpx.Client() as http, respx.mock() as mock:
        route = mock.get(url__startswith="https://api.partner.microsoft.com/").mock(
            side_effect=[httpx.Response(200, json=body) for body in (gl19, gl20, last)]
        )
        ids = [r.id for r in client(http).list_changed(None)]
    assert ids == [r["id"] for r in gl19["value"]] + [gl20["value"][0]["id"]]
    first, second, third = (call.request for call in route.calls)
    assert first.url.path == "/v1.0/engagements/referrals"
    for request, link in ((second, gl19["@odata.nextLink"]), (third, gl20["@odata.nextLink"])):
        assert request.url.scheme == "https" and request.url.host == "api.partner.microsoft.com"
        assert request.url.raw_path == httpx.URL(link).raw_path, "path and token as published"


def test_a_published_read_parses_and_its_links_are_never_followed() -> None:
    gi20 = published("gi20_get")["response"]
    with httpx.Client() as http, respx.mock() as mock:
        route = mock.get(f"{REFERRALS}/{gi20['id']}").respond(200, json=gi20)
        state = client(http).get(gi20["id"])
    assert state.etag == gi20["eTag"] and state.direction == "Incoming"
    assert route.call_count == 1  # respx refuses any other request: no link is followed


# ── the sandbox accepts what is published ─────────────────────────────────────────────


@pytest.mark.parametrize("sample", ["cr19_create", "cr20_create", "live_cr_private"])
@pytest.mark.parametrize("strict", [False, True])
def test_the_sandbox_accepts_the_published_creates(
    sandbox: SandboxCore, sample: str, strict: bool
) -> None:
    sandbox.settings(strict=strict)
    request = published(sample)["request"]
    response = sandbox.http.post("/v1.0/engagements/referrals", json=request)
    assert response.status_code == 200, response.text  # SW's documented answer
    created = response.json()
    assert (created["status"], created.get("substatus")) == (
        request.get("status", "Active"),
        request.get("substatus", "Accepted"),
    ), "the sandbox keeps what a create sends"
    assert created["details"]["dealValue"] == request["details"]["dealValue"]


def test_the_sandbox_can_answer_a_create_as_cr20_shows(sandbox: SandboxCore) -> None:
    sandbox.settings(create_status="accept")
    created = sandbox.http.post(
        "/v1.0/engagements/referrals", json=published("cr20_create")["request"]
    ).json()
    assert (created["status"], created["substatus"]) == ("Active", "Accepted")


@pytest.mark.parametrize("index", range(4))
def test_the_sandbox_accepts_the_published_patches_in_strict_mode(
    sandbox: SandboxCore, index: int
) -> None:
    sandbox.settings(strict=True)
    deal = sandbox.http.post(
        "/v1.0/engagements/referrals", json=published("cr20_create")["request"]
    ).json()
    sandbox.http.patch(
        f"/v1.0/engagements/referrals/{deal['id']}",
        json=[
            {"op": "replace", "path": "/status", "value": "Active"},
            {"op": "replace", "path": "/substatus", "value": "Accepted"},
        ],
    ).raise_for_status()
    patch = published("pa20_patch")["patches"][index]
    headers = {"Prefer": patch["prefer"]} if patch["prefer"] else {}
    answer = sandbox.http.patch(
        f"/v1.0/engagements/referrals/{deal['id']}", json=patch["ops"], headers=headers
    )
    assert answer.status_code == (200 if patch["prefer"] else 204), answer.text
    after = sandbox.http.get(f"/v1.0/engagements/referrals/{deal['id']}").json()
    for op in patch["ops"]:
        if op["path"] == "/details/dealValue":
            assert after["details"]["dealValue"] == 10000  # the string form, kept as a number
        if op["path"] == "/team/-":
            assert after["team"][-1]["email"] == op["value"]["email"]
        if op["path"] == "/substatus":
            assert after["substatus"] == op["value"]


def documented_queries() -> list[dict[str, str]]:
    gl19 = published("gl19_list")
    queries = [{"$filter": f} for f in gl19["filters"]] + [{"$orderby": o} for o in gl19["orderby"]]
    return queries + published("gl20_list")["queries"] + [{"$skip": "1", "$count": "true"}]


@pytest.mark.parametrize("query", documented_queries())
def test_the_sandbox_answers_every_documented_query(
    sandbox: SandboxCore, query: dict[str, str]
) -> None:
    sandbox.http.post("/_sandbox/core/incoming", json={"from": "Microsoft"}).raise_for_status()
    sandbox.http.post(
        "/v1.0/engagements/referrals", json=published("cr20_create")["request"]
    ).raise_for_status()
    answer = sandbox.http.get("/v1.0/engagements/referrals", params=query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) <= {"@odata.context", "@odata.count", "value", "@odata.nextLink"}
    assert body["@odata.count"] == len(body["value"])


def test_the_sandbox_filters_as_the_samples_describe(sandbox: SandboxCore) -> None:
    incoming = sandbox.http.post(
        "/_sandbox/core/incoming",
        json={"from": "Microsoft", "customerProfile": {"address": {"country": "US"}}},
    ).json()

    def ids(**query: str) -> set[str]:
        value = sandbox.http.get("/v1.0/engagements/referrals", params=query).json()["value"]
        return {r["id"] for r in value}

    assert incoming["id"] in ids(
        **{"$filter": "customerProfile/address/country eq 'US' and direction eq 'Incoming'"}
    )
    assert incoming["id"] in ids(
        **{"$top": "10", "$filter": "(direction eq 'Incoming' and substatus eq 'Pending')"}
    )
    by_engagement = ids(**{"$filter": f"engagementId eq {incoming['engagementId']}"})
    assert incoming["id"] in by_engagement and len(by_engagement) == 2  # with Microsoft's


# ── the sandbox answers in the published shapes ───────────────────────────────────────


def documented_keys() -> set[str]:
    """Every top-level key a published body or a real answer shows, and SW's."""
    keys = set(SW["referral_properties"])
    for _, body in published_referrals():
        keys |= set(body)
    return keys


def test_the_sandbox_emits_no_field_the_real_api_lacks(sandbox: SandboxCore) -> None:
    sandbox.http.post("/_sandbox/core/incoming", json={"from": "Microsoft"}).raise_for_status()
    sandbox.http.post("/_sandbox/core/incoming", json={"from": "Partner"}).raise_for_status()
    for sample in ("cr19_create", "cr20_create", "live_cr_private"):
        sandbox.http.post(
            "/v1.0/engagements/referrals", json=published(sample)["request"]
        ).raise_for_status()
    allowed = documented_keys()
    everything = sandbox.everything()
    assert len(everything) == 6  # two incoming, Microsoft's side of one, three creates
    for referral in everything:
        assert set(referral) <= allowed, set(referral) - allowed
        assert "owner" not in referral and "registrationEligible" not in referral
        for target in referral["target"]:
            assert target["type"] in DOCUMENTED_TARGET_TYPES


def test_the_sandboxs_pages_have_the_published_form(sandbox: SandboxCore) -> None:
    sandbox.settings(page_size=1)
    for _ in range(2):
        sandbox.http.post("/_sandbox/core/incoming", json={"from": "Partner"}).raise_for_status()
    page = sandbox.http.get("/v1.0/engagements/referrals").json()
    host = sandbox.url.removeprefix("https://")
    gl20 = published("gl20_list")["response"]
    assert page["@odata.context"] == gl20["@odata.context"].replace(
        "api.partner.microsoft.com", host
    )
    prefix = gl20["@odata.nextLink"].split("$skiptoken=")[0]
    assert page["@odata.nextLink"].startswith(prefix.replace("api.partner.microsoft.com", host))


def test_the_client_pages_through_the_sandbox_by_its_published_links(
    sandbox: SandboxCore,
) -> None:
    sandbox.settings(page_size=2, strict=True)
    for _ in range(5):
        sandbox.http.post("/_sandbox/core/incoming", json={"from": "Partner"}).raise_for_status()
    with sandbox.trusting() as http:
        listed = list(sandbox.client(http).list_changed(None))
    assert len({r.id for r in listed}) == len(listed) == 5


# ── the connector sends only documented shapes ────────────────────────────────────────


def test_the_patch_paths_are_exactly_the_certified_connectors() -> None:
    assert set(SW["patch_paths"]) | set(SW["registration_paths"]) == PATCHABLE_PATHS
    assert set(SW["patch_ops"]) == {"add", "replace"}


def draft(**changes: Any) -> DealDraft:
    base = DealDraft(
        crm_id="006Contract",
        name="Contract deal",
        value=Decimal(50000),
        currency="USD",
        close_date=date(2026, 12, 1),
        customer=Customer(
            "Contoso", "US", city="Redmond", contacts=(Contact("Sue", "Smith", "1", "s@c.example"),)
        ),
        team=(Contact("John", "Doe", "2", "j@p.example"),),
        solutions=("SOL-34104-EBB",),
        stage=StandardStage.QUALIFIED,
    )
    return replace(base, **changes)


class Link:
    """A link as the store keeps one after a create (the planner's view of it)."""

    def __init__(self, action: Create) -> None:
        self.referral_id = "r-1"
        self.fingerprint = action.fingerprint
        self.sent_body = action.body
        self.status, self.substatus = action.body["status"], action.body["substatus"]
        self.direction = "Outgoing"
        self.core_facts = {"microsoft_referral_id": "ms-1" if action.invite_microsoft else None}


CHANGES: list[dict[str, Any]] = [
    {"value": Decimal(7)},
    {"name": "Renamed"},
    {"stage": StandardStage.PROPOSED},
    {"stage": StandardStage.WON},
    {"stage": StandardStage.LOST},
    {"deal_type": DealType.CO_SELL, "assistance_code": "QuotesOrLicensing"},
    {"deal_type": DealType.PRIVATE},
    {"partners": ("P-1",), "deal_type": DealType.PARTNER_TO_PARTNER},
    {"team": (Contact("Ann", "Lee", "3", "a@p.example"),), "notes": "n", "campaign_id": "c"},
    {"customer": Customer("Fabrikam", "GB", city="London")},
    {"solutions": ("SOL-1", "SOL-2"), "close_date": date(2027, 1, 1)},
]


@pytest.mark.parametrize(
    "options",
    [
        CoreOptions(),
        CoreOptions(co_sell_mode="consent_only"),
        CoreOptions(sales_stage_format="name"),
    ],
)
@pytest.mark.parametrize("start", [DealType.PRIVATE, DealType.CO_SELL])
def test_the_connector_sends_only_documented_shapes(options: CoreOptions, start: DealType) -> None:
    first = draft(deal_type=start, assistance_code="GeneralOrOther" if start.value else None)
    created = plan_outbound(first, None, options)
    assert isinstance(created, Create)
    bodies = [created.body]
    if created.invite_microsoft:
        bodies.append(microsoft_referral_body(created.body, "e-1"))
    for change in CHANGES:
        action = plan_outbound(replace(first, **change), Link(created), options)
        if isinstance(action, Update):
            assert {op["path"] for op in action.ops} <= set(SW["patch_paths"])
            assert {op["op"] for op in action.ops} <= set(SW["patch_ops"])
            stage = [op["value"] for op in action.ops if op["path"] == "/salesStage"]
            assert all(
                s in (*SW["enums"]["salesStage"], "20", "40", "60", "80", "100") for s in stage
            )
            if action.invite_microsoft:
                bodies.append(microsoft_referral_body(action.body, "e-1"))
    for body in bodies:
        for target in body["target"]:
            assert target["type"] in DOCUMENTED_TARGET_TYPES
        assert set(body) <= set(SW["referral_properties"])
        code = (body.get("inviteContext") or {}).get("assistanceRequestCode")
        assert code is None or code in SW["enums"]["inviteContext.assistanceRequestCode"]


def test_the_co_sell_flow_against_the_strict_sandbox(sandbox: SandboxCore) -> None:
    """CR20's two steps through the client, the sandbox refusing anything undocumented
    and inviting Microsoft only through the second referral."""
    sandbox.settings(strict=True, consent_invites_microsoft=False)
    co_sell = draft(
        crm_id=f"006-{uuid.uuid4().hex[:8]}",
        deal_type=DealType.CO_SELL,
        assistance_code="ProofOfConceptOrDemo",
    )
    action = plan_outbound(co_sell, None)
    assert isinstance(action, Create) and action.invite_microsoft
    with sandbox.trusting() as http:
        core = sandbox.client(http)
        ours = core.create(action.body)
        assert ours.engagement_id and ours.status == Status.ACTIVE
        body = microsoft_referral_body(action.body, ours.engagement_id)
        microsoft = core.invite_microsoft(ours.engagement_id, body)
        again = core.invite_microsoft(ours.engagement_id, body)
    assert again.id == microsoft.id
    engaged = [r for r in sandbox.everything() if r["engagementId"] == ours.engagement_id]
    assert len(engaged) == 2
    side = next(r for r in engaged if r["id"] == microsoft.id)
    assert side["organizationName"] == "Microsoft"
    assert side["target"] == published("cr20_create")["shared_referral_targets"]["for_microsoft"]
    assert side["inviteContext"]["assistanceRequestCode"] == "ProofOfConceptOrDemo"
    ours_now = next(r for r in engaged if r["id"] == ours.id)
    assert [t["type"] for t in ours_now["target"]] == ["SolutionProfile"]
