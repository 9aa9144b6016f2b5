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


def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's stages by name, each with its instructions."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in instructions():
        if word == "FROM":
            current = found.setdefault(rest.split(" AS ")[-1], [])
        current.append((word, rest))
    return found


def test_the_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert all(f.startswith("python:3.11-slim") for f in froms)
    # build, the sandbox for compose, and the product: the last, so the default target
    assert list(stages()) == ["build", "sandbox", "runtime"]
    product = stages()["runtime"]
    assert [rest for word, rest in product if word == "USER"] == ["connector"]
    assert [rest for word, rest in stages()["sandbox"] if word == "USER"] == ["connector"]
    assert ("VOLUME", '["/data"]') in product
    assert ("ENTRYPOINT", '["connector"]') in product
    assert ("CMD", '["run"]') in product
    assert any(word == "HEALTHCHECK" and "/healthz" in rest for word, rest in product)
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert "CONNECTOR_STATE_URL=sqlite:////data/state.db" in env
    assert not re.search(r"(SECRET|PASSWORD|TOKEN)\w*=", env)  # no secrets baked in
    copied = [rest for word, rest in steps if word == "COPY"]
    assert not any(".env" in c or ".connector" in c for c in copied)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".env", ".connector/", ".venv/"} <= set(ignored)


def test_the_production_image_carries_no_sandbox() -> None:
    """The wheel is the connector's only; the sandbox's extra and folder go to its stage."""
    for name in ("build", "runtime"):
        copied = [rest.split() for word, rest in stages()[name] if word == "COPY"]
        assert not [c for c in copied if any(p.strip("./") == "sandbox" for p in c)], name
        assert "[sandbox]" not in " ".join(rest for _, rest in stages()[name]), name
    assert ("COPY", "--from=build /opt/venv /opt/venv") in stages()["runtime"]
    sandbox = " ".join(rest for _, rest in stages()["sandbox"])
    assert "[sandbox]" in sandbox and "sandbox ./sandbox" in sandbox
    assert "PYTHONPATH=/app" in sandbox  # `connector sandbox` finds the package


def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load((ROOT / "compose.yaml").read_text("utf-8"))
    return data


def test_compose_runs_the_sandbox_and_the_daemon_with_an_optional_postgres() -> None:
    services = compose()["services"]
    assert set(services) == {"sandbox", "connector", "postgres"}
    assert services["sandbox"]["command"][0] == "sandbox"
    assert services["sandbox"]["build"] == {"context": ".", "target": "sandbox"}
    assert services["connector"]["build"] == "."  # the last stage: the product
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
