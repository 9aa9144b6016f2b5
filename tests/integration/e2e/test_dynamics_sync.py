"""End to end, Dynamics 365 only: change tracking, deletions, expired delta tokens,
a 412 on write-back, service-protection 429s (the sandbox's Dataverse over HTTPS).

The scenarios both CRMs share are in test_sync_end_to_end.py; these are the ones
only Dataverse has. Policies asserted here are documented in docs/dynamics.md.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from e2e_world import DataverseView, World

from connector.crm.dynamics_transport import DataverseTransport
from connector.state.store import Store

pytestmark = pytest.mark.parametrize("world", ["dynamics"], indirect=True)
CONNECTION = "sandbox-dynamics"


def dataverse(world: World) -> DataverseView:
    assert isinstance(world.crm, DataverseView)
    return world.crm


def settled(world: World) -> None:
    """A first sync, then one that reads the echo of its status writes."""
    world.sync()
    world.sync()


def open_linked(world: World, n: int) -> list[str]:
    linked = world.by_external_id()
    return [i for i, o in world.expected_eligible().items() if o["statecode"] == 0 and i in linked][
        :n
    ]


def crm_cursor(world: World) -> str | None:
    store = Store.open(world.state_url)
    try:
        return store.connection(CONNECTION).cursors.get("crm")
    finally:
        store.close()


def test_change_tracking_picks_up_only_the_edits_cycle_after_cycle(world: World) -> None:
    settled(world)
    cursor = crm_cursor(world)
    assert cursor is not None and cursor.startswith("delta:")
    edited = open_linked(world, 6)
    for cycle in range(3):
        pair = edited[2 * cycle : 2 * cycle + 2]
        for crm_id in pair:
            dataverse(world).edit_deal(crm_id, 7000 + cycle, f"cycle {cycle}")
        world.reset_stats()
        report = world.sync()
        assert report.pulled == 2, f"cycle {cycle}: the delta link returns just the edits"
        assert report.updated == 2
        assert world.calls()["core"].get("PATCH", 0) == 2
        assert crm_cursor(world) != cursor  # a new delta link each cycle
        cursor = crm_cursor(world)
        referrals = world.by_external_id()
        for crm_id in pair:
            assert float(referrals[crm_id][0]["details"]["dealValue"]) == 7000 + cycle


def test_a_deleted_row_is_reported_and_never_written_to_the_core(world: World) -> None:
    settled(world)
    (crm_id,) = open_linked(world, 1)
    (referral,) = world.by_external_id()[crm_id]
    dataverse(world).delete(crm_id)
    world.reset_stats()
    report = world.sync()
    assert report.skipped["deleted"] == 1
    core = world.calls().get("core", {})
    assert core.get("POST", 0) == 0 and core.get("PATCH", 0) == 0
    (after,) = world.by_external_id()[crm_id]
    assert (after["status"], after["substatus"]) == (referral["status"], referral["substatus"])
    store = Store.open(world.state_url)
    try:
        link = store.connection(CONNECTION).links.get(crm_id)
    finally:
        store.close()
    assert link is not None and link.referral_id == referral["id"]  # the link is kept
    again = world.sync()
    assert again.skipped["deleted"] == 0  # reported once
    assert not again.failed


def test_an_expired_delta_token_resyncs_everything_without_duplicates(world: World) -> None:
    settled(world)
    before = Counter(r["externalReferenceId"] for r in world.referrals())
    world.admin.post("/_sandbox/dataverse/expire-delta-tokens").raise_for_status()
    world.reset_stats()
    report = world.sync()
    assert report.outcome in ("ok", "partial") and not report.failed
    assert report.pulled == len(world.selected())  # a clean full read
    assert report.created == report.updated == report.closed == 0
    core = world.calls().get("core", {})
    assert core.get("POST", 0) == 0 and core.get("PATCH", 0) == 0
    assert Counter(r["externalReferenceId"] for r in world.referrals()) == before
    assert crm_cursor(world) is not None
    assert world.sync().pulled == 0  # the new delta link works


def test_a_412_on_write_back_fails_one_record_and_the_sync_converges(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row edited by a user between the connector's read and its write.

    The connector writes with ``If-Match: *`` (it owns the status columns); the test
    makes the first write of the first ``$batch`` carry the version it read, so the
    user's edit turns it into a real 412 from the sandbox. The change set is rolled
    back and re-sent without that row; the row comes back in the next delta (the user
    changed it) and its status is written then.
    """
    real_send = DataverseTransport.send
    victim: list[str] = []

    def send(self: DataverseTransport, method: str, path: str, **kw: Any) -> Any:
        content = kw.get("content")
        if method == "POST" and path == "$batch" and not victim and content:
            match = re.search(rb"opportunities\(([0-9a-f-]{36})\)", content)
            assert match
            victim.append(match.group(1).decode())
            dataverse(world).edit(victim[0], closeprobability=42)  # the user's edit
            kw["content"] = content.replace(b"If-Match: *", b'If-Match: W/"1"', 1)
        return real_send(self, method, path, **kw)

    monkeypatch.setattr(DataverseTransport, "send", send)
    first = world.sync()
    assert victim, "the first sync writes status fields in a $batch"
    assert first.failed == {"crm_write:precondition_failed": 1}  # one record, no crash
    world.sync()
    row = dataverse(world).opportunity(victim[0])
    assert row["closeprobability"] == 42  # the user's edit is kept
    referrals = world.by_external_id()
    if victim[0] in referrals:
        assert row["cosell_referralid"] == referrals[victim[0]][0]["id"]
    else:
        assert row["cosell_syncerror"]  # a rejected record: its reason is written
    assert max(Counter(r["externalReferenceId"] for r in world.referrals()).values()) == 1


