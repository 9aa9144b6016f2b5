"""The command line's own manners: ``--version``, shell completion, flags shown as flags."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from connector import __version__
from connector.cli import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(get_command(app))


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"connector {__version__}"
    assert version("cosell-connector") == __version__  # one place says the version


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="connector")
    assert result.exit_code == 0, result.output
    assert "_connector_completion" in result.output
    assert "--install-completion" in CliRunner().invoke(app, ["--help"]).output


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "connector")
def test_help_shows_no_value_type_on_flags(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_options_that_take_a_value_still_show_its_type() -> None:
    result = CliRunner().invoke(app, ["sync", "--help"], env={"COLUMNS": "120"})
    assert "<path>" in result.output
