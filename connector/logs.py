"""Logging: one line per event; JSON when not on a terminal, readable when on one.

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

__all__ = ["JsonFormatter", "RedactingFilter", "redact", "scrub", "setup"]


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
EXTRA_FIELDS = ("event", "connection", "outcome", "counts", "api_calls", "duration_s")


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


def setup(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure the root logger once for the process."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler: logging.Handler
    if use_json:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(JsonFormatter())
        handler = stream
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True), show_path=False, rich_tracebacks=False, markup=False
        )
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "urllib3", "uvicorn.access", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
