"""An incoming deal's opportunity points at the customer's account and contact, found
or created, never twice (issue 20), in both CRMs."""

from __future__ import annotations

from typing import Any

from seller import Seller


def profile(name: str, email: str, **address: str) -> dict[str, Any]:
    return {
        "customerProfile": {
            "name": name,
            "address": {
                "addressLine1": "1 Hafenstrasse",
                "city": "Hamburg",
                "state": "",
                "postalCode": "20457",
                "country": "DE",
                **address,
            },
            "team": [
                {
                    "firstName": "Lena",
                    "lastName": "Vogel",
                    "phoneNumber": "+49 40 1",
                    "email": email,
                }
            ],
        }
    }


def test_a_new_customer_gets_one_account_and_one_contact(seller: Seller) -> None:
    world = seller.world
    first = world.send_incoming("Microsoft", **profile("Hafen Logistik GmbH", "lena@hafen.example"))
    second = world.send_incoming("Partner", **profile("HAFEN  Logistik GmbH", "Lena@Hafen.example"))
    world.sync()
    accounts = seller.rows("accounts", name="Hafen Logistik GmbH")
    assert len(accounts) == 1, "one customer, one account, even for two deals in one batch"
    account = accounts[0]
    assert (account["country"], account["city"], account["postal_code"]) == (
        "DE",
        "Hamburg",
        "20457",
    )
    (contact,) = seller.rows("contacts", email="lena@hafen.example")
    assert (contact["first_name"], contact["last_name"]) == ("Lena", "Vogel")
    assert str(contact["account"]).lower() == str(account["id"]).lower()
    for incoming in (first, second):
        crm_id = seller.record_for(incoming["id"])
        assert str(seller.get(crm_id, "account")).lower() == str(account["id"]).lower()
        assert str(seller.get(crm_id, "contact")).lower() == str(contact["id"]).lower()
    # a later deal for the same customer finds them: nothing is created again
    third = world.send_incoming("Microsoft", **profile("Hafen Logistik GmbH", "lena@hafen.example"))
    world.sync()
    assert len(seller.rows("accounts", name="Hafen Logistik GmbH")) == 1
    assert len(seller.rows("contacts", email="lena@hafen.example")) == 1
    crm_id = seller.record_for(third["id"])
    assert str(seller.get(crm_id, "account")).lower() == str(account["id"]).lower()


def test_an_existing_account_is_matched_by_name_and_address(seller: Seller) -> None:
    world = seller.world
    known = next(
        a
        for a in seller.rows("accounts")
        if a.get("country") and a.get("city") and len(seller.rows("accounts", name=a["name"])) == 1
    )
    incoming = world.send_incoming(
        "Microsoft",
        **profile(
            known["name"],
            "new.person@customer.example",
            country=known["country"],
            city=known["city"],
            postalCode=known.get("postal_code") or "",
        ),
    )
    # the same name in another country is another customer
    elsewhere = world.send_incoming(
        "Microsoft", **profile(known["name"], "x@elsewhere.example", country="JP", city="Tokyo")
    )
    world.sync()
    crm_id = seller.record_for(incoming["id"])
    assert str(seller.get(crm_id, "account")).lower() == str(known["id"]).lower()
    other = seller.get(seller.record_for(elsewhere["id"]), "account")
    assert other and str(other).lower() != str(known["id"]).lower()
    namesakes = seller.rows("accounts", name=known["name"])
    assert {a["country"] for a in namesakes} == {known["country"], "JP"}, "only Japan's is new"
    # accepting the deal sends nothing about the customer (the sender owns it) and says nothing
    seller.accept(crm_id)
    world.sync()
    assert world.referral(incoming["id"])["status"] == "Active"
    assert not seller.get(crm_id, "error")


def test_with_matching_only_nothing_is_created(seller: Seller) -> None:
    seller.edit_mapping(
        "customer: {account: match_or_create, contact: match_or_create}",
        "customer: {account: match, contact: match}",
    )
    world = seller.world
    incoming = world.send_incoming("Microsoft", **profile("Nowhere Ltd", "a@nowhere.example"))
    world.sync()
    crm_id = seller.record_for(incoming["id"])
    assert not seller.get(crm_id, "account") and not seller.get(crm_id, "contact")
    assert seller.rows("accounts", name="Nowhere Ltd") == []
