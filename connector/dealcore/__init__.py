"""The deal core (Partner Center referrals API): client, tokens, payloads, retries.

The engine uses :class:`ReferralsClient` behind a :class:`TokenProvider`; the pure
payload functions build and read the Referral JSON.
"""

from connector.dealcore.auth import (
    ClientCredentialsTokens,
    RefreshTokenTokens,
    TokenProvider,
    device_code_login,
)
from connector.dealcore.client import DEFAULT_BASE_URL, ReferralsClient, odata_string
from connector.dealcore.payload import (
    parse_referral,
    patch_ops,
    referral_body,
    referral_link,
    status_ops,
)
from connector.retry import RateGate, RetryPolicy

__all__ = [
    "DEFAULT_BASE_URL",
    "ClientCredentialsTokens",
    "RateGate",
    "ReferralsClient",
    "RefreshTokenTokens",
    "RetryPolicy",
    "TokenProvider",
    "device_code_login",
    "odata_string",
    "parse_referral",
    "patch_ops",
    "referral_body",
    "referral_link",
    "status_ops",
]
