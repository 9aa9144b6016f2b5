"""The lease keeper renews a connection's lease on its own thread and stops a cycle that lost it."""

from __future__ import annotations

import threading
from pathlib import Path

from connector.lease import CycleStop, LeaseKeeper
from connector.state.store import Store


def test_the_lease_is_renewed_while_the_cycle_runs(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        assert store.acquire_lease("conn", "me", 0.3)
        with LeaseKeeper(store, "conn", "me", 0.3, threading.Event()) as keeper:
            # long past the first TTL, nobody else can take it: it was renewed
            assert not keeper.stop.wait(0.9)
            assert not store.acquire_lease("conn", "other", 10)
        assert keeper.renewals >= 3 and not keeper.lost


def test_a_lost_lease_stops_the_cycle(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        assert store.acquire_lease("conn", "me", 0.3)
        with LeaseKeeper(store, "conn", "me", 0.3, threading.Event()) as keeper:
            store.release_lease("conn", "me")
            assert store.acquire_lease("conn", "other", 10)  # taken over
            assert keeper.stop.wait(5)
        assert keeper.lost


def test_the_daemons_stop_reaches_the_cycle() -> None:
    daemon_stop = threading.Event()
    stop = CycleStop(daemon_stop)
    assert not stop.is_set()
    daemon_stop.set()
    assert stop.is_set()
