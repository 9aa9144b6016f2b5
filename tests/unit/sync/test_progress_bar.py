"""The one-shot sync's progress bar: total, percentage and time left; nothing when piped."""

from __future__ import annotations

import io
import re

from rich.console import Console

from connector.sync.progress import SyncProgress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_on_a_terminal_the_bar_shows_the_total_the_share_and_the_time_left() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with SyncProgress(console, "sf") as progress:
        progress("total", 20_000)
        progress("pulled", 2_000)
        progress("settled", 1_000)
        progress("pushed", 4_000)
        console.print("a log line")  # printed above the bar, not through it
    text = ANSI.sub("", out.getvalue())
    assert "5000/20000" in text
    assert "25%" in text
    assert "ETA" in text
    assert "pulled 2,000" in text
    assert "a log line\n" in text.replace("\r", "\n")


def test_an_unknown_total_shows_the_count_alone() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with SyncProgress(console, "d365") as progress:
        progress("settled", 12)
    text = ANSI.sub("", out.getvalue())
    assert "12/?" in text and "%" not in text


def test_when_not_on_a_terminal_nothing_is_drawn() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    with SyncProgress(console, "sf") as progress:
        progress("total", 10)
        progress("settled", 10)
    assert out.getvalue() == ""


def test_a_total_below_what_was_handled_grows_with_it() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    with SyncProgress(console, "sf") as progress:
        progress("total", 5)
        progress("pushed", 7)
        assert progress.total == 7
