"""A flood of 10,000 events in a burst: memory stays bounded and the scheduled cycles go on.

10,000 Dataverse webhook posts (each with the endpoint's key, each naming a different
row) are sent at once over HTTPS by 16 threads. The daemon keeps at most
``events.max_pending`` ids per connection (500 here); beyond that it drops them and
runs the connection's scheduled cycle instead, which lists every change anyway. The
scheduled cycles (every 5 s) keep running during and after the burst, the receiver
answers every post (200, or 503 when ``max_in_flight`` requests are already being
handled), and the process's thread count stays bounded.
"""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from events_world import DV, DV_KEY, admin_client, config_data, running, total, wait_for

from sandbox.harness import SandboxServer

FLOOD = 10_000
CAP = 500


def _post(row_id: str) -> bytes:
    return json.dumps(
        {
            "PrimaryEntityName": "opportunity",
            "PrimaryEntityId": row_id,
            "MessageName": "Update",
            "InputParameters": [
                {"key": "Target", "value": {"Attributes": [{"key": "estimatedvalue", "value": 1}]}}
            ],
        }
    ).encode()


def test_a_flood_neither_grows_memory_nor_starves_the_scheduled_cycles(tmp_path: Path) -> None:
    with SandboxServer(opportunities=20, seed=3) as sandbox, admin_client(sandbox):
        data = config_data(
            sandbox,
            (DV,),
            interval_s=5,
            events={"max_pending": CAP, "max_in_flight": 16},
        )
        with running(data, tmp_path / "state.db") as daemon:
            wait_for(lambda: daemon.health[DV].cycles >= 1, "the first scheduled cycle")
            assert daemon.events is not None and daemon.events.receiver is not None
            url = f"{daemon.events.receiver.url}/events/dataverse/{DV}"
            cycles_before = daemon.health[DV].cycles
            threads_before = threading.active_count()
            most_threads = threads_before
            context = ssl.create_default_context(cafile=str(sandbox.ca_file))
            answers: Counter[int] = Counter()
            lock = threading.Lock()

            def send(ids: list[str]) -> None:
                nonlocal most_threads
                with httpx.Client(verify=context, timeout=30) as client:
                    for row_id in ids:
                        status = client.post(
                            url, content=_post(row_id), headers={"x-connector-key": DV_KEY}
                        ).status_code
                        with lock:
                            answers[status] += 1
                            most_threads = max(most_threads, threading.active_count())

            ids = [str(uuid.uuid4()) for _ in range(FLOOD)]
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(send, [ids[i::16] for i in range(16)]))

            assert sum(answers.values()) == FLOOD
            assert set(answers) <= {200, 503}, answers
            assert answers[200] >= FLOOD // 2, answers
            # memory: the waiting ids never exceeded the cap, whatever came in
            assert daemon.events.pending.most_held <= CAP
            assert daemon.events.pending.depth(DV) <= CAP
            assert total(daemon, "connector_event_overflows_total", connection=DV) >= 1
            # threads: the receiver's handlers are bounded by max_in_flight (plus the
            # 16 senders and the pools' workers)
            assert most_threads - threads_before <= 16 + 16 + 8, most_threads - threads_before
            # the scheduled cycles go on during and after the burst
            wait_for(
                lambda: daemon.health[DV].cycles >= cycles_before + 2,
                "two more scheduled cycles after the flood",
                timeout_s=90,
            )
            assert all(r.outcome in ("ok", "partial") for r in list(daemon.reports)[-2:])
            # and the queue drains: nothing is left waiting once the dust settles
            wait_for(lambda: daemon.events.pending.depth(DV) == 0, "the queue to drain", 60)  # type: ignore[union-attr]
