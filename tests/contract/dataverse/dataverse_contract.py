"""Published Dataverse Web API bodies (``fixtures/``), as the client and the sandbox meet them.

Each fixture names its public source (repository, path, commit, section). Bodies keep
Microsoft's ``[Organization URI]`` placeholder and API version; :func:`published`
puts in the environment a test talks to and the version the connector asks in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
PLACEHOLDERS = ("[Organization URI]", "[Organization Uri]")
PUBLISHED_VERSIONS = ("/api/data/v9.0/", "/data/v9.0/")


def published(name: str, org: str = "", *, version: str = "v9.2") -> dict[str, Any]:
    """The fixture ``name`` with ``org`` for the placeholder and links at ``version``."""
    text = (FIXTURES / f"{name}.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    assert {"repo", "path", "commit"} <= set(data["source"]), f"{name}: the source is not named"
    if not org:
        return data
    for placeholder in PLACEHOLDERS:
        text = text.replace(placeholder, org)
    for old in PUBLISHED_VERSIONS:
        text = text.replace(old, f"/api/data/{version}/")
    return dict(json.loads(text))


def shape(value: Any) -> Any:
    """The JSON shape of a value: keys and value kinds, lists by their first item."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if value is None:
        return None
    return type(value).__name__


def keys_of(value: Any) -> set[str]:
    """The keys of an object, annotations reduced to their term (``@odata.etag``)."""
    assert isinstance(value, dict)
    return set(value)


ENV = "https://org.crm.dynamics.com"
API = f"{ENV}/api/data/v9.2"
TOKEN_URL = "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"


def client(**options: Any) -> Any:
    """A DataverseOpportunities for ``ENV`` that never sleeps (the caller closes it)."""
    import httpx

    from connector.crm.dynamics.adapter import DataverseOpportunities
    from connector.crm.dynamics.auth import DataverseTokens

    http = httpx.Client()
    tokens = DataverseTokens(
        environment_url=ENV, tenant="tenant-1", client_id="app", client_secret="s", http=http
    )
    options.setdefault("sleep", lambda seconds: None)
    return DataverseOpportunities(
        environment_url=ENV, http=http, tokens=tokens, owns_http=True, **options
    )
