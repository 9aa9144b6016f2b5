"""``connector mappings init``: the shipped defaults and their schema, ready for an editor."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from connector.cli import app
from connector.mapping.defaults import MODELINE, schema_text
from connector.mapping.load import load_mapping

ROOT = Path(__file__).parents[3]


def test_init_writes_both_defaults_and_the_schema_they_point_at(tmp_path: Path) -> None:
    folder = tmp_path / "acme" / "mappings"
    result = CliRunner().invoke(app, ["mappings", "init", str(folder)])
    assert result.exit_code == 0, result.output
    schema = folder / "mapping.schema.json"
    assert json.loads(schema.read_text()) == json.loads(schema_text())
    for kind in ("salesforce", "dynamics"):
        text = (folder / f"{kind}.yaml").read_text(encoding="utf-8")
        first, rest = text.split("\n", 1)
        assert first == f"{MODELINE}{schema.resolve()}"  # absolute, no URL
        assert Path(first.removeprefix(MODELINE)).is_file()
        shipped = (ROOT / "mappings" / f"{kind}.yaml").read_text(encoding="utf-8")
        assert rest == shipped.split("\n", 1)[1]  # the shipped default, as it is
        assert load_mapping(folder / f"{kind}.yaml").crm == kind
    check = CliRunner().invoke(app, ["mappings", "check", str(folder / "salesforce.yaml")])
    assert check.exit_code == 0, check.output


def test_init_keeps_an_admins_file_unless_forced(tmp_path: Path) -> None:
    edited = tmp_path / "salesforce.yaml"
    edited.write_text("# mine\n", encoding="utf-8")
    refused = CliRunner().invoke(app, ["mappings", "init", str(tmp_path), "--crm", "salesforce"])
    assert refused.exit_code == 4
    assert "exists already" in refused.output and "--force" in refused.output
    assert edited.read_text(encoding="utf-8") == "# mine\n"
    forced = CliRunner().invoke(
        app, ["mappings", "init", str(tmp_path), "--crm", "salesforce", "--force"]
    )
    assert forced.exit_code == 0, forced.output
    assert not (tmp_path / "dynamics.yaml").exists()


def test_a_folder_that_moves_gets_a_relative_modeline(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["mappings", "init", str(tmp_path), "--crm", "dynamics", "--relative-schema"]
    )
    assert result.exit_code == 0, result.output
    first = (tmp_path / "dynamics.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == f"{MODELINE}./mapping.schema.json"


def test_the_schema_command_prints_the_committed_schema() -> None:
    result = CliRunner().invoke(app, ["mappings", "schema"])
    assert result.output == (ROOT / "mappings" / "mapping.schema.json").read_text("utf-8")
