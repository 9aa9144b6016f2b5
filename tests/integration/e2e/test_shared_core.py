"""Two connections, one core tenant: each pull-back lists the other's referrals and leaves
them alone, without reading them.

The sandbox's config/sandbox.yaml holds a Salesforce and a Dataverse connection on the
same core. The Dataverse one syncs first; the Salesforce one's first sync then writes
enough to list its pull-back in slices (``$select``, so every referral comes partial)
and meets the other connection's referrals among its own.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_world import ROOT, World
from rich.console import Console

from connector.dealcore.client import ReferralsClient
from connector.settings import Settings, load_config
from connector.sync.oneshot import run_once
from connector.sync.pullback import LISTED_FIELDS, NOT_THIS_CONNECTION
from connector.sync.report import RunReport
from connector.sync.tuning import Tuning


def both_connections(world: World, path: Path) -> Path:
    """config/sandbox.yaml (both CRMs on one core), pointed at this world's sandbox."""
    text = (ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8")
    text = text.replace("https://127.0.0.1:8700", world.sb.url)
    text = text.replace(".connector/sandbox-ca.pem", str(world.sb.ca_file))
    data = yaml.safe_load(text)
    for conn in data["connections"]:
        conn["mapping"] = str(ROOT / conn["mapping"])
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def sync_one(world: World, config: Path, name: str, tuning: Tuning) -> RunReport:
    cfg = load_config(config)
    settings = Settings(state_url=world.state_url, config=config)
    (conn,) = [c for c in cfg.connections if c.name == name]
    (report,) = run_once(
        settings,
        cfg,
        [conn],
        dry_run=False,
        full=False,
        console=Console(file=io.StringIO(), width=200),
        tuning=tuning,
    )
    return report


@pytest.mark.parametrize("world", ["salesforce"], indirect=True)
def test_a_sliced_pull_back_reads_no_referral_of_another_connection(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = both_connections(world, tmp_path / "both.yaml")
    tuning = Tuning(pull_slice=40)
    first = sync_one(world, config, "sandbox-dynamics", tuning)
    theirs = {r["id"] for r in world.referrals()}  # the Dataverse connection's, all sent
    assert first.created > 0 and theirs

    selects: list[Any] = []
    read: list[str] = []
    real_list, real_get = ReferralsClient.list_changed, ReferralsClient.get

    def list_spy(self: ReferralsClient, since: Any, **kwargs: Any) -> Iterator[Any]:
        selects.append(kwargs.get("select"))
        return real_list(self, since, **kwargs)

    def get_spy(self: ReferralsClient, referral_id: str) -> Any:
        read.append(referral_id)
        return real_get(self, referral_id)

    monkeypatch.setattr(ReferralsClient, "list_changed", list_spy)
    monkeypatch.setattr(ReferralsClient, "get", get_spy)
    second = sync_one(world, config, "sandbox-salesforce", tuning)
    assert second.outcome in ("ok", "partial"), second.error  # seeded defects: rejected
    # the pull-back was listed in slices of listed fields: every referral came partial
    assert len(selects) >= 3 and all(sel == LISTED_FIELDS for sel in selects)
    assert not set(read) & theirs, sorted(set(read) & theirs)[:5]
    assert second.skipped[NOT_THIS_CONNECTION] == len(theirs)
    # what it did read is its own: new incoming deals it creates records for
    incoming = {r["id"] for r in world.all_referrals() if r.get("direction") == "Incoming"}
    assert set(read) <= incoming
    assert len(read) == len(set(read))
