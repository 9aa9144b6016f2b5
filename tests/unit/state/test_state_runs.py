"""The ``runs`` table: one connection's runs and the recent runs of all
(``@contract``: SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from state_contract import FakeClock, contract

from connector.errors import StateError
from connector.state import ConnectionState, Store


@contract
def test_runs_are_recorded_newest_first(
    store: Store, sf: ConnectionState, clock: FakeClock
) -> None:
    first = sf.runs.start()
    clock.advance(10)
    sf.runs.finish(first, "ok", {"created": 3, "skipped": 7}, {"core": 4, "crm": 2}, 9.5)
    second = sf.runs.start()
    d365 = store.connection("d365")
    other = d365.runs.start()
    d365.runs.finish(other, "failed", {}, {}, 0.1, error="core unreachable")

    runs = sf.runs.recent()
    assert runs == store.recent_runs("sf")
    assert [run.id for run in runs] == [second, first]
    assert runs[0].outcome is None and runs[0].finished is None
    done = runs[1]
    assert (done.outcome, done.duration_s, done.error) == ("ok", 9.5, None)
    assert done.counts == {"created": 3, "skipped": 7}
    assert done.api_calls == {"core": 4, "crm": 2}
    assert done.finished == done.started + timedelta(seconds=10)

    assert [run.id for run in store.recent_runs()] == [other, second, first]
    assert [run.id for run in store.recent_runs(limit=1)] == [other]
    assert d365.runs.recent()[0].error == "core unreachable"
    assert [run.id for run in sf.runs.recent(limit=1)] == [second]
    last = sf.runs.last()
    assert last is not None and last.id == second
    done_last = sf.runs.last(["ok"])
    assert done_last is not None and done_last.id == first
    assert sf.runs.last(["failed"]) is None
    assert store.connection("nobody").runs.last() is None
    with pytest.raises(StateError, match="run 999999 does not exist"):
        sf.runs.finish(999_999, "ok", {}, {}, 1.0)
