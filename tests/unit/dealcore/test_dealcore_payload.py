"""referral_body / sendable / patch_ops / created_differences / status_ops / parse_referral."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from dealcore_fakes import make_draft, sample_referral

from connector.dealcore.options import CoreOptions
from connector.dealcore.payload import (
    PATCHABLE_PATHS,
    created_differences,
    microsoft_referral_body,
    parse_referral,
    patch_ops,
    referral_body,
    referral_link,
    sendable,
    status_ops,
)
from connector.errors import CoreError
from connector.model import (
    Contact,
    DealType,
    StandardStage,
    Status,
    Substatus,
)


def as_created(body: dict[str, Any], **server_fields: Any) -> dict[str, Any]:
    """What a server answers to a create of ``body``: the body plus its own fields."""
    return {
        **body,
        "id": "r-1",
        "engagementId": "e-1",
        "eTag": '"1"',
        "status": "Active",
        "substatus": "Accepted",
        "direction": "Outgoing",
        "updatedDateTime": "2026-02-23T02:05:23Z",
        **server_fields,
    }


# ── referral_body ──────────────────────────────────────────────────────────


#: RR's target types ("Partner" is documented nowhere)
DOCUMENTED_TARGET_TYPES = {"None", "BusinessProfileLocation", "SolutionProfile"}
NAMES = CoreOptions(sales_stage_format="name")
CONSENT_ONLY = CoreOptions(co_sell_mode="consent_only")


def test_co_sell_body_follows_the_reference() -> None:
    body = referral_body(make_draft())
    assert body["type"] == "Shared"
    assert body["externalReferenceId"] == "006Ax00000ABCDe"
    assert body["name"] == "Contoso – Azure migration"
    assert (body["status"], body["substatus"], body["salesStage"]) == ("Active", "Accepted", "40")
    # CR20's shared referral: the partner's solution profile as its target
    assert body["target"] == [{"type": "SolutionProfile", "id": "SOL-34104-EBB"}]
    assert body["campaignId"] == "SPRING-26"
    assert body["consent"] == {
        "consentToToShareInfoWithOthers": True,
        "consentToContact": True,
        "consentToShareReferralWithMicrosoftSellers": True,
    }
    assert body["inviteContext"] == {"assistanceRequestCode": "ProofOfConceptOrDemo"}
    details = body["details"]
    assert details["dealValue"] == 50000 and isinstance(details["dealValue"], int)
    assert details["currency"] == "USD"
    assert details["closingDateTime"] == "2026-11-14T00:00:00Z"
    assert details["notes"] == "Need a POC"
    assert details["requirements"] == {"solutions": [{"id": "SOL-34104-EBB", "type": "Name"}]}
    assert body["customerProfile"]["address"] == {
        "city": "Redmond",
        "state": "WA",
        "postalCode": "98052",
        "country": "US",
    }
    assert body["customerProfile"]["team"] == [
        {
            "firstName": "Sue",
            "lastName": "Smith",
            "phoneNumber": "+1 425 555 0100",
            "email": "sue@contoso.com",
        }
    ]
    assert body["team"][0]["email"] == "john@partner.example"
    json.dumps(body)  # serialisable as is: no Decimal, no date


def test_private_body_is_independent_and_shares_nothing() -> None:
    body = referral_body(make_draft(deal_type=DealType.PRIVATE, assistance_code=None))
    assert body["type"] == "Independent"
    assert "inviteContext" not in body
    assert body["consent"]["consentToShareReferralWithMicrosoftSellers"] is False
    assert body["consent"]["consentToToShareInfoWithOthers"] is False


def test_partner_to_partner_is_sent_without_any_partner_target() -> None:
    """No documented target type names a partner organisation: nobody is invited."""
    body = referral_body(make_draft(deal_type=DealType.PARTNER_TO_PARTNER, partners=("P-1",)))
    assert body["type"] == "Independent" and body["target"] == []
    assert body["consent"]["consentToShareReferralWithMicrosoftSellers"] is False
    assert "inviteContext" not in body


@pytest.mark.parametrize("options", [CoreOptions(), CONSENT_ONLY, NAMES])
@pytest.mark.parametrize("deal_type", list(DealType))
def test_every_body_uses_documented_target_types_only(
    deal_type: DealType, options: CoreOptions
) -> None:
    draft = make_draft(deal_type=deal_type, partners=("P-1", "P-2"))
    body = referral_body(draft, options)
    targets = [*body["target"], *microsoft_referral_body(body, "e-1")["target"]]
    assert {t["type"] for t in targets} <= DOCUMENTED_TARGET_TYPES
    assert "P-1" not in json.dumps(body)


def test_consent_only_co_sell_has_no_target() -> None:
    body = referral_body(make_draft(), CONSENT_ONLY)
    assert body["target"] == [] and body["inviteContext"]["assistanceRequestCode"]
    assert body["consent"]["consentToShareReferralWithMicrosoftSellers"] is True


def test_the_referral_for_microsoft_is_cr20s_second_step() -> None:
    own = referral_body(make_draft())
    body = microsoft_referral_body(own, "37ef26aa-0000")
    assert body["engagementId"] == "37ef26aa-0000"
    assert body["type"] == "Shared"
    assert body["target"] == [{"type": "BusinessProfileLocation", "id": "msft"}]
    # the CRM record's id stays on the partner's referral; answering is Microsoft's
    for key in ("externalReferenceId", "status", "substatus", "salesStage"):
        assert key not in body
    assert body["inviteContext"] == own["inviteContext"]
    assert body["details"] == own["details"]


@pytest.mark.parametrize(
    ("stage", "percent", "name"),
    [
        (StandardStage.CREATED, "10", None),
        (StandardStage.QUALIFIED, "20", "Qualify"),
        (StandardStage.DEVELOPED, "40", "Develop"),
        (StandardStage.PROPOSED, "60", "Propose"),
        (StandardStage.NEGOTIATED, "80", "Close"),
        (StandardStage.WON, "100", "Close"),
    ],
)
def test_sales_stage_in_either_format(stage: StandardStage, percent: str, name: str | None) -> None:
    assert referral_body(make_draft(stage=stage))["salesStage"] == percent
    assert referral_body(make_draft(stage=stage), NAMES).get("salesStage") == name


def test_a_won_deal_is_created_closed_won() -> None:
    body = referral_body(make_draft(stage=StandardStage.WON))
    assert (body["status"], body["substatus"]) == ("Closed", "Won")


def test_co_sell_without_code_asks_for_general_help() -> None:
    body = referral_body(make_draft(assistance_code=None))
    assert body["inviteContext"]["assistanceRequestCode"] == "GeneralOrOther"


def test_fractional_deal_value_is_a_json_number() -> None:
    body = referral_body(make_draft(value=Decimal("1234.56")))
    assert json.loads(json.dumps(body))["details"]["dealValue"] == 1234.56


def test_lost_sends_no_sales_stage_and_won_sends_100() -> None:
    assert "salesStage" not in referral_body(make_draft(stage=StandardStage.LOST))
    assert referral_body(make_draft(stage=StandardStage.WON))["salesStage"] == "100"


def test_optional_fields_are_left_out() -> None:
    body = referral_body(make_draft(notes=None, campaign_id=None))
    assert "notes" not in body["details"] and "campaignId" not in body


# ── round trip ─────────────────────────────────────────────────────────────


def test_round_trip_body_to_state() -> None:
    draft = make_draft()
    state = parse_referral(json.loads(json.dumps(as_created(referral_body(draft)))))
    assert state.id == "r-1" and state.engagement_id == "e-1" and state.etag == '"1"'
    assert state.external_reference_id == draft.crm_id
    assert state.name == draft.name
    assert state.sales_stage == draft.stage.percent
    assert state.deal_type == DealType.CO_SELL
    assert state.status == Status.ACTIVE and state.substatus == Substatus.ACCEPTED
    assert state.updated == datetime(2026, 2, 23, 2, 5, 23, tzinfo=UTC)
    assert not state.is_terminal


@pytest.mark.parametrize(
    ("deal_type", "sent_as"),
    [
        (DealType.PRIVATE, DealType.PRIVATE),
        (DealType.CO_SELL, DealType.CO_SELL),
        (DealType.PARTNER_TO_PARTNER, DealType.PRIVATE),  # no partner can be invited
    ],
)
def test_round_trip_keeps_the_deal_type(deal_type: DealType, sent_as: DealType) -> None:
    state = parse_referral(as_created(referral_body(make_draft(deal_type=deal_type))))
    assert state.deal_type == sent_as


def test_round_trip_body_against_itself_needs_no_patch() -> None:
    body = referral_body(make_draft())
    assert patch_ops(as_created(body), body) == []


# ── patch_ops ──────────────────────────────────────────────────────────────


def test_unchanged_gives_no_ops() -> None:
    assert patch_ops(referral_body(make_draft()), referral_body(make_draft())) == []


def test_one_changed_value_gives_one_replace() -> None:
    old = referral_body(make_draft())
    new = referral_body(make_draft(value=Decimal("75000")))
    assert patch_ops(old, new) == [{"op": "replace", "path": "/details/dealValue", "value": 75000}]


def test_several_changes_each_give_one_op() -> None:
    old = referral_body(make_draft())
    new = referral_body(
        make_draft(
            stage=StandardStage.PROPOSED,
            close_date=date(2026, 12, 1),
            name="Renamed",  # not patchable: left to sendable()
            solutions=("SOL-1", "SOL-2"),
        )
    )
    ops = {op["path"]: op for op in patch_ops(old, new)}
    assert set(ops) == {
        "/salesStage",
        "/details/closingDateTime",
        "/details/requirements/solutions",
    }
    assert ops["/salesStage"]["value"] == "60"
    assert ops["/details/closingDateTime"]["value"] == "2026-12-01T00:00:00Z"
    assert ops["/details/requirements/solutions"] == {
        "op": "replace",
        "path": "/details/requirements/solutions",
        "value": [{"id": "SOL-1", "type": "Name"}, {"id": "SOL-2", "type": "Name"}],
    }


def test_team_change_replaces_the_whole_array() -> None:
    old = referral_body(make_draft())
    new_team = (Contact("Ann", "Lee", "+1", "ann@partner.example"),)
    ops = patch_ops(old, referral_body(make_draft(team=new_team)))
    assert ops == [
        {
            "op": "replace",
            "path": "/team",
            "value": [
                {
                    "firstName": "Ann",
                    "lastName": "Lee",
                    "phoneNumber": "+1",
                    "email": "ann@partner.example",
                }
            ],
        }
    ]


def test_equal_meanings_in_another_form_are_not_changes() -> None:
    new = referral_body(make_draft())
    old = json.loads(json.dumps(new))
    old["details"]["dealValue"] = "50000.00"  # numeric string
    old["salesStage"] = 40  # number
    old["details"]["closingDateTime"] = "2026-11-14T00:00:00.0000000Z"
    old["team"][0]["id"] = "member-7"  # the core's own extra field
    old["details"]["requirements"]["solutions"].reverse()
    assert patch_ops(old, new) == []


def test_upgrade_to_co_sell_patches_the_consent_only() -> None:
    """/inviteContext, /type and /target are not patchable: the consent is."""
    old = referral_body(make_draft(deal_type=DealType.PRIVATE, assistance_code=None))
    body, left_out = sendable(old, referral_body(make_draft(deal_type=DealType.CO_SELL)))
    assert patch_ops(old, body) == [
        {
            "op": "replace",
            "path": "/consent/consentToShareReferralWithMicrosoftSellers",
            "value": True,
        },
    ]
    assert (body["type"], body["target"], body["inviteContext"]) == ("Independent", [], None)
    assert left_out == ["the help asked of Microsoft"]


def test_sendable_keeps_what_a_create_fixes_and_names_it() -> None:
    old = referral_body(make_draft())
    wanted = referral_body(make_draft(name="Renamed", value=Decimal(9)))
    wanted["customerProfile"]["name"] = "Renamed customer"
    wanted["customerProfile"]["address"]["city"] = "Seattle"
    body, left_out = sendable(old, wanted)
    assert left_out == ["the deal name", "the customer's name", "the customer's address"]
    assert body["name"] == old["name"]
    assert body["customerProfile"]["name"] == old["customerProfile"]["name"]
    assert body["customerProfile"]["address"] == old["customerProfile"]["address"]
    assert patch_ops(old, body) == [{"op": "replace", "path": "/details/dealValue", "value": 9}]
    assert sendable(old, old) == (old, [])


def test_sendable_compares_a_core_body_on_the_keys_the_connector_sends() -> None:
    """An incoming deal's base is the core's body: its extra keys are not changes."""
    wanted = referral_body(make_draft())
    core = json.loads(json.dumps(wanted))
    core["customerProfile"]["address"]["addressLine2"] = ""
    core["customerProfile"]["address"]["region"] = None
    core["inviteContext"]["invitedBy"] = {"organizationId": "msft"}
    assert sendable(core, wanted)[1] == []


def test_sharing_with_microsoft_is_never_undone() -> None:
    old = referral_body(make_draft(deal_type=DealType.CO_SELL))
    new = referral_body(make_draft(deal_type=DealType.PRIVATE))
    assert patch_ops(old, new) == []


def test_cleared_notes_are_replaced_with_null_but_a_lost_stage_is_not_sent() -> None:
    old = referral_body(make_draft())
    new = referral_body(make_draft(notes=None, stage=StandardStage.LOST))
    assert patch_ops(old, new) == [{"op": "replace", "path": "/details/notes", "value": None}]


def test_new_notes_are_added_when_the_old_body_had_none() -> None:
    old = referral_body(make_draft(notes=None))
    new = referral_body(make_draft(notes="hello"))
    assert patch_ops(old, new) == [{"op": "add", "path": "/details/notes", "value": "hello"}]


def test_only_the_certified_connectors_paths_are_patched() -> None:
    allowed = PATCHABLE_PATHS
    assert not {"/name", "/inviteContext", "/target/-"} & allowed
    old = referral_body(make_draft(deal_type=DealType.PRIVATE))
    changed = make_draft(
        crm_id="other",
        name="x",
        value=Decimal(1),
        currency="EUR",
        close_date=date(2030, 1, 1),
        team=(),
        solutions=("S",),
        stage=StandardStage.NEGOTIATED,
        notes="n",
        campaign_id="c",
    )
    new = referral_body(changed)
    new["customerProfile"]["name"] = "Renamed customer"  # not patchable: ignored
    new["customerProfile"]["team"] = []
    new["type"] = "Shared"
    new["target"] = [{"type": "SolutionProfile", "id": "S"}]
    new["inviteContext"] = {"assistanceRequestCode": "QuotesOrLicensing"}
    ops = patch_ops(old, new)
    assert {op["path"] for op in ops} <= allowed
    assert {op["op"] for op in ops} <= {"replace", "add"}
    assert len(ops) == len({op["path"] for op in ops})
    closing = status_ops(Status.CLOSED, Substatus.DECLINED, "why")
    assert {op["path"] for op in closing} <= allowed


# ── created_differences ────────────────────────────────────────────────────


def test_a_core_that_keeps_what_it_is_sent_needs_no_second_write() -> None:
    body = referral_body(make_draft(stage=StandardStage.WON))
    assert created_differences(body, as_created(body, status="Closed", substatus="Won")) == []


def test_cr20s_answer_is_brought_to_what_was_sent() -> None:
    """CR20: a New/Pending create answered Active/Accepted, without closingDateTime."""
    body = referral_body(make_draft())
    body["status"], body["substatus"] = "New", "Pending"
    returned = as_created(json.loads(json.dumps(body)), externalReferenceId=None, salesStage=None)
    del returned["details"]["closingDateTime"]
    ops = {op["path"]: op["value"] for op in created_differences(body, returned)}
    assert ops == {
        "/externalReferenceId": "006Ax00000ABCDe",
        "/salesStage": "40",
        "/details/closingDateTime": "2026-11-14T00:00:00Z",
        "/status": "New",
        "/substatus": "Pending",
    }


def test_a_referral_created_closed_is_never_patched() -> None:
    body = referral_body(make_draft())
    returned = as_created(body, status="Closed", substatus="Won", salesStage=None)
    assert created_differences(body, returned) == []


def test_status_ops() -> None:
    assert status_ops(Status.CLOSED, Substatus.WON) == [
        {"op": "replace", "path": "/status", "value": "Closed"},
        {"op": "replace", "path": "/substatus", "value": "Won"},
        {"op": "replace", "path": "/salesStage", "value": "100"},
    ]
    declined = status_ops(Status.CLOSED, Substatus.DECLINED, "Not a fit")
    assert declined[-1] == {"op": "replace", "path": "/statusReason", "value": "Not a fit"}
    named = status_ops(Status.CLOSED, Substatus.WON, stage_format="name")
    assert named[-1] == {"op": "replace", "path": "/salesStage", "value": "Close"}


# ── parse_referral ─────────────────────────────────────────────────────────


def test_parse_the_reference_example() -> None:
    state = parse_referral(sample_referral())
    assert state.id == "4111fffc-0000-0000-0000-000000000001"
    assert state.etag == '"00006d10-0000"'
    assert state.direction == "Outgoing"
    assert state.sales_stage == 40
    assert state.registration_status == "None"
    assert state.raw["someFutureField"] == {"ignored": True}


@pytest.mark.parametrize(
    ("stage", "percent"),
    [
        ("40", 40),
        (40, 40),
        (60.0, 60),
        ("Qualify", 20),
        ("develop", 40),
        ("Propose", 60),
        ("Close", 80),
        ("Bogus", None),
        (None, None),
    ],
)
def test_sales_stage_forms(stage: Any, percent: int | None) -> None:
    assert parse_referral(sample_referral(salesStage=stage)).sales_stage == percent


def test_minimal_referral_is_fine() -> None:
    state = parse_referral({"id": "r", "status": "New"})
    assert state.status == Status.NEW
    assert state.substatus is None and state.engagement_id is None and state.updated is None
    assert state.deal_type is None and state.direction == "Unknown"


def test_terminal_referral_with_seven_digit_fractions() -> None:
    state = parse_referral(
        sample_referral(
            status="Closed",
            substatus="Expired",
            updatedDateTime="2026-03-09T10:11:12.1234567Z",
            expirationDateTime="2026-03-09T00:00:00Z",
        )
    )
    assert state.is_terminal and state.substatus == Substatus.EXPIRED
    assert state.updated == datetime(2026, 3, 9, 10, 11, 12, 123456, tzinfo=UTC)
    assert state.expiration == datetime(2026, 3, 9, tzinfo=UTC)


def test_unparseable_dates_become_none() -> None:
    assert parse_referral(sample_referral(updatedDateTime="yesterday")).updated is None


@pytest.mark.parametrize(
    "data",
    [
        {"status": "Active"},
        {"id": "", "status": "Active"},
        {"id": 42, "status": "Active"},
        {"id": "r", "status": "Deleted"},
        ["not", "an", "object"],
    ],
)
def test_malformed_referrals_are_permanent_core_errors(data: Any) -> None:
    with pytest.raises(CoreError) as raised:
        parse_referral(data)
    assert raised.value.code == "malformed_referral" and not raised.value.transient


@pytest.mark.parametrize("status", ["None", None, ""])
def test_a_referral_whose_status_is_none_parses(status: Any) -> None:
    """RR's status enum starts with None; an unset status is not a broken referral."""
    state = parse_referral({"id": "r", "status": status})
    assert state.status == Status.NONE and not state.is_terminal
    assert parse_referral({"id": "r"}).status == Status.NONE


def test_referral_link() -> None:
    assert (
        referral_link("4111fffc")
        == "https://partner.microsoft.com/dashboard/referrals/v2/opportunities/4111fffc"
    )
    assert referral_link("a/b", base="https://pc.example/ref/") == "https://pc.example/ref/a%2Fb"
