"""Failures that stop a whole run instead of failing one record.

A refused credential or a throttle longer than the run may wait says nothing about
the record being pushed: every other record would meet it too. Marking each record
failed would fill the dead letters and every record's sync-error field with the same
message (and keep sending refused requests), so the engine stops the run at the first
one: :class:`~connector.errors.AuthenticationFailed` (exit 2, the message names the
system and the settings to fix) or :class:`~connector.errors.Throttled` (exit 3, the
next cycle resumes).
"""

from __future__ import annotations

from connector.errors import (
    AuthenticationFailed,
    ConnectorError,
    CoreError,
    Throttled,
    is_authentication_failure,
)

#: what to check, per system, when it refuses the connector's credentials
_CREDENTIAL_SETTINGS = {
    "core": "core.client_id and core.client_secret (with core.auth refresh_token: sign in "
    "again with `connector auth login`)",
    "salesforce": "crm.client_id and crm.client_secret (or crm.private_key_file / "
    "crm.access_token, per crm.auth) and crm.login_url",
    "dataverse": "crm.tenant, crm.client_id and crm.client_secret, and that the application "
    "user exists in the environment with a security role",
}
_SYSTEM_NAMES = {"core": "the deal core (Partner Center)", "salesforce": "Salesforce"}


def run_stop(
    error: ConnectorError, *, connection: str, crm_system: str
) -> AuthenticationFailed | Throttled | None:
    """The error that stops the run for ``error``, or None when it is the record's own.

    ``crm_system`` names the connection's CRM (``salesforce`` or ``dataverse``): a
    refusal that is not the core's came from it.
    """
    if isinstance(error, Throttled | AuthenticationFailed):
        return error
    if not is_authentication_failure(error):
        return None
    system = "core" if isinstance(error, CoreError) else crm_system
    return credentials_refused(system, error.code, error.message, connection=connection)


def credentials_refused(
    system: str, code: str | None, detail: str, *, connection: str
) -> AuthenticationFailed:
    """One clear message: which system refused, which settings to check, what was spared."""
    name = _SYSTEM_NAMES.get(system, system.capitalize())
    settings = _CREDENTIAL_SETTINGS.get(system, "its credentials")
    return AuthenticationFailed(
        f"{name} refused the connector's credentials ({code or 'no code'}); the run stopped "
        f"at the first refusal and no record was marked failed. Check "
        f"connections[{connection}].{settings}, then run again. The server said: {detail}",
        status=401,
    )
