"""Partner Center's webhooks in the sandbox: the registration API and signed event posts.

As published (MicrosoftDocs partner-center-sdk ``develop/partner-center-webhooks.md``
and ``partner-center-webhook-events.md``; learn.microsoft.com for the related-referral
events): ``/webhooks/v1/registration`` registers one callback URL for a list of events
(``POST`` creates, ``PUT`` updates, ``GET`` reads it; ``DELETE`` is the sandbox's own:
Microsoft documents none), ``/registration/events`` lists the event names,
``/registration/validationEvents`` posts a ``test-created`` event. Each event is
``{EventName, ResourceUri, ResourceName, AuditUri, ResourceChangeUtcDate}``, signed
with RSA-SHA256 over the body (PKCS #1 v1.5) by a certificate whose URL is sent in
``x-ms-certificate-url``; the signature goes in ``Authorization: Signature …``, or in
``x-ms-signature`` when the registration set ``SignatureTokenToMsSignatureHeader``.

The sandbox's signing certificate is issued by the sandbox's own CA (the one its TLS
certificate comes from), served at ``/_sandbox/events/signing-certificate.cer``.
Referral events name the partner's referrals; Microsoft's referral in an engagement
gives the ``related-referral-*`` events.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.events.bus import EventBus
from sandbox.partner_center import fields as f

REGISTRATION = "/webhooks/v1/registration"
CERTIFICATE_PATH = "/_sandbox/events/signing-certificate.cer"
EVENTS = (
    "referral-created",
    "referral-updated",
    "related-referral-created",
    "related-referral-updated",
    "test-created",
)
RESOURCE_BASE = "https://api.partnercenter.microsoft.com/engagements/v1/referrals/"


class Signer:
    """An RSA key and a certificate for it, issued by the sandbox's CA."""

    def __init__(self, ca_cert_pem: bytes, ca_key_pem: bytes) -> None:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pcnotifications-dispatch")])
            )
            .issuer_name(ca_cert.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        self.der = self.certificate.public_bytes(serialization.Encoding.DER)

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


class PartnerCenterEvents:
    """The registration (one per tenant, as documented) and the posts it asks for."""

    def __init__(
        self, bus: EventBus, http: Callable[[], httpx.Client], now: Callable[[], dt.datetime]
    ) -> None:
        self.bus = bus
        self._http = http
        self._now = now
        self.signer: Signer | None = None
        self.registration: dict[str, Any] | None = None
        self.certificate_url: str | None = None
        #: posts answered, by status (tests look at refusals)
        self.answers: list[int] = []

    def use_ca(self, ca_cert_pem: bytes, ca_key_pem: bytes) -> None:
        self.signer = Signer(ca_cert_pem, ca_key_pem)

    def register(self, body: dict[str, Any], origin: str) -> None:
        self.registration = {
            "SubscriberId": (self.registration or {}).get("SubscriberId", str(uuid.uuid4())),
            "WebhookUrl": str(body["WebhookUrl"]),
            "WebhookEvents": [str(e) for e in body.get("WebhookEvents") or []],
            "SignatureTokenToMsSignatureHeader": bool(
                body.get("SignatureTokenToMsSignatureHeader")
                or body.get("signatureTokenToMsSignatureHeader")
            ),
        }
        self.certificate_url = origin + CERTIFICATE_PATH
        self.bus.senders["partner_center"] = self._build

    def unregister(self) -> None:
        self.registration = None
        self.bus.senders.pop("partner_center", None)

    # ------------------------------------------------------------------ events

    def _build(
        self, kind: str, referral_id: str, referral: dict[str, Any]
    ) -> Callable[[], bool] | None:
        registration = self.registration
        if registration is None or kind not in ("created", "updated"):
            return None
        related = "related-" if f.is_microsofts(referral) else ""
        name = f"{related}referral-{kind}"
        if name not in registration["WebhookEvents"]:
            return None
        return self.post(name, RESOURCE_BASE + referral_id, "referral")

    def post(self, name: str, resource_uri: str, resource: str) -> Callable[[], bool]:
        registration = self.registration
        signer = self.signer
        assert registration is not None and signer is not None
        stamp = self._now().strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"
        body = json.dumps(
            {
                "EventName": name,
                "ResourceUri": resource_uri,
                "ResourceName": resource,
                "AuditUri": None,
                "ResourceChangeUtcDate": stamp,
            }
        ).encode()
        signature = f"Signature {signer.sign(body)}"
        headers = {
            "Content-Type": "application/json",
            "X-MS-Certificate-Url": str(self.certificate_url),
            "X-MS-Signature-Algorithm": "rsa-sha256",
        }
        if registration["SignatureTokenToMsSignatureHeader"]:
            headers["x-ms-signature"] = signature
        else:
            headers["Authorization"] = signature
        url = registration["WebhookUrl"]

        def deliver() -> bool:
            response = self._http().post(url, content=body, headers=headers)
            self.answers.append(response.status_code)
            return response.status_code < 300

        return deliver

    # ------------------------------------------------------------------ routes

    def routes(self, check_token: Callable[[Request], bool]) -> list[BaseRoute]:
        async def registration(request: Request) -> Response:
            if not check_token(request):
                return _error(401, "unauthenticated", "the bearer token is missing or expired")
            if request.method == "GET":
                if self.registration is None:
                    return _error(404, "notFound", "no webhook registration")
                shown = {k: self.registration[k] for k in ("WebhookUrl", "WebhookEvents")}
                return JSONResponse(shown)
            if request.method == "DELETE":
                self.unregister()
                return Response(status_code=204)
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "badRequest", "the body is not JSON")
            if not isinstance(body, dict) or not isinstance(body.get("WebhookUrl"), str):
                return _error(400, "badRequest", "WebhookUrl is required")
            unknown = [e for e in body.get("WebhookEvents") or [] if e not in EVENTS]
            if unknown:
                return _error(400, "badRequest", f"unknown events: {', '.join(map(str, unknown))}")
            self.register(body, str(request.base_url).rstrip("/"))
            assert self.registration is not None
            shown = {
                k: self.registration[k] for k in ("SubscriberId", "WebhookUrl", "WebhookEvents")
            }
            return JSONResponse(shown)

        async def events(request: Request) -> Response:
            if not check_token(request):
                return _error(401, "unauthenticated", "the bearer token is missing or expired")
            return JSONResponse(list(EVENTS))

        async def validation(request: Request) -> Response:
            if not check_token(request):
                return _error(401, "unauthenticated", "the bearer token is missing or expired")
            if (
                self.registration is None
                or "test-created" not in self.registration["WebhookEvents"]
            ):
                return _error(400, "badRequest", "register for test-created first")
            correlation = str(uuid.uuid4())
            uri = f"https://api.partnercenter.microsoft.com{REGISTRATION}/validationEvents/{correlation}"
            self.bus.submit("partner_center", self.post("test-created", uri, "test"))
            return JSONResponse({"correlationId": correlation})

        async def certificate(request: Request) -> Response:
            if self.signer is None:
                return Response(status_code=404)
            return Response(self.signer.der, media_type="application/pkix-cert")

        return [
            Route(REGISTRATION, registration, methods=["GET", "POST", "PUT", "DELETE"]),
            Route(REGISTRATION + "/events", events, methods=["GET"]),
            Route(REGISTRATION + "/validationEvents", validation, methods=["POST"]),
            Route(CERTIFICATE_PATH, certificate, methods=["GET"]),
        ]


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"code": code, "description": message}, status_code=status)
