"""The console's pages show the store's runs, records and dead letters, and act on them."""

from __future__ import annotations

import html
import re

from console_world import ConsoleWorld, form_token, sign_in


def test_the_connections_page_shows_the_last_run_lag_quota_polls_and_letters(
    world: ConsoleWorld,
) -> None:
    with world.client() as client:
        sign_in(client, world.secrets.viewer)
        page = client.get("/").text
    assert f'href="/runs/{world.run_id}"' in page and "partial" in page
    assert "never synced" in page  # no cursor yet
    assert "0.4 %</span> <small>salesforce</small>" in page
    assert "0 / 1" in page and "polling only" in page
    assert "3 open" in page
    assert "<polyline" in page
    assert "no daemon attached" in page


def test_a_run_lists_its_records_and_phases_and_filters_by_outcome(world: ConsoleWorld) -> None:
    with world.client() as client:
        sign_in(client, world.secrets.viewer)
        page = client.get(f"/runs/{world.run_id}").text
        rejected = client.get(f"/runs/{world.run_id}", params={"kind": "rejected"}).text
        missing = client.get("/runs/999")
    assert "/records/sf/006A" in page and "/records/sf/006B" in page
    assert "outbound" in page and "1.200 s" in page
    assert "/records/sf/006B" in rejected and "/records/sf/006A" not in rejected
    assert missing.status_code == 404


def test_a_records_history_shows_what_was_sent_the_answer_and_both_sides(
    world: ConsoleWorld,
) -> None:
    with world.client() as client:
        sign_in(client, world.secrets.viewer)
        page = html.unescape(client.get("/records/sf/006A").text)
    assert '"name": "Deal A"' in page  # sent
    assert '"etag": "\\"1\\""' in page  # the core's answer
    assert "CoSell_Status__c" in page and "R-1" in page
    assert "https://127.0.0.1:9/lightning/r/Opportunity/006A/view" in page


def test_runs_are_paged_newest_first(world: ConsoleWorld) -> None:
    for _ in range(3):
        runs = world.store.connection("sf").runs
        runs.finish(runs.start(), "ok", {}, {}, 0.1)
    world.app.options = world.app.options.model_copy(update={"page_size": 2})
    with world.client() as client:
        sign_in(client, world.secrets.viewer)
        first = client.get("/runs").text
        older = re.search(r'href="(/runs\?[^"]*before=\d+)"', first)
        assert older is not None
        second = client.get(older.group(1).replace("&amp;", "&")).text
    assert re.findall(r'href="/runs/(\d+)"', first) == ["4", "3"]
    assert re.findall(r'href="/runs/(\d+)"', second) == ["2", "1"]


def test_dead_letters_filter_by_reason(world: ConsoleWorld) -> None:
    with world.client() as client:
        sign_in(client, world.secrets.viewer)
        page = client.get("/dead-letters", params={"reason": "InvalidTransition"}).text
    assert "006D" in page and "006B" not in page and "006C" not in page
    assert "transient:ServerError (1)" in page


def test_an_admin_retries_and_discards_as_the_cli_does(world: ConsoleWorld) -> None:
    first, second, third = world.letters
    with world.client() as client:
        sign_in(client, world.secrets.admin)
        csrf = form_token(client.get("/dead-letters").text)
        retried = client.post(
            "/dead-letters/retry",
            data={"csrf": csrf, "id": [str(first), str(second)], "back": "/dead-letters"},
        )
        assert retried.headers["location"] == "/dead-letters?done=retry&n=2"
        assert "2 dead letter(s) marked for retry" in client.get(retried.headers["location"]).text
        discarded = client.post(
            f"/dead-letters/{third}/discard", data={"csrf": csrf, "back": "https://evil.example"}
        )
        assert discarded.headers["location"] == "/dead-letters?done=discard&n=1"
    letters = {d.id: d for d in world.store.list_dead_letters("sf", include_resolved=True)}
    assert letters[first].reason_code == "retry:invalid_record"
    assert letters[second].reason_code == "transient:ServerError"  # already retried by itself
    assert letters[third].resolved
    actions = [(e.actor, e.action, e.outcome, e.target) for e in world.audit()]
    assert ("admin", "retry", "ok", f"dead letters {first}, {second}") in actions
    assert ("admin", "discard", "ok", f"dead letter {third}") in actions


def test_the_mappings_page_shows_a_broken_files_problems_with_lines(
    world: ConsoleWorld, tmp_path: object
) -> None:
    from pathlib import Path

    broken = Path(str(tmp_path)) / "broken.yaml"
    broken.write_text("crm: salesforce\nstages:\n  map:\n    Prospecting: Nowhere\n")
    conn = world.app.config.connections[0]
    world.app.config.connections[0] = conn.model_copy(update={"mapping": broken})
    with world.client() as client:
        sign_in(client, world.secrets.viewer)
        page = client.get("/mappings").text
        explain = client.get("/mappings/sf/explain", params={"record_id": "006A"})
    assert "invalid" in page and f"{broken}:4:" in page
    assert explain.status_code == 409 and f"{broken}:4:" in explain.text


def test_reading_the_crm_fails_with_a_plain_message_and_no_secret(world: ConsoleWorld) -> None:
    with world.client() as client:
        sign_in(client, world.secrets.admin)
        answer = client.get("/mappings/sf/explain", params={"record_id": "006A"})
    assert answer.status_code == 502
    assert "The request failed" in answer.text
    for secret in world.secrets.all():
        assert secret not in answer.text
