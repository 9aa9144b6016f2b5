"""Logging: one line per event; JSON when not on a terminal, readable when on one.

On a terminal, log lines go through the shared stderr console
(:data:`connector.terminal.stderr`), which a progress bar also uses, so lines appear
above the bar. In ``text`` format when not on a terminal, each event is one plain
line (no Rich layout, nothing wrapped). A record-level line passes ``connection`` and
``crm_id`` as ``extra`` (:func:`record_fields`): both become JSON keys.

Every record passes :class:`RedactingFilter`, and every JSON line is scrubbed again
after formatting: secrets and tokens known to :mod:`connector.redaction` become
``***``, in whatever form (raw, URL-encoded, JSON-escaped, base64) and whatever module
logged them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from connector.redaction import REGISTRY, register_secret, scrub

__all__ = ["JsonFormatter", "RedactingFilter", "record_fields", "redact", "scrub", "setup"]


def redact(*values: str | None) -> None:
    """Register secret values that must never be written anywhere (see connector.redaction)."""
    register_secret(*values)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if REGISTRY:
            message = scrub(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


#: structured fields a log call may pass with ``extra=``; they become JSON keys
EXTRA_FIELDS = (
    "event",
    "connection",
    "crm_id",
    "referral_id",
    "outcome",
    "reason",
    "counts",
    "api_calls",
    "duration_s",
)


def record_fields(connection: str, crm_id: str, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a log line about one record: its connection and CRM id as keys."""
    return {"connection": connection, "crm_id": crm_id, **more}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the known extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                data[name] = record.__dict__[name]
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        return scrub(json.dumps(data, ensure_ascii=False, default=str))


#: one event per line when text goes somewhere that is not a terminal
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure the root logger once for the process."""
    from connector import terminal

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler: logging.Handler
    if use_json:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(JsonFormatter())
        handler = stream
    elif terminal.stderr.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(
            console=terminal.stderr, show_path=False, rich_tracebacks=False, markup=False
        )
    else:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(PLAIN_FORMAT))
        handler = stream
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "uvicorn.access", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
