"""Telling a refused server certificate apart from a network failure.

httpx reports both as ``ConnectError``; a certificate the CA store does not trust
never heals by retrying, and its fix is a setting (the CA file), so it gets its own,
permanent error message naming that setting.
"""

from __future__ import annotations

import ssl


def certificate_rejected(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a failed certificate verification."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def untrusted_message(what: str, setting: str) -> str:
    """The message for a refused certificate during ``what``; ``setting`` is the CA setting."""
    return (
        f"{what}: the TLS check failed: the server's certificate is not signed by a "
        f"trusted CA. Verification is always on; if the server uses a private CA (such as "
        f"the sandbox's, .connector/sandbox-ca.pem), set {setting} to that CA's PEM file"
    )
