"""Deterministic data for the sandbox Salesforce org (docs/sandbox-salesforce.md).

``build_org(n, seed, now)`` returns the same ids and values for the same ``n`` and
``seed``: every timestamp is taken relative to :data:`SEED_ANCHOR`, not to the
clock (only if the clock is earlier than the anchor is the anchor moved back,
so that no seeded stamp lies in the future).

Of the opportunities selected for co-sell (``Sync_with_Partner_Center__c``),
about 6.5 % carry exactly one defect (see :data:`DEFECTS`); ``defects`` maps
their ids to the defect's name so tests can check that each one is caught.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.salesforce.schema import SCHEMA, format_datetime, make_id
from sandbox.seed_names import COUNTRIES, FIRST_NAMES, LAST_NAMES

Record = dict[str, Any]

SEED_ANCHOR = datetime(2026, 10, 1, tzinfo=UTC)

#: (label, probability, closed, won, forecast category) in sort order
STAGES: tuple[tuple[str, float, bool, bool, str], ...] = (
    ("Prospecting", 10, False, False, "Pipeline"),
    ("Qualification", 10, False, False, "Pipeline"),
    ("Needs Analysis", 20, False, False, "Pipeline"),
    ("Value Proposition", 50, False, False, "Pipeline"),
    ("Id. Decision Makers", 60, False, False, "Pipeline"),
    ("Perception Analysis", 70, False, False, "Pipeline"),
    ("Technical Win", 65, False, False, "Best Case"),
    ("Proposal/Price Quote", 75, False, False, "Pipeline"),
    ("Verbal Commit", 85, False, False, "Commit"),
    ("Negotiation/Review", 90, False, False, "Pipeline"),
    ("Closed Won", 100, True, True, "Closed"),
    ("Closed Lost", 0, True, False, "Omitted"),
)
#: how often each stage is drawn for a seeded opportunity (mostly open ones)
STAGE_WEIGHTS = (14, 12, 10, 9, 8, 7, 5, 8, 4, 6, 9, 8)

DEFECTS = (
    "amount_null",
    "amount_negative",
    "close_date_null",
    "account_without_country_code",
    "currency_invalid",
    "no_solutions",
    "owner_without_contact_details",
)
DEFECT_RATE = 0.065

CURRENCIES = (("USD", 60), ("EUR", 12), ("GBP", 8), ("JPY", 6), ("CAD", 7), ("AUD", 7))
SOLUTIONS = (
    "SOL-34104-EBB", "SOL-1200-AZM", "SOL-88120-DTA", "SOL-5531-SEC", "SOL-70214-AIX",
    "SOL-9902-MOD", "SOL-41877-IOT", "SOL-2650-SAP",
)  # fmt: skip
HELP = (
    "General or Other",
    "Customer Technical Architecture",
    "Proof of Concept or Demo",
    "Quotes or Licensing",
    "Post Sales Customer Success",
    "Workload Specific Value Proposition",
)
PRODUCTS = (
    "Azure migration", "Data platform modernisation", "Security assessment", "AI copilots pilot",
    "SAP on Azure", "Teams rollout", "IoT fleet telemetry", "Analytics renewal",
)  # fmt: skip
TYPES = ("New Customer", "Existing Customer - Upgrade", "Existing Customer - Replacement")
LEAD_SOURCES = ("Web", "Partner Referral", "Phone Inquiry", "Trade Show", "Purchased List")
INDUSTRIES = ("Manufacturing", "Retail", "Banking", "Healthcare", "Technology", "Energy")


@dataclass
class SeededOrg:
    records: dict[str, list[Record]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    #: opportunity id -> name of its one defect (see DEFECTS)
    defects: dict[str, str] = field(default_factory=dict)

    def add(self, obj: str, values: Record, stamp: str, created: str | None = None) -> Record:
        n = self.counters.get(obj, 0) + 1
        self.counters[obj] = n
        record = {k: v for k, v in values.items() if v is not None}
        record["Id"] = make_id(SCHEMA[obj.lower()].key_prefix, n)
        record.update(
            IsDeleted=False,
            CreatedDate=created or stamp,
            LastModifiedDate=stamp,
            SystemModstamp=stamp,
        )
        self.records.setdefault(obj, []).append(record)
        return record


def build_org(n: int, seed: int, now: datetime) -> SeededOrg:
    """The whole org: stages, users, accounts, contacts and ``n`` opportunities."""
    rng = random.Random(f"salesforce-org/{seed}")
    anchor = min(
        SEED_ANCHOR, now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    )
    org = SeededOrg()
    base = format_datetime(anchor - timedelta(days=720))
    for order, (label, probability, closed, won, forecast) in enumerate(STAGES, start=1):
        org.add("OpportunityStage", {
            "MasterLabel": label, "ApiName": label, "IsActive": True, "SortOrder": order,
            "IsClosed": closed, "IsWon": won, "DefaultProbability": float(probability),
            "ForecastCategoryName": forecast,
        }, base)  # fmt: skip
    users = _users(org, rng, base)
    good_users, bad_users = users[1:-2], users[-2:]
    accounts, bad_accounts = _accounts(org, rng, base, max(12, min(n // 4, 20000)))
    contacts_of = _contacts(org, rng, base, accounts + bad_accounts)
    batch_moments = [anchor - timedelta(days=rng.uniform(1, 200)) for _ in range(40)]
    for _ in range(n):
        account = rng.choice(accounts)
        owner = rng.choice(good_users)
        opp = _opportunity(rng, anchor, account, owner, contacts_of[account["Id"]])
        defect = None
        if opp["Sync_with_Partner_Center__c"] and rng.random() < DEFECT_RATE:
            defect = rng.choice(DEFECTS)
            _apply_defect(rng, opp, defect, bad_accounts, bad_users)
        created = anchor - timedelta(days=rng.uniform(5, 400), seconds=rng.randrange(86400))
        modified = created + (anchor - created) * rng.random()
        stamp = modified
        if rng.random() < 0.3:  # bulk jobs: many rows share one second
            stamp = max(modified, rng.choice(batch_moments))
        elif rng.random() < 0.1:  # automation touched it after the user did
            stamp = modified + (anchor - modified) * rng.random()
        record = org.add("Opportunity", opp, _stamp(stamp), _stamp(created))
        record["LastModifiedDate"] = _stamp(min(modified, stamp))
        if defect is not None:
            org.defects[record["Id"]] = defect
    return org


def _stamp(moment: datetime) -> str:
    return format_datetime(moment.replace(microsecond=0))


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def _email(first: str, last: str, domain: str, n: int) -> str:
    local = "".join(
        ch for ch in f"{first}.{last}".lower() if ch.isascii() and (ch.isalnum() or ch == ".")
    )
    return f"{local.strip('.') or 'user'}{n}@{domain}"


def _users(org: SeededOrg, rng: random.Random, stamp: str) -> list[Record]:
    users = [org.add("User", {
        "FirstName": "Integration", "LastName": "User", "Name": "Integration User",
        "Username": "integration@sandbox.example", "Email": "integration@sandbox.example",
        "Phone": "+1 425 555 0100", "IsActive": True,
    }, stamp)]  # fmt: skip
    for i in range(1, 27):
        first, last = _person(rng)
        email = _email(first, last, "partner.example", i)
        values: Record = {
            "FirstName": first, "LastName": last, "Name": f"{first} {last}",
            "Username": email, "Email": email,
            "Phone": f"+1 425 555 {1000 + i:04d}", "IsActive": i != 13,
        }  # fmt: skip
        if i == 25:  # the last two users exist for the "owner" defect only
            values["Phone"] = None
        if i == 26:
            values["Email"] = None
        users.append(org.add("User", values, stamp))
    return users


def _accounts(
    org: SeededOrg, rng: random.Random, stamp: str, count: int
) -> tuple[list[Record], list[Record]]:
    accounts: list[Record] = []
    for i in range(count + 3):
        country, code, cities, names = COUNTRIES[i % len(COUNTRIES)]
        city, state, postal = rng.choice(cities)
        name = names[(i // len(COUNTRIES)) % len(names)]
        round_ = i // (len(COUNTRIES) * len(names))
        accounts.append(org.add("Account", {
            "Name": name if round_ == 0 else f"{name} {round_ + 1}",
            "BillingStreet": f"{rng.randrange(1, 400)} {rng.choice(('Main', 'Haupt', 'Rue', 'High'))} Street",
            "BillingCity": city, "BillingState": state, "BillingPostalCode": postal,
            "BillingCountry": country, "BillingCountryCode": code if i < count else None,
            "Industry": rng.choice(INDUSTRIES),
            "NumberOfEmployees": rng.choice((12, 45, 180, 950, 4200, 25000)),
        }, stamp))  # fmt: skip
    return accounts[:count], accounts[count:]


def _contacts(
    org: SeededOrg, rng: random.Random, stamp: str, accounts: list[Record]
) -> dict[str, list[Record]]:
    contacts: dict[str, list[Record]] = {}
    for i, account in enumerate(accounts):
        rows = []
        for _ in range(1 + (i % 2)):
            first, last = _person(rng)
            n = org.counters.get("Contact", 0) + 1
            rows.append(org.add("Contact", {
                "FirstName": first, "LastName": last, "Name": f"{first} {last}",
                "Email": _email(first, last, "customer.example", n),
                "Phone": f"+44 20 7946 {n % 10000:04d}", "AccountId": account["Id"],
            }, stamp))  # fmt: skip
        contacts[account["Id"]] = rows
    return contacts


def _opportunity(
    rng: random.Random, anchor: datetime, account: Record, owner: Record, contacts: list[Record]
) -> Record:
    label, probability, closed, won, _ = rng.choices(STAGES, weights=STAGE_WEIGHTS)[0]
    currency = rng.choices([c for c, _ in CURRENCIES], weights=[w for _, w in CURRENCIES])[0]
    amount = float(rng.randrange(5, 2000) * 1000)
    if currency == "JPY":
        amount *= 150
    selected = rng.random() < 0.85
    cosell = rng.random() < 0.40
    solutions = rng.sample(SOLUTIONS, rng.randint(1, 3)) if selected or rng.random() < 0.8 else []
    product = rng.choice(PRODUCTS)
    return {
        "Name": f"{account['Name']} – {product}",
        "Amount": amount,
        "CurrencyIsoCode": currency,
        "CloseDate": (anchor + timedelta(days=rng.randint(-60, 300))).date().isoformat(),
        "StageName": label,
        "Probability": float(probability),
        "IsClosed": closed,
        "IsWon": won,
        "Description": f"{product} for {account['Name']}: {rng.choice(('pilot first', 'phased rollout', 'renewal with expansion'))}.",
        "Type": rng.choice(TYPES),
        "LeadSource": rng.choice(LEAD_SOURCES),
        "AccountId": account["Id"],
        "OwnerId": owner["Id"],
        "Primary_Contact__c": rng.choice(contacts)["Id"] if rng.random() < 0.85 else None,
        "Sync_with_Partner_Center__c": selected,
        "How_can_Microsoft_help__c": rng.choice(HELP) if cosell else rng.choice((None, "None")),
        "Share_with_Microsoft__c": cosell,
        "CoSell_Solutions__c": ";".join(solutions) or None,
        "CoSell_Campaign_Id__c": rng.choice((None, None, "SPRING-26", "FY27-AI")),
        "CoSell_Invite_Partner__c": f"PARTNER-{rng.randrange(1000, 9999)}"
        if rng.random() < 0.05
        else None,
        "CoSell_Registration_Eligible__c": False,
        "CoSell_Register_Deal__c": False,
    }


def _apply_defect(
    rng: random.Random,
    opp: Record,
    defect: str,
    bad_accounts: list[Record],
    bad_users: list[Record],
) -> None:
    if defect == "amount_null":
        opp["Amount"] = None
    elif defect == "amount_negative":
        opp["Amount"] = -float(rng.randrange(1, 500) * 100)
    elif defect == "close_date_null":
        opp["CloseDate"] = None
    elif defect == "account_without_country_code":
        account = rng.choice(bad_accounts)
        opp["AccountId"] = account["Id"]
        opp["Name"] = f"{account['Name']} – {rng.choice(PRODUCTS)}"
        opp["Primary_Contact__c"] = None
    elif defect == "currency_invalid":
        opp["CurrencyIsoCode"] = rng.choice(("XXX", "US$", "EURO"))
    elif defect == "no_solutions":
        opp["CoSell_Solutions__c"] = None
    else:
        opp["OwnerId"] = rng.choice(bad_users)["Id"]
