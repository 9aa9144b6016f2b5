"""When each connection runs, and what is checked before the daemon schedules it.

:func:`schedule_trigger` turns a connection's ``schedule`` into an APScheduler
trigger (cron wins over interval, with jitter); :func:`check_connection` finds at
start-up what a cycle would otherwise only find out later (a mapping written for the
other CRM, a secret reference that does not resolve).
"""

from __future__ import annotations

from datetime import UTC

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from connector.errors import ConfigError
from connector.logs import redact
from connector.mapping.schema import MappingFile
from connector.settings import ConnectionSettings, SalesforceSettings, SecretRef, Settings


def check_connection(conn: ConnectionSettings, mapping: MappingFile, settings: Settings) -> None:
    """Start-up checks of what a cycle would otherwise only find out later."""
    where = f"connections[{conn.name}]"
    kind = "salesforce" if isinstance(conn.crm, SalesforceSettings) else "dynamics"
    if mapping.crm != kind:
        raise ConfigError(
            f"{where}.mapping: {conn.mapping} is written for {mapping.crm} but the "
            f"connection's CRM is {kind}; point `mapping:` at a {kind} mapping"
        )
    for part_name, part in (("crm", conn.crm), ("core", conn.core)):
        for field_name in type(part).model_fields:
            ref = getattr(part, field_name)
            if isinstance(ref, SecretRef):
                secret = ref.resolve(f"{where}.{part_name}.{field_name}", settings.secrets_dir)
                redact(secret.get_secret_value())


def schedule_trigger(conn: ConnectionSettings) -> IntervalTrigger | CronTrigger:
    """The APScheduler trigger of a connection's schedule (cron wins over interval)."""
    schedule = conn.schedule
    if schedule.cron:
        # from_crontab takes no jitter: split the (already validated) five fields ourselves
        minute, hour, day, month, day_of_week = schedule.cron.split()
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=UTC,
            jitter=schedule.jitter_s or None,
        )
    return IntervalTrigger(seconds=schedule.interval_s or 300, jitter=schedule.jitter_s or None)
