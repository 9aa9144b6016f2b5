"""Real syncs against the sandbox write each record's history: the create with its body,
a later edit as the changes sent, nothing for records read again unchanged, and no more
entries per record than the ``history`` settings keep."""

from __future__ import annotations

from console_browser import SF, SyncedWorld

from connector.mapping.load import load_mapping
from connector.settings import HistorySettings
from connector.state.history import RecordHistory
from connector.state.store import Store
from connector.sync.history import crm_values_of


def edit_amount(world: SyncedWorld, crm_id: str, amount: int) -> None:
    with world.sb.client() as admin:
        admin.post(
            f"/_sandbox/salesforce/opportunities/{crm_id}", json={"Amount": amount}
        ).raise_for_status()


def test_an_edit_is_recorded_as_the_changes_sent_and_the_history_stays_bounded(
    world: SyncedWorld,
) -> None:
    with Store.open(world.settings.state_url) as store:
        history = RecordHistory(store)
        created = [e for e in history.of_run(1, limit=1000) if e.kind == "created"]
        assert created, "the first sync created referrals"
        first = created[0]
        assert first.sent is not None and "customerProfile" in first.sent
        assert first.answer is not None and first.answer["referral_id"] == first.referral_id
        fields = load_mapping(world.config.connections[0].mapping).status_fields
        values = crm_values_of(first, fields)
        assert values is not None and values["Referral_Identifier__c"] == first.referral_id
        rejected = [e for e in history.of_run(1, limit=1000) if e.kind == "rejected"]
        assert rejected and all(e.answer is None and e.message for e in rejected)

    world.config = world.config.model_copy(update={"history": HistorySettings(keep_per_record=2)})
    edit_amount(world, first.crm_id, 123_456)
    assert world.sync().updated == 1
    with Store.open(world.settings.state_url) as store:
        history = RecordHistory(store)
        second_run = history.of_run(2, limit=1000)
        # records read again unchanged (the overlap window) leave no entry; rejected ones
        # are processed again once (writing their error bumped their stamp)
        assert [e.crm_id for e in second_run if e.kind not in {"mirrored", "rejected"}] == [
            first.crm_id
        ]
        newest = history.of_record(SF, first.crm_id)[0]
        assert newest.kind == "updated" and newest.run_id == 2
        changes = {op["path"]: op["value"] for op in newest.sent["changes"]}
        assert changes["/details/dealValue"] == 123456

    edit_amount(world, first.crm_id, 654_321)
    world.sync()
    with Store.open(world.settings.state_url) as store:
        entries = RecordHistory(store).of_record(SF, first.crm_id)
    assert [e.run_id for e in entries] == [3, 2]
