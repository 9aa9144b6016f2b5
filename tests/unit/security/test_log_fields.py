"""Log lines as a program reads them: record-level keys, levels, one line per event."""

from __future__ import annotations

import io
import json
import logging

from connector.logs import PLAIN_FORMAT, JsonFormatter, record_fields
from connector.sync.report import CYCLE_LOG_LEVEL, Outcome, log_settled_writes


def _json_line(logger: logging.Logger, emit: object) -> list[dict[str, object]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        emit()  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_level_line_carries_connection_and_crm_id_as_keys() -> None:
    log = logging.getLogger("test.record")
    (line,) = _json_line(
        log,
        lambda: log.warning(
            "%s: %s: refused", "sf", "006A", extra=record_fields("sf", "006A", reason="x")
        ),
    )
    assert (line["connection"], line["crm_id"], line["reason"]) == ("sf", "006A", "x")


def test_refused_status_writes_are_one_line_with_their_count() -> None:
    log = logging.getLogger("connector.sync.engine")
    lines = _json_line(log, lambda: log_settled_writes("d365", {"read_only_closed": 83}))
    (line,) = lines
    assert line["level"] == "info" and line["counts"] == {"read_only_closed": 83}
    assert "83 record(s)" in str(line["message"])
    assert _json_line(log, lambda: log_settled_writes("d365", {"read_only_closed": 0})) == []


def test_a_failed_cycle_is_an_error_and_a_stopped_one_a_warning() -> None:
    assert CYCLE_LOG_LEVEL[Outcome.FAILED] == logging.ERROR
    assert CYCLE_LOG_LEVEL[Outcome.INTERRUPTED] == logging.WARNING
    assert CYCLE_LOG_LEVEL[Outcome.OK] == logging.INFO


def test_piped_text_logs_are_one_line_per_event() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a " * 100, None, None)
    assert "\n" not in logging.Formatter(PLAIN_FORMAT).format(record)
