"""The ``leases`` table: one lease per connection, exclusive until it expires
(``@contract``: SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

from state_contract import FakeClock, MakeStore, contract

from connector.state import ConnectionState, Store


@contract
def test_lease_is_exclusive_until_it_expires(
    store: Store, sf: ConnectionState, clock: FakeClock
) -> None:
    assert sf.lease.acquire("replica-a", ttl_s=30) is True
    assert sf.lease.acquire("replica-b", ttl_s=30) is False
    assert store.connection("d365").lease.acquire("replica-b", ttl_s=30) is True  # per connection
    assert sf.lease.acquire("replica-a", ttl_s=30) is True  # holder re-acquires

    clock.advance(20)
    assert sf.lease.renew("replica-a", ttl_s=30) is True
    clock.advance(20)  # 40 s after the start, 20 s after the renewal: still held
    assert sf.lease.acquire("replica-b", ttl_s=30) is False

    clock.advance(11)  # expired
    assert sf.lease.acquire("replica-b", ttl_s=30) is True
    assert sf.lease.renew("replica-a", ttl_s=30) is False
    assert sf.lease.release("replica-a") is False
    assert sf.lease.acquire("replica-a", ttl_s=30) is False

    assert sf.lease.current() == ("replica-b", clock.now + timedelta(seconds=30))
    assert sf.lease.release("replica-b") is True
    assert sf.lease.current() is None
    assert sf.lease.acquire("replica-a", ttl_s=30) is True
    clock.advance(31)
    assert sf.lease.current() is None  # expired: nobody holds it


@contract
def test_only_one_replica_wins_a_lease_race(make_store: MakeStore, clock: FakeClock) -> None:
    replicas = [make_store(clock) for _ in range(3)]
    start = threading.Barrier(12)
    wins: list[str] = []
    errors: list[BaseException] = []

    def contend(holder: str, replica: Store) -> None:
        try:
            start.wait(timeout=30)
            if replica.connection("sf").lease.acquire(holder, ttl_s=60):
                wins.append(holder)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=contend, args=(f"holder-{n}", replicas[n % 3])) for n in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(wins) == 1
