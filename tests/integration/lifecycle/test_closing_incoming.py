"""Declined and expired incoming deals are closed lost in the CRM, as the mapping says
(``inbound.close``: Salesforce's Closed Lost stage, Dataverse's LoseOpportunity with
the Canceled status reason), with the reason, once, and nothing echoes (issue 20)."""

from __future__ import annotations

import pytest
from seller import Seller

LOST_AS = {"salesforce": "Closed Lost", "dynamics": "Canceled"}


def core_writes(seller: Seller) -> int:
    core = seller.world.calls().get("core", {})
    return int(core.get("POST", 0) + core.get("PATCH", 0))


@pytest.mark.parametrize("end", ["declined", "expired"])
def test_an_incoming_deal_that_ends_unworked_is_closed_lost_in_the_crm(
    seller: Seller, end: str
) -> None:
    world = seller.world
    incoming = world.send_incoming("Microsoft")
    world.sync()
    crm_id = seller.record_for(incoming["id"])
    assert seller.closed_lost_as(crm_id) is None
    if end == "declined":
        seller.decline(crm_id, "Not a fit")
    else:
        world.advance(15)
    world.sync()
    referral = world.referral(incoming["id"])
    assert referral["substatus"] == end.capitalize()
    assert seller.get(crm_id, "status") == f"Closed/{end.capitalize()}"
    assert seller.closed_lost_as(crm_id) == LOST_AS[seller.crm]
    assert seller.get(crm_id, "close_reason") == referral["statusReason"]
    assert not seller.get(crm_id, "error"), "the CRM agrees with the core: nothing to explain"
    # closed once: the next cycles read the echo and write nothing anywhere
    world.reset_stats()
    world.sync()
    world.sync()
    assert core_writes(seller) == 0 and seller.write_calls() == 0
    assert not seller.get(crm_id, "error")


def test_a_mapping_without_close_settings_leaves_the_record_open(seller: Seller) -> None:
    """The behaviour before the setting existed, for mappings that do not name it."""
    close = next(
        line for line in seller.mapping_path().read_text().splitlines() if "  close:" in line
    )
    seller.edit_mapping(close + "\n", "")
    world = seller.world
    incoming = world.send_incoming("Microsoft")
    world.sync()
    crm_id = seller.record_for(incoming["id"])
    seller.decline(crm_id, "Not a fit")
    world.sync()
    assert seller.get(crm_id, "status") == "Closed/Declined"
    assert seller.closed_lost_as(crm_id) is None
