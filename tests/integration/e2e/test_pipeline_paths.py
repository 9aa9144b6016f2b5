"""The pipeline's fast paths hold the same guarantees as the plain ones.

Pages overlap (page k+1 is pushed while page k is mirrored), creates are marked pending
a page at a time, links are saved in batches, and a large pull-back is listed in
parallel time slices. These tests make each path run on a small world and check that
nothing is duplicated, lost or mirrored wrong.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import yaml
from e2e_world import SalesforceView, World

from connector.crm.base import CrmPage
from connector.crm.dynamics.adapter import DataverseOpportunities
from connector.crm.salesforce.adapter import SalesforceOpportunities
from connector.dealcore.client import ReferralsClient
from connector.sync.pullback import LISTED_FIELDS
from connector.sync.status_writer import StatusWriter
from connector.sync.tuning import Tuning


def small_pages(world: World) -> None:
    """Several CRM pages for 500 opportunities, so that pages overlap in the pipeline."""
    data = yaml.safe_load(world.config_path.read_text(encoding="utf-8"))
    for conn in data["connections"]:
        if conn["crm"]["kind"] == "salesforce":
            conn["crm"]["batch_size"] = 200
        else:
            conn["crm"]["page_size"] = 150
    world.config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def consent_only(world: World) -> None:
    """Co-sell by consent alone: Microsoft's side of each deal is learnt in the pull-back
    (the two-referral flow reads it at create), so the pull-back has statuses to write."""
    data = yaml.safe_load(world.config_path.read_text(encoding="utf-8"))
    for conn in data["connections"]:
        conn["core"]["co_sell_mode"] = "consent_only"
    world.config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def slices_listed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Record the bounds of every changes listing."""
    bounds: list[tuple[Any, Any]] = []
    real = ReferralsClient.list_changed

    def spy(self: ReferralsClient, since: Any, **kwargs: Any) -> Iterator[Any]:
        bounds.append((since, kwargs.get("until")))
        return real(self, since, **kwargs)

    monkeypatch.setattr(ReferralsClient, "list_changed", spy)
    return bounds


def test_overlapping_pages_and_sliced_pull_back_sync_everything_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_pages(world)
    world.tuning = Tuning(pull_slice=40)
    bounds = slices_listed(monkeypatch)
    first = world.sync()
    # the pull-back was cut into slices that cover everything: the first one open at
    # the bottom, the last one open at the top, each one's end the next one's start
    assert len(bounds) >= 3, bounds
    assert bounds[0][0] is None and bounds[-1][1] is None
    for (_, hi), (lo, _) in itertools.pairwise(bounds):
        assert hi == lo
    counts = Counter(r["externalReferenceId"] for r in world.referrals())
    assert set(counts) == set(world.expected_eligible())
    assert max(counts.values()) == 1
    assert first.created == len(counts)
    assert {"outbound", "pull_back"} <= set(first.phases)
    # every linked record carries its referral's id and status, as with one listing
    fields = world.crm.status
    for crm_id, (referral,) in world.by_external_id().items():
        opp = world.crm.opportunity(crm_id)
        if world.crm.is_won(opp) and not world.crm.closed_rows_writable:
            continue  # read-only closed row (see test_sync_end_to_end)
        assert opp[fields.referral_id] == referral["id"]
        assert opp[fields.status] == f"{referral['status']}/{referral['substatus']}"
    world.reset_stats()
    second = world.sync()
    core = world.calls().get("core", {})
    assert core.get("POST", 0) == 0 and core.get("PATCH", 0) == 0
    assert second.created == second.updated == 0


