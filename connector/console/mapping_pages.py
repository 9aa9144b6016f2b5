"""Mappings: each connection's file and its problems (file:line), the stage table against
the live CRM, and what one record becomes (``connector mappings check --against-crm``
and ``connector mappings explain``, read only)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from connector.console.auth import Session
from connector.console.web import Request, Response, Router
from connector.errors import ConnectorError, MappingError
from connector.mapping.explain import describe_action
from connector.mapping.live import check_against_crm, explain_live
from connector.mapping.load import load_mapping
from connector.mapping.schema import MappingFile
from connector.mapping.stage_check import StageCheck
from connector.model import DealDraft
from connector.settings import ConnectionSettings

if TYPE_CHECKING:
    from connector.console.app import Console

#: a CRM record id as the two CRMs write them (Salesforce ids, Dataverse GUIDs)
_MAX_RECORD_ID = 100


def register(router: Router) -> None:
    router.add("GET", "/mappings", mappings_page)
    router.add("GET", "/mappings/{conn}/stages", stages_page)
    router.add("GET", "/mappings/{conn}/explain", explain_page)


@dataclass
class MappingState:
    conn: ConnectionSettings
    path: Path
    mapping: MappingFile | None
    problems: list[str]


class MappingFiles:
    """Mapping files loaded once per version: read again when their size or time changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, Path], tuple[tuple[int, int], MappingState]] = {}

    def load(self, conn: ConnectionSettings) -> MappingState:
        key = (conn.name, conn.mapping)
        try:
            info = conn.mapping.stat()
            version = (info.st_mtime_ns, info.st_size)
        except OSError:
            version = (-1, -1)  # missing: load_mapping names the problem
        with self._lock:
            cached = self._loaded.get(key)
        if cached is not None and cached[0] == version and version != (-1, -1):
            return cached[1]
        state = _load(conn)
        with self._lock:
            self._loaded[key] = (version, state)
        return state


def _load(conn: ConnectionSettings) -> MappingState:
    try:
        return MappingState(conn, conn.mapping, load_mapping(conn.mapping), [])
    except MappingError as exc:
        return MappingState(conn, conn.mapping, None, exc.problems)


def mappings_page(app: Console, request: Request, session: Session | None) -> Response:
    states = [app.mappings.load(conn) for conn in app.config.connections]
    return app.page(
        "mappings.html",
        request,
        session,
        states=states,
        daemon=app.live is not None,
        nav="mappings",
    )


def _invalid(
    app: Console, request: Request, session: Session | None, state: MappingState
) -> Response:
    return app.page(
        "mapping_invalid.html", request, session, status=409, state=state, nav="mappings"
    )


def stages_page(app: Console, request: Request, session: Session | None, conn: str) -> Response:
    settings = app.connection(conn)
    if settings is None:
        return Response.text(404, "no such connection")
    state = app.mappings.load(settings)
    if state.mapping is None:
        return _invalid(app, request, session, state)
    try:
        # the fields and the stages against the CRM's own description, as
        # `connector mappings check --against-crm` does
        found = check_against_crm(
            settings, app.settings, state.path, max_bytes=app.settings.max_yaml_bytes
        )
    except ConnectorError as exc:
        app.audit(
            request, session, "stage_check", target=conn, outcome="failed", detail=exc.message
        )
        raise
    app.audit(request, session, "stage_check", target=conn, detail="read the CRM's stages")
    return app.page(
        "stages.html",
        request,
        session,
        state=state,
        check=found.stages or StageCheck(),
        problems=found.problems,
        nav="mappings",
    )


def explain_page(app: Console, request: Request, session: Session | None, conn: str) -> Response:
    settings = app.connection(conn)
    if settings is None:
        return Response.text(404, "no such connection")
    state = app.mappings.load(settings)
    if state.mapping is None:
        return _invalid(app, request, session, state)
    record_id = request.arg("record_id")
    if record_id is None or len(record_id) > _MAX_RECORD_ID:
        return app.page(
            "explain.html",
            request,
            session,
            state=state,
            record_id=record_id or "",
            explanation=None,
            draft=None,
            nav="mappings",
            problem="Type the id of a CRM opportunity." if record_id else None,
        )
    try:
        explanation = explain_live(settings, app.settings, state.mapping, record_id)
    except ConnectorError as exc:
        app.audit(
            request,
            session,
            "explain",
            target=f"{conn} {record_id}",
            outcome="failed",
            detail=exc.message,
        )
        raise
    app.audit(request, session, "explain", target=f"{conn} {record_id}")
    # the action against the store's own link (explain_live would open another store)
    link = app.store.connection(conn).links.get(explanation.record_id)
    explanation = replace(explanation, action=describe_action(explanation.result, link))
    draft = explanation.result if isinstance(explanation.result, DealDraft) else None
    return app.page(
        "explain.html",
        request,
        session,
        state=state,
        record_id=record_id,
        explanation=explanation,
        draft=draft,
        problem=None,
        nav="mappings",
    )
