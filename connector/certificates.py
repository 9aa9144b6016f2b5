"""TLS rules: which URLs may carry a secret, and what a refused certificate means.

Every endpoint that receives a client secret or a token (login and token URLs, the
CRM instance or environment, the deal core) must be ``https://``: plain ``http://``
would send the credential in clear text, even on loopback, so it is refused when the
config is read and again where a server-given URL is followed.

httpx reports a refused certificate and a network failure alike (``ConnectError``);
a certificate that is not trusted, or that names another host, never heals by
retrying, and each has its own fix, so each gets its own permanent message.
"""

from __future__ import annotations

import ssl
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH / X509_V_ERR_IP_ADDRESS_MISMATCH
_HOST_MISMATCH_CODES = frozenset({62, 64})
_HOST_MISMATCH_TEXT = ("hostname mismatch", "ip address mismatch", "doesn't match")


def tls_url_problem(url: str) -> str | None:
    """Why ``url`` may not receive a secret or a token, or None when it may.

    The message never repeats the URL itself (it could carry a password); it names
    the scheme and the host only.
    """
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return "this is not a URL; write https://host/..."
    scheme = parts.scheme.lower()
    if scheme != "https":
        shown = f"{scheme}://" if scheme else "a URL without a scheme"
        return (
            f"{shown} is refused: this URL receives a secret or a token, which must "
            "never travel in clear text; write an https:// URL (the sandbox serves https too)"
        )
    if not host:
        return "this https URL names no host; write https://host/..."
    if parts.username is not None or parts.password is not None:
        return (
            f"the URL of {host} carries a user name or password; remove it (secrets are "
            "references such as {env: NAME}, never part of a URL)"
        )
    return None


def certificate_rejected(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a failed certificate verification."""
    return _verification_error(exc) is not None


def _verification_error(exc: BaseException) -> BaseException | None:
    """The certificate failure inside ``exc``: its causes, and the exceptions that
    requests and urllib3 wrap in ``args`` or ``reason`` instead of chaining."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    named: BaseException | None = None  # one that only says so in its text
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        if named is None and "CERTIFICATE_VERIFY_FAILED" in str(current):
            named = current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked.extend(current.args)
        pending.extend(x for x in linked if isinstance(x, BaseException))
    return named


def host_mismatch(exc: BaseException) -> bool:
    """True when the certificate was refused because it names another host."""
    found = _verification_error(exc)
    if found is None:
        return False
    if (
        isinstance(found, ssl.SSLCertVerificationError)
        and found.verify_code in _HOST_MISMATCH_CODES
    ):
        return True
    text = str(found).lower()
    return any(marker in text for marker in _HOST_MISMATCH_TEXT)


def untrusted_message(what: str, setting: str, exc: BaseException | None = None) -> str:
    """The message for a refused certificate during ``what``; ``setting`` is the CA setting.

    With ``exc``, a certificate that is valid but issued for another host gets its own
    message: the fix is the URL (or the server's certificate), not the CA file.
    """
    if exc is not None and host_mismatch(exc):
        return (
            f"{what}: the TLS check failed: the server's certificate was issued for another "
            "host name than the one in the URL. Verification is always on; use the host "
            "name the certificate names in the URL (check the setting's host and any proxy), "
            "or give the server a certificate for that host"
        )
    return (
        f"{what}: the TLS check failed: the server's certificate is not signed by a "
        f"trusted CA. Verification is always on; if the server uses a private CA (such as "
        f"the sandbox's, .connector/sandbox-ca.pem), set {setting} to that CA's PEM file"
    )


def _https_only(url: str) -> str:
    problem = tls_url_problem(url)
    if problem is not None:
        raise ValueError(problem)
    return url


#: a URL that receives a secret or a token: https only (no exception, not even loopback)
HttpsUrl = Annotated[str, AfterValidator(_https_only)]
