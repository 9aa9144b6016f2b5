"""Helpers of the daemon tests: configs for a sandbox, the health port, waiting bounded."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from sandbox.harness import SandboxServer

ROOT = Path(__file__).parents[3]
WAIT_S = 90.0


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sandbox_config_data(
    sb: SandboxServer,
    *,
    names: Iterable[str] = ("sandbox-salesforce",),
    schedules: dict[str, dict[str, Any]] | None = None,
    core: dict[str, Any] | None = None,
    crm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """config/sandbox.yaml pointed at ``sb``, with only ``names`` and the given overrides."""
    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    text = sb.localize(text)
    data: dict[str, Any] = YAML(typ="safe").load(text)
    wanted = list(names)
    data["connections"] = [c for c in data["connections"] if c["name"] in wanted]
    assert [c["name"] for c in data["connections"]] == wanted, "unknown connection name"
    for conn in data["connections"]:
        conn["mapping"] = str(ROOT / conn["mapping"])
        conn["schedule"] = (schedules or {}).get(conn["name"], {"interval_s": 300, "jitter_s": 0})
        conn["core"].update(core or {})
        conn["crm"].update(crm or {})
    data.pop("state_url", None)
    return data


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)
    return path


def http_get(address: tuple[str, int], path: str) -> tuple[int, str]:
    host, port = address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:  # /readyz answers 503 with a JSON body
        return int(exc.code), exc.read().decode()


def get_json(address: tuple[str, int], path: str) -> tuple[int, dict[str, Any]]:
    status, body = http_get(address, path)
    return status, dict(json.loads(body))


def scrape(address: tuple[str, int]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics as {(sample name, labels): value}."""
    status, body = http_get(address, "/metrics")
    assert status == 200, body
    return parse_metrics(body)


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return samples


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)
