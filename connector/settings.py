"""Typed settings: process settings from the environment, connections from a config file.

Process settings (``Settings``) come from ``CONNECTOR_*`` environment variables, a
``.env`` file and secret files. Connections (URLs, client ids, schedules, which
mapping file) live in a YAML config file under ``config/``; their secrets are
*references* (``{env: NAME}`` or ``{file: PATH}``), resolved at start-up into
:class:`~pydantic.SecretStr`, never written in the file itself. The sandbox's
fake secret ``sandbox`` is the one literal allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from connector.certificates import HttpsUrl
from connector.errors import ConfigError
from connector.events.config import (
    ConnectionEvents,
    DataverseWebhookAuth,
    EventsSettings,
    PartnerCenterEvents,
)
from connector.redaction import register_secret

DEFAULT_STATE_URL = "sqlite:///.connector/state.db"
DEFAULT_CONFIG = Path("config/sandbox.yaml")
SANDBOX_SECRET = "sandbox"
#: the largest config or mapping file read; a real one is a few kilobytes
DEFAULT_MAX_YAML_BYTES = 256 * 1024
#: a secret file larger than this is not a secret (a wrong path, a device)
MAX_SECRET_FILE_BYTES = 64 * 1024


#: how often, by default, a connection checks that its linked CRM records still exist
RECONCILE_INTERVAL_S = 6 * 3600


#: the daemon's cycles running at the same time (``connector run --parallel-cycles``):
#: memory grows with the cycles running, not with the connections configured. It was
#: APScheduler's default pool of 10: one daemon with 10 connections of 2,000
#: opportunities ran 10 first syncs together at a peak of 382 MB (223 threads), 25 at
#: 457 MB; each running first sync holds about 30 MB (its pages, push pool, clients).
#: Four keep 50 connections well under 400 MB, and four push pools of 16 requests
#: are more than a 2-core machine (or the core's own limits) can keep busy.
PARALLEL_CYCLES = 4


class Settings(BaseSettings):
    """Process-wide settings (``CONNECTOR_*`` variables, ``.env``, secret files)."""

    model_config = SettingsConfigDict(
        env_prefix="CONNECTOR_", env_file=".env", extra="ignore", secrets_dir=None
    )

    state_url: str = DEFAULT_STATE_URL
    config: Path = DEFAULT_CONFIG
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: str = "INFO"
    #: a folder of secret files (e.g. /run/secrets); ``{file: NAME}`` resolves inside it
    secrets_dir: Path | None = None
    #: config and mapping files larger than this are refused before they are parsed
    max_yaml_bytes: int = Field(DEFAULT_MAX_YAML_BYTES, ge=1024)


class SecretRef(BaseModel):
    """Where a secret comes from: an environment variable, a file, or the sandbox literal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: Path | None = None
    value: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of env: NAME, file: PATH")
        if self.value is not None and self.value != SANDBOX_SECRET:
            raise ValueError(
                "secrets are never written in a config file; use {env: VARIABLE_NAME} "
                "or {file: /run/secrets/NAME} (only the sandbox's 'sandbox' may be literal)"
            )
        return self

    def resolve(self, where: str, secrets_dir: Path | None = None) -> SecretStr:
        """The secret's value, registered for redaction before anything can use it."""
        if self.value is not None:
            return SecretStr(self.value)
        if self.env is not None:
            found = os.environ.get(self.env)
            if not found or not found.strip():
                raise ConfigError(
                    f"{where}: the environment variable {self.env} is not set or empty; "
                    "export it or point the setting at a secret file"
                )
            register_secret(found, found.strip())
            return SecretStr(found)
        assert self.file is not None
        path = self.file
        if not path.is_absolute() and secrets_dir is not None:
            path = secrets_dir / path
        value = _read_secret_file(path, where)
        register_secret(value)
        return SecretStr(value)


