"""What keeping "days to expiry" right costs: CRM calls per cycle, day after day.

    .venv/bin/python benchmarks/countdown.py                    # 100 incoming deals
    .venv/bin/python benchmarks/countdown.py --incoming 400 --days 3

For each CRM: a fresh sandbox on loopback (in this process) with its seeded
opportunities (their co-sell deals invite Microsoft, whose answer is pending) and
``--incoming`` deals received (New, expiring in 14 days), the CRM's sandbox connection
with incoming deals turned on. After two settling cycles, the sandbox clock moves one
day at a time; each day runs three cycles. Each row: the CRM's calls by method as the
sandbox saw them, and the status writes the run made (``mirrored``). The first cycle of
a day writes every changed value in batches; the next reads their echo; the third
calls the CRM as a cycle with nothing to do. Bounded: (2 + 3 × days) syncs per CRM.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from calls_per_sync import CRMS, config_for
from rich.console import Console
from rich.table import Table

from connector.settings import Settings, load_config
from connector.sync.oneshot import run_once
from sandbox.harness import SandboxServer

ROOT = Path(__file__).parents[1]


def with_incoming_deals(config: Path, workdir: Path) -> None:
    """The config's mapping copied with ``inbound.create_opportunities`` on."""
    text = config.read_text(encoding="utf-8")
    mapping = Path(next(x for x in text.splitlines() if "mapping:" in x).split(":", 1)[1].strip())
    copy = workdir / f"mapping-{mapping.name}"
    copy.write_text(
        mapping.read_text(encoding="utf-8").replace(
            "create_opportunities: false", "create_opportunities: true"
        ),
        encoding="utf-8",
    )
    config.write_text(text.replace(str(mapping), str(copy)), encoding="utf-8")


def measure(crm: str, incoming: int, days: int, opportunities: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    api = "salesforce" if crm == "salesforce" else "dataverse"
    with (
        tempfile.TemporaryDirectory() as tmp,
        SandboxServer(opportunities=opportunities, seed=5) as sb,
        sb.client(60) as admin,
    ):
        workdir = Path(tmp)
        config = config_for(crm, sb.url, sb.ca_file, workdir)
        with_incoming_deals(config, workdir)
        cfg = load_config(config)
        settings = Settings(state_url=f"sqlite:///{workdir / 'state.db'}", config=config)
        for n in range(incoming):
            sender = "Microsoft" if n % 2 else "Partner"
            admin.post("/_sandbox/core/incoming", json={"from": sender}).raise_for_status()

        def cycle(label: str) -> None:
            admin.post("/_sandbox/stats/reset").raise_for_status()
            (report,) = run_once(
                settings,
                cfg,
                cfg.connections,
                dry_run=False,
                full=False,
                console=Console(file=io.StringIO()),
            )
            calls = admin.get("/_sandbox/stats").raise_for_status().json()["calls"].get(api, {})
            shown = ", ".join(f"{m} {n}" for m, n in sorted(calls.items()))
            rows.append((crm, label, report.outcome, str(report.mirrored), shown))

        cycle("settle 1")
        cycle("settle 2")
        for day in range(1, days + 1):
            admin.post("/_sandbox/clock", json={"days": 1}).raise_for_status()
            for n, what in enumerate(("first", "echo", "third"), start=1):
                cycle(f"day {day}, cycle {n} ({what})")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incoming", type=int, default=100)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--opportunities", type=int, default=200)
    parser.add_argument("--crm", choices=sorted(CRMS), action="append")
    args = parser.parse_args(argv)
    table = Table("CRM", "cycle", "outcome", "status writes", "CRM calls (method n)")
    for crm in args.crm or sorted(CRMS):
        for row in measure(crm, args.incoming, args.days, args.opportunities):
            table.add_row(*row)
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
