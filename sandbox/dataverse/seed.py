"""Deterministic data for the sandbox Dataverse environment, mirroring the Salesforce seed's mix.

``build(store, n, seed, now)`` fills an empty store with currencies, users,
accounts, contacts and ``n`` opportunities; the same ``n`` and ``seed`` give the
same ids and values (timestamps are relative to :data:`SEED_ANCHOR`, moved back
only when the clock is earlier). About 85 % of the opportunities are selected
for co-sell (``cosell_syncwithpartnercenter``); of those, about 6.5 % carry
exactly one defect that makes them invalid for co-sell (see :data:`DEFECTS`).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.dataverse.schema import OPPORTUNITY_STATUS, SALES_STAGE
from sandbox.dataverse.store import DataverseStore, stamp
from sandbox.dataverse.writes import APPLICATION_USER_ID
from sandbox.seed_names import COUNTRIES, FIRST_NAMES, LAST_NAMES

Row = dict[str, Any]

SEED_ANCHOR = datetime(2026, 10, 1, tzinfo=UTC)
DEFECTS = (
    "estimatedvalue_null",
    "estimatedvalue_negative",
    "estimatedclosedate_null",
    "account_without_country_code",
    "no_solutions",
    "owner_without_contact_details",
)
DEFECT_RATE = 0.065

#: (ISO code, name, symbol, precision, weight)
CURRENCIES = (
    ("USD", "US Dollar", "$", 2, 60),
    ("EUR", "Euro", "€", 2, 12),
    ("GBP", "Pound Sterling", "£", 2, 8),
    ("JPY", "Japanese Yen", "¥", 0, 6),
    ("CAD", "Canadian Dollar", "CA$", 2, 7),
    ("AUD", "Australian Dollar", "A$", 2, 7),
)
SOLUTIONS = (
    "SOL-34104-EBB", "SOL-IP-77001-AZR", "SOL-1200-AZM", "SOL-88120-DTA", "SOL-5531-SEC",
    "SOL-IP-70214-AIX", "SOL-9902-MOD", "SOL-41877-IOT",
)  # fmt: skip
PRODUCTS = (
    "Azure migration", "Data platform modernisation", "Security assessment", "AI copilots pilot",
    "SAP on Azure", "Teams rollout", "IoT fleet telemetry", "Analytics renewal",
)  # fmt: skip
#: (salesstage, statecode, statuscode, weight): mostly open deals, some won and lost
OUTCOMES = (
    (0, 0, 1, 22), (1, 0, 1, 20), (2, 0, 1, 16), (3, 0, 1, 10), (1, 0, 2, 5),
    (3, 1, 3, 12), (2, 2, 4, 7), (1, 2, 5, 8),
)  # fmt: skip
PROBABILITY = {0: 10, 1: 25, 2: 50, 3: 75}
STREETS = ("Main", "Haupt", "Rue", "High")


def currency_id(code: str) -> str:
    """Currencies have fixed ids, so mappings and tests can name them."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-dataverse/currency/{code}"))


#: the connection roles of an opportunity's sales team (fixed ids, like the currencies)
SALES_TEAM_ROLES = ("Sales Team Member", "Technical Sales Professional")


def role_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-dataverse/connectionrole/{name}"))


