"""Hostile files: what an operator or an attacker may point the connector at.

A file that is not a mapping (or config) file is refused without a line of it being
shown; a few hundred bytes of nested YAML aliases and an endless or oversized file
are refused before they are expanded or read (under a memory limit, where the old
reading of them ran out); a config in UTF-16, a secret file that is not UTF-8 or is
empty are configuration errors (exit 4) naming the file; an unmapped stage with no
probability is not told to set the policy it already sets.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from guard_world import ROOT, GuardWorld, guard_world
from typer.testing import CliRunner

from connector.cli import app
from connector.daemon import Daemon
from connector.settings import Settings, load_config
from connector.sync.report import Outcome

CLI = [sys.executable, "-m", "connector"]
#: the address-space limit of a CLI child: far more than the connector needs, far
#: less than expanding an alias bomb or reading an endless file takes
MEMORY_LIMIT = 1536 * 1024 * 1024


@pytest.fixture
def world(tmp_path: Path) -> Iterator[GuardWorld]:
    with guard_world(tmp_path, opportunities=10) as w:
        yield w


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """A CLI command in this process, logging restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", **(env or {})})
    finally:  # the command points logging at the runner's stream, closed afterwards
        root.handlers[:] = handlers
        root.setLevel(level)


def flat(text: str) -> str:
    """``text`` with the console's line wrapping undone (words joined by one space)."""
    return " ".join(text.split())


