"""The reconciliation phase against in-memory fakes of the CRM and the core (real store)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.crm.base import ApiUsage
from connector.errors import CoreError, PreconditionFailed
from connector.mapping.load import load_mapping
from connector.model import ReferralState, Status, Substatus
from connector.state.store import Link, LinkState, Store
from connector.sync.engine import SyncEngine
from connector.sync.reconcile import (
    NOTHING_TO_MIRROR,
    RECONCILE_CURSOR,
    reconcile_deleted_records,
)
from connector.sync.report import RunReport

ROOT = Path(__file__).parents[3]
CONN = "acme"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeCrm:
    gone: set[str] = field(default_factory=set)
    reconcile_every: timedelta | None = timedelta(hours=6)
    asked: list[list[str]] = field(default_factory=list)
    usage: ApiUsage = field(default_factory=ApiUsage)
    system: str = "salesforce"

    def missing_records(self, crm_ids: Sequence[str]) -> set[str]:
        self.asked.append(list(crm_ids))
        return {i for i in crm_ids if i in self.gone}


@dataclass
class FakeCore:
    """Referrals by id; ``fail`` makes the next PATCH raise that error."""

    referrals: dict[str, ReferralState] = field(default_factory=dict)
    fail: list[Exception] = field(default_factory=list)
    patches: list[tuple[str, str | None]] = field(default_factory=list)
    calls: int = 0

    def patch(self, referral_id: str, ops: list[dict[str, Any]], etag: str | None) -> ReferralState:
        self.patches.append((referral_id, etag))
        if self.fail:
            raise self.fail.pop(0)
        closed = replace(
            self.referrals[referral_id],
            status=Status.CLOSED,
            substatus=Substatus.LOST,
            etag=f"{etag}+1",
        )
        self.referrals[referral_id] = closed
        return closed

    def get(self, referral_id: str) -> ReferralState:
        return self.referrals[referral_id]


def referral(n: int) -> ReferralState:
    return ReferralState(
        id=f"ref-{n}",
        engagement_id=f"eng-{n}",
        etag=f"e{n}",
        status=Status.ACTIVE,
        substatus=Substatus.ACCEPTED,
        direction="Outgoing",
        updated=NOW,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'state.db'}", clock=lambda: NOW)
    yield opened
    opened.close()


def world(
    store: Store, action: str = "flag", links: int = 3
) -> tuple[SyncEngine, FakeCrm, FakeCore]:
    mapping = load_mapping(ROOT / "mappings" / "salesforce.yaml")
    mapping = mapping.model_copy(update={"on_record_deleted": action})
    crm, core = FakeCrm(), FakeCore()
    for n in range(links):
        core.referrals[f"ref-{n}"] = referral(n)
        store.save_link(
            CONN,
            Link(
                connection=CONN,
                crm_id=f"crm-{n}",
                state=LinkState.LINKED,
                referral_id=f"ref-{n}",
                etag=f"e{n}",
                status="Active",
                substatus="Accepted",
            ),
        )
    engine = SyncEngine(
        CONN,
        crm=crm,  # type: ignore[arg-type]
        core=core,  # type: ignore[arg-type]
        store=store,
        mapping=mapping,
        link_for=lambda referral_id: f"https://partner.example/{referral_id}",
        clock=lambda: NOW,
    )
    return engine, crm, core


def test_flag_opens_one_letter_naming_the_referral_and_writes_nothing_to_the_core(
    store: Store,
) -> None:
    engine, crm, core = world(store)
    crm.gone = {"crm-1"}
    report = RunReport(CONN)
    reconcile_deleted_records(engine.context, report)
    assert crm.asked == [["crm-0", "crm-1", "crm-2"]]
    assert report.failed == {"record_deleted": 1} and core.patches == []
    (letter,) = store.list_dead_letters(CONN)
    assert (letter.crm_id, letter.reason_code) == ("crm-1", "record_deleted")
    assert "ref-1" in letter.message and "Active/Accepted" in letter.message
    assert store.get_cursor(CONN, RECONCILE_CURSOR) == NOW.isoformat()


def test_a_discarded_flag_stays_discarded(store: Store) -> None:
    engine, crm, _ = world(store)
    crm.gone = {"crm-1"}
    crm.reconcile_every = timedelta(0)
    reconcile_deleted_records(engine.context, RunReport(CONN))
    (letter,) = store.list_dead_letters(CONN)
    store.discard_dead_letter(letter.id)
    again = RunReport(CONN)
    reconcile_deleted_records(engine.context, again)
    assert again.failed == {} and again.skipped["record_deleted"] == 1
    assert store.list_dead_letters(CONN) == []


def test_close_lost_closes_the_referral_and_leaves_nothing_to_mirror(store: Store) -> None:
    engine, crm, core = world(store, "close_lost")
    crm.gone = {"crm-0", "crm-2"}
    report = RunReport(CONN)
    reconcile_deleted_records(engine.context, report)
    assert report.closed == 2 and report.failed == {}
    assert core.patches == [("ref-0", "e0"), ("ref-2", "e2")]
    link = store.get_link(CONN, "crm-0")
    assert link is not None and link.state == LinkState.TERMINAL
    assert (link.status, link.substatus) == ("Closed", "Lost")
    assert link.mirrored_fingerprint == NOTHING_TO_MIRROR
    assert store.links_to_mirror(CONN) == []  # no write to a record that is gone


def test_close_lost_reads_again_after_a_412(store: Store) -> None:
    engine, crm, core = world(store, "close_lost", links=1)
    crm.gone = {"crm-0"}
    core.referrals["ref-0"] = replace(core.referrals["ref-0"], etag="newer")
    core.fail = [PreconditionFailed("stale", status=412)]
    report = RunReport(CONN)
    reconcile_deleted_records(engine.context, report)
    assert core.patches == [("ref-0", "e0"), ("ref-0", "newer")]
    assert report.closed == 1


def test_a_referral_the_core_will_not_close_is_flagged_with_its_reason(store: Store) -> None:
    engine, crm, core = world(store, "close_lost", links=1)
    crm.gone = {"crm-0"}
    core.fail = [CoreError("only an active referral closes", code="InvalidTransition")]
    report = RunReport(CONN)
    reconcile_deleted_records(engine.context, report)
    (letter,) = store.list_dead_letters(CONN)
    assert "InvalidTransition" in letter.message and report.failed == {"record_deleted": 1}


def test_a_transient_core_failure_leaves_the_check_to_be_done_again(store: Store) -> None:
    engine, crm, core = world(store, "close_lost", links=1)
    crm.gone = {"crm-0"}
    core.fail = [CoreError("busy", code="http_503", transient=True)]
    reconcile_deleted_records(engine.context, RunReport(CONN))
    assert store.get_cursor(CONN, RECONCILE_CURSOR) is None
    assert store.list_dead_letters(CONN) == []
    reconcile_deleted_records(engine.context, report := RunReport(CONN))
    assert report.closed == 1


def test_the_interval_decides_and_none_turns_it_off(store: Store) -> None:
    engine, crm, _ = world(store)
    store.set_cursor(CONN, RECONCILE_CURSOR, (NOW - timedelta(hours=5)).isoformat())
    reconcile_deleted_records(engine.context, RunReport(CONN))
    assert crm.asked == []  # checked five hours ago: not due
    store.set_cursor(CONN, RECONCILE_CURSOR, (NOW - timedelta(hours=6)).isoformat())
    reconcile_deleted_records(engine.context, RunReport(CONN))
    assert len(crm.asked) == 1
    crm.reconcile_every = None
    store.set_cursor(CONN, RECONCILE_CURSOR, "not a time")
    reconcile_deleted_records(engine.context, RunReport(CONN))
    assert len(crm.asked) == 1


def test_a_stop_leaves_the_check_for_next_cycle(store: Store) -> None:
    engine, crm, _ = world(store)
    engine.stop.set()
    reconcile_deleted_records(engine.context, RunReport(CONN))
    assert crm.asked == [] and store.get_cursor(CONN, RECONCILE_CURSOR) is None
