"""The sandbox's change events: what the three imitated systems tell their subscribers.

Small hooks in the stores (a referral committed, a Salesforce record committed, a
Dataverse row written) call :meth:`EventBus.changed`. For each configured source the
bus builds the event the real system would send and hands it to a delivery thread,
which applies the configured faults and delivers it:

- Partner Center: a signed webhook POST (sandbox.events.partner_center) to
  the URL registered through the webhook registration API or the admin API;
- Dataverse: a webhook POST of the ``RemoteExecutionContext`` with the service
  endpoint's authentication (sandbox.events.dataverse);
- Salesforce: a Change Data Capture event on the CometD endpoint
  (sandbox.events.salesforce), kept for replay.

Faults per source (``PUT /_sandbox/events``): ``drop`` (never delivered), ``duplicate``
(delivered twice), ``reorder`` (held back ``reorder_s`` so later events overtake it),
``delay_ms`` (every event). A change log (``log_changes``) records every write of the
three systems with its time, for the latency benchmark (``GET /_sandbox/changes``).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger(__name__)

SOURCES = ("partner_center", "dataverse", "salesforce")
#: events waiting for delivery at most; beyond, new ones are dropped and counted
MAX_QUEUED = 100_000
#: entries the change log keeps
CHANGE_LOG = 50_000
#: attempts of one HTTP delivery (Partner Center documents 10; the sandbox is quicker)
HTTP_ATTEMPTS = 3


@dataclass
class DeliveryFaults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_s: float = 1.0
    delay_ms: float = 0.0


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    deliver: Callable[[], bool] = field(compare=False)
    source: str = field(compare=False)
    attempt: int = field(default=1, compare=False)


class EventBus:
    """Builds, queues and delivers the sandbox's events (see the module docstring)."""

    def __init__(self, seed: int = 1) -> None:
        self.faults: dict[str, DeliveryFaults] = {s: DeliveryFaults() for s in SOURCES}
        #: source → the builder that turns a change into a delivery (set when configured)
        self.senders: dict[
            str, Callable[[str, str, dict[str, Any]], Callable[[], bool] | None]
        ] = {}
        self.stats: Counter[str] = Counter()
        self.log_changes = False
        self.changes: deque[dict[str, Any]] = deque(maxlen=CHANGE_LOG)
        self._change_seq = itertools.count(1)
        self._rng = random.Random(f"{seed}:events")
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ hooks

    def changed(
        self,
        system: str,
        kind: str,
        record_id: str,
        record: dict[str, Any],
        *,
        logged: dict[str, Any] | None = None,
    ) -> None:
        """A store wrote ``record`` (``kind``: created, updated, deleted); the change log
        keeps ``logged`` (the whole record) when given, else ``record``."""
        if self.log_changes:
            self.changes.append(
                {
                    "seq": next(self._change_seq),
                    "at": time.time(),
                    "system": system,
                    "kind": kind,
                    "id": record_id,
                    "record": dict(logged if logged is not None else record),
                }
            )
        source = {"core": "partner_center"}.get(system, system)
        build = self.senders.get(source)
        if build is None:
            return
        deliver = build(kind, record_id, record)
        if deliver is not None:
            self.submit(source, deliver)

    def submit(self, source: str, deliver: Callable[[], bool]) -> None:
        """Queue one delivery, with the source's faults."""
        faults = self.faults[source]
        with self._cond:
            self.stats[f"{source}.published"] += 1
            if self._rng.random() < faults.drop:
                self.stats[f"{source}.dropped"] += 1
                return
            if len(self._heap) >= MAX_QUEUED:
                self.stats[f"{source}.overflowed"] += 1
                return
            at = time.monotonic() + faults.delay_ms / 1000
            if self._rng.random() < faults.reorder:
                at += faults.reorder_s
                self.stats[f"{source}.reordered"] += 1
            copies = 2 if self._rng.random() < faults.duplicate else 1
            if copies == 2:
                self.stats[f"{source}.duplicated"] += 1
            for _ in range(copies):
                heapq.heappush(self._heap, _Due(at, next(self._seq), deliver, source))
            self._start()
            self._cond.notify_all()

    # ------------------------------------------------------------------ delivery

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="sandbox-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0].at > time.monotonic()):
                    wait = self._heap[0].at - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                due = heapq.heappop(self._heap)
            try:
                ok = due.deliver()
            except Exception as exc:  # a broken callback must not stop the others
                log.warning("sandbox event delivery failed: %s", exc)
                ok = False
            with self._cond:
                if ok:
                    self.stats[f"{due.source}.delivered"] += 1
                elif due.attempt < HTTP_ATTEMPTS:
                    due.attempt += 1
                    due.at = time.monotonic() + 0.5 * due.attempt
                    heapq.heappush(self._heap, due)
                else:
                    self.stats[f"{due.source}.failed"] += 1

    def idle(self) -> bool:
        with self._cond:
            return not self._heap

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ admin API

    def routes(self, configure: Callable[[dict[str, Any], Request], str | None]) -> list[BaseRoute]:
        async def events(request: Request) -> Response:
            if request.method == "PUT":
                body = await request.json()
                if not isinstance(body, dict):
                    return JSONResponse({"error": "a JSON object"}, status_code=400)
                faults = body.pop("faults", {})
                for source, values in faults.items():
                    if source not in SOURCES or not isinstance(values, dict):
                        return JSONResponse(
                            {"error": f"unknown source {source!r}"}, status_code=400
                        )
                    try:
                        self.faults[source] = DeliveryFaults(**values)
                    except TypeError as exc:
                        return JSONResponse({"error": str(exc)}, status_code=400)
                if "log_changes" in body:
                    self.log_changes = bool(body.pop("log_changes"))
                problem = configure(body, request)
                if problem is not None:
                    return JSONResponse({"error": problem}, status_code=400)
            with self._cond:
                queued = len(self._heap)
            return JSONResponse(
                {
                    "stats": dict(self.stats),
                    "queued": queued,
                    "faults": {s: vars(f) for s, f in self.faults.items()},
                    "sources": sorted(self.senders),
                }
            )

        async def changes(request: Request) -> Response:
            after = int(request.query_params.get("after", "0"))
            limit = min(int(request.query_params.get("limit", "5000")), 20_000)
            rows = [c for c in list(self.changes) if c["seq"] > after][:limit]
            text = json.dumps({"changes": rows}, default=str)
            return Response(text, media_type="application/json")

        return [
            Route("/_sandbox/events", events, methods=["GET", "PUT"]),
            Route("/_sandbox/changes", changes, methods=["GET"]),
        ]
