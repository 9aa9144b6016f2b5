"""`connector run` refuses a broken configuration at start-up: exit 4, the setting named."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_world import ROOT, free_port, write_yaml
from ruamel.yaml import YAML

SF = "sandbox-salesforce"


def base_config(tmp: Path) -> dict[str, Any]:
    """A valid config (no sandbox needed: the checks fail before any cycle)."""
    data: dict[str, Any] = YAML(typ="safe").load(
        (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    )
    data["connections"] = [c for c in data["connections"] if c["name"] == SF]
    data["connections"][0]["mapping"] = str(ROOT / "mappings" / "salesforce.yaml")
    data["state_url"] = f"sqlite:///{tmp / 'state.db'}"
    return data


def unknown_key(data: dict[str, Any], tmp: Path) -> None:
    data["connections"][0]["shedule"] = data["connections"][0].pop("schedule")


def bad_cron(data: dict[str, Any], tmp: Path) -> None:
    data["connections"][0]["schedule"] = {"cron": "61 * * * *"}


def missing_mapping(data: dict[str, Any], tmp: Path) -> None:
    data["connections"][0]["mapping"] = str(tmp / "nowhere.yaml")


def broken_mapping(data: dict[str, Any], tmp: Path) -> None:
    text = (ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8")
    broken = text.replace("  unmapped: by_probability", "  unmaped: reject")
    assert broken != text
    (tmp / "broken.yaml").write_text(broken, encoding="utf-8")
    data["connections"][0]["mapping"] = str(tmp / "broken.yaml")


def missing_secret(data: dict[str, Any], tmp: Path) -> None:
    data["connections"][0]["core"]["client_secret"] = {"env": "CONNECTOR_TEST_UNSET_SECRET"}


def wrong_crm_mapping(data: dict[str, Any], tmp: Path) -> None:
    data["connections"][0]["mapping"] = str(ROOT / "mappings" / "dynamics.yaml")


CASES: list[tuple[Callable[[dict[str, Any], Path], None], list[str]]] = [
    (unknown_key, ["config.yaml:", "connections.0.shedule", "unknown key"]),
    (bad_cron, ["schedule", "cron '61 * * * *'"]),
    (missing_mapping, [f"connections[{SF}].mapping", "nowhere.yaml", "cannot read"]),
    (broken_mapping, [f"connections[{SF}].mapping", "broken.yaml:", "unmaped"]),
    (missing_secret, [f"connections[{SF}].core.client_secret", "CONNECTOR_TEST_UNSET_SECRET"]),
    (wrong_crm_mapping, [f"connections[{SF}].mapping", "written for dynamics"]),
]


@pytest.mark.parametrize(("breaks", "named"), CASES, ids=[c[0].__name__ for c in CASES])
def test_a_broken_configuration_exits_4_naming_the_setting(
    breaks: Callable[[dict[str, Any], Path], None], named: list[str], tmp_path: Path
) -> None:
    data = base_config(tmp_path)
    breaks(data, tmp_path)
    config = write_yaml(tmp_path / "config.yaml", data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    env["CONNECTOR_LOG_FORMAT"] = "json"
    done = _run(config, env, tmp_path)
    assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
    message = " ".join(done.stderr.split())  # rich wraps long lines
    for part in named:
        assert part in message, (part, done.stderr)
    assert "Traceback" not in done.stderr


def _run(config: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`connector run` on a free port, bounded: were the checks to pass, it would time out."""
    port = free_port()
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "run",
            "--config",
            str(config),
            "--health-port",
            str(port),
            "--grace-s",
            "1",
        ],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_valid_configuration_passes_the_start_up_checks(tmp_path: Path) -> None:
    """The base config of the cases above is valid: only the breakage makes them fail."""
    from connector.daemon import Daemon
    from connector.settings import ConfigFile, Settings

    data = base_config(tmp_path)
    d = Daemon(
        Settings(state_url=data.pop("state_url")), ConfigFile.model_validate(data), health_port=0
    )
    d.request_stop()
    assert d.wait() == 0
