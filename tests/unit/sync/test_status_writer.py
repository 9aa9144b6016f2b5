"""The pull-back's background status writes: in order per record, every result recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

from connector.crm.base import CrmAdapter, WriteResult
from connector.mapping.schema import StatusFields
from connector.model import CrmStatusUpdate
from connector.state.store import Link, LinkState, Store
from connector.sync.report import RunReport
from connector.sync.status_writer import StatusWriter


class SlowCrm:
    """Holds the first batch until released; records when each batch ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: list[tuple[list[str], float, float]] = []
        self.lock = threading.Lock()

    def write_status(self, updates: Sequence[CrmStatusUpdate]) -> list[WriteResult]:
        started = time.monotonic()
        if not self.ran and not self.release.is_set():
            self.release.wait(5)
        with self.lock:
            self.ran.append(([u.crm_id for u in updates], started, time.monotonic()))
        return [WriteResult(u.crm_id, True) for u in updates]


class FakeStore:
    def __init__(self) -> None:
        self.mirrored: dict[str, str] = {}

    def set_mirrored(self, conn: str, fingerprints: Mapping[str, str]) -> None:
        self.mirrored.update(fingerprints)


def status_writer(crm: SlowCrm, store: FakeStore) -> StatusWriter:
    return StatusWriter(
        "c",
        crm=cast(CrmAdapter, crm),
        store=cast(Store, store),
        fields=StatusFields(referral_id="Referral__c"),
        core_now=lambda: datetime.now(UTC),
        progress=lambda kind, n: None,
        stop=threading.Event(),
    )


def update(crm_id: str) -> tuple[CrmStatusUpdate, Link, str]:
    link = Link(connection="c", crm_id=crm_id, state=LinkState.LINKED, referral_id=f"R-{crm_id}")
    return CrmStatusUpdate(crm_id, {"Status__c": crm_id}), link, f"fp-{crm_id}"


def test_a_batch_waits_for_the_batch_in_flight_that_holds_one_of_its_records() -> None:
    crm, store = SlowCrm(), FakeStore()
    writer = status_writer(crm, store)
    report = RunReport(connection="c")
    with writer.in_background(report):
        writer.write_now([update("a"), update("b")], report)  # held by the CRM
        threading.Timer(0.2, crm.release.set).start()
        writer.write_now([update("c")], report)  # no shared record: goes at once
        writer.write_now([update("b"), update("d")], report)  # "b" is in flight: waits
    by_first = {ids[0]: (start, end) for ids, start, end in crm.ran}
    assert by_first["c"][0] < by_first["a"][1]  # ran beside the held batch
    assert by_first["b"][0] >= by_first["a"][1]  # only after the batch holding "b"
    assert store.mirrored == {k: f"fp-{k}" for k in "abcd"}
    assert report.mirrored == 5
