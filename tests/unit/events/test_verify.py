"""Forged or unsigned events are refused; a correctly signed one is accepted.

The signing follows Partner Center's webhooks page (partner-center-sdk
``develop/partner-center-webhooks.md``): RSA over the body with the hash
``x-ms-signature-algorithm`` names, PKCS #1 v1.5, base64 in ``Authorization:
Signature …`` or ``x-ms-signature``, the certificate at ``x-ms-certificate-url``.
The certificate is served by an in-memory transport standing in for Microsoft's host.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from published_events import partner_center
from pydantic import SecretStr

from connector.events.config import DataverseWebhookAuth, PartnerCenterEvents
from connector.events.verify import (
    Refused,
    SigningCertificates,
    verify_dataverse,
    verify_partner_center,
)
from connector.settings import SecretRef

HOST = "3psostorageacct.blob.core.windows.net"
CERT_URL = f"https://{HOST}/cert/pcnotifications-dispatch.microsoft.com.cer"
BODY = partner_center("referral-updated")


class Issuer:
    """A CA named like Microsoft's, and signing certificates it issues."""

    def __init__(self, organization: str = "Microsoft Corporation") -> None:
        self.ca = trustme.CA(organization_name=organization)
        self.cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        self.key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)

    def signing(self, *, days: int = 30, start_days: int = -1) -> tuple[rsa.RSAPrivateKey, bytes]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pcnotifications")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=start_days))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(self.key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return key, cert.public_bytes(serialization.Encoding.DER)


def _sign(key: rsa.RSAPrivateKey, body: bytes, digest: hashes.HashAlgorithm | None = None) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), digest or hashes.SHA256())).decode()


@pytest.fixture
def microsoft() -> Issuer:
    return Issuer()


def _certificates(
    trusted: Issuer, served: bytes, tmp_path: Path, *, status: int = 200
) -> SigningCertificates:
    ca_file = tmp_path / "trusted.pem"
    trusted.ca.cert_pem.write_to_path(str(ca_file))
    options = PartnerCenterEvents(ca_file=ca_file)
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=served))
    return SigningCertificates(options, http=httpx.Client(transport=transport))


def _headers(
    signature: str, *, url: str = CERT_URL, algorithm: str = "rsa-sha256"
) -> dict[str, str]:
    return {
        "Authorization": f"Signature {signature}",
        "X-MS-Certificate-Url": url,
        "X-MS-Signature-Algorithm": algorithm,
    }


def test_a_correctly_signed_event_is_accepted(microsoft: Issuer, tmp_path: Path) -> None:
    key, der = microsoft.signing()
    certs = _certificates(microsoft, der, tmp_path)
    verify_partner_center(_headers(_sign(key, BODY)), BODY, certs)
    # the documented alternative header, and the PEM form of the certificate
    headers = _headers("")
    del headers["Authorization"]
    headers["x-ms-signature"] = f"Signature {_sign(key, BODY)}"
    verify_partner_center(headers, BODY, certs)
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    verify_partner_center(_headers(_sign(key, BODY)), BODY, _certificates(microsoft, pem, tmp_path))


def _refused(call: Callable[[], None]) -> Refused:
    with pytest.raises(Refused) as caught:
        call()
    return caught.value


def test_an_unsigned_event_is_refused(microsoft: Issuer, tmp_path: Path) -> None:
    _, der = microsoft.signing()
    certs = _certificates(microsoft, der, tmp_path)
    headers = _headers("x")
    del headers["Authorization"]
    assert _refused(lambda: verify_partner_center(headers, BODY, certs)).reason == "unauthenticated"
    assert _refused(lambda: verify_partner_center({}, BODY, certs)).reason == "unauthenticated"
    bearer = {**_headers("x"), "Authorization": "Bearer abc"}
    assert _refused(lambda: verify_partner_center(bearer, BODY, certs)).reason == "unauthenticated"


@pytest.mark.parametrize(
    "forge",
    [
        "tampered_body",
        "other_key",
        "not_base64",
        "sha1",
        "wrong_digest_named",
    ],
)
def test_a_forged_signature_is_refused(forge: str, microsoft: Issuer, tmp_path: Path) -> None:
    key, der = microsoft.signing()
    certs = _certificates(microsoft, der, tmp_path)
    body, algorithm = BODY, "rsa-sha256"
    signature = _sign(key, BODY)
    if forge == "tampered_body":
        body = BODY.replace(b"referral-updated", b"referral-created")
    elif forge == "other_key":
        signature = _sign(rsa.generate_private_key(public_exponent=65537, key_size=2048), BODY)
    elif forge == "not_base64":
        signature = "!!!"
    elif forge == "sha1":
        algorithm = "rsa-sha1"
        signature = _sign(key, BODY, hashes.SHA1())
    else:
        algorithm = "rsa-sha512"
    refusal = _refused(
        lambda: verify_partner_center(_headers(signature, algorithm=algorithm), body, certs)
    )
    assert refusal.reason == "bad_signature"
    assert refusal.status == 401