def _read_secret_file(path: Path, where: str) -> str:
    """The stripped UTF-8 text of a secret file; a config error naming the file otherwise."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the secret file {path}: {exc.strerror}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(
            f"{where}: the secret file {path} is larger than {MAX_SECRET_FILE_BYTES:,} bytes, "
            "so it is not a secret; check the path"
        )
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(
            f"{where}: the secret file {path} is not UTF-8 text; write the secret into it "
            "as UTF-8 (e.g. printf '%s' \"$SECRET\" > FILE)"
        ) from None
    if not value:
        raise ConfigError(f"{where}: the secret file {path} is empty; write the secret into it")
    return value


class SalesforceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["salesforce"] = "salesforce"
    login_url: HttpsUrl = "https://login.salesforce.com"
    auth: Literal["client_credentials", "jwt_bearer", "token"] = "client_credentials"
    client_id: str | None = None
    client_secret: SecretRef | None = None
    username: str | None = None
    private_key_file: Path | None = None
    #: the JWT bearer assertion's ``aud``: https://login.salesforce.com (production),
    #: https://test.salesforce.com (sandboxes) or an Experience Cloud site URL; unset,
    #: it follows the login URL (test for a sandbox's, else login), never its My Domain
    jwt_audience: str | None = Field(None, pattern=r"^https://[^\s/]+(/[^\s]*)?$")
    instance_url: HttpsUrl | None = None
    access_token: SecretRef | None = None
    #: an origin other than *.salesforce.com / *.force.com that may be the instance (the sandbox)
    allowed_instance_origin: HttpsUrl | None = None
    api_version: str = "59.0"
    ca_file: Path | None = None
    timeout_s: float = 30.0
    batch_size: int = Field(2000, ge=200, le=2000)
    overlap_s: int = Field(300, ge=0)
    max_quota_share: float = Field(0.8, gt=0, le=1)
    #: how often a cycle checks that every linked record still exists (deleted or purged
    #: records are handled as the mapping's on_record_deleted says); null: never
    reconcile_interval_s: int | None = Field(RECONCILE_INTERVAL_S, ge=0)


class DataverseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["dynamics"] = "dynamics"
    environment_url: HttpsUrl
    #: Entra ID: tokens come from {authority}/{tenant}/oauth2/v2.0/token
    authority: HttpsUrl = "https://login.microsoftonline.com"
    tenant: str
    client_id: str
    client_secret: SecretRef
    ca_file: Path | None = None
    timeout_s: float = 30.0
    page_size: int = Field(1000, ge=1, le=5000)
    #: related rows (accounts, contacts, currencies, users) a pull keeps looked up; at
    #: least what one page can need is always kept
    related_cache: int = Field(10_000, ge=1)
    max_concurrency: int = Field(8, ge=1, le=50)
    #: auto: change tracking when the opportunity table has it, else modifiedon with a
    #: warning; required: refuse to run without it (``true`` means this); off: modifiedon
    change_tracking: Literal["auto", "required", "off"] = "auto"
    stage_source: str = "salesstage"
    max_requests_per_run: int | None = Field(None, ge=1)
    #: Dataverse's service protection allowance per user and sliding 5 minutes: the
    #: connector paces its requests to stay inside it (a large first sync slows down
    #: instead of being throttled into a second cycle); null: no pacing
    requests_per_5min: int | None = Field(6000, ge=1)
    #: as for Salesforce: deletions missed by the pull (read by modifiedon, or an expired
    #: delta token) are found this way; null: never
    reconcile_interval_s: int | None = Field(RECONCILE_INTERVAL_S, ge=0)

    @field_validator("change_tracking", mode="before")
    @classmethod
    def _boolean_change_tracking(cls, value: object) -> object:
        """``true`` / ``false`` (the older form) mean ``required`` / ``off``."""
        if value is True:
            return "required"
        if value is False:
            return "off"
        return value


CrmSettings = Annotated[SalesforceSettings | DataverseSettings, Field(discriminator="kind")]


class MicrosoftReferralSettings(BaseModel):
    """How Microsoft's referral in an engagement is recognised.

    The referral resource has no owner field: the documented signals are the target of
    the referral a partner creates for Microsoft (``BusinessProfileLocation`` ``msft``)
    and the organisation holding a referral (``organizationId``, ``organizationName``).
    Which of them Microsoft's own referral carries is not published, so any of them
    counts, each can be switched off, and the lists compare case-insensitively.
    """

    model_config = ConfigDict(extra="forbid")

    #: a referral whose ``target`` is ``{"type": "BusinessProfileLocation", "id": "msft"}``
    target_msft: bool = True
    #: ``organizationId`` values that are Microsoft (``msft`` is Microsoft's id in the docs)
    organization_ids: list[str] = Field(default_factory=lambda: ["msft"])
    #: ``organizationName`` values that are Microsoft
    organization_names: list[str] = Field(default_factory=lambda: ["Microsoft"])


class CoreSettings(BaseModel):
    """The deal core (Partner Center referrals API)."""

    model_config = ConfigDict(extra="forbid")

    base_url: HttpsUrl = "https://api.partner.microsoft.com/v1.0/engagements"
    auth: Literal["client_credentials", "refresh_token"] = "refresh_token"
    token_url: HttpsUrl = "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    devicecode_url: HttpsUrl | None = None
    client_id: str
    client_secret: SecretRef | None = None
    scope: str = "https://api.partner.microsoft.com/.default offline_access"
    token_cache: Path = Path(".connector/partner-center-token.json")
    ca_file: Path | None = None
    timeout_s: float = 30.0
    concurrency: int = Field(8, ge=1, le=64)
    max_attempts: int = Field(6, ge=1, le=20)
    referral_link_base: str = "https://partner.microsoft.com/dashboard/referrals/v2"
    #: how ``salesStage`` is written: ``percent`` ("10" … "100", the only format seen
    #: from a server) or ``name`` (Qualify, Develop, Propose, Close: the certified
    #: connector's definition); both are read
    sales_stage_format: Literal["percent", "name"] = "percent"
    #: ``two_referrals``: a co-sell deal is the partner's referral plus a referral for
    #: Microsoft in the same engagement (the documented flow); ``consent_only``: the
    #: partner's referral with consent and the help asked is enough
    co_sell_mode: Literal["two_referrals", "consent_only"] = "two_referrals"
    microsoft_referral: MicrosoftReferralSettings = Field(default_factory=MicrosoftReferralSettings)
    #: partner-to-partner invitations: ``explain`` (the documented, safe default: nothing
    #: is sent, the record tells the seller to invite the partner in Partner Center, with
    #: what to tell it) or ``engagement_referral`` (a referral in the deal's engagement
    #: targeting the partner's BusinessProfileLocation with its details; undocumented as
    #: an invitation, so opt-in)
    partner_invitations: Literal["explain", "engagement_referral"] = "explain"
    #: pages one listing may follow before it stops (a guard against a core that never ends)
    max_pages: int = Field(10_000, ge=1)
    #: how far before a create intent (on the core's clock) the core's newest referrals
    #: are searched for its referral when the POST's outcome is unknown: covers the
    #: difference between the core's servers' clocks (its Date header against its
    #: updatedDateTime), which Microsoft does not publish
    create_match_margin_s: float = Field(60.0, ge=0, le=86_400)


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_s: int | None = Field(300, ge=5)
    cron: str | None = None
    jitter_s: int = Field(10, ge=0)

    @model_validator(mode="after")
    def _valid_cron(self) -> Schedule:
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron)
            except ValueError as exc:
                raise ValueError(
                    f"cron {self.cron!r} is not a crontab expression (minute hour day month "
                    f"weekday, e.g. '*/5 * * * *'): {exc}"
                ) from None
        return self


class ConnectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    mapping: Path
    crm: CrmSettings
    core: CoreSettings
    schedule: Schedule = Schedule()
    enabled: bool = True
    #: the longest a run waits for a system that throttles it (Retry-After), in one wait
    #: or in all; a longer wait ends the run as throttled (exit 3), the next cycle resumes
    max_throttle_wait_s: float = Field(300.0, gt=0, le=86400)
    #: the longest one HTTP request may take in all, however slowly its answer trickles
    #: in (each system's timeout_s bounds a single socket read); then it fails as a timeout
    request_deadline_s: float = Field(120.0, gt=0, le=3600)
    events: ConnectionEvents = Field(default_factory=ConnectionEvents)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class HistorySettings(BaseModel):
    """How much per-record sync history the state store keeps (the console's record pages)."""

    model_config = ConfigDict(extra="forbid")

    #: off: no history is written (the console's record pages stay empty)
    enabled: bool = True
    #: the newest entries kept per CRM record
    keep_per_record: int = Field(20, ge=1, le=1000)
    #: entries of runs older than this are deleted
    keep_days: int = Field(90, ge=1, le=3650)


class ConsoleSettings(BaseModel):
    """The admin console in the browser (``connector run`` / ``connector console``).

    Off unless enabled. Sign-in takes a token or password that matches ``admin`` or
    ``read_only`` (secret references, like every credential of the config file).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9465, ge=0, le=65535)
    admin: SecretRef | None = None
    read_only: SecretRef | None = None
    session_ttl_s: int = Field(8 * 3600, ge=60, le=7 * 86400)
    #: serve HTTPS with this certificate chain and key (PEM)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: a TLS proxy fronts the console: cookies are sent over HTTPS only
    secure_cookies: bool = False
    page_size: int = Field(50, ge=10, le=500)

    @model_validator(mode="after")
    def _safe(self) -> ConsoleSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        if not self.enabled:
            return self
        if self.admin is None and self.read_only is None:
            raise ValueError(
                "an enabled console needs a credential: admin: {env: NAME} and/or "
                "read_only: {env: NAME} (a token or password of at least 12 characters)"
            )
        for role in ("admin", "read_only"):
            ref = getattr(self, role)
            if ref is not None and ref.value is not None:
                raise ValueError(
                    f"console.{role}: a console credential comes from {{env: NAME}} or "
                    "{file: PATH}, never the literal 'sandbox'"
                )
        if self.host not in LOOPBACK_HOSTS and not (self.tls_cert_file or self.secure_cookies):
            raise ValueError(
                f"console.host {self.host} is reachable from other machines, and sign-in "
                "passwords would travel in clear: serve TLS (tls_cert_file and tls_key_file), "
                "or put a TLS proxy in front and set secure_cookies: true, or keep host 127.0.0.1"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_url: str | None = None
    connections: list[ConnectionSettings] = Field(min_length=1)
    history: HistorySettings = HistorySettings()
    console: ConsoleSettings = ConsoleSettings()
    events: EventsSettings = Field(default_factory=EventsSettings)

    @model_validator(mode="after")
    def _unique_names(self) -> ConfigFile:
        names = [c.name for c in self.connections]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"connection names must be unique; repeated: {', '.join(dupes)}")
        return self

    def connection(self, name: str | None) -> list[ConnectionSettings]:
        if name is None:
            return [c for c in self.connections if c.enabled]
        for c in self.connections:
            if c.name == name:
                return [c]
        known = ", ".join(c.name for c in self.connections)
        raise ConfigError(f"no connection named {name!r} in the config file (known: {known})")


def state_url(settings: Settings, config: ConfigFile) -> str:
    """``CONNECTOR_STATE_URL`` when set, else the config file's ``state_url``, else the default.

    A password in the URL (PostgreSQL) is registered for redaction like any secret.
    """
    if "state_url" in settings.model_fields_set or config.state_url is None:
        url = settings.state_url
    else:
        url = config.state_url
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None  # not a URL the store can open either: it says so, without the URL
    if password:
        register_secret(password, unquote(password))
    return url


# the event settings name SecretRef before it exists (connector.events.config)
for _model in (DataverseWebhookAuth, PartnerCenterEvents, EventsSettings, ConnectionEvents):
    _model.model_rebuild(_types_namespace={"SecretRef": SecretRef})
ConnectionSettings.model_rebuild()
ConfigFile.model_rebuild()

#: what a config file is, for telling one apart from any other file without showing it
CONFIG_KEYS = frozenset({"connections", "state_url"})


def load_config(path: Path, *, max_bytes: int = DEFAULT_MAX_YAML_BYTES) -> ConfigFile:
    """Read and validate a config file; paths inside it are relative to the working folder."""
    from connector.yaml_guards import YamlKind, read_yaml_text
    from connector.yaml_source import format_validation_error, load_yaml

    kind = YamlKind("config file", CONFIG_KEYS, "start from config/sandbox.yaml")
    text = read_yaml_text(
        path,
        kind,
        max_bytes,
        error_type=ConfigError,
        advice="pass --config FILE or set CONNECTOR_CONFIG",
    )
    data, positions = load_yaml(text, str(path), error_type=ConfigError, kind=kind)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1:1: this is not a config file: it holds no connections: block "
            "(start from config/sandbox.yaml)"
        )
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, str(path), positions)
        raise ConfigError(
            f"the config file {path} is not valid:\n  " + "\n  ".join(problems)
        ) from None
