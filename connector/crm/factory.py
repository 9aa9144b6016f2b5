"""Building a CRM adapter from a connection's settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from connector.crm.base import CrmAdapter
from connector.errors import ConfigError
from connector.http_deadline import DEFAULT_REQUEST_DEADLINE_S
from connector.logs import redact
from connector.retry import DEFAULT_MAX_THROTTLE_WAIT_S
from connector.settings import DataverseSettings, SalesforceSettings

if TYPE_CHECKING:
    from connector.crm.salesforce.sessions import SessionCache


def build_salesforce(
    crm: SalesforceSettings,
    where: str,
    secrets_dir: Path | None,
    *,
    max_throttle_wait_s: float = DEFAULT_MAX_THROTTLE_WAIT_S,
    request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S,
    sessions: SessionCache | None = None,
) -> CrmAdapter:
    """The Salesforce adapter; with ``sessions`` (a daemon's) it starts with the session
    the connection (``where``) last signed in with, if any."""
    from connector.crm.salesforce.adapter import SalesforceOpportunities
    from connector.crm.salesforce.auth import (
        ClientCredentials,
        ExistingToken,
        Grant,
        JwtBearer,
        SalesforceAuth,
    )

    grant: Grant
    if crm.auth == "client_credentials":
        if not crm.client_id or crm.client_secret is None:
            raise ConfigError(f"{where}.crm: client_credentials needs client_id and client_secret")
        secret = crm.client_secret.resolve(f"{where}.crm.client_secret", secrets_dir)
        redact(secret.get_secret_value())
        grant = ClientCredentials(crm.login_url, crm.client_id, secret)
    elif crm.auth == "jwt_bearer":
        if not crm.client_id or not crm.username or crm.private_key_file is None:
            raise ConfigError(
                f"{where}.crm: jwt_bearer needs client_id, username and private_key_file"
            )
        grant = JwtBearer(
            crm.login_url,
            crm.client_id,
            crm.username,
            crm.private_key_file,
            audience=crm.jwt_audience,
        )
    else:
        if not crm.instance_url or crm.access_token is None:
            raise ConfigError(f"{where}.crm: auth 'token' needs instance_url and access_token")
        token = crm.access_token.resolve(f"{where}.crm.access_token", secrets_dir)
        redact(token.get_secret_value())
        grant = ExistingToken(crm.instance_url, token)
    if crm.ca_file is not None and not crm.ca_file.exists():
        raise ConfigError(
            f"{where}.crm.ca_file: {crm.ca_file} does not exist; start the sandbox first "
            "(`connector sandbox`) or fix the path"
        )
    auth = SalesforceAuth(
        grant,
        ca_file=crm.ca_file,
        allowed_origin=crm.allowed_instance_origin,
        api_version=crm.api_version,
        timeout=crm.timeout_s,
        request_deadline_s=request_deadline_s,
        sessions=sessions,
        connection=where,
    )
    return SalesforceOpportunities(
        auth,
        timeout=crm.timeout_s,
        batch_size=crm.batch_size,
        overlap_s=crm.overlap_s,
        max_quota_share=crm.max_quota_share,
        reconcile_every=_interval(crm.reconcile_interval_s),
        max_throttle_wait_s=max_throttle_wait_s,
    )


def build_dynamics(
    crm: DataverseSettings,
    where: str,
    secrets_dir: Path | None,
    *,
    max_throttle_wait_s: float = DEFAULT_MAX_THROTTLE_WAIT_S,
    request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S,
) -> CrmAdapter:
    from connector.crm.dynamics.adapter import DataverseOpportunities

    secret = crm.client_secret.resolve(f"{where}.crm.client_secret", secrets_dir)
    redact(secret.get_secret_value())
    if crm.ca_file is not None and not crm.ca_file.exists():
        raise ConfigError(
            f"{where}.crm.ca_file: {crm.ca_file} does not exist; start the sandbox first "
            "(`connector sandbox`) or fix the path"
        )
    return DataverseOpportunities.connect(
        environment_url=crm.environment_url,
        tenant=crm.tenant,
        client_id=crm.client_id,
        client_secret=secret,
        authority=crm.authority,
        ca_file=crm.ca_file,
        timeout_s=crm.timeout_s,
        page_size=crm.page_size,
        related_cache=crm.related_cache,
        max_concurrency=crm.max_concurrency,
        change_tracking=crm.change_tracking,
        stage_source=crm.stage_source,
        max_requests=crm.max_requests_per_run,
        requests_per_5min=crm.requests_per_5min,
        reconcile_every=_interval(crm.reconcile_interval_s),
        max_throttle_wait_s=max_throttle_wait_s,
        request_deadline_s=request_deadline_s,
    )


def build_crm(
    crm: SalesforceSettings | DataverseSettings,
    where: str,
    secrets_dir: Path | None,
    *,
    max_throttle_wait_s: float = DEFAULT_MAX_THROTTLE_WAIT_S,
    request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S,
    sessions: SessionCache | None = None,
) -> CrmAdapter:
    """The connection's CRM adapter; the caps are the connection's (see ConnectionSettings).

    ``sessions``: the daemon's Salesforce sessions, reused across its cycles (a one-shot
    run passes none and signs in once).
    """
    caps = {"max_throttle_wait_s": max_throttle_wait_s, "request_deadline_s": request_deadline_s}
    if isinstance(crm, SalesforceSettings):
        return build_salesforce(crm, where, secrets_dir, **caps, sessions=sessions)
    return build_dynamics(crm, where, secrets_dir, **caps)


def _interval(seconds: int | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)
