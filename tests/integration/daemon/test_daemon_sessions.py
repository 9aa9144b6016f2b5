"""The daemon signs in to Salesforce once, not once a cycle, and again when the session
expires (against the HTTPS sandbox)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_world import sandbox_config_data

from connector.crm.salesforce.auth import SalesforceAuth
from connector.crm.salesforce.sessions import SalesforceToken
from connector.daemon import Daemon
from connector.settings import ConfigFile, Settings
from sandbox.harness import SandboxServer

SF = "sandbox-salesforce"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(opportunities=40, seed=13) as sb:
        yield sb


def test_cycles_of_a_connection_share_one_sign_in_until_the_session_expires(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_ins: list[str] = []
    real_token = SalesforceAuth.token

    def counted(self: SalesforceAuth) -> SalesforceToken:
        sign_ins.append(self.connection)
        return real_token(self)

    monkeypatch.setattr(SalesforceAuth, "token", counted)
    data = sandbox_config_data(sandbox)
    settings = Settings(state_url=f"sqlite:///{tmp_path / 'state.db'}")
    d = Daemon(settings, ConfigFile.model_validate(data), health_port=0)
    try:
        (conn,) = d.connections
        reports = [d.run_cycle(conn), d.run_cycle(conn)]
        assert sign_ins == [f"connections[{SF}]"]
        # Salesforce ends the session (it timed out, or an admin revoked it): the next
        # cycle meets INVALID_SESSION_ID, signs in again once and goes on
        sandbox.ctx.tokens.revoke_all()
        reports.append(d.run_cycle(conn))
        assert len(sign_ins) == 2
        reports.append(d.run_cycle(conn))
        assert len(sign_ins) == 2
    finally:
        d.request_stop()
        assert d.wait() == 0
    assert [r.outcome for r in reports[1:]] == ["ok"] * 3, [r.error for r in reports]
    assert reports[0].created > 0
    # a cycle that reuses the session counts no sign-in among its Salesforce calls
    assert reports[3].api_calls["salesforce"] < reports[2].api_calls["salesforce"]