def test_a_certificate_from_an_untrusted_issuer_is_refused(tmp_path: Path) -> None:
    forger = Issuer("Microsoft Corporation")  # the right name, not the trusted certificate
    key, der = forger.signing()
    certs = _certificates(Issuer(), der, tmp_path)
    refusal = _refused(lambda: verify_partner_center(_headers(_sign(key, BODY)), BODY, certs))
    assert refusal.reason == "untrusted_certificate"


def test_a_certificate_not_issued_by_microsoft_is_refused(tmp_path: Path) -> None:
    other = Issuer("Contoso Ltd")
    key, der = other.signing()
    certs = _certificates(other, der, tmp_path)  # even when its CA is trusted
    refusal = _refused(lambda: verify_partner_center(_headers(_sign(key, BODY)), BODY, certs))
    assert refusal.reason == "untrusted_certificate"
    assert "Microsoft Corporation" in refusal.message


def test_an_expired_certificate_is_refused(microsoft: Issuer, tmp_path: Path) -> None:
    key, der = microsoft.signing(days=-1, start_days=-30)
    certs = _certificates(microsoft, der, tmp_path)
    refusal = _refused(lambda: verify_partner_center(_headers(_sign(key, BODY)), BODY, certs))
    assert refusal.reason == "untrusted_certificate"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/cert/pc.cer",
        f"http://{HOST}/cert/pc.cer",
        f"https://user:pw@{HOST}/cert/pc.cer",
        f"https://{HOST}/cert/pc.cer?x=1",
        "file:///etc/passwd",
        "not a url",
    ],
)
def test_a_certificate_url_off_the_allowed_hosts_is_never_fetched(
    url: str, microsoft: Issuer, tmp_path: Path
) -> None:
    key, der = microsoft.signing()
    fetched: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        return httpx.Response(200, content=der)

    ca_file = tmp_path / "trusted.pem"
    microsoft.ca.cert_pem.write_to_path(str(ca_file))
    certs = SigningCertificates(
        PartnerCenterEvents(ca_file=ca_file),
        http=httpx.Client(transport=httpx.MockTransport(serve)),
    )
    refusal = _refused(
        lambda: verify_partner_center(_headers(_sign(key, BODY), url=url), BODY, certs)
    )
    assert refusal.reason == "untrusted_certificate"
    assert fetched == []


def test_an_unreachable_certificate_asks_for_a_retry(microsoft: Issuer, tmp_path: Path) -> None:
    key, _ = microsoft.signing()
    certs = _certificates(microsoft, b"", tmp_path, status=503)
    refusal = _refused(lambda: verify_partner_center(_headers(_sign(key, BODY)), BODY, certs))
    assert (refusal.reason, refusal.status) == ("certificate_unavailable", 503)


def test_the_certificate_is_downloaded_once(microsoft: Issuer, tmp_path: Path) -> None:
    key, der = microsoft.signing()
    calls: list[int] = []

    def serve(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, content=der)

    ca_file = tmp_path / "trusted.pem"
    microsoft.ca.cert_pem.write_to_path(str(ca_file))
    certs = SigningCertificates(
        PartnerCenterEvents(ca_file=ca_file),
        http=httpx.Client(transport=httpx.MockTransport(serve)),
    )
    for _ in range(5):
        verify_partner_center(_headers(_sign(key, BODY)), BODY, certs)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("kind", "headers", "query"),
    [
        ("header", {"x-connector-key": "s3cret-value-1"}, {}),
        ("webhook_key", {}, {"code": "s3cret-value-1"}),
        ("query", {}, {"x-connector-key": "s3cret-value-1"}),
    ],
)
def test_dataverse_posts_need_the_endpoints_key(
    kind: str, headers: dict[str, str], query: dict[str, str]
) -> None:
    auth = DataverseWebhookAuth(kind=kind, secret=SecretRef(env="UNUSED"))  # type: ignore[arg-type]
    secret = SecretStr("s3cret-value-1")
    verify_dataverse(auth, secret, headers, query)
    wrong_headers = {k: "s3cret-value-2" for k in headers}
    wrong_query = {k: "s3cret-value-2" for k in query}
    assert (
        _refused(lambda: verify_dataverse(auth, secret, wrong_headers, wrong_query)).reason
        == "unauthenticated"
    )
    assert _refused(lambda: verify_dataverse(auth, secret, {}, {})).reason == "unauthenticated"