@pytest.fixture
def throttled(world: World) -> Iterator[World]:
    """Dataverse answers about a third of requests with 429 and a short Retry-After."""
    faults = {"dataverse": {"rate_429": 0.3, "retry_after_s": 0.2}}
    world.admin.put("/_sandbox/faults", json=faults).raise_for_status()
    yield world
    world.admin.put("/_sandbox/faults", json={"dataverse": {}}).raise_for_status()


def test_a_burst_of_429s_is_ridden_out_and_the_sync_converges(throttled: World) -> None:
    world = throttled
    reports = []
    for _ in range(3):  # bounded: a run that gives up resumes in the next one
        report = world.sync()
        reports.append(report)
        if report.outcome in ("ok", "partial") and not report.failed:
            break
    stats: Mapping[str, Any] = world.admin.get("/_sandbox/stats").raise_for_status().json()
    assert any("429" in str(k) and "dataverse" in str(k) for k in _fault_keys(stats)), stats
    assert reports[-1].outcome in ("ok", "partial") and not reports[-1].failed
    counts = Counter(r["externalReferenceId"] for r in world.referrals())
    assert set(counts) == set(world.expected_eligible())
    assert max(counts.values()) == 1


def _fault_keys(stats: Mapping[str, Any]) -> list[str]:
    faults = stats.get("faults") or {}
    if isinstance(faults, Mapping):
        return [f"{api}:{kind}" for api, kinds in faults.items() for kind in (kinds or {})]
    return [str(f) for f in faults]


def test_a_reopened_won_row_shows_why_its_edit_was_not_sent(world: World) -> None:
    """Won rows are read-only; once a user reopens one, the terminal notice is written."""
    settled(world)
    view = dataverse(world)
    (crm_id,) = open_linked(world, 1)
    view.win(crm_id)
    assert world.sync().closed == 1
    view.reopen(crm_id)
    view.edit_deal(crm_id, 5555, "after reopening")
    world.reset_stats()
    report = world.sync()
    assert report.skipped["terminal"] == 1
    assert world.calls()["core"].get("PATCH", 0) == 0
    assert "closed deal cannot be edited" in view.opportunity(crm_id)["cosell_syncerror"]


def test_refused_writes_to_closed_rows_are_one_info_line_and_each_a_debug_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="connector")
    report = world.sync()
    refused = report.skipped["read_only_closed"]
    assert refused > 0
    each = [r for r in caplog.records if "status fields not written (" in r.getMessage()]
    assert len(each) == refused
    assert {r.levelno for r in each} == {logging.DEBUG}
    assert all(getattr(r, "crm_id", None) and r.connection == CONNECTION for r in each)  # type: ignore[attr-defined]
    summary = [r for r in caplog.records if getattr(r, "event", None) == "status_not_written"]
    assert len(summary) == 1 and summary[0].levelno == logging.INFO
    assert summary[0].counts == {"read_only_closed": refused}  # type: ignore[attr-defined]
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(info) < 20, [r.getMessage() for r in info]  # a few lines a cycle, not one a record
