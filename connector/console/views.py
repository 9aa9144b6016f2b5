"""Plain values the templates show: ages, lags, sparklines, links into the two systems (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from connector.settings import ConnectionSettings, SalesforceSettings
from connector.state.console_reads import CursorState
from connector.state.records import Run

SPARK_WIDTH = 120
SPARK_HEIGHT = 24


def age(when: datetime | None, now: datetime) -> str:
    """``"3 min ago"``, ``"in 40 s"``, ``"-"``."""
    if when is None:
        return "-"
    seconds = (now - when).total_seconds()
    text = span(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def stamp(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S UTC")


def cursor_lag(cursor: CursorState | None, now: datetime) -> str:
    """How far behind the cursor is: from its time, or (an opaque delta link) its commit."""
    if cursor is None:
        return "never synced"
    try:
        when = datetime.fromisoformat(cursor.value.replace("Z", "+00:00"))
    except ValueError:
        return f"delta link saved {age(cursor.updated, now)}"
    if when.tzinfo is None:
        return f"saved {age(cursor.updated, now)}"
    return span(max(0.0, (now - when).total_seconds()))


@dataclass(frozen=True)
class Sparkline:
    points: str
    values: list[int]
    width: int = SPARK_WIDTH
    height: int = SPARK_HEIGHT

    @property
    def peak(self) -> int:
        return max(self.values, default=0)


def sparkline(runs: Sequence[Run], key: str = "pulled") -> Sparkline:
    """An SVG polyline of ``counts[key]`` over runs (oldest first), scaled to the box."""
    values = [int((r.counts or {}).get(key) or 0) for r in runs]
    if not values:
        return Sparkline("", [])
    peak = max(values) or 1
    step = SPARK_WIDTH / max(1, len(values) - 1)
    coords = [
        f"{i * step:.1f},{SPARK_HEIGHT - 2 - (v / peak) * (SPARK_HEIGHT - 4):.1f}"
        for i, v in enumerate(values)
    ]
    if len(coords) == 1:
        coords.append(f"{SPARK_WIDTH},{coords[0].split(',')[1]}")
    return Sparkline(" ".join(coords), values)


def total(counts: Mapping[str, Any] | None, key: str) -> int:
    """A count of a run: an int, or the sum of a by-reason mapping."""
    value = (counts or {}).get(key)
    if isinstance(value, Mapping):
        return sum(int(v) for v in value.values())
    return int(value or 0)


def crm_record_url(conn: ConnectionSettings, crm_id: str) -> str | None:
    """The record in the CRM's own user interface."""
    quoted = quote(crm_id, safe="")
    crm = conn.crm
    if isinstance(crm, SalesforceSettings):
        base = (crm.instance_url or crm.login_url).rstrip("/")
        return safe_link(f"{base}/lightning/r/Opportunity/{quoted}/view")
    base = crm.environment_url.rstrip("/")
    return safe_link(f"{base}/main.aspx?pagetype=entityrecord&etn=opportunity&id={quoted}")


def safe_link(link: Any) -> str | None:
    """Only web links are rendered as links (a value from a remote system could be anything)."""
    if isinstance(link, str) and link.startswith(("https://", "http://")):
        return link
    return None


def pretty(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def crm_kind(conn: ConnectionSettings) -> str:
    return "Salesforce" if isinstance(conn.crm, SalesforceSettings) else "Dynamics 365"
