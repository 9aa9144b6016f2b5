"""The connector's one error tree.

::

    ConnectorError
     ├── ConfigError              bad settings or config file (permanent)
     ├── MappingError             a mapping file that does not validate (permanent)
     ├── StateError               the state store failed
     └── RemoteError              a remote system answered badly or not at all
          ├── CrmError            Salesforce / Dataverse
          │    └── QuotaExhausted the CRM's API budget share is spent: stop the run
          ├── CoreError           the deal core (Partner Center referrals API)
          │    ├── PreconditionFailed   412: the eTag was stale
          │    └── NotFound             404
          ├── Throttled           any system asked for a longer wait than allowed: stop the run
          └── AuthenticationFailed  any system refused the credentials: stop the run

Retryability is a property of the instance (``transient``), decided where the
response is classified (``connector.dealcore.classify`` and the CRM adapters),
never by the caller. Messages say what happened, to which record and what to
do; they never carry tokens, passwords or URLs with query strings, and as a last
guard every message (and code) is scrubbed of the registered secrets and tokens as
the error is built (:mod:`connector.redaction`): a server that echoes a credential in
its error text cannot carry it into a log, a report or the state store.
"""

from __future__ import annotations

from connector.redaction import scrub


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""

    transient: bool = False
    #: a short stable code, used as the dead-letter reason and in reports
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, transient: bool | None = None):
        message = scrub(message)
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = scrub(code)
        if transient is not None:
            self.transient = transient

    def __str__(self) -> str:
        return self.message


class ConfigError(ConnectorError):
    """The settings or a config file are wrong; the message names the setting."""

    code = "config"


class MappingError(ConnectorError):
    """A mapping file failed validation; ``problems`` holds every problem found."""

    code = "mapping"

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


class StateError(ConnectorError):
    code = "state"


class RemoteError(ConnectorError):
    """A remote system failed. ``status`` is the HTTP status when there was one."""

    system: str = "remote"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        transient: bool | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, code=code, transient=transient)
        self.status = status
        self.retry_after = retry_after


class CrmError(RemoteError):
    system = "crm"
    code = "crm_error"


class QuotaExhausted(CrmError):
    """The configured share of the CRM's API allowance is used: stop cleanly."""

    code = "quota_exhausted"


class CoreError(RemoteError):
    system = "core"
    code = "core_error"


class PreconditionFailed(CoreError):
    code = "precondition_failed"


class NotFound(CoreError):
    code = "not_found"


class Throttled(RemoteError):
    """A system asked (``Retry-After``) for a longer wait than ``max_throttle_wait_s``
    allows: the run stops cleanly (exit 3) and the next cycle resumes. Never retried."""

    # not "throttled": that is what a server may call its own 429
    code = "throttle_wait_exceeded"


class AuthenticationFailed(RemoteError):
    """A system refused the connector's own credentials: no record's fault, and every
    other call would be refused too, so the run stops at once (exit 2) and no record
    is marked failed. The message names the system and the settings to fix."""

    code = "authentication_failed"


#: codes of a refused credential: an API's 401 after a fresh token, or a token endpoint
#: refusing the client or its grant (RFC 6749 section 5.2; Dataverse's ``auth_failed``)
AUTHENTICATION_CODES = frozenset(
    {
        AuthenticationFailed.code,
        "unauthenticated",
        "auth_failed",
        "token_refused",
        "invalid_client",
        "invalid_grant",
        "invalid_request",
        "invalid_scope",
        "unauthorized_client",
        "unsupported_grant_type",
        "INVALID_SESSION_ID",
        "INVALID_AUTH_HEADER",
    }
)


def is_authentication_failure(error: BaseException) -> bool:
    """Whether ``error`` says the credentials were refused (not a record, not a blip)."""
    if isinstance(error, AuthenticationFailed):
        return True
    if not isinstance(error, RemoteError) or error.transient:
        return False
    return error.status == 401 or error.code in AUTHENTICATION_CODES
