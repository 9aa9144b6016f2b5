"""Several replicas: three daemons share three connections through leases in PostgreSQL.

Each daemon (``connector run``, its own process and health port) cycles every
connection every 5 seconds; a short lease TTL (3 s, renewed every second) lets the
survivors take over soon after one daemon is killed with SIGKILL mid-cycle. The
runs table is the witness: per connection, no run starts before the previous one
ended (a killed run ends when its daemon died), and runs keep completing afterwards.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from reliability_world import (
    PG_SERVER as SERVER,
)
from reliability_world import (
    PYTHON,
    connector_env,
    write_config,
)

from connector.state.store import Run, Store
from sandbox.harness import SandboxProcess, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONNECTIONS = ("replica-a", "replica-b", "replica-c")
LEASE_TTL_S = 3.0


def _runs(store: Store) -> list[Run]:
    return store.recent_runs(limit=10_000)


def _wait(predicate: object, limit: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_no_connection_is_run_by_two_daemons_at_once_and_survivors_carry_on(
    tmp_path: Path, pg_state: str
) -> None:
    with SandboxProcess(tmp_path, opportunities=300, latency_ms=2.0) as sandbox:
        config = write_config(
            tmp_path / "config.yaml",
            sandbox.url,
            sandbox.ca_file,
            pg_state,
            names=CONNECTIONS,
            interval_s=5,
        )
        Store.open(pg_state).close()  # migrate once, before three daemons race for it
        daemons: list[subprocess.Popen[bytes]] = []
        try:
            for n in range(3):
                with (tmp_path / f"daemon-{n}.log").open("wb") as out:
                    daemons.append(
                        subprocess.Popen(
                            [
                                PYTHON,
                                "-m",
                                "connector",
                                "run",
                                "--config",
                                str(config),
                                "--health-port",
                                str(free_port()),
                                "--lease-ttl-s",
                                str(LEASE_TTL_S),
                            ],
                            cwd=tmp_path,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            env=connector_env(),
                        )
                    )
            with Store.open(pg_state) as store:

                def every_connection_finished_a_run() -> bool:
                    assert all(d.poll() is None for d in daemons), "a daemon exited"
                    done = {r.connection for r in _runs(store) if r.finished is not None}
                    return done == set(CONNECTIONS)

                _wait(every_connection_finished_a_run, 120, "a finished run of each connection")

                # Kill the daemon that holds a lease right now, in the middle of its cycle.
                victim = None
                for _ in range(100):
                    holders = _lease_holders(pg_state)
                    pids = {int(h.rsplit(":", 1)[1]) for h in holders.values()}
                    victim = next((d for d in daemons if d.pid in pids), None)
                    if victim is not None:
                        break
                    time.sleep(0.05)
                assert victim is not None, "no daemon ever held a lease"
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
                killed_at = _db_now(pg_state)
                survivors = [d for d in daemons if d is not victim]

                def survivors_ran_every_connection() -> bool:
                    later = [r for r in _runs(store) if r.started > killed_at and r.finished]
                    return {r.connection for r in later} == set(CONNECTIONS)

                _wait(survivors_ran_every_connection, 90, "survivors to run every connection")
                assert all(d.poll() is None for d in survivors), "a survivor died"
                runs = _runs(store)
        finally:
            for d in daemons:
                if d.poll() is None:
                    d.send_signal(signal.SIGTERM)
            for d in daemons:
                try:
                    d.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    d.kill()
                    d.wait(timeout=10)

    overlaps = []
    interrupted = 0
    for name in CONNECTIONS:
        mine = sorted((r for r in runs if r.connection == name), key=lambda r: r.started)
        for before, after in itertools.pairwise(mine):
            if before.finished is None:
                interrupted += 1
            end = before.finished or killed_at  # an unfinished run died with its daemon
            if after.started < end:
                overlaps.append((name, before.id, after.id))
    assert overlaps == []
    # Only the killed daemon's runs were left unfinished: it may have been running several
    # connections at once, but all of them had started before the kill.
    unfinished = [r for r in runs if r.finished is None]
    assert all(r.started <= killed_at for r in unfinished), unfinished
    assert interrupted <= len(CONNECTIONS)
    print(f"replicas: {len(runs)} runs, {interrupted} cut by the SIGKILL, no overlap")


def _lease_holders(url: str) -> dict[str, str]:
    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(SERVER) as connection:
        rows = connection.execute(
            f"SELECT connection, holder FROM {schema}.leases WHERE expires > now()"
        ).fetchall()
    return {str(c): str(h) for c, h in rows}


def _db_now(url: str) -> object:
    with psycopg.connect(SERVER) as connection:
        row = connection.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]
