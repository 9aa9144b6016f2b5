"""Payload builders and an adapter factory for the Salesforce adapter's unit tests."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from connector.crm.salesforce.adapter import SalesforceOpportunities
from connector.crm.salesforce.auth import ClientCredentials, ExistingToken, SalesforceAuth
from connector.retry import RetryPolicy

INSTANCE = "https://acme.my.salesforce.com"
LOGIN = "https://login.salesforce.com"
API = f"{INSTANCE}/services/data/v59.0"
QUERY_ALL = f"{API}/queryAll/"
COMPOSITE = f"{API}/composite/sobjects"
TOKEN_URL = f"{LOGIN}/services/oauth2/token"
SECRET = "s3cr3t-client-secret"
FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0, max_wait=0, jitter=0)


def sf_id(n: int, prefix: str = "006") -> str:
    return f"{prefix}{n:015d}"


def opp(n: int, stamp: str, **fields: Any) -> dict[str, Any]:
    """One Opportunity row as the REST API prints it."""
    record_id = sf_id(n)
    return {
        "attributes": {
            "type": "Opportunity",
            "url": f"/services/data/v59.0/sobjects/Opportunity/{record_id}",
        },
        "Id": record_id,
        "SystemModstamp": stamp,
        "IsDeleted": False,
        **fields,
    }


def page(records: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"totalSize": len(records), "done": next_url is None, "records": records}
    if next_url is not None:
        body["nextRecordsUrl"] = next_url
    return body


def sf_error(code: str, message: str = "something went wrong") -> list[dict[str, Any]]:
    return [{"message": message, "errorCode": code, "fields": []}]


def existing_token_adapter(**kwargs: Any) -> SalesforceOpportunities:
    auth = SalesforceAuth(ExistingToken(INSTANCE, SecretStr("tok-existing")))
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("sleep", lambda seconds: None)
    return SalesforceOpportunities(auth, **kwargs)


def client_credentials_adapter(**kwargs: Any) -> SalesforceOpportunities:
    auth = SalesforceAuth(ClientCredentials(LOGIN, "the-client", SecretStr(SECRET)))
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("sleep", lambda seconds: None)
    return SalesforceOpportunities(auth, **kwargs)


def token_answer(token: str = "tok-1", instance_url: str = INSTANCE) -> dict[str, Any]:
    return {
        "access_token": token,
        "instance_url": instance_url,
        "token_type": "Bearer",
        "issued_at": "1777600000000",
    }


def describe_answer(name: str = "Opportunity", **types: str) -> dict[str, Any]:
    """``sobjects/<name>/describe`` with the given field → type (lookups: ``reference:Account``)."""
    fields = []
    for field, kind in types.items():
        entry: dict[str, Any] = {"name": field, "type": kind, "referenceTo": []}
        if kind.startswith("reference:"):
            target = kind.removeprefix("reference:")
            relationship = field[:-2] if field.endswith("Id") else field.replace("__c", "__r")
            entry.update(type="reference", referenceTo=[target], relationshipName=relationship)
        fields.append(entry)
    return {"name": name, "fields": fields}
