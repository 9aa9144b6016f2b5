"""The connector's one error tree.

::

    ConnectorError
     ├── ConfigError              bad settings or config file (permanent)
     ├── MappingError             a mapping file that does not validate (permanent)
     ├── StateError               the state store failed
     └── RemoteError              a remote system answered badly or not at all
          ├── CrmError            Salesforce / Dataverse
          │    └── QuotaExhausted the CRM's API budget share is spent: stop the run
          └── CoreError           the deal core (Partner Center referrals API)
               ├── PreconditionFailed   412: the eTag was stale
               └── NotFound             404

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
