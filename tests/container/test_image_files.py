"""The Dockerfile and compose.yaml say what the issue asks (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from connector.settings import load_config

ROOT = Path(__file__).parents[2]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and all(f.startswith("python:3.11-slim") for f in froms)
    assert [rest for word, rest in steps if word == "USER"] == ["connector"]
    assert ("VOLUME", '["/data"]') in steps
    assert ("ENTRYPOINT", '["connector"]') in steps
    assert ("CMD", '["run"]') in steps
    assert any(word == "HEALTHCHECK" and "/healthz" in rest for word, rest in steps)
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert "CONNECTOR_STATE_URL=sqlite:////data/state.db" in env
    assert not re.search(r"(SECRET|PASSWORD|TOKEN)\w*=", env)  # no secrets baked in
    copied = [rest for word, rest in steps if word == "COPY"]
    assert not any(".env" in c or ".connector" in c for c in copied)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".env", ".connector/", ".venv/"} <= set(ignored)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load((ROOT / "compose.yaml").read_text("utf-8"))
    return data


def test_compose_runs_the_sandbox_and_the_daemon_with_an_optional_postgres() -> None:
    services = compose()["services"]
    assert set(services) == {"sandbox", "connector", "postgres"}
    assert services["sandbox"]["command"][0] == "sandbox"
    assert "user" not in services["sandbox"]  # the image's non-root user
    daemon = services["connector"]
    assert daemon["command"] == ["run"]
    assert daemon["depends_on"]["sandbox"]["condition"] == "service_healthy"
    assert daemon["depends_on"]["postgres"]["required"] is False
    assert services["postgres"]["profiles"] == ["postgres"]
    assert "profiles" not in daemon and "profiles" not in services["sandbox"]
    config = daemon["environment"]["CONNECTOR_CONFIG"]
    assert config.startswith("/app/config/")
    assert load_config(ROOT / "config" / Path(config).name).connections
    assert "state:/data" in daemon["volumes"]
    assert json.dumps(compose()).count("9464") >= 1
