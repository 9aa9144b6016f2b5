"""A daemon stopped and started again resumes Salesforce change events from its stored replay id.

The first daemon syncs a change through its change event and stores the event's
replay id (cursor ``salesforce_replay``). While it is stopped, another opportunity
changes. The second daemon, on the same state store, subscribes from the stored
replay id: the sandbox's CometD endpoint sees that replay id in the subscription and
delivers the event published while the daemon was down.
"""

from __future__ import annotations

from pathlib import Path

from events_world import SF, admin_client, config_data, deal_value, referral_of, running, wait_for

from connector.events.salesforce_stream import REPLAY_CURSOR
from connector.state.store import Store
from sandbox.harness import SandboxServer


def _stored(state: Path) -> int | None:
    with Store.open(f"sqlite:///{state}") as store:
        value = store.connection(SF).cursors.get(REPLAY_CURSOR)
    return None if value is None else int(value)


def test_a_restarted_daemon_resumes_change_events_from_its_stored_replay_id(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with SandboxServer(opportunities=30, seed=9) as sandbox, admin_client(sandbox) as admin:
        stream = sandbox.events.salesforce
        admin.put(
            "/_sandbox/events", json={"salesforce": {"enabled": True, "hold_s": 2}}
        ).raise_for_status()
        linked = []
        data = config_data(sandbox, (SF,), connection_events={"partner_center": False})
        with running(data, state) as first:
            wait_for(lambda: first.health[SF].cycles >= 1, "the first scheduled cycle")
            subscriber = first.events.subscribers[0]  # type: ignore[union-attr]
            wait_for(subscriber.subscribed.is_set, "the first subscription")
            assert subscriber.started_from is None  # nothing stored yet: new events only
            records = admin.get("/_sandbox/salesforce/opportunities").json()["records"]
            linked = [o for o in records if o.get("Referral_Identifier__c")]
            x, y = linked[0]["Id"], linked[1]["Id"]
            admin.post(
                f"/_sandbox/salesforce/opportunities/{x}", json={"Amount": 111111}
            ).raise_for_status()
            wait_for(
                lambda: deal_value(referral_of(admin, x)) in ("111111", "111111.0", "111111.00"),
                "x synced by its event",
                30,
            )
            wait_for(
                lambda: stream.delivered() and first.events.pending.depth(SF) == 0,
                "the queue to drain",
            )  # type: ignore[union-attr]
            wait_for(lambda: _stored(state) is not None, "the replay id stored")
        stored = _stored(state)
        assert stored is not None

        # while the daemon is down, y changes: its event waits in the stream
        newest_before = (
            max(r for ids in stream.delivered().values() for r in ids) if stream.delivered() else 0
        )
        admin.post(
            f"/_sandbox/salesforce/opportunities/{y}", json={"Amount": 222222}
        ).raise_for_status()

        with running(data, state) as second:
            subscriber = second.events.subscribers[0]  # type: ignore[union-attr]
            wait_for(subscriber.subscribed.is_set, "the second subscription")
            assert subscriber.started_from == stored
            client_id, channel, asked = stream.subscriptions[-1]
            assert (channel, asked) == ("/data/OpportunityChangeEvent", stored)
            wait_for(
                lambda: any(r > newest_before for r in stream.delivered().get(client_id, [])),
                "the event published while the daemon was down, delivered to the new session",
                30,
            )
            wait_for(
                lambda: deal_value(referral_of(admin, y)) in ("222222", "222222.0", "222222.00"),
                "y synced",
                30,
            )
            wait_for(lambda: (_stored(state) or 0) > stored, "the replay id moved on")
