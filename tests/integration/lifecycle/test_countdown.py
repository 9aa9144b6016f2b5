"""The days left before a deal expires follow the core's clock, day by day (issue 20).

The sandbox's clock moves one day at a time; every day runs two cycles. The days left
on an incoming deal (still New) and on a co-sell deal whose Microsoft referral waits for
an answer must count down with it, written once a day per record, and a second cycle on
the same day must write nothing at all.
"""

from __future__ import annotations

from seller import Seller

CO_SELL = {"help": "Proof of Concept or Demo"}


def test_days_to_expiry_count_down_with_one_write_per_record_per_day(seller: Seller) -> None:
    world = seller.world
    world.core_settings(consent_invites_microsoft=False)
    incoming = world.send_incoming("Partner")
    invited = seller.new_deal(**CO_SELL)
    world.sync()
    received = seller.record_for(incoming["id"])
    deals = (received, invited)
    for crm_id in deals:
        assert seller.get(crm_id, "days") == 14
    for day in range(1, 14):
        world.advance(1)
        before = {crm_id: seller.version(crm_id) for crm_id in deals}
        world.reset_stats()
        world.sync()
        first = seller.write_calls()
        after_first = {crm_id: seller.version(crm_id) for crm_id in deals}
        world.reset_stats()
        world.sync()  # the same day again: nothing to write
        assert seller.write_calls() == 0, f"day {day}: a second cycle wrote to the CRM"
        for crm_id in deals:
            assert seller.get(crm_id, "days") == 14 - day, (day, crm_id)
            assert seller.version(crm_id) == after_first[crm_id], "written twice in a day"
            assert after_first[crm_id] != before[crm_id], "the day's value was not written"
        assert first == 1, f"day {day}: {first} write calls for one batch of two records"
    # the incoming deal expires unanswered; Microsoft's invitation too
    world.advance(1)
    world.sync()
    assert seller.get(received, "status") == "Closed/Expired"
    assert seller.get(received, "days") is None
    assert seller.get(invited, "microsoft_status") == "Closed/Expired"
    assert seller.get(invited, "days") is None


def test_a_day_without_a_change_costs_no_crm_call_after_its_first_cycle(seller: Seller) -> None:
    """The countdown's cost: the first cycle of a day writes the day's values in one batch
    (the next cycle reads their echo back, as after any status write, and writes nothing);
    every later cycle of the day calls the CRM exactly as a cycle with no countdown."""
    world = seller.world
    world.sync()
    world.sync()
    world.reset_stats()
    world.sync()
    idle = world.calls().get(seller.api, {})
    world.send_incoming("Microsoft")
    world.sync()
    world.sync()
    world.advance(1)
    world.reset_stats()
    world.sync()  # the first cycle of the day writes the new value
    assert seller.write_calls() == 1
    world.reset_stats()
    world.sync()  # reads the echo of that write
    assert seller.write_calls() == 0
    for _ in range(3):
        world.reset_stats()
        world.sync()
        assert world.calls().get(seller.api, {}) == idle
