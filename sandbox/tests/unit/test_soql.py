"""The sandbox's SOQL subset: parsing, type checks and evaluation over a tiny org."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sandbox.salesforce import soql, soql_eval
from sandbox.salesforce.schema import make_id
from sandbox.salesforce.store import SalesforceOrg

ACC_DE = make_id("001", 1)
ACC_JP = make_id("001", 2)
OWNER = make_id("005", 1)
CONTACT = make_id("003", 1)
OPP = [make_id("006", i) for i in range(1, 6)]


def _org() -> SalesforceOrg:
    org = SalesforceOrg(lambda: datetime(2026, 5, 2, tzinfo=UTC))
    base = {"IsDeleted": False, "CreatedDate": "2026-01-01T00:00:00.000+0000"}

    def opp(i: int, stamp: str, **values: object) -> dict[str, object]:
        return {
            **base,
            "Id": OPP[i],
            "LastModifiedDate": stamp,
            "SystemModstamp": stamp,
            **values,
        }

    records = {
        "Account": [
            {**base, "Id": ACC_DE, "Name": "Müller GmbH", "BillingCountryCode": "DE"},
            {**base, "Id": ACC_JP, "Name": "株式会社サンプル", "BillingCountryCode": "JP"},
        ],
        "User": [{**base, "Id": OWNER, "LastName": "Doe", "Email": "jd@partner.example"}],
        "Contact": [{**base, "Id": CONTACT, "LastName": "O'Brien", "Email": "ob@c.example"}],
        "Opportunity": [
            opp(
                0,
                "2026-05-01T00:00:00.000+0000",
                Name="Alpha 50%",
                Amount=100.0,
                CloseDate="2026-06-01",
                AccountId=ACC_DE,
                OwnerId=OWNER,
                Primary_Contact__c=CONTACT,
                StageName="Prospecting",
                Sync_with_Partner_Center__c=True,
            ),
            opp(
                1,
                "2026-05-01T00:00:00.000+0000",
                Name="beta",
                Amount=250.5,
                CloseDate="2026-07-01",
                AccountId=ACC_JP,
                OwnerId=OWNER,
                StageName="Closed Won",
                Sync_with_Partner_Center__c=True,
            ),
            opp(
                2,
                "2026-05-01T00:00:01.000+0000",
                Name="Gamma it's",
                CloseDate="2026-05-15",
                StageName="Qualification",
                Sync_with_Partner_Center__c=False,
            ),
            opp(
                3,
                "2026-04-30T23:59:59.000+0000",
                Name="delta\\path",
                Amount=-5.0,
                AccountId=ACC_DE,
                StageName="Prospecting",
                Sync_with_Partner_Center__c=True,
            ),
            opp(
                4,
                "2026-05-02T10:00:00.000+0000",
                Name="Deleted one",
                IsDeleted=True,
                Sync_with_Partner_Center__c=True,
            ),
        ],
    }
    org.replace_all(records, {})
    return org


@pytest.fixture(scope="module")
def org() -> SalesforceOrg:
    return _org()


def ids(org: SalesforceOrg, where: str, *, order: str = "", deleted: bool = False) -> list[int]:
    text = f"SELECT Id FROM Opportunity WHERE {where} {order}"
    return [OPP.index(r["Id"]) for r in org.query(text, include_deleted=deleted).rows]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Amount > 100", [1]),
        ("Amount >= 100", [0, 1]),
        ("Amount < 0", [3]),
        ("Amount = null", [2]),
        ("Amount != null", [0, 1, 3]),
        ("Amount != 100", [1, 2, 3]),  # != matches nulls, as in SOQL
        ("Name = 'ALPHA 50%'", [0]),  # string equality ignores case
        ("Name = 'Gamma it\\'s'", [2]),
        ("Name = 'delta\\\\path'", [3]),
        ("Name LIKE 'a%'", [0]),
        ("Name LIKE '%50\\%'", [0]),
        ("Name LIKE '_eta'", [1]),
        ("Name LIKE 'Alpha'", []),
        ("StageName IN ('Prospecting', 'closed won')", [0, 1, 3]),
        ("StageName NOT IN ('Prospecting')", [1, 2]),
        ("Sync_with_Partner_Center__c = true", [0, 1, 3]),
        ("Sync_with_Partner_Center__c = false", [2]),
        ("NOT Sync_with_Partner_Center__c = true", [2]),
        ("CloseDate > 2026-06-01", [1]),
        ("CloseDate <= 2026-06-01", [0, 2]),
        ("SystemModstamp >= 2026-05-01T00:00:00Z", [0, 1, 2]),
        ("SystemModstamp > 2026-05-01T00:00:00Z", [2]),
        ("SystemModstamp = 2026-05-01T00:00:00Z", [0, 1]),
        ("SystemModstamp < 2026-05-01T00:00:00Z", [3]),
        ("SystemModstamp >= 2026-05-01T02:00:01+02:00", [2]),  # = 00:00:01Z
        ("SystemModstamp >= 2026-05-01T00:00:00.500Z", [2]),
        ("SystemModstamp >= 2026-05-01T00:00:00Z AND Amount > 100", [1]),
        (
            "SystemModstamp > 2026-04-01T00:00:00Z AND SystemModstamp < 2026-05-01T00:00:01Z",
            [3, 0, 1],
        ),
        ("SystemModstamp >= 2026-05-01T00:00:00Z OR Amount < 0", [0, 1, 2, 3]),
        ("Account.BillingCountryCode = 'DE'", [0, 3]),
        ("Account.Name = 'müller gmbh'", [0, 3]),
        ("Owner.Email = 'jd@partner.example'", [0, 1]),
        ("Primary_Contact__r.LastName = 'O\\'Brien'", [0]),
        ("Primary_Contact__r.Email = null", [1, 2, 3]),
        ("Amount > 0 AND Sync_with_Partner_Center__c = true", [0, 1]),
        ("Amount < 0 OR Name = 'beta'", [1, 3]),
        ("(Amount < 0 OR Name = 'beta') AND Account.BillingCountryCode = 'JP'", [1]),
        ("NOT (Amount < 0 OR Amount = null)", [0, 1]),
        (f"Id = '{OPP[1][:15]}'", [1]),  # 15-character ids work too
        (f"AccountId IN ('{ACC_JP}')", [1]),
    ],
)
def test_where(org: SalesforceOrg, where: str, expected: list[int]) -> None:
    assert ids(org, where) == expected


def test_query_hides_deleted_rows_and_query_all_shows_them(org: SalesforceOrg) -> None:
    assert ids(org, "IsDeleted = true") == []
    assert ids(org, "IsDeleted = true", deleted=True) == [4]
    assert 4 in ids(org, "SystemModstamp >= 2026-05-02T00:00:00Z", deleted=True)


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("ORDER BY SystemModstamp, Id", [3, 0, 1, 2]),
        ("ORDER BY SystemModstamp DESC, Id DESC", [2, 1, 0, 3]),
        ("ORDER BY SystemModstamp ASC, Id DESC", [3, 1, 0, 2]),
        ("ORDER BY Amount", [2, 3, 0, 1]),  # ASC puts nulls first
        ("ORDER BY Amount NULLS LAST", [3, 0, 1, 2]),
        ("ORDER BY Amount DESC", [1, 0, 3, 2]),  # DESC puts nulls last
        ("ORDER BY Amount DESC NULLS FIRST", [2, 1, 0, 3]),
        ("ORDER BY Name", [0, 1, 3, 2]),  # ignoring case
        ("ORDER BY Account.Name DESC NULLS LAST, Amount", [1, 3, 0, 2]),
        ("ORDER BY SystemModstamp, Id LIMIT 2", [3, 0]),
        ("ORDER BY SystemModstamp, Id LIMIT 2 OFFSET 1", [0, 1]),
    ],
)
def test_order_by_and_limit(org: SalesforceOrg, order: str, expected: list[int]) -> None:
    assert ids(org, "Name != null", order=order) == expected


def test_index_path_agrees_with_a_full_sort(org: SalesforceOrg) -> None:
    fast = ids(org, "SystemModstamp >= 2026-04-01T00:00:00Z", order="ORDER BY SystemModstamp, Id")
    slow = ids(org, "SystemModstamp >= 2026-04-01T00:00:00Z", order="ORDER BY SystemModstamp, Name")
    assert fast == [3, 0, 1, 2]
    assert sorted(fast) == sorted(slow)


def test_count(org: SalesforceOrg) -> None:
    result = org.query("select count() from opportunity where amount > 0", include_deleted=False)
    assert result.plan.query.is_count
    assert len(result.rows) == 2


def test_projection_nests_relationships_like_salesforce(org: SalesforceOrg) -> None:
    query = soql.parse(
        "SELECT Name, account.name, Owner.Email, Account.BillingCountryCode FROM Opportunity"
    )
    project = soql_eval.projector(
        soql_eval.plan("SELECT Id FROM Opportunity").obj, query.fields, "59.0", org.fetch
    )
    row = project(org.records["Opportunity"][OPP[0]])
    assert row == {
        "attributes": {
            "type": "Opportunity",
            "url": f"/services/data/v59.0/sobjects/Opportunity/{OPP[0]}",
        },
        "Name": "Alpha 50%",
        "Account": {
            "attributes": {
                "type": "Account",
                "url": f"/services/data/v59.0/sobjects/Account/{ACC_DE}",
            },
            "Name": "Müller GmbH",
            "BillingCountryCode": "DE",
        },
        "Owner": {
            "attributes": {"type": "User", "url": f"/services/data/v59.0/sobjects/User/{OWNER}"},
            "Email": "jd@partner.example",
        },
    }
    assert project(org.records["Opportunity"][OPP[2]])["Account"] is None


@pytest.mark.parametrize(
    ("text", "code", "needle"),
    [
        ("SELECT Id FROM", "MALFORMED_QUERY", "end of query"),
        ("SELECT FROM Opportunity", "MALFORMED_QUERY", "FROM"),
        ("SELECT Id, FROM Opportunity", "MALFORMED_QUERY", "FROM"),
        ("SELECT Id FROM Opportunity WHERE", "MALFORMED_QUERY", "end of query"),
        ("SELECT Id FROM Opportunity WHERE Name = 'x", "MALFORMED_QUERY", "unexpected"),
        ("SELECT Id FROM Opportunity WHERE Name = 'a\\qb'", "MALFORMED_QUERY", "escape"),
        (
            "SELECT Id FROM Opportunity WHERE Amount > 1 AND Amount < 5 OR Name = 'x'",
            "MALFORMED_QUERY",
            "parentheses",
        ),
        ("SELECT Id FROM Opportunity WHERE (Amount > 1", "MALFORMED_QUERY", "')'"),
        (
            "SELECT Id FROM Opportunity WHERE SystemModstamp >= 2026-05-01T00:00:00",
            "MALFORMED_QUERY",
            "datetime",
        ),
        (
            "SELECT Id FROM Opportunity WHERE CloseDate > 2026-02-30",
            "MALFORMED_QUERY",
            "invalid date",
        ),
        ("SELECT Id FROM Opportunity LIMIT x", "MALFORMED_QUERY", "integer"),
        ("SELECT Id FROM Opportunity ORDER BY Name NULLS", "MALFORMED_QUERY", "FIRST or LAST"),
        ("SELECT Id FROM Opportunity WHERE Name IN 'x'", "MALFORMED_QUERY", "'('"),
        ("SELECT Id, id FROM Opportunity", "MALFORMED_QUERY", "duplicate"),
        ("SELECT Id FROM Opportunity extra", "MALFORMED_QUERY", "extra"),
        ("SELECT COUNT(Id) FROM Opportunity", "MALFORMED_QUERY", "COUNT()"),
        ("SELECT Foo__c FROM Opportunity", "INVALID_FIELD", "Foo__c"),
        ("SELECT Id FROM Opportunity WHERE Acount.Name = 'x'", "INVALID_FIELD", "Acount"),
        ("SELECT Id FROM Opportunity ORDER BY Bar", "INVALID_FIELD", "Bar"),
        ("SELECT Account.Nme FROM Opportunity", "INVALID_FIELD", "Nme"),
        (
            "SELECT Id FROM Opportunity WHERE SystemModstamp >= '2026-05-01T00:00:00Z'",
            "INVALID_FIELD",
            "dateTime",
        ),
        (
            "SELECT Id FROM Opportunity WHERE CloseDate = 2026-05-01T00:00:00Z",
            "INVALID_FIELD",
            "date",
        ),
        ("SELECT Id FROM Opportunity WHERE Name = 5", "INVALID_FIELD", "quotes"),
        ("SELECT Id FROM Opportunity WHERE Amount = '5'", "INVALID_FIELD", "number"),
        ("SELECT Id FROM Opportunity WHERE IsWon = 'true'", "INVALID_FIELD", "boolean"),
        ("SELECT Id FROM Opportunity WHERE Description = 'x'", "INVALID_FIELD", "filtered"),
        ("SELECT Id FROM Opportunity ORDER BY Description", "INVALID_FIELD", "sorted"),
        (
            "SELECT Id FROM Opportunity WHERE Amount LIKE 'x'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "LIKE",
        ),
        ("SELECT Id FROM Opportunity WHERE Id = 'nope'", "INVALID_QUERY_FILTER_OPERATOR", "nope"),
        ("SELECT Id FROM Lead", "INVALID_TYPE", "Lead"),
    ],
)
def test_refused_queries(org: SalesforceOrg, text: str, code: str, needle: str) -> None:
    with pytest.raises(soql.SoqlError) as caught:
        org.query(text, include_deleted=False)
    assert caught.value.code == code
    assert needle in caught.value.message


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("'a\\nb'", "a\nb"),
        ("'tab\\there'", "tab\there"),
        ("'quote\\\"d'", 'quote"d'),
        ("'back\\\\slash'", "back\\slash"),
        ("'it\\'s'", "it's"),
        ("'Ünïcödé 株式会社'", "Ünïcödé 株式会社"),
    ],
)
def test_string_escapes(literal: str, expected: str) -> None:
    token = soql.tokenize(literal)[0]
    assert soql.decode_string(token) == expected


def test_parse_shape() -> None:
    query = soql.parse(
        "select Id, Account.Name from Opportunity where (A = 1 or B = 2) and not C = null "
        "order by SystemModstamp desc nulls first, Id limit 10"
    )
    assert query.fields == ("Id", "Account.Name")
    assert query.sobject == "Opportunity"
    assert isinstance(query.where, soql.BoolOp) and query.where.op == "AND"
    assert isinstance(query.where.items[0], soql.BoolOp) and query.where.items[0].op == "OR"
    assert isinstance(query.where.items[1], soql.Not)
    assert query.order_by == (
        soql.OrderItem("SystemModstamp", descending=True, nulls_first=True),
        soql.OrderItem("Id", descending=False, nulls_first=True),
    )
    assert query.limit == 10


def test_simple_salesforce_format_soql_output_is_understood(org: SalesforceOrg) -> None:
    from simple_salesforce import format_soql

    text = format_soql(
        "SELECT Id FROM Opportunity WHERE SystemModstamp >= {} AND Name != {} ORDER BY SystemModstamp, Id",
        datetime(2026, 5, 1, tzinfo=UTC),
        "it's \\ odd\n",
    )
    assert [r["Id"] for r in org.query(text, include_deleted=False).rows] == [
        OPP[0],
        OPP[1],
        OPP[2],
    ]
