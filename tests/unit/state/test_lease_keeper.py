"""The lease keeper renews a connection's lease on its own thread and stops a cycle that lost it."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from connector.lease import CycleStop, LeaseKeeper, acquire, holder_gone, process_holder
from connector.state.store import Store


def test_the_lease_is_renewed_while_the_cycle_runs(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        lease = store.connection("conn").lease
        assert lease.acquire("me", 0.3)
        with LeaseKeeper(store, "conn", "me", 0.3, threading.Event()) as keeper:
            # long past the first TTL, nobody else can take it: it was renewed
            assert not keeper.stop.wait(0.9)
            assert not lease.acquire("other", 10)
        assert keeper.renewals >= 3 and not keeper.lost


def test_a_lost_lease_stops_the_cycle(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        lease = store.connection("conn").lease
        assert lease.acquire("me", 0.3)
        with LeaseKeeper(store, "conn", "me", 0.3, threading.Event()) as keeper:
            lease.release("me")
            assert lease.acquire("other", 10)  # taken over
            assert keeper.stop.wait(5)
        assert keeper.lost


def test_the_daemons_stop_reaches_the_cycle() -> None:
    daemon_stop = threading.Event()
    stop = CycleStop(daemon_stop)
    assert not stop.is_set()
    daemon_stop.set()
    assert stop.is_set()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lease_left_by_a_dead_process_of_this_host_is_taken_over(tmp_path: Path) -> None:
    host = socket.gethostname()
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        lease = store.connection("conn").lease
        gone = f"{host}:{_dead_pid()}"
        assert lease.acquire(gone, 120)
        assert holder_gone(gone)
        assert acquire(store, "conn", process_holder(), 120)
        assert lease.current()[0] == process_holder()  # type: ignore[index]


def test_a_live_or_remote_holder_is_outwaited(tmp_path: Path) -> None:
    host = socket.gethostname()
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        lease = store.connection("conn").lease
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            for holder in (f"{host}:{alive.pid}", f"another-{host}:{_dead_pid()}", "replica-b"):
                lease.release(holder)
                assert lease.acquire(holder, 120)
                assert not holder_gone(holder)
                assert not acquire(store, "conn", process_holder(), 120)
                lease.release(holder)
        finally:
            alive.kill()
            alive.wait()
