"""Commands that read what a sync wrote never create a state store of their own."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connector.cli import app

ROOT = Path(__file__).parents[3]


def invoke(*args: str, state_url: str) -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return CliRunner().invoke(
            app,
            [*args, "--config", str(ROOT / "config" / "sandbox.yaml")],
            env={"CONNECTOR_STATE_URL": state_url, "COLUMNS": "200"},
        )
    finally:  # the command points logging at the runner's stream, closed afterwards
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(
    "args",
    [("errors", "list"), ("errors", "show", "1"), ("errors", "retry", "--all"), ("status",)],
    ids=" ".join,
)
def test_a_mistyped_state_url_is_a_config_error_not_a_new_store(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    typo = tmp_path / "stat.db"
    result = invoke(*args, state_url=f"sqlite:///{typo}")
    assert result.exit_code == 4, result.output
    assert "no sync has run with this state store" in result.output
    assert "CONNECTOR_STATE_URL" in result.output
    assert not typo.exists()
