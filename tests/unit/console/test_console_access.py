"""Who may see and do what in the console: sign-in, roles, CSRF, origin, host, cookies, audit."""

from __future__ import annotations

import pytest
from console_world import ORIGIN, ConsoleWorld, form_token, sign_in

READ_PAGES = ["/", "/runs", "/runs/1", "/dead-letters", "/mappings", "/records/sf/006A"]


@pytest.mark.parametrize("path", [*READ_PAGES, "/audit"])
def test_an_anonymous_visitor_is_sent_to_sign_in(world: ConsoleWorld, path: str) -> None:
    with world.client() as client:
        answer = client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/sign-in?next=")


def test_anonymous_actions_are_refused_and_audited(world: ConsoleWorld) -> None:
    letter = world.letters[0]
    with world.client() as client:
        answer = client.post(f"/dead-letters/{letter}/discard", data={"csrf": "x"})
    assert answer.status_code == 403
    assert world.store.get_dead_letter(letter).resolved is False  # type: ignore[union-attr]
    (entry,) = world.audit()
    assert (entry.actor, entry.action, entry.outcome) == ("anonymous", "discard", "refused")


def test_signing_in_sets_a_strict_http_only_cookie_and_goes_where_asked(
    world: ConsoleWorld,
) -> None:
    with world.client() as client:
        answer = sign_in(client, world.secrets.admin, "/runs")
        assert answer.status_code == 303 and answer.headers["location"] == "/runs"
        cookie = next(
            v for k, v in answer.headers.multi_items() if k == "set-cookie" and "session" in v
        )
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
        assert client.get("/runs").status_code == 200
    assert [(e.actor, e.action, e.outcome) for e in world.audit()] == [("admin", "sign_in", "ok")]


def test_behind_a_tls_proxy_the_session_cookie_is_secure(world: ConsoleWorld) -> None:
    world.app.options = world.app.options.model_copy(update={"secure_cookies": True})
    with world.client() as client:
        answer = sign_in(client, world.secrets.viewer)
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    assert all("Secure" in c for c in cookies)


def test_a_sign_in_elsewhere_is_never_followed(world: ConsoleWorld) -> None:
    with world.client() as client:
        answer = sign_in(client, world.secrets.admin, "//evil.example/steal")
    assert answer.headers["location"] == "/"


def test_a_wrong_secret_is_refused_audited_without_what_was_typed_and_throttled(
    world: ConsoleWorld,
) -> None:
    with world.client() as client:
        statuses = [sign_in(client, f"guess-{n}-password").status_code for n in range(6)]
        assert statuses == [401] * 5 + [429]
        assert sign_in(client, world.secrets.admin).status_code == 429
        assert client.get("/").status_code == 303
    entries = world.audit()
    assert {e.outcome for e in entries} == {"refused"}
    assert not any("guess-" in repr(e) for e in entries)


def test_the_sign_in_form_needs_its_own_token(world: ConsoleWorld) -> None:
    with world.client() as client:
        answer = client.post("/sign-in", data={"csrf": "forged", "secret": world.secrets.admin})
    assert answer.status_code == 403
    assert "session" not in answer.headers.get("set-cookie", "")


def test_read_only_reads_every_page_but_cannot_act_or_see_the_audit(world: ConsoleWorld) -> None:
    letter = world.letters[0]
    with world.client() as client:
        sign_in(client, world.secrets.viewer)
        for path in READ_PAGES:
            assert client.get(path).status_code == 200, path
        page = client.get("/dead-letters")
        assert "Discard" not in page.text and "Retry selected" not in page.text
        csrf = form_token(page.text)  # the sign-out form's: a valid token of this session
        retried = client.post("/dead-letters/retry", data={"csrf": csrf, "id": str(letter)})
        discarded = client.post(f"/dead-letters/{letter}/discard", data={"csrf": csrf})
        audit_page = client.get("/audit")
    assert retried.status_code == discarded.status_code == audit_page.status_code == 403
    stored = world.store.get_dead_letter(letter)
    assert stored is not None and not stored.resolved and stored.reason_code == "invalid_record"
    refused = [(e.actor, e.action) for e in world.audit() if e.outcome == "refused"]
    assert refused == [("read_only", "discard"), ("read_only", "retry")]


def test_a_post_without_the_sessions_token_or_from_another_origin_is_refused(
    world: ConsoleWorld,
) -> None:
    letter = world.letters[0]
    with world.client() as client:
        sign_in(client, world.secrets.admin)
        csrf = form_token(client.get("/dead-letters").text)
        no_token = client.post(f"/dead-letters/{letter}/discard", data={})
        wrong = client.post(f"/dead-letters/{letter}/discard", data={"csrf": csrf + "x"})
        elsewhere = client.post(
            f"/dead-letters/{letter}/discard",
            data={"csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        same = client.post(
            f"/dead-letters/{letter}/discard", data={"csrf": csrf}, headers={"Origin": ORIGIN}
        )
    assert [no_token.status_code, wrong.status_code, elsewhere.status_code] == [403] * 3
    assert same.status_code == 303
    assert world.store.get_dead_letter(letter).resolved is True  # type: ignore[union-attr]


def test_signing_out_ends_the_session_even_for_a_kept_cookie(world: ConsoleWorld) -> None:
    with world.client() as client:
        sign_in(client, world.secrets.admin)
        kept = dict(client.cookies)
        csrf = form_token(client.get("/").text)
        assert client.post("/sign-out", data={"csrf": csrf}).status_code == 303
    with world.client(cookies=kept) as replay:
        assert replay.get("/").status_code == 303


def test_a_forged_session_cookie_is_ignored(world: ConsoleWorld) -> None:
    with world.client(cookies={"console_session": "abc.def"}) as client:
        assert client.get("/").status_code == 303


def test_a_console_on_loopback_answers_loopback_names_only(world: ConsoleWorld) -> None:
    with world.client() as client:
        sign_in(client, world.secrets.admin)
        assert client.get("/", headers={"Host": "localhost:9465"}).status_code == 200
        rebound = client.get("/", headers={"Host": "attacker.example:9465"})
    assert rebound.status_code == 400


def test_every_page_forbids_scripts_frames_and_caching(world: ConsoleWorld) -> None:
    with world.client() as client:
        answer = client.get("/sign-in")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
    assert "<script" not in answer.text
