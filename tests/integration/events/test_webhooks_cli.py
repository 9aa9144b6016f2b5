"""``connector webhooks register|list|delete`` against the sandbox's registration API.

The registration is the one Partner Center documents (``/webhooks/v1/registration``,
a token for ``api.partnercenter.microsoft.com``); once registered, a referral change
in the sandbox is posted, signed, to the registered URL.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from events_world import SF, admin_client, config_data, referrals, running, total, wait_for
from ruamel.yaml import YAML
from typer.testing import CliRunner

from connector.cli import app
from sandbox.harness import SandboxServer
from sandbox.partner_center.fields import is_microsofts, is_partners


def _write(path: Path, data: dict[str, object]) -> Path:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)
    return path


class Runner:
    """The CLI in-process; the logging it points at the runner's stream is put back."""

    def invoke(self, app: Any, args: list[str]) -> Any:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            return CliRunner().invoke(app, args)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)


def test_register_list_and_delete_the_partner_center_webhook(tmp_path: Path) -> None:
    runner = Runner()
    with SandboxServer(opportunities=20, seed=4) as sandbox, admin_client(sandbox) as admin:
        data = config_data(sandbox, (SF,), connection_events={"crm": False})
        config = _write(
            tmp_path / "config.yaml", {**data, "state_url": f"sqlite:///{tmp_path / 'state.db'}"}
        )
        with running(data, tmp_path / "state.db") as daemon:
            wait_for(lambda: daemon.health[SF].cycles >= 1, "the first scheduled cycle")
            assert daemon.events is not None and daemon.events.receiver is not None
            callback = f"{daemon.events.receiver.url}/events/partner-center"

            result = runner.invoke(app, ["webhooks", "list", "--config", str(config)])
            assert result.exit_code == 0, result.output
            assert "no webhook registration" in result.output

            result = runner.invoke(
                app, ["webhooks", "register", "--config", str(config), "--url", callback]
            )
            assert result.exit_code == 0, result.output
            assert "registered" in result.output
            assert "related-referral-updated" in result.output
            assert (
                "CRM events are off (connections[sandbox-salesforce].events.crm)" in result.output
            )

            result = runner.invoke(app, ["webhooks", "list", "--config", str(config)])
            assert result.exit_code == 0 and callback in result.output, result.output

            # the sandbox now posts referral events, signed, to the receiver
            everything = referrals(admin)
            waiting = {
                r["engagementId"] for r in everything if is_microsofts(r) and r["status"] == "New"
            }
            deal = next(r for r in everything if is_partners(r) and r["engagementId"] in waiting)
            admin.post(f"/_sandbox/core/microsoft/{deal['id']}/accept", json={}).raise_for_status()
            wait_for(
                lambda: (
                    total(daemon, "connector_events_accepted_total", source="partner_center") >= 1
                ),
                "a signed event accepted",
                30,
            )

            result = runner.invoke(app, ["webhooks", "delete", "--config", str(config)])
            assert result.exit_code == 0 and "deleted" in result.output, result.output
            result = runner.invoke(app, ["webhooks", "list", "--config", str(config)])
            assert "no webhook registration" in result.output


def test_register_without_a_url_names_the_setting(tmp_path: Path) -> None:
    with SandboxServer(opportunities=0) as sandbox:
        data = config_data(sandbox, (SF,))
        config = _write(tmp_path / "config.yaml", data)
        result = Runner().invoke(app, ["webhooks", "register", "--config", str(config)])
        assert result.exit_code == 4
        assert "events.public_url" in result.output
