"""The benchmark's connections point at the sandbox it starts, and nowhere else."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from connector.settings import load_config

ROOT = Path(__file__).resolve().parents[3]
SANDBOX = "https://127.0.0.1:18700"


def pipeline_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "benchmarks/pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def urls(value: Any) -> list[str]:
    if isinstance(value, dict):  # an OAuth scope is a name that looks like a URL
        return [u for k, v in value.items() if k != "scope" for u in urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in urls(v)]
    return [value] if isinstance(value, str) and "://" in value else []


@pytest.mark.parametrize("crm", ["salesforce", "dynamics"])
def test_every_address_of_a_benchmark_connection_is_the_sandbox(crm: str, tmp_path: Path) -> None:
    pipeline = pipeline_module()
    sb = pipeline.Sandbox(SANDBOX, tmp_path / "ca.pem", None, None)
    data = pipeline.connection_config(crm, sb, 16)
    path = tmp_path / "bench.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")
    connection = load_config(path).connections[0]
    # the settings as loaded, defaults included (an authority left out would be public)
    loaded = json.loads(connection.model_dump_json())
    found = urls(loaded)
    assert found
    assert all(u.startswith(SANDBOX) for u in found), [
        u for u in found if not u.startswith(SANDBOX)
    ]
