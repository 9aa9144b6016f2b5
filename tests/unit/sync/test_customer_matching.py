"""Matching an incoming deal's customer to CRM accounts (connector.sync.customers, pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.crm.base import RelatedRow
from connector.mapping.load import load_mapping
from connector.sync.customers import (
    account_values,
    contact_values,
    customer_shape,
    matching_account,
)

ROOT = Path(__file__).parents[3]
SALESFORCE = load_mapping(ROOT / "mappings" / "salesforce.yaml")
DYNAMICS = load_mapping(ROOT / "mappings" / "dynamics.yaml")


def test_the_account_and_contact_are_where_the_mapping_reads_the_customer() -> None:
    account, contact = customer_shape(SALESFORCE)
    assert account is not None and contact is not None
    assert account.relation == "Account"
    assert dict(account.columns) == {
        "name": "Name",
        "country": "BillingCountryCode",
        "city": "BillingCity",
        "state": "BillingState",
        "postal_code": "BillingPostalCode",
        "address_line1": "BillingStreet",
    }
    assert contact.relation == "Primary_Contact__r" and contact.columns["email"] == "Email"
    account, contact = customer_shape(DYNAMICS)
    assert account is not None and account.relation == "parentaccountid"
    assert account.columns["country"] == "cosell_countrycode"
    assert contact is not None and contact.columns["email"] == "emailaddress1"


PROFILE = {
    "name": " Hafen  Logistik GmbH ",
    "address": {"country": "DE", "city": "Hamburg", "postalCode": "20457", "state": ""},
}


def row(ident: str, **values: str | None) -> RelatedRow:
    names = {"name": "Name", "country": "BillingCountryCode", "city": "BillingCity"}
    names["postal_code"] = "BillingPostalCode"
    return RelatedRow(ident, {names[k]: v for k, v in values.items()})


@pytest.mark.parametrize(
    ("candidates", "chosen"),
    [
        ([row("001B", name="HAFEN LOGISTIK GMBH", country="DE")], "001B"),
        ([row("001B", name="Hafen Logistik GmbH", country="JP")], None),
        ([row("001B", name="Hafen Logistik GmbH", city="Bremen")], None),
        ([row("001B", name="Hafen Logistik GmbH", city=None, postal_code=None)], "001B"),
        (
            [row("001C", name="Hafen Logistik GmbH"), row("001A", name="Hafen Logistik GmbH")],
            "001A",
        ),
        ([row("001B", name="Hafen Logistik")], None),
    ],
)
def test_an_account_matches_on_its_name_and_the_address_parts_both_have(
    candidates: list[RelatedRow], chosen: str | None
) -> None:
    account, _ = customer_shape(SALESFORCE)
    assert account is not None
    wanted = account_values(account, PROFILE)
    assert wanted["Name"] == "Hafen Logistik GmbH" and "BillingState" not in wanted
    match = matching_account(account, wanted, candidates)
    assert (match.id if match else None) == chosen


def test_a_contact_is_written_with_the_mappings_columns() -> None:
    _, contact = customer_shape(DYNAMICS)
    assert contact is not None
    person = {
        "firstName": "Lena",
        "lastName": "Vogel",
        "email": "lena@x.example",
        "phoneNumber": "",
    }
    assert contact_values(contact, person) == {
        "firstname": "Lena",
        "lastname": "Vogel",
        "emailaddress1": "lena@x.example",
    }
