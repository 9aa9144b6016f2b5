"""The process's two Rich consoles: results on stdout, logs and progress on stderr.

Logging (on a terminal) and the progress bar of ``connector sync --once`` print through
the same :data:`stderr` console, so Rich keeps the bar at the bottom and prints each
log line above it instead of the two overwriting each other.

Piped (not a terminal), Rich would wrap every line at 80 columns: tables and problem
lists cut in the middle of a word, one event spread over several lines. A
:class:`PipeAwareConsole` is as wide as its longest line when it does not write to a
terminal (unless ``COLUMNS`` says otherwise), so each line stays one line.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console, ConsoleDimensions

#: the width of a console that does not write to a terminal: no line is wrapped
PIPED_WIDTH = 10_000


class PipeAwareConsole(Console):
    """A Rich console that does not wrap lines when its output is not a terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._width_given = kwargs.get("width") is not None

    @property
    def size(self) -> ConsoleDimensions:
        dims = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width_given or self.is_terminal or os.environ.get("COLUMNS"):
            return dims  # type: ignore[no-any-return]
        return ConsoleDimensions(PIPED_WIDTH, dims.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]
        self._width_given = True


#: results: tables, summaries, JSON (what a script reads)
stdout = PipeAwareConsole()
#: logs (on a terminal) and the progress bar: what a person watches
stderr = PipeAwareConsole(stderr=True)
