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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connector.errors import ConfigError

DEFAULT_STATE_URL = "sqlite:///.connector/state.db"
DEFAULT_CONFIG = Path("config/sandbox.yaml")
SANDBOX_SECRET = "sandbox"


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
        if self.value is not None:
            return SecretStr(self.value)
        if self.env is not None:
            found = os.environ.get(self.env)
            if not found:
                raise ConfigError(
                    f"{where}: the environment variable {self.env} is not set; "
                    "export it or point the setting at a secret file"
                )
            return SecretStr(found)
        assert self.file is not None
        path = self.file
        if not path.is_absolute() and secrets_dir is not None:
            path = secrets_dir / path
        try:
            return SecretStr(path.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(
                f"{where}: cannot read the secret file {path}: {exc.strerror}"
            ) from None


class SalesforceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["salesforce"] = "salesforce"
    login_url: str = "https://login.salesforce.com"
    auth: Literal["client_credentials", "jwt_bearer", "token"] = "client_credentials"
    client_id: str | None = None
    client_secret: SecretRef | None = None
    username: str | None = None
    private_key_file: Path | None = None
    instance_url: str | None = None
    access_token: SecretRef | None = None
    #: an origin other than *.salesforce.com / *.force.com that may be the instance (the sandbox)
    allowed_instance_origin: str | None = None
    api_version: str = "59.0"
    ca_file: Path | None = None
    timeout_s: float = 30.0
    batch_size: int = Field(2000, ge=200, le=2000)
    overlap_s: int = Field(300, ge=0)
    max_quota_share: float = Field(0.8, gt=0, le=1)


class DataverseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["dynamics"] = "dynamics"
    environment_url: str
    #: Entra ID: tokens come from {authority}/{tenant}/oauth2/v2.0/token
    authority: str = "https://login.microsoftonline.com"
    tenant: str
    client_id: str
    client_secret: SecretRef
    ca_file: Path | None = None
    timeout_s: float = 30.0
    page_size: int = Field(1000, ge=1, le=5000)
    max_concurrency: int = Field(8, ge=1, le=50)
    change_tracking: bool = True
    stage_source: str = "salesstage"
    max_requests_per_run: int | None = Field(None, ge=1)


CrmSettings = Annotated[SalesforceSettings | DataverseSettings, Field(discriminator="kind")]


class CoreSettings(BaseModel):
    """The deal core (Partner Center referrals API)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://api.partner.microsoft.com/v1.0/engagements"
    auth: Literal["client_credentials", "refresh_token"] = "refresh_token"
    token_url: str = "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    devicecode_url: str | None = None
    client_id: str
    client_secret: SecretRef | None = None
    scope: str = "https://api.partner.microsoft.com/.default offline_access"
    token_cache: Path = Path(".connector/partner-center-token.json")
    ca_file: Path | None = None
    timeout_s: float = 30.0
    concurrency: int = Field(8, ge=1, le=64)
    max_attempts: int = Field(6, ge=1, le=20)
    referral_link_base: str = "https://partner.microsoft.com/dashboard/referrals/v2"


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


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_url: str | None = None
    connections: list[ConnectionSettings] = Field(min_length=1)

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
    """``CONNECTOR_STATE_URL`` when set, else the config file's ``state_url``, else the default."""
    if "state_url" in settings.model_fields_set or config.state_url is None:
        return settings.state_url
    return config.state_url


def load_config(path: Path) -> ConfigFile:
    """Read and validate a config file; paths inside it are relative to the working folder."""
    from connector.mapping.yaml_source import format_validation_error, load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file {path}: {exc.strerror}; pass --config FILE "
            "or set CONNECTOR_CONFIG"
        ) from None
    data, positions = load_yaml(text, str(path), error_type=ConfigError)
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, str(path), positions)
        raise ConfigError(
            f"the config file {path} is not valid:\n  " + "\n  ".join(problems)
        ) from None
