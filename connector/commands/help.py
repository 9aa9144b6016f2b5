"""How ``connector --help`` shows options: an on/off flag shows no value type.

Typer's Rich help prints a type for every option, flags included (``--dry-run
<bool>``), which reads as if the flag took a value. :class:`HelpGroup`, the class of
the command line's root, blanks the type of every flag of every command under it
before its help is shown; options that take a value keep theirs (``<path>``).
"""

from __future__ import annotations

from typing import Any

import typer.core


def hide_flag_types(command: Any, ctx: Any) -> None:
    """Blank the shown type of each flag of ``command`` and of the commands under it."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # what the help shows instead of the type; parsing ignores it
    for sub in getattr(command, "commands", {}).values():
        hide_flag_types(sub, ctx)


class HelpGroup(typer.core.TyperGroup):
    """The root command group: help without value types on flags, at every level."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        hide_flag_types(self, ctx)
        super().format_help(ctx, formatter)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            hide_flag_types(command, ctx)
        return command
