"""Dead letters: the filtered list, and retry / discard (admins, the same store methods as
``connector errors retry`` and ``connector errors discard``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.console.access import local_path
from connector.console.auth import Session
from connector.console.web import Request, Response, Router, url

if TYPE_CHECKING:
    from connector.console.app import Console

#: what the list says after an action (the redirect carries only the code and a count)
DONE = {
    "retry": "{n} dead letter(s) marked for retry: the next cycle re-fetches their records.",
    "discard": "Dead letter discarded: it stays in the history, resolved.",
    "nothing": "Nothing was changed: no open dead letter was selected.",
}


def register(router: Router) -> None:
    router.add("GET", "/dead-letters", dead_letters_page)
    router.add("POST", "/dead-letters/retry", retry, "admin")
    router.add("POST", "/dead-letters/{letter_id}/discard", discard, "admin")


def dead_letters_page(app: Console, request: Request, session: Session | None) -> Response:
    size = app.options.page_size
    conn = request.arg("connection")
    reason = request.arg("reason")
    resolved = request.arg("resolved") == "1"
    before = request.int_arg("before")
    letters = app.reads.dead_letters(
        conn, reason=reason, resolved=resolved, before=before, limit=size + 1
    )
    older = None
    if len(letters) > size:
        letters = letters[:size]
        older = url(
            "/dead-letters",
            connection=conn,
            reason=reason,
            resolved="1" if resolved else None,
            before=letters[-1].id,
        )
    done = request.arg("done")
    count = request.int_arg("n") or 0
    notice = DONE[done].format(n=count) if done in DONE else None
    back = url(
        "/dead-letters",
        connection=conn,
        reason=reason,
        resolved="1" if resolved else None,
        before=before,
    )
    return app.page(
        "dead_letters.html",
        request,
        session,
        letters=letters,
        connection=conn,
        reason=reason,
        resolved=resolved,
        reasons=app.reads.dead_letter_reasons(conn),
        older=older,
        notice=notice,
        back=back,
        nav="dead_letters",
    )


def _after(request: Request, done: str, n: int) -> Response:
    back = local_path(request.field("back"), "/dead-letters")
    if not back.startswith(("/dead-letters", "/records/")):
        back = "/dead-letters"
    joiner = "&" if "?" in back else "?"
    return Response.redirect(f"{back}{joiner}done={done}&n={n}")


def retry(app: Console, request: Request, session: Session | None) -> Response:
    ids = sorted({int(value) for value in request.fields("id") if value.isdigit()})
    if not ids:
        return _after(request, "nothing", 0)
    marked = app.store.request_retry(ids)
    app.audit(
        request,
        session,
        "retry",
        target="dead letters " + ", ".join(map(str, ids)),
        outcome="ok" if marked else "nothing",
        detail=f"{len(marked)} marked for retry",
    )
    return _after(request, "retry" if marked else "nothing", len(marked))


def discard(app: Console, request: Request, session: Session | None, letter_id: str) -> Response:
    if not letter_id.isdigit():
        return Response.text(404, "no such dead letter")
    done = app.store.discard_dead_letter(int(letter_id))
    app.audit(
        request,
        session,
        "discard",
        target=f"dead letter {letter_id}",
        outcome="ok" if done else "nothing",
    )
    return _after(request, "discard" if done else "nothing", int(done))
