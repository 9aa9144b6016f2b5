"""No secret is ever rendered: every page, header and stored row, after every kind of action."""

from __future__ import annotations

import sqlite3

from console_world import ConsoleWorld, form_token, sign_in


def test_no_page_header_or_stored_row_holds_a_secret(world: ConsoleWorld) -> None:
    seen: list[str] = []
    with world.client() as client:
        # typed by mistake: another system's secret as the console password
        seen.append(sign_in(client, world.secrets.crm).text)
        sign_in(client, world.secrets.admin)
        for path in (
            "/",
            "/runs",
            f"/runs/{world.run_id}",
            "/records/sf/006A",
            "/records/sf/006B",
            "/dead-letters",
            "/dead-letters?resolved=1",
            "/mappings",
            "/mappings/sf/explain?record_id=006A",
            "/audit",
            "/nowhere",
        ):
            answer = client.get(path)
            seen.append(answer.text)
            seen.extend(f"{k}: {v}" for k, v in answer.headers.multi_items())
        csrf = form_token(client.get("/dead-letters").text)
        action = client.post(
            "/dead-letters/retry", data={"csrf": csrf, "id": str(world.letters[0])}
        )
        seen.extend(f"{k}: {v}" for k, v in action.headers.multi_items())
        seen.append(client.get("/audit").text)
    database = world.store.database.url.database
    with sqlite3.connect(str(database)) as db:
        seen.extend(db.iterdump())
    text = "\n".join(seen)
    assert "Audit trail" in text and "The request failed" in text  # the pages were rendered
    for secret in world.secrets.all():
        assert secret not in text
