"""Who may send events: Partner Center's signature, Dataverse's key.

Partner Center (its webhooks page, "How to authenticate the callback"): the required
headers are present (``Authorization`` or ``x-ms-signature``, ``x-ms-certificate-url``,
``x-ms-signature-algorithm``); the certificate is downloaded from that URL; its chain
and its issuer's organisation are checked; the body is verified against the base64
signature with RSA and the named hash (``rsa-sha256``; PKCS #1 v1.5, as the published
sample's ``RSACryptoServiceProvider.VerifyData``). The certificate URL is followed only
over https to the configured hosts (Microsoft's documented one by default), with a
size cap, no redirects and a cache.

Dataverse: the service endpoint's authentication type (``HttpHeader``, ``WebhookKey``
as ``?code=``, ``HttpQueryString``) carries a secret that is compared in constant time.

A refusal is a :class:`Refused` with a reason from :data:`REASONS` (a metric label).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from connector.errors import ConfigError
from connector.events.config import DataverseWebhookAuth, PartnerCenterEvents

log = logging.getLogger(__name__)

#: why an event was refused (closed: these are metric labels)
REASONS = (
    "unauthenticated",
    "bad_signature",
    "untrusted_certificate",
    "certificate_unavailable",
    "malformed",
    "body_too_large",
    "busy",
    "not_found",
    "method_not_allowed",
    "disabled",
)
#: the largest certificate downloaded (a certificate is 1-2 KB)
MAX_CERTIFICATE_BYTES = 64 * 1024
#: downloaded certificates kept (Microsoft signs with one at a time)
CERTIFICATE_CACHE = 8
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class Refused(Exception):
    """The event is not accepted; ``status`` is the HTTP answer, ``reason`` a metric label."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value.strip() if isinstance(value, str) and value.strip() else None


# ------------------------------------------------------------------- Partner Center