def new_id() -> str:
    """A random GUID for rows created after seeding."""
    return str(uuid.uuid4())


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def next(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def build(store: DataverseStore, n: int, seed: int, now: datetime) -> dict[str, str]:
    """Seed ``store``; → {opportunity id: defect name} for the defective ones."""
    rng = random.Random(f"dataverse/{seed}")
    ids = _Ids(rng)
    anchor = min(
        SEED_ANCHOR, now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    )
    base = stamp(anchor - timedelta(days=720))
    for code, name, symbol, precision, _ in CURRENCIES:
        store.insert("transactioncurrencies", {
            "transactioncurrencyid": currency_id(code), "isocurrencycode": code,
            "currencyname": name, "currencysymbol": symbol, "currencyprecision": precision,
        }, at=base)  # fmt: skip
    users, bad_users = _users(store, rng, ids, base)
    accounts, bad_accounts = _accounts(store, rng, ids, base, max(12, min(n // 4, 20000)))
    contacts_of = _contacts(store, rng, ids, base, accounts + bad_accounts)
    pending: list[tuple[datetime, Row]] = []
    defects: dict[str, str] = {}
    for _ in range(n):
        account = rng.choice(accounts)
        row = _opportunity(rng, ids, anchor, account, rng.choice(users), contacts_of)
        if row["cosell_syncwithpartnercenter"] and rng.random() < DEFECT_RATE:
            defect = rng.choice(DEFECTS)
            _apply_defect(rng, row, defect, bad_accounts, bad_users)
            defects[row["opportunityid"]] = defect
        created = anchor - timedelta(days=rng.uniform(5, 400), seconds=rng.randrange(86400))
        modified = created + (anchor - created) * rng.random()
        row["createdon"] = stamp(created)
        pending.append((modified, row))
    # insert in modification order so that versionnumber grows with modifiedon, as in Dataverse
    for modified, row in sorted(pending, key=lambda p: (p[0], p[1]["opportunityid"])):
        store.insert("opportunities", row, at=stamp(modified))
    for role in SALES_TEAM_ROLES:
        store.insert("connectionroles", {"connectionroleid": role_id(role), "name": role}, at=base)
    return defects


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def _email(first: str, last: str, domain: str, n: int) -> str:
    local = "".join(
        c for c in f"{first}.{last}".lower() if c.isascii() and (c.isalnum() or c == ".")
    )
    return f"{local.strip('.') or 'user'}{n}@{domain}"


def _users(
    store: DataverseStore, rng: random.Random, ids: _Ids, at: str
) -> tuple[list[str], list[str]]:
    store.insert("systemusers", {
        "systemuserid": APPLICATION_USER_ID, "firstname": "# Co-sell", "lastname": "Connector",
        "internalemailaddress": None, "address1_telephone1": None,
    }, at=at)  # fmt: skip
    good: list[str] = []
    bad: list[str] = []
    for i in range(1, 15):
        first, last = _person(rng)
        # the last two users exist for the "owner" defect only: one lacks a phone, one an email
        row = store.insert("systemusers", {
            "systemuserid": ids.next(), "firstname": first, "lastname": last,
            "internalemailaddress": None if i == 14 else _email(first, last, "partner.example", i),
            "address1_telephone1": None if i == 13 else f"+1 425 555 {1000 + i:04d}",
        }, at=at)  # fmt: skip
        (bad if i >= 13 else good).append(row["systemuserid"])
    return good, bad


def _accounts(
    store: DataverseStore, rng: random.Random, ids: _Ids, at: str, count: int
) -> tuple[list[Row], list[Row]]:
    rows: list[Row] = []
    for i in range(count + 3):
        country, code, cities, names = COUNTRIES[i % len(COUNTRIES)]
        city, state, postal = rng.choice(cities)
        name = names[(i // len(COUNTRIES)) % len(names)]
        round_ = i // (len(COUNTRIES) * len(names))
        rows.append(store.insert("accounts", {
            "accountid": ids.next(),
            "name": name if round_ == 0 else f"{name} {round_ + 1}",
            "address1_line1": f"{rng.randrange(1, 400)} {rng.choice(STREETS)} Street",
            "address1_city": city, "address1_stateorprovince": state,
            "address1_postalcode": postal, "address1_country": country,
            "cosell_countrycode": code if i < count else None,
        }, at=at))  # fmt: skip
    return rows[:count], rows[count:]


def _contacts(
    store: DataverseStore, rng: random.Random, ids: _Ids, at: str, accounts: list[Row]
) -> dict[str, list[str]]:
    contacts: dict[str, list[str]] = {}
    n = 0
    for i, account in enumerate(accounts):
        for _ in range(1 + (i % 2)):
            n += 1
            first, last = _person(rng)
            row = store.insert("contacts", {
                "contactid": ids.next(), "firstname": first, "lastname": last,
                "emailaddress1": _email(first, last, "customer.example", n),
                "telephone1": f"+44 20 7946 {n % 10000:04d}",
                "_parentcustomerid_value": account["accountid"],
            }, at=at)  # fmt: skip
            contacts.setdefault(account["accountid"], []).append(row["contactid"])
    return contacts


def _opportunity(
    rng: random.Random,
    ids: _Ids,
    anchor: datetime,
    account: Row,
    owner: str,
    contacts_of: dict[str, list[str]],
) -> Row:
    stage, state, status, _ = rng.choices(OUTCOMES, weights=[o[3] for o in OUTCOMES])[0]
    code = rng.choices([c[0] for c in CURRENCIES], weights=[c[4] for c in CURRENCIES])[0]
    value = float(rng.randrange(5, 2000) * 1000) * (150 if code == "JPY" else 1)
    selected = rng.random() < 0.85
    help_needed = rng.randint(1, 6) if rng.random() < 0.40 else None
    solutions = rng.sample(SOLUTIONS, rng.randint(1, 3)) if selected or rng.random() < 0.8 else []
    product = rng.choice(PRODUCTS)
    probability = {1: 100, 2: 0}.get(state, PROBABILITY[stage])
    return {
        "opportunityid": ids.next(),
        "name": f"{account['name']} – {product}",
        "description": f"{product} for {account['name']}: "
        f"{rng.choice(('pilot first', 'phased rollout', 'renewal with expansion'))}.",
        "estimatedvalue": value,
        "estimatedclosedate": (anchor + timedelta(days=rng.randint(-60, 300))).date().isoformat(),
        "closeprobability": probability,
        "salesstage": stage,
        "stepname": f"{stage + 1}-{dict(SALES_STAGE)[stage]}",
        "statecode": state,
        "statuscode": status if OPPORTUNITY_STATUS[status][1] == state else 1,
        "actualvalue": value if state == 1 else None,
        "_transactioncurrencyid_value": currency_id(code),
        "_parentaccountid_value": account["accountid"],
        "_customerid_value": account["accountid"],
        "_ownerid_value": owner,
        "_parentcontactid_value": rng.choice(contacts_of[account["accountid"]])
        if rng.random() < 0.85
        else None,
        "cosell_syncwithpartnercenter": selected,
        "cosell_helpneeded": help_needed,
        "cosell_sharewithmicrosoft": help_needed is not None,
        "cosell_solutions": ";".join(solutions) or None,
        "cosell_campaignid": rng.choice((None, None, "SPRING-26", "FY27-AI")),
        "cosell_invitepartner": f"PARTNER-{rng.randrange(1000, 9999)}"
        if rng.random() < 0.05
        else None,
        "cosell_registrationeligible": False,
        "cosell_registerdeal": False,
        "cosell_direction": "Outbound",
    }


def _apply_defect(
    rng: random.Random, row: Row, defect: str, bad_accounts: list[Row], bad_users: list[str]
) -> None:
    if defect == "estimatedvalue_null":
        row["estimatedvalue"] = None
    elif defect == "estimatedvalue_negative":
        row["estimatedvalue"] = -float(rng.randrange(1, 500) * 100)
    elif defect == "estimatedclosedate_null":
        row["estimatedclosedate"] = None
    elif defect == "account_without_country_code":
        account = rng.choice(bad_accounts)
        row["_parentaccountid_value"] = row["_customerid_value"] = account["accountid"]
        row["name"] = f"{account['name']} – {rng.choice(PRODUCTS)}"
        row["_parentcontactid_value"] = None
    elif defect == "no_solutions":
        row["cosell_solutions"] = None
    else:
        row["_ownerid_value"] = rng.choice(bad_users)