def limited_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """A CLI command in a child process whose memory is capped at :data:`MEMORY_LIMIT`."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        preexec_fn=cap,
        timeout=240,  # a guard against a hang, not a measure
        check=False,
        cwd=ROOT,
    )


# ------------------------------------------------------------------ not a mapping: not shown

#: a password-database look-alike; every user name and hash is distinctive
SHADOW_LINES = [
    "root:$6$q7Salt$Q7hashROOTabcdefghijklmnopqrstuvwxyz0123456789./ABCDEF:19700:0:99999:7:::",
    "daemonq7:*:19700:0:99999:7:::",
    "aliceq7:$y$j9T$q7SaltAlice$Q7hashALICE0123456789abcdef:19701:0:99999:7:::",
    "nobodyq7:!:19700::::::",
    "version:*:19700:0:99999:7:::",  # a user named like a mapping key
]


def shown(output: str) -> list[str]:
    """The pieces of :data:`SHADOW_LINES` found in ``output``."""
    pieces = {p for line in SHADOW_LINES for p in line.split(":") if len(p) >= 5}
    pieces.discard("version")  # also a mapping key, named in the messages
    return sorted(p for p in pieces if p in output)


def test_a_file_that_is_not_a_mapping_or_config_is_refused_without_being_shown(
    world: GuardWorld, tmp_path: Path
) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text("\n".join(SHADOW_LINES) + "\n", encoding="utf-8")
    pointing = world.config("salesforce", mapping=shadow)
    env = {"CONNECTOR_STATE_URL": world.state_url}

    results = {
        "mappings check": cli("mappings", "check", str(shadow)),
        "sync, mapping: shadow": cli("sync", "--once", "--config", str(pointing), env=env),
        "run, mapping: shadow": cli("run", "--config", str(pointing), "--health-port", "0"),
        "sync --config shadow": cli("sync", "--once", "--config", str(shadow), env=env),
    }

    for name, result in results.items():
        assert result.exit_code == 4, (name, result.output)
        assert shown(result.output) == [], name
        assert str(shadow) in result.output.replace("\n", ""), name
        assert "nothing of it is shown" in flat(result.output), name


# ------------------------------------------------------------------ aliases and sizes


def alias_bomb(levels: int, prefix: str = "") -> str:
    """Each level lists the previous one nine times: 9**levels nodes from a few lines."""
    names = [f"{prefix}{chr(ord('a') + n)}" for n in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [x,x,x,x,x,x,x,x,x]"]
    for before, name in pairwise(names):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{before}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(9), encoding="utf-8")  # 9**9 = 387 million nodes
    assert bomb.stat().st_size < 400

    done = limited_cli("mappings", "check", str(bomb))

    assert done.returncode == 4, done.stderr[-2000:]
    assert "aliases" in done.stderr and "10,000 nodes" in flat(done.stderr)


def test_an_endless_or_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # A valid mapping padded past the default limit (256 KiB) with comments.
    padded = tmp_path / "padded.yaml"
    text = (ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8")
    padded.write_text(text + ("# " + "x" * 78 + "\n") * 4000, encoding="utf-8")
    assert padded.stat().st_size > 300_000

    checked = cli("mappings", "check", str(padded))
    endless = limited_cli("mappings", "check", "/dev/zero")
    endless_config = limited_cli("status", "--config", "/dev/zero")
    raised = cli("mappings", "check", str(padded), env={"CONNECTOR_MAX_YAML_BYTES": "1000000"})

    results = {
        "padded mapping": (checked.exit_code, checked.output),
        "endless mapping": (endless.returncode, endless.stderr),
        "endless config": (endless_config.returncode, endless_config.stderr),
    }
    for name, (code, output) in results.items():
        assert code == 4, (name, output[-2000:])
        assert "CONNECTOR_MAX_YAML_BYTES" in output.replace("\n", ""), name
    assert raised.exit_code == 0, raised.output  # the limit is a setting


def test_a_running_daemon_refuses_an_alias_bomb_on_reload_and_keeps_its_mapping(
    tmp_path: Path,
) -> None:
    mapping = tmp_path / "salesforce.yaml"
    good = (ROOT / "mappings" / "salesforce.yaml").read_text(encoding="utf-8")
    mapping.write_text(good, encoding="utf-8")
    data = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    data["connections"] = [c for c in data["connections"] if c["name"] == "sandbox-salesforce"]
    data["connections"][0]["mapping"] = str(mapping)
    data["state_url"] = f"sqlite:///{tmp_path / 'state.db'}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    daemon = Daemon(Settings(), load_config(config), health_port=0)
    try:
        conn = daemon.connections[0]
        before = daemon.current_mapping(conn)
        # six levels: 531,441 nodes, which the old reading expanded in a few seconds
        mapping.write_text(good + alias_bomb(6, prefix="x_"), encoding="utf-8")
        stamp = mapping.stat().st_mtime + 10
        os.utime(mapping, (stamp, stamp))

        after = daemon.current_mapping(conn)

        assert after is before
        _, health = daemon.ready()
        errors = health["connections"][conn.name]["mapping_errors"]
        assert len(errors) == 1 and "aliases" in errors[0], errors
        assert daemon.metrics.mapping_errors.labels(conn.name)._value.get() == 1
    finally:
        daemon.request_stop()
        daemon.wait()


# ------------------------------------------------------------------ encodings and secret files

SECRET_ENV = "CONNECTOR_TEST_FILE_SECRET"


def test_a_utf16_config_is_a_configuration_error_naming_the_file(
    world: GuardWorld, tmp_path: Path
) -> None:
    config = world.config("salesforce")
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes(config.read_text(encoding="utf-8").encode("utf-16"))

    done = cli(
        "sync", "--once", "--config", str(utf16), env={"CONNECTOR_STATE_URL": world.state_url}
    )

    assert done.exit_code == 4, done.output
    assert str(utf16) in done.output.replace("\n", "") and "UTF-16" in flat(done.output)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"\xff\xfe\x00s\x00e\x00c\x00r\x00e\x00t", "not UTF-8"), (b"  \n", "is empty")],
    ids=["not utf-8", "empty"],
)
def test_an_unreadable_or_empty_secret_file_is_a_configuration_error_naming_it(
    world: GuardWorld, tmp_path: Path, content: bytes, problem: str
) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_bytes(content)
    ref = {"file": str(secret_file)}
    config = world.config("salesforce", crm={"client_secret": ref}, core={"client_secret": ref})
    world.post("/_sandbox/stats/reset", {})

    done = cli(
        "sync", "--once", "--config", str(config), env={"CONNECTOR_STATE_URL": world.state_url}
    )

    assert done.exit_code == 4, done.output
    assert str(secret_file) in done.output.replace("\n", "")
    assert problem in flat(done.output) and "client_secret" in done.output
    assert world.get("/_sandbox/stats")["calls"] == {}  # no sign-in was tried


# ------------------------------------------------------------------ stage messages


def test_an_unmapped_stage_without_probability_is_not_told_to_set_the_policy_it_sets(
    world: GuardWorld,
) -> None:
    # The shipped Salesforce mapping sets stages.unmapped: by_probability already.
    assert "unmapped: by_probability" in (ROOT / "mappings" / "salesforce.yaml").read_text()
    world.post(
        "/_sandbox/salesforce/stages", {"MasterLabel": "Whiteboard", "DefaultProbability": None}
    )
    record = next(
        o
        for o in world.sf_opportunities()
        if o["Sync_with_Partner_Center__c"] and not o["IsClosed"] and o["Primary_Contact__c"]
    )
    world.post(f"/_sandbox/salesforce/opportunities/{record['Id']}", {"StageName": "Whiteboard"})

    report = world.sync(world.config("salesforce"))

    assert report.outcome == Outcome.PARTIAL
    error = next(o for o in world.sf_opportunities() if o["Id"] == record["Id"])[
        "CoSell_Sync_Error__c"
    ]
    assert "'Whiteboard' is not in the mapping" in error
    assert "no probability" in error and "add it under stages.map" in error
    assert "set stages.unmapped" not in error