class SigningCertificates:
    """Partner Center's signing certificates: downloaded, checked, cached.

    ``anchors`` are the certificates a signing certificate must be issued by (the
    ``ca_file`` setting: roots and the intermediates the operator vouches for; else the
    trusted roots that httpx itself uses).
    """

    def __init__(
        self,
        options: PartnerCenterEvents,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.hosts = frozenset(h.lower() for h in options.certificate_hosts)
        self.anchors = _load_anchors(options.ca_file)
        self._http = http or httpx.Client(
            verify=_download_tls(options.ca_file), timeout=10.0, follow_redirects=False
        )
        self._clock = clock
        self._cache: OrderedDict[str, tuple[x509.Certificate, float]] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def certificate(self, url: str) -> x509.Certificate:
        """The checked certificate at ``url`` (cached for ``certificate_ttl_s``)."""
        self._check_url(url)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None and cached[1] > now:
                self._cache.move_to_end(url)
                return cached[0]
        cert = self._download(url)
        self.check(cert)
        with self._lock:
            self._cache[url] = (cert, now + self.options.certificate_ttl_s)
            while len(self._cache) > CERTIFICATE_CACHE:
                self._cache.popitem(last=False)
        return cert

    def _check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018 - a malformed port raises here
        except ValueError:
            raise Refused("untrusted_certificate", "x-ms-certificate-url is not a URL") from None
        if parts.scheme != "https" or parts.username or parts.password or parts.query:
            raise Refused(
                "untrusted_certificate",
                "x-ms-certificate-url must be a plain https URL; the event is refused",
            )
        if host not in self.hosts:
            raise Refused(
                "untrusted_certificate",
                f"the signing certificate is offered from {host or '(no host)'}, which is not "
                "in events.partner_center.certificate_hosts; the event is refused",
            )

    def _download(self, url: str) -> x509.Certificate:
        host = urlsplit(url).hostname
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise Refused(
                        "certificate_unavailable",
                        f"the signing certificate at {host} answered {response.status_code}",
                        status=503,
                    )
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_CERTIFICATE_BYTES:
                        raise Refused(
                            "untrusted_certificate",
                            f"the signing certificate at {host} is larger than "
                            f"{MAX_CERTIFICATE_BYTES} bytes",
                        )
        except httpx.HTTPError as exc:
            raise Refused(
                "certificate_unavailable",
                f"the signing certificate at {host} could not be read ({type(exc).__name__})",
                status=503,
            ) from None
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
        except ValueError:
            raise Refused(
                "untrusted_certificate", f"what {host} serves is not a certificate"
            ) from None

    def check(self, cert: x509.Certificate) -> None:
        """Valid now, issued by the configured organisation, chained to a trusted certificate."""
        _in_date(cert)
        organizations = [
            str(a.value) for a in cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        ]
        if self.options.issuer_organization not in organizations:
            raise Refused(
                "untrusted_certificate",
                f"the signing certificate is not issued by {self.options.issuer_organization} "
                "(events.partner_center.issuer_organization)",
            )
        # every candidate comes from the trusted file: one that signed it is enough
        issuer = self._issuer_of(cert)
        if issuer is not None:
            _in_date(issuer)
            return
        raise Refused(
            "untrusted_certificate",
            "the signing certificate does not chain to a trusted certificate; add the "
            "issuing certificates to events.partner_center.ca_file",
        )

    def _issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        for candidate in self.anchors:
            if candidate.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return candidate
        return None


def _in_date(cert: x509.Certificate) -> None:
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Refused("untrusted_certificate", "a certificate of the signature is out of date")


def _load_anchors(ca_file: Path | None) -> list[x509.Certificate]:
    path = Path(ca_file) if ca_file is not None else Path(certifi.where())
    try:
        return list(x509.load_pem_x509_certificates(path.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"events.partner_center.ca_file: cannot read certificates from {path}: {exc}"
        ) from None


def _download_tls(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def signature_of(headers: Mapping[str, str]) -> bytes:
    """The signature bytes from ``Authorization: Signature …`` or ``x-ms-signature``."""
    raw = _header(headers, "x-ms-signature") or _header(headers, "authorization")
    if raw is None:
        raise Refused("unauthenticated", "the event carries no signature")
    scheme, _, value = raw.partition(" ")
    if not value:
        value, scheme = scheme, "Signature"
    if scheme.lower() != "signature":
        raise Refused("unauthenticated", "the Authorization scheme is not Signature")
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Refused("bad_signature", "the signature is not base64") from None


def verify_partner_center(
    headers: Mapping[str, str], body: bytes, certificates: SigningCertificates
) -> None:
    """Raise :class:`Refused` unless ``body`` is signed as Partner Center signs events."""
    algorithm = _header(headers, "x-ms-signature-algorithm")
    url = _header(headers, "x-ms-certificate-url")
    if algorithm is None or url is None:
        raise Refused(
            "unauthenticated", "x-ms-certificate-url or x-ms-signature-algorithm is missing"
        )
    signature = signature_of(headers)
    kind, _, digest = algorithm.lower().partition("-")
    if kind != "rsa" or digest not in _HASHES:
        raise Refused("bad_signature", "the signature algorithm is not rsa-sha256/384/512")
    key = certificates.certificate(url).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused("untrusted_certificate", "the signing certificate has no RSA key")
    try:
        key.verify(signature, body, padding.PKCS1v15(), _HASHES[digest]())
    except InvalidSignature:
        raise Refused("bad_signature", "the signature does not match the body") from None


def check_url_token(query: Mapping[str, str], token: SecretStr | None) -> None:
    """The optional ``?token=`` of a Partner Center callback URL."""
    if token is None:
        return
    given = query.get("token")
    if given is None or not _same(given, token):
        raise Refused("unauthenticated", "the callback URL's token is missing or wrong")


# -------------------------------------------------------------------------- Dataverse


def verify_dataverse(
    auth: DataverseWebhookAuth,
    secret: SecretStr,
    headers: Mapping[str, str],
    query: Mapping[str, str],
) -> None:
    """Raise :class:`Refused` unless the post carries the service endpoint's secret."""
    if auth.kind == "header":
        given = _header(headers, auth.name)
    elif auth.kind == "webhook_key":
        given = query.get("code")
    else:
        given = query.get(auth.name)
    if given is None:
        raise Refused("unauthenticated", "the post carries no key")
    if not _same(given, secret):
        raise Refused("unauthenticated", "the post's key is wrong")


def _same(given: str, secret: SecretStr) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), secret.get_secret_value().encode("utf-8"))
