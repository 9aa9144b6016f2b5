"""The ``cursors`` table through a connection's handle (``@contract``: SQLite and PostgreSQL)."""

from __future__ import annotations

from state_contract import contract

from connector.state import ConnectionState, Store


@contract
def test_cursor_round_trip(store: Store, sf: ConnectionState) -> None:
    assert sf.cursors.get("crm") is None
    sf.cursors.set("crm", "2025-01-01T00:00:00Z|006A")
    sf.cursors.set("crm", "2025-01-02T00:00:00Z|006B")
    sf.cursors.set("core", "2025-01-03T00:00:00Z")
    store.connection("d365").cursors.set("crm", "delta-token")
    assert sf.cursors.get("crm") == "2025-01-02T00:00:00Z|006B"
    assert sf.cursors.get("core") == "2025-01-03T00:00:00Z"
    assert store.connection("d365").cursors.get("crm") == "delta-token"
