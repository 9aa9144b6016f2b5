"""Settings of near-real-time sync: the event receiver, and which events each connection uses.

The receiver (top-level ``events:``) is a port of its own in ``connector run``; it
takes Partner Center webhook callbacks and Dataverse webhook posts. A Salesforce
connection subscribes to Change Data Capture instead (no inbound port). Every
secret is a reference (``{env: NAME}`` or ``{file: PATH}``), resolved at start-up.

``SecretRef`` is the config file's own secret reference; it is named here as a
forward reference and resolved when :mod:`connector.settings` has defined it
(``connector.settings`` rebuilds these models at its end), so that this module
imports nothing from the settings module and the two never import each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connector.certificates import HttpsUrl

if TYPE_CHECKING:
    from connector.settings import SecretRef

#: the event names Microsoft publishes for referrals (learn.microsoft.com,
#: "Partner Center webhook events"); what ``connector webhooks register`` asks for
REFERRAL_EVENTS = (
    "referral-created",
    "referral-updated",
    "related-referral-created",
    "related-referral-updated",
)
#: the documented host of the signing certificate's URL (``x-ms-certificate-url``)
PARTNER_CENTER_CERTIFICATE_HOST = "3psostorageacct.blob.core.windows.net"
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class PartnerCenterEvents(BaseModel):
    """How a Partner Center callback is authenticated, and where registrations are made.

    The documented check: the ``Authorization: Signature …`` (or ``x-ms-signature``)
    header is an RSA signature of the body with the algorithm ``x-ms-signature-algorithm``
    names, by the certificate that ``x-ms-certificate-url`` points at; that certificate
    must chain to a trusted root and be issued by Microsoft. Which intermediate
    certificates it chains through is not published: ``ca_file`` adds them.
    """

    model_config = ConfigDict(extra="forbid")

    #: hosts the signing certificate may be downloaded from (https only)
    certificate_hosts: list[str] = Field(
        default_factory=lambda: [PARTNER_CENTER_CERTIFICATE_HOST], min_length=1
    )
    #: the organisation the signing certificate's issuer must name (``O=``)
    issuer_organization: str = "Microsoft Corporation"
    #: PEM certificates (roots and intermediates) the signing certificate must chain to;
    #: the system's trusted roots when unset
    ca_file: Path | None = None
    #: how long a downloaded signing certificate is reused
    certificate_ttl_s: int = Field(3600, ge=60, le=86_400)
    #: the webhook registration API (``connector webhooks register|list|delete``)
    registration_url: HttpsUrl = "https://api.partnercenter.microsoft.com/webhooks/v1/registration"
    #: the token scope of that API: Microsoft names the resource
    #: https://api.partnercenter.microsoft.com, not the referrals API's
    registration_scope: str = "https://api.partnercenter.microsoft.com/.default"
    #: a token the callback URL must carry as ``?token=…`` on top of the signature
    #: (optional: for a registration made with such a URL)
    url_token: SecretRef | None = None


class DataverseWebhookAuth(BaseModel):
    """How Dataverse authenticates its posts: the service endpoint's authentication type.

    ``header`` (HttpHeader: a header ``name`` holding the secret), ``webhook_key``
    (WebhookKey: the query parameter ``code``) or ``query`` (HttpQueryString: the query
    parameter ``name``), as documented for registered webhooks.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["header", "webhook_key", "query"] = "header"
    name: str = Field("x-connector-key", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    secret: SecretRef


class SalesforceStream(BaseModel):
    """Change Data Capture over the Streaming API (CometD/Bayeux long polling)."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field("/data/OpportunityChangeEvent", pattern=r"^/data/[A-Za-z0-9_]+$")
    #: how long one long poll may stay open (Salesforce holds it up to 110 s)
    poll_timeout_s: float = Field(130.0, ge=5, le=600)
    #: the pause before a new session after the stream failed
    reconnect_s: float = Field(10.0, ge=0.1, le=3600)


class ConnectionEvents(BaseModel):
    """Which events make this connection sync at once (``connections[].events``)."""

    model_config = ConfigDict(extra="forbid")

    #: Partner Center webhook events trigger a pull-back of the referrals they name
    partner_center: bool = False
    #: the CRM's change events trigger a sync of the records they name: Salesforce Change
    #: Data Capture, or Dataverse webhook posts (which need ``dataverse``)
    crm: bool = False
    dataverse: DataverseWebhookAuth | None = None
    salesforce: SalesforceStream = Field(default_factory=SalesforceStream)


class EventsSettings(BaseModel):
    """The event receiver of ``connector run`` and how events are turned into cycles.

    Bound to 127.0.0.1 by default. Another host needs TLS served here
    (``tls_cert_file``, ``tls_key_file``) or a TLS proxy in front
    (``behind_tls_proxy: true``): Dataverse sends its key with every post.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9466, ge=0, le=65535)
    #: the receiver's address as Partner Center and Dataverse reach it (https)
    public_url: HttpsUrl | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    behind_tls_proxy: bool = False
    #: the largest body read (Dataverse trims its context above 256 KB)
    max_body_bytes: int = Field(512 * 1024, ge=1024, le=8 * 1024 * 1024)
    #: requests handled at once; more are answered 503 at once
    max_in_flight: int = Field(32, ge=1, le=1024)
    #: how long a connection's events gather before its targeted cycle starts
    debounce_s: float = Field(0.5, ge=0, le=60)
    #: record and referral ids kept waiting per connection (memory); beyond it the ids
    #: are dropped and a full cycle runs soon instead
    max_pending: int = Field(1000, ge=10, le=1_000_000)
    #: ids one targeted cycle reads at most, one call each; when more wait, the
    #: connection's scheduled cycle runs now instead (it lists them all for less)
    batch_size: int = Field(100, ge=1, le=10_000)
    #: record and referral reads targeted cycles may make per minute and connection (an
    #: API budget); beyond it the scheduled cycle runs instead of more targeted ones
    max_reads_per_minute: int = Field(600, ge=1, le=1_000_000)
    #: targeted cycles running at once, over every connection
    concurrency: int = Field(2, ge=1, le=32)
    partner_center: PartnerCenterEvents = Field(default_factory=PartnerCenterEvents)

    @model_validator(mode="after")
    def _safe(self) -> EventsSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        if (
            self.enabled
            and self.host not in _LOOPBACK
            and not (self.tls_cert_file or self.behind_tls_proxy)
        ):
            raise ValueError(
                f"events.host {self.host} is reachable from other machines, and Dataverse "
                "sends its key with every post: serve TLS (tls_cert_file and tls_key_file), "
                "or put a TLS proxy in front and set behind_tls_proxy: true, or keep host "
                "127.0.0.1"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None