def test_a_sliced_pull_back_lists_few_fields_and_reads_changed_referrals_whole(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slices ask for the listed fields only; a referral changed after this run
    wrote it (a field outside those) is read whole and mirrored; the others are not read."""
    small_pages(world)
    world.tuning = Tuning(pull_slice=40)
    store = world.sb.part("core").store
    selects: list[Any] = []
    changed: dict[str, str] = {}  # referral id -> external id
    real_list = ReferralsClient.list_changed
    once = threading.Lock()

    def list_after_a_change(self: ReferralsClient, since: Any, **kwargs: Any) -> Iterator[Any]:
        selects.append(kwargs.get("select"))
        with once:  # the slices start at once, each on its own thread
            if changed:
                return real_list(self, since, **kwargs)
            # someone approves three registrations while the run lists
            open_deals = [r for r in world.referrals() if r["status"] != "Closed"]
            for referral in open_deals[:3]:  # a closed row may be read-only in the CRM
                with store.lock:
                    new = {**store.get(referral["id"]), "registrationStatus": "Approved"}
                    store._commit(new, store.now())
                changed[referral["id"]] = referral["externalReferenceId"]
        return real_list(self, since, **kwargs)

    read: list[str] = []
    real_get = ReferralsClient.get

    def get_spy(self: ReferralsClient, referral_id: str) -> Any:
        read.append(referral_id)
        return real_get(self, referral_id)

    monkeypatch.setattr(ReferralsClient, "list_changed", list_after_a_change)
    monkeypatch.setattr(ReferralsClient, "get", get_spy)
    world.sync()
    assert len(selects) >= 3 and all(sel == LISTED_FIELDS for sel in selects)
    assert len(read) == len(set(read))  # each once
    assert set(changed) <= set(read)
    incoming = {r["id"] for r in world.all_referrals() if r.get("direction") == "Incoming"}
    assert set(read) - set(changed) <= incoming  # new incoming deals: read to be created
    field = world.crm.status.registration_status
    assert field is not None
    for crm_id in changed.values():
        assert world.crm.opportunity(crm_id)[field] == "Approved"
    # the next cycle finds every link at its referral's eTag: nothing read, nothing sent
    read.clear()
    world.reset_stats()
    again = world.sync()
    assert read == [] and again.created == again.updated == 0


def test_pull_back_status_writes_run_beside_the_listing_and_keep_each_records_order(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During the pull-back, status batches go out on writer threads; a record is never
    in two batches at once, and every write is recorded (the next cycle writes nothing)."""
    small_pages(world)
    consent_only(world)
    world.tuning = Tuning(pull_slice=40, write_batch=5)  # many small batches
    adapter_class: Any = (
        SalesforceOpportunities if isinstance(world.crm, SalesforceView) else DataverseOpportunities
    )
    real_write = adapter_class.write_status
    lock = threading.Lock()
    in_flight: Counter[str] = Counter()
    overlaps: list[str] = []
    threads: set[str] = set()

    def write_spy(self: Any, updates: Any) -> Any:
        ids = [u.crm_id for u in updates]
        with lock:
            threads.add(threading.current_thread().name.split("_")[0])
            overlaps.extend(i for i in ids if in_flight[i])
            in_flight.update(ids)
        try:
            # one writer slow, the other fast: a later batch would overtake an earlier one
            slow = threading.current_thread().name.endswith("_0")
            time.sleep(0.03 if slow else 0.001)
            return real_write(self, updates)
        finally:
            with lock:
                in_flight.subtract(ids)

    monkeypatch.setattr(adapter_class, "write_status", write_spy)
    real_queue = StatusWriter.queue

    def queue_twice(self: Any, updates: Any, report: Any) -> None:
        # every status written twice: the second batch holds the records of one in flight
        real_queue(self, updates, report)
        real_queue(self, updates, report)

    monkeypatch.setattr(StatusWriter, "queue", queue_twice)
    first = world.sync()
    assert first.created > 0
    assert "crm-write" in threads  # the pull-back's writes left the main thread
    assert overlaps == []
    world.reset_stats()
    world.sync()
    # status writes: Salesforce collections are PATCHes, Dataverse $batch calls POSTs
    # (the Salesforce token request is a POST too)
    if adapter_class is SalesforceOpportunities:
        assert world.calls().get("salesforce", {}).get("PATCH", 0) == 0
    else:
        assert world.calls().get("dataverse", {}).get("POST", 0) == 0


def test_a_record_read_again_in_the_next_page_waits_for_its_first_push(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record that comes back in the next page (edited during the pull) is pushed
    once its first push is done: one referral, then an update, never two creates."""
    small_pages(world)
    eligible = set(world.expected_eligible())
    repeated: dict[str, Any] = {}
    adapter_class: Any = (
        SalesforceOpportunities if isinstance(world.crm, SalesforceView) else DataverseOpportunities
    )
    real_pull = adapter_class.pull_changes

    def pull_with_a_repeat(self: Any, *args: Any, **kwargs: Any) -> Iterator[CrmPage]:
        for i, page in enumerate(real_pull(self, *args, **kwargs)):
            if i == 1 and repeated:
                (record,) = repeated.values()
                again = dataclasses.replace(record, modstamp=record.modstamp + timedelta(seconds=1))
                page = dataclasses.replace(page, records=[again, *page.records])
            if i == 0:  # the page's last record to share: still in flight when page 2 comes
                last = [r for r in page.records if r.id in eligible][-1]
                repeated[last.id] = last
            yield page

    monkeypatch.setattr(adapter_class, "pull_changes", pull_with_a_repeat)
    world.admin.put("/_sandbox/latency", json={"core": 40}).raise_for_status()
    world.sync()
    (crm_id,) = repeated
    counts = Counter(r["externalReferenceId"] for r in world.referrals())
    assert counts[crm_id] == 1
    assert max(counts.values()) == 1
    assert set(counts) == eligible


@pytest.mark.parametrize("world", ["dynamics"], indirect=True)
def test_related_rows_evicted_from_a_small_cache_are_read_again_not_lost(
    world: World,
) -> None:
    """Accounts and currencies looked up for a page stay until the page is read, even
    when the run's cache is much smaller than the org's related rows."""
    data = yaml.safe_load(world.config_path.read_text(encoding="utf-8"))
    data["connections"][0]["crm"]["page_size"] = 20
    data["connections"][0]["crm"]["related_cache"] = 1
    world.config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    world.sync()
    eligible = world.expected_eligible()
    referrals = world.by_external_id()
    assert set(referrals) == set(eligible)
    deals = world.crm.expected_deals(set(eligible))
    for crm_id, (referral,) in referrals.items():
        deal = deals[crm_id]
        assert referral["customerProfile"]["name"] == deal.customer_name
        assert referral["customerProfile"]["address"]["country"] == deal.customer_country
        assert referral["details"]["currency"] == deal.currency
