"""API calls per system for a first sync and a no-change sync, Dynamics 365 and Salesforce.

    .venv/bin/python benchmarks/calls_per_sync.py                    # 500 opportunities
    .venv/bin/python benchmarks/calls_per_sync.py --opportunities 2000

For each CRM: a fresh sandbox on loopback (in this process), the CRM's sandbox
connection from config/, three syncs: the first, a second that reads the echo of
the first's status writes, and a third where nothing changed. Each row shows the
run report's ``api_calls`` (what the connector counted) next to the sandbox's
``GET /_sandbox/stats`` for the same run (what the servers saw, token calls in
``entra``). Bounded: 6 syncs in all, no loops waiting on anything.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from connector.settings import Settings, load_config
from connector.sync.oneshot import run_once
from connector.sync.report import RunReport
from sandbox.harness import SandboxServer

ROOT = Path(__file__).parents[1]
CRMS = {
    "dynamics": ("sandbox-dynamics.yaml", "sandbox-dynamics"),
    "salesforce": ("sandbox.yaml", "sandbox-salesforce"),
}
RUNS = ("first sync", "echo of the status writes", "no change")


def config_for(crm: str, url: str, ca_file: Path, workdir: Path) -> Path:
    file_name, connection = CRMS[crm]
    text = (ROOT / "config" / file_name).read_text(encoding="utf-8")
    text = text.replace("https://127.0.0.1:8700", url).replace(
        ".connector/sandbox-ca.pem", str(ca_file)
    )
    data = yaml.safe_load(text)
    data["connections"] = [c for c in data["connections"] if c["name"] == connection]
    for conn in data["connections"]:
        conn["mapping"] = str(ROOT / conn["mapping"])
    path = workdir / f"{crm}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def measure(crm: str, opportunities: int) -> list[tuple[str, RunReport, dict[str, int]]]:
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        SandboxServer(opportunities=opportunities, seed=7) as sb,
    ):
        workdir = Path(tmp)
        config_path = config_for(crm, sb.url, sb.ca_file, workdir)
        cfg = load_config(config_path)
        settings = Settings(state_url=f"sqlite:///{workdir / 'state.db'}", config=config_path)
        with sb.client() as admin:
            for run in RUNS:
                admin.post("/_sandbox/stats/reset").raise_for_status()
                (report,) = run_once(
                    settings,
                    cfg,
                    cfg.connections,
                    dry_run=False,
                    full=False,
                    console=Console(file=io.StringIO()),
                )
                stats: dict[str, Any] = admin.get("/_sandbox/stats").raise_for_status().json()
                rows.append((run, report, {k: int(v) for k, v in stats["totals"].items()}))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opportunities", type=int, default=500)
    args = parser.parse_args(argv)
    if not 1 <= args.opportunities <= 20_000:
        parser.error("--opportunities must be 1..20000")
    table = Table(title=f"API calls per sync, {args.opportunities} opportunities (loopback)")
    for column in (
        "CRM",
        "run",
        "pulled",
        "created",
        "mirrored",
        "report: CRM",
        "report: core",
        "sandbox: CRM",
        "sandbox: core",
        "sandbox: entra",
        "seconds",
    ):
        table.add_column(column, justify="left" if column in ("CRM", "run") else "right")
    for crm in CRMS:
        system = "dataverse" if crm == "dynamics" else "salesforce"
        for run, report, seen in measure(crm, args.opportunities):
            table.add_row(
                crm,
                run,
                str(report.pulled),
                str(report.created),
                str(report.mirrored),
                str(report.api_calls.get(system, 0)),
                str(report.api_calls.get("core", 0)),
                str(seen.get(system, 0)),
                str(seen.get("core", 0)),
                str(seen.get("entra", 0)),
                f"{report.duration_s:.1f}",
            )
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
