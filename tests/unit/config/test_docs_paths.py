"""Every file the README and the docs name is in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: a span in backticks that is only a file name or a path of this repository
NAMED_FILE = re.compile(r"`([A-Za-z0-9_.*/-]+\.(?:md|py|ya?ml|json|toml))`")
#: files the connector or a person creates at run time, named as examples
MADE_AT_RUN_TIME = {"run.json", "report.json", "your.yaml", "your-mapping.yaml"}


def named_files(doc: Path) -> list[str]:
    return [
        name
        for name in NAMED_FILE.findall(doc.read_text(encoding="utf-8"))
        if not name.startswith((".", "/")) and name not in MADE_AT_RUN_TIME
    ]


def exists(name: str) -> bool:
    if "/" in name:
        return any(ROOT.glob(name))
    return any(p for p in ROOT.rglob(name) if ".venv" not in p.parts and ".git" not in p.parts)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_file_exists(doc: Path) -> None:
    missing = [name for name in named_files(doc) if not exists(name)]
    assert missing == [], f"{doc.name} names files that are not in the repository"


def test_the_readme_says_which_state_url_wins_as_the_code_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from connector.settings import Settings, load_config, state_url

    monkeypatch.delenv("CONNECTOR_STATE_URL", raising=False)
    config = load_config(ROOT / "config" / "sandbox.yaml")
    config = config.model_copy(update={"state_url": "sqlite:///from-config.db"})
    from_env = Settings(state_url="sqlite:///from-env.db")
    assert state_url(from_env, config) == "sqlite:///from-env.db"  # the variable wins
    assert state_url(Settings(), config) == "sqlite:///from-config.db"
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    row = next(line for line in readme if line.startswith("| `CONNECTOR_STATE_URL`"))
    assert "wins over the config file's `state_url`" in row, row
