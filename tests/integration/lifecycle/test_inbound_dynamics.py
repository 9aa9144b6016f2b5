"""Incoming deals end to end for Dynamics 365 (Dataverse sandbox): received, accepted,
declined and expired, as the seed's "Responding to a co-sell opportunity" describes."""

from __future__ import annotations

from decimal import Decimal

from lifecycle_world import DynamicsWorld


def test_incoming_deals_round_trip_through_dataverse(dynamics: DynamicsWorld) -> None:
    accepted = dynamics.send_incoming("Microsoft")
    declined = dynamics.send_incoming("Partner")
    expired = dynamics.send_incoming("Microsoft")
    dynamics.sync()
    # received: one row per referral, on hold, with the days left before expiry
    for incoming in (accepted, declined, expired):
        row = dynamics.row_for(incoming["id"])
        assert row["name"] == incoming["name"]
        assert Decimal(str(row["estimatedvalue"])) == Decimal(str(incoming["details"]["dealValue"]))
        assert row["cosell_status"] == "New/Pending"
        assert row["cosell_direction"] == "Incoming"
        assert row["cosell_daystoexpiry"] == 14
        assert row["salesstage"] == 0  # Qualify: the mapping's "on hold" stage
        assert row["cosell_syncwithpartnercenter"] is True
    dynamics.sync()
    assert len([r for r in dynamics.rows() if r.get("cosell_referralid") == accepted["id"]]) == 1
    # accepted (the action column) and declined (with a reason)
    dynamics.edit_row(dynamics.row_for(accepted["id"])["opportunityid"], cosell_action=1)
    dynamics.edit_row(
        dynamics.row_for(declined["id"])["opportunityid"],
        cosell_action=2,
        cosell_declinereason=3,  # "Outside our region", picked from the choice column
    )
    dynamics.sync()
    referral = dynamics.referral(accepted["id"])
    assert (referral["status"], referral["substatus"]) == ("Active", "Accepted")
    assert referral["details"]["currency"] == accepted["details"]["currency"]
    assert referral["customerProfile"]["name"] == accepted["customerProfile"]["name"]
    row = dynamics.row_for(accepted["id"])
    assert row["cosell_status"] == "Active/Accepted"
    assert not row.get("cosell_syncerror"), row.get("cosell_syncerror")
    referral = dynamics.referral(declined["id"])
    assert (referral["substatus"], referral["statusReason"]) == ("Declined", "Outside our region")
    assert dynamics.row_for(declined["id"])["cosell_status"] == "Closed/Declined"
    # expired: unanswered for 14 days
    dynamics.advance(15)
    dynamics.sync()
    assert dynamics.row_for(expired["id"])["cosell_status"] == "Closed/Expired"
    assert dynamics.referral(expired["id"])["substatus"] == "Expired"
