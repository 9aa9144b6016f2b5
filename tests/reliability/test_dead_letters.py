"""Dead letters over the sandbox: ``connector errors list|show|retry|discard`` and auto-retry."""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_world import write_config
from rich.console import Console
from typer.testing import CliRunner

from connector.cli import app
from connector.settings import Settings, load_config
from connector.state.store import DeadLetter, Store
from connector.sync.oneshot import run_once
from connector.sync.report import RunReport
from sandbox.harness import SandboxServer
from sandbox.partner_center.fields import is_partners


class LetterWorld:
    def __init__(self, sb: SandboxServer, admin: httpx.Client, tmp: Path) -> None:
        self.admin = admin
        self.state_url = f"sqlite:///{tmp / 'state.db'}"
        self.config = write_config(tmp / "config.yaml", sb.url, sb.ca_file, self.state_url)

    def sync(self) -> RunReport:
        cfg = load_config(self.config)
        settings = Settings(state_url=self.state_url, config=self.config)
        out = Console(file=io.StringIO(), width=200)
        (report,) = run_once(settings, cfg, cfg.connections, dry_run=False, full=False, console=out)
        return report

    def settle(self) -> None:
        """Sync twice: the second reads back the errors the first wrote to the CRM."""
        self.sync()
        self.sync()

    def cli(self, *args: str) -> Any:
        env = {"CONNECTOR_STATE_URL": self.state_url, "COLUMNS": "250"}
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            return CliRunner().invoke(app, [*args, "--config", str(self.config)], env=env)
        finally:  # the command points logging at the runner's stream, closed afterwards
            root.handlers[:] = handlers
            root.setLevel(level)

    def letters(self, include_resolved: bool = False) -> list[DeadLetter]:
        with Store.open(self.state_url) as store:
            return store.list_dead_letters(include_resolved=include_resolved)

    def record(self, record_id: str) -> dict[str, Any]:
        url = f"/_sandbox/salesforce/opportunities/{record_id}"
        return dict(self.admin.get(url).raise_for_status().json())

    def edit(self, record_id: str, **values: Any) -> None:
        self.admin.post(
            f"/_sandbox/salesforce/opportunities/{record_id}", json=values
        ).raise_for_status()

    def referral_ids_by_crm(self) -> Counter[str]:
        data = self.admin.get("/_sandbox/core/referrals").raise_for_status().json()
        items = data["value"] if isinstance(data, dict) else data
        return Counter(
            r["externalReferenceId"]
            for r in items
            if is_partners(r) and r.get("direction") == "Outgoing"
        )


@pytest.fixture
def letter_world(tmp_path: Path) -> Iterator[LetterWorld]:
    with SandboxServer(opportunities=150, seed=5) as sb, sb.client() as admin:
        yield LetterWorld(sb, admin, tmp_path)


def test_list_and_show_name_each_rejected_record_with_its_reason(letter_world: LetterWorld) -> None:
    world = letter_world
    report = world.sync()
    letters = world.letters()
    assert len(letters) == sum(report.rejected.values()) > 0
    listed = world.cli("errors", "list")
    assert listed.exit_code == 0, listed.output
    for letter in letters:
        assert letter.crm_id in listed.output
    assert "invalid_record" in listed.output
    shown = world.cli("errors", "show", str(letters[0].id))
    assert shown.exit_code == 0, shown.output
    assert letters[0].crm_id in shown.output and letters[0].message[:40] in shown.output
    assert world.cli("errors", "show", "999999").exit_code == 1


def test_discard_resolves_without_retrying(letter_world: LetterWorld) -> None:
    world = letter_world
    world.settle()
    letter = world.letters()[0]
    result = world.cli("errors", "discard", str(letter.id))
    assert result.exit_code == 0, result.output
    assert letter.id not in {d.id for d in world.letters()}
    world.sync()
    assert letter.crm_id not in {d.crm_id for d in world.letters()}  # not retried
    assert world.cli("errors", "discard", str(letter.id)).exit_code == 1


def test_a_letter_discarded_right_after_the_first_sync_stays_discarded(
    letter_world: LetterWorld,
) -> None:
    """The first sync writes the error into the record (its stamp moves); the letter is
    discarded before any other cycle: the next two cycles neither open a new letter for
    it nor write its error again."""
    world = letter_world
    world.sync()
    letter = world.letters()[0]
    assert world.cli("errors", "discard", str(letter.id)).exit_code == 0
    stamp = world.record(letter.crm_id)["SystemModstamp"]
    for _ in range(2):
        report = world.sync()
        assert dict(report.rejected) == {}, report.as_json()
        assert letter.crm_id not in {d.crm_id for d in world.letters()}
    history = [d for d in world.letters(include_resolved=True) if d.crm_id == letter.crm_id]
    assert [(d.id, d.attempts, d.resolved) for d in history] == [(letter.id, 1, True)]
    assert world.record(letter.crm_id)["SystemModstamp"] == stamp  # not written again


def test_a_discarded_record_that_changes_fails_again_in_a_new_letter(
    letter_world: LetterWorld,
) -> None:
    world = letter_world
    world.sync()
    letter = next(d for d in world.letters() if "contact" not in d.message.lower())
    assert world.cli("errors", "discard", str(letter.id)).exit_code == 0
    world.sync()
    world.edit(letter.crm_id, Description="edited by sales ops, still invalid")
    report = world.sync()
    assert sum(report.rejected.values()) == 1
    (reopened,) = [d for d in world.letters() if d.crm_id == letter.crm_id]
    assert reopened.id != letter.id and reopened.attempts == 1


def test_retry_makes_the_next_cycle_process_the_record_again(letter_world: LetterWorld) -> None:
    world = letter_world
    world.settle()
    letter, other = world.letters()[:2]
    result = world.cli("errors", "retry", str(letter.id))
    assert result.exit_code == 0, result.output
    marked = {d.id: d for d in world.letters()}
    assert marked[letter.id].reason_code == f"retry:{letter.reason_code}"
    assert marked[other.id].reason_code == other.reason_code
    # The cursor is past every record: only the retry mark brings this one back.
    report = world.sync()
    assert sum(report.rejected.values()) == 1  # re-processed: still invalid, rejected again
    after = {d.crm_id: d for d in world.letters()}
    assert after[letter.crm_id].reason_code == letter.reason_code
    assert after[letter.crm_id].attempts == letter.attempts + 1
    assert after[other.crm_id].attempts == other.attempts  # not asked, not retried
    assert world.cli("errors", "retry", "--all").exit_code == 0
    assert all(d.reason_code.startswith("retry:") for d in world.letters())


def test_a_fixed_record_is_retried_by_itself_and_keeps_one_letter(
    letter_world: LetterWorld,
) -> None:
    world = letter_world
    world.sync()
    letters = world.letters()
    fixable = [d for d in letters if "contact" in d.message.lower()]
    assert fixable, [d.message for d in letters]
    target = fixable[0]
    world.edit(target.crm_id, How_can_Microsoft_help__c=None)
    world.sync()
    assert target.crm_id not in {d.crm_id for d in world.letters()}
    assert world.referral_ids_by_crm()[target.crm_id] == 1
    open_per_record = Counter(d.crm_id for d in world.letters())
    assert max(open_per_record.values(), default=0) <= 1
    history = [d for d in world.letters(include_resolved=True) if d.crm_id == target.crm_id]
    assert [d.resolved for d in history] == [True]
