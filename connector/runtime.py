"""Building one connection's runtime (CRM adapter, core client, mapping) from its settings."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx

from connector.crm.base import CrmAdapter
from connector.crm.factory import build_crm
from connector.crm.salesforce.sessions import SessionCache
from connector.dealcore.auth import ClientCredentialsTokens, RefreshTokenTokens, TokenProvider
from connector.dealcore.client import ReferralsClient
from connector.dealcore.options import CoreOptions, MicrosoftReferralRule
from connector.dealcore.payload import referral_link
from connector.errors import ConfigError
from connector.http_deadline import DEFAULT_REQUEST_DEADLINE_S, deadline_client
from connector.logs import redact
from connector.mapping.load import load_mapping
from connector.mapping.schema import MappingFile
from connector.retry import RateGate, RetryPolicy
from connector.settings import (
    ConnectionSettings,
    CoreSettings,
    SalesforceSettings,
    Settings,
)


@dataclass
class Runtime:
    """Everything a sync cycle of one connection needs, ready to use."""

    settings: ConnectionSettings
    mapping: MappingFile
    crm: CrmAdapter
    core: ReferralsClient

    def link_for(self, referral_id: str) -> str:
        return referral_link(referral_id, self.settings.core.referral_link_base)


def tls_context(ca_file: Path | None) -> ssl.SSLContext | bool:
    """Verification is always on: the system store, or the given CA file (the sandbox's)."""
    if ca_file is None:
        return True
    if not ca_file.exists():
        raise ConfigError(
            f"the CA file {ca_file} does not exist; start the sandbox first "
            "(`connector sandbox`), or fix ca_file in the config"
        )
    return ssl.create_default_context(cafile=str(ca_file))


def core_tokens(
    core: CoreSettings, http: httpx.Client, where: str, secrets_dir: Path | None
) -> TokenProvider:
    if core.auth == "client_credentials":
        if core.client_secret is None:
            raise ConfigError(f"{where}.core.client_secret is required for client_credentials")
        secret = core.client_secret.resolve(f"{where}.core.client_secret", secrets_dir)
        redact(secret.get_secret_value())
        return ClientCredentialsTokens(core.token_url, core.client_id, secret, core.scope, http)
    return RefreshTokenTokens(core.token_url, core.client_id, core.scope, core.token_cache, http)


def core_http(
    core: CoreSettings, request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S
) -> httpx.Client:
    """The core's client (API and token endpoint): ``timeout_s`` per socket step, each
    request ended after ``request_deadline_s`` however slowly its answer arrives."""
    tls_context(core.ca_file)  # a missing CA file is named here, as a config error
    pool = core.concurrency + 4
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    return deadline_client(
        deadline_s=request_deadline_s, ca_file=core.ca_file, timeout=core.timeout_s, limits=limits
    )


def build_core(
    core: CoreSettings,
    where: str,
    secrets_dir: Path | None,
    http: httpx.Client,
    correlation_id: str | None = None,
    gate: RateGate | None = None,
) -> ReferralsClient:
    tokens = core_tokens(core, http, where, secrets_dir)
    return ReferralsClient(
        core.base_url,
        tokens,
        http=http,
        correlation_id=correlation_id or str(uuid.uuid4()),
        retry_policy=RetryPolicy(attempts=core.max_attempts),  # the setting, wired
        options=core_options(core),
        match_margin=timedelta(seconds=core.create_match_margin_s),
        gate=gate,
    )


def core_options(core: CoreSettings) -> CoreOptions:
    """The connector's choices where the referrals API is not documented, from settings."""
    rule = core.microsoft_referral
    return CoreOptions(
        sales_stage_format=core.sales_stage_format,
        co_sell_mode=core.co_sell_mode,
        microsoft=MicrosoftReferralRule.of(
            target_msft=rule.target_msft,
            organization_ids=rule.organization_ids,
            organization_names=rule.organization_names,
        ),
        max_pages=core.max_pages,
        partner_invitations=core.partner_invitations,
    )


@contextmanager
def open_runtime(
    conn: ConnectionSettings,
    settings: Settings,
    *,
    mapping: MappingFile | None = None,
    sessions: SessionCache | None = None,
) -> Iterator[Runtime]:
    """The connection's clients, closed on exit; ``mapping`` overrides reading the file;
    ``sessions``: the daemon's Salesforce sessions, so a cycle does not sign in again."""
    where = f"connections[{conn.name}]"
    mapping = mapping or load_mapping(conn.mapping, max_bytes=settings.max_yaml_bytes)
    expected = "salesforce" if isinstance(conn.crm, SalesforceSettings) else "dynamics"
    if mapping.crm != expected:
        raise ConfigError(
            f"{where}: the mapping {conn.mapping} is written for {mapping.crm} but the "
            f"connection's CRM is {expected}; point `mapping:` at a {expected} mapping"
        )
    http = core_http(conn.core, conn.request_deadline_s)
    try:
        # a run waits max_throttle_wait_s at most for a throttling core (or CRM)
        gate = RateGate(max_wait_s=conn.max_throttle_wait_s, system="the deal core")
        core = build_core(conn.core, where, settings.secrets_dir, http, gate=gate)
        crm = build_crm(
            conn.crm,
            where,
            settings.secrets_dir,
            max_throttle_wait_s=conn.max_throttle_wait_s,
            request_deadline_s=conn.request_deadline_s,
            sessions=sessions,
        )
    except BaseException:
        http.close()
        raise
    try:
        yield Runtime(conn, mapping, crm, core)
    finally:
        crm.close()
        http.close()
